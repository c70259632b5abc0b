package store

import (
	"context"
	"time"

	"github.com/certfetch/certfetch/acme"
)

// discoveryDir/discoveryName hold what certfetch learnt from Traefik's routers: one record, under a
// name no certificate can take (certificate names never contain "/", and this is its
// own directory).
const (
	discoveryDir  = "discovery"
	discoveryName = "routers"
)

// Discovery is what the last successful reads of Traefik's API asked for, kept so that a
// restart, `certfetch once` and `certfetch status` know the discovered certificates
// without Traefik's API (which may be down then), and so that the grace period of a
// vanished router outlives a restart.
type Discovery struct {
	// Certificates are the certificates Traefik's routers ask for, or asked for within
	// the grace period.
	Certificates []DiscoveredCertificate `json:"certificates"`
	// Problems are the routers certfetch cannot serve, from the last successful read.
	Problems []DiscoveryProblem `json:"problems,omitempty"`
	// LastSuccess is when the API was last read in full and something changed (the
	// record is written only on change); FailingSince and LastError describe reads that
	// fail since then (zero and empty while reads succeed).
	LastSuccess  time.Time `json:"lastSuccess,omitzero"`
	FailingSince time.Time `json:"failingSince,omitzero"`
	LastError    string    `json:"lastError,omitempty"`
}

// DiscoveredCertificate is one certificate Traefik's routers ask for.
type DiscoveredCertificate struct {
	Name     string       `json:"name"`
	Resolver string       `json:"resolver"`
	Domains  []string     `json:"domains"`
	KeyType  acme.KeyType `json:"keyType"`
	// Routers are the routers (name@provider) that ask for it.
	Routers []string `json:"routers"`
	// MissingSince is the first successful read of the API that listed no router asking
	// for it; zero while one does.
	MissingSince time.Time `json:"missingSince,omitzero"`
}

// DiscoveryProblem is a router certfetch cannot serve, and why.
type DiscoveryProblem struct {
	Router  string `json:"router"`
	Problem string `json:"problem"`
}

// LoadDiscovery returns the discovery record, or an error wrapping ErrNotFound when
// there is none (discovery never read the API successfully).
func (s *Store) LoadDiscovery(ctx context.Context) (*Discovery, error) {
	var d Discovery
	if err := s.read(ctx, discoveryDir, discoveryName, &d); err != nil {
		return nil, err
	}
	return &d, nil
}

// SaveDiscovery replaces the discovery record. With a shared store every instance reads
// the API and writes the record; they write the same content up to timing.
func (s *Store) SaveDiscovery(ctx context.Context, d *Discovery) error {
	return s.write(ctx, discoveryDir, discoveryName, d)
}
