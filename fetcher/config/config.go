// Package config loads certfetch's YAML configuration file strictly: an
// unknown key, a value of the wrong type or a bad value is an error naming the
// file, the line, the dotted key path and the problem, and all problems are
// reported at once (see Errors). The vocabulary follows Traefik's
// certificatesResolvers so a Traefik user recognises it.
//
// Relative paths in the file are resolved against the file's directory.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/certfetch/certfetch/acme"
	"github.com/certfetch/certfetch/fetcher/output"
)

// Defaults. Each is applied when its key is absent.
const (
	// DefaultTimeout is the order deadline: 30 s is what Traefik and lego
	// use, so a configuration moved from Traefik behaves the same until the
	// user raises it for a slow CA.
	DefaultTimeout = 30 * time.Second

	// DefaultStorage matches StateDirectory=certfetch in the systemd unit.
	DefaultStorage = "/var/lib/certfetch"

	// DefaultLockTTL is the lease an instance holds on a certificate while
	// it works on it (shared storage). It is renewed every third of it, so
	// 30 s costs one request per 10 s per order in flight, and a dead
	// instance's certificates wait at most 30 s for another instance.
	DefaultLockTTL = 30 * time.Second

	// MinLockTTL keeps renewals (every third of the TTL) far from the
	// per-operation timeouts of Redis and etcd.
	MinLockTTL = 3 * time.Second

	// DefaultGracePeriod is how long superseded PEM files stay on disk after
	// a new YAML file points elsewhere. Traefik throttles provider events
	// (2 s by default, configurable), then re-reads every referenced file; a
	// loaded or throttled reload that still reads the old YAML must find the
	// old PEMs. Ten minutes covers slow reloads and a raised throttle with a
	// wide margin, at the cost of a few kilobytes of disk.
	DefaultGracePeriod = 10 * time.Minute

	// MinGracePeriod rejects grace periods too short to outlive Traefik's
	// default 2 s event throttle plus the reload that follows it.
	MinGracePeriod = 5 * time.Second

	// DefaultRemainingFraction renews a certificate when a third of its
	// lifetime is left (30 of 90 days), the point certbot and Let's Encrypt
	// recommend: it leaves two retries' worth of time before expiry.
	DefaultRemainingFraction = 1.0 / 3.0

	// maxNameLength bounds certificate and resolver names. Names become file
	// names (<name>.yml, certs/<name>-<id>.crt and the temporary names of
	// atomic writes); 200 leaves 55 bytes of the 255-byte NAME_MAX for those
	// suffixes and prefixes.
	maxNameLength = 200
)

// Log formats.
const (
	LogFormatText = "text"
	LogFormatJSON = "json"
)

// KeyType names a key algorithm and size, spelled as in Traefik's keyType;
// the ACME engine's type, so a configured value goes to it unconverted.
type KeyType = acme.KeyType

// Key types accepted for accounts and certificates.
const (
	EC256   = acme.EC256
	EC384   = acme.EC384
	RSA2048 = acme.RSA2048
	RSA3072 = acme.RSA3072
	RSA4096 = acme.RSA4096
)

// keyTypes is the accepted spelling of every KeyType, in the order messages
// list them.
var keyTypes = []string{string(EC256), string(EC384), string(RSA2048), string(RSA3072), string(RSA4096)}

// Config is a validated configuration with every default applied.
type Config struct {
	// Timeout is the global order deadline; see EffectiveTimeout.
	Timeout time.Duration
	// Storage is where the private state (accounts, pending orders, issued
	// certificates) lives.
	Storage Storage
	// Resolvers by name; never empty.
	Resolvers map[string]*Resolver
	// Certificates in file order; names are unique.
	Certificates []*Certificate
	Output       Output
	Renewal      Renewal
	Metrics      Metrics
	Log          Log
	// Traefik is nil unless certificates are also discovered from Traefik's routers.
	Traefik *Traefik
}

// Storage is the state store: a local directory (one certfetch process at
// a time), or Redis or etcd that several instances share; exactly one of
// Directory, Redis and Etcd is set.
type Storage struct {
	Directory string
	Redis     *RedisConnection
	Etcd      *EtcdConnection
	// LockTTL is the lease on a certificate while an instance works on it.
	LockTTL time.Duration
}

