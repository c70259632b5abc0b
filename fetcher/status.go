package fetcher

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/certfetch/certfetch/acme"
	"github.com/certfetch/certfetch/fetcher/config"
	"github.com/certfetch/certfetch/fetcher/output"
	"github.com/certfetch/certfetch/fetcher/store"
)

// CertificateStatus is what `certfetch status` shows of one configured certificate: its
// State as the store and the outputs have it, its schedule, its last failure.
type CertificateStatus struct {
	Name     string   `json:"name"`
	Domains  []string `json:"domains"`
	Resolver string   `json:"resolver"`
	// Source is where the certificate comes from: "file" (certificates: of the
	// configuration) or "traefik" (routers, which lists them, ask for it).
	Source  string   `json:"source"`
	Routers []string `json:"routers,omitempty"`
	// WithdrawAt is when a discovered certificate no router asks for any more is
	// withdrawn (traefik.withdrawAfter after the first read that missed its routers).
	WithdrawAt time.Time `json:"withdrawAt,omitzero"`
	State      State     `json:"state"`
	NotAfter   time.Time `json:"notAfter,omitzero"`
	RenewAt    time.Time `json:"renewAt,omitzero"`
	RetryAt    time.Time `json:"retryAt,omitzero"`
	Failures   int       `json:"failures,omitempty"`
	Reason     string    `json:"reason,omitempty"`
	LastError  string    `json:"lastError,omitempty"`
	// Order is the URL of the order journaled for the certificate, if any.
	Order string `json:"order,omitempty"`
	// Problem says why the certificate is not in order besides its last attempt: its
	// record cannot be read, it is expired, it was revoked, an output does not serve it.
	Problem string `json:"problem,omitempty"`
	// Request is an operator's request waiting to be carried out (renew.go), and
	// LastRequest the outcome of the last one carried out.
	Request     *PendingRequest       `json:"request,omitempty"`
	LastRequest *store.RequestOutcome `json:"lastRequest,omitempty"`
}

// Trouble reports whether the certificate needs an operator: expired, failing for any
// reason but a deadline (a slow CA's order, resumed by itself), unreadable, or not
// published.
func (s CertificateStatus) Trouble() bool {
	return s.Problem != "" || (s.LastError != "" && s.Reason != reasonDeadline)
}

// Status reads the state of every certificate cfg configures from st, its journal and
// out (nil: publication is not checked). It contacts no CA.
func Status(ctx context.Context, cfg *config.Config, st *store.Store, out output.Publisher, now time.Time) ([]CertificateStatus, error) {
	orders, err := st.Orders(ctx)
	if err != nil {
		return nil, fmt.Errorf("read the order journal: %w", err)
	}
	journaled := make(map[string]string, len(orders))
	for _, o := range orders {
		journaled[o.Key] = o.OrderURL
	}
	// The daemon cannot record that the store refuses its writes: every certificate
	// shows it.
	var storeProblem string
	if err := st.CheckWritable(ctx); err != nil {
		storeProblem = "the state store refuses writes (no order is placed, issued certificates stay journaled): " + err.Error()
	}
	certs, err := Certificates(ctx, cfg, st)
	if err != nil {
		return nil, err
	}
	discovered := map[string]store.DiscoveredCertificate{}
	if doc, err := DiscoveryStatus(ctx, cfg, st); err == nil && doc != nil {
		for _, dc := range doc.Certificates {
			discovered[dc.Name] = dc
		}
	}
	statuses := make([]CertificateStatus, 0, len(certs))
	for i, c := range certs {
		s := CertificateStatus{Name: c.Name, Domains: c.Domains, Resolver: c.Resolver, Source: sourceFile, State: StateAbsent}
		if i >= len(cfg.Certificates) {
			dc := discovered[c.Name]
			s.Source, s.Routers = sourceTraefik, dc.Routers
			if !dc.MissingSince.IsZero() {
				s.WithdrawAt = dc.MissingSince.Add(cfg.Traefik.WithdrawAfter)
			}
		}
		req := acme.Request{Names: c.Domains, KeyType: c.KeyType}
		if rc := cfg.Resolvers[c.Resolver]; rc != nil {
			req.Profile = rc.Profile
		}
		s.Order = journaled[req.Key()]
		rec, err := st.LoadCertificate(ctx, c.Name)
		if err == nil {
			err = unusableRecord(st, c.Name, rec)
		}
		switch {
		case errors.Is(err, store.ErrNotFound):
			rec = nil
		case err != nil:
			s.Problem = joinProblems(storeProblem, "record unreadable: "+err.Error())
			statuses = append(statuses, s)
			continue
		}
		published, problem := servedBy(ctx, out, c.Name, rec)
		s.State = deriveState(rec, c, s.Order != "", published, now)
		s.Problem = joinProblems(s.Problem, problem)
		s.Request, s.LastRequest = requestStatus(ctx, st, c.Name, rec)
		if revoked := revokedProblem(ctx, st, rec); revoked != "" {
			s.Problem = revoked
		}
		if rec != nil {
			s.NotAfter, s.RenewAt, s.RetryAt = rec.NotAfter, rec.RenewAt, rec.RetryAt
			s.Failures, s.Reason, s.LastError = rec.Failures, rec.Reason, rec.LastError
			if usable(rec, c) && !now.Before(rec.NotAfter) {
				s.Problem = "expired"
			}
		}
		s.Problem = joinProblems(storeProblem, s.Problem)
		statuses = append(statuses, s)
	}
	return statuses, nil
}

// Where a certificate comes from (CertificateStatus.Source).
const (
	sourceFile    = "file"
	sourceTraefik = "traefik"
)

// DiscoveryStatus returns what the last reads of Traefik's API found (the discovered
// certificates, the routers certfetch cannot serve, a failing API); nil without a traefik
// section.
func DiscoveryStatus(ctx context.Context, cfg *config.Config, st *store.Store) (*store.Discovery, error) {
	if cfg.Traefik == nil {
		return nil, nil
	}
	return loadDiscovery(ctx, st)
}

// servedBy reports whether out serves rec's certificate under name, and what is wrong
// when it does not serve it although it should.
func servedBy(ctx context.Context, out output.Publisher, name string, rec *store.Certificate) (bool, string) {
	if out == nil || rec == nil || len(rec.CertPEM) == 0 {
		return false, ""
	}
	served, err := out.Published(ctx, name)
	switch {
	case err != nil:
		return false, "output: " + err.Error()
	case served == nil:
		return false, "not published"
	case sha256.Sum256(served) != sha256.Sum256(rec.CertPEM):
		return false, "an output serves another certificate"
	}
	return true, ""
}

// joinProblems joins the non-empty problems with "; ".
func joinProblems(problems ...string) string {
	return strings.Join(slices.DeleteFunc(problems, func(p string) bool { return p == "" }), "; ")
}
