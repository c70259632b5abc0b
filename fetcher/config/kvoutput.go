package config

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/certfetch/certfetch/internal/kvclient"
	"github.com/certfetch/certfetch/internal/secret"
)

// Defaults of the Redis and etcd connections.
const (
	// DefaultStorageRootKey prefixes certfetch's state in Redis or etcd:
	// outside Traefik's default rootKey, so Traefik never reads (or lists)
	// private keys.
	DefaultStorageRootKey = "certfetch"
	// maxRedisDB bounds db; Redis itself rejects a number above its
	// "databases" setting when connecting.
	maxRedisDB = 65535
)

// RedisConnection is how certfetch reaches a Redis server: output.redis
// (for Traefik's providers.redis) and storage.redis.
type RedisConnection struct {
	// Address is host:port.
	Address string
	// Username is the ACL user; empty for the default user.
	Username string
	// Password was read from passwordFile (line endings trimmed); zero
	// when no passwordFile is set.
	Password secret.Secret
	// DB is the database number, as Traefik's providers.redis.db.
	DB int
	// TLS is nil for a plain TCP connection.
	TLS *ClientTLS
	// RootKey prefixes every key: Traefik's providers.redis.rootKey for an
	// output, certfetch's own prefix for storage.
	RootKey string
	// Timeout bounds one operation.
	Timeout time.Duration
}

// EtcdConnection is how certfetch reaches an etcd cluster: output.etcd (for
// Traefik's providers.etcd) and storage.etcd.
type EtcdConnection struct {
	// Endpoints are host:port or http(s)://host:port.
	Endpoints []string
	// Username and Password authenticate with etcd's auth; both or neither.
	Username string
	Password secret.Secret
	// TLS is nil for plain connections.
	TLS *ClientTLS
	// RootKey prefixes every key: Traefik's providers.etcd.rootKey for an
	// output, certfetch's own prefix for storage.
	RootKey string
	// Timeout bounds one operation.
	Timeout time.Duration
}

// ClientTLS is the TLS client configuration of a KV store connection. All
// paths are absolute; the files were readable and well-formed at load time.
type ClientTLS struct {
	// CAFile holds the PEM roots that verify the server; empty trusts the
	// system roots.
	CAFile string
	// CertFile and KeyFile are a client certificate (both or neither).
	CertFile string
	KeyFile  string
}

