package store_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/certfetch/certfetch/acme"
	"github.com/certfetch/certfetch/fetcher/store"
)

func TestLockDirectoryIsExclusive(t *testing.T) {
	t.Parallel()
	st, err := store.Open(t.TempDir())
	require.NoError(t, err)
	unlock, err := st.LockDirectory()
	require.NoError(t, err)
	_, err = st.LockDirectory()
	require.ErrorIs(t, err, store.ErrDirectoryLocked, "a second holder (flock is per open file) is refused")
	assert.NotErrorIs(t, err, store.ErrLeaseHeld)
	require.NoError(t, unlock())
	unlock, err = st.LockDirectory()
	require.NoError(t, err, "released")
	require.NoError(t, unlock())
}

func TestJournalRoundTripAndModes(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "state")
	st, err := store.Open(dir)
	require.NoError(t, err)
	j := st.Journal()
	ctx := context.Background()

	_, err = j.Load(ctx, "0123")
	require.ErrorIs(t, err, acme.ErrNoRecord)

	rec := &acme.Record{Key: "0123", Request: acme.Request{Names: []string{"a.example"}}, OrderURL: "https://ca/order/1",
		PrivateKeyPEM: "KEY", CSR: []byte{1, 2}, Created: time.Unix(1700000000, 0).UTC()}
	require.NoError(t, j.Save(ctx, rec))
	got, err := j.Load(ctx, "0123")
	require.NoError(t, err)
	assert.Equal(t, rec, got)
	orders, err := st.Orders(t.Context())
	require.NoError(t, err)
	assert.Equal(t, []*acme.Record{rec}, orders)

	for path, want := range map[string]os.FileMode{
		dir:                                    0o700,
		filepath.Join(dir, "orders"):           0o700,
		filepath.Join(dir, "orders/0123.json"): 0o600,
		filepath.Join(dir, "certificates"):     0o700,
	} {
		info, err := os.Stat(path)
		require.NoError(t, err)
		assert.Equal(t, want, info.Mode().Perm(), path)
	}

	require.NoError(t, j.Delete(ctx, "0123"))
	require.NoError(t, j.Delete(ctx, "0123"), "deleting a missing record is not an error")
	_, err = j.Load(ctx, "0123")
	require.ErrorIs(t, err, acme.ErrNoRecord)
}

func TestAccountsAreKeyedByCA(t *testing.T) {
	t.Parallel()
	st, err := store.Open(t.TempDir())
	require.NoError(t, err)
	require.NoError(t, st.SaveAccount(t.Context(), "r", &store.Account{Directory: "https://one/dir", KeyPEM: []byte("K1"), URL: "https://one/acct/1"}))
	got, err := st.LoadAccount(t.Context(), "r", "https://one/dir")
	require.NoError(t, err)
	assert.Equal(t, "https://one/acct/1", got.URL)
	_, err = st.LoadAccount(t.Context(), "r", "https://two/dir")
	require.ErrorIs(t, err, store.ErrNotFound, "a resolver pointed at another CA gets a new account")
}

func TestCertificateRecords(t *testing.T) {
	t.Parallel()
	st, err := store.Open(t.TempDir())
	require.NoError(t, err)
	_, err = st.LoadCertificate(t.Context(), "www")
	require.ErrorIs(t, err, store.ErrNotFound)
	want := &store.Certificate{Name: "www", Domains: []string{"www.example"}, Failures: 2, LastError: "boom",
		RetryAt: time.Unix(1700000000, 0).UTC()}
	require.NoError(t, st.SaveCertificate(t.Context(), want))
	got, err := st.LoadCertificate(t.Context(), "www")
	require.NoError(t, err)
	assert.Equal(t, want, got)
}
