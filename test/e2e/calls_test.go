package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// tsBroker starts a broker with the testserver over stdio ("ts") and over
// streamable HTTP ("tsh"); events are their TESTSERVER_EVENTS files.
func tsBroker(t *testing.T, bc brokerConfig) (b *brokerProc, events map[string]string) {
	t.Helper()
	dir := t.TempDir()
	events = map[string]string{"ts": filepath.Join(dir, "ts.events"), "tsh": filepath.Join(dir, "tsh.events")}
	u := startTestserverHTTP(t, "tsh", events["tsh"])
	bc.servers = append(bc.servers, stdioTestserver(t, "ts", events["ts"]),
		downstream{Name: "tsh", Transport: "streamable-http", URL: u})
	return startBroker(t, bc), events
}

// TestProgress (case 3): progress notifications of a downstream reach the
// agent through the broker, in both eras and from both transports.
func TestProgress(t *testing.T) {
	b, _ := tsBroker(t, brokerConfig{})
	const steps = 5
	for _, era := range eras {
		for _, srv := range []string{"ts", "tsh"} {
			t.Run(era+"/"+srv, func(t *testing.T) {
				var mu sync.Mutex
				var got []float64
				token := "progress-" + era + "-" + srv
				cs := connect(t, b.url, era, &mcp.ClientOptions{
					ProgressNotificationHandler: func(_ context.Context, r *mcp.ProgressNotificationClientRequest) {
						if r.Params.ProgressToken != token {
							t.Errorf("progress with token %v, want %s", r.Params.ProgressToken, token)
							return
						}
						mu.Lock()
						got = append(got, r.Params.Progress)
						mu.Unlock()
					},
				}, "")
				waitTools(t, cs, srv+"__slow")
				p := &mcp.CallToolParams{Name: srv + "__slow", Arguments: map[string]any{"ms": 1000, "steps": steps}}
				p.SetProgressToken(token)
				res, err := cs.CallTool(ctxFor(t, 30*time.Second), p)
				if err != nil {
					t.Fatal(err)
				}
				if res.IsError || resultText(res) != "done" {
					t.Fatalf("slow result = %s", mustJSON(res))
				}
				// The last notification may be lost on streamable HTTP
				// (mcp-go notes, pitfall 3): allow steps-1. Notifications
				// are delivered asynchronously, so poll briefly.
				n := func() int { mu.Lock(); defer mu.Unlock(); return len(got) }
				deadline := time.Now().Add(2 * time.Second)
				for n() < steps && time.Now().Before(deadline) {
					time.Sleep(20 * time.Millisecond)
				}
				mu.Lock()
				defer mu.Unlock()
				if len(got) < steps-1 {
					t.Fatalf("got %d progress notifications %v, want at least %d", len(got), got, steps-1)
				}
				for i := 1; i < len(got); i++ {
					if got[i] <= got[i-1] {
						t.Errorf("progress not increasing: %v", got)
					}
				}
			})
		}
	}
}

// TestCancellation (case 4): cancelling the agent's request reaches the
// downstream, and the broker records the call as cancelled.
func TestCancellation(t *testing.T) {
	b, events := tsBroker(t, brokerConfig{})
	for _, era := range eras {
		for _, srv := range []string{"ts", "tsh"} {
			t.Run(era+"/"+srv, func(t *testing.T) {
				cs := connect(t, b.url, era, nil, "")
				waitTools(t, cs, srv+"__slow")
				before := len(eventsWith(t, events[srv], "call slow "))
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				errc := make(chan error, 1)
				go func() {
					_, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: srv + "__slow",
						Arguments: map[string]any{"ms": 60000, "steps": 0}})
					errc <- err
				}()
				var downstreamID string
				poll(t, 15*time.Second, "the slow call to reach the downstream", func() bool {
					calls := eventsWith(t, events[srv], "call slow ")
					if len(calls) > before {
						downstreamID = strings.TrimPrefix(calls[len(calls)-1], "call slow ")
						return true
					}
					return false
				})
				cancel()
				select {
				case err := <-errc:
					if err == nil {
						t.Error("cancelled call returned no error")
					}
				case <-time.After(10 * time.Second):
					t.Fatal("CallTool did not return after its context was cancelled")
				}
				poll(t, 10*time.Second, "cancelled "+downstreamID+" in the downstream's events", func() bool {
					return len(eventsWith(t, events[srv], "cancelled "+downstreamID)) > 0
				})
				target := srv + "__slow"
				ev := b.waitAudit("call.completed of a cancelled "+target, func(e auditEvent) bool {
					return e.Type == "call.completed" && e.Target == target && e.Status == "cancelled"
				})
				var decided bool
				for _, e := range b.callEvents(ev.CallID) {
					decided = decided || (e.Type == "call.decided" && e.Decision == "allow")
				}
				if !decided {
					t.Errorf("no allow decision recorded for call %s", ev.CallID)
				}
			})
		}
	}
}

