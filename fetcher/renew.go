package fetcher

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/certfetch/certfetch/acme"
	"github.com/certfetch/certfetch/fetcher/config"
	"github.com/certfetch/certfetch/fetcher/store"
	"github.com/certfetch/certfetch/internal/wait"
)

// Operator requests: `certfetch renew --force NAME` and `certfetch revoke NAME`.
//
// A request is carried out by a visit of its certificate (visit.go) that has the
// request as its force input: under the certificate's lease, like every change of a
// certificate, the visit revokes the target at the CA (revoke), moves the certificate's
// renewal time to now and makes an attempt at once, whatever its schedule or back-off.
// From there on the certificate is an ordinary due certificate: an order that outlives
// its deadline is resumed, a failure is retried with back-off. So a request goes through
// the same lifecycle and the same locks as the daemon's own work:
//
//   - on a shared store the command runs that visit itself, under the lease (Carry);
//   - on a state directory no process holds, the command takes the directory lock and
//     runs it itself (Carry);
//   - on a state directory a daemon holds, the command leaves the request under
//     requests/<name> and sends the daemon SIGHUP: the daemon picks pending requests up
//     at start and at every reload (HandleRequests) and runs the visit.
//
// Either way the outcome lands in the certificate's record (LastRequest), where the
// command reads it (RequestResult).
//
// A revoked certificate is recorded twice: in its record's Revoked list, carried on by
// every later record, and in the store's revocation index (revoked/<sha256>), which a
// record restored from an older backup cannot undo. The publication step refuses a
// certificate either of them lists (and, after keyCompromise, any certificate with the
// revoked key), and a record holding one is due for renewal at once.

// ErrUnknownCertificate is returned (wrapped) for a request about a name the
// configuration does not define.
var ErrUnknownCertificate = errors.New("no such certificate in the configuration")

// NewRequest returns the request for action on the configured certificate name, made
// now: its target is the certificate in service in st (none for a certificate never
// issued). A revocation needs a certificate in service. It returns an error wrapping
// ErrUnknownCertificate when cfg does not configure name.
func NewRequest(ctx context.Context, cfg *config.Config, st *store.Store, name string, action store.RequestAction, reason acme.RevocationReason) (*store.Request, error) {
	certs, err := Certificates(ctx, cfg, st)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", action, name, err)
	}
	cert := certificateNamed(certs, name)
	if cert == nil {
		names := make([]string, len(certs))
		for i, c := range certs {
			names[i] = c.Name
		}
		return nil, fmt.Errorf("%s %s: %w (configured: %v)", action, name, ErrUnknownCertificate, names)
	}
	id := make([]byte, 8)
	_, _ = rand.Read(id) // never fails (crypto/rand)
	host, _ := os.Hostname()
	req := &store.Request{ID: hex.EncodeToString(id), Name: name, Action: action, Requested: time.Now().UTC(),
		By: host + ":" + strconv.Itoa(os.Getpid())}
	if action == store.RequestRevoke {
		req.Reason = reason
	}
	rec, err := st.LoadCertificate(ctx, name)
	switch {
	case errors.Is(err, store.ErrNotFound):
		rec = &store.Certificate{}
	case err != nil:
		return nil, fmt.Errorf("%s %s: %w", action, name, err)
	}
	if len(rec.CertPEM) > 0 {
		if req.Target, err = acme.Fingerprint(rec.CertPEM); err != nil {
			return nil, fmt.Errorf("%s %s: the stored certificate: %w", action, name, err)
		}
		req.CertificatePEM = rec.CertPEM
	}
	if action == store.RequestRevoke && req.Target == "" {
		return nil, fmt.Errorf("revoke %s: no certificate was issued for it; nothing to revoke", name)
	}
	return req, nil
}

