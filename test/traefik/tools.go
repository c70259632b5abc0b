//go:build tools

// Package traefik pins the Traefik command for `go build`, and certfetch's
// packages so that Traefik's dependencies resolve at certfetch's versions
// (see go.mod); the blank imports keep `go mod tidy` from dropping the
// requirements, and the build tag keeps the package out of every normal build.
package traefik

import (
	_ "github.com/certfetch/certfetch/fetcher"
	_ "github.com/traefik/traefik/v3/cmd/traefik"
)
