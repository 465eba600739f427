package broker

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/mcpbroker/mcpbroker/broker/audit"
)

// A raw 2026-07-28 agent that can answer elicitations (or not, by never
// retrying): these tests drive the parked-call paths a real client only
// reaches by misbehaving or by going away.

const parkMeta = `"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"raw","version":"1"},"io.modelcontextprotocol/clientCapabilities":{"elicitation":{}}}`

func parkHeaders(tool string) map[string]string {
	return map[string]string{mcp.HeaderProtocolVersion: "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": tool}
}

// askRaw calls asker__ask as a raw 2026-07-28 agent and returns the
// decoded result (input_required or final).
func askRaw(t *testing.T, ctx context.Context, url string, id int, extra string) (mcp.CallToolResult, string) {
	t.Helper()
	body := fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"asker__ask","arguments":{"q":"q%d"},%s%s}}`, id, id, parkMeta, extra)
	code, out, _ := rawPost(t, ctx, url, "", parkHeaders("asker__ask"), body)
	if code != http.StatusOK {
		t.Fatalf("call %d: status %d: %s", id, code, out)
	}
	var env struct {
		Result json.RawMessage `json:"result"`
	}
	if err := json.Unmarshal([]byte(out), &env); err != nil {
		t.Fatalf("call %d: %v: %s", id, err, out)
	}
	res, err := mcp.ParseCallToolResult(&env.Result)
	if err != nil {
		t.Fatalf("call %d: %v: %s", id, err, out)
	}
	return *res, out
}

// completions are the CallCompleted records of asker__ask, by call ID.
func completions(t *testing.T, b *Broker) map[string][]string {
	t.Helper()
	es, err := b.ledger.List(context.Background(), audit.Filter{Type: audit.CallCompleted})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for _, e := range es {
		if e.Event.Target == "asker__ask" || e.Event.Target == "asker__stuck" {
			out[e.Event.CallID] = append(out[e.Event.CallID], e.Event.Status)
		}
	}
	return out
}

func waitCompletions(t *testing.T, b *Broker, n int) map[string][]string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := completions(t, b)
		if len(got) >= n || time.Now().After(deadline) {
			return got
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestParkedCallExpires: an agent that never answers the relayed request
// has its call cancelled and recorded as timed out, once, at the call's
// deadline; its late answer is refused as too late, and recorded.
func TestParkedCallExpires(t *testing.T) {
	cfg := permissiveConfig(t, "", "asker", askServer())
	cfg.CallTimeout = Duration(time.Second)
	b, url := runBroker(t, cfg)
	ctx := context.Background()

	res, _ := askRaw(t, ctx, url, 1, "")
	if !res.NeedsInput() || len(res.InputRequests) != 1 {
		t.Fatalf("want input_required, got %+v", res)
	}
	got := waitCompletions(t, b, 1)
	if len(got) != 1 {
		t.Fatalf("completions %v, want one call", got)
	}
	for id, st := range got {
		if len(st) != 1 || st[0] != audit.StatusTimeout {
			t.Fatalf("call %s recorded %v, want one timeout", id, st)
		}
	}

	var key string
	for k := range res.InputRequests {
		key = k
	}
	answer := fmt.Sprintf(`,"requestState":%q,"inputResponses":{%q:{"action":"accept","content":{"answer":"42"}}}`, res.RequestState, key)
	late, out := askRaw(t, ctx, url, 2, answer)
	if !late.IsError || !strings.Contains(out, string(ReasonTimeout)) {
		t.Fatalf("late answer: %s", out)
	}
	es, err := b.ledger.List(ctx, audit.Filter{Type: audit.RequestRejected})
	if err != nil || len(es) == 0 || !strings.Contains(es[len(es)-1].Event.Detail, "expired") {
		t.Fatalf("late answer not recorded: %v %+v", err, es)
	}
	time.Sleep(200 * time.Millisecond) // nothing records the call again
	if again := completions(t, b); len(again) != 1 || len(again[firstKey(again)]) != 1 {
		t.Fatalf("completions after the late answer %v", again)
	}
}

func firstKey(m map[string][]string) string {
	for k := range m {
		return k
	}
	return ""
}

// TestParkedCallsCappedPerAgent: past maxWaiting requests waiting on one
// agent, a downstream's further elicitation is refused (the tool sees it
// fail) instead of parking yet another call.
func TestParkedCallsCappedPerAgent(t *testing.T) {
	old := maxWaiting.Swap(2)
	t.Cleanup(func() { maxWaiting.Store(old) })
	_, url := runBroker(t, permissiveConfig(t, "", "asker", askServer()))
	ctx := context.Background()
	for i := 1; i <= 2; i++ {
		if res, out := askRaw(t, ctx, url, i, ""); !res.NeedsInput() {
			t.Fatalf("call %d: want input_required: %s", i, out)
		}
	}
	res, out := askRaw(t, ctx, url, 3, "")
	if res.NeedsInput() || !strings.Contains(out, "elicitation failed") {
		t.Fatalf("third waiting call: want the elicitation refused, got %s", out)
	}
}

// TestParkedCallAgentGoesAway: an agent that hangs up while the
// downstream runs has the call cancelled; a downstream that ignores the
// cancellation still gets its call recorded (cancelled) after
// outcomeWait, once, and nothing is recorded when it returns later.
func TestParkedCallAgentGoesAway(t *testing.T) {
	old := outcomeWait.Swap(int64(200 * time.Millisecond))
	t.Cleanup(func() { outcomeWait.Store(old) })
	release, started := make(chan struct{}, 1), make(chan struct{}, 1)
	var returned atomic.Bool
	ds := askServer()
	ds.AddTool(mcp.NewTool("stuck"), func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		started <- struct{}{}
		<-release // ignores ctx
		returned.Store(true)
		return mcp.NewToolResultText("late"), nil
	})
	b, url := runBroker(t, permissiveConfig(t, "", "asker", ds))
	defer close(release)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		body := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"asker__stuck",` + parkMeta + `}}`
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		for k, v := range parkHeaders("asker__stuck") {
			req.Header.Set(k, v)
		}
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("the downstream was not called")
	}
	cancel() // the agent hangs up
	<-done
	got := waitCompletions(t, b, 1)
	if len(got) != 1 || len(got[firstKey(got)]) != 1 || got[firstKey(got)][0] != audit.StatusCancelled {
		t.Fatalf("completions %v, want one cancelled", got)
	}
	if returned.Load() {
		t.Fatal("the downstream returned before the test released it")
	}
	release <- struct{}{} // now it returns: nothing more is recorded
	deadline := time.Now().Add(5 * time.Second)
	for !returned.Load() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	if again := completions(t, b); len(again[firstKey(again)]) != 1 {
		t.Fatalf("completions after the downstream returned: %v", again)
	}
}