// RequestResult reads what became of req in the certificate's record rec: done is false
// while the request waits to be carried out, while its replacement's order is still
// running (it outlived its deadline and is resumed), or while the replacement is stored
// but not published yet; then it reports the request's failure (the CA refused the
// revocation, the replacement failed) or nil: the certificate in service, published, is
// a new one, not revoked.
func RequestResult(rec *store.Certificate, req *store.Request) (done bool, err error) {
	o := rec.LastRequest
	if o == nil || o.ID != req.ID {
		return false, nil
	}
	if o.Error != "" {
		return true, errors.New(o.Error)
	}
	if replaced(rec, req) {
		// The record holds the replacement before it is published; the outcome is stamped
		// (Done) after publication, by the visit that carried the request out or by the
		// one that finished its replacement's order later (finishRequest).
		return !o.Done.Before(rec.LastSuccess), nil
	}
	if o.Done.IsZero() {
		return false, nil // the replacement's first attempt runs, or was interrupted
	}
	if rec.LastError != "" && rec.Reason != reasonDeadline && rec.LastAttempt.After(o.Done) {
		// A resume of the replacement's order (after it outlived its deadline) failed.
		return true, fmt.Errorf("%s %s: the replacement failed: %s", req.Action, req.Name, rec.LastError)
	}
	return false, nil
}

// requestBook is the daemon's share of operator requests: the requests picked up from
// the store and not carried out yet, and, per certificate, the fingerprint of a stored
// certificate the revocation index was found not to list (so that the index is read
// once per certificate in service, not at every visit).
type requestBook struct {
	mu       sync.Mutex
	pending  map[string]*store.Request
	clearFor map[string]string
}

func (b *requestBook) get(name string) *store.Request {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.pending[name]
}

func (b *requestBook) put(req *store.Request) (added bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.pending == nil {
		b.pending = map[string]*store.Request{}
	}
	if old := b.pending[req.Name]; old != nil && old.ID == req.ID {
		return false
	}
	b.pending[req.Name] = req
	return true
}

// drop forgets the request name had if it is req.
func (b *requestBook) drop(req *store.Request) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if old := b.pending[req.Name]; old != nil && old.ID == req.ID {
		delete(b.pending, req.Name)
	}
}

func (b *requestBook) clear(name, fingerprint string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.clearFor[name] == fingerprint
}

func (b *requestBook) setClear(name, fingerprint string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.clearFor == nil {
		b.clearFor = map[string]string{}
	}
	b.clearFor[name] = fingerprint
}

// HandleRequests picks up the operators' requests pending in the store (requests/<name>,
// written by `certfetch renew` and `revoke` while this process holds the state
// directory): each named certificate is made due at once, and its next visit carries
// the request out under its lease and records the outcome in its record; the request is
// deleted then. A request for a certificate the configuration does not define is logged
// and deleted. `certfetch run` calls it at start and at every reload (SIGHUP: how the
// commands reach it), Once at its start.
func (d *Daemon) HandleRequests(ctx context.Context) {
	reqs, err := d.store.Requests(ctx)
	if err != nil {
		d.log.Error("cannot read the pending requests; they stay pending", "err", err)
		return
	}
	configured := d.configured()
	var due []string
	for _, req := range reqs {
		if !configured[req.Name] {
			d.log.Error("request for a certificate that is not configured: dropped", "name", req.Name,
				"action", req.Action, "by", req.By)
			if err := d.store.DeleteRequest(ctx, req.Name, req.ID); err != nil {
				d.log.Error("cannot delete a dropped request", "name", req.Name, "err", err)
			}
			continue
		}
		if d.reqs.put(req) {
			attrs := []any{"name", req.Name, "action", req.Action, "by", req.By, "requested", req.Requested}
			if req.Action == store.RequestRevoke {
				attrs = append(attrs, "reason", req.Reason.String())
			}
			d.log.Info("request received", attrs...)
		}
		due = append(due, req.Name)
	}
	d.sched.due(due...)
}

// carried ends the request v carried out: it is deleted from the store (the outcome is
// in the record) and counted.
func (d *Daemon) carried(ctx context.Context, v *visit) {
	if v.force == nil || !v.forceDone {
		return
	}
	req := v.force
	d.reqs.drop(req)
	if err := d.store.DeleteRequest(context.WithoutCancel(ctx), req.Name, req.ID); err != nil {
		// The outcome is recorded: the next pick-up finds it carried out and deletes it.
		v.log.Warn("cannot delete the request carried out", "err", err)
	}
	result := "success"
	if v.forceErr != nil {
		result = "failure"
	}
	d.metrics.Request(string(req.Action), result)
}

// carryRecheck bounds Carry's wait between two looks at the certificate, whatever the
// visit said: the replacement may come from elsewhere (another instance).
const carryRecheck = 30 * time.Second

