//go:build e2e

package e2e

import (
	"archive/zip"
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/mod/module"
	"golang.org/x/mod/semver"
	modzip "golang.org/x/mod/zip"
)

// The plugin catalog's install path, end to end: with `experimental.plugins`
// Traefik downloads the plugin's Go module zip from
// https://plugins.traefik.io/public/download/<module>/<version>, asks
// .../public/validate/<module>/<version> with the zip's SHA-256 in
// X-Plugin-Hash, unzips it with golang.org/x/mod/zip and interprets it. The
// tests below stand in for plugins.traefik.io with a local TLS server that
// serves the module zip of the working tree, built as the Go module proxy
// builds it for a tag, and reach it the way Traefik reaches the real one: its
// plugin client is an http.Client{Timeout: 10s} with the default transport, so
// it dials through the CONNECT proxy in HTTPS_PROXY and trusts the roots in
// SSL_CERT_FILE. Nothing in Traefik is changed or mocked; only the network
// path to plugins.traefik.io is.

// catalogHost is the plugin catalog's host name, hard-coded in Traefik
// (pkg/plugins: pluginsURL).
const catalogHost = "plugins.traefik.io"

// moduleZip is the module zip of the working tree for one version.
type moduleZip struct {
	version module.Version
	data    []byte
	hash    string   // SHA-256 hex of data: what Traefik sends in X-Plugin-Hash
	files   []string // file paths inside the module (after "<module>@<version>/")
}

