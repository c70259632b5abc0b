package acmejson

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// AccountIndex is Error.Index for a problem of a resolver's account (or of
// the resolver as a whole), not of a certificate entry.
const AccountIndex = -1

// Error is one problem in acme.json: where it is (the resolver, the entry
// and its domain, or for a file that is not JSON the byte offset) and what is
// wrong. Problem never contains key material.
type Error struct {
	// Resolver is Traefik's resolver name; empty when the problem is not
	// inside one (the file is empty, or broken before the first resolver).
	Resolver string
	// Index is the entry in the resolver's Certificates, or AccountIndex.
	Index int
	// Domain is the entry's domain.main, when known.
	Domain string
	// Offset is the byte offset of a JSON syntax error (the file is truncated
	// or garbled there), 0 otherwise.
	Offset  int64
	Problem string
}

// Error renders `resolver "le": Certificates[2] (www.example.com): problem`,
// with `at byte N` first for a syntax error.
func (e *Error) Error() string {
	var parts []string
	if e.Offset > 0 {
		parts = append(parts, fmt.Sprintf("at byte %d", e.Offset))
	}
	if e.Resolver != "" {
		parts = append(parts, fmt.Sprintf("resolver %q", e.Resolver))
		switch {
		case e.Index == AccountIndex:
			parts = append(parts, "Account")
		case e.Domain != "":
			parts = append(parts, fmt.Sprintf("Certificates[%d] (%s)", e.Index, e.Domain))
		default:
			parts = append(parts, fmt.Sprintf("Certificates[%d]", e.Index))
		}
	}
	return strings.Join(append(parts, e.Problem), ": ")
}

// syntaxError is the Error of a document encoding/json refused: where it
// broke (the resolver and entry that were being read there) and why.
// Traefik writes acme.json with a plain os.WriteFile, so a crash or a full
// disk leaves truncated files.
func syntaxError(data []byte, err error) *Error {
	e := &Error{Index: AccountIndex, Problem: "not valid JSON: " + err.Error()}
	var (
		syntax *json.SyntaxError
		typ    *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &syntax):
		e.Offset = syntax.Offset
	case errors.As(err, &typ):
		e.Offset = typ.Offset
		e.Problem = fmt.Sprintf("not the acme.json layout: %s is a JSON %s, want %s", cmp.Or(typ.Field, "the document"), typ.Value, typ.Type)
	}
	e.Resolver, e.Index, e.Domain = locate(data, e.Offset)
	if e.Offset >= int64(len(bytes.TrimRight(data, " \t\r\n"))) {
		e.Problem += " (the file ends early: truncated)"
	}
	return e
}

// frame is an open JSON object or array on locate's stack.
type frame struct {
	array   bool
	key     string // object: the key of the value being read
	wantKey bool   // object: the next string is a key
	n       int    // array: elements begun
}

// locate walks data's tokens up to offset (to where they break, when offset
// is 0) and returns the resolver and the Certificates entry open there, with
// the entry's domain.main when it was read already. index is AccountIndex
// outside an entry.
func locate(data []byte, offset int64) (resolver string, index int, domain string) {
	dec := json.NewDecoder(bytes.NewReader(data))
	var stack []*frame
	domainOf := AccountIndex // the entry domain belongs to
	for offset == 0 || dec.InputOffset() < offset {
		tok, err := dec.Token()
		if err != nil {
			break
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if s, ok := tok.(string); ok && top != nil && top.wantKey {
			top.key, top.wantKey = s, false
			continue
		}
		if tok == json.Delim('}') || tok == json.Delim(']') {
			stack = stack[:len(stack)-1]
			if len(stack) > 0 {
				stack[len(stack)-1].wantKey = !stack[len(stack)-1].array
			}
			continue
		}
		// A value begins: a container or a scalar.
		if top != nil && top.array {
			top.n++
		}
		if tok == json.Delim('{') || tok == json.Delim('[') {
			stack = append(stack, &frame{array: tok == json.Delim('['), wantKey: tok == json.Delim('{')})
			continue
		}
		if s, ok := tok.(string); ok && inEntry(stack) && len(stack) == 5 && strings.EqualFold(stack[3].key, "domain") && top.key == "main" {
			domain, domainOf = s, stack[2].n-1
		}
		if top != nil && !top.array {
			top.wantKey = true
		}
	}
	index = AccountIndex
	if len(stack) >= 2 || (len(stack) == 1 && !stack[0].wantKey) {
		resolver = stack[0].key
	}
	if inEntry(stack) {
		index = stack[2].n - 1
	}
	if index != domainOf {
		domain = ""
	}
	return resolver, index, domain
}

// inEntry reports whether stack is inside an element of a resolver's
// Certificates array.
func inEntry(stack []*frame) bool {
	return len(stack) >= 4 && strings.EqualFold(stack[1].key, "Certificates") && stack[2].array
}
