package fetcher

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/certfetch/certfetch/acme"
	"github.com/certfetch/certfetch/fetcher/config"
	"github.com/certfetch/certfetch/fetcher/output"
	"github.com/certfetch/certfetch/fetcher/store"
)

// job is one pass's work on one certificate.
type job struct {
	d    *Daemon
	cfg  *config.Config
	cert *config.Certificate
	r    *resolver
	out  output.Publisher
	pubs *publications
}

// run brings the certificate up to date if it is due, and returns when it
// needs attention next. A failure is recorded in the state and returned; the
// certificate in service is left alone.
//
// A certificate in service with nothing due costs one read and no lease.
// Otherwise the job takes the certificate's lease, so that one instance at a
// time works on it; a certificate another instance holds is skipped (not a
// failure) and looked at again after one lease TTL. The attempt is cancelled
// when the lease is lost, and the store refuses the writes made under a lost
// lease.
func (j *job) run(ctx context.Context) (time.Time, error) {
	now := j.d.now()
	if rec, err := j.d.store.LoadCertificate(ctx, j.cert.Name); err == nil {
		if next, ok := j.atRest(rec, now); ok {
			j.d.metrics.SetCertificate(rec.Name, rec.NotAfter)
			return next, nil
		}
	}
	lease, err := j.d.store.AcquireLease(ctx, "certificates/"+j.cert.Name, j.d.lockTTL)
	if errors.Is(err, store.ErrLeaseHeld) {
		return now.Add(j.d.lockTTL), nil
	}
	if err != nil {
		return now.Add(backoffBase), fmt.Errorf("lock: %w", err)
	}
	defer j.release(ctx, lease)
	ctx, cancel := lease.Context(ctx)
	defer cancel()

	next, err := j.locked(ctx, now)
	if lease.Err() != nil {
		// Another instance may own the certificate now: its state wins.
		j.d.log.Warn("lease lost; leaving the certificate to the instance that holds it", "name", j.cert.Name, "err", lease.Err())
		return now.Add(j.d.lockTTL), nil
	}
	return next, err
}

// atRest reports whether rec is in service, published by this process, and
// nothing about it is due before the returned time: no renewal, no
// renewal-information check, no retry.
func (j *job) atRest(rec *store.Certificate, now time.Time) (time.Time, bool) {
	ari := j.cfg.Renewal.ARI
	ok := len(rec.CertPEM) > 0 && slices.Equal(rec.Domains, j.cert.Domains) &&
		j.pubs.current(rec.Name, rec.CertPEM) && rec.LastError == "" &&
		now.Before(rec.RenewAt) && (!ari || now.Before(rec.ARINextCheck))
	return earliest(rec.RenewAt, rec.ARINextCheck, ari), ok
}

// releaseTimeout bounds giving a lease back; an unreleased lease expires by
// itself after its TTL.
const releaseTimeout = 5 * time.Second

func (j *job) release(ctx context.Context, lease *store.Lease) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
	defer cancel()
	if err := lease.Release(ctx); err != nil && !errors.Is(err, store.ErrLeaseLost) {
		j.d.log.Warn("release lease", "name", j.cert.Name, "err", err)
	}
}

// locked is run's work under the certificate's lease.
func (j *job) locked(ctx context.Context, now time.Time) (time.Time, error) {
	rec, err := j.d.store.LoadCertificate(ctx, j.cert.Name)
	switch {
	case errors.Is(err, store.ErrNotFound):
		rec = &store.Certificate{Name: j.cert.Name}
	case err != nil:
		return now.Add(backoffBase), err
	}
	rec.Resolver = j.cert.Resolver
	issued := len(rec.CertPEM) > 0 && slices.Equal(rec.Domains, j.cert.Domains)

	if issued {
		j.d.metrics.SetCertificate(rec.Name, rec.NotAfter)
		// Another instance may have issued it (shared store), or this one
		// stopped before publishing: every instance publishes every
		// certificate to its own outputs.
		if !j.pubs.current(rec.Name, rec.CertPEM) {
			return j.publish(ctx, rec, now)
		}
		if j.cfg.Renewal.ARI && !now.Before(rec.ARINextCheck) {
			j.refreshRenewalInfo(ctx, rec, now)
		}
	}
	if now.Before(rec.RetryAt) {
		if rec.LastError != "" {
			return rec.RetryAt, fmt.Errorf("waiting until %s after: %s", rec.RetryAt.UTC().Format(time.RFC3339), rec.LastError)
		}
		return rec.RetryAt, nil
	}
	if issued && now.Before(rec.RenewAt) {
		return earliest(rec.RenewAt, rec.ARINextCheck, j.cfg.Renewal.ARI), nil
	}
	return j.obtain(ctx, rec, issued, now)
}

// earliest is renewAt, or the next renewal-information check when that comes
// first.
func earliest(renewAt, ariCheck time.Time, ari bool) time.Time {
	if ari && !ariCheck.IsZero() && ariCheck.Before(renewAt) {
		return ariCheck
	}
	return renewAt
}

