package config

import (
	"crypto/x509"
	"encoding/base64"
	"net/mail"
	"net/url"
	"os"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/certfetch/certfetch/acme"
	"github.com/certfetch/certfetch/internal/secret"
)

// HTTP client defaults for talking to the CA: the engine's (package acme owns them and
// says why; a CA's synchronous finalize is exempt from the per-request timeouts there).
const (
	DefaultDialTimeout           = acme.DefaultDialTimeout
	DefaultTLSHandshakeTimeout   = acme.DefaultTLSHandshakeTimeout
	DefaultResponseHeaderTimeout = acme.DefaultResponseHeaderTimeout
	DefaultRequestTimeout        = acme.DefaultRequestTimeout
)

const (
	// DefaultRequestsPerSecond limits the requests certfetch sends to one CA. A renewal
	// costs about seven requests, so 20 per second renews a fleet of 1,000 certificates
	// in about six minutes while staying at Let's Encrypt's per-endpoint limit (20 per
	// second) and far from what an internal CA's front end absorbs; 0 removes the limit.
	DefaultRequestsPerSecond = 20
	// maxRequestsPerSecond keeps a typo from meaning "no limit at all".
	maxRequestsPerSecond = 10000
)

const (
	// DefaultMaxConcurrentOrders: CAs rate limit per account, and a slow CA
	// mostly makes us wait, so a few parallel orders keep it busy without
	// tripping its limits.
	DefaultMaxConcurrentOrders = 4
	// maxConcurrentOrdersLimit keeps a typo from opening thousands of
	// connections to a CA at once.
	maxConcurrentOrdersLimit = 1000
)

// Resolver is one ACME account at one CA, like Traefik's
// certificatesResolvers.<name>.acme.
type Resolver struct {
	Name string
	// CAServer is the directory URL; always https.
	CAServer string
	// Email is the account contact; may be empty.
	Email string
	// EAB is nil when the CA needs no external account binding.
	EAB *EAB
	// KeyType is the account key type.
	KeyType KeyType
	// CACertificates are the PEM files given in caCertificates.
	CACertificates []string
	// CASystemCertPool says whether the system roots are trusted as well.
	// It defaults to true when CACertificates is empty (otherwise no CA
	// would be trusted) and to false otherwise, so a private CA's roots
	// alone are trusted unless the user asks for more.
	CASystemCertPool bool
	// Profile is the ACME profile to request; empty for the CA's default.
	Profile string
	// PreferredChain is the issuer common name of the preferred chain.
	PreferredChain string
	// Timeout overrides Config.Timeout for this resolver; 0 inherits.
	Timeout time.Duration
	// MaxConcurrentOrders bounds the orders in flight against this CA.
	MaxConcurrentOrders int
	// RequestsPerSecond bounds the requests sent to this CA, over all its orders; 0:
	// no limit.
	RequestsPerSecond float64
	HTTP              HTTPTimeouts
	// HTTPChallenge says how the HTTP-01 challenge is answered; the zero value when
	// DNSChallenge is set.
	HTTPChallenge HTTPChallenge
	// DNSChallenge is nil unless the resolver answers DNS-01 (Traefik's dnsChallenge);
	// a resolver answers exactly one of the two.
	DNSChallenge *DNSChallenge
	// Routers says which of Traefik's routers the resolver serves when the traefik
	// section is set.
	Routers Routers
}

// EAB is an external account binding (RFC 8555 §7.3.4).
type EAB struct {
	KID string
	// HMAC is the key, base64url-encoded without padding (lego's
	// HmacEncoded format), whatever padding the file used.
	HMAC secret.Secret
}

// HTTPTimeouts configure the HTTP client used against the CA.
type HTTPTimeouts struct {
	DialTimeout           time.Duration
	TLSHandshakeTimeout   time.Duration
	ResponseHeaderTimeout time.Duration
	RequestTimeout        time.Duration
}

// HTTPChallenge holds exactly one way to answer HTTP-01.
type HTTPChallenge struct {
	// Webroot: write <Webroot>/.well-known/acme-challenge/<token> for the
	// plugin (or any web server) to serve.
	Webroot string
	// Listen: serve challenges on this host:port for the plugin's upstream
	// mode.
	Listen string
	// Stateless: the plugin answers from the account thumbprint alone.
	Stateless bool
}

