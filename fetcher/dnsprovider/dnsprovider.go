// Package dnsprovider builds lego's DNS-01 providers by name, as Traefik's
// dnsChallenge.provider does, with the variables each provider documents (lego's
// `<PROVIDER>_*` names, `_FILE` variants included) taken from the process environment and
// from the configuration. It constructs providers and nothing else: the ACME engine
// (acme/dns01) presents records with them and waits for propagation.
package dnsprovider

import (
	"cmp"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"

	"github.com/go-acme/lego/v4/challenge"

	"github.com/certfetch/certfetch/internal/secret"
)

// Manual is lego's interactive provider: it prints the record and waits for someone to
// press Enter, which a daemon never gets.
const Manual = "manual"

// Known reports whether this build carries the provider called name. The default build
// carries every provider lego ships; a build with the certfetch_dns_rfc2136 tag carries
// rfc2136 only.
func Known(name string) bool { return slices.Contains(names, name) }

// Names returns the providers this build carries, sorted.
func Names() []string { return slices.Sorted(slices.Values(names)) }

// envMu serialises New: lego's providers read their variables from the process
// environment in their constructors (there is no other way to hand them a configuration
// by name), so New sets the configured variables, constructs, and restores the
// environment, and two constructions must not see each other's variables.
var envMu sync.Mutex

// New constructs the provider called name. vars (the configuration's env and envFile)
// are set in the process environment while the constructor runs and win over the
// process's own values: a variable named there also hides the process's value of its
// `_FILE` twin (and the other way round), because lego prefers the plain variable when
// both are set. The environment is restored afterwards.
//
// A constructor reads variables and checks that the required ones are present; the
// credentials themselves are first used when a record is presented. Errors name the
// provider; values of vars, and of the process's variables that look like credentials,
// are replaced by "[redacted]" in them, since some providers quote values back.
func New(name string, vars map[string]secret.Secret) (challenge.Provider, error) {
	if !Known(name) {
		return nil, &UnknownError{Name: name}
	}
	envMu.Lock()
	defer envMu.Unlock()
	restore := setEnv(vars)
	p, err := construct(name)
	restore()
	if err != nil {
		// Not wrapped: the wrapped error's text is what may hold a value.
		return nil, fmt.Errorf("dns-01 provider %s: %s", name, redact(err.Error(), vars))
	}
	return p, nil
}

// UnknownError is a provider name this build does not carry.
type UnknownError struct{ Name string }

func (e *UnknownError) Error() string {
	if len(names) < 3 {
		return fmt.Sprintf("dns-01 provider %s: this build carries only %s (built with the certfetch_dns_rfc2136 tag); "+
			"the default build carries every lego provider", e.Name, strings.Join(Names(), ", "))
	}
	return fmt.Sprintf("dns-01 provider %s: unknown; lego v4 names its providers as in "+
		"https://go-acme.github.io/lego/dns/ (rfc2136, cloudflare, route53, ...)", e.Name)
}

// setEnv sets vars and unsets the `_FILE` twins they hide; the returned function puts
// back what was there before.
func setEnv(vars map[string]secret.Secret) (restore func()) {
	type saved struct {
		value string
		set   bool
	}
	before := map[string]saved{}
	keep := func(k string) {
		if _, done := before[k]; !done {
			v, ok := os.LookupEnv(k)
			before[k] = saved{v, ok}
		}
	}
	for k := range vars {
		twin := k + "_FILE"
		if base, ok := strings.CutSuffix(k, "_FILE"); ok {
			twin = base
		}
		keep(k)
		keep(twin)
		if _, configured := vars[twin]; !configured {
			_ = os.Unsetenv(twin) // cannot fail for a name os.LookupEnv accepted
		}
	}
	for k, v := range vars {
		_ = os.Setenv(k, v.Reveal()) // names are checked by the configuration
	}
	return func() {
		for k, s := range before {
			if s.set {
				_ = os.Setenv(k, s.value)
			} else {
				_ = os.Unsetenv(k)
			}
		}
	}
}

// minRedacted is the shortest value redact hides. Shorter values (a port, a TTL, "true")
// are not credentials, and replacing every "53" in a message would make it unreadable.
const minRedacted = 4

// credentialWords mark a process variable whose value redact hides: lego's providers
// name their credentials *_API_KEY, *_SECRET, *_PASSWORD, *_TOKEN and the like.
var credentialWords = []string{"KEY", "SECRET", "PASSWORD", "TOKEN", "CREDENTIAL", "AUTH"}

// redact replaces in msg the values of vars and of the process's credential variables.
func redact(msg string, vars map[string]secret.Secret) string {
	var values []string
	for _, v := range vars {
		values = append(values, v.Reveal())
	}
	for _, kv := range os.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		if slices.ContainsFunc(credentialWords, func(w string) bool { return strings.Contains(k, w) }) {
			values = append(values, v)
		}
	}
	// Longest first, so a value that contains another is hidden whole.
	slices.SortFunc(values, func(a, b string) int { return cmp.Compare(len(b), len(a)) })
	for _, v := range values {
		if len(v) >= minRedacted {
			msg = strings.ReplaceAll(msg, v, "[redacted]")
		}
	}
	return msg
}
