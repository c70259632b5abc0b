package fetcher

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/certfetch/certfetch/acme"
	"github.com/certfetch/certfetch/fetcher/config"
	"github.com/certfetch/certfetch/fetcher/store"
	"github.com/certfetch/certfetch/internal/wait"
)

// visit is one look at one certificate: the only place where a certificate's state
// changes. It keeps the stored certificate published, asks the CA's renewal information
// when that is due, and obtains a certificate when one is due, under the certificate's
// lease. The order of its steps is what makes the lifecycle's promises hold:
//
//   - publication comes first and its failure stops nothing: a certificate that cannot
//     be published is still renewed on time;
//   - the record must be writable before an order is placed, and the certificate is
//     stored (checked against its key and names by the engine) before the order is
//     forgotten (acme.Client.Collected): nothing the CA issued is dropped, a crash at any
//     point resumes where it stopped;
//   - a failure only records itself and a retry time: the certificate in service stays.
type visit struct {
	d    *Daemon
	cfg  *config.Config
	cert *config.Certificate
	r    *resolver
	out  *outputs
	memo *memo
	log  *slog.Logger
	// once: the visit of `certfetch once`, which waits for a short Retry-After instead of
	// coming back later, and reports a certificate waiting for its retry as failing.
	once bool
	// last is the record as last read or written, for the daemon's summary.
	last *store.Certificate
	// force is an operator's request to carry out (renew.go), nil for a scheduled visit;
	// forceDone reports that its outcome is recorded, forceErr its failure.
	force     *store.Request
	forceDone bool
	forceErr  error
	// held is set when another instance held the certificate's lease.
	held *store.LeaseHeldError
}

// result is what a visit tells its caller.
type result struct {
	// next is when the certificate needs a visit again.
	next time.Time
	// err is why the certificate is not in order (an attempt failed, it waits for a
	// retry, it is not published); nil when it is published and not failing.
	err error
}

// run makes the visit.
func (v *visit) run(ctx context.Context) result {
	now := v.d.now()
	rec, err := v.load(ctx)
	if err != nil {
		return v.storeFailed(err, now)
	}
	pubErr := v.keepPublished(ctx, rec)
	next, due, ariDue := v.plan(rec, now)
	if !due && v.once {
		// plan reports a certificate whose retry time has not come as not due: that is
		// the case onceWait looks at.
		if d := v.onceWait(rec, now); d > 0 {
			v.log.Info("waiting for the CA's Retry-After before resuming the order", "until", now.Add(d))
			if err := wait.Sleep(ctx, d); err != nil {
				return result{next: now, err: err}
			}
			now = v.d.now()
			next, due, ariDue = v.plan(rec, now)
		}
	}
	if !due && !ariDue && v.force == nil && v.leftoverOrder(ctx, rec) == "" {
		return result{next: next, err: errors.Join(pubErr, v.waiting(rec, now))}
	}
	res := v.locked(ctx, now)
	if pubErr != nil && v.last != rec && v.last != nil && v.out.current(v.cert.Name, v.last.CertPEM) {
		// The attempt published a new certificate: the old one's failure is moot.
		pubErr = nil
	}
	res.err = errors.Join(pubErr, res.err)
	return res
}

// load reads the certificate's record. The configuration is the truth for its name;
// a missing record is an empty one; a record that cannot be decoded, or whose
// certificate and key cannot be used, is moved aside (quarantined) and counts as
// missing, so that a corrupt file costs one order, not the certificate's renewals
// forever.
func (v *visit) load(ctx context.Context) (*store.Certificate, error) {
	rec, err := v.d.store.LoadCertificate(ctx, v.cert.Name)
	if err == nil {
		err = unusableRecord(v.d.store, v.cert.Name, rec)
	}
	var corrupt *store.CorruptError
	switch {
	case errors.Is(err, store.ErrNotFound):
		rec = &store.Certificate{}
	case errors.As(err, &corrupt):
		where, qerr := v.d.store.Quarantine(ctx, corrupt)
		if qerr != nil {
			return nil, fmt.Errorf("%w; moving it aside failed: %w", err, qerr)
		}
		v.log.Error("certificate record is corrupt; moved aside, the certificate will be obtained again", "err", err, "movedTo", where)
		rec = &store.Certificate{}
	case err != nil:
		return nil, err
	}
	rec.Name = v.cert.Name
	v.noteRevocation(ctx, rec)
	v.last = rec
	return rec, nil
}

