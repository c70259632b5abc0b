package output

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/certfetch/certfetch/internal/atomicfile"
	"go.yaml.in/yaml/v3"
)

// File modes. They are set exactly, whatever the process umask.
const (
	// dirMode: Traefik, usually another user, must list and read the
	// output directory and certs/.
	dirMode os.FileMode = 0o755
	// publicMode for certificates and the YAML files: public material.
	publicMode os.FileMode = 0o644
	// keyMode: only certfetch's user reads keys (enough when Traefik runs
	// as root or as the same user).
	keyMode os.FileMode = 0o600
	// groupKeyMode lets the directory's group (Traefik's) read keys; see
	// FileOptions.GroupReadableKeys.
	groupKeyMode os.FileMode = 0o640
)

// certsDirName is the subdirectory holding the PEM files. Traefik's file
// provider watches only the top level of its directory, so writing PEMs here
// triggers no reload; only the rename of <name>.yml does, after both PEMs
// are complete.
const certsDirName = "certs"

// idLength is how many hex digits of the certificate's SHA-256 name a pair:
// 64 bits make a collision between the few pairs that coexist under one name
// impossible in practice while keeping file names short.
const idLength = 16

// pemName matches "<name>-<id>.crt" and "<name>-<id>.key" in certs/.
var pemName = regexp.MustCompile(fmt.Sprintf(`^(.+)-[0-9a-f]{%d}\.(crt|key)$`, idLength))

// FileOptions configure a FileOutput.
type FileOptions struct {
	// Directory is the directory Traefik's file provider watches. It is
	// created (mode 0755) when missing; its parent must exist.
	Directory string
	// GracePeriod is how long superseded PEM files are kept for Traefik
	// reloads still reading the previous YAML.
	GracePeriod time.Duration
	// GroupReadableKeys writes keys 0640 instead of 0600, for a Traefik
	// running as another user that is a member of the directory's group
	// (make the directory setgid so new files inherit that group).
	GroupReadableKeys bool
	// Logger receives one line per publication, removal and pruned file;
	// nil means slog.Default().
	Logger *slog.Logger
}

// FileOutput publishes certificates for Traefik's file provider. For each
// certificate name it keeps <dir>/<name>.yml, a dynamic configuration with
// one tls.certificates entry pointing at <dir>/certs/<name>-<id>.crt and
// .key, where <id> derives from the pair's content. A new pair gets new PEM
// file names, written completely before the YAML is atomically replaced, so
// Traefik never pairs a new certificate with an old key.
//
// Superseded PEM files get their modification time set to the moment they
// were superseded; Prune deletes unreferenced files older than the grace
// period. This state lives in the file system, so it survives restarts.
//
// File system operations take milliseconds and are never interrupted
// halfway: FileOutput does not consult ctx.
type FileOutput struct {
	dir     string
	certs   string
	grace   time.Duration
	keyMode os.FileMode
	logger  *slog.Logger

	mu sync.Mutex // serialises Publish, Remove and Prune
}

var _ PublishCloser = (*FileOutput)(nil)

// NewFileOutput prepares the directories and returns the output.
func NewFileOutput(opts FileOptions) (*FileOutput, error) {
	if opts.GracePeriod < 0 {
		return nil, fmt.Errorf("file output %s: negative grace period %s", opts.Directory, opts.GracePeriod)
	}
	o := &FileOutput{
		dir:     filepath.Clean(opts.Directory),
		grace:   opts.GracePeriod,
		keyMode: keyMode,
		logger:  opts.Logger,
	}
	o.certs = filepath.Join(o.dir, certsDirName)
	if opts.GroupReadableKeys {
		o.keyMode = groupKeyMode
	}
	if o.logger == nil {
		o.logger = slog.Default()
	}
	for _, d := range []string{o.dir, o.certs} {
		if err := ensureDir(d); err != nil {
			return nil, fmt.Errorf("file output %s: %w", o.dir, err)
		}
	}
	return o, nil
}

