package main

// The packages are built once (TestMain) and checked with the tools the
// distributions use: lintian on the .deb; dpkg installing it into a
// scratch root (never the test machine) with the maintainer scripts run
// against that root; rpm reading the .rpm's file list, config files,
// scripts and digests. Needs the Debian packages lintian, rpm and systemd
// (systemd-sysusers, systemd-tmpfiles); a missing tool fails the test.
//
//	cd dist/package && go test ./...

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// built is what TestMain built; buildErr fails every test that needs it.
var (
	built    Result
	buildErr error
	repoRoot string
)

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	out, err := os.MkdirTemp("", "certfetch-packages-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(out)
	if repoRoot, buildErr = findRepo(); buildErr == nil {
		built, buildErr = Build(Options{Repo: repoRoot, Out: out})
	}
	return m.Run()
}

// packages returns what TestMain built, failing the test if it could not.
func packages(t *testing.T) Result {
	t.Helper()
	if buildErr != nil {
		t.Fatalf("building the packages failed: %v", buildErr)
	}
	return built
}

// tool returns the path of a program or fails naming its Debian package.
func tool(t *testing.T, name, pkg string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found: install the Debian package %s (apt-get install -y %s)", name, pkg, pkg)
	}
	return path
}

// run runs a command and returns its standard output; a failure fails the
// test with both outputs.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\nstdout:\n%s\nstderr:\n%s", name, strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// TestLintian: no error and no warning on the .deb. --pedantic and
// --display-info show everything else in the test log. Without
// --show-overrides: with it, lintian 2.116 counts overridden tags for
// --fail-on. The override (lintian-overrides) is in effect when the
// statically-linked-binary error does not appear.
func TestLintian(t *testing.T) {
	t.Parallel()
	deb := packages(t).Deb
	lintian := tool(t, "lintian", "lintian")
	cmd := exec.Command(lintian, "--fail-on", "error,warning", "--display-info", "--pedantic", deb)
	out, err := cmd.CombinedOutput()
	t.Logf("lintian %s:\n%s", filepath.Base(deb), out)
	if err != nil {
		t.Fatalf("lintian reports errors or warnings (%v)", err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "E: ") || strings.HasPrefix(line, "W: ") {
			t.Errorf("lintian: %s", line)
		}
	}
}

// wantFile is a path in the installed package with its type, mode and
// owner ("certfetch" and "traefik" are resolved in the scratch root).
type wantFile struct {
	path, owner, group string
	mode               os.FileMode // permission and setgid bits; os.ModeDir for directories
}

// packagedFiles are the files and directories the packages install, as
// both formats must have them.
var packagedFiles = []wantFile{
	{"/usr/bin/certfetch", "root", "root", 0o755},
	{"/usr/lib/systemd/system/certfetch.service", "root", "root", 0o644},
	{"/usr/lib/systemd/system/certfetch-once.service", "root", "root", 0o644},
	{"/usr/lib/systemd/system/certfetch-once.timer", "root", "root", 0o644},
	{"/usr/lib/sysusers.d/certfetch.conf", "root", "root", 0o644},
	{"/usr/lib/tmpfiles.d/certfetch.conf", "root", "root", 0o644},
	{"/etc/certfetch", "root", "root", os.ModeDir | 0o755},
	{"/etc/certfetch/certfetch.yml", "root", "root", 0o644},
	{"/usr/share/doc/certfetch/README.md", "root", "root", 0o644},
	{"/usr/share/doc/certfetch/examples/prometheus/certfetch.rules.yml", "root", "root", 0o644},
	{"/usr/share/doc/certfetch/examples/grafana/certfetch.json", "root", "root", 0o644},
	{"/usr/share/man/man1/certfetch.1.gz", "root", "root", 0o644},
}

// debOnlyFiles are Debian's documentation conventions.
var debOnlyFiles = []wantFile{
	{"/usr/share/doc/certfetch/copyright", "root", "root", 0o644},
	{"/usr/share/doc/certfetch/changelog.Debian.gz", "root", "root", 0o644},
	{"/usr/share/lintian/overrides/certfetch", "root", "root", 0o644},
}

