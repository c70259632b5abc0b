package store_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/certfetch/certfetch/acme"
	"github.com/certfetch/certfetch/fetcher/store"
)

// TestRequestsAndRevocationsOnEveryBackend: one pending request per certificate (the
// second writer gets the first one back), deleted only by its ID, and revocations kept
// whatever lease the context holds.
func TestRequestsAndRevocationsOnEveryBackend(t *testing.T) {
	t.Parallel()
	for _, kind := range allKinds {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, kind)
			st := e.open(t, 5*time.Second)
			ctx := t.Context()

			req := &store.Request{ID: "one", Name: "www.example.test", Action: store.RequestRevoke,
				Reason: acme.ReasonKeyCompromise, Requested: time.Now().UTC().Round(0), Target: "ab"}
			created, pending, err := st.CreateRequest(ctx, req)
			require.NoError(t, err)
			require.True(t, created)
			assert.Nil(t, pending)

			other := *req
			other.ID, other.Action = "two", store.RequestRenew
			created, pending, err = e.open(t, 5*time.Second).CreateRequest(ctx, &other)
			require.NoError(t, err)
			assert.False(t, created, "one request per certificate")
			require.NotNil(t, pending)
			assert.Equal(t, *req, *pending, "the pending one comes back")

			all, err := st.Requests(ctx)
			require.NoError(t, err)
			require.Len(t, all, 1)
			require.NoError(t, st.DeleteRequest(ctx, req.Name, "two"), "another ID")
			_, err = st.LoadRequest(ctx, req.Name)
			require.NoError(t, err, "a request is deleted only by its own ID")
			require.NoError(t, st.DeleteRequest(ctx, req.Name, "one"))
			_, err = st.LoadRequest(ctx, req.Name)
			require.ErrorIs(t, err, store.ErrNotFound)
			require.NoError(t, st.DeleteRequest(ctx, req.Name, "one"), "deleting a missing request is no error")

			// A revocation is recorded even under a lease that is gone: the CA acted.
			lease, err := st.AcquireLease(ctx, "certificates/www.example.test", testTTL[kind])
			require.NoError(t, err)
			lctx, cancel := lease.Context(context.Background())
			defer cancel()
			require.NoError(t, lease.Release(ctx))
			rev := store.Revocation{SHA256: "0123abcd", PublicKeySHA256: "ef", Serial: "1f", Reason: acme.ReasonSuperseded,
				RevokedAt: time.Now().UTC().Round(0), Name: "www.example.test"}
			require.NoError(t, st.RecordRevocation(context.WithoutCancel(lctx), rev))
			got, err := e.open(t, 5*time.Second).LoadRevocation(ctx, "0123abcd")
			require.NoError(t, err)
			assert.Equal(t, rev, *got)
			_, err = st.LoadRevocation(ctx, "ffff")
			assert.ErrorIs(t, err, store.ErrNotFound)
		})
	}
}

// TestDirectoryHolder: the process holding the state directory writes its PID into the
// lock file; VerifyHolder accepts it while it holds the lock, refuses a PID that does not
// have the file open (as a PID from another PID namespace would be).
func TestDirectoryHolder(t *testing.T) {
	t.Parallel()
	st, err := store.Open(t.TempDir())
	require.NoError(t, err)
	_, err = st.DirectoryHolder()
	require.Error(t, err, "never locked")

	unlock, err := st.LockDirectory()
	require.NoError(t, err)
	pid, err := st.DirectoryHolder()
	require.NoError(t, err)
	assert.Equal(t, os.Getpid(), pid)
	require.NoError(t, st.VerifyHolder(pid))
	if _, err := os.Stat("/proc/self/fd"); err == nil {
		assert.ErrorContains(t, st.VerifyHolder(os.Getppid()), "does not have it open")
		assert.ErrorContains(t, st.VerifyHolder(1<<22+7), "no process 4194311 here")
	}

	require.NoError(t, unlock())
	pid, err = st.DirectoryHolder()
	require.NoError(t, err, "the PID stays in the file")
	if _, err := os.Stat("/proc/self/fd"); err == nil {
		assert.ErrorContains(t, st.VerifyHolder(pid), "does not have it open", "a holder that let go is not signalled")
	}
}