// refreshRenewalInfo asks the CA when to renew (ARI, RFC 9773) and moves
// RenewAt into the suggested window when it is outside it. A CA without ARI,
// or an ARI failure, leaves the lifetime-based RenewAt in place.
func (j *job) refreshRenewalInfo(ctx context.Context, rec *store.Certificate, now time.Time) {
	rec.ARINextCheck = now.Add(ariRecheck)
	client, err := j.r.acmeClient(ctx)
	if err == nil {
		var info *acme.RenewalWindow
		if info, err = client.RenewalInfo(ctx, rec.CertPEM); err == nil {
			if info.RetryAfter > 0 {
				rec.ARINextCheck = now.Add(info.RetryAfter)
			}
			if rec.RenewAt.Before(info.Start) || rec.RenewAt.After(info.End) {
				rec.RenewAt = info.RenewAt(now)
				j.d.log.Info("renewal window from the CA", "name", rec.Name, "start", info.Start, "end", info.End, "renewAt", rec.RenewAt)
			}
		}
	}
	if err != nil {
		j.d.log.Debug("no renewal information; renewing by lifetime", "name", rec.Name, "err", err)
	}
	if err := j.d.store.SaveCertificate(ctx, rec); err != nil {
		j.d.log.Error("save certificate state", "name", rec.Name, "err", err)
	}
}

// obtain runs one order attempt, bounded by the certificate's deadline.
func (j *job) obtain(ctx context.Context, rec *store.Certificate, issued bool, now time.Time) (time.Time, error) {
	log := j.d.log.With("name", j.cert.Name, "resolver", j.cert.Resolver)
	timeout := j.cfg.EffectiveTimeout(j.cert)
	client, err := j.r.acmeClient(ctx)
	if err != nil {
		return j.failed(ctx, rec, now, err)
	}
	rc := j.r.cfg
	req := acme.Request{Names: j.cert.Domains, KeyType: j.cert.KeyType, Profile: rc.Profile, PreferredChain: rc.PreferredChain}
	if issued && j.cfg.Renewal.ARI {
		// Tells the CA which certificate this order replaces (RFC 9773 §5);
		// a CA without ARI ignores the field.
		if id, err := acme.ARICertID(rec.CertPEM); err == nil {
			req.Replaces = id
		}
	}
	log.Info("ordering certificate", "domains", j.cert.Domains, "deadline", timeout, "renewal", issued)

	octx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	got, err := client.Obtain(octx, req)
	took := j.d.now().Sub(now)
	if err != nil {
		var pending *acme.OrderPendingError
		if errors.As(err, &pending) && ctx.Err() == nil {
			j.d.metrics.ObserveIssuance(j.cert.Resolver, "pending", took)
			j.d.metrics.Failure(j.cert.Resolver, failureReason(err))
			wait := min(max(pending.RetryAfter, pendingRetryMin), pendingRetryMax)
			log.Warn("deadline passed; the order stays alive at the CA and is resumed", "order", pending.OrderURL, "status", pending.Status, "resumeIn", wait)
			rec.LastError, rec.LastAttempt, rec.RetryAt = err.Error(), now, j.d.now().Add(wait)
			return rec.RetryAt, errors.Join(err, j.d.store.SaveCertificate(ctx, rec))
		}
		j.d.metrics.ObserveIssuance(j.cert.Resolver, "failure", took)
		return j.failed(ctx, rec, now, err)
	}
	j.d.metrics.ObserveIssuance(j.cert.Resolver, "success", took)
	log.Info("certificate issued", "notAfter", got.Leaf.NotAfter, "took", took.Round(time.Millisecond))

	rec.Domains = slices.Clone(j.cert.Domains)
	rec.CertPEM, rec.KeyPEM = got.ChainPEM, got.PrivateKeyPEM
	rec.NotBefore, rec.NotAfter = got.Leaf.NotBefore, got.Leaf.NotAfter
	lifetime := rec.NotAfter.Sub(rec.NotBefore)
	rec.RenewAt = rec.NotAfter.Add(-time.Duration(float64(lifetime) * j.cfg.Renewal.RemainingFraction))
	rec.ARINextCheck = time.Time{} // ask the CA at the next pass
	rec.LastSuccess, rec.LastAttempt = j.d.now(), now
	rec.LastError, rec.Failures, rec.RetryAt = "", 0, time.Time{}
	// Saved before publishing: a crash in between re-publishes this
	// certificate (the next run has published nothing yet) instead of
	// ordering another.
	if err := j.d.store.SaveCertificate(ctx, rec); err != nil {
		return now.Add(backoffBase), fmt.Errorf("save issued certificate: %w", err)
	}
	if err := client.Collected(ctx, got); err != nil {
		log.Warn("forget the collected order", "err", err)
	}
	return j.publish(ctx, rec, now)
}

// publish hands the stored certificate to the output.
func (j *job) publish(ctx context.Context, rec *store.Certificate, now time.Time) (time.Time, error) {
	if err := j.out.Publish(ctx, rec.Name, rec.CertPEM, rec.KeyPEM); err != nil {
		return j.failed(ctx, rec, now, fmt.Errorf("publish: %w", err))
	}
	j.pubs.mark(rec.Name, rec.CertPEM)
	j.d.metrics.SetCertificate(rec.Name, rec.NotAfter)
	j.d.metrics.SetLastSuccess(rec.Name, rec.LastSuccess)
	return earliest(rec.RenewAt, rec.ARINextCheck, j.cfg.Renewal.ARI), nil
}

// failed records a failed attempt and schedules the next one: exponential
// back-off, never sooner than the CA's Retry-After.
func (j *job) failed(ctx context.Context, rec *store.Certificate, now time.Time, err error) (time.Time, error) {
	j.d.metrics.Failure(j.cert.Resolver, failureReason(err))
	rec.Failures++
	rec.LastError, rec.LastAttempt = err.Error(), now
	rec.RetryAt = now.Add(max(backoff(rec.Failures), retryAfter(err)))
	j.d.log.Error("certificate attempt failed; the certificate in service is kept", "name", rec.Name,
		"failures", rec.Failures, "retryAt", rec.RetryAt, "err", err)
	return rec.RetryAt, errors.Join(err, j.d.store.SaveCertificate(ctx, rec))
}