// createdByScripts are what the postinst creates through sysusers.d and
// tmpfiles.d (dist/systemd/certfetch.tmpfiles).
var createdByScripts = []wantFile{
	{"/etc/traefik/certfetch", "certfetch", "traefik", os.ModeDir | os.ModeSetgid | 0o750},
	{"/etc/traefik/certfetch/certs", "certfetch", "traefik", os.ModeDir | os.ModeSetgid | 0o750},
	{"/var/lib/certfetch-webroot", "certfetch", "certfetch", os.ModeDir | 0o755},
}

// TestDebInstallsIntoScratchRoot installs the .deb with dpkg into an empty
// directory with its own dpkg database, runs the maintainer scripts
// against it (dpkg --force-script-chrootless sets DPKG_ROOT, which the
// scripts pass to systemd-sysusers and systemd-tmpfiles as --root, as
// debhelper's snippets do), checks files, owners and modes, runs the
// installed binary's `certfetch check` on the installed configuration,
// then purges the package.
//
// Why dpkg --root rather than dpkg-deb -x: it is dpkg that records the
// conffile, runs the scripts in order and removes the files again, and a
// scratch root needs no chroot, container or root filesystem image
// (chroot would need a shell and libc inside the root).
func TestDebInstallsIntoScratchRoot(t *testing.T) {
	t.Parallel()
	deb := packages(t).Deb
	dpkg := tool(t, "dpkg", "dpkg")
	tool(t, "systemd-sysusers", "systemd")
	tool(t, "systemd-tmpfiles", "systemd")

	root := t.TempDir()
	admin := filepath.Join(root, "var", "lib", "dpkg")
	for _, dir := range []string{"info", "updates", "triggers"} {
		mustMkdir(t, filepath.Join(admin, dir))
	}
	mustMkdir(t, filepath.Join(root, "etc"))
	if err := os.WriteFile(filepath.Join(admin, "status"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	dpkgArgs := []string{"--root=" + root, "--force-script-chrootless", "--log=" + filepath.Join(t.TempDir(), "dpkg.log")}
	out := run(t, dpkg, append(dpkgArgs, "--install", deb)...)
	t.Logf("dpkg --install:\n%s", out)

	status := run(t, "dpkg-query", "--admindir="+admin, "-W", "-f=${Status}|${Conffiles}", "certfetch")
	if !strings.HasPrefix(status, "install ok installed|") {
		t.Fatalf("dpkg status: %q", status)
	}
	if !regexp.MustCompile(`^ /etc/certfetch/certfetch\.yml [0-9a-f]{32}$`).MatchString(strings.TrimPrefix(status, "install ok installed|")) {
		t.Errorf("conffiles: want exactly /etc/certfetch/certfetch.yml, got %q", status)
	}

	users := readIDs(t, filepath.Join(root, "etc", "passwd"))
	groups := readIDs(t, filepath.Join(root, "etc", "group"))
	ids := func(owner, group string) (int, int) {
		uid, ok := map[string]int{"root": 0}[owner]
		if !ok {
			uid, ok = users[owner]
		}
		gid, ok2 := map[string]int{"root": 0}[group]
		if !ok2 {
			gid, ok2 = groups[group]
		}
		if !ok || !ok2 {
			t.Fatalf("%s:%s not in the scratch root's passwd/group (users %v, groups %v)", owner, group, users, groups)
		}
		return uid, gid
	}
	checkUser(t, root)
	all := append(append(append([]wantFile{}, packagedFiles...), debOnlyFiles...), createdByScripts...)
	for _, w := range all {
		uid, gid := ids(w.owner, w.group)
		checkFile(t, filepath.Join(root, w.path), w.mode, uid, gid)
	}
	if _, err := os.Stat(filepath.Join(root, "var", "lib", "certfetch")); err == nil {
		t.Errorf("/var/lib/certfetch exists: systemd's StateDirectory= creates it (0700) when the service starts")
	}

	// The installed binary accepts the installed configuration.
	bin := filepath.Join(root, "usr", "bin", "certfetch")
	if err := checkStatic(bin); err != nil {
		t.Error(err)
	}
	out = run(t, bin, "check", "--config", filepath.Join(root, "etc", "certfetch", "certfetch.yml"))
	if !strings.Contains(out, ": OK (") {
		t.Errorf("certfetch check: %q", out)
	}

	// The units run the packaged binary.
	unit, err := os.ReadFile(filepath.Join(root, "usr", "lib", "systemd", "system", "certfetch.service"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(unit), "\nExecStart=/usr/bin/certfetch run --config /etc/certfetch/certfetch.yml\n") || strings.Contains(string(unit), "/usr/local/bin") {
		t.Errorf("certfetch.service does not run /usr/bin/certfetch:\n%s", unit)
	}

	// Purge: the package's files and its conffile go; the user, the
	// output directory (certificates Traefik serves) and the state stay.
	run(t, dpkg, append(dpkgArgs, "--purge", "certfetch")...)
	for _, w := range append(append([]wantFile{}, packagedFiles...), debOnlyFiles...) {
		if _, err := os.Lstat(filepath.Join(root, w.path)); err == nil {
			t.Errorf("%s still exists after purge", w.path)
		}
	}
	for _, w := range createdByScripts {
		if _, err := os.Lstat(filepath.Join(root, w.path)); err != nil {
			t.Errorf("purge removed %s: %v", w.path, err)
		}
	}
	if _, ok := readIDs(t, filepath.Join(root, "etc", "passwd"))["certfetch"]; !ok {
		t.Errorf("purge removed the certfetch user (Debian keeps system users)")
	}
}

// checkUser: sysusers.d made certfetch a system user that cannot log in,
// with the state directory as its home.
func checkUser(t *testing.T, root string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root, "etc", "passwd"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Split(line, ":")
		if len(f) != 7 || f[0] != "certfetch" {
			continue
		}
		if uid, _ := strconv.Atoi(f[2]); uid == 0 || uid >= 1000 {
			t.Errorf("certfetch has UID %d, want a system UID (1-999)", uid)
		}
		if f[5] != "/var/lib/certfetch" || !strings.HasSuffix(f[6], "nologin") {
			t.Errorf("certfetch: home %q, shell %q", f[5], f[6])
		}
		return
	}
	t.Errorf("no certfetch user in the scratch root's /etc/passwd:\n%s", data)
}

// readIDs maps names to the numeric IDs of a passwd or group file.
func readIDs(t *testing.T, path string) map[string]int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ids := map[string]int{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), ":")
		if len(fields) < 3 {
			continue
		}
		if id, err := strconv.Atoi(fields[2]); err == nil {
			ids[fields[0]] = id
		}
	}
	return ids
}

