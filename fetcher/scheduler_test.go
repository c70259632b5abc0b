package fetcher

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// visits records the scheduler's calls.
type visits struct {
	mu      sync.Mutex
	count   map[string]int
	removed []string
	// hold, when set for a name, blocks its visits until the channel is closed.
	hold map[string]chan struct{}
	// started receives a name each time its visit starts.
	started chan string
	// held receives a name each time its visit blocks on its hold.
	held chan string
}

func newVisits() *visits {
	return &visits{count: map[string]int{}, hold: map[string]chan struct{}{}, started: make(chan string, 1000), held: make(chan string, 1000)}
}

func (v *visits) visit(ctx context.Context, name string) time.Time {
	v.started <- name

	v.mu.Lock()
	v.count[name]++
	hold := v.hold[name]
	v.mu.Unlock()

	if hold != nil {
		v.held <- name
		select {
		case <-hold:
		case <-ctx.Done():
		}
	}

	return time.Now().Add(10 * time.Millisecond)
}

func (v *visits) remove(_ context.Context, name string) {
	v.mu.Lock()
	defer v.mu.Unlock()

	v.removed = append(v.removed, name)
}

func (v *visits) snapshot() (map[string]int, []string) {
	v.mu.Lock()
	defer v.mu.Unlock()

	counts := map[string]int{}
	for k, n := range v.count {
		counts[k] = n
	}

	return counts, append([]string(nil), v.removed...)
}

// waitHeld waits until a visit of name blocks on its hold.
func (v *visits) waitHeld(t *testing.T, name string) {
	t.Helper()

	timeout := time.After(10 * time.Second)

	for {
		select {
		case got := <-v.held:
			if got == name {
				return
			}
		case <-timeout:
			t.Fatalf("no visit of %s blocked on its hold", name)
		}
	}
}

// waitStart waits until name's visit starts n more times.
func (v *visits) waitStart(t *testing.T, name string, n int) {
	t.Helper()

	timeout := time.After(10 * time.Second)

	for n > 0 {
		select {
		case got := <-v.started:
			if got == name {
				n--
			}
		case <-timeout:
			t.Fatalf("%s was not visited", name)
		}
	}
}

func startScheduler(t *testing.T, v *visits) *scheduler {
	t.Helper()

	s := newScheduler(time.Now, v.visit, v.remove)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})

	go func() {
		s.run(ctx)
		close(done)
	}()

	t.Cleanup(func() {
		cancel()
		<-done
	})

	return s
}

// TestSchedulerOneCertificateDoesNotHoldUpAnother: while one certificate's visit is
// stuck (an order waiting on a slow CA), another keeps being visited at its own times.
func TestSchedulerOneCertificateDoesNotHoldUpAnother(t *testing.T) {
	t.Parallel()

	v := newVisits()
	release := make(chan struct{})
	v.hold["slow"] = release

	s := startScheduler(t, v)
	s.set(context.Background(), []string{"slow", "quick"})

	v.waitStart(t, "quick", 5)

	counts, _ := v.snapshot()
	assert.Equal(t, 1, counts["slow"], "one visit of the slow certificate at a time")
	close(release)
	v.waitStart(t, "slow", 1)
}

// TestSchedulerRemovesAfterTheVisit: a certificate dropped while its visit runs is handed
// to removed only when that visit ended; one dropped at rest at once; one dropped and
// added back during its visit is not removed and is visited again.
func TestSchedulerRemovesAfterTheVisit(t *testing.T) {
	t.Parallel()

	v := newVisits()
	release := make(chan struct{})
	v.hold["busy"] = release

	s := startScheduler(t, v)
	ctx := context.Background()
	s.set(ctx, []string{"busy", "idle", "back"})
	v.waitStart(t, "busy", 1)
	v.waitStart(t, "idle", 1)

	v.mu.Lock()
	backRelease := make(chan struct{})
	v.hold["back"] = backRelease
	v.mu.Unlock()
	// Not waitStart: the starts of "back" before the hold was set are still queued.
	v.waitHeld(t, "back")

	s.set(ctx, []string{})

	// "idle" is removed at once, or right after its visit if one just started (it is
	// visited every 10 ms); the held ones are not.
	require.Eventually(t, func() bool {
		_, removed := v.snapshot()
		return len(removed) > 0
	}, 10*time.Second, time.Millisecond)
	_, removed := v.snapshot()
	assert.ElementsMatch(t, []string{"idle"}, removed, "only the certificate at rest is removed at once")

	s.set(ctx, []string{"back"})
	close(backRelease)
	v.waitStart(t, "back", 1)

	close(release)
	require.Eventually(t, func() bool {
		_, removed := v.snapshot()
		return len(removed) == 2
	}, 10*time.Second, 5*time.Millisecond)

	_, removed = v.snapshot()
	assert.ElementsMatch(t, []string{"idle", "busy"}, removed, "the busy one after its visit; the one added back never")
}

// TestSchedulerDueDuringVisit: a certificate made due while its visit runs (its
// configuration changed) is visited again as soon as that visit ends.
func TestSchedulerDueDuringVisit(t *testing.T) {
	t.Parallel()

	v := newVisits()
	release := make(chan struct{})
	v.hold["c"] = release

	s := newScheduler(time.Now, func(ctx context.Context, name string) time.Time {
		v.visit(ctx, name)

		return time.Now().Add(time.Hour) // not due again by itself
	}, v.remove)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)

	go s.run(ctx)

	s.set(ctx, []string{"c"})
	v.waitStart(t, "c", 1)
	s.due("c")
	close(release)
	v.waitStart(t, "c", 1)
}
