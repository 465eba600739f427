package main

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
)

// The rich_schema tool's schemas, sent byte-exact in tools/list. The files
// are single-line compact JSON without <, > or &, so encoding/json's
// compaction and HTML escaping of json.RawMessage leave them unchanged. E2E
// tests may read these files to compare what the broker re-exports.
var (
	//go:embed testdata/rich_schema.input.json
	richInputSchema []byte
	//go:embed testdata/rich_schema.output.json
	richOutputSchema []byte
)

// Version is the serverInfo version.
const Version = "0.1.0"

// requestIDKey is the _meta key under which the BeforeCallTool hook records
// the JSON-RPC id, because mcp-go does not expose the id to tool handlers.
const requestIDKey = "io.mcpbroker.testserver/requestId"

// greetNames are the completion candidates for the greet prompt's name.
var greetNames = []string{"Alice", "Bob", "Carol", "Dave", "Eve", "Mallory"}

// Limits for the slow tool.
const (
	maxSlowMS    = 10 * 60 * 1000
	maxSlowSteps = 1000
)

// tools holds the handlers; it owns nothing but the event log.
type tools struct {
	name   string
	events *eventLog
}

// newServer builds the test server. Tools: echo, rich_schema, slow, ask,
// crash, hang, fail, log. Resources: test://static and the template
// test://items/{id}. Prompt: greet(name), with completions for name.
func newServer(name string, events *eventLog) *server.MCPServer {
	ts := &tools{name: name, events: events}
	hooks := &server.Hooks{}
	hooks.AddBeforeCallTool(func(_ context.Context, id any, req *mcp.CallToolRequest) {
		if req.Params.Meta == nil {
			req.Params.Meta = &mcp.Meta{}
		}
		if req.Params.Meta.AdditionalFields == nil {
			req.Params.Meta.AdditionalFields = map[string]any{}
		}
		req.Params.Meta.AdditionalFields[requestIDKey] = formatID(id)
	})

	s := server.NewMCPServer(name, Version,
		server.WithTitle("mcpbroker e2e test server"),
		server.WithToolCapabilities(true),
		server.WithResourceCapabilities(false, true),
		server.WithPromptCapabilities(true),
		server.WithLogging(),
		server.WithCompletions(),
		server.WithPromptCompletionProvider(greetCompletions{}),
		server.WithHooks(hooks),
		server.WithRecovery(),
		server.WithResourceRecovery(),
	)

	s.AddTool(mcp.NewTool("echo",
		mcp.WithDescription("Echo text back unchanged, as text and as structuredContent {text}."),
		mcp.WithString("text", mcp.Required(), mcp.Description("Text to echo")),
		mcp.WithRawOutputSchema(json.RawMessage(`{"type":"object","properties":{"text":{"type":"string"}},"required":["text"]}`)),
		mcp.WithToolAnnotation(hints("Echo", true, false, true)),
	), ts.echo)

	rich := mcp.NewToolWithRawSchema("rich_schema",
		"Return the arguments exactly as received. Its schemas use keywords mcp-go's typed Tool drops.",
		json.RawMessage(richInputSchema))
	rich.RawOutputSchema = json.RawMessage(richOutputSchema)
	rich.Annotations = hints("Rich schema", true, false, true)
	s.AddTool(rich, ts.richSchema)

	s.AddTool(mcp.NewTool("slow",
		mcp.WithDescription("Sleep ms milliseconds in steps, sending one progress notification per step if a progressToken was given, then return \"done\". Stops early if cancelled."),
		mcp.WithInteger("ms", mcp.Description("Total time to take, in milliseconds"), mcp.Min(0), mcp.Max(maxSlowMS), mcp.DefaultNumber(1000)),
		mcp.WithInteger("steps", mcp.Description("Number of progress notifications"), mcp.Min(0), mcp.Max(maxSlowSteps), mcp.DefaultNumber(5)),
		mcp.WithToolAnnotation(hints("Slow", true, false, true)),
	), ts.slow)

	s.AddTool(mcp.NewTool("ask",
		mcp.WithDescription("Ask the user a question through elicitation and return \"answer: <answer>\", \"declined\" or \"cancelled\"."),
		mcp.WithString("question", mcp.Required(), mcp.Description("Question to show the user")),
		mcp.WithToolAnnotation(hints("Ask", true, false, false)),
	), ts.ask)

	s.AddTool(mcp.NewTool("crash",
		mcp.WithDescription("Exit the server process immediately with status 3, mid-call."),
		mcp.WithToolAnnotation(hints("Crash", false, true, false)),
	), ts.crash)

	s.AddTool(mcp.NewTool("hang",
		mcp.WithDescription("Block until the call is cancelled."),
		mcp.WithToolAnnotation(hints("Hang", true, false, true)),
	), ts.hang)

	s.AddTool(mcp.NewTool("fail",
		mcp.WithDescription("Always return an isError result \"intentional failure\"."),
		mcp.WithToolAnnotation(hints("Fail", true, false, true)),
	), ts.fail)

	s.AddTool(mcp.NewTool("log",
		mcp.WithDescription("Send a notifications/message (level info) with the message, then return \"logged\"."),
		mcp.WithString("message", mcp.Required(), mcp.Description("Message to log")),
		mcp.WithToolAnnotation(hints("Log", true, false, true)),
	), ts.log)

	s.AddResource(mcp.NewResource("test://static", "Static resource",
		mcp.WithResourceDescription("Always the text \"static resource\"."),
		mcp.WithMIMEType("text/plain"),
	), func(_ context.Context, req mcp.ReadResourceRequest) ([]mcp.ResourceContents, error) {
		return []mcp.ResourceContents{mcp.TextResourceContents{URI: req.Params.URI, MIMEType: "text/plain", Text: "static resource"}}, nil
	})

	s.AddResourceTemplate(mcp.NewResourceTemplate("test://items/{id}", "Item",
		mcp.WithTemplateDescription("The text \"item <id>\"."),
		mcp.WithTemplateMIMEType("text/plain"),
	), func(_ context.Context, req mcp.ReadResourceRequest) ([]mcp.ResourceContents, error) {
		id := templateVar(req.Params.Arguments, "id")
		if id == "" {
			return nil, fmt.Errorf("read %s: empty id", req.Params.URI)
		}
		return []mcp.ResourceContents{mcp.TextResourceContents{URI: req.Params.URI, MIMEType: "text/plain", Text: "item " + id}}, nil
	})

	s.AddPrompt(mcp.NewPrompt("greet",
		mcp.WithPromptDescription("Greet someone by name."),
		mcp.WithArgument("name", mcp.RequiredArgument(), mcp.ArgumentDescription("Who to greet")),
	), func(_ context.Context, req mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
		who := req.Params.Arguments["name"]
		if who == "" {
			return nil, fmt.Errorf("greet: name is required")
		}
		return mcp.NewGetPromptResult("Greeting", []mcp.PromptMessage{
			mcp.NewPromptMessage(mcp.RoleUser, mcp.NewTextContent("Hello, "+who+"!")),
		}), nil
	})

	return s
}

