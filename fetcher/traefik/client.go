package traefik

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/certfetch/certfetch/internal/secret"
)

// Config of the API client.
type Config struct {
	// URL is Traefik's API base: http://127.0.0.1:8080 (api.insecure on the traefik entry
	// point) or https://traefik.example/ (a router to api@internal). The client requests
	// <URL>/api/http/routers and <URL>/api/tcp/routers.
	URL string
	// Username and Password are sent as basic auth when Username is set (a basicAuth
	// middleware on the API's router).
	Username string
	Password secret.Secret
	// RootCAs verify an https URL; nil means the system roots.
	RootCAs *x509.CertPool
	// Timeout bounds one whole Routers call, every page of both lists; 0 means
	// DefaultTimeout.
	Timeout time.Duration
	// PageSize is the per_page of each request; 0 means DefaultPageSize.
	PageSize int
}

const (
	// DefaultTimeout bounds a poll when Config.Timeout is 0: 1,000 routers take two
	// requests and about 50 ms from a local Traefik (README's figures), so 10 s
	// leaves room for a loaded Traefik without holding a poll up for long.
	DefaultTimeout = 10 * time.Second
	// DefaultPageSize is far above Traefik's own default (100) so that most installations
	// are read in one request per kind: a one-page read cannot be torn by a reload
	// between pages and needs no second read (see Routers). Traefik sets no upper bound,
	// and it builds and sorts the whole list for every page anyway, so one large page
	// costs it less than many small ones; at about 370 bytes per router (measured,
	// README) a full page is under 2 MB.
	DefaultPageSize = 5000
	// maxPageBytes bounds one page's body: about 1 KiB per router in the worst case seen,
	// so a page of DefaultPageSize stays far below it, and a URL that streams something
	// else without end is cut off long before it fills memory.
	maxPageBytes = 64 << 20
)

// Client reads Traefik's routers. It is safe for concurrent use.
type Client struct {
	base     *url.URL
	username string
	password secret.Secret
	timeout  time.Duration
	pageSize int
	http     *http.Client
}