// Output says where certificates are published: any combination of a
// directory for Traefik's file provider, a Redis server and an etcd cluster
// (Traefik's KV providers), at least one.
type Output struct {
	// File is the file-provider output; its Directory is empty when
	// output.file is not configured.
	File FileOutput
	// Redis is nil when output.redis is not configured.
	Redis *RedisConnection
	// Etcd is nil when output.etcd is not configured.
	Etcd *EtcdConnection
}

// HasFile reports whether output.file is configured.
func (o Output) HasFile() bool { return o.File.Directory != "" }

// FileOutput publishes for Traefik's file provider.
type FileOutput struct {
	// Directory is the folder Traefik's providers.file.directory watches.
	Directory string
	// GracePeriod is how long superseded PEM files are kept.
	GracePeriod time.Duration
	// GroupReadableKeys writes private keys 0640 instead of 0600, for a
	// Traefik that runs as another user in the directory's group.
	GroupReadableKeys bool
}

// Renewal says when certificates are renewed.
type Renewal struct {
	// ARI enables ACME Renewal Information (RFC 9773): the CA's suggested
	// window wins over RemainingFraction when the CA offers one.
	ARI bool
	// RemainingFraction renews when less than this fraction of the
	// certificate's lifetime is left; in (0, 1).
	RemainingFraction float64
}

// Metrics configures the Prometheus endpoint.
type Metrics struct {
	// Listen is host:port; empty disables the endpoint.
	Listen string
}

// Log configures log/slog.
type Log struct {
	Level  slog.Level
	Format string // LogFormatText or LogFormatJSON
}

// EffectiveTimeout returns the order deadline for cert: the certificate's
// own timeout, else its resolver's, else the global one (the most specific
// wins). cert must come from c.
func (c *Config) EffectiveTimeout(cert *Certificate) time.Duration {
	if cert.Timeout > 0 {
		return cert.Timeout
	}
	if r := c.Resolvers[cert.Resolver]; r != nil && r.Timeout > 0 {
		return r.Timeout
	}
	return c.Timeout
}

// ResolverNamed returns the resolver called name, or the only resolver when name is
// empty. The error says which names exist.
func (c *Config) ResolverNamed(name string) (*Resolver, error) {
	if name == "" {
		if len(c.Resolvers) != 1 {
			return nil, fmt.Errorf("name a resolver: %s", resolverNames(c.Resolvers))
		}
		for _, r := range c.Resolvers {
			return r, nil
		}
	}
	r, ok := c.Resolvers[name]
	if !ok {
		return nil, fmt.Errorf("unknown resolver %q (defined: %s)", name, resolverNames(c.Resolvers))
	}
	return r, nil
}

// Load reads and parses the configuration file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load config %s: %w", path, err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("load config %s: %w", path, err)
	}
	return parse(path, filepath.Dir(abs), data)
}

// Parse parses data as the configuration file filename (used in messages and
// to resolve relative paths). On failure the error is of type Errors.
func Parse(filename string, data []byte) (*Config, error) {
	return parse(filename, filepath.Dir(filename), data)
}

func parse(filename, dir string, data []byte) (*Config, error) {
	d := &decoder{file: filename, dir: dir}
	root := d.document(data)
	if root == nil {
		return nil, d.errs
	}
	cfg := d.config(root)
	if len(d.errs) > 0 {
		sort.SliceStable(d.errs, func(i, j int) bool { return d.errs[i].Line < d.errs[j].Line })
		return nil, d.errs
	}
	return cfg, nil
}

// yamlLine extracts the line from yaml.v3's "yaml: line N: problem" errors.
var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// document parses data as exactly one YAML document and returns its root
// node, or nil after recording the problem.
func (d *decoder) document(data []byte) *yaml.Node {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			d.fail(nil, "", "the file is empty")
		} else {
			d.yamlError(err)
		}
		return nil
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case err == nil:
		d.fail(&extra, "", "only one YAML document is allowed")
		return nil
	case !errors.Is(err, io.EOF):
		d.yamlError(err)
		return nil
	}
	if len(doc.Content) == 0 {
		d.fail(nil, "", "the file is empty")
		return nil
	}
	return doc.Content[0]
}

// yamlError records a syntax error. yaml.v3 numbers some parser errors from
// the line before the problem (it prints a 0-based context mark), so the line
// is where the problem is or the one before; README says so.
func (d *decoder) yamlError(err error) {
	m := yamlLine.FindStringSubmatch(err.Error())
	if m == nil {
		d.fail(nil, "", "invalid YAML: %s", strings.TrimPrefix(err.Error(), "yaml: "))
		return
	}
	line, _ := strconv.Atoi(m[1]) // the pattern guarantees digits
	d.errs = append(d.errs, &Error{File: d.file, Line: line, Problem: "invalid YAML: " + m[2]})
}