// answer is an ElicitationHandler that accepts with a fixed answer.
func answer(t *testing.T, asked *[]string, mu *sync.Mutex) func(context.Context, *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
	return func(_ context.Context, r *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
		mu.Lock()
		*asked = append(*asked, r.Params.Message)
		mu.Unlock()
		return &mcp.ElicitResult{Action: "accept", Content: map[string]any{"answer": "forty-two", "name": "Ada Lovelace"}}, nil
	}
}

// TestElicitation (case 5): a downstream's elicitation reaches the agent and
// the agent's answer reaches the downstream, for the testserver's ask over
// both transports and for server-everything.
func TestElicitation(t *testing.T) {
	evURL := ""
	b, _ := func() (*brokerProc, map[string]string) {
		var extra []downstream
		if u := everythingURLIfAvailable(t); u != "" {
			evURL = u
			extra = append(extra, downstream{Name: "ev", Transport: "streamable-http", URL: u})
		}
		return tsBroker(t, brokerConfig{servers: extra})
	}()
	for _, era := range eras {
		t.Run(era, func(t *testing.T) {
			var mu sync.Mutex
			var asked []string
			cs := connect(t, b.url, era, &mcp.ClientOptions{ElicitationHandler: answer(t, &asked, &mu)}, "")
			waitTools(t, cs, "ts__ask", "tsh__ask")
			for _, srv := range []string{"ts", "tsh"} {
				t.Run("testserver-"+srv, func(t *testing.T) {
					q := fmt.Sprintf("question for %s in %s?", srv, era)
					res := callTool(t, cs, srv+"__ask", map[string]any{"question": q})
					if res.IsError || resultText(res) != "answer: forty-two" {
						t.Errorf("ask via %s (%s) = %s, want text %q", srv, era, mustJSON(res), "answer: forty-two")
					}
					mu.Lock()
					defer mu.Unlock()
					found := false
					for _, a := range asked {
						found = found || strings.HasSuffix(a, q) // the broker may say who asks
					}
					if !found {
						t.Errorf("the agent was never asked %q (asked: %q)", q, asked)
					}
				})
			}
			t.Run("server-everything", func(t *testing.T) {
				if evURL == "" {
					everythingBin(t) // skips, or fails under MCPBROKER_E2E_REQUIRE=1
				}
				ts := waitTools(t, cs, "ev__echo")
				name := ""
				for _, tool := range ts {
					if strings.HasPrefix(tool.Name, "ev__") && strings.Contains(tool.Name, "elicitation") &&
						!strings.Contains(tool.Name, "async") && !strings.Contains(tool.Name, "url") {
						name = tool.Name
					}
				}
				if name == "" {
					t.Fatalf("no elicitation tool of server-everything listed: %v", toolNames(ts))
				}
				res := callTool(t, cs, name, map[string]any{})
				if res.IsError || !strings.Contains(resultText(res), "Name: Ada Lovelace") {
					t.Errorf("%s (%s) = %s, want the answer in the text", name, era, mustJSON(res))
				}
			})
		})
	}
}

// everythingURLIfAvailable starts server-everything when it is installed;
// otherwise it returns "" and leaves skipping to the subtest.
func everythingURLIfAvailable(t *testing.T) string {
	var u string
	t.Run("start-server-everything", func(st *testing.T) {
		everythingBin(st)
		// Started on the parent so that it lives as long as the test.
		u = startEverything(t)
	})
	return u
}

