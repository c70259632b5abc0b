package config_test

import (
	"io/fs"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/certfetch/certfetch/fetcher/config"
)

// minimal is a valid configuration of eight lines; cases append lines 9 and
// later to it. Lines indented by four spaces continue resolvers.ca.
const minimal = `output:
  file:
    directory: /srv/traefik
resolvers:
  ca:
    caServer: https://ca.example/dir
    httpChallenge:
      stateless: true
`

// hmacKey is a valid EAB key; no error message may contain it.
const hmacKey = "c2VjcmV0LWhtYWMta2V5LWZvci10ZXN0cw"

func TestParseRejects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		desc string
		yaml string
		want string
	}{
		{desc: "empty file", yaml: "", want: `certfetch.yml: the file is empty`},
		{desc: "storage with two backends", yaml: minimal + "storage:\n  directory: /var/lib/x\n  redis: {address: 127.0.0.1:6379}\n", want: `certfetch.yml:10: storage: set exactly one of directory, redis or etcd, got directory and redis`},
		{desc: "storage with no backend", yaml: minimal + "storage:\n  lockTTL: 30s\n", want: `certfetch.yml:10: storage: set exactly one of directory, redis or etcd, got none`},
		{desc: "storage lock TTL too short", yaml: minimal + "storage:\n  etcd: {endpoints: [127.0.0.1:2379]}\n  lockTTL: 1s\n", want: `certfetch.yml:11: storage.lockTTL: must be at least 3s, got 1s`},
		{desc: "storage unknown key", yaml: minimal + "storage:\n  redis: {address: 127.0.0.1:6379, prefix: x}\n", want: `certfetch.yml:10: storage.redis.prefix: unknown key`},
		{desc: "storage keys readable by Traefik", yaml: "output:\n  redis: {address: 127.0.0.1:6379}\nstorage:\n  redis: {address: 127.0.0.1:6379, rootKey: traefik-state}\nresolvers:\n  ca:\n    caServer: https://ca.example/dir\n    httpChallenge: {stateless: true}\n", want: `certfetch.yml:2: storage.redis.rootKey: "traefik-state" starts with output.redis.rootKey "traefik": Traefik would read certfetch's private keys`},
		{desc: "only a comment", yaml: "# nothing\n", want: `certfetch.yml: the file is empty`},
		{desc: "YAML syntax error, placed a line early by yaml.v3", yaml: minimal + "log: [a\n", want: `certfetch.yml:8: invalid YAML: did not find expected ',' or ']'`},
		{desc: "unknown anchor", yaml: minimal + "timeout: *t\n", want: `certfetch.yml: invalid YAML: unknown anchor 't' referenced`},
		{desc: "two documents", yaml: minimal + "---\nlog: {}\n", want: `certfetch.yml:9: only one YAML document is allowed`},
		{desc: "root is a list", yaml: "- a\n", want: `certfetch.yml:1: must be a mapping, got a list`},
		{desc: "unknown top-level key with a case hint", yaml: minimal + "Timeout: 1m\n", want: `certfetch.yml:9: Timeout: unknown key (did you mean "timeout"?)`},
		{desc: "traefik without api", yaml: minimal + "traefik:\n  pollInterval: 30s\n", want: `certfetch.yml:10: traefik.api: required but missing`},
		{desc: "traefik api over another scheme", yaml: minimal + "traefik:\n  api:\n    url: ftp://x\n", want: `certfetch.yml:11: traefik.api.url: must be an http or https URL such as http://127.0.0.1:8080, got "ftp://x"`},
		{desc: "traefik api credentials in the URL", yaml: minimal + "traefik:\n  api:\n    url: http://admin:s3cret@127.0.0.1:8080\n", want: `certfetch.yml:11: traefik.api.url: must not hold credentials: set username and passwordFile`},
		{desc: "traefik api username alone", yaml: minimal + "traefik:\n  api:\n    url: http://127.0.0.1:8080\n    username: certfetch\n", want: `certfetch.yml:12: traefik.api.passwordFile: required when username is set`},
		{desc: "traefik poll too often", yaml: minimal + "traefik:\n  api: {url: http://127.0.0.1:8080}\n  pollInterval: 100ms\n", want: `certfetch.yml:11: traefik.pollInterval: must be at least 1s`},
		{desc: "resolver routers unknown key", yaml: minimal + "    routers: {certResolver: x, domain: [a.example.com]}\n", want: `certfetch.yml:9: resolvers.ca.routers.domain: unknown key`},
		{desc: "resolver routers bad domain", yaml: minimal + "    routers:\n      domains: [\"*.*.example.com\"]\n", want: `certfetch.yml:10: resolvers.ca.routers.domains[0]: invalid DNS name "*.*.example.com": a wildcard is allowed only as the whole leftmost label, as in *.example.com`},
		{desc: "unknown key deep down", yaml: minimal + "      webRoot: /x\n", want: `certfetch.yml:9: resolvers.ca.httpChallenge.webRoot: unknown key (did you mean "webroot"?)`},
		{desc: "duplicate key", yaml: minimal + "timeout: 1m\ntimeout: 2m\n", want: `certfetch.yml:10: timeout: duplicate key (first set on line 9)`},
		{desc: "output missing", yaml: "resolvers:\n  ca:\n    caServer: https://ca.example/dir\n    httpChallenge: {stateless: true}\n", want: `certfetch.yml:1: output: required but missing`},
		{desc: "resolvers missing", yaml: "output:\n  file:\n    directory: /srv/traefik\n", want: `certfetch.yml:1: resolvers: required but missing`},
		{desc: "no resolver defined", yaml: "output:\n  file:\n    directory: /srv/traefik\nresolvers: {}\n", want: `certfetch.yml:4: resolvers: must define at least one resolver`},
		{desc: "resolvers is a list", yaml: "output:\n  file:\n    directory: /srv/traefik\nresolvers:\n  - ca\n", want: `certfetch.yml:5: resolvers: must be a mapping, got a list`},
		{desc: "resolver name not file-name safe", yaml: "output:\n  file:\n    directory: /srv/traefik\nresolvers:\n  My CA:\n    caServer: https://ca.example/dir\n    httpChallenge: {stateless: true}\n", want: `certfetch.yml:5: resolvers.My CA: name "My CA" must use only a-z, 0-9, '.', '_' and '-', and not start with '.' or '-'`},
		{desc: "caServer over plain HTTP", yaml: "output:\n  file:\n    directory: /srv/traefik\nresolvers:\n  ca:\n    caServer: http://x\n    httpChallenge: {stateless: true}\n", want: `certfetch.yml:6: resolvers.ca.caServer: must be an https URL, got "http://x"`},
		{desc: "caServer missing", yaml: "output:\n  file:\n    directory: /srv/traefik\nresolvers:\n  ca:\n    httpChallenge: {stateless: true}\n", want: `certfetch.yml:6: resolvers.ca.caServer: required but missing`},
		{desc: "global timeout without unit", yaml: minimal + "timeout: 30\n", want: `certfetch.yml:9: timeout: must be a duration with a unit such as 30s or 5m, got 30`},
		{desc: "global timeout in words", yaml: minimal + "timeout: 30 seconds\n", want: `certfetch.yml:9: timeout: must be a duration such as 30s or 5m, got "30 seconds"`},
		{desc: "zero concurrent orders", yaml: minimal + "    maxConcurrentOrders: 0\n", want: `certfetch.yml:9: resolvers.ca.maxConcurrentOrders: must be a whole number from 1 to 1000, got 0`},
		{desc: "concurrent orders not a number", yaml: minimal + "    maxConcurrentOrders: many\n", want: `certfetch.yml:9: resolvers.ca.maxConcurrentOrders: must be a whole number from 1 to 1000, got a string`},
		{desc: "negative resolver timeout", yaml: minimal + "    timeout: -5s\n", want: `certfetch.yml:9: resolvers.ca.timeout: must be positive, got -5s`},
		{desc: "empty value", yaml: minimal + "storage:\n", want: `certfetch.yml:9: storage: must be a string, got nothing`},
		{desc: "number where a string is expected", yaml: minimal + "    profile: 2024\n", want: `certfetch.yml:9: resolvers.ca.profile: must be a string, got an integer`},
		{desc: "email with a display name", yaml: minimal + "    email: Admin <admin@example.com>\n", want: `certfetch.yml:9: resolvers.ca.email: must be a bare e-mail address such as admin@example.com, got "Admin <admin@example.com>"`},
		{desc: "EAB with both key sources", yaml: minimal + "    eab:\n      kid: k1\n      hmacEncoded: " + hmacKey + "\n      hmacFile: /etc/certfetch/eab.key\n", want: `certfetch.yml:10: resolvers.ca.eab: set exactly one of hmacEncoded or hmacFile, got hmacEncoded and hmacFile`},
		{desc: "EAB without key", yaml: minimal + "    eab:\n      kid: k1\n", want: `certfetch.yml:10: resolvers.ca.eab: set exactly one of hmacEncoded or hmacFile, got none`},
		{desc: "EAB key not base64url, value not echoed", yaml: minimal + "    eab:\n      kid: k1\n      hmacEncoded: " + hmacKey + "+/\n", want: `certfetch.yml:11: resolvers.ca.eab.hmacEncoded: the HMAC key must be base64url-encoded and not empty`},
		{desc: "EAB key file missing", yaml: minimal + "    eab:\n      kid: k1\n      hmacFile: missing.key\n", want: `certfetch.yml:11: resolvers.ca.eab.hmacFile: cannot read the HMAC key: open missing.key: no such file or directory`},
		{desc: "EAB key file not base64url", yaml: minimal + "    eab:\n      kid: k1\n      hmacFile: ../../testdata/certfetch/internal-root.pem\n", want: `certfetch.yml:11: resolvers.ca.eab.hmacFile: the HMAC key in ../../testdata/certfetch/internal-root.pem must be base64url-encoded and not empty`},
		{desc: "EAB without kid", yaml: minimal + "    eab:\n      hmacEncoded: " + hmacKey + "\n", want: `certfetch.yml:10: resolvers.ca.eab.kid: required but missing`},
		{desc: "unsupported account key type", yaml: minimal + "    keyType: EC521\n", want: `certfetch.yml:9: resolvers.ca.keyType: must be one of EC256, EC384, RSA2048, RSA3072, RSA4096, got "EC521"`},
		{desc: "CA certificate file without PEM", yaml: minimal + "    caCertificates: [../../testdata/certfetch/internal-eab.key]\n", want: `certfetch.yml:9: resolvers.ca.caCertificates[0]: no PEM certificate in ../../testdata/certfetch/internal-eab.key`},
		{desc: "CA certificate file missing", yaml: minimal + "    caCertificates:\n      - ../../testdata/certfetch/internal-root.pem\n      - nowhere.pem\n", want: `certfetch.yml:11: resolvers.ca.caCertificates[1]: cannot read: open nowhere.pem: no such file or directory`},
		{desc: "empty CA certificate list", yaml: minimal + "    caCertificates: []\n", want: `certfetch.yml:9: resolvers.ca.caCertificates: must list at least one PEM file (omit the key to trust the system roots)`},
		{desc: "no system pool and no CA certificates", yaml: minimal + "    caSystemCertPool: false\n", want: `certfetch.yml:9: resolvers.ca.caSystemCertPool: false without caCertificates would trust no CA`},
		{desc: "YAML 1.1 boolean", yaml: minimal + "    caSystemCertPool: yes\n", want: `certfetch.yml:9: resolvers.ca.caSystemCertPool: must be true or false, got a string`},
		{desc: "response header timeout above request timeout", yaml: minimal + "    http:\n      responseHeaderTimeout: 5m\n", want: `certfetch.yml:10: resolvers.ca.http.responseHeaderTimeout: 5m0s must not exceed requestTimeout (1m0s)`},
		{desc: "request timeout below a default", yaml: minimal + "    http:\n      requestTimeout: 20s\n", want: `certfetch.yml:10: resolvers.ca.http.responseHeaderTimeout: 30s must not exceed requestTimeout (20s)`},
		{desc: "requests per second negative", yaml: minimal + "    requestsPerSecond: -1\n", want: `certfetch.yml:9: resolvers.ca.requestsPerSecond: must be a number from 0 to 10000, got -1`},
		{desc: "requests per second not a number", yaml: minimal + "    requestsPerSecond: fast\n", want: `certfetch.yml:9: resolvers.ca.requestsPerSecond: must be a number from 0 to 10000, got a string`},
		{desc: "no challenge method", yaml: "output:\n  file:\n    directory: /srv/traefik\nresolvers:\n  ca:\n    caServer: https://ca.example/dir\n    httpChallenge:\n      stateless: false\n", want: `certfetch.yml:8: resolvers.ca.httpChallenge: set exactly one of webroot, listen or stateless: true, got none`},
		{desc: "two challenge methods", yaml: minimal + "      webroot: /srv/webroot\n", want: `certfetch.yml:8: resolvers.ca.httpChallenge: set exactly one of webroot, listen or stateless: true, got webroot and stateless`},
		{desc: "challenge missing", yaml: "output:\n  file:\n    directory: /srv/traefik\nresolvers:\n  ca:\n    caServer: https://ca.example/dir\n", want: `certfetch.yml:6: resolvers.ca: set exactly one of httpChallenge or dnsChallenge, got none`},
		{desc: "listen without port", yaml: "output:\n  file:\n    directory: /srv/traefik\nresolvers:\n  ca:\n    caServer: https://ca.example/dir\n    httpChallenge:\n      listen: 127.0.0.1\n", want: `certfetch.yml:8: resolvers.ca.httpChallenge.listen: must be host:port with a port from 1 to 65535, such as 127.0.0.1:8402, got "127.0.0.1"`},
		{desc: "certificates not a list", yaml: minimal + "certificates:\n  domains: [a.example]\n", want: `certfetch.yml:10: certificates: must be a list, got a mapping`},
		{desc: "certificate without domains key", yaml: minimal + "certificates:\n  - name: a\n", want: `certfetch.yml:10: certificates[0].domains: required but missing`},
		{desc: "empty domain list", yaml: minimal + "certificates:\n  - domains: []\n", want: `certfetch.yml:10: certificates[0].domains: must list at least one domain`},
		{desc: "wildcard not leftmost", yaml: minimal + "certificates:\n  - domains: [a.example, \"foo.*.example.com\"]\n", want: `certfetch.yml:10: certificates[0].domains[1]: invalid DNS name "foo.*.example.com": a wildcard is allowed only as the whole leftmost label, as in *.example.com`},
		{desc: "wildcard needs DNS-01", yaml: minimal + "certificates:\n  - domains: [a.example, \"*.example.com\"]\n", want: `certfetch.yml:10: certificates[0].domains[1]: wildcard *.example.com needs the DNS-01 challenge, but resolver ca answers HTTP-01 (give it a dnsChallenge)`},
		{desc: "partial wildcard label", yaml: minimal + "certificates:\n  - domains: [\"w*.example.com\"]\n", want: `certfetch.yml:10: certificates[0].domains[0]: invalid DNS name "w*.example.com": a wildcard is allowed only as the whole leftmost label, as in *.example.com`},
		{desc: "underscore in a domain", yaml: minimal + "certificates:\n  - domains:\n      - my_host.example.com\n", want: `certfetch.yml:11: certificates[0].domains[0]: invalid DNS name "my_host.example.com": character '_' is not allowed (use the xn-- form for international names)`},
		{desc: "label ending in a hyphen", yaml: minimal + "certificates:\n  - domains: [a-.example.com]\n", want: `certfetch.yml:10: certificates[0].domains[0]: invalid DNS name "a-.example.com": label "a-" starts or ends with a hyphen`},
		{desc: "trailing dot", yaml: minimal + "certificates:\n  - domains: [example.com.]\n", want: `certfetch.yml:10: certificates[0].domains[0]: invalid DNS name "example.com.": must not end with a dot`},
		{desc: "IP address", yaml: minimal + "certificates:\n  - domains: [192.0.2.1]\n", want: `certfetch.yml:10: certificates[0].domains[0]: invalid DNS name "192.0.2.1": IP addresses are not supported`},
		{desc: "duplicate domain in another case", yaml: minimal + "certificates:\n  - domains: [www.example.com, WWW.Example.com]\n", want: `certfetch.yml:10: certificates[0].domains[1]: www.example.com is already listed as certificates[0].domains[0]`},
		{desc: "unknown resolver", yaml: minimal + "certificates:\n  - domains: [a.example]\n    resolver: le\n", want: `certfetch.yml:11: certificates[0].resolver: unknown resolver "le" (defined: ca)`},
		{desc: "resolver omitted with two resolvers", yaml: minimal + "  ca2:\n    caServer: https://ca2.example/dir\n    httpChallenge: {stateless: true}\ncertificates:\n  - domains: [a.example]\n", want: `certfetch.yml:13: certificates[0].resolver: required when more than one resolver is defined (ca, ca2)`},
		{desc: "derived name collides with an explicit one", yaml: minimal + "certificates:\n  - domains: [a.example]\n  - domains: [b.example]\n    name: a.example\n", want: `certfetch.yml:11: certificates[1]: name "a.example" is already used by certificates[0]`},
		{desc: "name with a path separator", yaml: minimal + "certificates:\n  - domains: [a.example]\n    name: ../evil\n", want: `certfetch.yml:11: certificates[0].name: name "../evil" must use only a-z, 0-9, '.', '_' and '-', and not start with '.' or '-'`},
		{desc: "unknown key in a certificate", yaml: minimal + "certificates:\n  - domain: a.example\n", want: "certfetch.yml:10: certificates[0].domain: unknown key\ncertfetch.yml:10: certificates[0].domains: required but missing"},
		{desc: "unsupported certificate key type", yaml: minimal + "certificates:\n  - domains: [a.example]\n    keyType: ed25519\n", want: `certfetch.yml:11: certificates[0].keyType: must be one of EC256, EC384, RSA2048, RSA3072, RSA4096, got "ed25519"`},
		{desc: "output directory missing", yaml: "output:\n  file:\n    gracePeriod: 1m\nresolvers:\n  ca:\n    caServer: https://ca.example/dir\n    httpChallenge: {stateless: true}\n", want: `certfetch.yml:3: output.file.directory: required but missing`},
		{desc: "output key misplaced under a resolver", yaml: minimal + "    gracePeriod: 1s\n", want: `certfetch.yml:9: resolvers.ca.gracePeriod: unknown key`},
		{desc: "grace period below the minimum", yaml: "output:\n  file:\n    directory: /srv/traefik\n    gracePeriod: 1s\nresolvers:\n  ca:\n    caServer: https://ca.example/dir\n    httpChallenge: {stateless: true}\n", want: `certfetch.yml:4: output.file.gracePeriod: must be at least 5s so Traefik's reload can still read the old files, got 1s`},
		{desc: "group-readable keys not a boolean", yaml: "output:\n  file:\n    directory: /srv/traefik\n    groupReadableKeys: \"true\"\nresolvers:\n  ca:\n    caServer: https://ca.example/dir\n    httpChallenge: {stateless: true}\n", want: `certfetch.yml:4: output.file.groupReadableKeys: must be true or false, got a string`},
		{desc: "no output configured", yaml: "output: {}\n" + resolverOnly, want: `certfetch.yml:1: output: configure at least one of file, redis or etcd`},
		{desc: "unknown output kind", yaml: "output:\n  consul:\n    endpoints: [x]\n" + resolverOnly, want: "certfetch.yml:2: output.consul: unknown key\ncertfetch.yml:2: output: configure at least one of file, redis or etcd"},
		{desc: "redis address missing", yaml: "output:\n  redis:\n    db: 1\n" + resolverOnly, want: `certfetch.yml:3: output.redis.address: required but missing`},
		{desc: "redis address without port", yaml: "output:\n  redis:\n    address: localhost\n" + resolverOnly, want: `certfetch.yml:3: output.redis.address: must be host:port with a port from 1 to 65535, got "localhost"`},
		{desc: "redis address as URL", yaml: "output:\n  redis:\n    address: redis://localhost:6379\n" + resolverOnly, want: `certfetch.yml:3: output.redis.address: must be host:port with a port from 1 to 65535, got "redis://localhost:6379"`},
		{desc: "redis inline password refused", yaml: "output:\n  redis:\n    address: localhost:6379\n    password: " + hmacKey + "\n" + resolverOnly, want: `certfetch.yml:4: output.redis.password: unknown key`},
		{desc: "redis password file missing", yaml: "output:\n  redis:\n    address: localhost:6379\n    passwordFile: missing.pw\n" + resolverOnly, want: `certfetch.yml:4: output.redis.passwordFile: cannot read the password: open missing.pw: no such file or directory`},
		{desc: "redis password file empty", yaml: "output:\n  redis:\n    address: localhost:6379\n    passwordFile: /dev/null\n" + resolverOnly, want: `certfetch.yml:4: output.redis.passwordFile: the password file /dev/null is empty`},
		{desc: "redis db negative", yaml: "output:\n  redis:\n    address: localhost:6379\n    db: -1\n" + resolverOnly, want: `certfetch.yml:4: output.redis.db: must be a whole number from 0 to 65535, got -1`},
		{desc: "redis db as string", yaml: "output:\n  redis:\n    address: localhost:6379\n    db: \"1\"\n" + resolverOnly, want: `certfetch.yml:4: output.redis.db: must be a whole number from 0 to 65535, got a string`},
		{desc: "redis rootKey with a leading slash", yaml: "output:\n  redis:\n    address: localhost:6379\n    rootKey: /traefik\n" + resolverOnly, want: `certfetch.yml:4: output.redis.rootKey: must be slash-separated segments of letters, digits, '.', '_' and '-' starting with a letter or digit, such as traefik, got "/traefik"`},
		{desc: "etcd rootKey starting with an underscore", yaml: "output:\n  etcd:\n    endpoints: [localhost:2379]\n    rootKey: _certfetch\n" + resolverOnly, want: `certfetch.yml:4: output.etcd.rootKey: must be slash-separated segments of letters, digits, '.', '_' and '-' starting with a letter or digit, such as traefik, got "_certfetch"`},
		{desc: "redis timeout without unit", yaml: "output:\n  redis:\n    address: localhost:6379\n    timeout: 5\n" + resolverOnly, want: `certfetch.yml:4: output.redis.timeout: must be a duration with a unit such as 30s or 5m, got 5`},
		{desc: "redis tls certFile without keyFile", yaml: "output:\n  redis:\n    address: localhost:6379\n    tls:\n      certFile: client.crt\n" + resolverOnly, want: `certfetch.yml:5: output.redis.tls.keyFile: required when certFile is set`},
		{desc: "redis tls caFile without PEM", yaml: "output:\n  redis:\n    address: localhost:6379\n    tls:\n      caFile: ../../testdata/certfetch/internal-eab.key\n" + resolverOnly, want: `certfetch.yml:5: output.redis.tls.caFile: no PEM certificate in ../../testdata/certfetch/internal-eab.key`},
		{desc: "redis tls unknown key", yaml: "output:\n  redis:\n    address: localhost:6379\n    tls:\n      insecureSkipVerify: true\n" + resolverOnly, want: `certfetch.yml:5: output.redis.tls.insecureSkipVerify: unknown key`},
		{desc: "etcd endpoints missing", yaml: "output:\n  etcd:\n    rootKey: traefik\n" + resolverOnly, want: `certfetch.yml:3: output.etcd.endpoints: required but missing`},
		{desc: "etcd endpoints empty", yaml: "output:\n  etcd:\n    endpoints: []\n" + resolverOnly, want: `certfetch.yml:3: output.etcd.endpoints: must list at least one endpoint`},
		{desc: "etcd endpoints as a string", yaml: "output:\n  etcd:\n    endpoints: localhost:2379\n" + resolverOnly, want: `certfetch.yml:3: output.etcd.endpoints: must be a list, got a string`},
		{desc: "etcd endpoint with a path", yaml: "output:\n  etcd:\n    endpoints:\n      - localhost:2379\n      - http://etcd.example:2379/v3\n" + resolverOnly, want: `certfetch.yml:5: output.etcd.endpoints[1]: must be host:port or http(s)://host:port, such as 127.0.0.1:2379, got "http://etcd.example:2379/v3"`},
		{desc: "etcd endpoint with another scheme", yaml: "output:\n  etcd:\n    endpoints: [\"unix:///run/etcd.sock\"]\n" + resolverOnly, want: `certfetch.yml:3: output.etcd.endpoints[0]: must be host:port or http(s)://host:port, such as 127.0.0.1:2379, got "unix:///run/etcd.sock"`},
		{desc: "etcd username without password", yaml: "output:\n  etcd:\n    endpoints: [localhost:2379]\n    username: certfetch\n" + resolverOnly, want: `certfetch.yml:4: output.etcd.passwordFile: required when username is set (etcd authenticates with both)`},
		{desc: "etcd timeout zero", yaml: "output:\n  etcd:\n    endpoints: [localhost:2379]\n    timeout: 0s\n" + resolverOnly, want: `certfetch.yml:4: output.etcd.timeout: must be positive, got 0s`},
		{desc: "output inside storage", yaml: minimal + "storage: /srv\n", want: `certfetch.yml:3: output.file.directory: must be separate from storage (/srv): Traefik reads this directory, the state directory holds private keys`},
		{desc: "remaining fraction above one", yaml: minimal + "renewal:\n  remainingFraction: 1.5\n", want: `certfetch.yml:10: renewal.remainingFraction: must be a number between 0 and 1 (exclusive), got 1.5`},
		{desc: "remaining fraction as percent", yaml: minimal + "renewal:\n  remainingFraction: 33%\n", want: `certfetch.yml:10: renewal.remainingFraction: must be a number between 0 and 1, got a string`},
		{desc: "metrics address without port", yaml: minimal + "metrics:\n  listen: localhost\n", want: `certfetch.yml:10: metrics.listen: must be host:port with a port from 1 to 65535, such as 127.0.0.1:8402, got "localhost"`},
		{desc: "unknown log level", yaml: minimal + "log:\n  level: verbose\n", want: `certfetch.yml:10: log.level: must be one of debug, info, warn, error, got "verbose"`},
		{desc: "unknown log format", yaml: minimal + "log:\n  format: xml\n", want: `certfetch.yml:10: log.format: must be one of text, json, got "xml"`},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			t.Parallel()
			cfg, err := config.Parse("certfetch.yml", []byte(tt.yaml))
			require.Error(t, err)
			assert.Nil(t, cfg)
			assert.Equal(t, tt.want, err.Error())
			assert.NotContains(t, err.Error(), hmacKey)
			var cerr *config.Error
			require.ErrorAs(t, err, &cerr)
			assert.Equal(t, "certfetch.yml", cerr.File)
		})
	}
}

func TestParseReportsEveryProblemInLineOrder(t *testing.T) {
	t.Parallel()
	data := minimal + "    keyType: EC1\ntimeout: soon\nlog:\n  level: loud\n"
	_, err := config.Parse("certfetch.yml", []byte(data))
	var errs config.Errors
	require.ErrorAs(t, err, &errs)
	require.Len(t, errs, 3)
	assert.Equal(t, []config.Error{
		{File: "certfetch.yml", Line: 9, Key: "resolvers.ca.keyType", Problem: `must be one of EC256, EC384, RSA2048, RSA3072, RSA4096, got "EC1"`},
		{File: "certfetch.yml", Line: 10, Key: "timeout", Problem: `must be a duration such as 30s or 5m, got "soon"`},
		{File: "certfetch.yml", Line: 12, Key: "log.level", Problem: `must be one of debug, info, warn, error, got "loud"`},
	}, []config.Error{*errs[0], *errs[1], *errs[2]})
}

func TestLoadMissingFile(t *testing.T) {
	t.Parallel()
	_, err := config.Load("does-not-exist.yml")
	require.ErrorIs(t, err, fs.ErrNotExist)
	assert.EqualError(t, err, "load config does-not-exist.yml: open does-not-exist.yml: no such file or directory")
}