// config decodes the root mapping. Sections are decoded in dependency order
// (resolvers before the certificates that name them), not file order.
func (d *decoder) config(root *yaml.Node) *Config {
	cfg := &Config{
		Timeout: DefaultTimeout,
		Storage: Storage{Directory: DefaultStorage, LockTTL: DefaultLockTTL},
		Renewal: Renewal{ARI: true, RemainingFraction: DefaultRemainingFraction},
		Log:     Log{Level: slog.LevelInfo, Format: LogFormatText},
	}
	m, ok := d.mapping(root, "", "timeout", "storage", "resolvers", "certificates", "output", "renewal", "metrics", "log", "traefik")
	if !ok {
		return cfg
	}
	if f := m.get("timeout"); f != nil {
		cfg.Timeout, _ = d.duration(f.value, f.path)
	}
	if f := m.get("storage"); f != nil {
		cfg.Storage = d.storage(f)
	}
	if f := m.require(d, "resolvers"); f != nil {
		cfg.Resolvers = d.resolvers(f)
	}
	if f := m.get("certificates"); f != nil {
		cfg.Certificates = d.certificates(f, cfg.Resolvers)
	}
	if f := m.require(d, "output"); f != nil {
		cfg.Output = d.output(f, cfg.Storage.Directory)
		d.separateKeySpaces(f, cfg.Storage, cfg.Output)
	}
	if f := m.get("renewal"); f != nil {
		d.renewal(f, &cfg.Renewal)
	}
	if f := m.get("metrics"); f != nil {
		if mm, ok := d.mapping(f.value, f.path, "listen"); ok {
			if l := mm.get("listen"); l != nil {
				cfg.Metrics.Listen, _ = d.address(l.value, l.path)
			}
		}
	}
	if f := m.get("log"); f != nil {
		d.log(f, &cfg.Log)
	}
	if f := m.get("traefik"); f != nil {
		cfg.Traefik = d.traefik(f)
	}
	return cfg
}

func (d *decoder) output(f *field, storage string) Output {
	out := Output{File: FileOutput{GracePeriod: DefaultGracePeriod}}
	m, ok := d.mapping(f.value, f.path, "file", "redis", "etcd")
	if !ok {
		return out
	}
	if r := m.get("redis"); r != nil {
		out.Redis = d.redisConnection(r, output.DefaultRootKey)
	}
	if e := m.get("etcd"); e != nil {
		out.Etcd = d.etcdConnection(e, output.DefaultRootKey)
	}
	ff := m.get("file")
	if ff == nil {
		if out.Redis == nil && out.Etcd == nil {
			d.fail(f.value, f.path, "configure at least one of file, redis or etcd")
		}
		return out
	}
	fm, ok := d.mapping(ff.value, ff.path, "directory", "gracePeriod", "groupReadableKeys")
	if !ok {
		return out
	}
	if g := fm.get("groupReadableKeys"); g != nil {
		out.File.GroupReadableKeys, _ = d.boolean(g.value, g.path)
	}
	if g := fm.get("gracePeriod"); g != nil {
		if v, ok := d.duration(g.value, g.path); ok {
			if v < MinGracePeriod {
				d.fail(g.value, g.path, "must be at least %s so Traefik's reload can still read the old files, got %s", MinGracePeriod, v)
			}
			out.File.GracePeriod = v
		}
	}
	dir := fm.require(d, "directory")
	if dir == nil {
		return out
	}
	out.File.Directory, ok = d.path(dir.value, dir.path)
	if ok && storage != "" && overlap(out.File.Directory, storage) {
		d.fail(dir.value, dir.path, "must be separate from storage (%s): Traefik reads this directory, the state directory holds private keys", storage)
	}
	return out
}