// rootKeyPattern accepts slash-separated segments of letters, digits, '.',
// '_' and '-', starting with a letter or digit. The first character matters:
// the KV outputs keep their index under "_certfetch/", outside the key range
// Traefik lists and watches for a rootKey (every key starting with it); a
// rootKey starting with a letter or digit can never be a prefix of
// "_certfetch/...".
var rootKeyPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9._-]+)*$`)

func (d *decoder) redisConnection(f *field, rootKey string) *RedisConnection {
	out := &RedisConnection{RootKey: rootKey, Timeout: kvclient.DefaultTimeout}
	m, ok := d.mapping(f.value, f.path, "address", "username", "passwordFile", "db", "tls", "rootKey", "timeout")
	if !ok {
		return out
	}
	if a := m.require(d, "address"); a != nil {
		out.Address, _ = d.endpoint(a.value, a.path, false)
	}
	if u := m.get("username"); u != nil {
		out.Username, _ = d.str(u.value, u.path)
	}
	if p := m.get("passwordFile"); p != nil {
		out.Password, _ = d.password(p)
	}
	if db := m.get("db"); db != nil {
		out.DB, _ = d.intRange(db.value, db.path, 0, maxRedisDB)
	}
	d.kvCommon(m, &out.TLS, &out.RootKey, &out.Timeout)
	return out
}

func (d *decoder) etcdConnection(f *field, rootKey string) *EtcdConnection {
	out := &EtcdConnection{RootKey: rootKey, Timeout: kvclient.DefaultTimeout}
	m, ok := d.mapping(f.value, f.path, "endpoints", "username", "passwordFile", "tls", "rootKey", "timeout")
	if !ok {
		return out
	}
	if e := m.require(d, "endpoints"); e != nil {
		items, _ := d.list(e)
		if e.value.Kind == yaml.SequenceNode && len(items) == 0 {
			d.fail(e.value, e.path, "must list at least one endpoint")
		}
		for i, n := range items {
			if s, ok := d.endpoint(n, index(e.path, i), true); ok {
				out.Endpoints = append(out.Endpoints, s)
			}
		}
	}
	u, p := m.get("username"), m.get("passwordFile")
	if u != nil {
		out.Username, _ = d.str(u.value, u.path)
	}
	if p != nil {
		out.Password, _ = d.password(p)
	}
	// etcd authenticates a user with a password; one without the other is
	// a configuration that can only fail at the first publication.
	switch {
	case u != nil && p == nil:
		d.fail(u.key, f.path+".passwordFile", "required when username is set (etcd authenticates with both)")
	case p != nil && u == nil:
		d.fail(p.key, f.path+".username", "required when passwordFile is set (etcd authenticates with both)")
	}
	d.kvCommon(m, &out.TLS, &out.RootKey, &out.Timeout)
	return out
}

// kvCommon decodes the keys Redis and etcd share: tls, rootKey, timeout.
func (d *decoder) kvCommon(m fields, tlsOut **ClientTLS, rootKey *string, timeout *time.Duration) {
	if t := m.get("tls"); t != nil {
		*tlsOut = d.clientTLS(t)
	}
	if r := m.get("rootKey"); r != nil {
		if s, ok := d.str(r.value, r.path); ok {
			if rootKeyPattern.MatchString(s) {
				*rootKey = s
			} else {
				d.fail(r.value, r.path, "must be slash-separated segments of letters, digits, '.', '_' and '-' starting with a letter or digit, such as traefik, got %q", s)
			}
		}
	}
	if t := m.get("timeout"); t != nil {
		if v, ok := d.duration(t.value, t.path); ok {
			*timeout = v
		}
	}
}

// endpoint decodes host:port, or, when urls is set, also http://host:port
// or https://host:port (etcd's spelling).
func (d *decoder) endpoint(n *yaml.Node, path string, urls bool) (string, bool) {
	s, ok := d.str(n, path)
	if !ok {
		return "", false
	}
	hostPort := s
	if urls && strings.Contains(s, "://") {
		u, err := url.Parse(s)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
			d.fail(n, path, "must be host:port or http(s)://host:port, such as 127.0.0.1:2379, got %q", s)
			return "", false
		}
		hostPort = u.Host
	}
	host, port, err := net.SplitHostPort(hostPort)
	p, perr := strconv.Atoi(port)
	if err != nil || host == "" || perr != nil || p < 1 || p > 65535 {
		want := "host:port"
		if urls {
			want = "host:port or http(s)://host:port"
		}
		d.fail(n, path, "must be %s with a port from 1 to 65535, got %q", want, s)
		return "", false
	}
	return s, true
}

// password reads passwordFile. Only the line ending is trimmed: a password
// may contain spaces. Messages name the file, never its content.
func (d *decoder) password(f *field) (secret.Secret, bool) {
	p, ok := d.path(f.value, f.path)
	if !ok {
		return secret.Secret{}, false
	}
	data, err := os.ReadFile(p)
	if err != nil {
		d.fail(f.value, f.path, "cannot read the password: %v", err)
		return secret.Secret{}, false
	}
	pw := strings.TrimRight(string(data), "\r\n")
	if pw == "" {
		d.fail(f.value, f.path, "the password file %s is empty", p)
		return secret.Secret{}, false
	}
	return secret.New(pw), true
}

// clientTLS decodes tls: caFile, certFile, keyFile. The files are loaded
// here so that a broken file is reported with its line, not at the first
// publication.
func (d *decoder) clientTLS(f *field) *ClientTLS {
	out := &ClientTLS{}
	m, ok := d.mapping(f.value, f.path, "caFile", "certFile", "keyFile")
	if !ok {
		return out
	}
	if c := m.get("caFile"); c != nil {
		if p, ok := d.path(c.value, c.path); ok {
			data, err := os.ReadFile(p)
			switch {
			case err != nil:
				d.fail(c.value, c.path, "cannot read: %v", err)
			case !x509.NewCertPool().AppendCertsFromPEM(data):
				d.fail(c.value, c.path, "no PEM certificate in %s", p)
			default:
				out.CAFile = p
			}
		}
	}
	cert, key := m.get("certFile"), m.get("keyFile")
	switch {
	case cert != nil && key == nil:
		d.fail(cert.key, f.path+".keyFile", "required when certFile is set")
	case key != nil && cert == nil:
		d.fail(key.key, f.path+".certFile", "required when keyFile is set")
	case cert != nil && key != nil:
		cp, cok := d.path(cert.value, cert.path)
		kp, kok := d.path(key.value, key.path)
		if !cok || !kok {
			break
		}
		// The error names the files and what is wrong, never key material.
		if _, err := tls.LoadX509KeyPair(cp, kp); err != nil {
			d.fail(cert.value, cert.path, "cannot load the client certificate and key: %v", err)
			break
		}
		out.CertFile, out.KeyFile = cp, kp
	}
	return out
}

// ClientConfig builds the TLS client configuration; nil when c is nil. The
// server name is the first endpoint's host (an IP address is verified
// against the certificate's IP SANs).
func (c *ClientTLS) ClientConfig(endpoints []string) (*tls.Config, error) {
	if c == nil {
		return nil, nil
	}
	out := &tls.Config{MinVersion: tls.VersionTLS12}
	if len(endpoints) > 0 {
		hostPort := endpoints[0]
		if u, err := url.Parse(hostPort); err == nil && strings.Contains(hostPort, "://") {
			hostPort = u.Host
		}
		if host, _, err := net.SplitHostPort(hostPort); err == nil {
			out.ServerName = host
		}
	}
	if c.CAFile != "" {
		data, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tls caFile: %w", err)
		}
		out.RootCAs = x509.NewCertPool()
		if !out.RootCAs.AppendCertsFromPEM(data) {
			return nil, fmt.Errorf("tls caFile %s: no PEM certificate", c.CAFile)
		}
	}
	if c.CertFile != "" {
		pair, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("tls certFile/keyFile: %w", err)
		}
		out.Certificates = []tls.Certificate{pair}
	}
	return out, nil
}
