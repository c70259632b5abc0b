//go:build tools

// Package stepca pins the step-ca command for `go build`, and certfetch's
// packages so that step-ca's dependencies resolve at certfetch's versions
// (see go.mod); the blank imports keep `go mod tidy` from dropping the
// requirements, and the build tag keeps the package out of every normal build.
package stepca

import (
	_ "github.com/certfetch/certfetch/fetcher"
	_ "github.com/smallstep/certificates/cmd/step-ca"
)
