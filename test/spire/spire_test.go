package spire

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mcpbroker/mcpbroker/agents/oidctest"
	"github.com/mcpbroker/mcpbroker/broker/audit"
)

const (
	brokerID = "spiffe://example.org/broker"
	coderID  = "spiffe://example.org/agent/coder"
	notesID  = "spiffe://example.org/tools/notes"
	agentUID = "65534"
	notesUID = "65533"
	strayUID = "65532" // registered for nothing
)

func root(t *testing.T) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(wd, "..", "..")
}

// spireBinaries finds spire-server and spire-agent: $SPIRE_SERVER and
// $SPIRE_AGENT, then PATH, then $(go env GOPATH)/bin (where install.sh puts them).
func spireBinaries() (string, string, error) {
	gobin := ""
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		gobin = filepath.Join(strings.TrimSpace(string(out)), "bin")
	}
	find := func(env, name string) (string, error) {
		if p := os.Getenv(env); p != "" {
			if _, err := os.Stat(p); err != nil {
				return "", fmt.Errorf("$%s: %w", env, err)
			}
			return p, nil
		}
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
		p := filepath.Join(gobin, name)
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("%s not found (run test/spire/install.sh)", name)
		}
		return p, nil
	}
	s, err := find("SPIRE_SERVER", "spire-server")
	if err != nil {
		return "", "", err
	}
	a, err := find("SPIRE_AGENT", "spire-agent")
	return s, a, err
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// start runs cmd, logging its stderr into the test log, and stops it (SIGTERM, then
// SIGKILL) when the test ends.
func start(t *testing.T, name string, cmd *exec.Cmd) {
	t.Helper()
	pr, pw := io.Pipe()
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			logs.add(name, sc.Text())
		}
	}()
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); _ = pw.Close(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		wg.Wait()
	})
}

// logs collects the processes' stderr lines.
var logs = &logBook{}

type logBook struct {
	mu    sync.Mutex
	lines []string
}

func (l *logBook) add(name, line string) {
	l.mu.Lock()
	l.lines = append(l.lines, name+": "+line)
	l.mu.Unlock()
}

func (l *logBook) has(prefix, substr string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.lines {
		if strings.HasPrefix(s, prefix) && strings.Contains(s, substr) {
			return true
		}
	}
	return false
}

// within waits up to d for a line has would find: a process's stderr is
// copied into the book by another goroutine, after the fact.
func (l *logBook) within(d time.Duration, prefix, substr string) bool {
	for end := time.Now().Add(d); ; time.Sleep(20 * time.Millisecond) {
		if l.has(prefix, substr) {
			return true
		}
		if time.Now().After(end) {
			return false
		}
	}
}

func (l *logBook) dump(t *testing.T) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.lines {
		t.Log(s)
	}
}

func asUID(uid string, args ...string) *exec.Cmd {
	return exec.Command("setpriv", append([]string{"--reuid=" + uid, "--regid=" + uid, "--clear-groups", "--"}, args...)...)
}

