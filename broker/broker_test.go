package broker

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"

	"github.com/mcpbroker/mcpbroker/broker/audit"
	"github.com/mcpbroker/mcpbroker/broker/store"
)

// startDemo runs a demo broker on a loopback port and returns its MCP URL
// and data dir. The broker stops when the test ends.
func startDemo(t *testing.T) (string, string) {
	t.Helper()
	b, url := runBroker(t, DemoConfig())
	return url, b.cfg.DataDir
}

// runBroker runs a broker for cfg on a loopback port with a fresh data dir
// (unless cfg sets one) and returns it with its MCP URL; it stops, and must
// stop in time, when the test ends.
func runBroker(t *testing.T, cfg Config) (*Broker, string) {
	t.Helper()
	b, url, _ := startBroker(t, cfg)
	return b, url
}

// startBroker is runBroker that also returns stop, for tests that restart a
// broker on the same data dir; stop is idempotent and also runs at cleanup.
func startBroker(t *testing.T, cfg Config) (*Broker, string, func()) {
	t.Helper()
	cfg.Listen = "127.0.0.1:0"
	if cfg.DataDir == "" || cfg.DataDir == Defaults().DataDir {
		cfg.DataDir = t.TempDir()
	}
	ready := make(chan string, 1)
	b, err := New(cfg, Options{Logger: testLogger(t), Version: "test", Ready: func(u string) { ready <- u }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
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
	}
	t.Cleanup(stop)
	select {
	case u := <-ready:
		return b, u, stop
	case err := <-done:
		t.Fatalf("broker stopped: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("broker not ready")
	}
	return nil, "", nil
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func connect(t *testing.T, url string, era string) *client.Client {
	t.Helper()
	tr, err := transport.NewStreamableHTTP(url)
	if err != nil {
		t.Fatal(err)
	}
	var opts []client.ClientOption
	if era != "" {
		opts = append(opts, client.WithProtocolVersion(era))
	}
	c := client.NewClient(tr, opts...)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	req := mcp.InitializeRequest{}
	req.Params.ClientInfo = mcp.Implementation{Name: "broker-test", Version: "1"}
	if _, err := c.Initialize(ctx, req); err != nil {
		t.Fatal(err)
	}
	if era != "" && c.ProtocolVersion() != era {
		t.Fatalf("negotiated %q, want %q", c.ProtocolVersion(), era)
	}
	return c
}

func callTool(t *testing.T, c *client.Client, name string, args map[string]any) *mcp.CallToolResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req := mcp.CallToolRequest{}
	req.Params.Name = name
	req.Params.Arguments = args
	res, err := c.CallTool(ctx, req)
	if err != nil {
		t.Fatalf("call %s: %v", name, err)
	}
	return res
}

func text(r *mcp.CallToolResult) string {
	var b strings.Builder
	for _, c := range r.Content {
		if tc, ok := c.(mcp.TextContent); ok {
			b.WriteString(tc.Text)
		}
	}
	return b.String()
}

func TestDemoBothEras(t *testing.T) {
	url, dir := startDemo(t)
	for _, era := range []string{mcp.ProtocolVersion20251125, mcp.ProtocolVersion20260728} {
		t.Run(era, func(t *testing.T) {
			c := connect(t, url, era)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			lt, err := c.ListTools(ctx, mcp.ListToolsRequest{})
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, tl := range lt.Tools {
				names = append(names, tl.Name)
			}
			got := strings.Join(names, ",")
			if !strings.Contains(got, "notes__read_note") || strings.Contains(got, "notes__delete_note") {
				t.Errorf("tools/list = %s; want read_note visible and delete_note hidden", got)
			}

			cases := []struct {
				name    string
				tool    string
				args    map[string]any
				isError bool
				want    string
			}{
				{"read allowed", "notes__read_note", map[string]any{"name": "welcome"}, false, "Welcome"},
				{"delete forbidden", "notes__delete_note", map[string]any{"name": "welcome"}, true, "denied_by_policy"},
				{"transfer over limit", "payments__transfer", map[string]any{"account": "alice", "recipient": "bob", "amount": 20000, "currency": "EUR"}, true, "denied_by_policy"},
				{"transfer under limit", "payments__transfer", map[string]any{"account": "alice", "recipient": "bob", "amount": 500, "currency": "EUR"}, false, "moved 5.00 EUR"},
				{"downstream validation error", "payments__transfer", map[string]any{"account": "nobody", "recipient": "bob", "amount": 5, "currency": "EUR"}, true, "nobody"},
			}
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					res := callTool(t, c, tc.tool, tc.args)
					if res.IsError != tc.isError || !strings.Contains(text(res), tc.want) {
						t.Errorf("isError=%v text=%q; want isError=%v containing %q", res.IsError, text(res), tc.isError, tc.want)
					}
					if res.ResultType != "" && era == mcp.ProtocolVersion20251125 {
						t.Errorf("legacy result carries resultType %q", res.ResultType)
					}
				})
			}
		})
	}
	entries := listLive(t, dir, audit.Filter{Type: audit.CallDecided})
	var allow, deny int
	for _, e := range entries {
		switch e.Event.Decision {
		case audit.DecisionAllow:
			allow++
		case audit.DecisionDeny:
			deny++
			if len(e.Event.PolicyIDs) == 0 {
				t.Errorf("deny without policy IDs: %+v", e.Event)
			}
		}
		if e.Event.PolicyDigest == "" || e.Event.ArgsDigest == "" || e.Event.CallID == "" {
			t.Errorf("incomplete decision record: %+v", e.Event)
		}
	}
	if allow != 6 || deny != 4 {
		t.Errorf("decisions allow=%d deny=%d, want 6 and 4", allow, deny)
	}
}

func listLive(t *testing.T, dir string, f audit.Filter) []audit.Entry {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	es, err := audit.ListRemote(ctx, dir+"/"+AdminSocket, f)
	if err != nil {
		t.Fatal(err)
	}
	return es
}

var _ = store.ErrLocked

type slogLogger = slog.Logger

func newSlog(w io.Writer) *slog.Logger {
	if w == nil {
		w = io.Discard
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}
