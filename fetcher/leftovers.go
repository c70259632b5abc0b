package fetcher

import (
	"context"

	"github.com/certfetch/certfetch/acme"
	"github.com/certfetch/certfetch/fetcher/config"
)

// request is the ACME request for cert as its resolver rc orders it: the key its order is
// journaled under.
func request(cert *config.Certificate, rc *config.Resolver) acme.Request {
	return acme.Request{Names: cert.Domains, KeyType: cert.KeyType, Profile: rc.Profile, PreferredChain: rc.PreferredChain}
}

// cleanUpLeftovers removes the DNS-01 records that a killed process left published: the
// journal lists each record before it is presented (acme.Record.Presented), so the
// records of an order whose attempt never reached its cleanup are known. Run and Once call
// it before the first visit, so that a certificate whose next attempt waits for a
// back-off does not leave them in the zone until then.
//
// Only with a state directory: it is locked by this process, so no other instance can be
// presenting those records right now. On a shared store another instance may be, and the
// records are removed under the certificate's lease instead, when an attempt resumes the
// order. A failure is logged; the next attempt on the order tries again.
func (d *Daemon) cleanUpLeftovers(ctx context.Context) {
	d.mu.Lock()
	cfg, certs, resolvers := d.cfg, d.certs, d.resolvers
	d.mu.Unlock()
	if cfg.Storage.Directory == "" {
		return
	}
	orders, err := d.store.Orders(ctx)
	if err != nil {
		d.log.Warn("cannot read the order journal to remove DNS-01 records left by an earlier run", "err", err)
		return
	}
	owners := map[string]*config.Certificate{} // request key -> certificate on a DNS-01 resolver
	for _, c := range certs {
		if r := resolvers[c.Resolver]; r != nil && r.cfg.DNSChallenge != nil {
			owners[request(c, r.cfg).Key()] = c
		}
	}
	for _, o := range orders {
		if len(o.Presented) == 0 {
			continue
		}
		c := owners[o.Key]
		if c == nil {
			d.log.Warn("a journaled order left DNS-01 records, but no certificate on a DNS-01 resolver orders its names any more; remove its _acme-challenge records by hand",
				"order", o.OrderURL, "names", o.Request.Names)
			continue
		}
		log := d.log.With("certificate", c.Name, "resolver", c.Resolver)
		client, err := resolvers[c.Resolver].acmeClient(ctx)
		if err == nil {
			err = client.CleanUpLeftovers(ctx, o.Key)
		}
		if err != nil {
			log.Warn("cannot remove the DNS-01 records an earlier run left; the next attempt tries again", "err", err)
		}
	}
}
