package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/certfetch/certfetch/demo"
	"github.com/certfetch/certfetch/fetcher/output"
	"github.com/certfetch/certfetch/fetcher/store"
	"github.com/certfetch/certfetch/internal/testkit/testservers"
)

// BenchmarkDaemonAtRest starts `certfetch run` on a state of 10,000 valid
// certificates (none due) and reports the time to READY=1 and to the end of
// the first pass (STATUS=), the resident memory, and the CPU the idle daemon
// uses over a 10 s window:
//
//	go test -run '^$' -bench DaemonAtRest -benchtime 1x ./cmd/certfetch/
func BenchmarkDaemonAtRest(b *testing.B) {
	const n = 10000
	dir := b.TempDir()
	configPath := writeAtRestState(b, dir, n)
	for b.Loop() {
		notify, sock := listenNotify(b)
		cmd := exec.Command(os.Args[0], "run", "--config", configPath)
		cmd.Env = append(os.Environ(), "CERTFETCH_TEST_MAIN=1", "NOTIFY_SOCKET="+sock)
		start := time.Now()
		require.NoError(b, cmd.Start())
		b.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }) // also when a require fails
		waitFor(b, notify, "READY=1")
		ready := time.Since(start)
		waitFor(b, notify, fmt.Sprintf("STATUS=%d certificates, %d published, 0 failing", n, n))
		firstPass := time.Since(start)

		cpuBefore := cpuSeconds(b, cmd.Process.Pid)
		// The measurement window itself, not a synchronisation.
		time.Sleep(10 * time.Second)
		idleCPU := cpuSeconds(b, cmd.Process.Pid) - cpuBefore
		rss := procStatusKB(b, cmd.Process.Pid, "VmRSS:")
		hwm := procStatusKB(b, cmd.Process.Pid, "VmHWM:")

		b.ReportMetric(ready.Seconds(), "s-to-ready")
		b.ReportMetric(firstPass.Seconds(), "s-to-first-pass")
		b.ReportMetric(float64(rss)/1024, "MiB-rss")
		b.ReportMetric(float64(hwm)/1024, "MiB-peak-rss")
		b.ReportMetric(idleCPU/10*100, "%cpu-idle")
	}
}

// writeAtRestState writes a configuration of n certificates, a state in
// which each is issued and not due for 30 days (ARI not due either), and the
// file output Traefik would already read, and returns the configuration's
// path.
func writeAtRestState(b *testing.B, dir string, n int) string {
	b.Helper()
	certPEM, keyPEM := selfSigned(b)
	st, err := store.Open(filepath.Join(dir, "state"))
	require.NoError(b, err)
	out, err := output.NewFileOutput(output.FileOptions{Directory: filepath.Join(dir, "out"), Logger: slog.New(slog.DiscardHandler)})
	require.NoError(b, err)
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "storage: %s\noutput: {file: {directory: %s}}\n", strconv.Quote(filepath.Join(dir, "state")), strconv.Quote(filepath.Join(dir, "out")))
	// Never contacted: nothing is due.
	cfg.WriteString("resolvers:\n  ca:\n    caServer: https://127.0.0.1:1/dir\n    httpChallenge: {stateless: true}\ncertificates:\n")
	now := time.Now()
	for i := range n {
		name := fmt.Sprintf("host%05d.rest.test", i)
		fmt.Fprintf(&cfg, "  - domains: [%s]\n", name)
		require.NoError(b, st.SaveCertificate(b.Context(), &store.Certificate{
			Name: name, Resolver: "ca", Domains: []string{name},
			CertPEM: certPEM, KeyPEM: keyPEM,
			NotBefore: now.Add(-30 * 24 * time.Hour), NotAfter: now.Add(60 * 24 * time.Hour),
			RenewAt: now.Add(30 * 24 * time.Hour), ARINextCheck: now.Add(6 * time.Hour), LastSuccess: now,
		}))
		require.NoError(b, out.Publish(b.Context(), name, certPEM, keyPEM))
	}
	path := filepath.Join(dir, "certfetch.yml")
	require.NoError(b, os.WriteFile(path, []byte(cfg.String()), 0o600))
	return path
}

