package traefik_test

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/certfetch/certfetch/fetcher/traefik"
	"github.com/certfetch/certfetch/internal/secret"
)

// fakeAPI serves /api/http/routers and /api/tcp/routers paginated as Traefik v3.6.12's
// pkg/api does (per_page, page, X-Next-Page: the next page or 1 after the last).
// fault, when set, may answer a request itself (it returns true) to break it.
type fakeAPI struct {
	http, tcp []traefik.Router
	fault     func(w http.ResponseWriter, r *http.Request, page int) bool
	requests  atomic.Int32
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.requests.Add(1)
	list := map[string][]traefik.Router{"/api/http/routers": f.http, "/api/tcp/routers": f.tcp}[r.URL.Path]
	perPage, _ := strconv.Atoi(r.URL.Query().Get("per_page"))
	page, _ := strconv.Atoi(r.URL.Query().Get("page"))
	if perPage <= 0 || page <= 0 {
		http.Error(w, "bad page", http.StatusBadRequest)
		return
	}
	if f.fault != nil && f.fault(w, r, page) {
		return
	}
	start := min((page-1)*perPage, len(list))
	end := min(start+perPage, len(list))
	next := 1
	if page*perPage < len(list) {
		next = page + 1
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Next-Page", strconv.Itoa(next))
	// Traefik encodes an empty page as [], never null.
	_ = json.NewEncoder(w).Encode(append([]traefik.Router{}, list[start:end]...))
}

func routers(prefix string, n int) []traefik.Router {
	out := make([]traefik.Router, n)
	for i := range out {
		name := fmt.Sprintf("%s%03d", prefix, i)
		out[i] = traefik.Router{
			Name: name + "@file", Provider: "file", Rule: "Host(`" + name + ".example.com`)", Status: "enabled",
			EntryPoints: []string{"websecure"}, TLS: &traefik.RouterTLS{CertResolver: "le", Options: "default"},
		}
	}
	return out
}

func newClient(t *testing.T, cfg traefik.Config) *traefik.Client {
	t.Helper()
	c, err := traefik.NewClient(cfg)
	require.NoError(t, err)
	return c
}

func TestRoutersReadsEveryPage(t *testing.T) {
	t.Parallel()
	api := &fakeAPI{http: routers("web", 25), tcp: routers("db", 3)}
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)

	s, err := newClient(t, traefik.Config{URL: srv.URL + "/", PageSize: 10}).Routers(t.Context())
	require.NoError(t, err)
	require.Len(t, s.Routers, 28)
	assert.Equal(t, "web000@file", s.Routers[0].Name)
	assert.Equal(t, "web024@file", s.Routers[24].Name)
	assert.False(t, s.Routers[24].TCP)
	assert.Equal(t, "db000@file", s.Routers[25].Name)
	assert.True(t, s.Routers[25].TCP)
	assert.Equal(t, "le", s.Routers[27].TLS.CertResolver)
	// Three HTTP pages read twice (a multi-page list is read again to see it did not
	// change), one TCP page once.
	assert.Equal(t, 7, s.Requests)
	assert.Equal(t, int32(7), api.requests.Load())
	assert.Positive(t, s.Bytes)
}

// TestRoutersNeverPartial breaks one request of a read in each way Traefik, a proxy in
// front of it or the network can, and checks that the read fails as a whole.
func TestRoutersNeverPartial(t *testing.T) {
	t.Parallel()
	// onPage2 breaks the second page of the HTTP list only.
	onPage2 := func(fn func(w http.ResponseWriter)) func(http.ResponseWriter, *http.Request, int) bool {
		return func(w http.ResponseWriter, r *http.Request, page int) bool {
			if page != 2 || !strings.HasPrefix(r.URL.Path, "/api/http/") {
				return false
			}
			fn(w)
			return true
		}
	}
	tests := []struct {
		desc  string
		fault func(http.ResponseWriter, *http.Request, int) bool
		err   string
	}{
		{desc: "500", fault: onPage2(func(w http.ResponseWriter) { http.Error(w, "boom", http.StatusInternalServerError) }),
			err: "500 Internal Server Error: boom"},
		{desc: "404 (not Traefik's API)", fault: onPage2(func(w http.ResponseWriter) { http.NotFound(w, nil) }),
			err: "404 Not Found"},
		{desc: "truncated body", fault: onPage2(func(w http.ResponseWriter) {
			w.Header().Set("X-Next-Page", "3")
			w.Header().Set("Content-Length", "1000")
			_, _ = w.Write([]byte(`[{"name":"a@file","rule":"Host(`))
		}), err: "decode routers: unexpected EOF"},
		{desc: "cut JSON", fault: onPage2(func(w http.ResponseWriter) {
			w.Header().Set("X-Next-Page", "3")
			_, _ = w.Write([]byte(`[{"name":"a@file"},`))
		}), err: "decode routers: unexpected EOF"},
		{desc: "not a list", fault: onPage2(func(w http.ResponseWriter) {
			w.Header().Set("X-Next-Page", "3")
			_, _ = w.Write([]byte(`{"message":"hi"}`))
		}), err: "decode routers: json: cannot unmarshal object"},
		{desc: "null", fault: onPage2(func(w http.ResponseWriter) {
			w.Header().Set("X-Next-Page", "3")
			_, _ = w.Write([]byte(`null`))
		}), err: "the body is null"},
		{desc: "trailing data", fault: onPage2(func(w http.ResponseWriter) {
			w.Header().Set("X-Next-Page", "3")
			_, _ = w.Write([]byte(`[] []`))
		}), err: "data after the list of routers"},
		{desc: "router without a name", fault: onPage2(func(w http.ResponseWriter) {
			w.Header().Set("X-Next-Page", "3")
			_, _ = w.Write([]byte(`[{"rule":"Host(` + "`a`" + `)"}]`))
		}), err: "router 0 of page 2 has no name"},
		{desc: "no X-Next-Page", fault: onPage2(func(w http.ResponseWriter) { _, _ = w.Write([]byte(`[]`)) }),
			err: "no X-Next-Page header"},
		{desc: "X-Next-Page jumps", fault: onPage2(func(w http.ResponseWriter) {
			w.Header().Set("X-Next-Page", "7")
			_, _ = w.Write([]byte(`[]`))
		}), err: "page 2 of the http routers names 7 as the next page; want 3 or 1"},
		{desc: "a router listed twice (a reload shifted the pages)", fault: onPage2(func(w http.ResponseWriter) {
			w.Header().Set("X-Next-Page", "3")
			_ = json.NewEncoder(w).Encode(routers("web", 1))
		}), err: "http router web000@file listed twice"},
		{desc: "the list changed between the two reads", fault: func() func(http.ResponseWriter, *http.Request, int) bool {
			var calls atomic.Int32
			return onPage2(func(w http.ResponseWriter) {
				list := routers("web", 20)[10:20]
				if calls.Add(1) == 2 {
					list[3].Rule = "Host(`changed.example.com`)"
				}
				w.Header().Set("X-Next-Page", "3")
				_ = json.NewEncoder(w).Encode(list)
			})
		}(), err: "the http routers changed while 3 pages were read"},
		{desc: "TCP list fails after a good HTTP list", fault: func(w http.ResponseWriter, r *http.Request, _ int) bool {
			if !strings.HasPrefix(r.URL.Path, "/api/tcp/") {
				return false
			}
			http.Error(w, "down", http.StatusBadGateway)
			return true
		}, err: "502 Bad Gateway"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			srv := httptest.NewServer(&fakeAPI{http: routers("web", 25), tcp: routers("db", 3), fault: tc.fault})
			t.Cleanup(srv.Close)
			s, err := newClient(t, traefik.Config{URL: srv.URL, PageSize: 10}).Routers(t.Context())
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.err)
			assert.Zero(t, s, "a failed read returns no routers")
		})
	}
}

