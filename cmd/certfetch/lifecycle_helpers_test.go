package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/certfetch/certfetch/acme"
	"github.com/certfetch/certfetch/demo"
	"github.com/certfetch/certfetch/fetcher"
	"github.com/certfetch/certfetch/fetcher/config"
	"github.com/certfetch/certfetch/internal/testkit/testsupport"
)

// The lifecycle tests drive the certfetch binary (this test binary acting as certfetch,
// see TestMain) against the in-process test CA, and assert what an operator sees: the
// files in Traefik's directory, `certfetch status`, exit codes, and the requests the CA
// received.

const (
	// processTimeout bounds a `once` or `status` process, and the wait for a daemon to
	// do something it does within seconds.
	processTimeout = 2 * time.Minute
	tick           = 20 * time.Millisecond
)

// startSandbox starts a demo installation (test CA, plugin, configuration) for domains.
func startSandbox(t *testing.T, opts demo.Options, certificates ...[]string) *demo.Sandbox {
	t.Helper()
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	sb, _, err := demo.Start(opts, certificates...)
	require.NoError(t, err)
	t.Cleanup(sb.Close)
	return sb
}

// proc is one certfetch process.
type proc struct {
	cmd    *exec.Cmd
	args   []string
	stdout *testsupport.SyncBuffer
	stderr *testsupport.SyncBuffer
	exited chan struct{} // closed when the process has exited and was reaped
}

// startProc starts `certfetch args...` with env added to the test's environment. The
// process is killed at the end of the test if it still runs; its standard error is
// logged when the test failed.
func startProc(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(os.Args[0], args...), args: args, stdout: &testsupport.SyncBuffer{},
		stderr: &testsupport.SyncBuffer{}, exited: make(chan struct{})}
	p.cmd.Env = append(append(os.Environ(), "CERTFETCH_TEST_MAIN=1"), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	require.NoError(t, p.cmd.Start())
	go func() {
		_ = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.exited
		if t.Failed() {
			t.Logf("certfetch %s (pid %d) stderr:\n%s", strings.Join(args, " "), p.cmd.Process.Pid, p.stderr.String())
		}
	})
	return p
}

// wait waits for the process to exit and returns its exit code (-1: killed by a signal).
func (p *proc) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.exited:
	case <-time.After(timeout):
		t.Fatalf("certfetch %s did not exit within %s; stderr:\n%s", strings.Join(p.args, " "), timeout, p.stderr.String())
	}
	return p.cmd.ProcessState.ExitCode()
}

// killedBy reports whether the process was ended by sig.
func (p *proc) killedBy(sig syscall.Signal) bool {
	ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == sig
}

// kill SIGKILLs the process and waits until it is gone.
func (p *proc) kill(t *testing.T) {
	t.Helper()
	require.NoError(t, p.cmd.Process.Kill())
	p.wait(t, processTimeout)
	require.True(t, p.killedBy(syscall.SIGKILL))
}

// stop sends SIGTERM and requires a clean exit (code 0).
func (p *proc) stop(t *testing.T) {
	t.Helper()
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	require.Equal(t, exitOK, p.wait(t, processTimeout), "exit code after SIGTERM; stderr:\n%s", p.stderr.String())
}

// logged returns a condition for require.Eventually: the process logged all of parts on
// one line.
func (p *proc) logged(parts ...string) func() bool {
	return func() bool {
		_, ok := findLog(p.stderr.String(), time.Time{}, parts...)
		return ok
	}
}

// runCertfetch runs `certfetch args...` to its end and returns its exit code and output.
func runCertfetch(t *testing.T, env []string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	p := startProc(t, env, args...)
	code = p.wait(t, processTimeout)
	return code, p.stdout.String(), p.stderr.String()
}

// once runs `certfetch once` and requires exit code want.
func once(t *testing.T, sb *demo.Sandbox, want int) string {
	t.Helper()
	code, _, stderr := runCertfetch(t, nil, "once", "--config", sb.ConfigPath)
	require.Equal(t, want, code, "certfetch once exit code; stderr:\n%s", stderr)
	return stderr
}

