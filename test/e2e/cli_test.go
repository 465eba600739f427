package e2e

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"testing"
)

// mcpbroker runs the built binary with args and returns stdout; a non-zero
// exit fails the test unless wantFail.
func mcpbroker(t *testing.T, wantFail bool, args ...string) string {
	t.Helper()
	cmd := exec.Command(brokerBin(t), args...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if (err != nil) != wantFail {
		t.Fatalf("mcpbroker %v: err=%v\nstdout: %s\nstderr: %s", args, err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// TestCLIAdminCommands drives task, tools, approvals and audit commands
// against a running broker (through its admin socket) and, after it stops,
// against the store directly.
func TestCLIAdminCommands(t *testing.T) {
	b := startBroker(t, brokerConfig{servers: []downstream{stdioTestserver(t, "ts", t.TempDir()+"/events")}})
	const agent = "spiffe://e2e.local/agent/cli"

	var grant struct {
		Handle string `json:"handle"`
		Task   struct {
			ID    string   `json:"id"`
			Tools []string `json:"tools"`
		} `json:"task"`
	}
	out := mcpbroker(t, false, "task", "grant", "--data", b.data, "--agent", agent, "--initiator", "alice",
		"--tools", "ts__echo,ts__slow", "--ttl", "10m", "--max-calls", "3", "--json")
	if err := json.Unmarshal([]byte(out), &grant); err != nil || !strings.HasPrefix(grant.Handle, "mcpbt_") || len(grant.Task.Tools) != 2 {
		t.Fatalf("grant through the running broker: %v %q", err, out)
	}
	if out := mcpbroker(t, false, "task", "list", "--data", b.data); !strings.Contains(out, grant.Task.ID) || !strings.Contains(out, "live") {
		t.Errorf("task list: %s", out)
	}
	mcpbroker(t, false, "task", "revoke", grant.Task.ID, "--data", b.data)
	if out := mcpbroker(t, false, "task", "show", grant.Task.ID, "--data", b.data); !strings.Contains(out, "revoked_at") {
		t.Errorf("task show after revoke: %s", out)
	}
	mcpbroker(t, true, "task", "show", "task_nope", "--data", b.data)
	if out := mcpbroker(t, false, "tools", "list", "--data", b.data); !strings.Contains(out, "ts/echo") {
		t.Errorf("tools list: %s", out)
	}
	mcpbroker(t, false, "tools", "diff", "ts/echo", "--data", b.data)
	mcpbroker(t, true, "tools", "pin", "ts/nope", "--data", b.data)
	mcpbroker(t, false, "approvals", "list", "--data", b.data)
	if out := mcpbroker(t, false, "audit", "list", "--data", b.data, "--type", "task.granted", "--json"); !strings.Contains(out, grant.Task.ID) {
		t.Errorf("task.granted not recorded: %s", out)
	}
	b.stop()

	// Offline: the same commands open the store.
	if out := mcpbroker(t, false, "task", "list", "--data", b.data, "--json"); !strings.Contains(out, grant.Task.ID) {
		t.Errorf("offline task list: %s", out)
	}
	mcpbroker(t, false, "approvals", "history", "--data", b.data)
	if out := mcpbroker(t, false, "audit", "verify", "--data", b.data); !strings.Contains(out, "ok") {
		t.Errorf("audit verify: %s", out)
	}
}

// TestAuditAfterKill kills the broker (SIGKILL: no shutdown, no
// checkpoint) right after calls were answered: every answered call's
// records must be in the audit trail that the offline commands read (they
// apply the store's write-ahead log first), and the trail must verify.
func TestAuditAfterKill(t *testing.T) {
	b := startBroker(t, brokerConfig{servers: []downstream{stdioTestserver(t, "ts", t.TempDir()+"/events")}})
	cs := connect(t, b.url, "2025-11-25", nil, "")
	const calls = 20
	for i := range calls {
		if res := callTool(t, cs, "ts__echo", map[string]any{"text": fmt.Sprint("kill ", i)}); res.IsError {
			t.Fatalf("call %d: %s", i, resultText(res))
		}
	}
	b.stopped = true
	if err := b.proc.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-b.proc.done

	out := mcpbroker(t, false, "audit", "verify", "--data", b.data)
	if !strings.Contains(out, "ok") {
		t.Fatalf("audit verify after SIGKILL: %s", out)
	}
	decided, completed := 0, 0
	for _, e := range auditList(t, b.data) {
		if e.Event.Method != "tools/call" {
			continue
		}
		switch e.Event.Type {
		case "call.decided":
			decided++
		case "call.completed":
			completed++
		}
	}
	if decided != calls || completed != calls {
		t.Fatalf("after SIGKILL the trail holds %d call.decided and %d call.completed records for %d answered calls", decided, completed, calls)
	}
}
