package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Environment set by test/run.
const (
	envBin        = "MCPBROKER_BIN"
	envTestserver = "MCPBROKER_TESTSERVER"
	envEverything = "MCPBROKER_EVERYTHING"
	envRequire    = "MCPBROKER_E2E_REQUIRE"
)

// Protocol eras the agent-side client can pin.
const (
	eraLegacy = "2025-11-25"
	eraModern = "2026-07-28"
)

var eras = []string{eraLegacy, eraModern}

func required() bool { return os.Getenv(envRequire) == "1" }

// repoRoot is the module root, two levels above this package.
func repoRoot() string {
	wd, _ := os.Getwd()
	return filepath.Clean(filepath.Join(wd, "..", ".."))
}

// buildDir holds binaries built on demand when test/run did not provide them.
var buildDir = sync.OnceValues(func() (string, error) { return os.MkdirTemp("", "mcpbroker-e2e-bin-") })

var builtDir string // set once buildDir succeeded, removed in TestMain

func goBuild(pkg, name string) (string, error) {
	dir, err := buildDir()
	if err != nil {
		return "", err
	}
	builtDir = dir
	out := filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = repoRoot()
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
	}
	return out, nil
}

func binaryFrom(env, pkg, name string) func() (string, error) {
	return sync.OnceValues(func() (string, error) {
		if p := os.Getenv(env); p != "" {
			if _, err := os.Stat(p); err != nil {
				return "", fmt.Errorf("%s=%s: %w", env, p, err)
			}
			return p, nil
		}
		if required() {
			return "", fmt.Errorf("%s is not set (MCPBROKER_E2E_REQUIRE=1)", env)
		}
		return goBuild(pkg, name)
	})
}

var (
	brokerBinary     = binaryFrom(envBin, "./cmd/mcpbroker", "mcpbroker")
	testserverBinary = binaryFrom(envTestserver, "./test/testserver", "testserver")
)

func TestMain(m *testing.M) {
	code := m.Run()
	if builtDir != "" {
		_ = os.RemoveAll(builtDir)
	}
	os.Exit(code)
}

