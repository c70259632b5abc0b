package config

import (
	"fmt"
	"math"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// decoder walks a yaml.Node tree and collects every problem with its line and
// key path. Walking nodes ourselves (instead of yaml.Decoder.KnownFields) is
// what gives every error, not only unknown keys, a line number and a path.
type decoder struct {
	file string // as given to Parse; used in messages
	dir  string // relative paths in the file are resolved against it
	errs Errors
}

// fail records a problem at node n (or at line 0 when n is nil).
func (d *decoder) fail(n *yaml.Node, key, format string, args ...any) {
	line := 0
	if n != nil {
		line = n.Line
	}
	d.errs = append(d.errs, &Error{File: d.file, Line: line, Key: key, Problem: fmt.Sprintf(format, args...)})
}

// exactlyOne records a problem at f unless exactly one of choices is set,
// and reports whether one is; set lists the choices that are, in order.
func (d *decoder) exactlyOne(f *field, set []string, choices ...string) bool {
	if len(set) == 1 {
		return true
	}
	got := "none"
	if len(set) > 1 {
		got = strings.Join(set, " and ")
	}
	last := len(choices) - 1
	d.fail(f.value, f.path, "set exactly one of %s or %s, got %s", strings.Join(choices[:last], ", "), choices[last], got)
	return false
}

// field is one key/value pair of a mapping.
type field struct {
	key   *yaml.Node
	value *yaml.Node
	path  string // dotted path of the value
}

// fields is a decoded mapping: the pairs by key plus the mapping node itself,
// so "required" problems can point at the mapping's line.
type fields struct {
	node  *yaml.Node
	path  string
	pairs map[string]*field
}

// get returns the pair for key, or nil when the key is absent.
func (f fields) get(key string) *field { return f.pairs[key] }

// require returns the pair for key, recording a problem when it is absent.
func (f fields) require(d *decoder, key string) *field {
	p := f.pairs[key]
	if p == nil {
		d.fail(f.node, join(f.path, key), "required but missing")
	}
	return p
}

// join builds a dotted key path.
func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// index builds a list element path such as certificates[2].
func index(path string, i int) string { return fmt.Sprintf("%s[%d]", path, i) }

// resolve follows an alias (*anchor) to the node it names.
func resolve(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

// describe names what a node holds, for "must be X, got Y" messages. It never
// includes the value, so it is safe for secrets.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	switch n.ShortTag() {
	case "!!null":
		return "nothing"
	case "!!bool":
		return "a boolean"
	case "!!int":
		return "an integer"
	case "!!float":
		return "a number"
	case "!!str":
		return "a string"
	}
	return "a " + n.ShortTag() + " value"
}

// mapping checks that n is a mapping whose keys are all in known, without
// duplicates. Unknown and duplicate keys are recorded; ok is false when n is
// not a mapping at all.
func (d *decoder) mapping(n *yaml.Node, path string, known ...string) (fields, bool) {
	n = resolve(n)
	out := fields{node: n, path: path, pairs: map[string]*field{}}
	if n.Kind != yaml.MappingNode {
		d.fail(n, path, "must be a mapping, got %s", describe(n))
		return out, false
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolve(n.Content[i]), resolve(n.Content[i+1])
		p := join(path, k.Value)
		switch {
		case !contains(known, k.Value):
			d.fail(k, p, "unknown key%s", suggest(k.Value, known))
		case out.pairs[k.Value] != nil:
			d.fail(k, p, "duplicate key (first set on line %d)", out.pairs[k.Value].key.Line)
		default:
			out.pairs[k.Value] = &field{key: k, value: v, path: p}
		}
	}
	return out, true
}

// names returns the keys of a mapping whose keys are user-chosen names (like
// resolvers.<name>), in file order, with duplicates reported.
func (d *decoder) names(n *yaml.Node, path string) []*field {
	n = resolve(n)
	if n.Kind != yaml.MappingNode {
		d.fail(n, path, "must be a mapping, got %s", describe(n))
		return nil
	}
	var out []*field
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolve(n.Content[i]), resolve(n.Content[i+1])
		p := join(path, k.Value)
		if line, dup := seen[k.Value]; dup {
			d.fail(k, p, "duplicate key (first set on line %d)", line)
			continue
		}
		seen[k.Value] = k.Line
		out = append(out, &field{key: k, value: v, path: p})
	}
	return out
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// suggest offers the known key that differs only in case, the most common
// slip for users coming from Traefik's camelCase keys.
func suggest(key string, known []string) string {
	for _, k := range known {
		if strings.EqualFold(k, key) {
			return fmt.Sprintf(" (did you mean %q?)", k)
		}
	}
	return ""
}

