package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"
)

// binary builds the testserver once per test run.
var binary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "testserver-bin-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "testserver")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		return "", errors.New("go build: " + err.Error() + "\n" + string(out))
	}
	return bin, nil
})

func TestMain(m *testing.M) {
	code := m.Run()
	if bin, err := binary(); err == nil {
		_ = os.RemoveAll(filepath.Dir(bin))
	}
	os.Exit(code)
}

func buildBinary(t *testing.T) string {
	t.Helper()
	bin, err := binary()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// proc is a running testserver -listen process.
type proc struct {
	cmd    *exec.Cmd
	url    string
	events string
	done   chan error
}

// startHTTP launches testserver -listen 127.0.0.1:0 and waits for its
// LISTENING line. The process is killed at cleanup if still running.
func startHTTP(t *testing.T) *proc {
	t.Helper()
	events := filepath.Join(t.TempDir(), "events.log")
	cmd := exec.Command(buildBinary(t), "-listen", "127.0.0.1:0", "-name", "e2e-http")
	cmd.Env = append(os.Environ(), "TESTSERVER_EVENTS="+events)
	cmd.Stderr = &testWriter{t: t}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, events: events, done: make(chan error, 1)}
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		first := true
		for sc.Scan() {
			if first {
				lines <- sc.Text()
				first = false
				continue
			}
			t.Errorf("unexpected stdout line %q", sc.Text())
		}
		p.done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
	})
	select {
	case line := <-lines:
		url, ok := strings.CutPrefix(line, "LISTENING ")
		if !ok || !strings.HasPrefix(url, "http://127.0.0.1:") || !strings.HasSuffix(url, "/mcp") {
			t.Fatalf("first stdout line = %q", line)
		}
		p.url = url
	case <-time.After(20 * time.Second):
		t.Fatal("no LISTENING line")
	}
	return p
}

// testWriter forwards the child's stderr to the test log.
type testWriter struct{ t *testing.T }

func (w *testWriter) Write(b []byte) (int, error) {
	w.t.Logf("testserver stderr: %s", bytes.TrimRight(b, "\n"))
	return len(b), nil
}

// answerer is a client elicitation handler with a fixed response.
type answerer struct {
	action mcp.ElicitationResponseAction
	answer string
}

func (a answerer) Elicit(_ context.Context, req mcp.ElicitationRequest) (*mcp.ElicitationResult, error) {
	res := &mcp.ElicitationResult{}
	res.Action = a.action
	if a.action == mcp.ElicitationResponseActionAccept {
		res.Content = map[string]any{"answer": a.answer + " to " + req.Params.Message}
	}
	return res, nil
}

var eras = []struct {
	name    string
	version string
	opts    []client.ClientOption
}{
	{"modern", mcp.ProtocolVersion20260728, nil},
	{"legacy", mcp.ProtocolVersion20251125, []client.ClientOption{client.WithProtocolVersion(mcp.ProtocolVersion20251125)}},
}

// connect starts and initializes c; the client (and for stdio the child) is
// closed at cleanup. ctx must outlive the client: for stdio it owns the child.
func connect(t *testing.T, c *client.Client, wantVersion string) *client.Client {
	t.Helper()
	t.Cleanup(func() { _ = c.Close() })
	if err := c.Start(context.Background()); err != nil {
		t.Fatalf("start: %v", err)
	}
	init := mcp.InitializeRequest{}
	init.Params.ProtocolVersion = mcp.LATEST_PROTOCOL_VERSION
	init.Params.ClientInfo = mcp.Implementation{Name: "testserver-test", Version: "1"}
	if _, err := c.Initialize(ctx(t), init); err != nil {
		t.Fatalf("initialize: %v", err)
	}
	if got := c.ProtocolVersion(); got != wantVersion {
		t.Fatalf("negotiated %q, want %q", got, wantVersion)
	}
	return c
}