func hints(title string, readOnly, destructive, idempotent bool) mcp.ToolAnnotation {
	return mcp.ToolAnnotation{
		Title:           title,
		ReadOnlyHint:    mcp.ToBoolPtr(readOnly),
		DestructiveHint: mcp.ToBoolPtr(destructive),
		IdempotentHint:  mcp.ToBoolPtr(idempotent),
		OpenWorldHint:   mcp.ToBoolPtr(false),
	}
}

// formatID renders a JSON-RPC id for the event log: numbers and strings as
// they are, "-" when unknown.
func formatID(id any) string {
	if rid, ok := id.(mcp.RequestId); ok {
		id = rid.Value()
	}
	if rid, ok := id.(*mcp.RequestId); ok && rid != nil {
		id = rid.Value()
	}
	if id == nil {
		return "-"
	}
	return fmt.Sprint(id)
}

// requestID returns the id recorded by the BeforeCallTool hook.
func requestID(req mcp.CallToolRequest) string {
	if req.Params.Meta != nil {
		if id, ok := req.Params.Meta.AdditionalFields[requestIDKey].(string); ok {
			return id
		}
	}
	return "-"
}

// called records the tool call event.
func (ts *tools) called(req mcp.CallToolRequest) string {
	id := requestID(req)
	ts.events.Log("call %s %s", req.Params.Name, id)
	return id
}