// buildModuleZip builds the Go module zip of the working tree for version,
// as the module proxy would serve it if the working tree were committed and
// tagged: the files git would commit (tracked or untracked, not ignored;
// their current content), minus what a module zip leaves out (nested
// modules such as test/yaegi and test/traefik, vendor directories,
// symbolic links), built by golang.org/x/mod/zip.CreateFromDir, which also
// enforces the module zip rules and limits while it writes.
//
// It fails the test if the zip breaks a limit the go command and the module
// proxy enforce: the zip file and the sum of its uncompressed files at most
// modzip.MaxZipFile (500 MiB), go.mod and LICENSE at most modzip.MaxGoMod and
// modzip.MaxLICENSE (16 MiB each), valid file names, no two names equal under
// case folding, no go.mod below the root. The module zip format has no limit
// on the number of files; the count is checked for consistency instead:
// every entry of the zip is a file of the tree that CheckZip accepts, and
// every file of the tree outside a nested module is in the zip.
func buildModuleZip(t testing.TB, version string) *moduleZip {
	t.Helper()
	require.True(t, semver.IsValid(version) && semver.Canonical(version) == version,
		"the catalog only serves strict-semver tags; %q is not one", version)
	m := module.Version{Path: moduleName, Version: version}

	tree := filepath.Join(t.TempDir(), "tree")
	copyCommittable(t, tree)
	checked, err := modzip.CheckDir(tree)
	require.NoError(t, err, "check the working tree as a module")
	require.NoError(t, checked.Err(), "the working tree breaks the module zip rules")
	// CheckDir names files by their path on disk.
	inTree := func(p string) string { return strings.TrimPrefix(filepath.ToSlash(p), filepath.ToSlash(tree)+"/") }
	var omitted []string
	for _, o := range checked.Omitted {
		omitted = append(omitted, inTree(o.Path)+": "+o.Err.Error())
	}
	nested := nestedModules(t, tree)
	var wantOmitted []string
	for _, dir := range nested {
		wantOmitted = append(wantOmitted, dir+": directory is in another module")
	}
	assert.ElementsMatch(t, wantOmitted, omitted,
		"what the module zip leaves out of the tree: the nested modules, nothing else")
	valid := make([]string, 0, len(checked.Valid))
	for _, v := range checked.Valid {
		valid = append(valid, inTree(v))
	}

	var buf bytes.Buffer
	require.NoError(t, modzip.CreateFromDir(&buf, m, tree), "create the module zip")
	zipPath := filepath.Join(t.TempDir(), version+".zip")
	require.NoError(t, os.WriteFile(zipPath, buf.Bytes(), 0o600))
	checkedZip, err := modzip.CheckZip(m, zipPath)
	require.NoError(t, err, "check the module zip")
	require.NoError(t, checkedZip.Err(), "the module zip breaks the module zip rules")

	// The limits, explicitly, besides what CreateFromDir and CheckZip enforce.
	zr, err := zip.NewReader(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	require.NoError(t, err)
	prefix := m.Path + "@" + m.Version + "/"
	var uncompressed uint64
	files := make([]string, 0, len(zr.File))
	for _, f := range zr.File {
		require.True(t, strings.HasPrefix(f.Name, prefix), "zip entry %q outside %s", f.Name, prefix)
		name := strings.TrimPrefix(f.Name, prefix)
		files = append(files, name)
		uncompressed += f.UncompressedSize64
		switch name {
		case "go.mod":
			assert.LessOrEqual(t, f.UncompressedSize64, uint64(modzip.MaxGoMod), "go.mod size limit")
		case "LICENSE":
			assert.LessOrEqual(t, f.UncompressedSize64, uint64(modzip.MaxLICENSE), "LICENSE size limit")
		}
	}
	assert.LessOrEqual(t, buf.Len(), modzip.MaxZipFile, "module zip size limit (compressed)")
	assert.LessOrEqual(t, uncompressed, uint64(modzip.MaxZipFile), "module zip size limit (uncompressed)")
	assert.ElementsMatch(t, valid, files, "the zip holds exactly the tree's files outside nested modules")
	inZip := make([]string, 0, len(checkedZip.Valid))
	for _, v := range checkedZip.Valid {
		inZip = append(inZip, strings.TrimPrefix(v, prefix))
	}
	assert.ElementsMatch(t, inZip, files, "CheckZip accepts every entry")

	for _, want := range []string{"go.mod", "plugin.go", ".traefik.yml", "LICENSE"} {
		assert.Contains(t, files, want, "the module zip must hold %s", want)
	}
	for _, f := range files {
		for _, dir := range nested {
			assert.False(t, strings.HasPrefix(f, dir+"/"), "%s belongs to the nested module %s and must not be in the zip", f, dir)
		}
	}

	sum := sha256.Sum256(buf.Bytes())
	t.Logf("module zip %s: %d bytes, %d files, %d bytes uncompressed (limits: %d bytes each; no file-count limit)",
		prefix, buf.Len(), len(files), uncompressed, modzip.MaxZipFile)
	return &moduleZip{version: m, data: buf.Bytes(), hash: hex.EncodeToString(sum[:]), files: files}
}

// nestedModules returns the directories below tree (slash-separated, relative) that
// hold a go.mod of their own: test/yaegi, test/traefik, test/stepca and any added later.
// A module nested in a nested module (test/traefik/rules) is not listed: the module zip
// leaves out the outer one whole.
func nestedModules(t testing.TB, tree string) []string {
	t.Helper()
	var dirs []string
	err := filepath.WalkDir(tree, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() || path == tree {
			return err
		}
		if _, err := os.Stat(filepath.Join(path, "go.mod")); err != nil {
			return nil //nolint:nilerr // no go.mod: an ordinary directory of the module
		}
		rel, err := filepath.Rel(tree, path)
		if err != nil {
			return err
		}
		dirs = append(dirs, filepath.ToSlash(rel))
		return filepath.SkipDir
	})
	require.NoError(t, err)
	require.NotEmpty(t, dirs, "the tree has nested modules (test/yaegi, test/traefik)")
	return dirs
}

// copyCommittable copies into dst the files a commit of the working tree
// would hold (git ls-files: tracked and untracked, not ignored), with their
// current content. Files deleted from the working tree are left out;
// symbolic links stay links (the module zip leaves them out, as for a tag).
func copyCommittable(t testing.TB, dst string) {
	t.Helper()
	cmd := exec.Command("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard")
	cmd.Dir = repoRoot
	out, err := cmd.Output()
	require.NoError(t, err, "git ls-files: the catalog test builds the module zip from the git working tree")
	copied := 0
	for _, name := range strings.Split(strings.TrimRight(string(out), "\x00"), "\x00") {
		src := filepath.Join(repoRoot, filepath.FromSlash(name))
		info, err := os.Lstat(src)
		if errors.Is(err, fs.ErrNotExist) {
			continue // deleted in the working tree, not yet in the index
		}
		require.NoError(t, err)
		target := filepath.Join(dst, filepath.FromSlash(name))
		require.NoError(t, os.MkdirAll(filepath.Dir(target), 0o755))
		switch {
		case info.Mode()&fs.ModeSymlink != 0:
			link, err := os.Readlink(src)
			require.NoError(t, err)
			require.NoError(t, os.Symlink(link, target))
		case info.Mode().IsRegular():
			data, err := os.ReadFile(src)
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(target, data, info.Mode().Perm()))
			copied++
		}
	}
	require.NotZero(t, copied, "git ls-files listed no files in %s", repoRoot)
}