// plan says when the certificate is due next, whether an order is due now (none usable
// stored, or renewal time reached, or it must be replaced: revoked, or an operator asked;
// and no back-off in force) and whether the CA's renewal information is due.
func (v *visit) plan(rec *store.Certificate, now time.Time) (next time.Time, due, ariDue bool) {
	if usable(rec, v.cert) && !mustReplace(rec) {
		next = rec.RenewAt
		if v.cfg.Renewal.ARI {
			ariDue = !now.Before(rec.ARINextCheck)
			if rec.ARINextCheck.Before(next) {
				next = rec.ARINextCheck
			}
		}
		due = !now.Before(rec.RenewAt)
	} else {
		due = true
	}
	if v.memo.publishRetry(now, nil) && v.memo.publishRetryAt.Before(next) {
		next = v.memo.publishRetryAt
	}
	if due {
		next = now
		if notBefore := v.retryAt(rec); now.Before(notBefore) {
			due, next = false, notBefore
		}
	}
	return next, due, ariDue
}

// retryAt is the earliest next attempt: the record's back-off or Retry-After, or the
// back-off this process keeps for failures it could not record in the store.
func (v *visit) retryAt(rec *store.Certificate) time.Time {
	if v.memo.retryAt.After(rec.RetryAt) {
		return v.memo.retryAt
	}
	return rec.RetryAt
}

// onceWait is how long `once` waits before an attempt that is due but held back: only a
// journaled order's Retry-After that ends within the certificate's deadline is waited
// for (the next attempt resumes that order); a failure's back-off is not.
func (v *visit) onceWait(rec *store.Certificate, now time.Time) time.Duration {
	if usable(rec, v.cert) && now.Before(rec.RenewAt) {
		return 0 // not due at all
	}
	wait := v.retryAt(rec).Sub(now)
	if wait <= 0 || rec.Reason != reasonDeadline || v.memo.retryAt.After(rec.RetryAt) {
		return 0
	}
	if usable(rec, v.cert) && now.Add(wait).Before(rec.RenewAt) {
		return 0 // not due then either
	}
	if wait > v.cfg.EffectiveTimeout(v.cert) {
		return 0
	}
	return wait
}

// waiting is the error of a certificate that is not due and failing: its last failure
// while it waits for the retry. nil when it is not failing.
func (v *visit) waiting(rec *store.Certificate, now time.Time) error {
	if rec.LastError == "" && v.memo.lastErr == nil {
		return nil
	}
	msg := rec.LastError
	if v.memo.lastErr != nil && v.memo.retryAt.After(rec.RetryAt) {
		msg = v.memo.lastErr.Error()
	}
	retry := v.retryAt(rec)
	if !now.Before(retry) {
		return errors.New(msg)
	}
	return fmt.Errorf("waiting until %s after: %s", retry.UTC().Format(time.RFC3339), msg)
}

// locked is the part of a visit that changes the record: under the certificate's lease,
// so that one instance at a time works on it. A certificate another instance holds is
// left to it and looked at again when that lease runs out (a dead holder's work is taken
// over then); the attempt ends when the lease is lost, and the store refuses the writes
// of a lost lease.
func (v *visit) locked(ctx context.Context, now time.Time) result {
	lease, err := v.d.store.AcquireLease(ctx, "certificates/"+v.cert.Name, v.d.lockTTL)
	var held *store.LeaseHeldError
	if errors.As(err, &held) {
		v.held = held
		v.log.Debug("another instance works on the certificate", "holder", held.Holder, "expires", held.Expires)
		return result{next: leaseRetry(held, now, v.d.lockTTL)}
	}
	if err != nil {
		return v.storeFailed(err, now)
	}
	defer v.release(ctx, lease)
	lctx, cancel := lease.Context(ctx)
	defer cancel()

	res := v.underLease(lctx, now)
	if err := lease.Err(); err != nil && ctx.Err() == nil {
		// Another instance may own the certificate now: its state wins.
		v.log.Warn("lease lost; leaving the certificate to the instance that holds it", "err", err)
		return result{next: now.Add(v.d.lockTTL)}
	}
	return res
}

// releaseTimeout bounds giving a lease back; an unreleased lease expires by itself after
// its TTL.
const releaseTimeout = 5 * time.Second

func (v *visit) release(ctx context.Context, lease *store.Lease) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
	defer cancel()
	if err := lease.Release(ctx); err != nil && !errors.Is(err, store.ErrLeaseLost) {
		v.log.Warn("release lease", "err", err)
	}
}

