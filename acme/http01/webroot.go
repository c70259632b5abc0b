package http01

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/certfetch/certfetch"
	"github.com/certfetch/certfetch/internal/atomicfile"
)

// Webroot publishes challenges as files under a web root, in the layout the plugin's
// webroot mode reads: <Dir>/.well-known/acme-challenge/<token>, mode 0644, containing
// exactly the key authorization. Directories it creates are 0755 whatever the umask:
// Traefik, which serves them, usually runs as another user. Safe for concurrent use with
// distinct tokens.
type Webroot struct {
	Dir string
}

// NewWebroot returns a Webroot publishing under dir.
func NewWebroot(dir string) *Webroot { return &Webroot{Dir: dir} }

func (w *Webroot) challengeDir() string {
	return filepath.Join(w.Dir, filepath.FromSlash(certfetch.ChallengePrefix))
}

// Present writes the key authorization atomically (atomicfile.Write), so a reader sees
// either no file or the whole answer, also after a crash. The temporary name starts with
// a dot, which is outside the token alphabet: the plugin never serves it.
func (w *Webroot) Present(domain, token, keyAuth string) error {
	if err := checkToken(domain, token); err != nil {
		return err
	}

	dir := w.challengeDir()
	if err := atomicfile.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("http01: webroot challenge for %s: %w", domain, err)
	}

	if err := atomicfile.Write(filepath.Join(dir, token), []byte(keyAuth), 0o644); err != nil {
		return fmt.Errorf("http01: webroot challenge for %s: %w", domain, err)
	}

	return nil
}

// CleanUp removes the token's file; a missing file is not an error.
func (w *Webroot) CleanUp(domain, token, _ string) error {
	if err := checkToken(domain, token); err != nil {
		return err
	}

	err := os.Remove(filepath.Join(w.challengeDir(), token))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("http01: remove webroot challenge for %s: %w", domain, err)
	}

	return nil
}