// catalogRequest is one request the fake catalog answered.
type catalogRequest struct {
	endpoint string // "download" or "validate"
	module   string
	version  string
	hash     string // X-Plugin-Hash as received
	status   int    // the answer
}

// fakeCatalog stands in for plugins.traefik.io's two public endpoints:
//
//   - GET /public/download/<module>/<version> answers the module zip (200);
//     304 without a body when X-Plugin-Hash already names it (Traefik sends
//     the hash of the archive it has cached).
//   - GET /public/validate/<module>/<version> answers 200 only when
//     X-Plugin-Hash is the SHA-256 hex of the archive the catalog published
//     (acceptHash), else 403.
//
// Anything else, another module or another version is 404. It serves TLS
// for catalogHost with a certificate from its own throwaway root.
type fakeCatalog struct {
	zip *moduleZip
	// acceptHash is what validate accepts: zip.hash, unless a test makes the
	// catalog expect another archive than the one it serves.
	acceptHash string
	srv        *httptest.Server
	rootFile   string // PEM of the root that signs the server certificate

	mu       sync.Mutex
	requests []catalogRequest
}

// startFakeCatalog serves z for catalogHost.
func startFakeCatalog(t testing.TB, z *moduleZip, acceptHash string) *fakeCatalog {
	t.Helper()
	c := &fakeCatalog{zip: z, acceptHash: acceptHash}
	rootPEM, tlsConfig := catalogTLS(t)
	c.rootFile = filepath.Join(t.TempDir(), "catalog-root.pem")
	require.NoError(t, os.WriteFile(c.rootFile, rootPEM, 0o600))
	c.srv = httptest.NewUnstartedServer(c)
	c.srv.TLS = tlsConfig
	c.srv.StartTLS()
	t.Cleanup(c.srv.Close)
	return c
}

func (c *fakeCatalog) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	endpoint, rest, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/public/"), "/")
	modulePath, version := path.Split(rest)
	modulePath = strings.TrimSuffix(modulePath, "/")
	req := catalogRequest{endpoint: endpoint, module: modulePath, version: version, hash: r.Header.Get("X-Plugin-Hash")}
	known := r.Method == http.MethodGet && r.Host == catalogHost &&
		modulePath == c.zip.version.Path && version == c.zip.version.Version
	switch {
	case !known || (endpoint != "download" && endpoint != "validate"):
		req.status = http.StatusNotFound
		http.NotFound(w, r)
	case endpoint == "download" && req.hash == c.zip.hash:
		req.status = http.StatusNotModified
		w.WriteHeader(req.status)
	case endpoint == "download":
		req.status = http.StatusOK
		w.Header().Set("Content-Type", "application/zip")
		w.Header().Set("Content-Length", fmt.Sprint(len(c.zip.data)))
		_, _ = w.Write(c.zip.data)
	case req.hash == c.acceptHash:
		req.status = http.StatusOK
		_, _ = io.WriteString(w, "{}")
	default:
		req.status = http.StatusForbidden
		http.Error(w, "invalid hash", req.status)
	}
	c.mu.Lock()
	c.requests = append(c.requests, req)
	c.mu.Unlock()
}

// seen returns the requests answered so far, in order.
func (c *fakeCatalog) seen() []catalogRequest {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.requests)
}

// addr is the catalog's loopback host:port.
func (c *fakeCatalog) addr() string { return c.srv.Listener.Addr().String() }

// catalogTLS makes a throwaway root and a server certificate it signs for
// catalogHost, so that Traefik verifies the fake under the real name and
// trusts it only through SSL_CERT_FILE.
func catalogTLS(t testing.TB) ([]byte, *tls.Config) {
	t.Helper()
	now := time.Now()
	rootKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	rootTemplate := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "certfetch e2e fake plugin catalog root"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	rootDER, err := x509.CreateCertificate(rand.Reader, rootTemplate, rootTemplate, &rootKey.PublicKey, rootKey)
	require.NoError(t, err)
	root, err := x509.ParseCertificate(rootDER)
	require.NoError(t, err)
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	leafDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: catalogHost},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{catalogHost},
	}, root, &leafKey.PublicKey, rootKey)
	require.NoError(t, err)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: rootDER}), &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{leafDER}, PrivateKey: leafKey}},
		MinVersion:   tls.VersionTLS12,
	}
}

