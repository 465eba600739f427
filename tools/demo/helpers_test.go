package demo

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
)

// connect starts an in-process mcp-go client against s and closes it when
// the test ends. opts pin the protocol era when a test needs one.
func connect(t *testing.T, s *server.MCPServer, opts ...client.ClientOption) *client.Client {
	t.Helper()
	c, err := client.NewInProcessClientWithOptions(s, opts...)
	if err != nil {
		t.Fatalf("new in-process client: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	ctx := testCtx(t)
	if err := c.Start(ctx); err != nil {
		t.Fatalf("start: %v", err)
	}
	init := mcp.InitializeRequest{}
	init.Params.ProtocolVersion = mcp.LATEST_PROTOCOL_VERSION
	init.Params.ClientInfo = mcp.Implementation{Name: "demo-test", Version: "1"}
	if _, err := c.Initialize(ctx, init); err != nil {
		t.Fatalf("initialize: %v", err)
	}
	return c
}

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// call invokes a tool with raw JSON arguments so tests control the exact
// bytes (integers vs floats, strings vs numbers).
func call(t *testing.T, c *client.Client, name, rawArgs string) *mcp.CallToolResult {
	t.Helper()
	req := mcp.CallToolRequest{}
	req.Params.Name = name
	if rawArgs != "" {
		req.Params.RawArguments = json.RawMessage(rawArgs)
		var m any
		if err := json.Unmarshal([]byte(rawArgs), &m); err != nil {
			t.Fatalf("bad test arguments %s: %v", rawArgs, err)
		}
		req.Params.Arguments = m
	}
	res, err := c.CallTool(testCtx(t), req)
	if err != nil {
		t.Fatalf("call %s(%s): protocol error %v", name, rawArgs, err)
	}
	return res
}

func resultText(t *testing.T, res *mcp.CallToolResult) string {
	t.Helper()
	var parts []string
	for _, c := range res.Content {
		tc, ok := mcp.AsTextContent(c)
		if !ok {
			t.Fatalf("content %T is not text", c)
		}
		parts = append(parts, tc.Text)
	}
	return strings.Join(parts, "\n")
}

// toolCase is one named tools/call expectation.
type toolCase struct {
	name    string
	tool    string
	args    string
	isError bool
	want    string // substring of the text content
}

func runToolCases(t *testing.T, c *client.Client, cases []toolCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := call(t, c, tc.tool, tc.args)
			text := resultText(t, res)
			if res.IsError != tc.isError {
				t.Fatalf("isError = %v, want %v (text %q)", res.IsError, tc.isError, text)
			}
			if !strings.Contains(text, tc.want) {
				t.Fatalf("text %q does not contain %q", text, tc.want)
			}
		})
	}
}

func readResource(t *testing.T, c *client.Client, uri string) (string, error) {
	t.Helper()
	req := mcp.ReadResourceRequest{}
	req.Params.URI = uri
	res, err := c.ReadResource(testCtx(t), req)
	if err != nil {
		return "", err
	}
	if len(res.Contents) != 1 {
		t.Fatalf("read %s: %d contents, want 1", uri, len(res.Contents))
	}
	tc, ok := mcp.AsTextResourceContents(res.Contents[0])
	if !ok {
		t.Fatalf("read %s: contents %T not text", uri, res.Contents[0])
	}
	if tc.URI != uri {
		t.Fatalf("read %s: contents uri %q", uri, tc.URI)
	}
	return tc.Text, nil
}

func getPrompt(t *testing.T, c *client.Client, name string, args map[string]string) (*mcp.GetPromptResult, error) {
	t.Helper()
	req := mcp.GetPromptRequest{}
	req.Params.Name = name
	req.Params.Arguments = args
	return c.GetPrompt(testCtx(t), req)
}

// eras lists the client configurations every test runs under: mcp-go's
// default negotiation (2026-07-28 against an mcp-go server) and a client
// pinned to the last handshake-era version.
var eras = []struct {
	name string
	opts []client.ClientOption
}{
	{"modern", nil},
	{"legacy", []client.ClientOption{client.WithProtocolVersion(mcp.ProtocolVersion20251125)}},
}

// wantAnnotations checks every hint of a listed tool.
func wantAnnotations(t *testing.T, tool mcp.Tool, readOnly, destructive, idempotent bool) {
	t.Helper()
	a := tool.Annotations
	check := func(label string, got *bool, want bool) {
		if got == nil || *got != want {
			t.Errorf("%s %s = %v, want %v", tool.Name, label, deref(got), want)
		}
	}
	check("readOnlyHint", a.ReadOnlyHint, readOnly)
	check("destructiveHint", a.DestructiveHint, destructive)
	check("idempotentHint", a.IdempotentHint, idempotent)
	check("openWorldHint", a.OpenWorldHint, false)
	if a.Title == "" || tool.Title == "" {
		t.Errorf("%s has no title", tool.Name)
	}
}

func deref(b *bool) any {
	if b == nil {
		return nil
	}
	return *b
}
