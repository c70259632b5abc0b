package config

import (
	"fmt"
	"strings"
)

// Error is one problem in a configuration file. It carries everything a user
// needs to find and fix the problem without reading the source: the file, the
// line, the dotted key path (for example resolvers.internal.caServer or
// certificates[2].domains[0]) and what is wrong. Problem never contains a
// secret value.
type Error struct {
	File    string
	Line    int    // 1-based; 0 when the YAML parser could not tell
	Key     string // dotted path; empty for problems of the whole file
	Problem string
}

// Error renders the problem as "file:line: key: problem", the format compilers
// use, so editors and terminals can jump to it.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	if e.Key != "" {
		b.WriteString(": ")
		b.WriteString(e.Key)
	}
	b.WriteString(": ")
	b.WriteString(e.Problem)
	return b.String()
}

// Errors is every problem found in one configuration file, in file order
// within each section. Parse reports all of them at once so a user fixes a
// file in one round instead of one error per restart.
type Errors []*Error

// Error renders one problem per line.
func (errs Errors) Error() string {
	lines := make([]string, len(errs))
	for i, e := range errs {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap lets errors.As find the individual *Error values.
func (errs Errors) Unwrap() []error {
	out := make([]error, len(errs))
	for i, e := range errs {
		out[i] = e
	}
	return out
}