// TestDownstreamCrash (case 7): a stdio downstream that dies mid-call gives
// the agent a tool error with a reason code, leaves an error outcome in the
// audit, and is restarted so that later calls work.
func TestDownstreamCrash(t *testing.T) {
	b, events := tsBroker(t, brokerConfig{})
	cs := connect(t, b.url, eraLegacy, nil, "")
	waitTools(t, cs, "ts__crash", "ts__echo")
	firstPIDs := startedPIDs(t, events["ts"])

	res := callTool(t, cs, "ts__crash", map[string]any{})
	callID := expectRefusal(t, res, "tool_unavailable", "downstream_error")
	if len(eventsWith(t, events["ts"], "crash ")) != 1 {
		t.Fatalf("the crash did not happen in the downstream: %v", readEvents(t, events["ts"]))
	}
	ev := b.waitAudit("call.completed of the crash", func(e auditEvent) bool {
		return e.Type == "call.completed" && e.Target == "ts__crash"
	})
	if ev.Status != "error" {
		t.Errorf("crash outcome status = %q, want error (%+v)", ev.Status, ev)
	}
	if callID != "" && ev.CallID != callID {
		t.Errorf("audit call ID %s, result call ID %s", ev.CallID, callID)
	}

	// The broker restarts the child; echo works again.
	poll(t, 30*time.Second, "echo to work again after the crash", func() bool {
		res, err := cs.CallTool(ctxFor(t, 10*time.Second), &mcp.CallToolParams{Name: "ts__echo", Arguments: map[string]any{"text": "again"}})
		return err == nil && !res.IsError && resultText(res) == "again"
	})
	if pids := startedPIDs(t, events["ts"]); len(pids) <= len(firstPIDs) {
		t.Errorf("no new stdio testserver started (pids %v)", pids)
	}
	// The crashed child was reaped: no zombie left under the broker.
	for _, pid := range firstPIDs {
		poll(t, 5*time.Second, fmt.Sprintf("crashed child %d to be reaped", pid), func() bool {
			_, err := os.Stat(fmt.Sprintf("/proc/%d", pid))
			return err != nil
		})
	}
	// The HTTP downstream was not affected.
	if res := callTool(t, cs, "tsh__echo", map[string]any{"text": "x"}); res.IsError {
		t.Errorf("tsh__echo after the stdio crash: %s", mustJSON(res))
	}
}

// TestStdioAnswerTooLarge: a stdio server's answer over max_answer_bytes,
// through the built binary: the agent gets a downstream_error (not a
// broker out of memory), the outcome is recorded as an error, the broker
// starts the server again, and the old child is reaped.
func TestStdioAnswerTooLarge(t *testing.T) {
	b, events := tsBroker(t, brokerConfig{extra: "max_answer_bytes: 65536\n"})
	cs := connect(t, b.url, eraLegacy, nil, "")
	waitTools(t, cs, "ts__echo")
	firstPIDs := startedPIDs(t, events["ts"])

	res := callTool(t, cs, "ts__echo", map[string]any{"text": strings.Repeat("x", 100<<10)})
	callID := expectRefusal(t, res, "downstream_error")
	ev := b.waitAudit("call.completed of the oversized echo", func(e auditEvent) bool {
		return e.Type == "call.completed" && e.CallID == callID
	})
	if ev.Status != "error" {
		t.Errorf("outcome status = %q, want error (%+v)", ev.Status, ev)
	}
	poll(t, 30*time.Second, "echo to work again", func() bool {
		res, err := cs.CallTool(ctxFor(t, 10*time.Second), &mcp.CallToolParams{Name: "ts__echo", Arguments: map[string]any{"text": "again"}})
		return err == nil && !res.IsError && resultText(res) == "again"
	})
	if pids := startedPIDs(t, events["ts"]); len(pids) <= len(firstPIDs) {
		t.Errorf("no new stdio testserver started (pids %v)", pids)
	}
	for _, pid := range firstPIDs {
		poll(t, 10*time.Second, fmt.Sprintf("the first child %d to be reaped", pid), func() bool {
			_, err := os.Stat(fmt.Sprintf("/proc/%d", pid))
			return err != nil
		})
	}
}
