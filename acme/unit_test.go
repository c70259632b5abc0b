package acme

import (
	"context"
	"testing"
	"time"

	"github.com/go-acme/lego/v4/acme"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestPollDelay(t *testing.T) {
	t.Parallel()

	tests := []struct {
		desc       string
		retryAfter time.Duration
		attempt    int
		want       time.Duration
	}{
		{desc: "Retry-After honoured", retryAfter: 5 * time.Second, attempt: 7, want: 5 * time.Second},
		{desc: "tiny Retry-After raised to the floor", retryAfter: time.Millisecond, want: minPoll},
		{desc: "huge Retry-After capped", retryAfter: 24 * time.Hour, want: maxPoll},
		{desc: "no Retry-After, first poll", want: firstBlindPoll},
		{desc: "no Retry-After, doubling", attempt: 2, want: 4 * firstBlindPoll},
		{desc: "no Retry-After, capped", attempt: 50, want: maxBlindPoll},
	}

	for _, test := range tests {
		t.Run(test.desc, func(t *testing.T) {
			t.Parallel()
			assert.Equal(t, test.want, pollDelay(test.retryAfter, test.attempt))
		})
	}
}

func TestDeadOrder(t *testing.T) {
	t.Parallel()

	now := time.Date(2026, 11, 27, 5, 0, 0, 0, time.UTC)
	past, future := "2026-11-26T05:00:00Z", "2026-11-28T05:00:00Z"

	tests := []struct {
		desc    string
		status  string
		expires string
		want    bool
	}{
		{desc: "pending, expires later", status: acme.StatusPending, expires: future, want: false},
		{desc: "pending, expired", status: acme.StatusPending, expires: past, want: true},
		{desc: "processing, expired", status: acme.StatusProcessing, expires: past, want: true},
		{desc: "ready, no expiry", status: acme.StatusReady, want: false},
		{desc: "ready, unparsable expiry: let the CA decide", status: acme.StatusReady, expires: "tomorrow", want: false},
		{desc: "valid, expired: the certificate is still there", status: acme.StatusValid, expires: past, want: false},
		{desc: "invalid", status: acme.StatusInvalid, expires: future, want: true},
	}

	for _, test := range tests {
		t.Run(test.desc, func(t *testing.T) {
			t.Parallel()
			assert.Equal(t, test.want, dead(acme.Order{Status: test.status, Expires: test.expires}, now))
		})
	}
}

func TestRequestKey(t *testing.T) {
	t.Parallel()

	base := Request{Names: []string{"a.example.com", "b.example.com"}, Profile: "default"}

	tests := []struct {
		desc string
		req  Request
		same bool
	}{
		{desc: "names in another order and case", req: Request{Names: []string{"B.example.com", "a.example.com"}, Profile: "default"}, same: true},
		{desc: "repeated name", req: Request{Names: []string{"a.example.com", "b.example.com", "a.example.com"}, Profile: "default"}, same: true},
		{desc: "explicit default key type", req: Request{Names: base.Names, KeyType: EC256, Profile: "default"}, same: true},
		{desc: "preferred chain and replaces do not count", req: Request{Names: base.Names, Profile: "default", PreferredChain: "Root X", Replaces: "aki.serial"}, same: true},
		{desc: "other key type", req: Request{Names: base.Names, KeyType: RSA2048, Profile: "default"}},
		{desc: "other profile", req: Request{Names: base.Names, Profile: "shortlived"}},
		{desc: "other names", req: Request{Names: []string{"a.example.com"}, Profile: "default"}},
	}

	for _, test := range tests {
		t.Run(test.desc, func(t *testing.T) {
			t.Parallel()

			assert.Len(t, test.req.Key(), 32)

			if test.same {
				assert.Equal(t, base.Key(), test.req.Key())
			} else {
				assert.NotEqual(t, base.Key(), test.req.Key())
			}
		})
	}
}

func TestRequestValidate(t *testing.T) {
	t.Parallel()

	tests := []struct {
		desc    string
		req     Request
		wantErr string
	}{
		{desc: "valid", req: Request{Names: []string{"a.example.com"}, KeyType: RSA4096}},
		{desc: "no names", req: Request{}, wantErr: "no names"},
		{desc: "blank name", req: Request{Names: []string{"a.example.com", " "}}, wantErr: "empty name"},
		{desc: "unknown key type", req: Request{Names: []string{"a.example.com"}, KeyType: "ED25519"}, wantErr: "unknown key type"},
	}

	for _, test := range tests {
		t.Run(test.desc, func(t *testing.T) {
			t.Parallel()

			err := test.req.validate()
			if test.wantErr == "" {
				require.NoError(t, err)
			} else {
				require.ErrorContains(t, err, test.wantErr)
			}
		})
	}
}

func TestMemoryJournal(t *testing.T) {
	t.Parallel()

	ctx := context.Background()
	j := NewMemoryJournal()

	_, err := j.Load(ctx, "k")
	require.ErrorIs(t, err, ErrNoRecord)

	rec := &Record{Key: "k", OrderURL: "https://ca/order/1"}
	require.NoError(t, j.Save(ctx, rec))

	rec.OrderURL = "changed after Save"

	got, err := j.Load(ctx, "k")
	require.NoError(t, err)
	assert.Equal(t, "https://ca/order/1", got.OrderURL, "the journal keeps its own copy")

	require.NoError(t, j.Delete(ctx, "k"))
	require.NoError(t, j.Delete(ctx, "k"), "deleting a missing record is not an error")

	_, err = j.Load(ctx, "k")
	require.ErrorIs(t, err, ErrNoRecord)
}

func TestKeyLocks(t *testing.T) {
	t.Parallel()

	var l keyLocks

	unlock, err := l.lock(context.Background(), "k")
	require.NoError(t, err)

	other, err := l.lock(context.Background(), "other")
	require.NoError(t, err, "another key is independent")
	other()

	cancelled, cancel := context.WithCancel(context.Background())
	cancel()

	_, err = l.lock(cancelled, "k")
	require.ErrorIs(t, err, context.Canceled, "a held key waits until ctx ends")

	acquired := make(chan func())

	go func() {
		second, err := l.lock(context.Background(), "k")
		assert.NoError(t, err)
		acquired <- second
	}()

	unlock()
	(<-acquired)()
}
