// Package testservers starts real redis-server, etcd and step-ca processes
// for tests, on free loopback ports with their data in the test's temporary
// directory.
//
// A Server can be killed and started again on the same port and data
// directory, to test what clients do while it is down and after it is back.
// Every process is killed when the test ends (t.Cleanup) and, on Linux, when
// the test binary dies (Pdeathsig). Readiness is polled (Redis PING, etcd
// and step-ca /health) with a deadline; nothing sleeps for a fixed time.
//
// The redis-server and etcd binaries come from Debian's redis-server and
// etcd-server packages; a missing binary fails the test with the package to
// install. step-ca is built by `make` (see StartStepCA).
package testservers

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	// readyTimeout bounds the wait for a started server to answer: Redis is
	// ready in milliseconds and a single-member etcd with the short election
	// timeout below in well under a second, but two loaded CI cores running
	// parallel tests can stretch that tenfold.
	readyTimeout = 30 * time.Second
	// pollInterval is how often readiness is checked while waiting.
	pollInterval = 20 * time.Millisecond
)

// Server is a running (or stopped) server process.
type Server struct {
	t    testing.TB
	name string
	bin  string
	args []string
	env  []string // added to the test's environment
	dir  string
	addr string
	log  string
	// ready reports whether the server answers; polled after each start.
	ready func() error

	mu      sync.Mutex
	cmd     *exec.Cmd
	exit    chan struct{} // closed when cmd has exited
	cleanup sync.Once
}

// StartRedis starts redis-server on a free loopback port, with an
// append-only file fsynced on every write in a temporary directory, so that
// data survives Kill and Start. It returns the server and its host:port.
// extraArgs are appended to the command line (say "--requirepass", "secret":
// the readiness check then authenticates).
func StartRedis(t testing.TB, extraArgs ...string) (*Server, string) {
	t.Helper()
	bin := lookPath(t, "redis-server", "redis-server")
	port := freePort(t)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	dir := t.TempDir()
	args := append([]string{
		"--bind", "127.0.0.1", "--port", strconv.Itoa(port), "--dir", dir,
		"--appendonly", "yes", "--appendfsync", "always", "--save", "",
		"--daemonize", "no", "--logfile", "",
	}, extraArgs...)
	password := ""
	for i, a := range extraArgs {
		if a == "--requirepass" && i+1 < len(extraArgs) {
			password = extraArgs[i+1]
		}
	}
	s := &Server{t: t, name: "redis-server", bin: bin, args: args, dir: dir, addr: addr,
		ready: func() error { return pingRedis(addr, password) }}
	s.Start()
	return s, addr
}

// StartEtcd starts a single-member etcd on free loopback ports with its
// data in a temporary directory (etcd fsyncs its log, so data survives Kill
// and Start). It returns the server and the client URL. The heartbeat and
// election timeouts are short (10 ms, 100 ms) so that the member elects
// itself at once and the minimum lease TTL is 1 s.
func StartEtcd(t testing.TB) (*Server, string) {
	t.Helper()
	bin := lookPath(t, "etcd", "etcd-server")
	client := "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
	peer := "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
	dir := t.TempDir()
	args := []string{
		"--name", "test", "--data-dir", filepath.Join(dir, "data"),
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "test=" + peer, "--initial-cluster-state", "new",
		"--heartbeat-interval", "10", "--election-timeout", "100",
		"--logger", "zap", "--log-outputs", "stderr",
	}
	s := &Server{t: t, name: "etcd", bin: bin, args: args, dir: dir, addr: client,
		ready: func() error { return etcdHealth(client) }}
	s.Start()
	return s, client
}

// Addr is what clients connect to: host:port for Redis, the client URL
// for etcd, the base URL (https://127.0.0.1:<port>) for step-ca. It stays
// the same across Kill and Start.
func (s *Server) Addr() string { return s.addr }

