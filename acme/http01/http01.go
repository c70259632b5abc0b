// Package http01 publishes ACME HTTP-01 challenges (RFC 8555 §8.3) where the certfetch
// plugin finds them. Each publisher implements lego's challenge.Provider
// (Present/CleanUp(domain, token, keyAuth)), the interface acme.Config.Solver takes:
//
//   - Webroot writes <webroot>/.well-known/acme-challenge/<token> (the plugin's webroot mode,
//     and the layout lego, certbot and acme.sh use);
//   - Responder answers GET /.well-known/acme-challenge/<token> from memory (what the
//     plugin's upstream mode forwards to);
//   - Stateless publishes nothing (the plugin's thumbprint mode derives the answer).
//
// Tokens are checked with certfetch.ValidToken before they touch a path or a response.
package http01

import (
	"fmt"

	"github.com/certfetch/certfetch"
)

// checkToken returns an error for a token that is not base64url without padding.
func checkToken(domain, token string) error {
	if !certfetch.ValidToken(token) {
		return fmt.Errorf("http01: challenge for %s: invalid token %q", domain, token)
	}

	return nil
}

// Stateless is the publisher for the plugin's thumbprint mode: the plugin answers
// "<token>.<account thumbprint>" (acme.Client.Thumbprint) for any valid token, so there is
// nothing to publish or clean up, and any number of Traefik replicas answer alike.
type Stateless struct{}

// Present implements challenge.Provider; it only checks the token.
func (Stateless) Present(domain, token, _ string) error { return checkToken(domain, token) }

// CleanUp implements challenge.Provider; there is nothing to remove.
func (Stateless) CleanUp(string, string, string) error { return nil }