// connectProxy is an HTTP proxy that only tunnels (CONNECT), and only to the
// authorities in routes, which it maps to local addresses: the stand-in for
// DNS and the internet between Traefik and plugins.traefik.io. It records
// every request it receives, refused ones included, so a test sees where
// Traefik tried to go.
type connectProxy struct {
	routes map[string]string // "host:port" as requested → loopback "host:port"
	srv    *httptest.Server

	mu      sync.Mutex
	seen    []string // "CONNECT plugins.traefik.io:443", "GET http://…"
	tunnels sync.WaitGroup
	conns   map[net.Conn]struct{}
	closed  bool
}

// startConnectProxy starts the proxy; it is closed, tunnels included, when
// the test ends.
func startConnectProxy(t testing.TB, routes map[string]string) *connectProxy {
	t.Helper()
	p := &connectProxy{routes: routes, conns: map[net.Conn]struct{}{}}
	p.srv = httptest.NewServer(p)
	t.Cleanup(p.close)
	return p
}

// url is the proxy's URL for HTTPS_PROXY.
func (p *connectProxy) url() string { return p.srv.URL }

func (p *connectProxy) requests() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.seen)
}

func (p *connectProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	if r.Method == http.MethodConnect {
		p.seen = append(p.seen, "CONNECT "+r.Host)
	} else {
		p.seen = append(p.seen, r.Method+" "+r.URL.String())
	}
	p.mu.Unlock()
	if r.Method != http.MethodConnect {
		http.Error(w, "this proxy only tunnels (CONNECT)", http.StatusMethodNotAllowed)
		return
	}
	target, ok := p.routes[r.Host]
	if !ok {
		http.Error(w, "no route to "+r.Host, http.StatusForbidden)
		return
	}
	upstream, err := net.DialTimeout("tcp", target, 5*time.Second)
	if err != nil {
		http.Error(w, fmt.Sprintf("connect proxy: dial %s for %s: %v", target, r.Host, err), http.StatusBadGateway)
		return
	}
	client, buffered, err := http.NewResponseController(w).Hijack()
	if err != nil {
		upstream.Close()
		http.Error(w, fmt.Sprintf("connect proxy: hijack: %v", err), http.StatusInternalServerError)
		return
	}
	if !p.track(client, upstream) {
		client.Close()
		upstream.Close()
		return
	}
	if _, err := io.WriteString(client, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		p.untrack(client, upstream)
		return
	}
	go p.pipe(upstream, client, buffered.Reader)
}

// track registers a tunnel's two connections; false once the proxy is closed.
func (p *connectProxy) track(conns ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	for _, c := range conns {
		p.conns[c] = struct{}{}
	}
	p.tunnels.Add(1)
	return true
}

// untrack closes a tunnel's connections and marks it done.
func (p *connectProxy) untrack(conns ...net.Conn) {
	p.mu.Lock()
	for _, c := range conns {
		c.Close()
		delete(p.conns, c)
	}
	p.mu.Unlock()
	p.tunnels.Done()
}

// pipe copies both ways until either side closes, then closes both. Bytes
// the client sent after the CONNECT request and the server already
// buffered go first.
func (p *connectProxy) pipe(upstream, client net.Conn, buffered *bufio.Reader) {
	done := make(chan struct{}, 2)
	go func() {
		_, _ = io.Copy(upstream, io.MultiReader(io.LimitReader(buffered, int64(buffered.Buffered())), client))
		done <- struct{}{}
	}()
	go func() {
		_, _ = io.Copy(client, upstream)
		done <- struct{}{}
	}()
	<-done
	p.untrack(upstream, client) // unblocks the other copy
	<-done
}

// close stops accepting, closes every tunnel and waits for their goroutines.
func (p *connectProxy) close() {
	p.srv.Close()
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.tunnels.Wait()
}

