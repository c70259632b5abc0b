package traefik

import (
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Rule parsing.
//
// Traefik parses rules with github.com/vulcand/predicate, which hands the rule to Go's own
// go/parser.ParseExpr and walks the expression: && and || join matchers, ! negates,
// parentheses group, a matcher is a call of a known name whose arguments are all string
// literals (backquoted or double-quoted, with Go's escapes). Walking go/parser's tree
// here, under predicate's rules, gives the same grammar byte for byte (comments,
// newlines, escapes, precedence) without a hand-written lexer that would drift in the
// corners, and without predicate and its dependency github.com/gravitational/trace in the
// module: the walk is the 60 lines below. The differential test in test/traefik holds it
// to Traefik's own ParseDomains and ParseHostSNI.

// httpMatchers are the HTTP matcher names of both rule syntaxes (Traefik's httpFuncs and
// httpFuncsV2): ParseDomains accepts all of them whatever the router's ruleSyntax.
var httpMatchers = []string{
	"ClientIP", "Method", "Host", "HostRegexp", "Path", "PathRegexp", "PathPrefix",
	"Header", "HeaderRegexp", "Query", "QueryRegexp",
	"HostHeader", "Headers", "HeadersRegexp",
}

// tcpMatchers are the TCP matcher names of both syntaxes (tcpFuncs, tcpFuncsV2).
var tcpMatchers = []string{"ALPN", "ClientIP", "HostSNI", "HostSNIRegexp"}

// matcher is one matcher call of a rule: Host(`a`, `b`) is {name: "Host", args: [a b]}.
// name is the canonical spelling whatever the rule's (host, HOST, Host).
type matcher struct {
	name string
	args []string
}

// ruleParser parses rules with one set of matcher names.
type ruleParser struct {
	// spellings maps every accepted spelling of a name to the name: Traefik's
	// rules.NewParser accepts the name as written, lower case, upper case and title case.
	spellings map[string]string
}

func newRuleParser(names []string) ruleParser {
	p := ruleParser{spellings: map[string]string{}}
	for _, n := range names {
		lower := strings.ToLower(n)
		r, size := utf8.DecodeRuneInString(lower)
		for _, s := range []string{n, lower, strings.ToUpper(n), string(unicode.ToTitle(r)) + lower[size:]} {
			p.spellings[s] = n
		}
	}
	return p
}

var (
	httpRules = newRuleParser(httpMatchers)
	tcpRules  = newRuleParser(tcpMatchers)
)

// RuleDomains returns the host names of a router's rule as Traefik v3.6.12 reads them for
// its ACME provider: for an HTTP rule the arguments of every Host() (ParseDomains), for a
// TCP rule those of every HostSNI() (ParseHostSNI), lower-cased, in order, repeats kept.
// It fails on a rule Traefik's parser refuses.
func RuleDomains(rule string, tcp bool) ([]string, error) {
	if tcp {
		return tcpRules.values(rule, "HostSNI")
	}
	return httpRules.values(rule, "Host")
}

// values returns the lower-cased arguments of every call of matcher name in rule, in
// order, negated or not (Traefik's Tree.ParseMatchers ignores negation: `!Host(x)` still
// names x). It fails where Traefik's parser fails.
func (p ruleParser) values(rule, name string) ([]string, error) {
	calls, err := p.parse(rule)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, c := range calls {
		if c.name == name {
			for _, a := range c.args {
				out = append(out, strings.ToLower(a))
			}
		}
	}
	return out, nil
}

// parse returns the matcher calls of rule in order.
func (p ruleParser) parse(rule string) ([]matcher, error) {
	expr, err := parser.ParseExpr(rule)
	if err != nil {
		return nil, fmt.Errorf("parse rule %q: %w", rule, err)
	}
	var calls []matcher
	if err := p.walk(expr, &calls); err != nil {
		return nil, fmt.Errorf("parse rule %q: %w", rule, err)
	}
	return calls, nil
}

// walk appends the calls of a predicate expression, which must be a matcher call, or
// such expressions joined by && or ||, negated by !, or in parentheses.
func (p ruleParser) walk(expr ast.Expr, calls *[]matcher) error {
	switch e := expr.(type) {
	case *ast.BinaryExpr:
		if e.Op != token.LAND && e.Op != token.LOR {
			return fmt.Errorf("operator %s is not supported", e.Op)
		}
		if err := p.walk(e.X, calls); err != nil {
			return err
		}
		return p.walk(e.Y, calls)
	case *ast.ParenExpr:
		return p.walk(e.X, calls)
	case *ast.UnaryExpr:
		if e.Op != token.NOT {
			return fmt.Errorf("operator %s is not supported", e.Op)
		}
		return p.walk(e.X, calls)
	case *ast.CallExpr:
		c, err := p.call(e)
		if err != nil {
			return err
		}
		*calls = append(*calls, c)
		return nil
	default:
		return fmt.Errorf("%T is not a matcher", expr)
	}
}

// call reads one matcher call. Its arguments must be string literals: predicate would
// pass anything else to the matcher's ...string parameter, which fails. A trailing "..."
// is ignored, as predicate ignores it.
func (p ruleParser) call(e *ast.CallExpr) (matcher, error) {
	id, ok := e.Fun.(*ast.Ident)
	if !ok {
		return matcher{}, errors.New("a matcher must be a plain name")
	}
	name, ok := p.spellings[id.Name]
	if !ok {
		return matcher{}, fmt.Errorf("unknown matcher %s", id.Name)
	}
	c := matcher{name: name}
	for _, arg := range e.Args {
		lit, ok := arg.(*ast.BasicLit)
		if !ok || lit.Kind != token.STRING {
			return matcher{}, fmt.Errorf("%s: arguments must be strings", id.Name)
		}
		s, err := strconv.Unquote(lit.Value)
		if err != nil {
			return matcher{}, fmt.Errorf("%s: argument %s: %w", id.Name, lit.Value, err)
		}
		c.args = append(c.args, s)
	}
	return c, nil
}
