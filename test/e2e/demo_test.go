package e2e

import (
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// TestDemo (case 9): `serve --demo` over HTTP: the demo policies allow and
// deny as documented, and SIGTERM stops the broker cleanly.
func TestDemo(t *testing.T) {
	data := t.TempDir()
	urls := make(chan string, 1)
	p := startProcess(t, "mcpbroker --demo", exec.Command(brokerBin(t), "serve", "--demo", "--data", data, "--listen", "127.0.0.1:0"),
		func(_, line string) {
			if m := servingURL.FindStringSubmatch(line); m != nil {
				select {
				case urls <- m[1]:
				default:
				}
			}
		})
	var url string
	select {
	case url = <-urls:
	case <-p.done:
		t.Fatalf("demo broker exited: %v", p.err)
	case <-time.After(30 * time.Second):
		t.Fatal("demo broker did not announce its URL")
	}

	for _, era := range eras {
		t.Run(era, func(t *testing.T) {
			cs := connect(t, url, era, nil, "")
			ts := waitTools(t, cs, "notes__read_note", "notes__list_notes", "payments__transfer")
			if slices.Contains(toolNames(ts), "notes__delete_note") {
				t.Errorf("notes__delete_note is listed although the demo forbids it")
			}
			res := callTool(t, cs, "notes__read_note", map[string]any{"name": "welcome"})
			if res.IsError || !strings.Contains(resultText(res), "Welcome") {
				t.Errorf("read_note welcome = %s", mustJSON(res))
			}
			id := expectRefusal(t, callTool(t, cs, "notes__delete_note", map[string]any{"name": "welcome"}), "denied_by_policy")
			checkDecision(t, data, id, "deny", "demo-notes-no-delete")
			transfer := func(amount int) *mcp.CallToolResult {
				return callTool(t, cs, "payments__transfer", map[string]any{
					"account": "alice", "recipient": "bob", "amount": amount, "currency": "EUR"})
			}
			id = expectRefusal(t, transfer(20000), "denied_by_policy")
			checkDecision(t, data, id, "deny", "demo-payments-transfer-cap")
			if res := transfer(500); res.IsError {
				t.Errorf("transfer 500 = %s", mustJSON(res))
			}
			// The note is still there.
			if res := callTool(t, cs, "notes__read_note", map[string]any{"name": "welcome"}); res.IsError {
				t.Errorf("welcome was deleted: %s", mustJSON(res))
			}
		})
	}

	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
		if p.err != nil {
			t.Errorf("demo broker exited with %v after SIGTERM, want 0", p.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("demo broker did not exit within 10s of SIGTERM")
	}
	entries := auditList(t, data)
	if lastEvent(entries) != "broker.stopped" {
		t.Errorf("last audit record is not broker.stopped: %+v", entries[max(0, len(entries)-2):])
	}
}

// checkDecision finds the call.decided record of callID in data.
func checkDecision(t *testing.T, data, callID, decision, policyID string) {
	t.Helper()
	for _, e := range auditList(t, data) {
		if e.Event.Type == "call.decided" && e.Event.CallID == callID {
			if e.Event.Decision != decision || !slices.Contains(e.Event.PolicyIDs, policyID) {
				t.Errorf("decision for %s = %s %v, want %s by %s", callID, e.Event.Decision, e.Event.PolicyIDs, decision, policyID)
			}
			return
		}
	}
	t.Errorf("no call.decided record for %s", callID)
}

// TestDemoStdio (case 9): `serve --demo --stdio` under the go-sdk
// CommandTransport.
func TestDemoStdio(t *testing.T) {
	data := t.TempDir()
	cmd := exec.Command(brokerBin(t), "serve", "--demo", "--stdio", "--data", data)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var stderr lineBuffer
	cmd.Stderr = writerFunc(func(b []byte) { stderr.add(strings.TrimRight(string(b), "\n")) })
	c := mcp.NewClient(&mcp.Implementation{Name: "mcpbroker-e2e", Version: "1"}, nil)
	cs, err := c.Connect(ctxFor(t, 30*time.Second), &mcp.CommandTransport{Command: cmd, TerminateDuration: 5 * time.Second}, nil)
	if err != nil {
		t.Fatalf("connect: %v\n%s", err, stderr.String())
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			_ = cs.Close()
		}
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		if t.Failed() {
			t.Logf("broker stderr:\n%s", stderr.String())
		}
	})
	t.Logf("negotiated %s over stdio", cs.InitializeResult().ProtocolVersion)
	waitTools(t, cs, "notes__list_notes")
	res := callTool(t, cs, "notes__list_notes", map[string]any{})
	if res.IsError || !strings.Contains(resultText(res), "welcome") {
		t.Errorf("list_notes = %s", mustJSON(res))
	}
	// Closing stdin ends the broker cleanly: exit 0 before the transport
	// resorts to SIGTERM (after 5 s).
	start := time.Now()
	err = cs.Close()
	closed = true
	if err != nil {
		t.Errorf("broker exit after stdin closed: %v", err)
	}
	if d := time.Since(start); d >= 5*time.Second {
		t.Errorf("broker took %s to exit after stdin closed: it needed SIGTERM", d)
	}
	entries := auditList(t, data)
	if lastEvent(entries) != "broker.stopped" {
		t.Errorf("last audit record is not broker.stopped: %+v", entries[max(0, len(entries)-2):])
	}
}

// writerFunc adapts a function to io.Writer.
type writerFunc func([]byte)

func (f writerFunc) Write(b []byte) (int, error) { f(b); return len(b), nil }

// lastEvent is the type of the last record before the closing signed
// checkpoint, which must end a cleanly stopped ledger.
func lastEvent(entries []auditEntry) string {
	n := len(entries)
	if n == 0 {
		return ""
	}
	if entries[n-1].Event.Type != "ledger.checkpoint" {
		return "(no closing checkpoint) " + entries[n-1].Event.Type
	}
	if n < 2 {
		return ""
	}
	return entries[n-2].Event.Type
}
