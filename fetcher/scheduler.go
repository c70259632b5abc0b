package fetcher

import (
	"container/heap"
	"context"
	"sync"
	"time"
)

// maxIdle caps the scheduler's sleep, so that a clock jump (a suspended VM, an NTP step)
// costs at most this much delay before every certificate is looked at again.
const maxIdle = time.Hour

// scheduler keeps, for every configured certificate, the time it is next due and starts a
// visit of it at that time. Each certificate has its own time: one certificate's order
// deadline, back-off or lease wait never delays another's visit. At most one visit per
// certificate runs at a time, and at most maxVisits in all (the per-resolver order slots
// bound the orders among them).
//
// A certificate removed from the set while its visit runs is handed to removed once that
// visit ended, never before: a visit in flight cannot publish a certificate after it was
// withdrawn. Safe for concurrent use.
type scheduler struct {
	now     func() time.Time
	visit   func(ctx context.Context, name string) time.Time
	removed func(ctx context.Context, name string)
	slots   chan struct{} // visits running

	mu      sync.Mutex
	entries map[string]*entry
	queue   dueQueue
	wake    chan struct{}
	running sync.WaitGroup
}

// entry is one certificate's place in the scheduler.
type entry struct {
	name    string
	due     time.Time
	index   int  // position in queue; -1 while not queued
	busy    bool // a visit runs
	again   bool // made due while busy: visit again as soon as the visit ends
	dropped bool // removed from the set
}

// maxVisits bounds the visits running at once. A visit at rest is a store read and an
// output check; this keeps a start-up with thousands of certificates from opening
// thousands of store connections at once while still overlapping their latencies.
const maxVisits = 64

func newScheduler(now func() time.Time, visit func(context.Context, string) time.Time, removed func(context.Context, string)) *scheduler {
	return &scheduler{
		now:     now,
		visit:   visit,
		removed: removed,
		slots:   make(chan struct{}, maxVisits),
		entries: map[string]*entry{},
		wake:    make(chan struct{}, 1),
	}
}

// set makes names the scheduled certificates: new ones are due at once, ones not in names
// are dropped (handed to removed when no visit of theirs runs), the others keep their time.
func (s *scheduler) set(ctx context.Context, names []string) {
	keep := make(map[string]bool, len(names))

	s.mu.Lock()

	for _, name := range names {
		keep[name] = true

		switch e := s.entries[name]; {
		case e == nil:
			e = &entry{name: name, due: s.now(), index: -1}
			s.entries[name] = e
			heap.Push(&s.queue, e)
		case e.dropped: // dropped while its visit runs, and back: visit it again after
			e.dropped, e.again = false, true
		}
	}

	var gone []string

	for name, e := range s.entries {
		if keep[name] {
			continue
		}

		e.dropped = true
		if e.index >= 0 {
			heap.Remove(&s.queue, e.index)
		}

		if !e.busy {
			delete(s.entries, name)
			gone = append(gone, name)
		}
	}

	s.mu.Unlock()

	for _, name := range gone {
		s.removed(ctx, name)
	}

	s.poke()
}

// due makes the named certificates due at once (their configuration changed).
func (s *scheduler) due(names ...string) {
	s.mu.Lock()

	for _, name := range names {
		e := s.entries[name]

		switch {
		case e == nil || e.dropped:
		case e.busy:
			e.again = true
		default:
			e.due = s.now()
			heap.Fix(&s.queue, e.index)
		}
	}

	s.mu.Unlock()
	s.poke()
}

func (s *scheduler) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// next reports when the earliest scheduled certificate is due; ok is false when none is.
func (s *scheduler) next() (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()

	if len(s.queue) == 0 {
		return time.Time{}, false
	}

	return s.queue[0].due, true
}

// run starts every visit that is due, sleeps until the next one is, and returns when ctx
// ends, after the visits in flight returned (they see ctx too).
func (s *scheduler) run(ctx context.Context) {
	defer s.running.Wait()

	for {
		s.startDue(ctx)

		wait := maxIdle
		if due, ok := s.next(); ok {
			wait = min(max(due.Sub(s.now()), 0), maxIdle)
		}

		timer := time.NewTimer(wait)

		select {
		case <-ctx.Done():
			timer.Stop()

			return
		case <-timer.C:
		case <-s.wake:
			timer.Stop()
		}
	}
}

// startDue pops every certificate that is due and starts its visit.
func (s *scheduler) startDue(ctx context.Context) {
	s.mu.Lock()
	defer s.mu.Unlock()

	now := s.now()
	for len(s.queue) > 0 && !s.queue[0].due.After(now) {
		e := heap.Pop(&s.queue).(*entry)
		e.busy = true

		s.running.Add(1)

		go s.runVisit(ctx, e)
	}
}

// runVisit runs one visit of e within the visit bound, then queues e at the time the
// visit returned (at once when it was made due meanwhile), or hands a dropped e to removed.
func (s *scheduler) runVisit(ctx context.Context, e *entry) {
	defer s.running.Done()

	var next time.Time

	select {
	case s.slots <- struct{}{}:
		next = s.visit(ctx, e.name)
		<-s.slots
	case <-ctx.Done():
	}

	s.mu.Lock()
	e.busy = false
	dropped := e.dropped

	if dropped {
		delete(s.entries, e.name)
	} else {
		if e.again {
			next, e.again = s.now(), false
		}

		e.due = next
		heap.Push(&s.queue, e)
	}
	s.mu.Unlock()

	if dropped {
		s.removed(context.WithoutCancel(ctx), e.name)
	}

	s.poke()
}

// dueQueue is a min-heap of entries by due time (container/heap).
type dueQueue []*entry

func (q dueQueue) Len() int           { return len(q) }
func (q dueQueue) Less(i, j int) bool { return q[i].due.Before(q[j].due) }

func (q dueQueue) Swap(i, j int) {
	q[i], q[j] = q[j], q[i]
	q[i].index, q[j].index = i, j
}

func (q *dueQueue) Push(x any) {
	e := x.(*entry)
	e.index = len(*q)
	*q = append(*q, e)
}

func (q *dueQueue) Pop() any {
	old := *q
	e := old[len(old)-1]
	old[len(old)-1] = nil
	e.index = -1
	*q = old[:len(old)-1]

	return e
}