func TestRealSPIRE(t *testing.T) {
	require := os.Getenv("MCPBROKER_E2E_REQUIRE") == "1"
	unavailable := func(format string, args ...any) {
		t.Helper()
		if require {
			t.Fatalf("real-SPIRE test required (MCPBROKER_E2E_REQUIRE=1): "+format, args...)
		}
		t.Skipf(format, args...)
	}
	spireServer, spireAgent, err := spireBinaries()
	if err != nil {
		unavailable("%v", err)
	}
	if os.Geteuid() != 0 {
		unavailable("needs root: workloads are told apart by unix uid and started with setpriv")
	}
	if _, err := exec.LookPath("setpriv"); err != nil {
		unavailable("setpriv (util-linux) not found")
	}
	repo := root(t)

	// A directory other uids can traverse (t.TempDir's parent is 0700).
	dir, err := os.MkdirTemp("", "mcpb-spire")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "bin")
	broker := os.Getenv("MCPBROKER_BIN")
	build := func(out, pkg string) {
		t.Helper()
		cmd := exec.Command("go", "build", "-o", out, pkg)
		cmd.Dir = repo
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", pkg, err, b)
		}
	}
	if broker == "" {
		broker = filepath.Join(bin, "mcpbroker")
		build(broker, "./cmd/mcpbroker")
	} else { // copy: the caller's temp dir may not be reachable by other uids
		b, err := os.ReadFile(broker)
		if err != nil {
			t.Fatal(err)
		}
		broker = filepath.Join(bin, "mcpbroker")
		_ = os.MkdirAll(bin, 0o755)
		if err := os.WriteFile(broker, b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	notes := filepath.Join(bin, "notes-server")
	build(notes, "./examples/spire/notes-server")
	_ = os.Chmod(bin, 0o755)

	// SPIRE, from the example's script.
	t0 := time.Now()
	spireDir := filepath.Join(dir, "spire")
	env := append(os.Environ(), "SPIRE_DIR="+spireDir, fmt.Sprintf("SPIRE_PORT=%d", freePort(t)),
		"SPIRE_SERVER="+spireServer, "SPIRE_AGENT="+spireAgent, "AGENT_UID="+agentUID, "NOTES_UID="+notesUID)
	up := exec.Command(filepath.Join(repo, "examples/spire/spire-up.sh"))
	up.Env = env
	t.Cleanup(func() {
		down := exec.Command(filepath.Join(repo, "examples/spire/spire-down.sh"))
		down.Env = env
		_ = down.Run()
		if t.Failed() {
			for _, f := range []string{"server.log", "agent.log"} {
				b, _ := os.ReadFile(filepath.Join(spireDir, f))
				t.Logf("--- %s\n%s", f, b)
			}
		}
	})
	if out, err := up.CombinedOutput(); err != nil {
		t.Fatalf("spire-up.sh: %v\n%s", err, out)
	}
	t.Logf("SPIRE server and agent up in %s", time.Since(t0).Round(time.Millisecond))
	sock := "unix://" + filepath.Join(spireDir, "agent/public/api.sock")
	t.Cleanup(func() {
		if t.Failed() {
			logs.dump(t)
		}
	})

	// The downstream, under its own uid: admits only the broker, over mTLS
	// plus a JWT-SVID for its own ID.
	notesPort := freePort(t)
	nc := asUID(notesUID, notes, "-listen", fmt.Sprintf("127.0.0.1:%d", notesPort), "-allow", brokerID,
		"-jwt-audience", notesID, "-workload-api", sock)
	nout, _ := nc.StdoutPipe()
	start(t, "notes", nc)
	listening := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(nout)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "LISTENING ") {
				listening <- sc.Text()
			}
		}
	}()
	select {
	case <-listening:
	case <-time.After(45 * time.Second):
		t.Fatal("notes-server did not get an SVID and listen")
	}

	// The initiator's issuer, and the broker (uid 0) from the example config.
	is := oidctest.NewIssuer(t)
	brokerPort := freePort(t)
	url := fmt.Sprintf("https://127.0.0.1:%d/mcp", brokerPort)
	raw, err := os.ReadFile(filepath.Join(repo, "examples/spire/mcpbroker.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.NewReplacer(
		"127.0.0.1:7443", fmt.Sprintf("127.0.0.1:%d", brokerPort),
		"https://127.0.0.1:8443/mcp", fmt.Sprintf("https://127.0.0.1:%d/mcp", notesPort),
		"unix:///tmp/mcpbroker-spire/agent/public/api.sock", sock,
		"./mcpbroker-data", filepath.Join(dir, "data"),
		"./policies", filepath.Join(repo, "examples/spire/policies"),
		"\nagents:\n", fmt.Sprintf("\n  oidc:\n    resource: %s\n    required: true\n    required_scopes: [mcp:tools]\n    issuers:\n      - issuer: %s\n        tenant_claim: tenant\nagents:\n", url, is.URL),
	).Replace(string(raw))
	cfgPath := filepath.Join(dir, "mcpbroker.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	start(t, "broker", exec.Command(broker, "serve", "--config", cfgPath))
	deadline := time.Now().Add(45 * time.Second)
	for !logs.has("broker:", "serving MCP over streamable HTTP") {
		if time.Now().After(deadline) {
			t.Fatal("broker not serving")
		}
		time.Sleep(50 * time.Millisecond)
	}

	// alice's token, delegated to the coder agent (RFC 8693 act).
	token := func(actor, scope string) string {
		c := is.Claims("alice", url)
		c["tenant"], c["scope"], c["act"] = "acme", scope, map[string]any{"sub": actor}
		p := filepath.Join(dir, fmt.Sprintf("token-%d", time.Now().UnixNano()))
		if err := os.WriteFile(p, []byte(is.Token(t, c)), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}

	t.Run("tool call through connect, the broker and notes-server, mTLS on both hops", func(t *testing.T) {
		t1 := time.Now()
		c := asUID(agentUID, broker, "connect", "--url", url, "--broker-id", brokerID, "--workload-api", sock,
			"--token-file", token(coderID, "mcp:tools"))
		rpc := newRPC(t, c)
		res := rpc.call(t, `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"spire-test","version":"1"}}}`)
		if res["error"] != nil {
			t.Fatalf("initialize: %v", res["error"])
		}
		rpc.send(t, `{"jsonrpc":"2.0","method":"notifications/initialized"}`)
		res = rpc.call(t, `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"notes__echo","arguments":{"text":"through SPIRE"}}}`)
		b, _ := json.Marshal(res)
		if !strings.Contains(string(b), "echo: through SPIRE") {
			t.Fatalf("tools/call: %s", b)
		}
		t.Logf("first call through real SPIRE identities in %s", time.Since(t1).Round(time.Millisecond))
		if !logs.within(5*time.Second, "notes:", "call echo mtls="+brokerID+" jwt-svid="+brokerID) {
			t.Fatal("notes-server did not see the broker's identity on both credentials")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		es, err := audit.ListRemote(ctx, filepath.Join(dir, "data", "admin.sock"), audit.Filter{Type: audit.CallDecided, Agent: coderID})
		if err != nil || len(es) == 0 {
			t.Fatalf("decision records: %v %v", es, err)
		}
		if ev := es[len(es)-1].Event; ev.Initiator != "alice" || ev.Tenant != "acme" || ev.Decision != audit.DecisionAllow {
			t.Fatalf("decision record: %+v", ev)
		}
	})

	t.Run("token delegated to another agent is refused", func(t *testing.T) {
		c := asUID(agentUID, broker, "connect", "--url", url, "--broker-id", brokerID, "--workload-api", sock,
			"--token-file", token("spiffe://example.org/agent/other", "mcp:tools"))
		rpc := newRPC(t, c)
		res := rpc.call(t, `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`)
		b, _ := json.Marshal(res["error"])
		if res["error"] == nil || !strings.Contains(string(b), "401") || !strings.Contains(string(b), "invalid_token") {
			t.Fatalf("initialize with a token delegated to another agent: %v", res)
		}
	})

	t.Run("unregistered workload gets no SVID", func(t *testing.T) {
		c := asUID(strayUID, broker, "connect", "--url", url, "--workload-api", sock, "--timeout", "3s")
		out, err := c.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "no X.509-SVID") {
			t.Fatalf("stray workload: %v\n%s", err, out)
		}
	})
}

// rpc drives a `mcpbroker connect` process over its stdin/stdout.
type rpc struct {
	in  io.WriteCloser
	out chan map[string]any
}

func newRPC(t *testing.T, c *exec.Cmd) *rpc {
	t.Helper()
	in, _ := c.StdinPipe()
	out, _ := c.StdoutPipe()
	start(t, "connect", c)
	r := &rpc{in: in, out: make(chan map[string]any, 16)}
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil {
				r.out <- m
			}
		}
		close(r.out)
	}()
	t.Cleanup(func() { _ = in.Close() })
	return r
}

func (r *rpc) send(t *testing.T, msg string) {
	t.Helper()
	if _, err := io.WriteString(r.in, msg+"\n"); err != nil {
		t.Fatal(err)
	}
}

func (r *rpc) call(t *testing.T, msg string) map[string]any {
	t.Helper()
	r.send(t, msg)
	for {
		select {
		case m, ok := <-r.out:
			if !ok {
				t.Fatal("connect exited")
			}
			if m["id"] != nil { // skip notifications
				return m
			}
		case <-time.After(45 * time.Second):
			t.Fatal("no answer from connect")
		}
	}
}