// Carry carries out req in this process, through the visit the daemon makes, under the
// certificate's lease: when another instance holds the lease it waits (progress says
// who holds it and until when) and takes it once free; then it revokes (revoke) and
// makes the replacement's attempt; while the replacement's order outlives its deadline it
// resumes the order after the CA's Retry-After, until the certificate in service is a
// new one, the replacement fails, or ctx ends (the order then stays journaled and the
// certificate due, for the next `run` or `once`). A pending request record for it in the
// store is deleted once it is carried out. It returns the record as it is then, and the
// request's failure (see RequestResult), or ctx's error.
//
// Carry must not run while Run or Once runs on the same Daemon.
func (d *Daemon) Carry(ctx context.Context, req *store.Request, progress func(string)) (*store.Certificate, error) {
	force := req
	for {
		v := d.newVisit(req.Name, false)
		if v == nil {
			return nil, fmt.Errorf("%s %s: %w", req.Action, req.Name, ErrUnknownCertificate)
		}
		v.force = force
		res := v.run(ctx)
		d.carried(ctx, v)
		if v.forceDone {
			force = nil
		}
		rec := v.last
		switch {
		case v.held != nil:
			progress(fmt.Sprintf("%s is being worked on by %s; waiting until its lease is free (%s)",
				req.Name, cmp.Or(v.held.Holder, "another instance"), leaseUntil(v.held)))
		case force != nil && res.err != nil:
			// Not carried out: the store failed, or ctx ended.
			return rec, res.err
		case rec != nil:
			if done, err := RequestResult(rec, req); done {
				return rec, err
			}
			if force == nil && rec.Reason == reasonDeadline {
				progress(fmt.Sprintf("%s: the order is still processing at the CA; it is resumed at %s",
					req.Name, rec.RetryAt.UTC().Format(time.RFC3339)))
			}
		}
		if err := wait.Sleep(ctx, min(max(res.next.Sub(d.now()), 0), carryRecheck)); err != nil {
			return rec, err
		}
	}
}

func leaseUntil(held *store.LeaseHeldError) string {
	if held.Expires.IsZero() {
		return "it did not say until when"
	}
	return "held until " + held.Expires.UTC().Format(time.RFC3339)
}

// forced is the part of a visit that carries out an operator's request (v.force), under
// the certificate's lease, on the record rec just read there. The request counts as
// carried out (v.forceDone) once its outcome is in the record: the revocation refused,
// or made and the replacement's first attempt ended (issued, failed, or outlived its
// deadline: then the order is resumed like any other). A shutdown, a lost lease or a
// store that refuses writes leave it pending, to be carried out again.
func (v *visit) forced(ctx context.Context, rec *store.Certificate, now time.Time) result {
	req := v.force
	if o := rec.LastRequest; o != nil && o.ID == req.ID && !o.Done.IsZero() {
		// Carried out before (a process that stopped before it deleted the request).
		v.forceDone = true
		next, _, _ := v.plan(rec, now)
		return result{next: next}
	}
	if req.Action == store.RequestRevoke {
		if err := v.revoke(ctx, rec, now); err != nil {
			var storeErr *storeError
			if ctx.Err() != nil || errors.As(err, &storeErr) {
				return result{next: now, err: errors.Join(err, ctx.Err())}
			}
			// Nothing else happens: the certificate stays in service, on its schedule.
			v.log.Error("revocation failed; the certificate stays in service", "err", err)
			if serr := v.requestDone(ctx, rec, err, ""); serr != nil {
				return v.storeFailed(serr, now)
			}
			next, _, _ := v.plan(rec, now)
			return result{next: next, err: err}
		}
	}
	if !v.needsReplacement(rec, req) {
		v.log.Info("the certificate was replaced since the request; no new order")
		if err := v.requestDone(ctx, rec, nil, ""); err != nil {
			return v.storeFailed(err, now)
		}
		next, _, _ := v.plan(rec, now)
		return result{next: next}
	}
	// From here on the certificate is simply due (mustReplace, from the attempt's first
	// write of the record on): an order that outlives its deadline is resumed later, a
	// failure backs off, as for any renewal, also when this process stops in between.
	if rec.RenewAt.IsZero() || rec.RenewAt.After(now) {
		rec.RenewAt = now
	}
	rec.LastRequest = v.outcome(nil, req.Target)
	rec.LastRequest.Done = time.Time{} // started, not carried out yet
	v.log.Info("renewing now, as requested", "action", req.Action, "by", req.By)
	res := v.attempt(ctx, rec, now)
	var (
		pending  *acme.OrderPendingError
		storeErr *storeError
		failure  error
	)
	switch {
	case ctx.Err() != nil:
		return res // shutdown or a lost lease: carried out again later
	case replaced(v.last, req):
		// Issued and stored; a publication failure rides along in res.err.
	case errors.As(res.err, &pending):
	case errors.As(res.err, &storeErr):
		return res // the engine keeps the certificate journaled; carried out again later
	default:
		failure = res.err
	}
	if err := v.requestDone(ctx, v.last, failure, req.Target); err != nil {
		res.err = errors.Join(res.err, &storeError{err})
	}
	return res
}

