// Package certfetch is a Traefik middleware plugin that answers ACME HTTP-01
// challenges (RFC 8555 §8.3) on /.well-known/acme-challenge/<token> and hands
// every other request to the next handler untouched.
//
// Traefik interprets this package with Yaegi, so it imports the standard
// library only and avoids what Yaegi v0.16 cannot run (min/max/clear, range
// over an integer, Go 1.22 loop variables, generics-based stdlib helpers).
//
// Exactly one mode answers the challenges:
//
//   - thumbprint: stateless; the key authorization is "<token>.<thumbprint>",
//     where thumbprint is the base64url SHA-256 JWK thumbprint (RFC 7638) of
//     the ACME account key. No shared state, any number of Traefik replicas.
//   - webroot: serves <webroot>/.well-known/acme-challenge/<token>, the layout
//     lego --http.webroot, certbot --webroot and acme.sh write.
//   - upstream: forwards challenge requests to a certfetch HTTP-01 responder.
package certfetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// ChallengePrefix is the URL path prefix of ACME HTTP-01 challenges (RFC 8555 §8.3).
const ChallengePrefix = "/.well-known/acme-challenge/"

const (
	// minTokenLen: RFC 8555 §8.3 requires at least 128 bits of entropy in a
	// token, which is at least 22 base64url characters.
	minTokenLen = 22
	// maxTokenLen bounds what we accept before a token touches a path or a
	// response. Real CAs send 43 characters (32 random bytes); 255 leaves room
	// for any CA while keeping file names legal on every file system.
	maxTokenLen = 255
	// thumbprintLen is the length of an unpadded base64url SHA-256 digest.
	thumbprintLen = 43
	// maxKeyAuthLen bounds what is read from a webroot file or an upstream
	// answer: a key authorization is a token, a dot and a thumbprint.
	maxKeyAuthLen = maxTokenLen + 1 + thumbprintLen
	// defaultUpstreamTimeout is short because an ACME validation server waits
	// only a few seconds per attempt (and retries); a slow responder must turn
	// into a quick 504, never a request that hangs in Traefik.
	defaultUpstreamTimeout = "3s"
)

// Config is the plugin configuration. Traefik decodes the user's settings
// into it with mapstructure, matching Go field names case-insensitively;
// durations are strings because mapstructure cannot decode "3s" into a
// time.Duration.
type Config struct {
	// Thumbprint selects the stateless mode: the account key's JWK thumbprint.
	Thumbprint string
	// Webroot selects the webroot mode: the directory holding .well-known/acme-challenge/.
	Webroot string
	// Upstream selects the upstream mode: the responder's base URL, http://host:port.
	Upstream string
	// UpstreamTimeout bounds one forwarded request in upstream mode (Go duration).
	UpstreamTimeout string
	// Domains, when set, limits the hosts whose challenges are answered: exact
	// names, or "*.example.com" for every name below example.com. Challenges for
	// other hosts pass through to the next handler.
	Domains []string
}

// CreateConfig returns the default configuration; Traefik calls it before it
// decodes the user's settings.
func CreateConfig() *Config {
	return &Config{UpstreamTimeout: defaultUpstreamTimeout}
}

// New validates config and returns the middleware. Traefik calls it on every
// dynamic configuration reload, so it does no I/O and starts no goroutine: the
// webroot is read at request time and need not exist yet.
//
// The returned handler is a compiled http.ServeMux that sends every path
// outside ChallengePrefix straight to next, so pass-through requests never
// enter interpreted code (in Traefik v3.6, interpreted dispatch cost ~9 µs per
// request, measured with wrk). The mux behaves like Traefik's own routing for the paths
// Traefik hands to middlewares (Traefik cleans paths first by default,
// entryPoints.<name>.http.sanitizePath); see README for the edge cases.
func New(_ context.Context, next http.Handler, config *Config, name string) (http.Handler, error) {
	return newMiddleware(next, config, name, os.Open)
}

// fileOpener opens a webroot challenge file; tests pass one that records
// which paths the plugin opens.
type fileOpener func(name string) (*os.File, error)

func newMiddleware(next http.Handler, config *Config, name string, open fileOpener) (http.Handler, error) {
	if next == nil {
		return nil, fmt.Errorf("certfetch %q: no next handler", name)
	}
	if config == nil {
		return nil, fmt.Errorf("certfetch %q: no configuration", name)
	}
	answer, err := newAnswerer(config, open)
	if err != nil {
		return nil, fmt.Errorf("certfetch %q: %w", name, err)
	}
	allow, err := newDomainAllowList(config.Domains)
	if err != nil {
		return nil, fmt.Errorf("certfetch %q: %w", name, err)
	}

	mux := http.NewServeMux()
	mux.Handle("/", next)
	// Registered so that the bare directory passes through instead of getting
	// the mux's automatic redirect to the trailing-slash pattern below.
	mux.Handle(strings.TrimSuffix(ChallengePrefix, "/"), next)
	mux.Handle(ChallengePrefix, &challengeHandler{next: next, answer: answer, allow: allow, name: name})
	return mux, nil
}

