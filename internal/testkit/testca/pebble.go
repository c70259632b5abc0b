package testca

import (
	"fmt"
	"log"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/letsencrypt/pebble/v2/ca"
	"github.com/letsencrypt/pebble/v2/db"
	"github.com/letsencrypt/pebble/v2/va"
	"github.com/letsencrypt/pebble/v2/wfe"
)

// Pebble v2.10.3 reads these settings from the environment inside va.New and
// wfe.New, and offers no constructor option for them.
const (
	envVANoSleep      = "PEBBLE_VA_NOSLEEP"          // "1": validate at once, no random 0-5 s sleep
	envVAAlwaysValid  = "PEBBLE_VA_ALWAYS_VALID"     // "1": every challenge is valid without a request
	envWFENonceReject = "PEBBLE_WFE_NONCEREJECT"     // percentage of good nonces rejected as bad
	envWFEAuthzReuse  = "PEBBLE_AUTHZREUSE"          // percentage of orders that reuse valid authzs
	envVASleepTime    = "PEBBLE_VA_SLEEPTIME"        // unset: irrelevant once NOSLEEP is set
	envOrdersPerPage  = "PEBBLE_WFE_ORDERS_PER_PAGE" // unset: Pebble's default of 3
)

// pebbleEnvMu serialises the set-construct-restore sequence in newPebble, so
// that two CAs started concurrently each read their own settings.
var pebbleEnvMu sync.Mutex

// pebbleKeyAlgorithm is the key type of Pebble's root and intermediate:
// ECDSA P-256 is generated in microseconds, RSA-2048 in up to a second.
const pebbleKeyAlgorithm = "ecdsa"

// pebbleChainLength is the number of intermediates between root and leaf, as
// with public CAs (Pebble's own default).
const pebbleChainLength = 1

// pebbleCAAIdentity is what the directory advertises in meta.caaIdentities
// (Pebble's own default; nothing checks CAA here).
const pebbleCAAIdentity = "pebble.letsencrypt.org"

// pebble is the in-process Pebble: its database, CA, validation authority
// and ACME front end.
type pebble struct {
	db      *db.MemoryStore
	ca      *ca.CAImpl
	va      *va.VAImpl
	handler http.Handler
}

// newPebble builds Pebble as cmd/pebble does, with the settings of opts.
// Pebble's VA resolves every name through dnsAddr (TCP).
func newPebble(opts Options, dnsAddr string, logger *log.Logger) (*pebble, error) {
	store := db.NewMemoryStore()
	for kid, key := range opts.EABKeys {
		if err := store.AddExternalAccountKeyByID(kid, key); err != nil {
			return nil, fmt.Errorf("add EAB key %q to Pebble: %w", kid, err)
		}
	}
	profiles := map[string]ca.Profile{
		DefaultProfile: {
			Description:    "90-day certificates (also for orders that name no profile)",
			ValidityPeriod: uint64(DefaultProfileValidity / time.Second),
		},
		ShortLivedProfile: {
			Description:    "6-day certificates",
			ValidityPeriod: uint64(ShortLivedProfileValidity / time.Second),
		},
		MinuteProfile: {
			Description:    "60-second certificates, for renewal tests",
			ValidityPeriod: uint64(MinuteProfileValidity / time.Second),
		},
	}
	authority := ca.New(logger, store, "", pebbleKeyAlgorithm, 0, pebbleChainLength, profiles)

	pebbleEnvMu.Lock()
	defer pebbleEnvMu.Unlock()
	restore := setEnv(map[string]string{
		envVANoSleep:      "1",
		envVAAlwaysValid:  boolEnv(opts.AlwaysValid),
		envWFENonceReject: strconv.Itoa(opts.NonceRejectPercent),
		envWFEAuthzReuse:  strconv.Itoa(opts.AuthzReusePercent),
		envVASleepTime:    "",
		envOrdersPerPage:  "",
	})
	defer restore()

	// Pebble's VA needs no TLS-ALPN-01 port here: certfetch solves HTTP-01.
	const tlsALPNPort = 0
	validator := va.New(logger, opts.HTTPPort, tlsALPNPort, false, dnsAddr, store)
	// Pebble itself sends no Retry-After (0, 0): the slow wrapper owns it.
	frontEnd := wfe.New(logger, store, validator, authority, []string{pebbleCAAIdentity},
		false, len(opts.EABKeys) > 0, 0, 0)
	return &pebble{db: store, ca: authority, va: validator, handler: frontEnd.Handler()}, nil
}

func boolEnv(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// setEnv sets (or, for "", unsets) the variables and returns a function that
// restores their previous state.
func setEnv(vars map[string]string) (restore func()) {
	type previous struct {
		value string
		set   bool
	}
	saved := make(map[string]previous, len(vars))
	for name, value := range vars {
		old, set := os.LookupEnv(name)
		saved[name] = previous{old, set}
		if value == "" {
			_ = os.Unsetenv(name) // fails only for invalid names; ours are constants
		} else {
			_ = os.Setenv(name, value)
		}
	}
	return func() {
		for name, p := range saved {
			if p.set {
				_ = os.Setenv(name, p.value)
			} else {
				_ = os.Unsetenv(name)
			}
		}
	}
}
