package e2e

import (
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// target is one downstream the broker re-exports, with a way to reach the
// same server directly.
type target struct {
	name   string
	server downstream
	// direct lists the downstream's tools without the broker, raw.
	direct func(t *testing.T) map[string]rawTool
	// directURL is set for HTTP downstreams (go-sdk direct connection).
	directURL string
	// probe is a tool that must be listed once the downstream is up.
	probe string
}

func testserverTargets() []func(t *testing.T) target {
	return []func(t *testing.T) target{
		func(t *testing.T) target {
			ev := filepath.Join(t.TempDir(), "events")
			return target{name: "ts", server: stdioTestserver(t, "ts", ev), probe: "echo",
				direct: func(t *testing.T) map[string]rawTool { return rawToolsStdio(t) }}
		},
		func(t *testing.T) target {
			u := startTestserverHTTP(t, "tsh", filepath.Join(t.TempDir(), "events"))
			return target{name: "tsh", server: downstream{Name: "tsh", Transport: "streamable-http", URL: u}, probe: "echo",
				directURL: u, direct: func(t *testing.T) map[string]rawTool { return rawToolsHTTP(t, u, "") }}
		},
		func(t *testing.T) target {
			u := startEverything(t)
			return target{name: "ev", server: downstream{Name: "ev", Transport: "streamable-http", URL: u}, probe: "echo",
				directURL: u, direct: func(t *testing.T) map[string]rawTool { return rawToolsHTTP(t, u, "") }}
		},
	}
}

// TestToolsListMatchesDownstream (case 1): the broker lists the same tools
// as the downstream, prefixed, with byte-identical input and output schemas.
func TestToolsListMatchesDownstream(t *testing.T) {
	for i, mk := range testserverTargets() {
		t.Run([]string{"testserver-stdio", "testserver-http", "server-everything"}[i], func(t *testing.T) {
			tg := mk(t)
			b := startBroker(t, brokerConfig{servers: []downstream{tg.server}})
			prefix := tg.name + "__"
			cs := connect(t, b.url, eraLegacy, nil, "")
			waitTools(t, cs, prefix+tg.probe)

			direct := tg.direct(t)
			var want []string
			for n := range direct {
				want = append(want, prefix+n)
			}
			slices.Sort(want)
			// A downstream may register tools after initialize
			// (server-everything): wait for the lists to agree.
			var via map[string]rawTool
			deadline := time.Now().Add(15 * time.Second)
			for {
				via = rawToolsHTTP(t, b.url, "")
				var got []string
				for n := range via {
					got = append(got, n)
				}
				slices.Sort(got)
				if slices.Equal(got, want) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("tools through the broker:\n %v\nwant (downstream, prefixed):\n %v", got, want)
				}
				time.Sleep(100 * time.Millisecond)
			}
			for n, d := range direct {
				got := via[prefix+n]
				if !bytes.Equal(got.InputSchema, d.InputSchema) {
					t.Errorf("%s inputSchema differs:\n broker: %s\n direct: %s", n, got.InputSchema, d.InputSchema)
				}
				if !bytes.Equal(got.OutputSchema, d.OutputSchema) {
					t.Errorf("%s outputSchema differs:\n broker: %s\n direct: %s", n, got.OutputSchema, d.OutputSchema)
				}
			}
			if tg.name != "ev" {
				checkRichSchemaGolden(t, via[prefix+"rich_schema"])
			}

			// The go-sdk client sees the same in both eras.
			for _, era := range eras {
				t.Run(era, func(t *testing.T) {
					cs := connect(t, b.url, era, nil, "")
					got := slices.DeleteFunc(listTools(t, cs), func(tool *mcp.Tool) bool {
						return strings.HasPrefix(tool.Name, "broker__") // the broker's own tools
					})
					if names := toolNames(got); !slices.Equal(names, want) {
						t.Errorf("go-sdk tools/list (%s) = %v, want %v", era, names, want)
					}
					for _, tool := range got {
						d := direct[strings.TrimPrefix(tool.Name, prefix)]
						if in := mustJSON(tool.InputSchema); !jsonEqual(in, string(d.InputSchema)) {
							t.Errorf("%s inputSchema (%s) = %s, want %s", tool.Name, era, in, d.InputSchema)
						}
					}
				})
			}
			b.waitAudit("broker.started", func(e auditEvent) bool { return e.Type == "broker.started" })
		})
	}
}

