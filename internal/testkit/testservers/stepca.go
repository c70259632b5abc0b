package testservers

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/certfetch/certfetch/internal/testkit/loopbackdns"
)

// StepCABinEnv names the environment variable with the path of the step-ca
// binary. `make test-go` builds step-ca once (nested module test/stepca)
// and sets it.
const StepCABinEnv = "STEPCA_BIN"

// StepCAProvisioner is the name of the ACME provisioner StartStepCA
// configures; it is part of every ACME URL (/acme/<name>/...).
const StepCAProvisioner = "acme"

// stepCAValidity is how long the generated root and intermediate are valid:
// longer than any certificate a test asks for (step-ca refuses to issue
// beyond its intermediate), short enough that a leaked test key is useless.
const stepCAValidity = 30 * 24 * time.Hour

// StepCAOptions configures StartStepCA. The zero value is step-ca's own
// defaults: HTTP-01 on port 80, 24-hour certificates.
type StepCAOptions struct {
	// HTTPPort is the port step-ca dials for HTTP-01 (every name resolves to
	// 127.0.0.1). 0 keeps step-ca's port 80, closed in tests: every HTTP-01
	// validation then fails with "connection refused".
	HTTPPort int
	// CertDuration is the validity of the certificates the ACME provisioner
	// issues (claims.defaultTLSCertDuration); 0 keeps step-ca's 24 h.
	// Durations under 5 minutes lower minTLSCertDuration to match.
	CertDuration time.Duration
}

// StepCA is a running step-ca with one ACME provisioner.
type StepCA struct {
	*Server
	// DirectoryURL is the ACME directory,
	// https://127.0.0.1:<port>/acme/acme/directory.
	DirectoryURL string
	// RootPEM is the root certificate to trust, for the ACME server's TLS
	// certificate and for the certificates step-ca issues (signed by an
	// intermediate the chain includes).
	RootPEM []byte
	// RootFile is a file holding RootPEM, for clients configured by path.
	RootFile string
}

// HTTPClient returns a new client that trusts RootPEM and nothing else.
func (s *StepCA) HTTPClient() *http.Client {
	return &http.Client{Transport: rootTransport(s.RootPEM)}
}