func (d *decoder) resolvers(f *field) map[string]*Resolver {
	out := map[string]*Resolver{}
	entries := d.names(f.value, f.path)
	if entries == nil && f.value.Kind == yaml.MappingNode {
		d.fail(f.value, f.path, "must define at least one resolver")
	}
	for _, e := range entries {
		d.name(e.key, e.path, e.key.Value)
		out[e.key.Value] = d.resolver(e)
	}
	return out
}

func (d *decoder) resolver(f *field) *Resolver {
	r := &Resolver{
		Name:                f.key.Value,
		KeyType:             EC256,
		MaxConcurrentOrders: DefaultMaxConcurrentOrders,
		RequestsPerSecond:   DefaultRequestsPerSecond,
		HTTP: HTTPTimeouts{
			DialTimeout:           DefaultDialTimeout,
			TLSHandshakeTimeout:   DefaultTLSHandshakeTimeout,
			ResponseHeaderTimeout: DefaultResponseHeaderTimeout,
			RequestTimeout:        DefaultRequestTimeout,
		},
	}
	m, ok := d.mapping(f.value, f.path, "caServer", "email", "eab", "keyType", "caCertificates",
		"caSystemCertPool", "profile", "preferredChain", "timeout", "maxConcurrentOrders", "requestsPerSecond", "http", "httpChallenge",
		"dnsChallenge", "routers")
	if !ok {
		return r
	}
	if c := m.require(d, "caServer"); c != nil {
		r.CAServer, _ = d.httpsURL(c.value, c.path)
	}
	if e := m.get("email"); e != nil {
		r.Email, _ = d.email(e.value, e.path)
	}
	if e := m.get("eab"); e != nil {
		r.EAB = d.eab(e)
	}
	if k := m.get("keyType"); k != nil {
		s, _ := d.oneOf(k.value, k.path, keyTypes...)
		r.KeyType = KeyType(s)
	}
	d.trust(m, r)
	if p := m.get("profile"); p != nil {
		r.Profile, _ = d.str(p.value, p.path)
	}
	if p := m.get("preferredChain"); p != nil {
		r.PreferredChain, _ = d.str(p.value, p.path)
	}
	if t := m.get("timeout"); t != nil {
		r.Timeout, _ = d.duration(t.value, t.path)
	}
	if c := m.get("maxConcurrentOrders"); c != nil {
		r.MaxConcurrentOrders, _ = d.intRange(c.value, c.path, 1, maxConcurrentOrdersLimit)
	}
	if q := m.get("requestsPerSecond"); q != nil {
		r.RequestsPerSecond, _ = d.number(q.value, q.path, 0, maxRequestsPerSecond)
	}
	if h := m.get("http"); h != nil {
		d.httpTimeouts(h, &r.HTTP)
	}
	h, dns := m.get("httpChallenge"), m.get("dnsChallenge")
	var set []string
	if h != nil {
		r.HTTPChallenge = d.httpChallenge(h)
		set = append(set, "httpChallenge")
	}
	if dns != nil {
		r.DNSChallenge = d.dnsChallenge(dns)
		set = append(set, "dnsChallenge")
	}
	d.exactlyOne(f, set, "httpChallenge", "dnsChallenge")
	r.Routers = Routers{CertResolver: r.Name}
	if rt := m.get("routers"); rt != nil {
		r.Routers = d.routers(rt, r.Name)
	}
	return r
}

func (d *decoder) httpsURL(n *yaml.Node, path string) (string, bool) {
	s, ok := d.str(n, path)
	if !ok {
		return "", false
	}
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		d.fail(n, path, "must be an https URL, got %q", s)
		return "", false
	}
	return s, true
}

func (d *decoder) email(n *yaml.Node, path string) (string, bool) {
	s, ok := d.str(n, path)
	if !ok {
		return "", false
	}
	if a, err := mail.ParseAddress(s); err != nil || a.Address != s {
		d.fail(n, path, "must be a bare e-mail address such as admin@example.com, got %q", s)
		return "", false
	}
	return s, true
}

func (d *decoder) eab(f *field) *EAB {
	m, ok := d.mapping(f.value, f.path, "kid", "hmacEncoded", "hmacFile")
	if !ok {
		return nil
	}
	e := &EAB{}
	if k := m.require(d, "kid"); k != nil {
		e.KID, _ = d.str(k.value, k.path)
	}
	encoded, file := m.get("hmacEncoded"), m.get("hmacFile")
	var set []string
	if encoded != nil {
		set = append(set, "hmacEncoded")
	}
	if file != nil {
		set = append(set, "hmacFile")
	}
	if !d.exactlyOne(f, set, "hmacEncoded", "hmacFile") {
		return e
	}
	switch {
	case encoded != nil:
		if s, ok := d.str(encoded.value, encoded.path); ok {
			e.HMAC, _ = d.hmac(encoded.value, encoded.path, s, "")
		}
	case file != nil:
		if p, ok := d.path(file.value, file.path); ok {
			data, err := os.ReadFile(p)
			if err != nil {
				d.fail(file.value, file.path, "cannot read the HMAC key: %v", err)
				break
			}
			e.HMAC, _ = d.hmac(file.value, file.path, strings.TrimSpace(string(data)), " in "+p)
		}
	}
	return e
}