// list checks that f holds a sequence and returns its elements.
func (d *decoder) list(f *field) ([]*yaml.Node, bool) {
	if f.value.Kind != yaml.SequenceNode {
		d.fail(f.value, f.path, "must be a list, got %s", describe(f.value))
		return nil, false
	}
	out := make([]*yaml.Node, len(f.value.Content))
	for i, n := range f.value.Content {
		out[i] = resolve(n)
	}
	return out, true
}

// scalar checks that n is a scalar with the given short tag.
func (d *decoder) scalar(n *yaml.Node, path, tag, want string) bool {
	if n.Kind != yaml.ScalarNode || n.ShortTag() != tag {
		d.fail(n, path, "must be %s, got %s", want, describe(n))
		return false
	}
	return true
}

// str decodes a non-empty string. Only YAML strings are accepted: a value
// that YAML reads as a number or boolean must be quoted, so that a typo never
// turns silently into a different type.
func (d *decoder) str(n *yaml.Node, path string) (string, bool) {
	if !d.scalar(n, path, "!!str", "a string") {
		return "", false
	}
	if strings.TrimSpace(n.Value) == "" {
		d.fail(n, path, "must not be empty")
		return "", false
	}
	return n.Value, true
}

// path decodes a file system path; a relative path is taken relative to the
// configuration file's directory, because a daemon's working directory (/
// under systemd) is rarely what the author had in mind.
func (d *decoder) path(n *yaml.Node, path string) (string, bool) {
	s, ok := d.str(n, path)
	if !ok {
		return "", false
	}
	if !filepath.IsAbs(s) {
		s = filepath.Join(d.dir, s)
	}
	return filepath.Clean(s), true
}

// boolean decodes true or false.
func (d *decoder) boolean(n *yaml.Node, path string) (bool, bool) {
	if !d.scalar(n, path, "!!bool", "true or false") {
		return false, false
	}
	// yaml.v3 tags only true/false spellings (any case) as !!bool; YAML 1.1's
	// yes/on are strings and were rejected above.
	return strings.EqualFold(n.Value, "true"), true
}

// duration decodes a positive Go duration such as "90s" or "5m".
func (d *decoder) duration(n *yaml.Node, path string) (time.Duration, bool) {
	if n.Kind == yaml.ScalarNode && (n.ShortTag() == "!!int" || n.ShortTag() == "!!float") {
		d.fail(n, path, "must be a duration with a unit such as 30s or 5m, got %s", n.Value)
		return 0, false
	}
	s, ok := d.str(n, path)
	if !ok {
		return 0, false
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		d.fail(n, path, "must be a duration such as 30s or 5m, got %q", s)
		return 0, false
	}
	if v <= 0 {
		d.fail(n, path, "must be positive, got %s", s)
		return 0, false
	}
	return v, true
}

// intRange decodes a whole number from lo to hi.
func (d *decoder) intRange(n *yaml.Node, path string, lo, hi int) (int, bool) {
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" {
		d.fail(n, path, "must be a whole number from %d to %d, got %s", lo, hi, describe(n))
		return 0, false
	}
	v, err := strconv.Atoi(n.Value)
	if err != nil || v < lo || v > hi {
		d.fail(n, path, "must be a whole number from %d to %d, got %s", lo, hi, n.Value)
		return 0, false
	}
	return v, true
}

// fraction decodes a number strictly between 0 and 1.
func (d *decoder) fraction(n *yaml.Node, path string) (float64, bool) {
	if n.Kind != yaml.ScalarNode || (n.ShortTag() != "!!float" && n.ShortTag() != "!!int") {
		d.fail(n, path, "must be a number between 0 and 1, got %s", describe(n))
		return 0, false
	}
	v, err := strconv.ParseFloat(n.Value, 64)
	if err != nil || math.IsNaN(v) || v <= 0 || v >= 1 {
		d.fail(n, path, "must be a number between 0 and 1 (exclusive), got %s", n.Value)
		return 0, false
	}
	return v, true
}

// number decodes a number from lo to hi, both included.
func (d *decoder) number(n *yaml.Node, path string, lo, hi float64) (float64, bool) {
	if n.Kind != yaml.ScalarNode || (n.ShortTag() != "!!float" && n.ShortTag() != "!!int") {
		d.fail(n, path, "must be a number from %g to %g, got %s", lo, hi, describe(n))
		return 0, false
	}
	v, err := strconv.ParseFloat(n.Value, 64)
	if err != nil || math.IsNaN(v) || v < lo || v > hi {
		d.fail(n, path, "must be a number from %g to %g, got %s", lo, hi, n.Value)
		return 0, false
	}
	return v, true
}

// oneOf decodes a string that must be one of allowed (case-sensitive, as
// Traefik's key type names are).
func (d *decoder) oneOf(n *yaml.Node, path string, allowed ...string) (string, bool) {
	s, ok := d.str(n, path)
	if !ok {
		return "", false
	}
	if !contains(allowed, s) {
		d.fail(n, path, "must be one of %s, got %q", strings.Join(allowed, ", "), s)
		return "", false
	}
	return s, true
}