// status runs `certfetch status --json` and `certfetch status`, requires exit code want
// of both, and returns the certificates by name and the table.
func status(t *testing.T, configPath string, want int) (map[string]fetcher.CertificateStatus, string) {
	t.Helper()
	code, stdout, stderr := runCertfetch(t, nil, "status", "--config", configPath, "--json")
	require.Equal(t, want, code, "certfetch status --json exit code; stdout:\n%s\nstderr:\n%s", stdout, stderr)
	var list []fetcher.CertificateStatus
	require.NoError(t, json.Unmarshal([]byte(stdout), &list), stdout)
	byName := map[string]fetcher.CertificateStatus{}
	for _, s := range list {
		byName[s.Name] = s
	}
	code, table, stderr := runCertfetch(t, nil, "status", "--config", configPath)
	require.Equal(t, want, code, "certfetch status exit code; stdout:\n%s\nstderr:\n%s", table, stderr)
	return byName, table
}

// statusRow returns the table row of certificate name, its cells split on runs of spaces
// (the PROBLEM cell, the last, keeps its spaces).
func statusRow(t *testing.T, table, name string) []string {
	t.Helper()
	for _, line := range strings.Split(table, "\n") {
		cells := regexp.MustCompile(`\s{2,}`).Split(strings.TrimSpace(line), colProblem+1)
		if len(cells) == colProblem+1 && cells[0] == name {
			return cells
		}
	}
	t.Fatalf("no row for %s in:\n%s", name, table)
	return nil
}

// Status table columns.
const (
	colSource  = 3
	colState   = 4
	colProblem = 8
)

// servedCertificate checks what Traefik would load for name from the output directory:
// <name>.yml written by certfetch, pointing at a certificate and a key that match,
// whose chain verifies against the test CA's roots for domain. It returns the leaf.
func servedCertificate(t *testing.T, sb *demo.Sandbox, name, domain string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(sb.OutputDir(), name+".yml"))
	require.NoError(t, err, "%s is published", name)
	require.True(t, strings.HasPrefix(string(data), "# Written by certfetch"), "certfetch's own file:\n%s", data)
	var doc struct {
		TLS struct {
			Certificates []struct {
				CertFile string `yaml:"certFile"`
				KeyFile  string `yaml:"keyFile"`
			} `yaml:"certificates"`
		} `yaml:"tls"`
	}
	require.NoError(t, yaml.Unmarshal(data, &doc), "%s.yml:\n%s", name, data)
	require.Len(t, doc.TLS.Certificates, 1, "%s.yml:\n%s", name, data)
	entry := doc.TLS.Certificates[0]
	pair, err := tls.LoadX509KeyPair(entry.CertFile, entry.KeyFile)
	require.NoError(t, err, "%s: the certificate and the key Traefik would load match", name)
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	require.NoError(t, err)
	roots := x509.NewCertPool()
	rootsPEM, err := sb.CA.IssuerRootsPEM()
	require.NoError(t, err)
	require.True(t, roots.AppendCertsFromPEM(rootsPEM))
	intermediates := x509.NewCertPool()
	for _, der := range pair.Certificate[1:] {
		c, err := x509.ParseCertificate(der)
		require.NoError(t, err)
		intermediates.AddCert(c)
	}
	_, err = leaf.Verify(x509.VerifyOptions{DNSName: domain, Roots: roots, Intermediates: intermediates,
		CurrentTime: leaf.NotBefore.Add(time.Second)})
	require.NoError(t, err, "%s: the chain verifies for %s", name, domain)
	return leaf
}

// pemFile is a PEM file name in the output's certs/ directory.
var pemFile = regexp.MustCompile(`^.+-[0-9a-f]{16}\.(crt|key)$`)

// noTornFiles checks that the output directory holds only whole files certfetch meant to
// leave there: YAML files that parse, PEM files that parse, and no temporary files.
func noTornFiles(t *testing.T, sb *demo.Sandbox) {
	t.Helper()
	dir := sb.OutputDir()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, e := range entries {
		path := filepath.Join(dir, e.Name())
		switch {
		case e.Name() == "certs" && e.IsDir():
		case strings.HasSuffix(e.Name(), ".yml") && !strings.HasPrefix(e.Name(), "."):
			data, err := os.ReadFile(path)
			require.NoError(t, err)
			var doc map[string]any
			assert.NoError(t, yaml.Unmarshal(data, &doc), "%s parses", path)
			assert.True(t, strings.HasPrefix(string(data), "# Written by certfetch"), "%s is whole", path)
		default:
			t.Errorf("unexpected file in the output directory: %s", path)
		}
	}
	certs, err := os.ReadDir(filepath.Join(dir, "certs"))
	require.NoError(t, err)
	for _, e := range certs {
		path := filepath.Join(dir, "certs", e.Name())
		m := pemFile.FindStringSubmatch(e.Name())
		if !assert.NotNil(t, m, "unexpected file (a temporary file left behind?): %s", path) {
			continue
		}
		data, err := os.ReadFile(path)
		require.NoError(t, err)
		if m[1] == "key" {
			_, err := acme.ParseKey(data)
			assert.NoError(t, err, "%s is a whole key", path)
			continue
		}
		block, rest := pem.Decode(data)
		if assert.NotNil(t, block, "%s is PEM", path) {
			_, err := x509.ParseCertificate(block.Bytes)
			assert.NoError(t, err, "%s is a whole certificate", path)
			assert.NotEmpty(t, strings.TrimSpace(string(rest)), "%s holds the chain", path)
		}
	}
}