// hmac decodes a base64url key with or without padding. Messages never
// include the key; where says which file it came from.
func (d *decoder) hmac(n *yaml.Node, path, encoded, where string) (secret.Secret, bool) {
	key, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(encoded, "="))
	if err != nil || len(key) == 0 {
		d.fail(n, path, "the HMAC key%s must be base64url-encoded and not empty", where)
		return secret.Secret{}, false
	}
	return secret.New(base64.RawURLEncoding.EncodeToString(key)), true
}

// trust decodes caCertificates (each file must hold a PEM certificate) and
// caSystemCertPool. The ACME engine loads the files when it connects.
func (d *decoder) trust(m fields, r *Resolver) {
	if c := m.get("caCertificates"); c != nil {
		items, _ := d.list(c)
		if c.value.Kind == yaml.SequenceNode && len(items) == 0 {
			d.fail(c.value, c.path, "must list at least one PEM file (omit the key to trust the system roots)")
		}
		for i, n := range items {
			p, ok := d.path(n, index(c.path, i))
			if !ok {
				continue
			}
			data, err := os.ReadFile(p)
			if err != nil {
				d.fail(n, index(c.path, i), "cannot read: %v", err)
				continue
			}
			if !x509.NewCertPool().AppendCertsFromPEM(data) {
				d.fail(n, index(c.path, i), "no PEM certificate in %s", p)
				continue
			}
			r.CACertificates = append(r.CACertificates, p)
		}
	}
	r.CASystemCertPool = len(r.CACertificates) == 0
	sys := m.get("caSystemCertPool")
	if sys != nil {
		v, ok := d.boolean(sys.value, sys.path)
		if ok && !v && m.get("caCertificates") == nil {
			d.fail(sys.value, sys.path, "false without caCertificates would trust no CA")
		}
		r.CASystemCertPool = v
	}
}

func (d *decoder) httpTimeouts(f *field, h *HTTPTimeouts) {
	m, ok := d.mapping(f.value, f.path, "dialTimeout", "tlsHandshakeTimeout", "responseHeaderTimeout", "requestTimeout")
	if !ok {
		return
	}
	parts := []struct {
		key string
		dst *time.Duration
	}{
		{"dialTimeout", &h.DialTimeout},
		{"tlsHandshakeTimeout", &h.TLSHandshakeTimeout},
		{"responseHeaderTimeout", &h.ResponseHeaderTimeout},
		{"requestTimeout", &h.RequestTimeout},
	}
	for _, p := range parts {
		if v := m.get(p.key); v != nil {
			*p.dst, _ = d.duration(v.value, v.path)
		}
	}
	if h.RequestTimeout == 0 { // requestTimeout itself was invalid and is reported
		return
	}
	req := m.get("requestTimeout")
	for _, p := range parts[:3] {
		if *p.dst <= h.RequestTimeout {
			continue
		}
		// Point at whichever of the two the user wrote.
		at := m.get(p.key)
		if at == nil {
			at = req
		}
		d.fail(at.value, join(f.path, p.key), "%s must not exceed requestTimeout (%s)", *p.dst, h.RequestTimeout)
	}
}

func (d *decoder) httpChallenge(f *field) HTTPChallenge {
	var h HTTPChallenge
	m, ok := d.mapping(f.value, f.path, "webroot", "listen", "stateless")
	if !ok {
		return h
	}
	var set []string
	if w := m.get("webroot"); w != nil {
		h.Webroot, _ = d.path(w.value, w.path)
		set = append(set, "webroot")
	}
	if l := m.get("listen"); l != nil {
		h.Listen, _ = d.address(l.value, l.path)
		set = append(set, "listen")
	}
	if s := m.get("stateless"); s != nil {
		h.Stateless, _ = d.boolean(s.value, s.path)
		if h.Stateless {
			set = append(set, "stateless")
		}
	}
	d.exactlyOne(f, set, "webroot", "listen", "stateless: true")
	return h
}
