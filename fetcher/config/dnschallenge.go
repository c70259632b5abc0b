package config

import (
	"bufio"
	"bytes"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/certfetch/certfetch/fetcher/dnsprovider"
	"github.com/certfetch/certfetch/internal/secret"
)

// DNSChallenge says how DNS-01 is answered, in the vocabulary of Traefik's
// certificatesResolvers.<name>.acme.dnsChallenge, plus where the provider's variables
// come from when the process environment is not the place (systemd units).
type DNSChallenge struct {
	// Provider is lego's name for the DNS provider, such as rfc2136 or cloudflare.
	Provider string
	// Resolvers are the DNS servers (host:port) asked during the propagation check; empty
	// for the system's resolvers.
	Resolvers   []string
	Propagation Propagation
	// Env holds the provider's variables from env and envFile (lego's names, _FILE
	// variants included); they win over the process environment's. Every value is
	// treated as a secret.
	Env map[string]secret.Secret
}

// Propagation is Traefik's dnsChallenge.propagation: how certfetch decides that the CA
// can see a TXT record before it asks the CA to look.
type Propagation struct {
	// DelayBeforeChecks is waited after presenting, before the first check.
	DelayBeforeChecks time.Duration
	// DisableChecks skips the checks (only DelayBeforeChecks is waited).
	DisableChecks bool
	// DisableANSChecks skips asking the zone's authoritative servers.
	DisableANSChecks bool
	// RequireAllRNS requires every resolver in Resolvers to see the record, not one.
	RequireAllRNS bool
}

// defaultDNSPort is the port a resolver written without one is asked on.
const defaultDNSPort = "53"

// envName is a variable name the way lego's providers spell them (and POSIX shells
// accept them).
var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

func (d *decoder) dnsChallenge(f *field) *DNSChallenge {
	c := &DNSChallenge{}
	m, ok := d.mapping(f.value, f.path, "provider", "resolvers", "propagation", "env", "envFile",
		"delayBeforeCheck", "disablePropagationCheck")
	if !ok {
		return c
	}
	// Traefik still accepts its deprecated spellings; a configuration moved from it is
	// told where they went instead of just "unknown key".
	for old, now := range map[string]string{"delayBeforeCheck": "delayBeforeChecks", "disablePropagationCheck": "disableChecks"} {
		if x := m.get(old); x != nil {
			d.fail(x.key, x.path, "deprecated in Traefik and not supported: use propagation.%s", now)
		}
	}
	if p := m.require(d, "provider"); p != nil {
		c.Provider = d.provider(p)
	}
	if r := m.get("resolvers"); r != nil {
		c.Resolvers = d.dnsServers(r)
	}
	if p := m.get("propagation"); p != nil {
		d.propagation(p, &c.Propagation)
	}
	c.Env = map[string]secret.Secret{}
	if e := m.get("envFile"); e != nil {
		d.envFile(e, c.Env)
	}
	if e := m.get("env"); e != nil {
		d.env(e, c.Env, m.get("envFile") != nil)
	}
	return c
}

func (d *decoder) provider(f *field) string {
	s, ok := d.str(f.value, f.path)
	if !ok {
		return ""
	}
	switch {
	case s == dnsprovider.Manual:
		d.fail(f.value, f.path, "lego's manual provider waits for someone to press Enter; certfetch runs unattended "+
			"(use exec or httpreq to run your own hook)")
	case !dnsprovider.Known(s):
		d.fail(f.value, f.path, "%v", &dnsprovider.UnknownError{Name: s})
	}
	return s
}