// ValidToken reports whether token is an acceptable HTTP-01 token: only the
// base64url alphabet, no padding (RFC 8555 §8.3), 22 to 255 characters. It is
// checked before a token touches a file path or a response.
func ValidToken(token string) bool {
	// isBase64URL inlined: this runs on every challenge, interpreted.
	return len(token) >= minTokenLen && len(token) <= maxTokenLen && strings.Trim(token, base64URLAlphabet) == ""
}

// base64URLAlphabet is the RFC 4648 §5 alphabet.
const base64URLAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

// isBase64URL reports whether s holds base64url characters only. It lets the
// compiled strings.Trim do the scan: a per-byte loop in interpreted code costs
// about a microsecond per token under Yaegi.
func isBase64URL(s string) bool {
	return strings.Trim(s, base64URLAlphabet) == ""
}

// validKeyAuthorization reports whether keyAuth is "<token>.<thumbprint>" for
// this token. Whatever the webroot or upstream returns is checked with it, so
// the plugin never serves anything but a key authorization, whatever the file
// or responder holds.
func validKeyAuthorization(token, keyAuth string) bool {
	thumbprint, ok := strings.CutPrefix(keyAuth, token+".")
	return ok && validThumbprint(thumbprint)
}

func validThumbprint(s string) bool {
	return len(s) == thumbprintLen && isBase64URL(s)
}

// answerer produces the key authorization for a valid token, or the reason
// it cannot. It returns a concrete type, not an error: errors.As into a type
// Yaegi interprets panics.
type answerer func(r *http.Request, token string) (string, *failure)

// failure is why a challenge cannot be answered, with the status to answer.
type failure struct {
	status int
	msg    string
	cause  error
}

func (f *failure) String() string {
	if f.cause == nil {
		return f.msg
	}
	return f.msg + ": " + f.cause.Error()
}

func newAnswerer(config *Config, open fileOpener) (answerer, error) {
	var modes []string
	if config.Thumbprint != "" {
		modes = append(modes, "thumbprint")
	}
	if config.Webroot != "" {
		modes = append(modes, "webroot")
	}
	if config.Upstream != "" {
		modes = append(modes, "upstream")
	}
	if len(modes) != 1 {
		set := "none is set"
		if len(modes) > 1 {
			set = strings.Join(modes, " and ") + " are set"
		}
		return nil, fmt.Errorf("set exactly one of thumbprint, webroot or upstream (%s)", set)
	}

	switch modes[0] {
	case "thumbprint":
		if !validThumbprint(config.Thumbprint) {
			return nil, fmt.Errorf("thumbprint: want the 43-character base64url SHA-256 JWK thumbprint of the account key (certfetch thumbprint prints it), got %q", config.Thumbprint)
		}
		suffix := "." + config.Thumbprint
		return func(_ *http.Request, token string) (string, *failure) {
			return token + suffix, nil
		}, nil
	case "webroot":
		return webrootAnswerer(config.Webroot, open)
	default:
		return upstreamAnswerer(config.Upstream, config.UpstreamTimeout)
	}
}

func webrootAnswerer(webroot string, open fileOpener) (answerer, error) {
	if !filepath.IsAbs(webroot) {
		return nil, fmt.Errorf("webroot: want an absolute directory path, got %q", webroot)
	}
	dir := filepath.Join(webroot, filepath.FromSlash(ChallengePrefix))
	return func(_ *http.Request, token string) (string, *failure) {
		// token is base64url only, so the joined path cannot leave dir.
		f, err := open(filepath.Join(dir, token))
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return "", &failure{status: http.StatusNotFound, msg: "no challenge for this token"}
			}
			return "", &failure{status: http.StatusInternalServerError, msg: "webroot: reading the challenge file failed", cause: err}
		}
		defer f.Close()
		return readKeyAuthorization(f, token, "webroot: challenge file")
	}, nil
}