func checkFile(t *testing.T, path string, mode os.FileMode, uid, gid int) {
	t.Helper()
	info, err := os.Lstat(path)
	if err != nil {
		t.Errorf("missing: %v", err)
		return
	}
	got := info.Mode() & (os.ModeType | os.ModePerm | os.ModeSetgid | os.ModeSetuid | os.ModeSticky)
	if got != mode {
		t.Errorf("%s: mode %v, want %v", path, got, mode)
	}
	st := info.Sys().(*syscall.Stat_t)
	if int(st.Uid) != uid || int(st.Gid) != gid {
		t.Errorf("%s: owner %d:%d, want %d:%d", path, st.Uid, st.Gid, uid, gid)
	}
}

func mustMkdir(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
}

// rpmLine is one line of `rpm -qlvp`: like `ls -l`.
var rpmLine = regexp.MustCompile(`^([-dlrwxsStT]{10})\s+\d+\s+(\S+)\s+(\S+)\s+\d+\s+.*\s(/\S*)$`)

// TestRPMContents checks the .rpm with rpm itself: file list with modes
// and owners, the configuration file marked %config(noreplace), the
// scriptlets, and the payload digests.
func TestRPMContents(t *testing.T) {
	t.Parallel()
	pkg := packages(t).RPM
	rpm := tool(t, "rpm", "rpm")

	got := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(run(t, rpm, "-qlvp", pkg)), "\n") {
		m := rpmLine.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("unexpected rpm -qlvp line %q", line)
		}
		got[m[4]] = m[1] + " " + m[2] + ":" + m[3]
	}
	want := map[string]string{}
	for _, w := range packagedFiles {
		want[w.path] = lsMode(w.mode) + " " + w.owner + ":" + w.group
	}
	for _, p := range []string{"/usr/share/licenses/certfetch/LICENSE"} {
		want[p] = "-rw-r--r-- root:root"
	}
	for _, p := range []string{"/usr/share/doc/certfetch", "/usr/share/doc/certfetch/examples", "/usr/share/doc/certfetch/examples/prometheus", "/usr/share/doc/certfetch/examples/grafana", "/usr/share/licenses/certfetch"} {
		want[p] = "drwxr-xr-x root:root"
	}
	if _, ok := got["/usr/share/doc/certfetch/CHANGELOG.md"]; ok || fileExists(filepath.Join(repoRoot, "CHANGELOG.md")) {
		want["/usr/share/doc/certfetch/CHANGELOG.md"] = "-rw-r--r-- root:root"
	}
	for path, w := range want {
		if got[path] != w {
			t.Errorf("rpm: %s: got %q, want %q", path, got[path], w)
		}
	}
	for path := range got {
		if _, ok := want[path]; !ok {
			t.Errorf("rpm: unexpected %s (%s)", path, got[path])
		}
	}

	if cfg := strings.TrimSpace(run(t, rpm, "-qp", "--configfiles", pkg)); cfg != "/etc/certfetch/certfetch.yml" {
		t.Errorf("rpm config files: %q", cfg)
	}
	flags := run(t, rpm, "-qp", "--qf", "[%{FILENAMES} %{FILEFLAGS:fflags}\n]", pkg)
	if !strings.Contains(flags, "/etc/certfetch/certfetch.yml cn\n") {
		t.Errorf("certfetch.yml is not %%config(noreplace):\n%s", flags)
	}
	for _, p := range []string{"/usr/share/licenses/certfetch/LICENSE l", "/usr/share/doc/certfetch/README.md d"} {
		if !strings.Contains(flags, p+"\n") {
			t.Errorf("want %q in the file flags:\n%s", p, flags)
		}
	}
	scripts := run(t, rpm, "-qp", "--scripts", pkg)
	for _, s := range []string{"postinstall scriptlet", "preuninstall scriptlet", "postuninstall scriptlet", "systemd-sysusers certfetch.conf"} {
		if !strings.Contains(scripts, s) {
			t.Errorf("rpm scripts lack %q:\n%s", s, scripts)
		}
	}
	run(t, rpm, "--checksig", "--nosignature", pkg) // header and payload digests
	version := run(t, rpm, "-qp", "--qf", "%{VERSION}-%{RELEASE} %{ARCH}", pkg)
	if version != packages(t).Version+"-1 x86_64" {
		t.Errorf("rpm version: %q, want %q", version, packages(t).Version+"-1 x86_64")
	}
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// lsMode renders a mode as ls -l and rpm -qlv do.
func lsMode(m os.FileMode) string {
	s := []byte("-rwxrwxrwx")
	if m.IsDir() {
		s[0] = 'd'
	}
	for i := 0; i < 9; i++ {
		if m&(1<<uint(8-i)) == 0 {
			s[i+1] = '-'
		}
	}
	if m&os.ModeSetgid != 0 {
		s[6] = map[byte]byte{'x': 's', '-': 'S'}[s[6]]
	}
	return string(s)
}