// Start starts the server (again, after Kill) on its port and data
// directory and waits until it answers; it fails the test when it does not
// within readyTimeout, with the end of the server's log.
func (s *Server) Start() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		s.t.Fatalf("testservers: %s already running", s.name)
	}
	s.log = filepath.Join(s.dir, fmt.Sprintf("%s-%d.log", s.name, time.Now().UnixNano()))
	logFile, err := os.Create(s.log)
	if err != nil {
		s.t.Fatalf("testservers: %v", err)
	}
	cmd := exec.Command(s.bin, s.args...)
	cmd.Dir = s.dir
	cmd.Env = append(os.Environ(), s.env...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Kill the server if the test binary dies without running cleanups.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		s.t.Fatalf("testservers: start %s: %v", s.name, err)
	}
	exit := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logFile.Close()
		close(exit)
	}()
	s.cmd, s.exit = cmd, exit
	s.cleanup.Do(func() { s.t.Cleanup(s.Kill) })

	deadline := time.Now().Add(readyTimeout)
	for {
		err := s.ready()
		if err == nil {
			return
		}
		select {
		case <-exit:
			s.cmd = nil
			s.t.Fatalf("testservers: %s exited before it was ready (%v); log:\n%s", s.name, err, tail(s.log))
		default:
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("testservers: %s not ready after %s: %v; log:\n%s", s.name, readyTimeout, err, tail(s.log))
		}
		timer := time.NewTimer(pollInterval)
		select {
		case <-timer.C:
		case <-exit:
			timer.Stop()
		}
	}
}

// Kill kills the server with SIGKILL (a crash: no chance to save or close
// connections) and waits until the process is gone. The port and data stay
// for Start. Killing a stopped server does nothing.
func (s *Server) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.killLocked()
}

func (s *Server) killLocked() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.exit
	s.cmd = nil
}

// Restart kills the server and starts it again on the same port and data.
func (s *Server) Restart() {
	s.t.Helper()
	s.Kill()
	s.Start()
}

// lookPath finds bin or fails the test naming the Debian package.
func lookPath(t testing.TB, bin, pkg string) string {
	t.Helper()
	path, err := exec.LookPath(bin)
	if err != nil {
		t.Fatalf("testservers: %s not found in PATH (%v): install the Debian package %s (apt-get install -y %s)", bin, err, pkg, pkg)
	}
	return path
}

// freePort returns a loopback TCP port nobody listens on right now. Another
// process could take it before the server binds it; the server then fails
// to start and the test fails with its log, which is rare enough on a test
// machine to not be worth a retry loop that would also have to cover
// restarts on the same port.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testservers: free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// pingRedis sends AUTH (with a password) and PING over a fresh connection
// and expects +PONG.
func pingRedis(addr, password string) error {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(time.Second)); err != nil {
		return err
	}
	r := bufio.NewReader(conn)
	if password != "" {
		if err := redisCall(conn, r, "+OK", "AUTH", password); err != nil {
			return err
		}
	}
	// -LOADING while the append-only file is replayed after a restart.
	return redisCall(conn, r, "+PONG", "PING")
}

// redisCall sends args as a RESP array and checks that the reply's first
// line starts with want. Errors name the command, never its arguments.
func redisCall(conn net.Conn, r *bufio.Reader, want string, args ...string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := io.WriteString(conn, b.String()); err != nil {
		return err
	}
	line, err := r.ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, want) {
		return fmt.Errorf("%s answered %q", args[0], strings.TrimSpace(line))
	}
	return nil
}

// etcdHealth asks etcd's /health endpoint, which answers {"health":"true"}
// once the member has a leader and serves requests.
func etcdHealth(url string) error {
	return httpHealth(nil, url, `"health":"true"`)
}

// httpHealth is the readiness check of servers with an HTTP health
// endpoint: one GET of base+"/health" through transport (nil:
// http.DefaultTransport), within a second, succeeds when the server answers
// 200 and the first 4 KiB of the body contain marker. Otherwise the error
// says why (the request's error, or the status and that part of the body),
// for Start to report when the server never becomes ready.
func httpHealth(transport http.RoundTripper, base, marker string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/health", nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Transport: transport}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), marker) {
		return fmt.Errorf("/health answered %d %s", resp.StatusCode, strings.TrimSpace(string(body)))
	}
	return nil
}

// tail returns the last lines of a log file.
func tail(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > 30 {
		lines = lines[len(lines)-30:]
	}
	return strings.Join(lines, "\n")
}