// underLease re-reads the record (another instance may have done the work meanwhile),
// refreshes the renewal information when due, and makes an attempt when one is due.
func (v *visit) underLease(ctx context.Context, now time.Time) (res result) {
	rec, err := v.load(ctx)
	if err != nil {
		return v.storeFailed(err, now)
	}
	if !usable(rec, v.cert) && rec.CertPEM == nil {
		if adopted := v.adopt(ctx, rec); adopted != nil {
			rec = adopted
			// The visit published before it found the certificate under its old name:
			// publish it under the new one now, not at its next visit (its renewal).
			pubErr := v.keepPublished(ctx, rec)
			defer func() { res.err = errors.Join(pubErr, res.err) }()
		}
	}
	if key := v.leftoverOrder(ctx, rec); key != "" {
		v.forgetLeftover(ctx, key)
	}
	if v.force != nil {
		return v.forced(ctx, rec, now)
	}
	next, due, ariDue := v.plan(rec, now)
	if ariDue {
		v.refreshRenewalInfo(ctx, rec, now)
		if next, due, _ = v.plan(rec, now); !due {
			if err := v.save(ctx, rec); err != nil {
				return v.storeFailed(err, now)
			}
			return result{next: next, err: v.waiting(rec, now)}
		}
	}
	if !due {
		return result{next: next, err: v.waiting(rec, now)}
	}
	return v.attempt(ctx, rec, now)
}

// adopt takes over the record of a certificate that was renamed in the configuration:
// an unconfigured record with the same domains, key type and resolver and a usable
// certificate. It is saved under the new name (the old name's outputs are withdrawn by
// the daemon's sweep), so a rename costs no order. nil when there is none.
func (v *visit) adopt(ctx context.Context, rec *store.Certificate) *store.Certificate {
	all, err := v.d.store.Certificates(ctx)
	if err != nil {
		v.log.Warn("cannot look for a renamed certificate's record", "err", err)
		return nil
	}
	configured := v.d.configured()
	for _, old := range all {
		if configured[old.Name] || !usable(old, v.cert) || unusableRecord(v.d.store, old.Name, old) != nil {
			continue
		}
		adopted := *old
		adopted.Name = rec.Name
		if err := v.save(ctx, &adopted); err != nil {
			v.log.Warn("cannot take over a renamed certificate's record", "from", old.Name, "err", err)
			return nil
		}
		v.log.Info("certificate renamed in the configuration: its stored certificate is kept", "from", old.Name)
		return &adopted
	}
	return nil
}

// leftoverOrder returns the request key of an order the journal still holds although
// its certificate is the one stored: a crash (or a failed Collected) between storing the
// certificate and forgetting the order. Left alone, that order and its key would stay
// journaled, and `status` would show it, until the certificate's renewal. It is looked
// for at the first visit of a certificate in a process and after a failed Collected;
// "" when there is none.
func (v *visit) leftoverOrder(ctx context.Context, rec *store.Certificate) string {
	if v.memo.journalClean || !usable(rec, v.cert) {
		return ""
	}
	key := v.request().Key()
	jrec, err := v.d.store.Journal().Load(ctx, key)
	switch {
	case errors.Is(err, acme.ErrNoRecord):
		v.memo.journalClean = true
		return ""
	case err != nil:
		v.log.Warn("cannot read the order journal", "err", err)
		return ""
	case jrec.CertificatePEM != string(rec.CertPEM):
		// Another order (a renewal in flight, here or on another instance): the
		// attempt that owns it collects it.
		v.memo.journalClean = true
		return ""
	}
	return key
}

// forgetLeftover forgets the order leftoverOrder found, under the certificate's lease;
// a failure is retried at the next visit.
func (v *visit) forgetLeftover(ctx context.Context, key string) {
	if err := v.d.store.Journal().Delete(ctx, key); err != nil {
		v.log.Warn("cannot forget the order of the stored certificate", "err", err)
		return
	}
	v.memo.journalClean = true
	v.log.Info("forgot the journaled order of the certificate already stored (left by an interrupted run)")
	v.d.emit(v.cert.Name, StepCollected, nil)
}

// request is the ACME request for the certificate as configured.
func (v *visit) request() acme.Request { return request(v.cert, v.r.cfg) }

