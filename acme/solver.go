package acme

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"
)

// PropagationWaiter is implemented by solvers whose published challenge takes a while to
// become visible to the CA: DNS-01 records (acme/dns01). After Present, the engine calls
// WaitPropagation with the order's context and asks the CA to validate only once it
// returns nil. An error ends the attempt; the order stays journaled and the next attempt
// presents the challenge again.
type PropagationWaiter interface {
	WaitPropagation(ctx context.Context, domain, token, keyAuth string) error
}

// SequentialSolver is implemented by solvers that can hold only one challenge at a time:
// lego's rfc2136 provider replaces a name's TXT records on Present, and "*.example.com"
// and "example.com" share _acme-challenge.example.com. When Sequential returns true, the
// engine solves one authorization at a time (present, wait, validate, clean up) and
// pauses for the returned duration before publishing the next one.
type SequentialSolver interface {
	Sequential() (bool, time.Duration)
}

// CleanUpLeftovers removes, with the Solver, the DNS-01 challenges that an attempt left
// published for the order journaled under key (Record.Presented): what a killed process
// could not clean up. Each removed challenge is dropped from the journal; one that cannot
// be removed stays there for the next call, and the error says why. The daemon calls it at
// start for every journaled order; Obtain does the same when it resumes an order. Nothing
// journaled under key is not an error.
func (c *Client) CleanUpLeftovers(ctx context.Context, key string) error {
	unlock, err := c.locks.lock(ctx, key)
	if err != nil {
		return fmt.Errorf("acme: clean up challenges of request %s: %w", key, err)
	}
	defer unlock()

	rec, err := c.journal.Load(ctx, key)
	if errors.Is(err, ErrNoRecord) {
		return nil
	}

	if err != nil {
		return fmt.Errorf("acme: clean up challenges of request %s: %w", key, err)
	}

	return c.cleanUpLeftovers(ctx, c.log.With("request", key), rec)
}

// cleanUpLeftovers removes the challenges rec says are published.
func (c *Client) cleanUpLeftovers(ctx context.Context, log *slog.Logger, rec *Record) error {
	if len(rec.Presented) == 0 {
		return nil
	}

	log.Info("removing challenges an earlier attempt left published", "order", rec.OrderURL, "challenges", len(rec.Presented))

	if err := c.cleanUp(ctx, log, rec, slices.Clone(rec.Presented)); err != nil {
		return fmt.Errorf("acme: clean up challenges left by order %s: %w", rec.OrderURL, err)
	}

	return nil
}

// cleanUp removes the presented challenges with the Solver, whatever ctx's state: a
// passed deadline must not leave records behind (the Solver takes no context). Each one
// removed is dropped from rec.Presented, and rec is saved once; rec is nil when the order
// was forgotten meanwhile.
func (c *Client) cleanUp(ctx context.Context, log *slog.Logger, rec *Record, presented []PresentedChallenge) error {
	var errs []error

	removed := false

	for _, pc := range presented {
		if err := c.solver.CleanUp(pc.Domain, pc.Token, pc.KeyAuth); err != nil {
			log.Warn("challenge cleanup failed", "domain", pc.Domain, "err", err)
			errs = append(errs, err)

			continue
		}

		if rec != nil && slices.Contains(rec.Presented, pc) {
			rec.Presented = slices.DeleteFunc(rec.Presented, func(x PresentedChallenge) bool { return x == pc })
			removed = true
		}
	}

	if removed {
		if err := c.journal.Save(context.WithoutCancel(ctx), rec); err != nil {
			log.Warn("cannot journal the challenge cleanup; it will be repeated", "order", rec.OrderURL, "err", err)
			errs = append(errs, err)
		}
	}

	return errors.Join(errs...)
}