// storage decodes `storage`: a directory path (the short form), or a
// mapping with exactly one of directory, redis or etcd, and lockTTL.
func (d *decoder) storage(f *field) Storage {
	st := Storage{LockTTL: DefaultLockTTL}
	if f.value.Kind == yaml.ScalarNode {
		st.Directory, _ = d.path(f.value, f.path)
		return st
	}
	m, ok := d.mapping(f.value, f.path, "directory", "redis", "etcd", "lockTTL")
	if !ok {
		return st
	}
	var set []string
	if x := m.get("directory"); x != nil {
		st.Directory, _ = d.path(x.value, x.path)
		set = append(set, "directory")
	}
	if x := m.get("redis"); x != nil {
		st.Redis = d.redisConnection(x, DefaultStorageRootKey)
		set = append(set, "redis")
	}
	if x := m.get("etcd"); x != nil {
		st.Etcd = d.etcdConnection(x, DefaultStorageRootKey)
		set = append(set, "etcd")
	}
	d.exactlyOne(f, set, "directory", "redis", "etcd")
	if x := m.get("lockTTL"); x != nil {
		if v, ok := d.duration(x.value, x.path); ok {
			if v < MinLockTTL {
				d.fail(x.value, x.path, "must be at least %s, got %s", MinLockTTL, v)
			}
			st.LockTTL = v
		}
	}
	return st
}

// separateKeySpaces rejects a storage rootKey that Traefik's KV provider
// would read: Traefik lists every key that starts with its rootKey, and the
// state holds private keys.
func (d *decoder) separateKeySpaces(f *field, st Storage, out Output) {
	check := func(kind string, storageRoot, outputRoot string) {
		if strings.HasPrefix(storageRoot, outputRoot) {
			d.fail(f.value, "storage."+kind+".rootKey", "%q starts with output.%s.rootKey %q: Traefik would read certfetch's private keys", storageRoot, kind, outputRoot)
		}
	}
	if st.Redis != nil && out.Redis != nil {
		check("redis", st.Redis.RootKey, out.Redis.RootKey)
	}
	if st.Etcd != nil && out.Etcd != nil {
		check("etcd", st.Etcd.RootKey, out.Etcd.RootKey)
	}
}

// overlap reports whether one of the directories a and b is the other or below it, as
// written or after resolving the symbolic links of their existing parts (a symlink from
// the output directory into the state directory must not get past the check).
func overlap(a, b string) bool {
	ra, rb := resolveExisting(a), resolveExisting(b)
	return within(a, b) || within(b, a) || within(ra, rb) || within(rb, ra)
}

// within reports whether path is dir or below it; both are clean.
func within(path, dir string) bool {
	rel, err := filepath.Rel(dir, path)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

// resolveExisting returns the clean absolute path with the symbolic links of its longest
// existing prefix resolved, a dangling link included (the rest may not exist yet:
// certfetch creates it).
func resolveExisting(path string) string { return resolveLinks(path, 0) }

// maxLinks bounds the symbolic links followed, as the kernel does (ELOOP after 40).
const maxLinks = 40

func resolveLinks(path string, links int) string {
	rest := ""
	for p := path; ; {
		if fi, err := os.Lstat(p); err == nil {
			if target, err := os.Readlink(p); err == nil && fi.Mode()&os.ModeSymlink != 0 && links < maxLinks {
				if !filepath.IsAbs(target) {
					target = filepath.Join(filepath.Dir(p), target)
				}
				return resolveLinks(filepath.Join(target, rest), links+1)
			}
			if resolved, err := filepath.EvalSymlinks(p); err == nil {
				return filepath.Join(resolved, rest)
			}
			return filepath.Join(p, rest)
		}
		parent := filepath.Dir(p)
		if parent == p {
			return path
		}
		rest = filepath.Join(filepath.Base(p), rest)
		p = parent
	}
}

func (d *decoder) renewal(f *field, r *Renewal) {
	m, ok := d.mapping(f.value, f.path, "ari", "remainingFraction")
	if !ok {
		return
	}
	if a := m.get("ari"); a != nil {
		r.ARI, _ = d.boolean(a.value, a.path)
	}
	if rf := m.get("remainingFraction"); rf != nil {
		r.RemainingFraction, _ = d.fraction(rf.value, rf.path)
	}
}

func (d *decoder) log(f *field, l *Log) {
	m, ok := d.mapping(f.value, f.path, "level", "format")
	if !ok {
		return
	}
	if lv := m.get("level"); lv != nil {
		if s, ok := d.oneOf(lv.value, lv.path, "debug", "info", "warn", "error"); ok {
			_ = l.Level.UnmarshalText([]byte(s)) // every allowed spelling is valid for slog
		}
	}
	if fm := m.get("format"); fm != nil {
		l.Format, _ = d.oneOf(fm.value, fm.path, LogFormatText, LogFormatJSON)
	}
}
