package agents_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/mcpbroker/mcpbroker/agents"
	"github.com/mcpbroker/mcpbroker/agents/oidctest"
	"github.com/mcpbroker/mcpbroker/agents/spiffetest"
)

const (
	brokerID = "spiffe://example.org/broker"
	coderID  = "spiffe://example.org/agent/coder"
)

// fixture is a broker-side SPIFFE authenticator fed by the fake Workload
// API, serving HTTPS on loopback, and recording handshake refusals.
type fixture struct {
	ca, fed, evil *spiffetest.CA
	auth          *agents.SPIFFE
	url           string
	mu            sync.Mutex
	rejects       []error
	got           chan result
}

type result struct {
	id  agents.Identity
	err error
}

func newFixture(t *testing.T, oidc *agents.OIDC, require bool) *fixture {
	t.Helper()
	f := &fixture{
		ca:   spiffetest.NewCA(t, "example.org"),
		fed:  spiffetest.NewCA(t, "partner.org"), // bundle served, but not an accepted agent domain
		evil: spiffetest.NewCA(t, "evil.org"),
		got:  make(chan result, 16),
	}
	wl := spiffetest.StartWorkloadAPI(t, f.ca, f.ca.X509SVID(t, brokerID), f.fed)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	opt := workloadapi.WithClientOptions(workloadapi.WithAddr(wl.Addr))
	xs, err := workloadapi.NewX509Source(ctx, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = xs.Close() })
	js, err := workloadapi.NewJWTSource(ctx, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = js.Close() })
	f.auth, err = agents.NewSPIFFE(agents.SPIFFEOptions{
		TrustDomains: []spiffeid.TrustDomain{f.ca.TD}, X509Bundles: xs, JWTBundles: js,
		Audience: brokerID, Initiators: oidc, RequireInitiator: require, DefaultTenant: "acme",
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := f.auth.ServerTLSConfig(xs, func(err error) { f.mu.Lock(); f.rejects = append(f.rejects, err); f.mu.Unlock() })
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := f.auth.Authenticate(r)
		f.got <- result{id, err}
		if err != nil {
			w.WriteHeader(http.StatusUnauthorized)
		}
	}), ErrorLog: log.New(io.Discard, "", 0)}
	go func() { _ = srv.Serve(tls.NewListener(ln, cfg)) }()
	t.Cleanup(func() { _ = srv.Close() })
	f.url = "https://" + ln.Addr().String() + "/mcp"
	return f
}

func (f *fixture) rejected() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.rejects)
}

// do sends one request with the client SVID (nil: no certificate) and
// headers, returning the handshake/transport error or the server's view.
func (f *fixture) do(t *testing.T, svid *x509svid.SVID, hdr map[string]string) (result, error) {
	t.Helper()
	bundle := x509bundle.NewSet(f.ca.X509Bundle())
	var cfg *tls.Config
	if svid != nil {
		cfg = tlsconfig.MTLSClientConfig(svid, bundle, tlsconfig.AuthorizeID(spiffeid.RequireFromString(brokerID)))
	} else {
		cfg = tlsconfig.TLSClientConfig(bundle, tlsconfig.AuthorizeID(spiffeid.RequireFromString(brokerID)))
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 5 * time.Second}
	defer c.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodPost, f.url, strings.NewReader("{}"))
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		return result{}, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	select {
	case r := <-f.got:
		return r, nil
	case <-time.After(5 * time.Second):
		t.Fatal("handler not reached")
	}
	return result{}, nil
}

func TestX509SVIDAccepted(t *testing.T) {
	f := newFixture(t, nil, false)
	r, err := f.do(t, f.ca.X509SVID(t, coderID), nil)
	if err != nil || r.err != nil {
		t.Fatalf("transport %v, auth %v", err, r.err)
	}
	if r.id.Agent != coderID || r.id.Method != "x509-svid" || r.id.InitiatorKind != agents.InitiatorWorkload ||
		r.id.Initiator != coderID || r.id.Tenant != "acme" {
		t.Fatalf("identity %+v", r.id)
	}
}

// Every broken client certificate is refused in the handshake, and the
// refusal is reported (the broker records it).
func TestX509SVIDAdversarial(t *testing.T) {
	f := newFixture(t, nil, false)
	now := time.Now()
	cases := []struct {
		name string
		svid *x509svid.SVID
		want string
	}{
		{"wrong trust domain (no bundle)", f.evil.X509SVID(t, "spiffe://evil.org/agent/coder"), "no X.509 bundle"},
		{"federated domain not accepted for agents", f.fed.X509SVID(t, "spiffe://partner.org/agent/coder"), "not accepted"},
		{"expired", f.ca.X509SVID(t, coderID, spiffetest.Validity(now.Add(-2*time.Hour), now.Add(-time.Hour))), "expired"},
		{"not yet valid", f.ca.X509SVID(t, coderID, spiffetest.Validity(now.Add(time.Hour), now.Add(2*time.Hour))), "not yet valid"},
		{"no URI SAN", f.ca.X509SVID(t, coderID, spiffetest.NoURISAN()), "no URI SAN"},
		{"CA flag on leaf", f.ca.X509SVID(t, coderID, spiffetest.LeafIsCA()), "CA"},
		{"signed by the wrong key for the domain", spiffetest.NewCA(t, "example.org").X509SVID(t, coderID), "certificate signed by unknown authority"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := f.rejected()
			_, err := f.do(t, c.svid, nil)
			if err == nil {
				t.Fatal("request went through")
			}
			if f.rejected() != before+1 {
				t.Fatalf("refusal not reported (client error %v)", err)
			}
			f.mu.Lock()
			last := f.rejects[len(f.rejects)-1]
			f.mu.Unlock()
			if !strings.Contains(last.Error(), c.want) {
				t.Fatalf("refusal %q does not mention %q", last, c.want)
			}
		})
	}
}