// TestParkedCallsAtShutdown: a call waiting on its agent when the broker
// stops is cancelled and recorded as cancelled, once.
func TestParkedCallsAtShutdown(t *testing.T) {
	cfg := permissiveConfig(t, "", "asker", askServer())
	cfg.DataDir = t.TempDir()
	_, url, stop := startBroker(t, cfg)
	if res, out := askRaw(t, context.Background(), url, 1, ""); !res.NeedsInput() {
		t.Fatalf("want input_required: %s", out)
	}
	stop()
	b, _, stop2 := startBroker(t, cfg)
	defer stop2()
	got := completions(t, b)
	if len(got) != 1 || len(got[firstKey(got)]) != 1 || got[firstKey(got)][0] != audit.StatusCancelled {
		t.Fatalf("completions %v, want one cancelled", got)
	}
}

// TestServerTenantAndCallRiskTags: a server's tenant reaches policy as
// resource.tenant, and a secret-looking argument as context.riskTags
// "secret_in_args", so the example policies that read them fire.
func TestServerTenantAndCallRiskTags(t *testing.T) {
	ds := askServer()
	ds.AddTool(mcp.NewTool("echo", mcp.WithString("text"), mcp.WithString("api_token")), func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return mcp.NewToolResultText("ok"), nil
	})
	cfg := permissiveConfig(t, `
@id("tenant-isolation-users")
forbid (principal is Broker::User, action, resource)
when { resource has tenant && !(principal has tenant && principal.tenant == resource.tenant) };
@id("no-secrets")
forbid (principal, action, resource) when { context.riskTags.contains("secret_in_args") };
`, "asker", ds)
	_, url := runBroker(t, cfg)
	c := connect(t, url, mcp.ProtocolVersion20251125)
	if res := callTool(t, c, "asker__echo", map[string]any{"text": "hi"}); res.IsError {
		t.Fatalf("a plain call: %q", text(res))
	}
	if res := callTool(t, c, "asker__echo", map[string]any{"text": "hi", "api_token": "s3cr3t"}); reasonOf(res) != string(ReasonDeniedByPolicy) {
		t.Fatalf("a secret in the arguments: %q", text(res))
	}
	if res := callTool(t, c, "asker__echo", map[string]any{"text": "hi", "max_tokens": 100, "next_page_token": "p2", "api_token": ""}); res.IsError {
		t.Fatalf("names that only look like credentials, and an empty one: %q", text(res))
	}

	cfg2 := permissiveConfig(t, `
@id("tenant-isolation-users")
forbid (principal is Broker::User, action, resource)
when { resource has tenant && !(principal has tenant && principal.tenant == resource.tenant) };
`, "asker", askServer())
	cfg2.Servers[0].Tenant = "globex" // alice is in no tenant
	_, url2 := runBroker(t, cfg2)
	c2 := connect(t, url2, mcp.ProtocolVersion20251125)
	if res := callTool(t, c2, "asker__ask", map[string]any{"q": "x"}); reasonOf(res) != string(ReasonDeniedByPolicy) {
		t.Fatalf("another tenant's server: %q", text(res))
	}
}
