package store_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/certfetch/certfetch/fetcher/store"
)

// How a daemon works on one certificate with a shared store: lock it or
// leave it to the instance that holds it, stop when the lease is lost, and
// write only under the lease.
func ExampleStore_TryLock() {
	dir, _ := os.MkdirTemp("", "certfetch-example")
	defer os.RemoveAll(dir)
	st, _ := store.Open(dir) // or store.OpenRedis / store.OpenEtcd
	defer st.Close()

	ctx := context.Background()
	lease, err := st.TryLock(ctx, "certificates/www", 30*time.Second)
	if errors.Is(err, store.ErrLocked) {
		fmt.Println("another instance works on it")
		return
	}
	if err != nil {
		fmt.Println(err)
		return
	}
	defer lease.Release(context.WithoutCancel(ctx))

	// Cancel the attempt when the lease is lost; fence every write with it.
	ctx, cancel := context.WithCancel(store.WithLease(ctx, lease))
	defer cancel()
	go func() {
		select {
		case <-lease.Lost():
			cancel()
		case <-ctx.Done():
		}
	}()
	// Re-read the record under the lock: another instance may have renewed
	// the certificate since this one last looked.
	rec, err := st.LoadCertificateContext(ctx, "www")
	if errors.Is(err, store.ErrNotFound) {
		rec = &store.Certificate{Name: "www"}
	}
	rec.LastError = ""
	if err := st.SaveCertificateContext(ctx, rec); err != nil {
		fmt.Println(err) // wraps store.ErrLeaseLost if the lock was lost
		return
	}
	fmt.Println("saved under lease", lease.Token())
	// Output: saved under lease 1
}
