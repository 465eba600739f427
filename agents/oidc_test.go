package agents_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mcpbroker/mcpbroker/agents"
	"github.com/mcpbroker/mcpbroker/agents/oidctest"
	"github.com/mcpbroker/mcpbroker/agents/spiffetest"
)

func TestOIDCValidate(t *testing.T) {
	is := oidctest.NewIssuer(t)
	other := oidctest.NewIssuer(t) // running, well-formed, but not trusted
	const aud = "https://broker.example/mcp"
	o, err := agents.NewOIDC(agents.OIDCOptions{
		Audience: aud, RequiredScopes: []string{"mcp:tools"}, DefaultTenant: "default",
		Issuers: []agents.IssuerConfig{{Issuer: is.URL, GroupsClaim: "roles"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	good := func() map[string]any {
		c := is.Claims("alice", aud)
		c["scope"] = "mcp:tools"
		c["roles"] = "eng ops"
		c["act"] = map[string]any{"sub": coderID}
		return c
	}
	in, err := o.Validate(context.Background(), is.Token(t, good()), coderID)
	if err != nil || in.ID != "alice" || in.Tenant != "default" || strings.Join(in.Groups, ",") != "eng,ops" || in.Kind != agents.InitiatorUser {
		t.Fatalf("good token: %v %+v", err, in)
	}
	with := func(k string, v any) map[string]any {
		c := good()
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return c
	}
	now := time.Now()
	cases := []struct {
		name string
		tok  string
		want error
		msg  string
	}{
		{"unknown issuer", other.Token(t, func() map[string]any { c := other.Claims("alice", aud); c["scope"] = "mcp:tools"; return c }()), agents.ErrUnknownIssuer, ""},
		{"iss claims a trusted issuer, signed by another", other.Token(t, good()), agents.ErrInvalidToken, "signature"},
		{"expired", is.Token(t, with("exp", now.Add(-2*time.Minute).Unix())), agents.ErrInvalidToken, "expired"},
		{"no exp", is.Token(t, with("exp", nil)), agents.ErrInvalidToken, "no exp"},
		{"not yet valid", is.Token(t, with("nbf", now.Add(5*time.Minute).Unix())), agents.ErrInvalidToken, "not valid yet"},
		{"wrong audience", is.Token(t, with("aud", "https://other.example/mcp")), agents.ErrInvalidToken, "audience"},
		{"alg none", spiffetest.UnsignedJWT(is.Kid, good()), agents.ErrInvalidToken, "algorithm"},
		{"HMAC keyed with the public key", is.HMACWithPublicKey(t, good()), agents.ErrInvalidToken, "algorithm"},
		{"unpublished key", is.OtherKey(t, good()), agents.ErrInvalidToken, "signature"},
		{"act names another agent", is.Token(t, with("act", map[string]any{"sub": "spiffe://example.org/agent/other"})), agents.ErrActorMismatch, ""},
		{"act malformed", is.Token(t, with("act", "spiffe://example.org/agent/coder")), agents.ErrInvalidToken, "act"},
		{"no act: a bearer token any agent could present", is.Token(t, with("act", nil)), agents.ErrInvalidToken, "no act claim"},
		{"scope missing", is.Token(t, with("scope", "openid")), agents.ErrInsufficientScope, ""},
		{"no subject", is.Token(t, with("sub", nil)), agents.ErrInvalidToken, "sub"},
		{"garbage", "not.a.jwt", agents.ErrInvalidToken, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := o.Validate(context.Background(), c.tok, coderID)
			if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("got %v, want %v mentioning %q", err, c.want, c.msg)
			}
		})
	}
	if _, err := o.Validate(context.Background(), is.Token(t, with("act", map[string]any{"sub": coderID})), coderID); err != nil {
		t.Fatalf("act naming the caller: %v", err)
	}
	if n := is.JWKSFetches(); n != 1 {
		t.Fatalf("JWKS fetched %d times, want 1 (cached)", n)
	}
}

func TestOIDCTenantClaimRequired(t *testing.T) {
	is := oidctest.NewIssuer(t)
	o, err := agents.NewOIDC(agents.OIDCOptions{Audience: "aud", Issuers: []agents.IssuerConfig{{Issuer: is.URL, TenantClaim: "tid", Kind: agents.InitiatorWorkload}}})
	if err != nil {
		t.Fatal(err)
	}
	c := is.Claims("svc-1", "aud")
	c["act"] = map[string]any{"sub": coderID}
	if _, err := o.Validate(context.Background(), is.Token(t, c), coderID); !errors.Is(err, agents.ErrInvalidToken) {
		t.Fatalf("missing tenant claim: %v", err)
	}
	c["tid"] = "t1"
	in, err := o.Validate(context.Background(), is.Token(t, c), coderID)
	if err != nil || in.Tenant != "t1" || in.Kind != agents.InitiatorWorkload {
		t.Fatalf("%v %+v", err, in)
	}
}

func TestOIDCRejectsUnsafeAlgorithms(t *testing.T) {
	for _, alg := range []string{"none", "HS256", "HS512", "rs256"} {
		_, err := agents.NewOIDC(agents.OIDCOptions{Audience: "a", Issuers: []agents.IssuerConfig{{Issuer: "https://i", Algorithms: []string{alg}}}})
		if err == nil {
			t.Errorf("algorithm %s accepted", alg)
		}
	}
}

// TestOIDCIssuerScopes: an issuer's subject prefix makes its initiators its
// own, and its tenant list bounds the tenants its tokens may name.
func TestOIDCIssuerScopes(t *testing.T) {
	a, b := oidctest.NewIssuer(t), oidctest.NewIssuer(t)
	o, err := agents.NewOIDC(agents.OIDCOptions{Audience: "aud", Issuers: []agents.IssuerConfig{
		{Issuer: a.URL, SubjectPrefix: "a:", TenantClaim: "tid", Tenants: []string{"acme"}},
		{Issuer: b.URL, SubjectPrefix: "b:", TenantClaim: "tid", Tenants: []string{"globex"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	tok := func(is *oidctest.Issuer, tenant string) string {
		c := is.Claims("alice", "aud")
		c["tid"], c["act"] = tenant, map[string]any{"sub": coderID}
		return is.Token(t, c)
	}
	in, err := o.Validate(context.Background(), tok(a, "acme"), coderID)
	if err != nil || in.ID != "a:alice" || in.Tenant != "acme" {
		t.Fatalf("issuer a: %v %+v", err, in)
	}
	in, err = o.Validate(context.Background(), tok(b, "globex"), coderID)
	if err != nil || in.ID != "b:alice" {
		t.Fatalf("issuer b's alice is not issuer a's: %v %+v", err, in)
	}
	if _, err := o.Validate(context.Background(), tok(b, "acme"), coderID); !errors.Is(err, agents.ErrInvalidToken) || !strings.Contains(err.Error(), "tenant") {
		t.Fatalf("issuer b naming acme's tenant: %v", err)
	}
}

// TestOIDCAllowNoActor: an issuer configured to accept tokens without an
// act claim takes them as bearer tokens.
func TestOIDCAllowNoActor(t *testing.T) {
	is := oidctest.NewIssuer(t)
	o, err := agents.NewOIDC(agents.OIDCOptions{Audience: "aud", Issuers: []agents.IssuerConfig{{Issuer: is.URL, AllowNoActor: true}}})
	if err != nil {
		t.Fatal(err)
	}
	if in, err := o.Validate(context.Background(), is.Token(t, is.Claims("alice", "aud")), coderID); err != nil || in.ID != "alice" {
		t.Fatalf("%v %+v", err, in)
	}
}