// dnsServers decodes a list of DNS servers; a server without a port is asked on 53, as
// Traefik and lego do.
func (d *decoder) dnsServers(f *field) []string {
	items, ok := d.list(f)
	if ok && len(items) == 0 {
		d.fail(f.value, f.path, "must list at least one DNS server (omit the key to use the system's resolvers)")
	}
	out := make([]string, 0, len(items))
	for i, n := range items {
		p := index(f.path, i)
		s, ok := d.str(n, p)
		if !ok {
			continue
		}
		host, port, err := net.SplitHostPort(s)
		if err != nil {
			host, port = strings.Trim(s, "[]"), defaultDNSPort
		}
		if number, perr := strconv.Atoi(port); host == "" || strings.ContainsAny(host, "/ ") || perr != nil || number < 1 || number > 65535 {
			d.fail(n, p, "must be a DNS server as host or host:port, such as 10.0.0.53 or ns1.corp.example:53, got %q", s)
			continue
		}
		out = append(out, net.JoinHostPort(host, port))
	}
	return out
}

func (d *decoder) propagation(f *field, p *Propagation) {
	m, ok := d.mapping(f.value, f.path, "delayBeforeChecks", "disableChecks", "disableANSChecks", "requireAllRNS")
	if !ok {
		return
	}
	if x := m.get("delayBeforeChecks"); x != nil {
		p.DelayBeforeChecks, _ = d.duration(x.value, x.path)
	}
	for key, dst := range map[string]*bool{"disableChecks": &p.DisableChecks, "disableANSChecks": &p.DisableANSChecks, "requireAllRNS": &p.RequireAllRNS} {
		if x := m.get(key); x != nil {
			*dst, _ = d.boolean(x.value, x.path)
		}
	}
}

// env decodes the env mapping into vars. A value may be any scalar (a TTL is a number in
// YAML) and is taken as written. Messages never include a value. A variable that envFile
// sets too is an error: which of the two wins would be a guess.
func (d *decoder) env(f *field, vars map[string]secret.Secret, fromFile bool) {
	for _, e := range d.names(f.value, f.path) {
		if !d.envName(e.key, e.path, e.key.Value) {
			continue
		}
		if e.value.Kind != yaml.ScalarNode || e.value.ShortTag() == "!!null" {
			d.fail(e.value, e.path, "must be a value, got %s", describe(e.value))
			continue
		}
		if _, dup := vars[e.key.Value]; dup && fromFile {
			d.fail(e.key, e.path, "also set in envFile; set it in one place")
			continue
		}
		vars[e.key.Value] = secret.New(e.value.Value)
	}
}

func (d *decoder) envName(n *yaml.Node, path, s string) bool {
	if !envName.MatchString(s) {
		d.fail(n, path, "%q is not a variable name (letters, digits and _, not starting with a digit)", s)
		return false
	}
	return true
}

// envFile reads a KEY=VALUE file, as systemd's EnvironmentFile= writes them: blank lines
// and lines starting with # are skipped, "export " before a name is allowed, and a value
// in matching single or double quotes loses them. Messages name the file and the line,
// never the value.
func (d *decoder) envFile(f *field, vars map[string]secret.Secret) {
	p, ok := d.path(f.value, f.path)
	if !ok {
		return
	}
	data, err := os.ReadFile(p)
	if err != nil {
		d.fail(f.value, f.path, "cannot read: %v", err)
		return
	}
	lines := bufio.NewScanner(bytes.NewReader(data))
	for line := 1; lines.Scan(); line++ {
		text := strings.TrimSpace(lines.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		k, v, found := strings.Cut(strings.TrimPrefix(text, "export "), "=")
		k = strings.TrimSpace(k)
		if !found || !envName.MatchString(k) {
			d.fail(f.value, f.path, "%s line %d: must be NAME=value", p, line)
			continue
		}
		if _, dup := vars[k]; dup {
			d.fail(f.value, f.path, "%s line %d: %s is set twice", p, line, k)
			continue
		}
		vars[k] = secret.New(unquote(strings.TrimSpace(v)))
	}
	if err := lines.Err(); err != nil {
		d.fail(f.value, f.path, "cannot read %s: %v", p, err)
	}
}

// unquote strips one pair of matching quotes around v.
func unquote(v string) string {
	if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
		return v[1 : len(v)-1]
	}
	return v
}
