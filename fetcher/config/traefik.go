package config

import (
	"net/url"
	"time"

	"github.com/certfetch/certfetch/internal/secret"
)

// Defaults of the traefik section (discovery of Traefik's routers).
const (
	// DefaultPollInterval: Traefik's own ACME provider orders a new router's certificate
	// as soon as the router appears; 30 s keeps that wait short, and one poll of 1,000
	// routers costs Traefik a few requests (README, "Switching from certificatesResolvers").
	DefaultPollInterval = 30 * time.Second
	// minPollInterval keeps a typo from turning the poll into a load test of Traefik.
	minPollInterval = time.Second
	// DefaultWithdrawAfter is how long a certificate stays published after its last
	// router disappeared from Traefik's API: a container restart or a provider's reload
	// removes a router for seconds, and withdrawing its certificate then would break
	// TLS for it. Ten minutes outlast those; a router gone for good is withdrawn soon
	// enough.
	DefaultWithdrawAfter = 10 * time.Minute
	// DefaultAPITimeout bounds one poll of Traefik's API (every page).
	DefaultAPITimeout = 10 * time.Second
)

// DefaultRoutersKeyType is the key type of a discovered certificate when the resolver
// does not set routers.keyType and no certificate of that name is stored yet: Traefik's
// own default (certificatesResolvers.<n>.acme.keyType), so that a certificate imported
// from acme.json keeps its key type and is not issued again for another one.
const DefaultRoutersKeyType = RSA4096

// Traefik configures the discovery of the certificates Traefik's routers ask for
// (routers whose tls.certResolver names a certfetch resolver), the drop-in for Traefik's
// certificatesResolvers.
type Traefik struct {
	API TraefikAPI
	// PollInterval is how often the API is read.
	PollInterval time.Duration
	// WithdrawAfter is how long a certificate no router asks for any more stays
	// published, counted over successful reads of the API only.
	WithdrawAfter time.Duration
}

// TraefikAPI is how certfetch reaches Traefik's API.
type TraefikAPI struct {
	// URL is the API's base (http or https); certfetch reads <URL>/api/http/routers and
	// <URL>/api/tcp/routers.
	URL string
	// Username and Password are basic-auth credentials (Traefik's basicAuth middleware
	// on the api@internal router); both or neither.
	Username string
	Password secret.Secret
	// TLS configures an https URL; nil: the system roots.
	TLS *ClientTLS
	// Timeout bounds one poll.
	Timeout time.Duration
}

// Routers says which of Traefik's routers a resolver serves.
type Routers struct {
	// CertResolver selects the routers whose tls.certResolver equals it; it defaults to
	// the resolver's name, so that removing certificatesResolvers.<name> from Traefik
	// is all it takes to switch.
	CertResolver string
	// Domains select routers that declare TLS without a certResolver (tls: {}): such a
	// router is served when each of its domains is one of these, or lies under a
	// "*.example.com" pattern (any depth). Empty: none.
	Domains []string
	// KeyType of discovered certificates; empty keeps the type of the certificate stored
	// under the same name (an imported one) and uses DefaultRoutersKeyType for new ones.
	KeyType KeyType
}

func (d *decoder) traefik(f *field) *Traefik {
	t := &Traefik{PollInterval: DefaultPollInterval, WithdrawAfter: DefaultWithdrawAfter,
		API: TraefikAPI{Timeout: DefaultAPITimeout}}
	m, ok := d.mapping(f.value, f.path, "api", "pollInterval", "withdrawAfter")
	if !ok {
		return t
	}
	if a := m.require(d, "api"); a != nil {
		d.traefikAPI(a, &t.API)
	}
	if p := m.get("pollInterval"); p != nil {
		if v, ok := d.duration(p.value, p.path); ok {
			if v < minPollInterval {
				d.fail(p.value, p.path, "must be at least %s", minPollInterval)
			} else {
				t.PollInterval = v
			}
		}
	}
	if w := m.get("withdrawAfter"); w != nil {
		t.WithdrawAfter, _ = d.duration(w.value, w.path)
	}
	return t
}

func (d *decoder) traefikAPI(f *field, api *TraefikAPI) {
	m, ok := d.mapping(f.value, f.path, "url", "username", "passwordFile", "tls", "timeout")
	if !ok {
		return
	}
	if u := m.require(d, "url"); u != nil {
		if s, ok := d.str(u.value, u.path); ok {
			parsed, err := url.Parse(s)
			switch {
			case err != nil || (parsed.Scheme != "http" && parsed.Scheme != "https") || parsed.Host == "":
				d.fail(u.value, u.path, "must be an http or https URL such as http://127.0.0.1:8080, got %q", s)
			case parsed.User != nil:
				// The URL is logged and shown by check and status: no secret in it.
				d.fail(u.value, u.path, "must not hold credentials: set username and passwordFile")
			default:
				api.URL = s
			}
		}
	}
	user, pass := m.get("username"), m.get("passwordFile")
	switch {
	case user != nil && pass == nil:
		d.fail(user.key, join(f.path, "passwordFile"), "required when username is set")
	case pass != nil && user == nil:
		d.fail(pass.key, join(f.path, "username"), "required when passwordFile is set")
	case user != nil:
		api.Username, _ = d.str(user.value, user.path)
		api.Password, _ = d.password(pass)
	}
	if t := m.get("tls"); t != nil {
		api.TLS = d.clientTLS(t)
		if api.TLS.CertFile != "" {
			d.fail(t.value, t.path, "client certificates are not supported for Traefik's API: protect it with basic auth (username, passwordFile)")
		}
	}
	if t := m.get("timeout"); t != nil {
		api.Timeout, _ = d.duration(t.value, t.path)
	}
}

func (d *decoder) routers(f *field, resolver string) Routers {
	r := Routers{CertResolver: resolver}
	m, ok := d.mapping(f.value, f.path, "certResolver", "domains", "keyType")
	if !ok {
		return r
	}
	if c := m.get("certResolver"); c != nil {
		r.CertResolver, _ = d.str(c.value, c.path)
	}
	if dm := m.get("domains"); dm != nil {
		r.Domains = d.domains(dm)
	}
	if k := m.get("keyType"); k != nil {
		s, _ := d.oneOf(k.value, k.path, keyTypes...)
		r.KeyType = KeyType(s)
	}
	return r
}

// MaxNameLength is the longest certificate name: names of discovered certificates are
// shortened to fit it.
const MaxNameLength = maxNameLength

// CheckDomain returns what is wrong with a lower-case DNS name as a certificate's domain
// ("" when nothing is): for names that come from Traefik's routers rather than the file.
func CheckDomain(domain string) string { return checkDomain(domain) }
