package ledger

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// TestAuditCLI drives the built CLI over a real data directory: query
// filters, show, hash, export and its re-verification, compaction, and a
// tampered copy that verify rejects naming the sequence number.
func TestAuditCLI(t *testing.T) {
	if testing.Short() {
		t.Skip("real-process test")
	}
	bin := brokerBin(t)
	dir := filepath.Join(t.TempDir(), "data")
	p := start(t, bin, dir)
	c := mcp.NewClient(&mcp.Implementation{Name: "cli-test", Version: "1"}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cs, err := c.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: p.url, MaxRetries: -1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		cs.CallTool(ctx, &mcp.CallToolParams{Name: "notes__read_note", Arguments: map[string]any{"name": fmt.Sprint("n", i)}})
	}
	cs.CallTool(ctx, &mcp.CallToolParams{Name: "notes__delete_note", Arguments: map[string]any{"name": "welcome"}})
	cs.Close()
	// Verify while the broker runs: through the admin socket, and what it
	// serves is verified here.
	if out, code := run(t, bin, "audit", "verify", "--data", dir); code != 0 {
		t.Fatalf("verify while running: exit %d\n%s", code, out)
	}
	// Reads while the broker runs go through the admin socket.
	if out, code := run(t, bin, "audit", "query", "--data", dir, "--decision", "deny", "--tool", "notes__delete_note"); code != 0 || strings.Count(out, "\n") != 1 {
		t.Fatalf("query deny while running: exit %d\n%s", code, out)
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	<-p.done
	p.done <- nil

	out, code := run(t, bin, "audit", "list", "--data", dir, "--type", "call.decided", "--since", "1h", "--agent", "spiffe://demo.local/agent/dev")
	if code != 0 || strings.Count(out, "call.decided") != 6 {
		t.Fatalf("list: exit %d\n%s", code, out)
	}
	if out, code := run(t, bin, "audit", "show", "--data", dir, "1"); code != 0 || !strings.Contains(out, `"seq": 1`) {
		t.Fatalf("show 1: exit %d\n%s", code, out)
	}
	if out, code := run(t, bin, "audit", "hash", "--data", dir, "alice"); code != 0 || !strings.HasPrefix(out, "hmac-sha256:") || len(strings.TrimSpace(out)) != len("hmac-sha256:")+64 {
		t.Fatalf("hash: exit %d %q", code, out)
	}
	if out, code := run(t, bin, "audit", "verify", "--data", dir); code != 0 {
		t.Fatalf("verify: exit %d\n%s", code, out)
	}

	// A socket planted in a copy of the data dir that says "ok" proves
	// nothing: verify checks what it serves against the anchor and key
	// kept elsewhere.
	pub0, _ := run(t, bin, "audit", "pubkey", "--data", dir)
	anchorCopy := filepath.Join(t.TempDir(), "anchor.json")
	if b, err := os.ReadFile(filepath.Join(dir, "audit.anchor")); err != nil {
		t.Fatal(err)
	} else if err := os.WriteFile(anchorCopy, b, 0o600); err != nil {
		t.Fatal(err)
	}
	fake := filepath.Join(t.TempDir(), "fake")
	os.MkdirAll(fake, 0o700)
	ln, err := net.Listen("unix", filepath.Join(fake, "admin.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/verify") {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"ok":true,"entries":1000,"first":1,"last":1000,"anchored":true,"key_pinned":true}`)
			return
		}
		w.Header().Set("Content-Type", "application/x-ndjson") // an empty export
	}))
	if out, code := run(t, bin, "audit", "verify", "--data", fake, "--pubkey", strings.TrimSpace(pub0), "--anchor", anchorCopy); code == 0 {
		t.Fatalf("a planted socket's ok was believed: exit %d\n%s", code, out)
	}

	// Export from seq 3 re-verifies, flagged as starting mid-ledger.
	var b []byte
	exp := filepath.Join(t.TempDir(), "from3.jsonl")
	if out, code := run(t, bin, "audit", "export", "--data", dir, "--since", "3", "--out", exp); code != 0 || !strings.Contains(out, "resume with --since") {
		t.Fatalf("export: exit %d\n%s", code, out)
	}
	if out, code := run(t, bin, "audit", "verify", "--file", exp); code != 0 || !strings.Contains(out, "starts at seq 3") {
		t.Fatalf("verify export: exit %d\n%s", code, out)
	}
	b, _ = os.ReadFile(exp)
	lines := bytes.Split(bytes.TrimSpace(b), []byte("\n"))
	lines[2], lines[3] = lines[3], lines[2]
	os.WriteFile(exp, bytes.Join(lines, []byte("\n")), 0o600)
	if out, code := run(t, bin, "audit", "verify", "--file", exp); code == 0 || !strings.Contains(out, "seq 5") {
		t.Fatalf("verify swapped export: exit %d\n%s", code, out)
	}

	// A tampered copy of the data dir fails, naming the entry.
	cp := filepath.Join(t.TempDir(), "copy")
	os.MkdirAll(cp, 0o700)
	for _, f := range []string{"mcpbroker.db", "audit.key"} {
		b, err = os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if f == "mcpbroker.db" {
			b = bytes.ReplaceAll(b, []byte(`"decision":"deny"`), []byte(`"decision":"DENY"`))
		}
		os.WriteFile(filepath.Join(cp, f), b, 0o600)
	}
	if out, code := run(t, bin, "audit", "verify", "--data", cp); code != 1 || !strings.Contains(out, "FAIL") || !strings.Contains(out, "hash mismatch") {
		t.Fatalf("verify tampered copy: exit %d\n%s", code, out)
	}

	// A length-changing edit breaks bbolt's pages: reported, not a crash.
	db := filepath.Join(cp, "mcpbroker.db")
	b, _ = os.ReadFile(db)
	os.WriteFile(db, bytes.ReplaceAll(b, []byte(`"decision":"DENY"`), []byte(`"decision":"allowed"`)), 0o600)
	if out, code := run(t, bin, "audit", "verify", "--data", cp); code != 1 || !strings.Contains(out, "corrupt") {
		t.Fatalf("verify corrupted copy: exit %d\n%s", code, out)
	}

	// Compaction: archive everything but the newest entry; both parts verify.
	arch := filepath.Join(t.TempDir(), "archive.jsonl")
	if out, code := run(t, bin, "audit", "compact", "--data", dir, "--before", time.Now().Add(time.Hour).UTC().Format(time.RFC3339), "--archive", arch); code != 0 || !strings.Contains(out, "archived") {
		t.Fatalf("compact: exit %d\n%s", code, out)
	}
	if out, code := run(t, bin, "audit", "verify", "--data", dir); code != 0 || !strings.Contains(out, "compacted") {
		t.Fatalf("verify after compact: exit %d\n%s", code, out)
	}
	pub, _ := run(t, bin, "audit", "pubkey", "--data", dir)
	if out, code := run(t, bin, "audit", "verify", "--file", arch, "--pubkey", strings.TrimSpace(pub)); code != 0 {
		t.Fatalf("verify archive: exit %d\n%s", code, out)
	}
}
