package traefik

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestRuleValues holds the parser to predicate's rules where they decide whether a rule
// parses at all; test/traefik compares it with Traefik's own parser on a larger corpus.
func TestRuleValues(t *testing.T) {
	t.Parallel()
	tests := []struct {
		desc  string
		rule  string
		tcp   bool
		want  []string
		error bool
	}{
		{desc: "one host", rule: "Host(`a.example.com`)", want: []string{"a.example.com"}},
		{desc: "no arguments names nothing", rule: "Host()"},
		{desc: "empty argument kept (the caller refuses it)", rule: "Host(``)", want: []string{""}},
		{desc: "nested parentheses and negations", rule: "!(!(Host(`a`)) || (Method(`GET`) && Host(`B`)))", want: []string{"a", "b"}},
		{desc: "comments and newlines", rule: "Host(`a`) /* x */ ||\n\tHost(`b`) // end", want: []string{"a", "b"}},
		{desc: "trailing ellipsis ignored", rule: "Host(`a`...)", want: []string{"a"}},
		{desc: "HostHeader is not Host", rule: "HostHeader(`a`)"},
		{desc: "title case of a long name", rule: "Hostregexp(`a`) && Host(`b`)", want: []string{"b"}},
		{desc: "mixed case is no spelling", rule: "hOST(`a`)", error: true},
		{desc: "unknown matcher", rule: "Hots(`a`)", error: true},
		{desc: "selector", rule: "x.Host(`a`)", error: true},
		{desc: "number argument", rule: "Host(1)", error: true},
		{desc: "character argument", rule: "Host('a')", error: true},
		{desc: "nested call as argument", rule: "Host(Host(`a`))", error: true},
		{desc: "parenthesized argument", rule: "Host((`a`))", error: true},
		{desc: "bare string", rule: "`a`", error: true},
		{desc: "string operand", rule: "Host(`a`) && `b`", error: true},
		{desc: "comparison", rule: "Host(`a`) == Host(`b`)", error: true},
		{desc: "bitwise and", rule: "Host(`a`) & Host(`b`)", error: true},
		{desc: "unary minus", rule: "-Host(`a`)", error: true},
		{desc: "empty rule", rule: "", error: true},
		{desc: "unterminated string", rule: "Host(`a)", error: true},
		{desc: "bad escape", rule: `Host("\q")`, error: true},
		{desc: "two expressions", rule: "Host(`a`) Host(`b`)", error: true},
		{desc: "TCP HostSNI", rule: "HostSNI(`A`) || hostsni(`b`) && !ClientIP(`10.0.0.0/8`)", tcp: true, want: []string{"a", "b"}},
		{desc: "TCP star", rule: "HostSNI(`*`)", tcp: true, want: []string{"*"}},
		{desc: "TCP has no Host", rule: "Host(`a`)", tcp: true, error: true},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			p, name := httpRules, "Host"
			if tc.tcp {
				p, name = tcpRules, "HostSNI"
			}
			got, err := p.values(tc.rule, name)
			if tc.error {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}