func ctx(t *testing.T) context.Context {
	t.Helper()
	c, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

func httpClient(t *testing.T, url string, era int, opts ...client.ClientOption) *client.Client {
	t.Helper()
	tr, err := transport.NewStreamableHTTP(url)
	if err != nil {
		t.Fatal(err)
	}
	return connect(t, client.NewClient(tr, append(opts, eras[era].opts...)...), eras[era].version)
}

func stdioClient(t *testing.T, events string, era int, opts ...client.ClientOption) *client.Client {
	t.Helper()
	tr := transport.NewStdio(buildBinary(t), []string{"TESTSERVER_EVENTS=" + events}, "-stdio", "-name", "e2e-stdio")
	return connect(t, client.NewClient(tr, append(opts, eras[era].opts...)...), eras[era].version)
}

func callTool(t *testing.T, c *client.Client, name string, args any, meta *mcp.Meta) (*mcp.CallToolResult, error) {
	t.Helper()
	req := mcp.CallToolRequest{}
	req.Params.Name = name
	req.Params.Arguments = args
	req.Params.Meta = meta
	return c.CallTool(ctx(t), req)
}

func text(t *testing.T, res *mcp.CallToolResult) string {
	t.Helper()
	if len(res.Content) != 1 {
		t.Fatalf("content = %+v", res.Content)
	}
	tc, ok := mcp.AsTextContent(res.Content[0])
	if !ok {
		t.Fatalf("content %T", res.Content[0])
	}
	return tc.Text
}

// waitEvent polls the events file until a line starting with prefix appears.
func waitEvent(t *testing.T, path, prefix string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(path)
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, prefix) {
				return line
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	b, _ := os.ReadFile(path)
	t.Fatalf("no event %q in:\n%s", prefix, b)
	return ""
}

// TestEcho is the basic contract over both transports and both eras.
func TestEcho(t *testing.T) {
	for era := range eras {
		for _, tr := range []string{"http", "stdio"} {
			t.Run(tr+"/"+eras[era].name, func(t *testing.T) {
				var c *client.Client
				var events string
				if tr == "http" {
					p := startHTTP(t)
					events = p.events
					c = httpClient(t, p.url, era)
				} else {
					events = filepath.Join(t.TempDir(), "events.log")
					c = stdioClient(t, events, era)
				}
				tools, err := c.ListTools(ctx(t), mcp.ListToolsRequest{})
				if err != nil {
					t.Fatal(err)
				}
				var names []string
				for _, tool := range tools.Tools {
					names = append(names, tool.Name)
				}
				if got, want := strings.Join(names, ","), "ask,crash,echo,fail,hang,log,rich_schema,slow"; got != want {
					t.Fatalf("tools = %s, want %s", got, want)
				}
				const msg = "héllo <wörld> & \"quotes\"\n\ttab"
				res, err := callTool(t, c, "echo", map[string]any{"text": msg}, nil)
				if err != nil {
					t.Fatal(err)
				}
				if res.IsError || text(t, res) != msg {
					t.Fatalf("echo = %+v", res)
				}
				if m, _ := res.StructuredContent.(map[string]any); m["text"] != msg {
					t.Fatalf("structuredContent = %#v", res.StructuredContent)
				}
				waitEvent(t, events, "started name=e2e-"+tr+" transport="+tr)
				waitEvent(t, events, "call echo ")
			})
		}
	}
}

// TestRichSchemaByteExact reads tools/list raw and checks both schemas went
// out byte for byte, then checks the arguments come back byte for byte.
func TestRichSchemaByteExact(t *testing.T) {
	p := startHTTP(t)
	for era := range eras {
		t.Run(eras[era].name, func(t *testing.T) {
			c := httpClient(t, p.url, era)
			req := transport.JSONRPCRequest{JSONRPC: mcp.JSONRPC_VERSION, ID: mcp.NewRequestId(int64(900)), Method: string(mcp.MethodToolsList)}
			if era == 0 {
				req.Params = map[string]any{"_meta": map[string]any{
					mcp.MetaKeyProtocolVersion:    mcp.ProtocolVersion20260728,
					mcp.MetaKeyClientCapabilities: map[string]any{},
				}}
				req.Header = http.Header{}
				for k, v := range mcp.StandardHeaders(mcp.ProtocolVersion20260728, mcp.MethodToolsList, nil) {
					req.Header.Set(k, v)
				}
			}
			resp, err := c.GetTransport().SendRequest(ctx(t), req)
			if err != nil {
				t.Fatal(err)
			}
			if resp.Error != nil {
				t.Fatalf("tools/list error %+v", resp.Error)
			}
			for _, want := range [][]byte{
				append([]byte(`"inputSchema":`), richInputSchema...),
				append([]byte(`"outputSchema":`), richOutputSchema...),
			} {
				if !bytes.Contains(resp.Result, want) {
					t.Errorf("tools/list result lacks %s", want)
				}
			}

			raw := `{"target":{"host":"example.org","port":443},"mode":"safe","count":9007199254740993}`
			cr := mcp.CallToolRequest{}
			cr.Params.Name = "rich_schema"
			cr.Params.RawArguments = json.RawMessage(raw)
			res, err := c.CallTool(ctx(t), cr)
			if err != nil {
				t.Fatal(err)
			}
			if got := text(t, res); got != raw {
				t.Fatalf("rich_schema echoed %s, want %s", got, raw)
			}
			if !bytes.Contains(res.RawStructuredContent, []byte(`"count":9007199254740993`)) {
				t.Fatalf("structuredContent = %s", res.RawStructuredContent)
			}
		})
	}
}

// TestSlowProgressAndCancel checks progress notifications and that a client
// deadline reaches the downstream handler.
func TestSlowProgressAndCancel(t *testing.T) {
	for era := range eras {
		for _, tr := range []string{"http", "stdio"} {
			t.Run(tr+"/"+eras[era].name, func(t *testing.T) {
				var events string
				var c *client.Client
				if tr == "http" {
					p := startHTTP(t)
					events = p.events
					c = httpClient(t, p.url, era)
				} else {
					events = filepath.Join(t.TempDir(), "events.log")
					c = stdioClient(t, events, era)
				}
				var mu sync.Mutex
				var progress []float64
				c.OnNotification(func(n mcp.JSONRPCNotification) {
					if n.Method == "notifications/progress" && n.Params.AdditionalFields["progressToken"] == "tok-"+tr {
						mu.Lock()
						progress = append(progress, n.Params.AdditionalFields["progress"].(float64))
						mu.Unlock()
					}
				})
				res, err := callTool(t, c, "slow", map[string]any{"ms": 200, "steps": 4}, &mcp.Meta{ProgressToken: "tok-" + tr})
				if err != nil {
					t.Fatal(err)
				}
				if text(t, res) != "done" {
					t.Fatalf("slow = %+v", res)
				}
				mu.Lock()
				got := append([]float64(nil), progress...)
				mu.Unlock()
				if len(got) != 4 || got[0] != 1 || got[3] != 4 {
					t.Fatalf("progress = %v, want [1 2 3 4]", got)
				}

				short, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
				defer cancel()
				req := mcp.CallToolRequest{}
				req.Params.Name = "slow"
				req.Params.Arguments = map[string]any{"ms": 60000, "steps": 2}
				if _, err := c.CallTool(short, req); err == nil {
					t.Fatal("slow call outlived its deadline")
				}
				line := waitEvent(t, events, "cancelled ")
				if id := strings.TrimPrefix(line, "cancelled "); id == "" || id == "-" {
					t.Fatalf("cancel event without request id: %q", line)
				}
			})
		}
	}
}

func TestAsk(t *testing.T) {
	p := startHTTP(t)
	for era := range eras {
		for _, tc := range []struct {
			name string
			h    answerer
			want string
		}{
			{"accept", answerer{mcp.ElicitationResponseActionAccept, "42"}, "answer: 42 to what?"},
			{"decline", answerer{action: mcp.ElicitationResponseActionDecline}, "declined"},
			{"cancel", answerer{action: mcp.ElicitationResponseActionCancel}, "cancelled"},
		} {
			for _, tr := range []string{"http", "stdio"} {
				t.Run(eras[era].name+"/"+tr+"/"+tc.name, func(t *testing.T) {
					var c *client.Client
					if tr == "http" {
						c = httpClient(t, p.url, era, client.WithElicitationHandler(tc.h))
					} else {
						c = stdioClient(t, filepath.Join(t.TempDir(), "ev"), era, client.WithElicitationHandler(tc.h))
					}
					res, err := callTool(t, c, "ask", map[string]any{"question": "what?"}, nil)
					if err != nil {
						t.Fatal(err)
					}
					if res.IsError || text(t, res) != tc.want {
						t.Fatalf("ask = %+v", res)
					}
				})
			}
		}
		t.Run(eras[era].name+"/no capability", func(t *testing.T) {
			c := httpClient(t, p.url, era)
			res, err := callTool(t, c, "ask", map[string]any{"question": "what?"}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if !res.IsError || !strings.Contains(text(t, res), "elicitation") {
				t.Fatalf("ask without capability = %+v", res)
			}
		})
	}
}

func TestMiscTools(t *testing.T) {
	for era := range eras {
		t.Run(eras[era].name, func(t *testing.T) {
			p := startHTTP(t)
			c := httpClient(t, p.url, era)

			res, err := callTool(t, c, "fail", map[string]any{}, nil)
			if err != nil || !res.IsError || text(t, res) != "intentional failure" {
				t.Fatalf("fail = %+v, %v", res, err)
			}

			logs := make(chan string, 4)
			c.OnNotification(func(n mcp.JSONRPCNotification) {
				if n.Method == "notifications/message" {
					if s, ok := n.Params.AdditionalFields["data"].(string); ok {
						logs <- s
					}
				}
			})
			res, err = callTool(t, c, "log", map[string]any{"message": "hello log " + eras[era].name}, nil)
			if err != nil || text(t, res) != "logged" {
				t.Fatalf("log = %+v, %v", res, err)
			}
			select {
			case got := <-logs:
				if got != "hello log "+eras[era].name {
					t.Fatalf("log data = %q", got)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("no notifications/message")
			}

			short, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
			defer cancel()
			req := mcp.CallToolRequest{}
			req.Params.Name = "hang"
			if _, err := c.CallTool(short, req); err == nil {
				t.Fatal("hang returned")
			}
			waitEvent(t, p.events, "cancelled ")

			rr := mcp.ReadResourceRequest{}
			rr.Params.URI = "test://static"
			rres, err := c.ReadResource(ctx(t), rr)
			if err != nil {
				t.Fatal(err)
			}
			if tc, _ := mcp.AsTextResourceContents(rres.Contents[0]); tc == nil || tc.Text != "static resource" {
				t.Fatalf("static = %+v", rres.Contents)
			}
			rr.Params.URI = "test://items/abc-1"
			rres, err = c.ReadResource(ctx(t), rr)
			if err != nil {
				t.Fatal(err)
			}
			if tc, _ := mcp.AsTextResourceContents(rres.Contents[0]); tc == nil || tc.Text != "item abc-1" || tc.URI != "test://items/abc-1" {
				t.Fatalf("item = %+v", rres.Contents)
			}
			tpls, err := c.ListResourceTemplates(ctx(t), mcp.ListResourceTemplatesRequest{})
			if err != nil || len(tpls.ResourceTemplates) != 1 || tpls.ResourceTemplates[0].URITemplate.Raw() != "test://items/{id}" {
				t.Fatalf("templates = %+v, %v", tpls, err)
			}

			pr := mcp.GetPromptRequest{}
			pr.Params.Name = "greet"
			pr.Params.Arguments = map[string]string{"name": "Ada"}
			pres, err := c.GetPrompt(ctx(t), pr)
			if err != nil {
				t.Fatal(err)
			}
			if tc, ok := pres.Messages[0].Content.(mcp.TextContent); !ok || tc.Text != "Hello, Ada!" {
				t.Fatalf("greet = %+v", pres.Messages)
			}

			cr := mcp.CompleteRequest{}
			cr.Params.Ref = mcp.PromptReference{Type: "ref/prompt", Name: "greet"}
			cr.Params.Argument.Name = "name"
			cr.Params.Argument.Value = "a"
			cres, err := c.Complete(ctx(t), cr)
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(cres.Completion.Values, ","); got != "Alice" {
				t.Fatalf("completion = %q", got)
			}
		})
	}
}

// TestCrash checks the process exits with status 3 in the middle of a call.
func TestCrash(t *testing.T) {
	p := startHTTP(t)
	c := httpClient(t, p.url, 1)
	if _, err := callTool(t, c, "crash", map[string]any{}, nil); err == nil {
		t.Fatal("crash returned a result")
	}
	select {
	case err := <-p.done:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 3 {
			t.Fatalf("exit = %v, want status 3", err)
		}
		p.done <- err // for cleanup
	case <-time.After(10 * time.Second):
		t.Fatal("process did not exit")
	}
	waitEvent(t, p.events, "crash ")
}

// TestSIGTERM checks a clean exit while a call is hanging.
func TestSIGTERM(t *testing.T) {
	p := startHTTP(t)
	c := httpClient(t, p.url, 1)
	go func() {
		req := mcp.CallToolRequest{}
		req.Params.Name = "hang"
		_, _ = c.CallTool(t.Context(), req)
	}()
	waitEvent(t, p.events, "call hang ")
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.done:
		if err != nil {
			t.Fatalf("exit after SIGTERM = %v, want 0", err)
		}
		p.done <- err
	case <-time.After(10 * time.Second):
		t.Fatal("process did not exit after SIGTERM")
	}
	waitEvent(t, p.events, "cancelled ")
	waitEvent(t, p.events, "stopped name=e2e-http")
}

func TestFlags(t *testing.T) {
	for _, args := range [][]string{{}, {"-stdio", "-listen", "127.0.0.1:0"}} {
		err := exec.Command(buildBinary(t), args...).Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 {
			t.Errorf("testserver %v: %v, want exit status 2", args, err)
		}
	}
}