// mustReplace reports whether rec's certificate in service must be replaced now,
// whatever its renewal time: it is revoked, or an operator's request started its
// replacement (which then goes on through resumes and back-off until it is in).
func mustReplace(rec *store.Certificate) bool {
	if len(rec.CertPEM) == 0 {
		return false
	}
	if revocationOf(rec, rec.CertPEM) != nil {
		return true
	}
	if o := rec.LastRequest; o != nil && o.Replaces != "" {
		fp, err := acme.Fingerprint(rec.CertPEM)
		return err == nil && fp == o.Replaces
	}
	return false
}

// replaced reports whether rec holds a certificate in service that is not req's target
// and not revoked.
func replaced(rec *store.Certificate, req *store.Request) bool {
	if rec == nil || len(rec.CertPEM) == 0 || revocationOf(rec, rec.CertPEM) != nil {
		return false
	}
	fp, err := acme.Fingerprint(rec.CertPEM)
	return err == nil && fp != req.Target
}

// finishRequest stamps, after the attempt that replaced old by issued published it, the
// outcome of the operator request whose replacement that was, when the request's own
// visit could not: its first attempt outlived the deadline or was interrupted, and this
// visit resumed the order. The command waiting for the request (RequestResult) takes the
// stamp, later than issued.LastSuccess, to mean the replacement is served. The visit
// that carries a request out (v.force) stamps it itself, after this.
func (v *visit) finishRequest(ctx context.Context, old, issued *store.Certificate) error {
	o := issued.LastRequest
	if v.force != nil || o == nil || !o.Done.Before(issued.LastSuccess) {
		return nil
	}
	replacedNow := "" // a request for a certificate never issued replaces nothing
	if len(old.CertPEM) > 0 {
		fp, err := acme.Fingerprint(old.CertPEM)
		if err != nil {
			return nil
		}
		replacedNow = fp
	}
	if replacedNow != o.Replaces {
		return nil // a later renewal, not the request's replacement
	}
	stamped := *o
	stamped.Done = v.d.now()
	issued.LastRequest = &stamped
	return v.save(ctx, issued)
}

// requestDone records the request's outcome in rec and saves it; failure nil: carried
// out. replaces is the fingerprint of the certificate whose replacement was started.
func (v *visit) requestDone(ctx context.Context, rec *store.Certificate, failure error, replaces string) error {
	rec.LastRequest = v.outcome(failure, replaces)
	if err := v.save(ctx, rec); err != nil {
		return err
	}
	v.forceDone, v.forceErr = true, failure
	return nil
}

// outcome is the outcome of the request being carried out, done now.
func (v *visit) outcome(failure error, replaces string) *store.RequestOutcome {
	req := v.force
	o := &store.RequestOutcome{ID: req.ID, Action: req.Action, Requested: req.Requested, Done: v.d.now(), Replaces: replaces}
	if req.Action == store.RequestRevoke {
		o.Reason = req.Reason
	}
	if failure != nil {
		o.Error = fmt.Sprintf("%s %s: %v", req.Action, req.Name, failure)
	}
	return o
}

// needsReplacement reports whether the request still needs a new certificate: nothing
// usable is in service, the certificate in service is revoked, or it is still the one
// the operator wanted replaced. A certificate issued since the request (by another
// instance, or by the daemon's own schedule) is the replacement: no second order.
func (v *visit) needsReplacement(rec *store.Certificate, req *store.Request) bool {
	return !usable(rec, v.cert) || !replaced(rec, req)
}

