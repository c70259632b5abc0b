package store_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/certfetch/certfetch/fetcher/store"
)

// How a daemon works on one certificate with a shared store: take its lease
// or leave it to the instance that holds it (until its lease runs out), stop
// when the lease is lost, and write only under the lease.
func ExampleStore_AcquireLease() {
	dir, _ := os.MkdirTemp("", "certfetch-example")
	defer os.RemoveAll(dir)
	st, _ := store.Open(dir) // or store.OpenRedis / store.OpenEtcd
	defer st.Close()

	ctx := context.Background()
	lease, err := st.AcquireLease(ctx, "certificates/www", 30*time.Second)
	var held *store.LeaseHeldError
	if errors.As(err, &held) {
		fmt.Println("another instance works on it; look again at", held.Expires)
		return
	}
	if err != nil {
		fmt.Println(err)
		return
	}
	defer lease.Release(context.WithoutCancel(ctx))

	// The lease's context ends when the lease is lost, and fences every
	// write made with it.
	ctx, cancel := lease.Context(ctx)
	defer cancel()
	// Re-read the record under the lease: another instance may have
	// renewed the certificate since this one last looked.
	rec, err := st.LoadCertificate(ctx, "www")
	if errors.Is(err, store.ErrNotFound) {
		rec = &store.Certificate{Name: "www"}
	}
	rec.LastError = ""
	if err := st.SaveCertificate(ctx, rec); err != nil {
		fmt.Println(err) // wraps store.ErrLeaseLost if the lease was lost
		return
	}
	fmt.Println("saved under lease", lease.Token())
	// Output: saved under lease 1
}