func upstreamAnswerer(upstream, timeout string) (answerer, error) {
	base, err := url.Parse(upstream)
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" ||
		(base.Path != "" && base.Path != "/") || base.RawQuery != "" || base.User != nil {
		return nil, fmt.Errorf("upstream: want a base URL such as http://127.0.0.1:8402, got %q", upstream)
	}
	d, err := time.ParseDuration(timeout)
	if err != nil || d <= 0 {
		return nil, fmt.Errorf("upstreamTimeout: want a positive duration such as \"3s\", got %q", timeout)
	}
	prefix := base.Scheme + "://" + base.Host + ChallengePrefix
	client := &http.Client{
		Timeout: d,
		// New runs on every Traefik reload: no keep-alive means no idle
		// connection (and no goroutine) outlives a replaced middleware.
		// Challenges are a handful of requests per certificate.
		Transport: &http.Transport{DisableKeepAlives: true, ResponseHeaderTimeout: d},
		// The responder answers directly; a redirect is a misconfiguration.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return func(r *http.Request, token string) (string, *failure) {
		req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, prefix+token, nil)
		if err != nil {
			return "", &failure{status: http.StatusInternalServerError, msg: "upstream: building the request failed", cause: err}
		}
		// The responder may serve several names: it sees the name the CA asked for.
		req.Host = r.Host
		resp, err := client.Do(req)
		if err != nil {
			status := http.StatusBadGateway
			// Client.Do returns *url.Error; asserted directly rather than with
			// errors.As, which Yaegi handles poorly.
			if ue, ok := err.(*url.Error); ok && ue.Timeout() {
				status = http.StatusGatewayTimeout
			}
			return "", &failure{status: status, msg: "upstream: request failed", cause: err}
		}
		defer resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusOK:
			return readKeyAuthorization(resp.Body, token, "upstream: answer")
		case http.StatusNotFound:
			return "", &failure{status: http.StatusNotFound, msg: "no challenge for this token"}
		default:
			return "", &failure{status: http.StatusBadGateway, msg: "upstream: unexpected status " + resp.Status}
		}
	}, nil
}

// readKeyAuthorization reads at most one key authorization's worth of bytes
// and checks that they are the key authorization for token. Trailing line
// breaks are dropped: hand-written files often end in one.
func readKeyAuthorization(r io.Reader, token, what string) (string, *failure) {
	data, err := io.ReadAll(io.LimitReader(r, maxKeyAuthLen+3))
	if err != nil {
		return "", &failure{status: http.StatusBadGateway, msg: what + ": read failed", cause: err}
	}
	keyAuth := strings.TrimRight(string(data), "\r\n")
	if !validKeyAuthorization(token, keyAuth) {
		return "", &failure{status: http.StatusBadGateway, msg: what + " is not a key authorization for this token"}
	}
	return keyAuth, nil
}

// domainAllowList matches request hosts against exact names and "*.suffix"
// entries. A nil list allows every host.
type domainAllowList struct {
	exact    map[string]bool
	suffixes []string // ".example.com" for "*.example.com"
}

func newDomainAllowList(domains []string) (*domainAllowList, error) {
	if len(domains) == 0 {
		return nil, nil
	}
	l := &domainAllowList{exact: map[string]bool{}}
	for i, d := range domains {
		name := strings.ToLower(strings.TrimSpace(d))
		wildcard := strings.HasPrefix(name, "*.")
		if wildcard {
			name = name[2:]
		}
		if !validHostname(name) {
			return nil, fmt.Errorf("domains[%d]: want a DNS name or *.name, got %q", i, d)
		}
		if wildcard {
			l.suffixes = append(l.suffixes, "."+name)
		} else {
			l.exact[name] = true
		}
	}
	return l, nil
}

func (l *domainAllowList) allows(host string) bool {
	if l == nil {
		return true
	}
	if l.exact[host] {
		return true
	}
	for _, suffix := range l.suffixes {
		if strings.HasSuffix(host, suffix) {
			return true
		}
	}
	return false
}

// validHostname accepts LDH labels of 1 to 63 characters, 253 in all.
func validHostname(name string) bool {
	if name == "" || len(name) > 253 {
		return false
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// requestHost returns the request's host name, lower case, without port or
// trailing dot.
func requestHost(r *http.Request) string {
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	return strings.TrimSuffix(strings.ToLower(host), ".")
}

// challengeHandler answers requests under ChallengePrefix.
type challengeHandler struct {
	next   http.Handler
	answer answerer
	allow  *domainAllowList
	name   string
}

func (h *challengeHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// The mux matched on the cleaned, unescaped path; check it by hand too,
	// since Yaegi's test mode runs the Go 1.21 mux.
	token, ok := strings.CutPrefix(r.URL.Path, ChallengePrefix)
	// The nil check first: every interpreted call costs microseconds in Yaegi.
	if !ok || h.allow != nil && !h.allow.allows(requestHost(r)) {
		h.next.ServeHTTP(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if !ValidToken(token) {
		http.Error(w, "not a valid ACME token", http.StatusNotFound)
		return
	}
	keyAuth, fail := h.answer(r, token)
	if fail != nil {
		if fail.status >= 500 {
			// Traefik logs the interpreter's stderr at error level.
			fmt.Fprintf(os.Stderr, "certfetch %q: challenge %s for %s: %s\n", h.name, token, r.Host, fail.String())
		}
		http.Error(w, http.StatusText(fail.status), fail.status)
		return
	}
	// Canonical keys assigned directly: Header.Set would canonicalise each
	// key again, a call into compiled code that Yaegi makes through reflection.
	hdr := w.Header()
	hdr["Content-Type"] = []string{"text/plain"}
	hdr["Cache-Control"] = []string{"no-store"}
	hdr["X-Content-Type-Options"] = []string{"nosniff"}
	hdr["Content-Length"] = []string{strconv.Itoa(len(keyAuth))}
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = io.WriteString(w, keyAuth)
	}
}