func TestRoutersTimeout(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	srv := httptest.NewServer(&fakeAPI{http: routers("web", 25), fault: func(_ http.ResponseWriter, _ *http.Request, page int) bool {
		if page != 2 {
			return false
		}
		<-release
		return true
	}})
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) }) // runs before srv.Close: the handler must return first

	start := time.Now()
	s, err := newClient(t, traefik.Config{URL: srv.URL, PageSize: 10, Timeout: 300 * time.Millisecond}).Routers(t.Context())
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Zero(t, s)
	assert.Less(t, time.Since(start), 5*time.Second, "the timeout bounds the whole read")
}

func TestRoutersBasicAuthAndTLS(t *testing.T) {
	t.Parallel()
	const user, password = "certfetch", "s3cret-pa55"
	api := &fakeAPI{http: routers("web", 2)}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, p, ok := r.BasicAuth()
		if !ok || u != user || p != password {
			w.Header().Set("WWW-Authenticate", `Basic realm="traefik"`)
			http.Error(w, "401 Unauthorized", http.StatusUnauthorized)
			return
		}
		api.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())

	tests := []struct {
		desc string
		cfg  traefik.Config
		err  string
	}{
		{desc: "right password, server's root", cfg: traefik.Config{URL: srv.URL, Username: user, Password: secret.New(password), RootCAs: roots}},
		{desc: "wrong password", cfg: traefik.Config{URL: srv.URL, Username: user, Password: secret.New("wrong-pa55"), RootCAs: roots},
			err: "401 Unauthorized: check the username and password"},
		{desc: "no credentials", cfg: traefik.Config{URL: srv.URL, RootCAs: roots}, err: "401 Unauthorized"},
		{desc: "system roots do not know the server", cfg: traefik.Config{URL: srv.URL, Username: user, Password: secret.New(password)},
			err: "certificate signed by unknown authority"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			s, err := newClient(t, tc.cfg).Routers(t.Context())
			if tc.err == "" {
				require.NoError(t, err)
				assert.Len(t, s.Routers, 2)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.err)
			assert.NotContains(t, err.Error(), "pa55", "no password in errors")
		})
	}
}

func TestNewClientRefuses(t *testing.T) {
	t.Parallel()
	tests := []struct {
		desc string
		cfg  traefik.Config
		err  string
	}{
		{desc: "no scheme", cfg: traefik.Config{URL: "traefik:8080"}, err: "want http://host"},
		{desc: "ftp", cfg: traefik.Config{URL: "ftp://traefik"}, err: "want http://host"},
		{desc: "credentials in the URL", cfg: traefik.Config{URL: "http://u:hunter2@traefik:8080"}, err: "not in the URL"},
		{desc: "query", cfg: traefik.Config{URL: "http://traefik:8080/?page=2"}, err: "no query"},
		{desc: "password without user", cfg: traefik.Config{URL: "http://traefik:8080", Password: secret.New("hunter2")}, err: "without a username"},
		{desc: "negative timeout", cfg: traefik.Config{URL: "http://traefik:8080", Timeout: -time.Second}, err: "negative"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			_, err := traefik.NewClient(tc.cfg)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.err)
			assert.NotContains(t, err.Error(), "hunter2")
		})
	}
}
