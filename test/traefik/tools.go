//go:build tools

// Package traefik pins the Traefik command for `go build`; the blank import
// keeps `go mod tidy` from dropping the requirement, and the build tag keeps
// the package out of every normal build.
package traefik

import _ "github.com/traefik/traefik/v3/cmd/traefik"