func (ts *tools) echo(_ context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	ts.called(req)
	text, ok := req.GetArguments()["text"].(string)
	if !ok {
		return mcp.NewToolResultError("text is required and must be a string"), nil
	}
	return mcp.NewToolResultStructured(map[string]any{"text": text}, text), nil
}

func (ts *tools) richSchema(_ context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	ts.called(req)
	raw := req.Params.RawArguments
	if len(raw) == 0 {
		b, err := json.Marshal(req.Params.Arguments)
		if err != nil {
			return mcp.NewToolResultErrorf("encode arguments: %v", err), nil
		}
		raw = b
	}
	received := json.RawMessage(raw)
	if !bytes.HasPrefix(bytes.TrimSpace(raw), []byte("{")) {
		received = json.RawMessage(`{}`)
	}
	return mcp.NewToolResultStructured(map[string]any{"received": received}, string(raw)), nil
}

func (ts *tools) slow(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	id := ts.called(req)
	ms := req.GetInt("ms", 1000)
	steps := req.GetInt("steps", 5)
	if ms < 0 || ms > maxSlowMS || steps < 0 || steps > maxSlowSteps {
		return mcp.NewToolResultErrorf("ms must be in [0, %d] and steps in [0, %d]", maxSlowMS, maxSlowSteps), nil
	}
	var token mcp.ProgressToken
	if req.Params.Meta != nil {
		token = req.Params.Meta.ProgressToken
	}
	srv := server.ServerFromContext(ctx)
	n := max(steps, 1)
	pause := time.Duration(ms) * time.Millisecond / time.Duration(n)
	timer := time.NewTimer(pause)
	timer.Stop()
	defer timer.Stop()
	for i := 1; i <= n; i++ {
		// Each notification is followed by a pause, never sent just before
		// returning: mcp-go v1.2.1 usually drops a notification sent right
		// before the response on streamable HTTP (notes §6).
		if i <= steps && token != nil && srv != nil {
			err := srv.SendNotificationToClient(ctx, "notifications/progress", map[string]any{
				"progressToken": token,
				"progress":      i,
				"total":         steps,
				"message":       fmt.Sprintf("step %d/%d", i, steps),
			})
			if err != nil {
				ts.events.Log("progress-failed %s %d/%d %v", id, i, steps, err)
			} else {
				ts.events.Log("progress %s %d/%d", id, i, steps)
			}
		}
		timer.Reset(pause)
		select {
		case <-ctx.Done():
			ts.events.Log("cancelled %s", id)
			return mcp.NewToolResultError("cancelled"), nil
		case <-timer.C:
		}
	}
	return mcp.NewToolResultText("done"), nil
}

// askID keys the elicitation in the MRTR exchange.
const askID = "answer"

func (ts *tools) ask(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	ts.called(req)
	if res := server.ElicitationResponse(req.Params.InputResponses, askID); res != nil {
		switch res.Action {
		case mcp.ElicitationResponseActionAccept:
			answer, ok := answerFrom(res.Content)
			if !ok {
				return mcp.NewToolResultError("accepted elicitation carried no string answer"), nil
			}
			return mcp.NewToolResultText("answer: " + answer), nil
		case mcp.ElicitationResponseActionDecline:
			return mcp.NewToolResultText("declined"), nil
		default:
			return mcp.NewToolResultText("cancelled"), nil
		}
	}
	question, _ := req.GetArguments()["question"].(string)
	if question == "" {
		return mcp.NewToolResultError("question is required"), nil
	}
	if !clientCanElicit(ctx) {
		return mcp.NewToolResultError("client did not declare the elicitation capability"), nil
	}
	// Legacy clients get elicitation/create from mcp-go's bridge, which then
	// re-invokes this handler with the answer; modern clients get
	// input_required and retry with inputResponses.
	return server.NewInputRequestBuilder("").Elicit(askID, mcp.ElicitationParams{
		Mode:    mcp.ElicitationModeForm,
		Message: question,
		RequestedSchema: map[string]any{
			"type": "object",
			"properties": map[string]any{
				"answer": map[string]any{"type": "string", "description": "Your answer"},
			},
			"required": []string{"answer"},
		},
	}).ToolResult(), nil
}

