package broker

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/mcpbroker/mcpbroker/agents/oidctest"
	"github.com/mcpbroker/mcpbroker/agents/spiffetest"
	"github.com/mcpbroker/mcpbroker/broker/audit"
)

const (
	tBrokerID = "spiffe://example.org/broker"
	tCoderID  = "spiffe://example.org/agent/coder"
	tOtherID  = "spiffe://example.org/agent/other"
	tNotesID  = "spiffe://example.org/tools/notes"
	tResource = "https://broker.test/mcp"
)

// mtlsTool serves one MCP tool over mTLS as the workload svid, admitting
// only the broker, and requiring a JWT-SVID for audience jwtAud when set.
// It returns the server's URL and a log of the JWT-SVID subjects it saw.
func mtlsTool(t *testing.T, ca *spiffetest.CA, svid *x509svid.SVID, jwtAud string) (string, func() []string) {
	t.Helper()
	s := server.NewMCPServer("notes", "1")
	s.AddTool(mcp.NewTool("echo", mcp.WithString("text"), mcp.WithReadOnlyHintAnnotation(true)),
		func(_ context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			return mcp.NewToolResultText("echo: " + req.GetString("text", "")), nil
		})
	var mu sync.Mutex
	var subs []string
	h := server.NewStreamableHTTPServer(s)
	guard := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if jwtAud != "" {
			tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
			js, err := jwtsvid.ParseAndValidate(tok, ca.JWTBundle(), []string{jwtAud})
			if err != nil {
				http.Error(w, "jwt-svid: "+err.Error(), http.StatusUnauthorized)
				return
			}
			mu.Lock()
			subs = append(subs, js.ID.String())
			mu.Unlock()
		}
		h.ServeHTTP(w, r)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := tlsconfig.MTLSServerConfig(svid, ca.X509Bundle(), tlsconfig.AuthorizeID(spiffeid.RequireFromString(tBrokerID)))
	hs := &http.Server{Handler: guard, ErrorLog: log.New(io.Discard, "", 0)}
	go func() { _ = hs.Serve(tls.NewListener(ln, cfg)) }()
	t.Cleanup(func() { _ = hs.Close() })
	return "https://" + ln.Addr().String() + "/mcp", func() []string { mu.Lock(); defer mu.Unlock(); return append([]string(nil), subs...) }
}

type spiffeEnv struct {
	ca     *spiffetest.CA
	issuer *oidctest.Issuer
	url    string
	dir    string
	seen   func() []string
}

