//go:build tools

// Package stepca pins the step-ca command for `go build`; the blank import
// keeps `go mod tidy` from dropping the requirement, and the build tag keeps
// the package out of every normal build.
package stepca

import _ "github.com/smallstep/certificates/cmd/step-ca"