// checkRichSchemaGolden compares the re-exported rich_schema with the
// testserver's own schema files, byte for byte: anyOf, $defs, $ref and the
// top-level description survive.
func checkRichSchemaGolden(t *testing.T, got rawTool) {
	t.Helper()
	dir := filepath.Join(repoRoot(), "test", "testserver", "testdata")
	for _, c := range []struct {
		file string
		got  []byte
	}{{"rich_schema.input.json", got.InputSchema}, {"rich_schema.output.json", got.OutputSchema}} {
		want, err := os.ReadFile(filepath.Join(dir, c.file))
		if err != nil {
			t.Fatal(err)
		}
		want = bytes.TrimSpace(want)
		if !bytes.Equal(c.got, want) {
			t.Errorf("rich_schema %s through the broker:\n %s\nwant:\n %s", c.file, c.got, want)
		}
	}
	for _, kw := range []string{`"anyOf"`, `"$defs"`, `"$ref"`, `"description"`} {
		if !bytes.Contains(got.InputSchema, []byte(kw)) {
			t.Errorf("rich_schema inputSchema lost %s", kw)
		}
	}
}

// TestCallMatchesDirect (case 2): echo and rich_schema give the same result
// through the broker as directly, in both eras.
func TestCallMatchesDirect(t *testing.T) {
	ev := filepath.Join(t.TempDir(), "events")
	u := startTestserverHTTP(t, "tsh", ev)
	stdioEv := filepath.Join(t.TempDir(), "stdio-events")
	// tshl is the same server spoken to in 2025-11-25, where the broker's
	// fast lane writes tools/call and relays the answer's bytes itself.
	b := startBroker(t, brokerConfig{servers: []downstream{
		{Name: "tsh", Transport: "streamable-http", URL: u},
		{Name: "tshl", Transport: "streamable-http", URL: u, Protocol: "2025-11-25"},
		stdioTestserver(t, "ts", stdioEv),
	}})
	cases := []struct {
		name string
		tool string
		args any
	}{
		{"echo", "echo", map[string]any{"text": "héllo <wörld> & \u2028"}},
		{"rich_schema", "rich_schema", map[string]any{"target": map[string]any{"host": "h.example", "port": 443}, "mode": "safe", "count": 7}},
		{"fail", "fail", map[string]any{}},
	}
	for _, era := range eras {
		t.Run(era, func(t *testing.T) {
			direct := connect(t, u, era, nil, "")
			via := connect(t, b.url, era, nil, "")
			waitTools(t, via, "tsh__echo", "tshl__echo", "ts__echo")
			for _, c := range cases {
				want := callTool(t, direct, c.tool, c.args)
				for _, srv := range []string{"tsh", "tshl", "ts"} {
					got := callTool(t, via, srv+"__"+c.tool, c.args)
					if g, w := mustJSON(got.Content), mustJSON(want.Content); g != w {
						t.Errorf("%s via %s content = %s, want %s", c.name, srv, g, w)
					}
					if g, w := mustJSON(got.StructuredContent), mustJSON(want.StructuredContent); !jsonEqual(g, w) {
						t.Errorf("%s via %s structuredContent = %s, want %s", c.name, srv, g, w)
					}
					if got.IsError != want.IsError {
						t.Errorf("%s via %s isError = %v, want %v", c.name, srv, got.IsError, want.IsError)
					}
				}
			}
		})
	}
	// Every forwarded call left a decision and an outcome.
	entries := b.audit()
	var decided, completed, toolErrors int
	for _, e := range entries {
		switch {
		case e.Event.Type == "call.decided" && e.Event.Decision == "allow":
			decided++
		case e.Event.Type == "call.completed" && e.Event.Status == "ok":
			completed++
		case e.Event.Type == "call.completed" && e.Event.Status == "tool_error":
			toolErrors++
		}
	}
	calls := len(eras) * len(cases) * 3
	if decided < calls || completed+toolErrors < calls || toolErrors < len(eras)*3 {
		t.Errorf("audit: %d allow decisions, %d ok and %d tool_error outcomes; want >= %d calls with %d tool errors",
			decided, completed, toolErrors, calls, len(eras)*3)
	}
}
