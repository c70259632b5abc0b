package fetcher

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/certfetch/certfetch/acme"
	"github.com/certfetch/certfetch/fetcher/config"
	"github.com/certfetch/certfetch/fetcher/store"
	"github.com/certfetch/certfetch/fetcher/traefik"
)

func TestReconcile(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	cfg := &config.Config{
		Resolvers: map[string]*config.Resolver{
			"le":  {Name: "le"},
			"ec":  {Name: "ec", Routers: config.Routers{KeyType: acme.EC256}},
			"dns": {Name: "dns"},
		},
		Certificates: []*config.Certificate{
			{Name: "file", Domains: []string{"f.example.com"}, Resolver: "le"},
			{Name: "taken.example.com", Domains: []string{"other.example.com"}, Resolver: "le"},
		},
		Traefik: &config.Traefik{WithdrawAfter: 10 * time.Minute},
	}
	want := func(resolver string, domains ...string) traefik.Wanted {
		return traefik.Wanted{Resolver: resolver, Domains: domains, Routers: []string{domains[0] + "@file"},
			Wildcard: strings.HasPrefix(domains[0], "*.") || len(domains) > 1 && strings.HasPrefix(domains[1], "*.")}
	}
	discovered := func(name, resolver string, domains ...string) store.DiscoveredCertificate {
		return store.DiscoveredCertificate{Name: name, Resolver: resolver, Domains: domains, KeyType: config.DefaultRoutersKeyType,
			Routers: []string{domains[0] + "@file"}}
	}
	missing := func(dc store.DiscoveredCertificate, since time.Time) store.DiscoveredCertificate {
		dc.MissingSince = since
		return dc
	}
	noneStored := func(string) acme.KeyType { return "" }

	tests := []struct {
		desc         string
		prev         []store.DiscoveredCertificate
		wanted       []traefik.Wanted
		stored       func(string) acme.KeyType
		want         []store.DiscoveredCertificate
		wantProblems []string // routers
	}{
		{
			desc:   "new routers take the derived name and Traefik's default key type",
			wanted: []traefik.Wanted{want("le", "a.example.com", "b.example.com")},
			want:   []store.DiscoveredCertificate{discovered("a.example.com", "le", "a.example.com", "b.example.com")},
		},
		{
			desc:   "the stored certificate's key type is kept (an imported one)",
			wanted: []traefik.Wanted{want("le", "a.example.com")},
			stored: func(name string) acme.KeyType { return acme.EC384 },
			want: []store.DiscoveredCertificate{func() store.DiscoveredCertificate {
				dc := discovered("a.example.com", "le", "a.example.com")
				dc.KeyType = acme.EC384
				return dc
			}()},
		},
		{
			desc:   "the resolver's routers.keyType rules",
			wanted: []traefik.Wanted{want("ec", "a.example.com")},
			stored: func(name string) acme.KeyType { return acme.RSA2048 },
			want: []store.DiscoveredCertificate{func() store.DiscoveredCertificate {
				dc := discovered("a.example.com", "ec", "a.example.com")
				dc.KeyType = acme.EC256
				return dc
			}()},
		},
		{
			desc:   "the file's certificate serves a router asking for the same domains",
			wanted: []traefik.Wanted{want("le", "f.example.com")},
		},
		{
			desc:         "the file's domains on another resolver are a conflict",
			wanted:       []traefik.Wanted{want("dns", "f.example.com")},
			wantProblems: []string{"f.example.com@file"},
		},
		{
			desc:         "a name the file gives to other domains is a conflict",
			wanted:       []traefik.Wanted{want("le", "taken.example.com")},
			wantProblems: []string{"taken.example.com@file"},
		},
		{
			desc:   "two routers' certificates with one main name: the second gets a hash",
			wanted: []traefik.Wanted{want("le", "a.example.com"), want("le", "a.example.com", "b.example.com")},
			want: []store.DiscoveredCertificate{
				discovered("a.example.com", "le", "a.example.com"),
				discovered("a.example.com-"+hash8("a.example.com,b.example.com"), "le", "a.example.com", "b.example.com"),
			},
		},
		{
			desc:   "a known certificate keeps its name whatever the order of the routers",
			prev:   []store.DiscoveredCertificate{discovered("a.example.com-12345678", "le", "a.example.com", "b.example.com")},
			wanted: []traefik.Wanted{want("le", "a.example.com", "b.example.com"), want("le", "a.example.com")},
			want: []store.DiscoveredCertificate{
				discovered("a.example.com", "le", "a.example.com"),
				discovered("a.example.com-12345678", "le", "a.example.com", "b.example.com"),
			},
		},
		{
			desc:         "a name no CA issues for is reported",
			wanted:       []traefik.Wanted{want("le", "under_score.example.com")},
			wantProblems: []string{"under_score.example.com@file"},
		},
		{
			desc:         "a wildcard on a resolver without DNS-01 is reported per router",
			wanted:       []traefik.Wanted{want("le", "*.example.com", "example.com")},
			wantProblems: []string{"*.example.com@file"},
		},
		{
			desc: "a vanished router's certificate stays, missing since now",
			prev: []store.DiscoveredCertificate{discovered("gone.example.com", "le", "gone.example.com")},
			want: []store.DiscoveredCertificate{missing(discovered("gone.example.com", "le", "gone.example.com"), now)},
		},
		{
			desc: "within the grace period it stays",
			prev: []store.DiscoveredCertificate{missing(discovered("gone.example.com", "le", "gone.example.com"), now.Add(-9*time.Minute))},
			want: []store.DiscoveredCertificate{missing(discovered("gone.example.com", "le", "gone.example.com"), now.Add(-9*time.Minute))},
		},
		{
			desc: "after the grace period it goes",
			prev: []store.DiscoveredCertificate{missing(discovered("gone.example.com", "le", "gone.example.com"), now.Add(-10*time.Minute))},
		},
		{
			desc:   "a router that comes back clears the missing mark",
			prev:   []store.DiscoveredCertificate{missing(discovered("a.example.com", "le", "a.example.com"), now.Add(-9*time.Minute))},
			wanted: []traefik.Wanted{want("le", "a.example.com")},
			want:   []store.DiscoveredCertificate{discovered("a.example.com", "le", "a.example.com")},
		},
		{
			desc:   "domains changed under one name: the new certificate replaces the old at once",
			prev:   []store.DiscoveredCertificate{discovered("a.example.com", "le", "a.example.com")},
			wanted: []traefik.Wanted{want("le", "a.example.com", "c.example.com")},
			want:   []store.DiscoveredCertificate{discovered("a.example.com", "le", "a.example.com", "c.example.com")},
		},
		{
			desc: "a removed resolver's certificates go",
			prev: []store.DiscoveredCertificate{discovered("a.example.com", "removed", "a.example.com")},
		},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			stored := tc.stored
			if stored == nil {
				stored = noneStored
			}
			got := reconcile(cfg, &store.Discovery{Certificates: tc.prev}, tc.wanted, nil, now, stored)
			assert.Equal(t, tc.want, got.Certificates)
			var routers []string
			for _, p := range got.Problems {
				routers = append(routers, p.Router)
			}
			assert.Equal(t, tc.wantProblems, routers)
			assert.Equal(t, now, got.LastSuccess)
		})
	}
}

func hash8(domains string) string {
	name := discoveredName(strings.Split(domains, ","), map[string]bool{config.DerivedName(strings.Split(domains, ",")[0]): true})
	return name[strings.LastIndex(name, "-")+1:]
}

func TestDiscoveredNameFitsTheLimit(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("a", 60) + "." + strings.Repeat("b", 60) + "." + strings.Repeat("c", 60) + "." + strings.Repeat("d", 60) + ".example"
	name := discoveredName([]string{"*." + long}, map[string]bool{})
	assert.LessOrEqual(t, len(name), config.MaxNameLength)
	require.True(t, strings.HasPrefix(name, "wildcard.aaa"))
	assert.NotEqual(t, name, discoveredName([]string{"*." + long, "x.example"}, map[string]bool{}), "different domains, different names")
}