func brokerBin(t testing.TB) string {
	t.Helper()
	p, err := brokerBinary()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func testserverBin(t testing.TB) string {
	t.Helper()
	p, err := testserverBinary()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// everythingBin is the server-everything launcher: MCPBROKER_EVERYTHING, or
// test/node_modules/.bin after an earlier `npm ci --prefix test`. Without it
// the test skips, unless MCPBROKER_E2E_REQUIRE=1.
func everythingBin(t testing.TB) string {
	t.Helper()
	p := os.Getenv(envEverything)
	if p == "" {
		p = filepath.Join(repoRoot(), "test", "node_modules", ".bin", "mcp-server-everything")
	}
	_, statErr := os.Stat(p)
	_, nodeErr := exec.LookPath("node")
	if statErr == nil && nodeErr == nil {
		return p
	}
	msg := fmt.Sprintf("server-everything not available (%s=%q; stat: %v; node: %v); run test/run", envEverything, p, statErr, nodeErr)
	if required() {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// ctxFor is a context bounded by d and by the test.
func ctxFor(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// poll calls f until it returns true or the deadline passes.
func poll(t testing.TB, d time.Duration, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		if f() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// lineBuffer collects a child's output for failure reports.
type lineBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lineBuffer) add(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() < 1<<20 {
		l.b.WriteString(s)
		l.b.WriteByte('\n')
	}
}

func (l *lineBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// process is a child started in its own process group.
type process struct {
	name   string
	cmd    *exec.Cmd
	out    lineBuffer
	done   chan struct{}
	err    error // set before done closes
	readWG sync.WaitGroup
}

// startProcess starts cmd in a new process group, scanning stdout and
// stderr line by line into p.out and through onLine (which may be nil and
// must not block). At cleanup the group is sent SIGTERM, then SIGKILL.
func startProcess(t testing.TB, name string, cmd *exec.Cmd, onLine func(stream, line string)) *process {
	t.Helper()
	p := &process{name: name, cmd: cmd, done: make(chan struct{})}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	scan := func(stream string, r interface{ Read([]byte) (int, error) }) {
		defer p.readWG.Done()
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		for sc.Scan() {
			p.out.add(stream + ": " + sc.Text())
			if onLine != nil {
				onLine(stream, sc.Text())
			}
		}
	}
	p.readWG.Add(2)
	go scan("stdout", stdout)
	go scan("stderr", stderr)
	go func() {
		p.readWG.Wait()
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop(10 * time.Second)
		if t.Failed() {
			t.Logf("--- output of %s ---\n%s", name, p.out.String())
		}
	})
	return p
}

// stop sends SIGTERM to the group, waits up to grace, then SIGKILLs it.
// It reports whether the process exited within grace.
func (p *process) stop(grace time.Duration) bool {
	pid := p.cmd.Process.Pid
	select {
	case <-p.done:
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		return true
	default:
	}
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	select {
	case <-p.done:
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		return true
	case <-time.After(grace):
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	<-p.done
	return false
}

// exited reports whether the process ended, without waiting.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startTestserverHTTP starts `testserver -listen 127.0.0.1:0` and returns its
// /mcp URL. events is the TESTSERVER_EVENTS file (may be empty).
func startTestserverHTTP(t testing.TB, name, events string) string {
	t.Helper()
	cmd := exec.Command(testserverBin(t), "-listen", "127.0.0.1:0", "-name", name)
	cmd.Env = append(os.Environ(), "TESTSERVER_EVENTS="+events)
	urls := make(chan string, 1)
	startProcess(t, "testserver "+name, cmd, func(stream, line string) {
		if u, ok := strings.CutPrefix(line, "LISTENING "); ok && stream == "stdout" {
			select {
			case urls <- u:
			default:
			}
		}
	})
	select {
	case u := <-urls:
		return u
	case <-time.After(20 * time.Second):
		t.Fatal("testserver printed no LISTENING line")
	}
	return ""
}

// startEverything starts server-everything over streamable HTTP on a free
// loopback port and returns its /mcp URL once the port accepts connections.
func startEverything(t testing.TB) string {
	t.Helper()
	bin := everythingBin(t)
	for attempt := 0; ; attempt++ {
		port := freePort(t)
		cmd := exec.Command(bin, "streamableHttp")
		cmd.Env = append(os.Environ(), "PORT="+strconv.Itoa(port))
		p := startProcess(t, "server-everything", cmd, nil)
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) && !p.exited() {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				_ = c.Close()
				return "http://" + addr + "/mcp"
			}
			time.Sleep(50 * time.Millisecond)
		}
		if p.exited() && attempt < 3 { // most likely the port was taken meanwhile
			continue
		}
		t.Fatalf("server-everything did not listen on %s:\n%s", addr, p.out.String())
	}
}

// Events written by the testserver (TESTSERVER_EVENTS).

func readEvents(t testing.TB, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimRight(string(b), "\n"), "\n")
}

// eventsWith returns the event lines starting with prefix.
func eventsWith(t testing.TB, path, prefix string) []string {
	var out []string
	for _, l := range readEvents(t, path) {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return out
}

var startedPID = regexp.MustCompile(`^started name=\S+ transport=(\S+) pid=(\d+)$`)

// startedPIDs lists the pids of testservers that logged "started" to path.
func startedPIDs(t testing.TB, path string) []int {
	var pids []int
	for _, l := range readEvents(t, path) {
		if m := startedPID.FindStringSubmatch(l); m != nil {
			pid, _ := strconv.Atoi(m[2])
			pids = append(pids, pid)
		}
	}
	return pids
}

// alive reports whether pid is a running (not zombie) process whose
// executable is exe.
func alive(pid int, exe string) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name.
	if i := bytes.LastIndexByte(stat, ')'); i >= 0 && i+2 < len(stat) && stat[i+2] == 'Z' {
		return false
	}
	link, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		return false
	}
	return strings.TrimSuffix(link, " (deleted)") == exe
}

// jsonString quotes s as a JSON string, which is also a YAML scalar.
func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// jsonEqual compares two JSON texts semantically.
func jsonEqual(a, b string) bool {
	var x, y any
	if json.Unmarshal([]byte(a), &x) != nil || json.Unmarshal([]byte(b), &y) != nil {
		return a == b
	}
	xa, _ := json.Marshal(x)
	ya, _ := json.Marshal(y)
	return bytes.Equal(xa, ya)
}