// NewClient checks cfg and returns a client; it makes no request.
func NewClient(cfg Config) (*Client, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil {
		// url.Error repeats the URL, which may hold credentials: say only what failed.
		return nil, errors.New("traefik api: the URL cannot be parsed")
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("traefik api: URL %s: want http://host[:port][/path] or https://...", u.Redacted())
	}
	if u.User != nil {
		return nil, fmt.Errorf("traefik api: URL %s: give credentials as username and password, not in the URL", u.Redacted())
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("traefik api: URL %s: no query or fragment, only the API's base", u.Redacted())
	}
	if cfg.Password.Reveal() != "" && cfg.Username == "" {
		return nil, fmt.Errorf("traefik api %s: a password without a username", u)
	}
	if cfg.Timeout < 0 || cfg.PageSize < 0 {
		return nil, fmt.Errorf("traefik api %s: negative timeout or page size", u)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.TLSClientConfig = &tls.Config{RootCAs: cfg.RootCAs, MinVersion: tls.VersionTLS12}
	c := &Client{
		base: u, username: cfg.Username, password: cfg.Password,
		timeout: cfg.Timeout, pageSize: cfg.PageSize,
		http: &http.Client{Transport: transport},
	}
	if c.timeout == 0 {
		c.timeout = DefaultTimeout
	}
	if c.pageSize == 0 {
		c.pageSize = DefaultPageSize
	}
	return c, nil
}

// Routers reads every page of Traefik's HTTP routers, then of its TCP routers.
//
// The Snapshot is complete or there is none: a request that fails, an answer other than
// 200, a body that is truncated, not a JSON array of routers or followed by anything, a
// missing or unexpected X-Next-Page, a router seen twice, or the end of ctx or of the
// Timeout, each fail the whole call. A caller withdraws certificates of routers that are
// gone, so it must never see a partial list. When a list takes several pages, Traefik
// may reload between two of them and shift the routers from one page to the next; the
// list is then read a second time, and a second read that differs from the first fails
// the call too (the next poll will find the configuration settled).
//
// Snapshot.Requests and Bytes count every request and body byte of the call, the second
// reads included. Errors name the URL, never the password.
func (c *Client) Routers(ctx context.Context) (Snapshot, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	var s Snapshot
	for _, kind := range []string{"http", "tcp"} {
		routers, err := c.stableList(ctx, kind, &s)
		if err != nil {
			return Snapshot{}, err
		}
		s.Routers = append(s.Routers, routers...)
	}
	return s, nil
}

// stableList reads one kind's list, twice when it spans several pages (see Routers).
func (c *Client) stableList(ctx context.Context, kind string, s *Snapshot) ([]Router, error) {
	first, pages, err := c.list(ctx, kind, s)
	if err != nil || pages == 1 {
		return first, err
	}
	second, _, err := c.list(ctx, kind, s)
	if err != nil {
		return nil, err
	}
	if !reflect.DeepEqual(first, second) {
		return nil, fmt.Errorf("traefik api %s: the %s routers changed while %d pages were read; not using them", c.base, kind, pages)
	}
	return first, nil
}

// list reads every page of one kind's list once.
func (c *Client) list(ctx context.Context, kind string, s *Snapshot) ([]Router, int, error) {
	var routers []Router
	seen := map[string]bool{}
	for page := 1; ; page++ {
		batch, next, err := c.page(ctx, kind, page, s)
		if err != nil {
			return nil, 0, err
		}
		for _, r := range batch {
			if seen[r.Name] {
				return nil, 0, fmt.Errorf("traefik api %s: %s router %s listed twice (a reload between pages); not using the list", c.base, kind, r.Name)
			}
			seen[r.Name] = true
			r.TCP = kind == "tcp"
			routers = append(routers, r)
		}
		// Traefik answers X-Next-Page: page+1 while routers remain, and 1 after the last.
		switch next {
		case 1:
			return routers, page, nil
		case page + 1:
		default:
			return nil, 0, fmt.Errorf("traefik api %s: page %d of the %s routers names %d as the next page; want %d or 1", c.base, page, kind, next, page+1)
		}
	}
}

// page reads one page and returns its routers and its X-Next-Page.
func (c *Client) page(ctx context.Context, kind string, page int, s *Snapshot) ([]Router, int, error) {
	u := *c.base
	u.Path += "/api/" + kind + "/routers"
	u.RawQuery = url.Values{"per_page": {strconv.Itoa(c.pageSize)}, "page": {strconv.Itoa(page)}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, 0, fmt.Errorf("traefik api %s: %w", u.Redacted(), err)
	}
	if c.username != "" {
		req.SetBasicAuth(c.username, c.password.Reveal())
	}
	req.Header.Set("Accept", "application/json")
	s.Requests++
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("traefik api: %w", err)
	}
	defer resp.Body.Close()
	body := &countingReader{r: io.LimitReader(resp.Body, maxPageBytes+1)}
	defer func() { s.Bytes += body.n }()

	switch {
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return nil, 0, fmt.Errorf("traefik api %s: %s: check the username and password", u.Redacted(), resp.Status)
	case resp.StatusCode != http.StatusOK:
		snippet, _ := io.ReadAll(io.LimitReader(body, 200))
		return nil, 0, fmt.Errorf("traefik api %s: %s: %s", u.Redacted(), resp.Status, strings.TrimSpace(string(snippet)))
	}
	next, err := strconv.Atoi(resp.Header.Get("X-Next-Page"))
	if err != nil {
		return nil, 0, fmt.Errorf("traefik api %s: no X-Next-Page header: is this Traefik's API?", u.Redacted())
	}

	var batch []Router
	dec := json.NewDecoder(body)
	if err := dec.Decode(&batch); err != nil {
		if body.n > maxPageBytes {
			return nil, 0, fmt.Errorf("traefik api %s: page larger than %d bytes", u.Redacted(), maxPageBytes)
		}
		return nil, 0, fmt.Errorf("traefik api %s: decode routers: %w", u.Redacted(), err)
	}
	if batch == nil {
		return nil, 0, fmt.Errorf("traefik api %s: the body is null, not a list of routers", u.Redacted())
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, 0, fmt.Errorf("traefik api %s: data after the list of routers", u.Redacted())
	}
	for i, r := range batch {
		if r.Name == "" {
			return nil, 0, fmt.Errorf("traefik api %s: router %d of page %d has no name", u.Redacted(), i, page)
		}
	}
	return batch, next, nil
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