// catalogEnv is Traefik's environment for the fake catalog: its plugin
// client dials through the proxy (HTTPS_PROXY; NO_PROXY emptied so no
// inherited setting bypasses it) and trusts the fake's root (SSL_CERT_FILE,
// read by Go's crypto/x509 on Linux).
func catalogEnv(c *fakeCatalog, p *connectProxy) []string {
	return []string{
		"HTTPS_PROXY=" + p.url(), "https_proxy=" + p.url(),
		"NO_PROXY=", "no_proxy=",
		"SSL_CERT_FILE=" + c.rootFile,
	}
}

// readmePluginVersion is the plugin version README's static configuration
// installs (testdata/traefik/traefik.yml, which README quotes verbatim).
func readmePluginVersion(t testing.TB) string {
	t.Helper()
	cfg := readYAML(t, filepath.Join(repoRoot, "testdata", "traefik", "traefik.yml"))
	plugin := mapAt(t, mapAt(t, mapAt(t, cfg, "experimental"), "plugins"), pluginName)
	require.Equal(t, moduleName, plugin["moduleName"])
	version, ok := plugin["version"].(string)
	require.True(t, ok, "experimental.plugins.%s.version must be a string", pluginName)
	return version
}

// pluginSources is where Traefik unzipped the plugin:
// plugins-storage/sources/gop-*/src/<moduleName>.
func pluginSources(t testing.TB, tr *traefik) string {
	t.Helper()
	matches, err := filepath.Glob(filepath.Join(tr.dir, "plugins-storage", "sources", "gop-*", "src", filepath.FromSlash(moduleName)))
	require.NoError(t, err)
	require.Len(t, matches, 1, "one unzipped copy of the plugin under plugins-storage/sources")
	return matches[0]
}

// filesUnder lists the regular files below dir as slash paths relative to it.
func filesUnder(t testing.TB, dir string) []string {
	t.Helper()
	var files []string
	require.NoError(t, filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			rel, err := filepath.Rel(dir, p)
			if err != nil {
				return fmt.Errorf("relative path of %s: %w", p, err)
			}
			files = append(files, filepath.ToSlash(rel))
		}
		return nil
	}))
	return files
}

// TestPluginCatalogInstall installs the plugin the way README tells users
// to, from the catalog, and uses it: Traefik v3.6.12 with README's static
// configuration (experimental.plugins.certfetch at README's version; only
// ports and directories substituted) downloads the module zip of the working
// tree through the CONNECT proxy, validates its hash, unzips it as a Go
// module and interprets it; the test CA then validates a real HTTP-01
// challenge through it and Traefik serves the certificate certfetch got. A
// restart in the same directory revalidates the cached archive (304).
func TestPluginCatalogInstall(t *testing.T) {
	t.Parallel()
	z := buildModuleZip(t, readmePluginVersion(t))
	catalog := startFakeCatalog(t, z, z.hash)
	proxy := startConnectProxy(t, map[string]string{catalogHost + ":443": catalog.addr()})
	env := catalogEnv(catalog, proxy)

	domain := "catalog.example.test"
	s := newSiteStack(t, stackOptions{
		mode: thumbprintMode, domains: []string{domain},
		traefik: traefikOptions{catalog: true, env: env},
	}, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "backend for "+domain) }))

	// Traefik installs plugins before it serves: by now it is done.
	s.traefik.waitForLog(t, "Plugins loaded.", reloadTimeout)
	assert.Equal(t, []string{"CONNECT " + catalogHost + ":443"}, proxy.requests(), "Traefik reached the catalog through the proxy, and nothing else")
	assert.Equal(t, []catalogRequest{
		{endpoint: "download", module: moduleName, version: z.version.Version, hash: "", status: http.StatusOK},
		{endpoint: "validate", module: moduleName, version: z.version.Version, hash: z.hash, status: http.StatusOK},
	}, catalog.seen(), "download, then validate with the SHA-256 of the zip")
	archive, err := os.ReadFile(filepath.Join(s.traefik.dir, "plugins-storage", "archives", filepath.FromSlash(moduleName), z.version.Version+".zip"))
	require.NoError(t, err, "Traefik keeps the downloaded archive")
	assert.Equal(t, z.data, archive)
	// Unzipped as a Go module (zip.Unzip), not by Traefik's plain-zip
	// fallback, which would keep the "<module>@<version>" directory.
	assert.ElementsMatch(t, z.files, filesUnder(t, pluginSources(t, s.traefik)))
	assert.NoDirExists(t, filepath.Join(s.traefik.dir, "plugins-local"), "the plugin came from the catalog, not from plugins-local")

	d := s.daemon(t) // README's acme-challenge.yml; waits until the plugin answers
	assertRedirected(t, s.traefik, domain)
	require.NoError(t, once(t, d))
	assert.Equal(t, 1, s.ca.Stats().NewOrders)
	leaf := s.published(t)
	assert.Equal(t, []string{domain}, leaf.DNSNames)
	s.waitServed(t, domain, leaf)

	// A restart finds the archive in plugins-storage/archives: Traefik sends
	// its hash, the catalog answers 304, and the hash is validated again.
	s.traefik.stop(t)
	restarted := startTraefik(t, traefikOptions{watchDir: s.watchDir, catalog: true, env: env, dir: s.traefik.dir})
	restarted.waitForLog(t, "Plugins loaded.", reloadTimeout)
	restarted.waitForPlugin(t)
	seen := catalog.seen()
	require.Len(t, seen, 4, "two requests per start")
	assert.Equal(t, []catalogRequest{
		{endpoint: "download", module: moduleName, version: z.version.Version, hash: z.hash, status: http.StatusNotModified},
		{endpoint: "validate", module: moduleName, version: z.version.Version, hash: z.hash, status: http.StatusOK},
	}, seen[2:], "after a restart: download with the cached hash (304), validate")
	assert.Equal(t, []string{"CONNECT " + catalogHost + ":443", "CONNECT " + catalogHost + ":443"}, proxy.requests())
	leafAgain, err := handshake(restarted.websecure, domain, s.roots)
	require.NoError(t, err)
	assert.Equal(t, leaf.SerialNumber, leafAgain.SerialNumber)
}