// refreshRenewalInfo asks the CA when to renew (ARI, RFC 9773) and moves RenewAt into the
// suggested window when it is outside it. A CA without ARI, or an ARI failure, leaves the
// lifetime-based RenewAt in place. The caller saves rec.
func (v *visit) refreshRenewalInfo(ctx context.Context, rec *store.Certificate, now time.Time) {
	rec.ARINextCheck = now.Add(ariRecheck)
	client, err := v.r.acmeClient(ctx)
	var w *acme.RenewalWindow
	if err == nil {
		w, err = client.RenewalInfo(ctx, rec.CertPEM)
	}
	if err != nil {
		level := slog.LevelWarn
		if errors.Is(err, acme.ErrNoRenewalInfo) {
			level = slog.LevelDebug
		}
		v.log.Log(ctx, level, "no renewal information; renewing by lifetime", "err", err)
		return
	}
	if w.RetryAfter > 0 {
		rec.ARINextCheck = now.Add(w.RetryAfter)
	}
	if rec.RenewAt.Before(w.Start) || !rec.RenewAt.Before(w.End) {
		rec.RenewAt = w.RenewAt(now)
		v.log.Info("renewal window from the CA", "start", w.Start, "end", w.End, "renewAt", rec.RenewAt)
	}
	v.d.metrics.SetRenewal(v.cert.Name, rec.RenewAt)
}

// attempt runs one order attempt, bounded by the certificate's deadline, and stores and
// publishes what it brings.
func (v *visit) attempt(ctx context.Context, rec *store.Certificate, now time.Time) result {
	// The record must be writable before an order is placed: a certificate that could
	// not be stored would stay journaled, and each retry would only find the store
	// refusing again.
	rec.LastAttempt = now
	if err := v.save(ctx, rec); err != nil {
		return v.storeFailed(err, now)
	}
	// So must the order journal: an order that cannot be journaled is lost at once
	// (the file backend; Redis and etcd refuse only when unreachable).
	if err := v.d.store.CheckWritable(ctx); err != nil {
		return v.storeFailed(err, now)
	}
	client, err := v.r.acmeClient(ctx)
	if err != nil {
		return v.failed(ctx, rec, now, err)
	}
	renewal := usable(rec, v.cert)
	req := v.request()
	if renewal && v.cfg.Renewal.ARI {
		// Tells the CA which certificate this order replaces (RFC 9773 §5); a CA without
		// ARI ignores the field.
		if id, err := acme.ARICertID(rec.CertPEM); err == nil {
			req.Replaces = id
		}
	}

	select {
	case v.r.slots <- struct{}{}:
	case <-ctx.Done():
		return result{next: now, err: ctx.Err()}
	}
	defer func() { <-v.r.slots }()

	timeout := v.cfg.EffectiveTimeout(v.cert)
	v.log.Info("ordering certificate", "domains", v.cert.Domains, "deadline", timeout, "renewal", renewal)
	v.d.emit(v.cert.Name, StepOrdering, nil)
	got, took, err := v.obtain(ctx, client, req, rec, timeout)
	if err != nil {
		var pending *acme.OrderPendingError
		switch {
		case ctx.Err() != nil:
			// Shutdown, or the lease was lost: not the certificate's failure. The order
			// stays journaled and the next visit resumes it.
			return result{next: v.d.now(), err: ctx.Err()}
		case errors.As(err, &pending):
			return v.pending(ctx, rec, pending, took)
		}
		v.d.metrics.ObserveIssuance(v.cert.Resolver, "failure", took)
		return v.failed(ctx, rec, now, err)
	}
	v.d.metrics.ObserveIssuance(v.cert.Resolver, "success", took)
	v.d.emit(v.cert.Name, StepObtained, nil)
	v.log.Info("certificate issued", "notAfter", got.Leaf.NotAfter, "took", took.Round(time.Millisecond))

	issued := v.issued(rec, got)
	if err := v.save(ctx, issued); err != nil {
		// The engine keeps the order and its certificate journaled: the next attempt
		// takes the certificate from there, no new order.
		return v.storeFailed(err, now)
	}
	v.d.emit(v.cert.Name, StepStored, nil)
	if err := client.Collected(ctx, got); err != nil {
		// Harmless: the next visit finds the order left in the journal and forgets it
		// (leftoverOrder).
		v.log.Warn("cannot forget the collected order", "order", got.OrderURL, "err", err)
		v.memo.journalClean = false
	} else {
		v.memo.journalClean = true
		v.d.emit(v.cert.Name, StepCollected, nil)
	}
	v.memo.succeeded()
	v.d.metrics.SetLastSuccess(v.cert.Name, issued.LastSuccess)
	pubErr := v.keepPublished(ctx, issued)
	if err := v.finishRequest(ctx, rec, issued); err != nil {
		// The certificate is in service; only the command waiting for the request
		// misses its outcome (it reports none within --wait).
		v.log.Warn("cannot record the outcome of the request this renewal finished", "err", err)
	}
	next, _, _ := v.plan(issued, v.d.now())
	return result{next: next, err: pubErr}
}