// StartStepCA starts the real step-ca (Smallstep's CA, v0.30.2 as built by
// `make`) with an ACME provisioner, on a free loopback port, and waits until
// it answers /health. Everything it needs is written to a temporary
// directory; no `step` CLI is involved:
//
//   - a root and an intermediate CA (ECDSA P-256), generated with Go's
//     crypto, the intermediate key unencrypted (no password prompt);
//   - ca.json: address 127.0.0.1:<port>, dnsNames 127.0.0.1 and localhost
//     (step-ca issues its own TLS certificate from the intermediate), a
//     bbolt database, one provisioner {"type": "ACME", "name": "acme"} with
//     every challenge type step-ca offers;
//   - STEPPATH points into the directory, so nothing reads or writes ~/.step.
//
// step-ca resolves every name through package loopbackdns (its --resolver
// flag replaces Go's resolver in the whole process), so HTTP-01 validation
// dials 127.0.0.1:80, or 127.0.0.1:HTTPPort when set (--acme-http-port,
// which step-ca accepts only with --insecure).
//
// What the ACME directory offers: newNonce, newAccount, newOrder,
// revokeCert, keyChange; no renewalInfo (no ARI), no meta.profiles, no
// External Account Binding. Certificates are signed during finalize (the
// finalize answer is already "valid"), leaf plus intermediate.
//
// How step-ca v0.30.2 reports an HTTP-01 validation that fails, as
// TestStepCAKeepsFailedChallengePending and
// TestStepCARevalidatesOnEveryChallengePost observe it with lego's
// low-level client (and as acme/challenge.go, http01Validate and
// storeError, and acme/authorization.go, UpdateStatus, explain):
//
//   - It validates synchronously, inside the POST to the challenge URL (one
//     GET to http://<name>:<port>/.well-known/acme-challenge/<token>, about
//     25 ms for a refused connection), and answers 200 with the challenge as
//     it then is, never "processing".
//   - Key authorization not fetched (connection refused on 127.0.0.1:80,
//     or the target answered 404): the challenge stays "pending" with
//     "error": {"type": "urn:ietf:params:acme:error:connection",
//     "detail": "The server could not connect to validation target"},
//     no "status" member. The cause (`connect: connection refused`, the
//     404) is reported nowhere: not in the answer, not in step-ca's log,
//     whose request line says status=200. The authorization stays
//     "pending" (its challenges carry the error, it has no "error" member
//     of its own) and so does the order, without "error".
//   - Key authorization fetched but wrong: the challenge turns "invalid"
//     with {"type": "urn:ietf:params:acme:error:rejectedIdentifier",
//     "detail": "The server will not issue certificates for the
//     identifier"}, yet the authorization and the order stay "pending":
//     step-ca turns an authorization invalid only when it expires.
//   - Nothing changes over time: step-ca never retries on its own, and
//     polls read the same statuses until the order and its authorizations
//     expire, 24 h after the order was created (then "invalid", "order has
//     expired"; read in the source, not waited for).
//   - Every POST to a pending challenge validates again, the POST-as-GET
//     of lego's Challenges.Get included (step-ca's GetChallenge handler
//     validates whatever the payload); a POST to a challenge that is no
//     longer pending answers it unchanged. Polling the authorization or
//     the order never validates.
//   - Once the target answers the key authorization, the next challenge
//     POST makes the challenge "valid" (its error removed, "validated"
//     set), the authorization "valid" and the order "ready".
//
// The test fails, never skips, when STEPCA_BIN is not set: run it through
// `make test-go`, which builds step-ca and sets it.
func StartStepCA(t testing.TB, opts StepCAOptions) *StepCA {
	t.Helper()
	bin := stepCABin(t)
	if opts.HTTPPort < 0 || opts.HTTPPort > 65535 || opts.CertDuration < 0 {
		t.Fatalf("testservers: invalid StepCAOptions %+v", opts)
	}

	dir := t.TempDir()
	pki, err := writeStepCAPKI(dir)
	if err != nil {
		t.Fatalf("testservers: step-ca PKI: %v", err)
	}
	dns, err := loopbackdns.Start()
	if err != nil {
		t.Fatalf("testservers: %v", err)
	}
	t.Cleanup(func() { _ = dns.Close() }) // runs after the server's Kill (cleanups run last-in first-out)

	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
	configPath := filepath.Join(dir, "config", "ca.json")
	if err := writeStepCAConfig(configPath, addr, pki, opts); err != nil {
		t.Fatalf("testservers: step-ca configuration: %v", err)
	}
	args := []string{configPath, "--resolver", dns.Addr()}
	if opts.HTTPPort != 0 {
		args = append(args, "--insecure", "--acme-http-port", strconv.Itoa(opts.HTTPPort))
	}
	base := "https://" + addr
	transport := rootTransport(pki.rootPEM)
	s := &Server{t: t, name: "step-ca", bin: bin, args: args, dir: dir, addr: base,
		env:   []string{"STEPPATH=" + filepath.Join(dir, "steppath"), "HOME=" + dir},
		ready: func() error { return stepCAHealth(transport, base) }}
	s.Start()
	return &StepCA{
		Server:       s,
		DirectoryURL: base + "/acme/" + StepCAProvisioner + "/directory",
		RootPEM:      pki.rootPEM,
		RootFile:     pki.rootFile,
	}
}

// stepCABin returns $STEPCA_BIN or fails the test saying how to set it.
func stepCABin(t testing.TB) string {
	t.Helper()
	bin := os.Getenv(StepCABinEnv)
	if bin == "" {
		t.Fatalf("testservers: %s is not set: run the tests through make (`make test-go` builds step-ca once, from test/stepca, and sets %s=<path>)", StepCABinEnv, StepCABinEnv)
		return ""
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("testservers: %s=%s: %v (run the tests through make: `make test-go` builds step-ca)", StepCABinEnv, bin, err)
		return ""
	}
	return bin
}

// stepCAPKI is the CA material StartStepCA writes.
type stepCAPKI struct {
	rootPEM                             []byte
	rootFile, intermediateFile, keyFile string
}