// ensureDir creates dir with dirMode unless it exists. The mode is set
// exactly (Mkdir applies the umask), keeping a setgid bit inherited from the
// parent: it is what gives new files the group Traefik reads with. An
// existing directory is left as the administrator made it.
func ensureDir(dir string) error {
	err := os.Mkdir(dir, dirMode)
	if errors.Is(err, fs.ErrExist) {
		if fi, serr := os.Stat(dir); serr != nil || !fi.IsDir() {
			return fmt.Errorf("create directory %s: exists and is not a directory", dir)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("create directory %s: %w", dir, err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("create directory %s: %w", dir, err)
	}
	if err := os.Chmod(dir, dirMode|fi.Mode()&os.ModeSetgid); err != nil {
		return fmt.Errorf("create directory %s: %w", dir, err)
	}
	return atomicfile.SyncDir(filepath.Dir(dir))
}

// pair is the two files of one published certificate.
type pair struct {
	CertFile string `yaml:"certFile"`
	KeyFile  string `yaml:"keyFile"`
}

// dynamicConfig is the part of Traefik's dynamic configuration we write.
type dynamicConfig struct {
	TLS struct {
		Certificates []pair `yaml:"certificates"`
	} `yaml:"tls"`
}

// yamlHeader warns people off editing a file that is replaced on renewal.
const yamlHeader = "# Written by certfetch; replaced on every renewal. Do not edit.\n"

// Publish implements Publisher.
func (o *FileOutput) Publish(_ context.Context, name string, certPEM, keyPEM []byte) error {
	if err := checkPublication(name, certPEM, keyPEM); err != nil {
		return err
	}
	o.mu.Lock()
	defer o.mu.Unlock()

	// The certificate determines its (matching) key, so its hash names the
	// pair; republishing the same certificate rewrites the same files.
	sum := sha256.Sum256(certPEM)
	base := filepath.Join(o.certs, name+"-"+hex.EncodeToString(sum[:])[:idLength])
	next := pair{CertFile: base + ".crt", KeyFile: base + ".key"}
	previous, err := o.owned(name)
	if err != nil {
		return err
	}
	if previous != nil {
		served, _ := os.ReadFile(previous.CertFile) // unreadable: replaced
		if err := checkNotOlder(name, served, certPEM); err != nil {
			return err
		}
	}
	if previous != nil && *previous == next && exists(next.CertFile) && exists(next.KeyFile) {
		// Already in service (a restarted daemon publishes everything once
		// more): rewriting would only make Traefik reload for nothing.
		return nil
	}

	if err := atomicfile.Write(next.KeyFile, keyPEM, o.keyMode); err != nil {
		return fmt.Errorf("publish certificate %q: %w", name, err)
	}
	if err := atomicfile.Write(next.CertFile, certPEM, publicMode); err != nil {
		return fmt.Errorf("publish certificate %q: %w", name, err)
	}
	var doc dynamicConfig
	doc.TLS.Certificates = []pair{next}
	body, err := yaml.Marshal(&doc)
	if err != nil {
		return fmt.Errorf("publish certificate %q: encode dynamic configuration: %w", name, err)
	}
	// The temporary file goes to certs/, which Traefik does not watch: the
	// rename is then the only event Traefik sees, after the content is whole.
	if err := atomicfile.WriteVia(o.yamlPath(name), o.certs, append([]byte(yamlHeader), body...), publicMode); err != nil {
		return fmt.Errorf("publish certificate %q: %w", name, err)
	}
	if previous != nil && *previous != next {
		o.supersede(*previous)
	}
	o.logger.Info("certificate published", "name", name, "certFile", next.CertFile, "keyFile", next.KeyFile)
	return nil
}

// Remove implements Publisher. The PEM files stay for the grace period.
func (o *FileOutput) Remove(_ context.Context, name string) error {
	if err := checkName(name); err != nil {
		return fmt.Errorf("remove certificate %q: %w", name, err)
	}
	o.mu.Lock()
	defer o.mu.Unlock()

	previous, err := o.owned(name)
	if err != nil {
		return err
	}
	if err := os.Remove(o.yamlPath(name)); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("remove certificate %q: %w", name, err)
	}
	if err := atomicfile.SyncDir(o.dir); err != nil {
		return fmt.Errorf("remove certificate %q: %w", name, err)
	}
	if previous != nil {
		o.supersede(*previous)
	}
	o.logger.Info("certificate withdrawn", "name", name)
	return nil
}

// Prune implements Publisher: it deletes files in certs/ that no
// <name>.yml references and that were superseded (or, for leftovers of an
// interrupted write such as a temporary YAML file, written) at least the
// grace period before now.
func (o *FileOutput) Prune(_ context.Context, now time.Time) error {
	o.mu.Lock()
	defer o.mu.Unlock()

	referenced := map[string]bool{}
	seen := map[string]bool{}
	entries, err := os.ReadDir(o.certs)
	if err != nil {
		return fmt.Errorf("prune %s: %w", o.certs, err)
	}
	var stale []string
	for _, e := range entries {
		if m := pemName.FindStringSubmatch(e.Name()); m != nil && !seen[m[1]] {
			seen[m[1]] = true
			if p := o.published(m[1]); p != nil {
				referenced[p.CertFile], referenced[p.KeyFile] = true, true
			}
		}
	}
	for _, e := range entries {
		path := filepath.Join(o.certs, e.Name())
		if !referenced[path] && o.expired(e, now) {
			stale = append(stale, path)
		}
	}
	var errs []error
	for _, path := range stale {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
			continue
		}
		o.logger.Info("superseded file pruned", "path", path)
	}
	if len(stale) > 0 {
		errs = append(errs, atomicfile.SyncDir(o.certs))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("prune %s: %w", o.dir, err)
	}
	return nil
}