func startSPIFFEBroker(t *testing.T) *spiffeEnv {
	t.Helper()
	e := &spiffeEnv{ca: spiffetest.NewCA(t, "example.org"), issuer: oidctest.NewIssuer(t), dir: t.TempDir()}
	wl := spiffetest.StartWorkloadAPI(t, e.ca, e.ca.X509SVID(t, tBrokerID))
	notesURL, seen := mtlsTool(t, e.ca, e.ca.X509SVID(t, tNotesID), "spiffe://example.org/tools/notes")
	e.seen = seen
	// A server that answers as someone else: never called.
	impostorURL, _ := mtlsTool(t, e.ca, e.ca.X509SVID(t, "spiffe://example.org/tools/impostor"), "")

	pol := filepath.Join(e.dir, "policies")
	if err := os.MkdirAll(pol, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(pol, "t.cedar"), []byte(`
@id("t-users") permit (principal is Broker::User, action in Broker::Action::"mcp", resource) when { resource in Broker::ToolServer::"notes" };
@id("t-agents") permit (principal is Broker::Agent, action in Broker::Action::"mcp", resource) when { resource in Broker::ToolServer::"notes" };
`), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := Defaults()
	cfg.Listen, cfg.DataDir, cfg.Policies = "127.0.0.1:0", filepath.Join(e.dir, "data"), pol
	cfg.Identity = IdentityConfig{Mode: "spiffe", DefaultTenant: "acme",
		SPIFFE: SPIFFEIdentityConfig{WorkloadAPI: wl.Addr, TrustDomains: []string{"example.org"}, JWTSVID: true, FetchTimeout: Duration(5 * time.Second)},
		OIDC: OIDCIdentityConfig{Resource: tResource, Required: true, RequiredScopes: []string{"mcp:tools"},
			Issuers: []OIDCIssuerConfig{{Issuer: e.issuer.URL, TenantClaim: "tenant"}}},
	}
	task := &DefaultTaskConfig{Tools: []string{"*"}, TTL: Duration(time.Hour)}
	cfg.Agents = []AgentConfig{{ID: tCoderID, MaxDepth: 2, DefaultTask: task}, {ID: tOtherID, MaxDepth: 2, DefaultTask: task}}
	cfg.Servers = []ServerConfig{
		{Name: "notes", Transport: "streamable-http", URL: notesURL, Trusted: true, SPIFFEID: tNotesID, JWTAudience: tNotesID},
		{Name: "impostor", Transport: "streamable-http", URL: impostorURL, SPIFFEID: tNotesID},
	}
	ready := make(chan string, 1)
	lg := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		lg = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	b, err := New(cfg, Options{Logger: lg, Version: "test", Ready: func(u string) { ready <- u }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("broker run: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Error("broker did not stop")
		}
	})
	select {
	case e.url = <-ready:
	case err := <-done:
		t.Fatalf("broker stopped: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("broker not ready")
	}
	if !strings.HasPrefix(e.url, "https://") {
		t.Fatalf("url %s", e.url)
	}
	return e
}

// token is alice's access token for the broker, delegated to agent.
func (e *spiffeEnv) token(t *testing.T, agent string, scope string) string {
	c := e.issuer.Claims("alice", tResource)
	c["tenant"], c["scope"], c["act"] = "acme", scope, map[string]any{"sub": agent}
	return e.issuer.Token(t, c)
}

// httpClient presents svid (none if nil) and accepts only the broker.
func (e *spiffeEnv) httpClient(svid *x509svid.SVID) *http.Client {
	b := x509bundle.NewSet(e.ca.X509Bundle())
	authz := tlsconfig.AuthorizeID(spiffeid.RequireFromString(tBrokerID))
	cfg := tlsconfig.TLSClientConfig(b, authz)
	if svid != nil {
		cfg = tlsconfig.MTLSClientConfig(svid, b, authz)
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 10 * time.Second}
}

func (e *spiffeEnv) post(t *testing.T, hc *http.Client, hdr map[string]string, body string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, e.url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

const initBody = `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`

func TestSPIFFEBroker(t *testing.T) {
	e := startSPIFFEBroker(t)
	coder := e.ca.X509SVID(t, tCoderID)

	t.Run("tool call over mTLS on both hops", func(t *testing.T) {
		tr, err := transport.NewStreamableHTTP(e.url, transport.WithHTTPBasicClient(e.httpClient(coder)),
			transport.WithHTTPHeaders(map[string]string{"Authorization": "Bearer " + e.token(t, tCoderID, "mcp:tools")}))
		if err != nil {
			t.Fatal(err)
		}
		c := client.NewClient(tr)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := c.Start(ctx); err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		req := mcp.InitializeRequest{}
		req.Params.ClientInfo = mcp.Implementation{Name: "t", Version: "1"}
		if _, err := c.Initialize(ctx, req); err != nil {
			t.Fatal(err)
		}
		lt, err := c.ListTools(ctx, mcp.ListToolsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		for _, tool := range lt.Tools {
			if strings.HasPrefix(tool.Name, "impostor__") {
				t.Errorf("impostor's tool %s is listed", tool.Name)
			}
		}
		res := callTool(t, c, "notes__echo", map[string]any{"text": "hi"})
		if res.IsError || text(res) != "echo: hi" {
			t.Fatalf("call: %+v", res)
		}
		if s := e.seen(); len(s) == 0 || s[len(s)-1] != tBrokerID {
			t.Fatalf("downstream saw JWT-SVIDs of %v, want the broker's", s)
		}
		es := listLive(t, filepath.Join(e.dir, "data"), audit.Filter{Type: audit.CallDecided, Agent: tCoderID})
		if len(es) == 0 || es[len(es)-1].Event.Initiator != "alice" || es[len(es)-1].Event.Tenant != "acme" {
			t.Fatalf("decision records: %+v", es)
		}
	})

	t.Run("401 points at the protected resource metadata", func(t *testing.T) {
		resp, _ := e.post(t, e.httpClient(coder), nil, initBody)
		want := `resource_metadata="https://broker.test/.well-known/oauth-protected-resource/mcp"`
		if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(resp.Header.Get("WWW-Authenticate"), want) {
			t.Fatalf("status %d, WWW-Authenticate %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
		}
		for _, p := range []string{"/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource/mcp"} {
			r, err := e.httpClient(coder).Get(strings.TrimSuffix(e.url, "/mcp") + p)
			if err != nil {
				t.Fatal(err)
			}
			var doc struct {
				Resource string   `json:"resource"`
				AS       []string `json:"authorization_servers"`
				Scopes   []string `json:"scopes_supported"`
			}
			_ = json.NewDecoder(r.Body).Decode(&doc)
			r.Body.Close()
			if doc.Resource != tResource || len(doc.AS) != 1 || doc.AS[0] != e.issuer.URL || len(doc.Scopes) != 1 {
				t.Fatalf("%s: %+v", p, doc)
			}
		}
	})

	t.Run("403 insufficient_scope", func(t *testing.T) {
		resp, _ := e.post(t, e.httpClient(coder), map[string]string{"Authorization": "Bearer " + e.token(t, tCoderID, "openid")}, initBody)
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(resp.Header.Get("WWW-Authenticate"), `error="insufficient_scope"`) {
			t.Fatalf("status %d, WWW-Authenticate %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
		}
	})

	t.Run("act naming another agent is refused and recorded", func(t *testing.T) {
		resp, _ := e.post(t, e.httpClient(coder), map[string]string{"Authorization": "Bearer " + e.token(t, tOtherID, "mcp:tools")}, initBody)
		if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(resp.Header.Get("WWW-Authenticate"), `error="invalid_token"`) {
			t.Fatalf("status %d", resp.StatusCode)
		}
		es := listLive(t, filepath.Join(e.dir, "data"), audit.Filter{Type: audit.AuthFailed})
		if len(es) == 0 || !strings.Contains(es[len(es)-1].Event.Detail, "another actor") {
			t.Fatalf("no auth.failed record for the act mismatch: %+v", es)
		}
	})

	t.Run("session ID replayed by another agent", func(t *testing.T) {
		resp, _ := e.post(t, e.httpClient(coder), map[string]string{"Authorization": "Bearer " + e.token(t, tCoderID, "mcp:tools")}, initBody)
		sid := resp.Header.Get(server.HeaderKeySessionID)
		if resp.StatusCode != http.StatusOK || sid == "" {
			t.Fatalf("initialize: %d %q", resp.StatusCode, sid)
		}
		other := e.ca.X509SVID(t, tOtherID)
		resp, _ = e.post(t, e.httpClient(other), map[string]string{"Authorization": "Bearer " + e.token(t, tOtherID, "mcp:tools"),
			server.HeaderKeySessionID: sid}, `{"jsonrpc":"2.0","id":2,"method":"tools/list"}`)
		if resp.StatusCode != http.StatusForbidden {
			t.Fatalf("replayed session: status %d", resp.StatusCode)
		}
		es := listLive(t, filepath.Join(e.dir, "data"), audit.Filter{Type: audit.RequestRejected, Session: sid})
		if len(es) == 0 || es[0].Event.Agent != tOtherID {
			t.Fatalf("replay not recorded: %+v", es)
		}
	})

	t.Run("broken client SVIDs fail the handshake and are recorded", func(t *testing.T) {
		now := time.Now()
		for name, svid := range map[string]*x509svid.SVID{
			"expired":      e.ca.X509SVID(t, tCoderID, spiffetest.Validity(now.Add(-2*time.Hour), now.Add(-time.Hour))),
			"wrong domain": spiffetest.NewCA(t, "evil.org").X509SVID(t, "spiffe://evil.org/agent/coder"),
		} {
			req, _ := http.NewRequest(http.MethodPost, e.url, strings.NewReader(initBody))
			if _, err := e.httpClient(svid).Do(req); err == nil {
				t.Fatalf("%s: request went through", name)
			}
		}
		var es []audit.Entry
		for range 50 { // the record is written after the handshake fails
			es = listLive(t, filepath.Join(e.dir, "data"), audit.Filter{Type: audit.AuthFailed})
			n := 0
			for _, x := range es {
				if strings.HasPrefix(x.Event.Detail, "tls: ") {
					n++
				}
			}
			if n >= 2 {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatalf("handshake refusals not recorded: %+v", es)
	})

	t.Run("JWT-SVID agent without a client certificate", func(t *testing.T) {
		resp, _ := e.post(t, e.httpClient(nil), map[string]string{
			"Authorization":     "Bearer " + e.ca.JWTSVID(t, tCoderID, []string{tBrokerID}),
			"X-Initiator-Token": e.token(t, tCoderID, "mcp:tools")}, initBody)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d", resp.StatusCode)
		}
		resp, _ = e.post(t, e.httpClient(nil), map[string]string{
			"Authorization":     "Bearer " + e.ca.JWTSVID(t, tCoderID, []string{"spiffe://example.org/someone-else"}),
			"X-Initiator-Token": e.token(t, tCoderID, "mcp:tools")}, initBody)
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("JWT-SVID for another audience: status %d", resp.StatusCode)
		}
	})

	t.Run("downstream with the wrong ID is not called and is recorded", func(t *testing.T) {
		var es []audit.Entry
		for range 100 {
			es = listLive(t, filepath.Join(e.dir, "data"), audit.Filter{Type: audit.RequestRejected, Server: "impostor"})
			if len(es) > 0 {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if len(es) == 0 || !strings.Contains(es[0].Event.Detail, "unexpected ID") {
			t.Fatalf("impostor not recorded: %+v", es)
		}
	})
}

func TestSPIFFEConfigValidation(t *testing.T) {
	c := Defaults()
	c.Policies = "p"
	c.Identity = IdentityConfig{Mode: "spiffe", DefaultAgent: "spiffe://x/y",
		SPIFFE: SPIFFEIdentityConfig{TrustDomains: []string{"spiffe://bad/x"}, SVIDCert: "c"},
		OIDC: OIDCIdentityConfig{Resource: "http://broker/mcp", Issuers: []OIDCIssuerConfig{
			{Issuer: "http://idp.example", Algorithms: []string{"HS256", "none"}, TenantClaim: "tid"},
			{Issuer: "https://idp2.example", Tenants: []string{"acme"}},
		}},
	}
	c.Servers = []ServerConfig{{Name: "a", Transport: "streamable-http", URL: "http://x/mcp", SPIFFEID: "spiffe://example.org/a", ForwardAgentToken: true}}
	err := c.Validate()
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{"trust_domains[0]", "svid_cert and svid_key", "bundles: required", "dev-mode settings",
		"resource", "issuers[0].issuer", `"HS256"`, `"none"`, "never forwarded", "https:// for mTLS",
		"issuers[0].tenants: required with more than one issuer", "issuers[1].tenants: set tenant_claim too",
		`issuers[1].subject_prefix: "" is also issuers[0]'s`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
}