// obtain runs client.Obtain within the deadline. A certificate the journal still held
// from before a crash, identical to the stored one, is not a renewal: that order is
// forgotten and a new one obtained, within the same deadline.
func (v *visit) obtain(ctx context.Context, client *acme.Client, req acme.Request, rec *store.Certificate, timeout time.Duration) (*acme.Certificate, time.Duration, error) {
	start := v.d.now()
	v.d.metrics.OrderStarted(v.cert.Resolver)
	defer v.d.metrics.OrderDone(v.cert.Resolver)
	octx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	got, err := client.Obtain(octx, req)
	if err == nil && (bytes.Equal(got.ChainPEM, rec.CertPEM) || revocationOf(rec, got.ChainPEM) != nil) {
		// A revoked certificate (an order journaled before the revocation) is never
		// collected into service either.
		v.log.Info("the journal still held the certificate in service or a revoked one; forgetting that order", "order", got.OrderURL)
		if err = client.Collected(ctx, got); err == nil {
			got, err = client.Obtain(octx, req)
		}
	}
	return got, v.d.now().Sub(start), err
}

// issued is rec with the certificate got in service and a fresh schedule.
func (v *visit) issued(rec *store.Certificate, got *acme.Certificate) *store.Certificate {
	now := v.d.now()
	return &store.Certificate{
		Name:         v.cert.Name,
		Resolver:     v.cert.Resolver,
		Domains:      slices.Clone(v.cert.Domains),
		KeyType:      v.cert.KeyType,
		CertPEM:      got.ChainPEM,
		KeyPEM:       got.PrivateKeyPEM,
		NotBefore:    got.Leaf.NotBefore,
		NotAfter:     got.Leaf.NotAfter,
		RenewAt:      renewAt(got.Leaf.NotBefore, got.Leaf.NotAfter, v.cfg.Renewal.RemainingFraction),
		ARINextCheck: time.Time{}, // ask the CA at the next visit
		LastSuccess:  now,
		LastAttempt:  rec.LastAttempt,
		Revoked:      rec.Revoked,
		LastRequest:  rec.LastRequest,
	}
}

// pending records an attempt whose deadline passed while the order lives on at the CA:
// it is resumed after the CA's Retry-After, later after repeated deadlines (pendingWait).
func (v *visit) pending(ctx context.Context, rec *store.Certificate, pe *acme.OrderPendingError, took time.Duration) result {
	v.d.metrics.ObserveIssuance(v.cert.Resolver, "pending", took)
	v.d.metrics.Failure(v.cert.Resolver, reasonDeadline)
	rec.Deadlines++
	wait := pendingWait(rec.Deadlines, pe.RetryAfter)
	rec.LastError, rec.Reason, rec.RetryAt = pe.Error(), reasonDeadline, v.d.now().Add(wait)
	v.log.Warn("deadline passed; the order stays alive at the CA and is resumed", "order", pe.OrderURL,
		"status", pe.Status, "deadlines", rec.Deadlines, "resumeIn", wait)
	return v.recordOutcome(ctx, rec, StepPending, pe)
}

// failed records a failed attempt and schedules the next one: exponential back-off,
// never sooner than the CA's Retry-After. The certificate in service is left alone.
func (v *visit) failed(ctx context.Context, rec *store.Certificate, now time.Time, err error) result {
	reason := failureReason(err)
	v.d.metrics.Failure(v.cert.Resolver, reason)
	rec.Failures++
	rec.Deadlines = 0
	rec.LastError, rec.Reason = err.Error(), reason
	rec.RetryAt = v.d.now().Add(max(backoff(rec.Failures), retryAfter(err)))
	v.log.Error("certificate attempt failed; the certificate in service is kept", "reason", reason,
		"failures", rec.Failures, "retryAt", rec.RetryAt, "err", err)
	return v.recordOutcome(ctx, rec, StepFailed, err)
}

