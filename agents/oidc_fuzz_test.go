package agents_test

import (
	"context"
	"errors"
	"net/http"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mcpbroker/mcpbroker/agents"
	"github.com/mcpbroker/mcpbroker/agents/oidctest"
	"github.com/mcpbroker/mcpbroker/agents/spiffetest"
)

// FuzzInitiatorToken feeds arbitrary bytes to the initiator token validator
// and the authenticator's header parsing: never a panic, never an accepted
// token that the issuer did not sign.
func FuzzInitiatorToken(f *testing.F) {
	is := oidctest.NewIssuer(f)
	o, err := agents.NewOIDC(agents.OIDCOptions{Audience: "aud", Issuers: []agents.IssuerConfig{{Issuer: is.URL}}})
	if err != nil {
		f.Fatal(err)
	}
	good := is.Token(f, is.Claims("alice", "aud"))
	f.Add(good)
	f.Add(spiffetest.UnsignedJWT(is.Kid, is.Claims("alice", "aud")))
	f.Add(is.HMACWithPublicKey(f, is.Claims("alice", "aud")))
	f.Add("e30.e30.")
	f.Add("..")
	f.Add("")
	ca := spiffetest.NewCA(f, "example.org")
	auth, err := agents.NewSPIFFE(agents.SPIFFEOptions{TrustDomains: []spiffeid.TrustDomain{ca.TD}, X509Bundles: ca.X509Bundle(),
		JWTBundles: ca.JWTBundle(), Audience: "spiffe://example.org/broker", Initiators: o})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		in, err := o.Validate(context.Background(), tok, coderID)
		if err == nil && tok != good {
			t.Fatalf("accepted a token the issuer did not sign: %q -> %+v", tok, in)
		}
		r, _ := http.NewRequest(http.MethodPost, "https://broker/mcp", nil)
		r.Header.Set("Authorization", "Bearer "+tok)
		r.Header.Set(agents.InitiatorTokenHeader, tok)
		if _, err := auth.Authenticate(r); err == nil {
			t.Fatalf("authenticated %q without a client certificate or a JWT-SVID", tok)
		} else if !errors.Is(err, agents.ErrInvalidToken) && !errors.Is(err, agents.ErrUnauthenticated) {
			t.Fatalf("error %v wraps no sentinel", err)
		}
	})
}