// revoke revokes the request's target at the CA with the request's reason and records
// the revocation, in the store's index and in rec (saved by the caller's next write),
// and makes rec due at once when the target is in service. A target recorded as revoked
// already is not sent again; the CA's alreadyRevoked counts as done (see acme.Revoke), so
// that a revocation whose record was lost is simply asked again.
func (v *visit) revoke(ctx context.Context, rec *store.Certificate, now time.Time) error {
	req := v.force
	var entry *store.Revocation
	if i := slices.IndexFunc(rec.Revoked, func(r store.Revocation) bool { return r.SHA256 == req.Target }); i >= 0 {
		entry = &rec.Revoked[i]
	} else if known, err := v.d.store.LoadRevocation(ctx, req.Target); err == nil {
		entry = known
		rec.Revoked = append(rec.Revoked, *known)
	}
	if entry != nil && entry.Reason != req.Reason {
		// Revoked before for another reason: ask again (the CA answers alreadyRevoked)
		// and record the new reason, keyCompromise's ban on the key included.
		entry = nil
	}
	if entry == nil {
		// The store must take writes before the CA revokes: a revocation that cannot be
		// recorded would leave the revoked certificate in the record, due but refused.
		if err := v.save(ctx, rec); err != nil {
			return &storeError{err}
		}
		client, err := v.r.acmeClient(ctx)
		if err != nil {
			return err
		}
		if err := client.Revoke(ctx, req.CertificatePEM, req.Reason); err != nil {
			return err
		}
		rev, err := newRevocation(req, v.d.now())
		if err != nil {
			return err
		}
		if err := v.d.store.RecordRevocation(ctx, rev); err != nil {
			// The record carries it too; a restored record would not.
			v.log.Error("cannot add the revoked certificate to the store's revocation index", "serial", rev.Serial, "err", err)
		}
		rec.Revoked = append(pruneRevocations(rec.Revoked, v.d.now()), rev)
		v.log.Warn("certificate revoked at the CA; it is never published again", "serial", rev.Serial, "reason", rev.Reason.String())
	}
	if revocationOf(rec, rec.CertPEM) != nil && (rec.RenewAt.IsZero() || rec.RenewAt.After(now)) {
		rec.RenewAt = now
	}
	return nil
}

// newRevocation describes req's target, revoked at now.
func newRevocation(req *store.Request, now time.Time) (store.Revocation, error) {
	leaf, err := acme.ParseLeaf(req.CertificatePEM)
	if err != nil {
		return store.Revocation{}, err
	}
	keyFP, err := acme.PublicKeyFingerprint(req.CertificatePEM)
	if err != nil {
		return store.Revocation{}, err
	}
	return store.Revocation{SHA256: req.Target, PublicKeySHA256: keyFP, Serial: acme.SerialHex(leaf), Reason: req.Reason,
		RevokedAt: now.UTC(), NotAfter: leaf.NotAfter, Name: req.Name}, nil
}

// pruneRevocations drops the entries of certificates that have expired: nobody serves
// them (a client refuses them anyway), and the list stays short. The store's index keeps
// them.
func pruneRevocations(revs []store.Revocation, now time.Time) []store.Revocation {
	return slices.DeleteFunc(slices.Clone(revs), func(r store.Revocation) bool {
		return !r.NotAfter.IsZero() && now.After(r.NotAfter)
	})
}

// revocationOf returns the entry of rec's revoked list that forbids certPEM: the same
// certificate, or, after keyCompromise, any certificate with the revoked key; nil when
// certPEM may be published (or is not a certificate).
func revocationOf(rec *store.Certificate, certPEM []byte) *store.Revocation {
	if len(rec.Revoked) == 0 || len(certPEM) == 0 {
		return nil
	}
	fp, err := acme.Fingerprint(certPEM)
	if err != nil {
		return nil
	}
	keyFP, _ := acme.PublicKeyFingerprint(certPEM)
	for i, r := range rec.Revoked {
		if r.SHA256 == fp || (r.Reason == acme.ReasonKeyCompromise && r.PublicKeySHA256 == keyFP) {
			return &rec.Revoked[i]
		}
	}
	return nil
}