// recordOutcome saves rec with the outcome of an attempt that did not bring a
// certificate, then reports step. A store that refuses the write leaves the retry time
// in memory, so that the back-off holds anyway.
func (v *visit) recordOutcome(ctx context.Context, rec *store.Certificate, step Step, err error) result {
	res := result{next: rec.RetryAt, err: err}
	if serr := v.save(ctx, rec); serr != nil {
		v.memo.failedAt(rec.RetryAt, err)
		res.err = errors.Join(err, &storeError{serr})
	}
	v.d.emit(v.cert.Name, step, err)
	return res
}

// storeFailed handles a store that refused a read or a write: nothing changes in
// service, the order (if any) stays journaled, and this process backs off on its own,
// since the store cannot record the failure.
func (v *visit) storeFailed(err error, now time.Time) result {
	err = &storeError{err}
	v.memo.storeFailures++
	retry := now.Add(backoff(v.memo.storeFailures))
	v.memo.failedAt(retry, err)
	v.d.metrics.Failure(v.cert.Resolver, reasonStore)
	v.log.Error("state store failed; the certificate in service is kept", "failures", v.memo.storeFailures, "retryAt", retry, "err", err)
	v.d.emit(v.cert.Name, StepFailed, err)
	return result{next: retry, err: err}
}

// save writes rec; the configuration is the truth for its name.
func (v *visit) save(ctx context.Context, rec *store.Certificate) error {
	rec.Name = v.cert.Name
	v.last = rec
	return v.d.store.SaveCertificate(ctx, rec)
}

// keepPublished makes sure every output serves rec's certificate. A failure is counted
// and backed off on its own schedule (publishing does not need the lease, and every
// instance publishes to its own outputs); it never stops renewal.
func (v *visit) keepPublished(ctx context.Context, rec *store.Certificate) error {
	if !usable(rec, v.cert) {
		return nil
	}
	v.d.metrics.SetCertificate(v.cert.Name, rec.NotAfter)
	v.d.metrics.SetRenewal(v.cert.Name, rec.RenewAt)
	if !rec.LastSuccess.IsZero() {
		v.d.metrics.SetLastSuccess(v.cert.Name, rec.LastSuccess)
	}
	now := v.d.now()
	if v.out.current(v.cert.Name, rec.CertPEM) || v.refuseRevoked(rec) {
		return nil
	}
	if v.memo.publishRetry(now, rec.CertPEM) {
		return v.memo.publishErr
	}
	if err := v.out.publish(ctx, v.cert.Name, rec.CertPEM, rec.KeyPEM); err != nil {
		err = &publishError{err}
		v.memo.publishFailures++
		v.memo.publishRetryAt = now.Add(backoff(v.memo.publishFailures))
		v.memo.publishErr, v.memo.publishSum = err, sha256.Sum256(rec.CertPEM)
		v.d.metrics.Failure(v.cert.Resolver, reasonPublish)
		v.log.Error("cannot publish the certificate; renewal goes on", "failures", v.memo.publishFailures,
			"retryAt", v.memo.publishRetryAt, "err", err)
		v.d.emit(v.cert.Name, StepFailed, err)
		return err
	}
	v.memo.published()
	v.d.emit(v.cert.Name, StepPublished, nil)
	return nil
}

// memo is what the daemon remembers of a certificate between visits, besides the store:
// failures it could not record there (the store refused the write), and publication
// failures (per process: every instance publishes to its own outputs). Only the visit of
// its certificate uses it: the scheduler runs one visit per certificate at a time.
type memo struct {
	storeFailures int
	retryAt       time.Time // no attempt before this (failures the store could not record)
	lastErr       error

	publishFailures int
	publishRetryAt  time.Time
	publishErr      error
	publishSum      [sha256.Size]byte // of the certificate that failed

	// journalClean: the journal was found to hold no order of the stored certificate
	// (see leftoverOrder).
	journalClean bool
}

func (m *memo) failedAt(retry time.Time, err error) { m.retryAt, m.lastErr = retry, err }

func (m *memo) succeeded() { m.storeFailures, m.retryAt, m.lastErr = 0, time.Time{}, nil }

func (m *memo) published() { m.publishFailures, m.publishRetryAt, m.publishErr = 0, time.Time{}, nil }

// publishRetry reports whether the publication of certPEM (nil: of any certificate)
// failed and its retry time has not come. Another certificate (a renewal) is published
// at once: the last failure may have been that certificate's own (output.ErrOlder), and
// the back-off of an output that keeps refusing goes on growing anyway.
func (m *memo) publishRetry(now time.Time, certPEM []byte) bool {
	return m.publishErr != nil && now.Before(m.publishRetryAt) &&
		(certPEM == nil || m.publishSum == sha256.Sum256(certPEM))
}