func selfSigned(b *testing.B) (certPEM, keyPEM []byte) {
	b.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(b, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "rest.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(90 * 24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(b, err)
	keyDER, err := x509.MarshalECPrivateKey(key)
	require.NoError(b, err)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
}

func waitFor(b *testing.B, n *notifySocket, prefix string) {
	b.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for !n.saw(prefix) {
		require.True(b, time.Now().Before(deadline), "no %q from the daemon", prefix)
		time.Sleep(5 * time.Millisecond) // polling another process's messages
	}
}

// cpuSeconds is the process's user+system CPU time from /proc/<pid>/stat.
func cpuSeconds(b *testing.B, pid int) float64 {
	b.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	require.NoError(b, err)
	// Fields after the parenthesised command name; utime and stime are the
	// 14th and 15th fields of the line, in clock ticks (100 per second).
	fields := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	utime, err := strconv.ParseFloat(fields[11], 64)
	require.NoError(b, err)
	stime, err := strconv.ParseFloat(fields[12], 64)
	require.NoError(b, err)
	return (utime + stime) / 100
}

func procStatusKB(b *testing.B, pid int, field string) int {
	b.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	require.NoError(b, err)
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, field); ok {
			kb, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
			require.NoError(b, err)
			return kb
		}
	}
	b.Fatalf("%s not in /proc/%d/status", field, pid)
	return 0
}

// BenchmarkSharedStoreAtRest runs `certfetch run` on Redis storage with
// 100 certificates until all are issued and the daemon has settled, then
// counts the commands Redis processes over 20 s of rest: the requests a
// shared store sees per managed certificate while nothing is due.
//
//	go test -run '^$' -bench SharedStoreAtRest -benchtime 1x ./cmd/certfetch/
func BenchmarkSharedStoreAtRest(b *testing.B) {
	const n, window = 100, 20 * time.Second
	for b.Loop() {
		srv, _ := testservers.StartRedis(b)
		var domains [][]string
		for i := range n {
			domains = append(domains, []string{fmt.Sprintf("r%03d.rest.test", i)})
		}
		sb, _, err := demo.Start(demo.Options{Dir: b.TempDir(), Storage: fmt.Sprintf("{redis: {address: %q}}", srv.Addr()), MaxConcurrentOrders: 20}, domains...)
		require.NoError(b, err)
		notify, sock := listenNotify(b)
		cmd := exec.Command(os.Args[0], "run", "--config", sb.ConfigPath)
		cmd.Env = append(os.Environ(), "CERTFETCH_TEST_MAIN=1", "NOTIFY_SOCKET="+sock)
		require.NoError(b, cmd.Start())
		b.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }) // also when a require fails
		// All issued: the daemon now sleeps until the next pass (an hour at
		// most; the renewal information is asked then).
		waitFor(b, notify, fmt.Sprintf("STATUS=%d certificates, %d published, 0 failing", n, n))
		rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
		before := redisCommands(b, rdb)
		time.Sleep(window) // the measurement window itself
		// Each INFO is itself one command.
		atRest := redisCommands(b, rdb) - before - 1
		rdb.Close()
		sb.Close()
		b.ReportMetric(float64(atRest), "commands/20s")
		b.ReportMetric(float64(atRest)/window.Seconds()/n, "commands/s/cert")
	}
}

func redisCommands(b *testing.B, rdb *redis.Client) int {
	b.Helper()
	info, err := rdb.Info(b.Context(), "stats").Result()
	require.NoError(b, err)
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "total_commands_processed:"); ok {
			n, err := strconv.Atoi(v)
			require.NoError(b, err)
			return n
		}
	}
	b.Fatal("no total_commands_processed in INFO stats")
	return 0
}