// journalEmpty checks that no order is journaled: every order the CA issued was
// collected.
func journalEmpty(t *testing.T, sb *demo.Sandbox) {
	t.Helper()
	orders, err := sb.Store.Orders(context.Background())
	require.NoError(t, err)
	for _, o := range orders {
		t.Errorf("order still journaled: %s (%s), certificate downloaded: %t", o.OrderURL, o.Key, o.CertificatePEM != "")
	}
	if entries, err := os.ReadDir(filepath.Join(sb.Dir, "state", "orders")); err == nil {
		assert.Empty(t, entries, "storage/orders holds no file")
	}
}

// certSpec is one entry of the configuration's certificates.
type certSpec struct {
	name    string
	domains []string
	timeout time.Duration
}

// configWriter writes configurations for a sandbox: its resolver, storage and output,
// with certificates and extra top-level settings of the test's choosing.
type configWriter struct{ head, tail string }

func newConfigWriter(t *testing.T, sb *demo.Sandbox) configWriter {
	t.Helper()
	_, err := sb.WriteConfig([]string{"placeholder.example.test"})
	require.NoError(t, err)
	data, err := os.ReadFile(sb.ConfigPath)
	require.NoError(t, err)
	text := string(data)
	i, j := strings.Index(text, "certificates:\n"), strings.Index(text, "output:\n")
	require.True(t, i >= 0 && j > i, "configuration layout:\n%s", text)
	return configWriter{head: text[:i], tail: text[j:]}
}

// write writes the configuration to path and checks that it loads.
func (w configWriter) write(t *testing.T, path, extra string, certs ...certSpec) {
	t.Helper()
	var b strings.Builder
	b.WriteString(w.head)
	if len(certs) == 0 {
		b.WriteString("certificates: []\n")
	} else {
		b.WriteString("certificates:\n")
	}
	for _, c := range certs {
		fmt.Fprintf(&b, "  - domains: [%s]\n", strings.Join(c.domains, ", "))
		if c.name != "" {
			fmt.Fprintf(&b, "    name: %s\n", strconv.Quote(c.name))
		}
		if c.timeout > 0 {
			fmt.Fprintf(&b, "    timeout: %s\n", c.timeout)
		}
	}
	b.WriteString(w.tail)
	b.WriteString(extra)
	require.NoError(t, os.WriteFile(path, []byte(b.String()), 0o600))
	_, err := config.Load(path)
	require.NoError(t, err, "configuration:\n%s", b.String())
}

// logLine is one line of the daemon's text log.
type logLine struct {
	at   time.Time
	msg  string
	text string
}

var logLineRE = regexp.MustCompile(`^time=(\S+) level=\S+ msg=("(?:[^"\\]|\\.)*"|\S+)`)

// findLog returns the first line logged at or after after whose message or attributes
// contain every one of parts.
func findLog(stderr string, after time.Time, parts ...string) (logLine, bool) {
	for _, text := range strings.Split(stderr, "\n") {
		m := logLineRE.FindStringSubmatch(text)
		if m == nil {
			continue
		}
		at, err := time.Parse(time.RFC3339Nano, m[1])
		if err != nil || at.Before(after) {
			continue
		}
		msg := m[2]
		if unq, err := strconv.Unquote(msg); err == nil {
			msg = unq
		}
		all := true
		for _, p := range parts {
			all = all && strings.Contains(text, p)
		}
		if all {
			return logLine{at: at, msg: msg, text: text}, true
		}
	}
	return logLine{}, false
}
