//go:build !certfetch_dns_rfc2136

package dnsprovider

import (
	"github.com/go-acme/lego/v4/challenge"
	"github.com/go-acme/lego/v4/providers/dns"
)

// construct builds the provider with lego's own factory, which carries every provider
// lego ships.
func construct(name string) (challenge.Provider, error) {
	return dns.NewDNSChallengeProviderByName(name)
}

// names are the spellings lego's factory accepts (aliases included), in its order;
// TestNamesAreLegos compares them with the factory's source, so a lego upgrade that adds
// one fails the test until the list follows.
var names = []string{
	"acme-dns", "acmedns", "active24", "alidns", "aliesa", "allinkl", "alwaysdata", "anexia",
	"artfiles", "arvancloud", "auroradns", "autodns", "axelname", "azion", "azure", "azuredns",
	"baiducloud", "beget", "binarylane", "bindman", "bluecat", "bluecatv2", "bookmyname", "brandit",
	"bunny", "checkdomain", "civo", "clouddns", "cloudflare", "cloudns", "cloudru", "cloudxns", "com35",
	"conoha", "conohav3", "constellix", "corenetworks", "cpanel", "czechia", "ddnss", "derak", "desec",
	"designate", "digitalocean", "directadmin", "dnsexit", "dnshomede", "dnsimple", "dnsmadeeasy",
	"dnspod", "dode", "domeneshop", "domainnameshop", "dreamhost", "duckdns", "dyn", "dyndnsfree",
	"dynu", "easydns", "edgecenter", "edgedns", "fastdns", "edgeone", "efficientip", "epik", "eurodns",
	"excedo", "exec", "exoscale", "f5xc", "freemyip", "gandi", "gandiv5", "gcloud", "gcore",
	"gigahostno", "glesys", "godaddy", "googledomains", "gravity", "hetzner", "hostingde", "hostinger",
	"hostingnl", "hosttech", "httpnet", "httpreq", "huaweicloud", "hurricane", "hyperone", "ibmcloud",
	"iij", "iijdpf", "infoblox", "infomaniak", "internetbs", "inwx", "ionos", "ionoscloud", "ipv64",
	"ispconfig", "ispconfigddns", "iwantmyname", "jdcloud", "joker", "keyhelp", "leaseweb", "liara",
	"lightsail", "limacity", "linode", "linodev4", "liquidweb", "loopia", "luadns", "mailinabox",
	"manageengine", "manual", "metaname", "metaregistrar", "mijnhost", "mittwald", "myaddr", "mydnsjp",
	"mythicbeasts", "namecheap", "namedotcom", "namesilo", "namesurfer", "nearlyfreespeech", "neodigit",
	"netcup", "netlify", "netnod", "nicmanager", "nicru", "nifcloud", "njalla", "nodion", "ns1",
	"octenium", "onecloudru", "onlinenet", "oraclecloud", "otc", "ovh", "pdns", "plesk", "porkbun",
	"rackspace", "rainyun", "rcodezero", "regfish", "regru", "rfc2136", "dnsupdate", "rimuhosting",
	"route53", "safedns", "sakuracloud", "scaleway", "selectel", "selectelv2", "selfhostde",
	"servercow", "shellrent", "simply", "sonic", "spaceship", "stackpath", "syse", "technitium",
	"tencentcloud", "timewebcloud", "todaynic", "transip", "ucloud", "ultradns", "uniteddomains",
	"variomedia", "vegadns", "vercel", "versio", "vinyldns", "virtualname", "vkcloud", "volcengine",
	"vscale", "vultr", "webnames", "webnamesru", "webnamesca", "websupport", "wedos", "westcn",
	"yandex", "yandex360", "yandexcloud", "zoneedit", "zoneee", "zonomi",
}