// TestScriptsNeverStartTheService reads every maintainer script: none
// enables or starts a unit. Allowed are daemon-reload, stop, disable on
// removal, and try-restart on upgrade (restarts only a running daemon).
func TestScriptsNeverStartTheService(t *testing.T) {
	t.Parallel()
	scripts, err := filepath.Glob("scripts/*")
	if err != nil || len(scripts) != 6 {
		t.Fatalf("want 6 scripts, got %v (%v)", scripts, err)
	}
	call := regexp.MustCompile(`\b(systemctl|deb-systemd-invoke|deb-systemd-helper|service|invoke-rc\.d)\b(.*)`)
	allowed := regexp.MustCompile(`^\s+(--system daemon-reload|daemon-reload|try-restart certfetch\.service|stop certfetch|--no-reload disable --now certfetch)`)
	for _, path := range scripts {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("sh", "-n", path).CombinedOutput(); err != nil {
			t.Errorf("%s: sh -n: %v\n%s", path, err, out)
		}
		if !strings.HasPrefix(string(data), "#!/bin/sh\n") {
			t.Errorf("%s: want #!/bin/sh", path)
		}
		for i, line := range strings.Split(string(data), "\n") {
			code := strings.TrimSpace(line)
			if strings.HasPrefix(code, "#") || strings.HasPrefix(code, "if command -v") || strings.Contains(code, "command -v deb-systemd-invoke") {
				continue
			}
			if m := call.FindStringSubmatch(code); m != nil && !allowed.MatchString(m[2]) {
				t.Errorf("%s:%d: %s", path, i+1, code)
			}
		}
	}
}