// TestPluginCatalogRefusesWrongHash is the mutation that shows the test
// above depends on the validation: when the catalog does not vouch for the
// archive Traefik received (validate answers 403 for its hash), Traefik
// refuses the plugin, deletes what it downloaded, and the challenge router
// that uses the middleware stays down.
func TestPluginCatalogRefusesWrongHash(t *testing.T) {
	t.Parallel()
	z := buildModuleZip(t, readmePluginVersion(t))
	other := sha256.Sum256(append(slices.Clone(z.data), 0))
	catalog := startFakeCatalog(t, z, hex.EncodeToString(other[:]))
	proxy := startConnectProxy(t, map[string]string{catalogHost + ":443": catalog.addr()})

	watchDir := filepath.Join(t.TempDir(), "dynamic")
	require.NoError(t, os.Mkdir(watchDir, 0o755))
	challenge := readYAML(t, filepath.Join(repoRoot, "testdata", "traefik", "certfetch", "acme-challenge.yml"))
	writeYAML(t, filepath.Join(watchDir, "acme-challenge.yml"), challenge)
	tr := startTraefik(t, traefikOptions{watchDir: watchDir, catalog: true, env: catalogEnv(catalog, proxy)})

	line := tr.waitForLog(t, "Plugins are disabled because an error has occurred.", reloadTimeout)
	assert.Contains(t, line, "plugin integrity check failed")
	assert.Equal(t, []catalogRequest{
		{endpoint: "download", module: moduleName, version: z.version.Version, hash: "", status: http.StatusOK},
		{endpoint: "validate", module: moduleName, version: z.version.Version, hash: z.hash, status: http.StatusForbidden},
	}, catalog.seen())
	line = tr.waitForLog(t, "invalid middleware type or middleware does not exist", reloadTimeout)
	assert.Contains(t, line, middlewareName, "the middleware without its plugin is the one reported")
	assert.NoFileExists(t, filepath.Join(tr.dir, "plugins-storage", "archives", filepath.FromSlash(moduleName), z.version.Version+".zip"),
		"Traefik deletes an archive that failed validation")

	req, err := http.NewRequest(http.MethodPost, fmt.Sprintf("http://127.0.0.1:%d/.well-known/acme-challenge/%s", tr.web, probeToken), nil)
	require.NoError(t, err)
	req.Host = "refused.example.test"
	resp, err := noRedirectClient().Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusNotFound, resp.StatusCode, "no plugin answers the challenge path")
}