// clientCanElicit reports whether the caller declared form elicitation, for
// this request (2026-07-28) or at initialize (earlier versions).
func clientCanElicit(ctx context.Context) bool {
	if info := server.RequestProtocolInfoFromContext(ctx); info != nil && info.Modern {
		return info.ClientCapabilities != nil && info.ClientCapabilities.Elicitation != nil
	}
	if sess, ok := server.ClientSessionFromContext(ctx).(server.SessionWithClientInfo); ok {
		return sess.GetClientCapabilities().Elicitation != nil
	}
	return false
}

func answerFrom(content any) (string, bool) {
	switch c := content.(type) {
	case map[string]any:
		s, ok := c["answer"].(string)
		return s, ok
	case nil:
		return "", false
	}
	b, err := json.Marshal(content)
	if err != nil {
		return "", false
	}
	var m struct {
		Answer *string `json:"answer"`
	}
	if json.Unmarshal(b, &m) != nil || m.Answer == nil {
		return "", false
	}
	return *m.Answer, true
}

func (ts *tools) crash(_ context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	id := ts.called(req)
	ts.events.Log("crash %s", id)
	_ = ts.events.Close()
	os.Exit(3)
	return nil, nil
}

func (ts *tools) hang(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	id := ts.called(req)
	<-ctx.Done()
	ts.events.Log("cancelled %s", id)
	return mcp.NewToolResultError("cancelled"), nil
}

func (ts *tools) fail(_ context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	ts.called(req)
	return mcp.NewToolResultError("intentional failure"), nil
}

// log sends the message as a notifications/message regardless of any log
// level the client chose: the point is to let tests observe the broker's
// relay. It pauses briefly afterwards so the notification is not the last
// thing sent before the response (notes §6).
func (ts *tools) log(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	ts.called(req)
	msg, ok := req.GetArguments()["message"].(string)
	if !ok {
		return mcp.NewToolResultError("message is required and must be a string"), nil
	}
	srv := server.ServerFromContext(ctx)
	if srv == nil {
		return mcp.NewToolResultError("no server in context"), nil
	}
	if err := srv.SendNotificationToClient(ctx, "notifications/message", map[string]any{
		"level":  "info",
		"logger": ts.name,
		"data":   msg,
	}); err != nil {
		return mcp.NewToolResultErrorf("send log notification: %v", err), nil
	}
	select {
	case <-ctx.Done():
	case <-time.After(50 * time.Millisecond):
	}
	return mcp.NewToolResultText("logged"), nil
}

// greetCompletions completes the greet prompt's name argument from
// greetNames by case-insensitive prefix.
type greetCompletions struct{}

func (greetCompletions) CompletePromptArgument(_ context.Context, prompt string, arg mcp.CompleteArgument, _ mcp.CompleteContext) (*mcp.Completion, error) {
	values := []string{}
	if prompt == "greet" && arg.Name == "name" {
		for _, n := range greetNames {
			if strings.HasPrefix(strings.ToLower(n), strings.ToLower(arg.Value)) {
				values = append(values, n)
			}
		}
	}
	slices.Sort(values)
	return &mcp.Completion{Values: values, Total: len(values)}, nil
}

// templateVar reads one variable matched from a URI template; mcp-go stores
// the matcher's []string, not a string.
func templateVar(args map[string]any, key string) string {
	switch v := args[key].(type) {
	case string:
		return v
	case []string:
		if len(v) == 1 {
			return v[0]
		}
	}
	return ""
}