// writeStepCAPKI generates a root and an intermediate (path length 0) and
// writes them, with the intermediate's key, to dir/certs and dir/secrets.
func writeStepCAPKI(dir string) (stepCAPKI, error) {
	notBefore := time.Now().Add(-time.Hour) // tolerate a client clock slightly behind
	notAfter := notBefore.Add(stepCAValidity)
	rootKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return stepCAPKI{}, err
	}
	rootTemplate := &x509.Certificate{
		Subject:               pkix.Name{CommonName: "certfetch test step-ca Root CA"},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            1,
	}
	rootDER, err := createCertificate(rootTemplate, rootTemplate, &rootKey.PublicKey, rootKey)
	if err != nil {
		return stepCAPKI{}, fmt.Errorf("root: %w", err)
	}
	root, err := x509.ParseCertificate(rootDER)
	if err != nil {
		return stepCAPKI{}, err
	}
	intermediateKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return stepCAPKI{}, err
	}
	intermediateTemplate := &x509.Certificate{
		Subject:               pkix.Name{CommonName: "certfetch test step-ca Intermediate CA"},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	intermediateDER, err := createCertificate(intermediateTemplate, root, &intermediateKey.PublicKey, rootKey)
	if err != nil {
		return stepCAPKI{}, fmt.Errorf("intermediate: %w", err)
	}
	keyDER, err := x509.MarshalECPrivateKey(intermediateKey)
	if err != nil {
		return stepCAPKI{}, err
	}

	pki := stepCAPKI{
		rootPEM:          pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: rootDER}),
		rootFile:         filepath.Join(dir, "certs", "root_ca.crt"),
		intermediateFile: filepath.Join(dir, "certs", "intermediate_ca.crt"),
		keyFile:          filepath.Join(dir, "secrets", "intermediate_ca_key"),
	}
	files := []struct {
		path string
		data []byte
		mode os.FileMode
	}{
		{pki.rootFile, pki.rootPEM, 0o644},
		{pki.intermediateFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: intermediateDER}), 0o644},
		{pki.keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600},
	}
	for _, f := range files {
		if err := os.MkdirAll(filepath.Dir(f.path), 0o700); err != nil {
			return stepCAPKI{}, err
		}
		if err := os.WriteFile(f.path, f.data, f.mode); err != nil {
			return stepCAPKI{}, err
		}
	}
	return pki, nil
}

// createCertificate gives template a random 128-bit serial and signs it.
func createCertificate(template, parent *x509.Certificate, pub *ecdsa.PublicKey, signer *ecdsa.PrivateKey) ([]byte, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, err
	}
	template.SerialNumber = serial
	return x509.CreateCertificate(rand.Reader, template, parent, pub, signer)
}

// writeStepCAConfig writes ca.json, the file `step ca init` would write,
// with only what an ACME-only CA needs.
func writeStepCAConfig(path, addr string, pki stepCAPKI, opts StepCAOptions) error {
	provisioner := map[string]any{"type": "ACME", "name": StepCAProvisioner}
	if d := opts.CertDuration; d > 0 {
		claims := map[string]any{
			"defaultTLSCertDuration": d.String(),
			"maxTLSCertDuration":     max(d, 24*time.Hour).String(),
		}
		if d < 5*time.Minute { // step-ca's minTLSCertDuration default
			claims["minTLSCertDuration"] = d.String()
		}
		provisioner["claims"] = claims
	}
	config := map[string]any{
		"root":     pki.rootFile,
		"crt":      pki.intermediateFile,
		"key":      pki.keyFile,
		"address":  addr,
		"dnsNames": []string{"127.0.0.1", "localhost"},
		"logger":   map[string]any{"format": "text"},
		"db": map[string]any{
			"type":       "bbolt",
			"dataSource": filepath.Join(filepath.Dir(filepath.Dir(path)), "db", "step-ca.db"),
		},
		"authority": map[string]any{"provisioners": []any{provisioner}},
		"tls": map[string]any{
			"minVersion": 1.2,
			"maxVersion": 1.3,
		},
	}
	data, err := json.MarshalIndent(config, "", "  ")
	if err != nil {
		return err
	}
	for _, d := range []string{filepath.Dir(path), filepath.Join(filepath.Dir(filepath.Dir(path)), "db")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	return os.WriteFile(path, data, 0o600)
}

// rootTransport trusts rootPEM only.
func rootTransport(rootPEM []byte) *http.Transport {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(rootPEM)
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return transport
}

// stepCAHealth asks step-ca's /health, which answers {"status":"ok"}.
func stepCAHealth(transport http.RoundTripper, base string) error {
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
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"ok"`) {
		return fmt.Errorf("/health answered %d %s", resp.StatusCode, strings.TrimSpace(string(body)))
	}
	return nil
}