// TestPackagedConfig: the edits apply to the example as it is, and leave
// no relative file reference (a fresh install has none of those files).
func TestPackagedConfig(t *testing.T) {
	t.Parallel()
	root, err := findRepo()
	if err != nil {
		t.Fatal(err)
	}
	example, err := os.ReadFile(filepath.Join(root, "testdata", "certfetch.example.yml"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := packagedConfig(string(example))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(cfg, "\n") {
		code, _, _ := strings.Cut(line, "#")
		if strings.Contains(code, "certfetch/internal-") || strings.Contains(code, "hmacFile") || strings.Contains(code, "caCertificates") {
			t.Errorf("packaged configuration still reads a file: %q", line)
		}
	}
	if _, err := packagedConfig(strings.Replace(string(example), "kid: certfetch-prod", "kid: other", 1)); err == nil {
		t.Error("an example the edits no longer match must fail the build")
	}
}

// TestGitVersion derives versions in a scratch git repository and checks
// that dpkg orders them as releases should be.
func TestGitVersion(t *testing.T) {
	t.Parallel()
	tool(t, "git", "git")
	dir := t.TempDir()
	gitRun := func(args ...string) {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-C", dir, "-c", "user.name=t", "-c", "user.email=t@example.com"}, args...)...)
		cmd.Env = append(os.Environ(), "GIT_COMMITTER_DATE=2026-11-29T05:19:00Z", "GIT_AUTHOR_DATE=2026-11-29T05:19:00Z")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	version := func() string {
		t.Helper()
		v, err := gitVersion(dir)
		if err != nil {
			t.Fatal(err)
		}
		if !validVersion.MatchString(v) {
			t.Fatalf("invalid version %q", v)
		}
		return v
	}
	gitRun("init", "-q")
	gitRun("commit", "-q", "--allow-empty", "-m", "one")
	untagged := version()
	if !regexp.MustCompile(`^0\.0\.0\+git20261129051900\.[0-9a-f]{12}$`).MatchString(untagged) {
		t.Errorf("untagged: %q", untagged)
	}
	gitRun("tag", "v0.1.0")
	if v := version(); v != "0.1.0" {
		t.Errorf("on v0.1.0: %q", v)
	}
	gitRun("commit", "-q", "--allow-empty", "-m", "two")
	snapshot := version()
	if !strings.HasPrefix(snapshot, "0.1.0+git") {
		t.Errorf("after v0.1.0: %q", snapshot)
	}
	gitRun("tag", "v0.2.0-rc.1")
	rc := version()
	if rc != "0.2.0~rc.1" {
		t.Errorf("on v0.2.0-rc.1: %q", rc)
	}
	order := []string{untagged, "0.1.0", snapshot, rc, "0.2.0"}
	for i := 1; i < len(order); i++ {
		if err := exec.Command("dpkg", "--compare-versions", order[i-1]+"-1", "lt", order[i]+"-1").Run(); err != nil {
			t.Errorf("dpkg does not order %s before %s", order[i-1], order[i])
		}
	}
}
