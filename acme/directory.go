package acme

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"time"

	legoacme "github.com/go-acme/lego/v4/acme"
)

// Kinds of requests reported in RequestInfo.Kind: what the request was for, as the
// directory and the order name its URLs.
const (
	RequestDirectory     = "directory"     // GET the directory
	RequestNewNonce      = "new_nonce"     // HEAD newNonce
	RequestNewAccount    = "new_account"   // newAccount: registration or look-up of the key's account
	RequestNewOrder      = "new_order"     // newOrder
	RequestOrder         = "order"         // POST-as-GET of an order (a poll)
	RequestAuthorization = "authorization" // POST-as-GET of an authorization (a poll), or its deactivation
	RequestChallenge     = "challenge"     // POST to a challenge: ask the CA to validate
	RequestFinalize      = "finalize"      // POST the CSR to the order's finalize URL
	RequestCertificate   = "certificate"   // download the certificate (default chain)
	RequestRenewalInfo   = "renewal_info"  // ARI renewalInfo
	RequestRevoke        = "revoke"        // revokeCert
	RequestKeyChange     = "key_change"    // keyChange
	RequestOther         = "other"         // anything else (alternate chains, an account URL)
)

// RequestInfo is one request the Client sent to the CA and what came back, reported to
// Config.OnRequest as soon as the response headers arrived (or the request failed).
// Answers the Client gives from its cache (the directory within the hour, pooled nonces)
// never reach the CA and are not reported; lego's own re-sends after badNonce are
// reported one by one.
type RequestInfo struct {
	// Kind is one of the Request* constants.
	Kind string
	// Method and URL of the request.
	Method, URL string
	// StatusCode of the response; 0 when there was none (Err is set).
	StatusCode int
	// Duration from sending the request to its response headers (or the failure),
	// without the wait for Config.RequestsPerSecond. For a finalize request it is how long
	// the CA held the request open: a CA that finalizes synchronously answers only once it
	// has issued the certificate.
	Duration time.Duration
	// RetryAfterHeader is the response's Retry-After header as sent ("" when absent), and
	// RetryAfter its value as a duration (zero when absent, zero or unparsable).
	RetryAfterHeader string
	RetryAfter       time.Duration
	// Err is why no response arrived: *UnreachableError, or the operation's context error.
	Err error
}

// Directory is what a CA's ACME directory (RFC 8555 §7.1.1) says the CA offers.
type Directory struct {
	// URL of the directory.
	URL string
	// Profiles maps the names of the certificate profiles the CA offers to their
	// descriptions (meta.profiles, draft-ietf-acme-profiles); empty when it offers none.
	Profiles map[string]string
	// RenewalInfoURL is the CA's ACME Renewal Information endpoint (RFC 9773); empty when
	// the CA offers no ARI.
	RenewalInfoURL string
	// ExternalAccountRequired is meta.externalAccountRequired: a new account must carry an
	// External Account Binding (Account.EAB).
	ExternalAccountRequired bool
	// TermsOfService and Website are the meta URLs; CAAIdentities the meta.caaIdentities.
	TermsOfService, Website string
	CAAIdentities           []string
}

// maxDirectoryBody bounds how much of a directory answer ReadDirectory reads; real
// directories are well under a kilobyte.
const maxDirectoryBody = 1 << 20

// ReadDirectory fetches the CA's directory with cfg's DirectoryURL, Transport, Timeouts,
// UserAgent and OnRequest; it needs no account and sends nothing signed. Every call goes
// to the CA (a Client's cache is not shared), so a caller can time it.
func ReadDirectory(ctx context.Context, cfg Config) (*Directory, error) {
	op := "acme: read directory " + cfg.DirectoryURL

	if cfg.DirectoryURL == "" {
		return nil, errors.New("acme: read directory: no directory URL")
	}

	transport := cfg.Transport
	if transport == nil {
		var err error
		if transport, err = NewTransport(TransportOptions{}); err != nil {
			return nil, fmt.Errorf("%s: %w", op, err)
		}
	}

	ex := newExchange(ctx, transport, cfg.Timeouts, newCACache(cfg.DirectoryURL, 0), cfg.OnRequest)

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, cfg.DirectoryURL, nil)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}

	req.Header.Set("User-Agent", cmp.Or(cfg.UserAgent, "certfetch"))

	resp, err := ex.client().Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	defer resp.Body.Close()

	body, err := io.ReadAll(io.LimitReader(resp.Body, maxDirectoryBody))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}

	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: the CA answered %s", op, resp.Status)
	}

	var dir legoacme.Directory
	if err := json.Unmarshal(body, &dir); err != nil {
		return nil, fmt.Errorf("%s: not an ACME directory: %w", op, err)
	}

	if dir.NewNonceURL == "" || dir.NewAccountURL == "" || dir.NewOrderURL == "" {
		return nil, fmt.Errorf("%s: not an ACME directory (newNonce, newAccount or newOrder missing)", op)
	}

	return &Directory{
		URL:                     cfg.DirectoryURL,
		Profiles:                maps.Clone(dir.Meta.Profiles),
		RenewalInfoURL:          dir.RenewalInfo,
		ExternalAccountRequired: dir.Meta.ExternalAccountRequired,
		TermsOfService:          dir.Meta.TermsOfService,
		Website:                 dir.Meta.Website,
		CAAIdentities:           dir.Meta.CaaIdentities,
	}, nil
}