func TestJWTSVID(t *testing.T) {
	f := newFixture(t, nil, false)
	good := f.ca.JWTSVID(t, coderID, []string{brokerID})
	r, err := f.do(t, nil, map[string]string{"Authorization": "Bearer " + good})
	if err != nil || r.err != nil || r.id.Agent != coderID || r.id.Method != "jwt-svid" {
		t.Fatalf("good JWT-SVID: %v %v %+v", err, r.err, r.id)
	}
	cases := []struct{ name, tok, want string }{
		{"another audience", f.ca.JWTSVID(t, coderID, []string{"spiffe://example.org/other"}), "expected audience"},
		{"alg none", spiffetest.UnsignedJWT(f.ca.JWTKid, map[string]any{"sub": coderID, "aud": []string{brokerID},
			"exp": time.Now().Add(time.Minute).Unix()}), "unable to parse"},
		{"expired", f.ca.JWTSVID(t, coderID, []string{brokerID}, spiffetest.Expiry(time.Now().Add(-5*time.Minute))), "expired"},
		{"claims swapped", spiffetest.ReplaceJWTClaims(good, map[string]any{"sub": "spiffe://example.org/agent/admin",
			"aud": []string{brokerID}, "exp": time.Now().Add(time.Minute).Unix()}), "cryptographic primitive"},
		{"federated domain not accepted", f.fed.JWTSVID(t, "spiffe://partner.org/agent/x", []string{brokerID}), "not accepted"},
		{"unknown trust domain", f.evil.JWTSVID(t, "spiffe://evil.org/agent/x", []string{brokerID}), "no bundle found"},
		{"not a bearer", "", "not a bearer token"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := "Bearer " + c.tok
			if c.tok == "" {
				h = "Basic Zm9vOmJhcg=="
			}
			r, err := f.do(t, nil, map[string]string{"Authorization": h})
			if err != nil {
				t.Fatal(err)
			}
			if !errors.Is(r.err, agents.ErrInvalidToken) || !strings.Contains(r.err.Error(), c.want) {
				t.Fatalf("got %v, want ErrInvalidToken mentioning %q", r.err, c.want)
			}
		})
	}
	r, err = f.do(t, nil, nil)
	if err != nil || !errors.Is(r.err, agents.ErrUnauthenticated) {
		t.Fatalf("no credential: %v %v", err, r.err)
	}
}

func TestInitiatorOverMTLS(t *testing.T) {
	is := oidctest.NewIssuer(t)
	const aud = "https://broker.example/mcp"
	o, err := agents.NewOIDC(agents.OIDCOptions{Audience: aud, RequiredScopes: []string{"mcp:tools"},
		Issuers: []agents.IssuerConfig{{Issuer: is.URL, TenantClaim: "tenant"}}})
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, o, true)
	svid := f.ca.X509SVID(t, coderID)
	c := is.Claims("alice", aud)
	c["tenant"], c["groups"], c["scope"] = "acme", []string{"eng"}, "openid mcp:tools"
	c["act"] = map[string]any{"sub": coderID}
	r, err := f.do(t, svid, map[string]string{"Authorization": "Bearer " + is.Token(t, c)})
	if err != nil || r.err != nil {
		t.Fatalf("%v %v", err, r.err)
	}
	if r.id.Initiator != "alice" || r.id.Tenant != "acme" || r.id.Method != "x509-svid+oidc" || len(r.id.Groups) != 1 {
		t.Fatalf("identity %+v", r.id)
	}

	c["act"] = map[string]any{"sub": "spiffe://example.org/agent/other"}
	r, _ = f.do(t, svid, map[string]string{"Authorization": "Bearer " + is.Token(t, c)})
	if !errors.Is(r.err, agents.ErrActorMismatch) {
		t.Fatalf("act naming another agent: %v", r.err)
	}
	r, _ = f.do(t, svid, nil)
	if !errors.Is(r.err, agents.ErrUnauthenticated) {
		t.Fatalf("missing initiator token: %v", r.err)
	}

	// JWT-SVID agent with the initiator in X-Initiator-Token.
	c["act"] = map[string]any{"sub": coderID}
	r, _ = f.do(t, nil, map[string]string{"Authorization": "Bearer " + f.ca.JWTSVID(t, coderID, []string{brokerID}),
		agents.InitiatorTokenHeader: is.Token(t, c)})
	if r.err != nil || r.id.Method != "jwt-svid+oidc" || r.id.Initiator != "alice" {
		t.Fatalf("jwt-svid + initiator: %v %+v", r.err, r.id)
	}
}
