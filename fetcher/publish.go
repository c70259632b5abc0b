package fetcher

import (
	"context"
	"crypto/sha256"
	"fmt"
	"reflect"
	"sync"

	"github.com/certfetch/certfetch/fetcher/config"
	"github.com/certfetch/certfetch/fetcher/output"
)

// outputs is the daemon's publisher and what this process published through it: a
// certificate published once is not handed to the outputs again at every visit. The
// record starts empty, so after a start or an output change every certificate is
// published once more (the outputs skip what they already serve), and with a shared
// store every instance publishes the certificates the others issued. Safe for
// concurrent use.
type outputs struct {
	output.PublishCloser
	cfg config.Output // to tell whether a reload changed them

	mu    sync.Mutex
	certs map[string][sha256.Size]byte
}

func newOutputs(cfg config.Output, pub output.PublishCloser) *outputs {
	return &outputs{PublishCloser: pub, cfg: cfg, certs: map[string][sha256.Size]byte{}}
}

// same reports whether cfg would build the same outputs.
func (o *outputs) same(cfg config.Output) bool { return reflect.DeepEqual(o.cfg, cfg) }

// current reports whether certPEM is what this process last published as name.
func (o *outputs) current(name string, certPEM []byte) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	sum, ok := o.certs[name]
	return ok && sum == sha256.Sum256(certPEM)
}

// publish hands the pair to every output and remembers it.
func (o *outputs) publish(ctx context.Context, name string, certPEM, keyPEM []byte) error {
	if err := o.Publish(ctx, name, certPEM, keyPEM); err != nil {
		return err
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.certs[name] = sha256.Sum256(certPEM)
	return nil
}

// withdraw removes name from every output and forgets it.
func (o *outputs) withdraw(ctx context.Context, name string) error {
	o.mu.Lock()
	delete(o.certs, name)
	o.mu.Unlock()
	if err := o.Remove(ctx, name); err != nil {
		return fmt.Errorf("withdraw certificate %s: %w", name, err)
	}
	return nil
}