// Close implements PublishCloser; a FileOutput holds no connection.
func (o *FileOutput) Close() error { return nil }

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// expired reports whether the regular file e was last modified at least the
// grace period before now.
func (o *FileOutput) expired(e fs.DirEntry, now time.Time) bool {
	if !e.Type().IsRegular() {
		return false
	}
	info, err := e.Info()
	return err == nil && now.Sub(info.ModTime()) >= o.grace
}

// Published implements Publisher: the certificate file <name>.yml points at.
func (o *FileOutput) Published(_ context.Context, name string) ([]byte, error) {
	if err := checkName(name); err != nil {
		return nil, fmt.Errorf("read published certificate %q: %w", name, err)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	p, err := o.owned(name)
	if p == nil || err != nil {
		return nil, err
	}
	certPEM, err := os.ReadFile(p.CertFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read published certificate %q: %w", name, err)
	}
	return certPEM, nil
}

// Names implements Publisher: the <name>.yml files certfetch wrote (they start with its
// header); other files in the directory are the user's.
func (o *FileOutput) Names(context.Context) ([]string, error) {
	entries, err := os.ReadDir(o.dir)
	if err != nil {
		return nil, fmt.Errorf("list published certificates in %s: %w", o.dir, err)
	}
	var names []string
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".yml")
		if !ok || !e.Type().IsRegular() || checkName(name) != nil {
			continue
		}
		if ours, err := o.ownedFile(name); err == nil && ours {
			names = append(names, name)
		}
	}
	return names, nil
}

// ownedFile reports whether <name>.yml exists and was written by certfetch (it starts
// with yamlHeader); false, nil when it does not exist.
func (o *FileOutput) ownedFile(name string) (bool, error) {
	f, err := os.Open(o.yamlPath(name))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read %s: %w", o.yamlPath(name), err)
	}
	defer f.Close()
	head := make([]byte, len(yamlHeader))
	n, _ := io.ReadFull(f, head)
	if string(head[:n]) != yamlHeader {
		return false, fmt.Errorf("%s: %w", o.yamlPath(name), ErrNotOwned)
	}
	return true, nil
}

// owned returns the pair <name>.yml points at, nil when there is no such file, and
// ErrNotOwned when the file is not certfetch's. o.mu is held.
func (o *FileOutput) owned(name string) (*pair, error) {
	if ours, err := o.ownedFile(name); !ours {
		return nil, err
	}
	return o.published(name), nil
}

// published returns the pair <name>.yml points at, or nil when there is no
// such file. A file of certfetch's that cannot be read or parsed is logged
// and treated as absent: publishing replaces it.
func (o *FileOutput) published(name string) *pair {
	data, err := os.ReadFile(o.yamlPath(name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	var doc dynamicConfig
	if err == nil {
		err = yaml.Unmarshal(data, &doc)
	}
	if err == nil && len(doc.TLS.Certificates) != 1 {
		err = fmt.Errorf("want one tls.certificates entry, got %d", len(doc.TLS.Certificates))
	}
	if err != nil {
		o.logger.Warn("ignoring unreadable published configuration", "name", name, "err", err)
		return nil
	}
	return &doc.TLS.Certificates[0]
}

// supersede stamps the files of a pair that is no longer referenced with
// the current time, which starts its grace period. A failure only shortens
// the grace period, so it is logged, not returned.
func (o *FileOutput) supersede(p pair) {
	now := time.Now()
	for _, path := range []string{p.CertFile, p.KeyFile} {
		if err := os.Chtimes(path, now, now); err != nil && !errors.Is(err, fs.ErrNotExist) {
			o.logger.Warn("cannot mark superseded file", "path", path, "err", err)
		}
	}
}

func (o *FileOutput) yamlPath(name string) string {
	return filepath.Join(o.dir, name+".yml")
}

// checkName accepts plain file names that are not hidden, so a name can
// neither escape the directory nor collide with temporary files.
func checkName(name string) error {
	if name == "" || name != filepath.Base(name) || strings.HasPrefix(name, ".") {
		return fmt.Errorf("invalid name: must be a plain file name not starting with '.'")
	}
	return nil
}

// checkPublication is what every output checks before it publishes: a
// valid name and a key that matches the certificate.
func checkPublication(name string, certPEM, keyPEM []byte) error {
	err := checkName(name)
	if err == nil {
		_, err = tls.X509KeyPair(certPEM, keyPEM)
	}
	if err != nil {
		return fmt.Errorf("publish certificate %q: %w", name, err)
	}
	return nil
}