// noteRevocation completes a record just read with the store's revocation index: a
// record restored from a backup taken before its certificate was revoked (or written by
// an instance that could not see the revocation) lacks it in Revoked. The certificate is
// then refused for publication and due at once, like any revoked one. The index is read
// once per certificate in service and process.
func (v *visit) noteRevocation(ctx context.Context, rec *store.Certificate) {
	if len(rec.CertPEM) == 0 {
		return
	}
	fp, err := acme.Fingerprint(rec.CertPEM)
	if err != nil {
		return
	}
	entry := revocationOf(rec, rec.CertPEM)
	if entry == nil && !v.d.reqs.clear(v.cert.Name, fp) {
		known, err := v.d.store.LoadRevocation(ctx, fp)
		switch {
		case err == nil:
			rec.Revoked = append(rec.Revoked, *known)
			entry = known
			v.log.Warn("the stored certificate was revoked (a stale or restored record); it is never published again and is replaced now",
				"serial", known.Serial, "reason", known.Reason.String(), "revokedAt", known.RevokedAt)
		case errors.Is(err, store.ErrNotFound):
			v.d.reqs.setClear(v.cert.Name, fp)
		default:
			v.log.Warn("cannot read the store's revocation index", "err", err)
		}
	}
	if entry != nil && (rec.RenewAt.IsZero() || rec.RenewAt.After(entry.RevokedAt)) {
		rec.RenewAt = entry.RevokedAt
	}
}

// refuseRevoked reports whether rec's certificate is revoked, and then logs that it is
// not published. The outputs keep what they serve until the replacement is in: a
// certificate already out there is not withdrawn (Traefik would fall back to its
// default certificate, which no client accepts either).
func (v *visit) refuseRevoked(rec *store.Certificate) bool {
	entry := revocationOf(rec, rec.CertPEM)
	if entry == nil {
		return false
	}
	v.log.Warn("the stored certificate is revoked: not published; it is replaced", "serial", entry.Serial,
		"reason", entry.Reason.String())
	return true
}

// PendingRequest is an operator's request waiting in the store, as `status` shows it.
type PendingRequest struct {
	Action    store.RequestAction `json:"action"`
	Reason    string              `json:"reason,omitempty"`
	Requested time.Time           `json:"requested"`
	By        string              `json:"by,omitempty"`
	// HolderPID is the process holding the state directory, which is asked to carry the
	// request out; 0 when none does or it is unknown (a shared store: the command that
	// made the request carries it out itself).
	HolderPID int `json:"holderPID,omitempty"`
}

// String describes the request for the status table.
func (p *PendingRequest) String() string {
	what := string(p.Action)
	if p.Reason != "" {
		what += " (" + p.Reason + ")"
	}
	s := fmt.Sprintf("%s requested %s by %s", what, p.Requested.UTC().Format(time.RFC3339), cmp.Or(p.By, "?"))
	if p.HolderPID > 0 {
		return s + fmt.Sprintf(", waiting for certfetch (pid %d)", p.HolderPID)
	}
	return s + ", waiting"
}

// requestStatus reads the request pending for name and the outcome of the last one.
func requestStatus(ctx context.Context, st *store.Store, name string, rec *store.Certificate) (*PendingRequest, *store.RequestOutcome) {
	var last *store.RequestOutcome
	if rec != nil {
		last = rec.LastRequest
	}
	req, err := st.LoadRequest(ctx, name)
	if err != nil {
		return nil, last
	}
	p := &PendingRequest{Action: req.Action, Requested: req.Requested, By: req.By}
	if req.Action == store.RequestRevoke {
		p.Reason = req.Reason.String()
	}
	// Not LockDirectory: a status that held the lock for a moment would be the process
	// a renew command signals.
	if pid, err := st.DirectoryHolder(); err == nil && st.VerifyHolder(pid) == nil {
		p.HolderPID = pid
	}
	return p, last
}

// revokedProblem is the status problem of a record whose certificate in service was
// revoked (its record or the store's revocation index says so); "" otherwise.
func revokedProblem(ctx context.Context, st *store.Store, rec *store.Certificate) string {
	if rec == nil || len(rec.CertPEM) == 0 {
		return ""
	}
	entry := revocationOf(rec, rec.CertPEM)
	if entry == nil {
		fp, err := acme.Fingerprint(rec.CertPEM)
		if err != nil {
			return ""
		}
		if entry, err = st.LoadRevocation(ctx, fp); err != nil {
			return ""
		}
	}
	return fmt.Sprintf("revoked at the CA (%s, serial %s, %s): never published again; a replacement is due",
		entry.Reason, entry.Serial, entry.RevokedAt.UTC().Format(time.RFC3339))
}
