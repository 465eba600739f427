package demo

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/mark3labs/mcp-go/mcp"
)

func TestNotesListing(t *testing.T) {
	for _, era := range eras {
		t.Run(era.name, func(t *testing.T) {
			c := connect(t, NewNotes(), era.opts...)
			ctx := testCtx(t)

			tools, err := c.ListTools(ctx, mcp.ListToolsRequest{})
			if err != nil {
				t.Fatal(err)
			}
			byName := map[string]mcp.Tool{}
			for _, tool := range tools.Tools {
				byName[tool.Name] = tool
			}
			want := map[string][3]bool{ // readOnly, destructive, idempotent
				"read_note":   {true, false, true},
				"list_notes":  {true, false, true},
				"write_note":  {false, false, true},
				"delete_note": {false, true, false},
			}
			if len(byName) != len(want) {
				t.Fatalf("tools = %v", slices.Collect(func(yield func(string) bool) {
					for n := range byName {
						if !yield(n) {
							return
						}
					}
				}))
			}
			for name, h := range want {
				tool, ok := byName[name]
				if !ok {
					t.Fatalf("tool %s missing", name)
				}
				wantAnnotations(t, tool, h[0], h[1], h[2])
				if tool.Description == "" {
					t.Errorf("%s: no description", name)
				}
			}
			for _, name := range []string{"read_note", "write_note", "delete_note"} {
				s := byName[name].InputSchema
				if !slices.Contains(s.Required, "name") {
					t.Errorf("%s: name not required: %v", name, s.Required)
				}
				prop, _ := s.Properties["name"].(map[string]any)
				if prop["type"] != "string" || prop["description"] == nil {
					t.Errorf("%s: name property %v", name, prop)
				}
			}
			if !slices.Contains(byName["write_note"].InputSchema.Required, "text") {
				t.Errorf("write_note: text not required")
			}

			res, err := c.ListResources(ctx, mcp.ListResourcesRequest{})
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Resources) != 1 || res.Resources[0].URI != "notes://index" {
				t.Fatalf("resources = %+v", res.Resources)
			}
			tpls, err := c.ListResourceTemplates(ctx, mcp.ListResourceTemplatesRequest{})
			if err != nil {
				t.Fatal(err)
			}
			if len(tpls.ResourceTemplates) != 1 || tpls.ResourceTemplates[0].URITemplate.Raw() != "notes://{+name}" {
				t.Fatalf("templates = %+v", tpls.ResourceTemplates)
			}
			prompts, err := c.ListPrompts(ctx, mcp.ListPromptsRequest{})
			if err != nil {
				t.Fatal(err)
			}
			if len(prompts.Prompts) != 1 || prompts.Prompts[0].Name != "summarize_note" ||
				len(prompts.Prompts[0].Arguments) != 1 || !prompts.Prompts[0].Arguments[0].Required {
				t.Fatalf("prompts = %+v", prompts.Prompts)
			}
		})
	}
}

func TestNotesTools(t *testing.T) {
	for _, era := range eras {
		t.Run(era.name, func(t *testing.T) {
			c := connect(t, NewNotes(), era.opts...)
			runToolCases(t, c, []toolCase{
				{"read seeded", "read_note", `{"name":"welcome"}`, false, "Welcome to the mcpbroker demo"},
				{"read nested", "read_note", `{"name":"shared/roadmap"}`, false, "Roadmap:"},
				{"read missing name", "read_note", `{}`, true, "name is required"},
				{"read no arguments", "read_note", ``, true, "name is required"},
				{"read unknown", "read_note", `{"name":"nope"}`, true, `note "nope" not found`},
				{"read wrong type", "read_note", `{"name":5}`, true, "name must be of type string"},
				{"read unknown field", "read_note", `{"name":"welcome","x":1}`, true, `unknown field "x"`},
				{"read dotdot", "read_note", `{"name":"shared/../welcome"}`, true, `must not contain ".."`},
				{"read bad chars", "read_note", `{"name":"a b"}`, true, "may contain only"},
				{"read too long", "read_note", `{"name":"` + strings.Repeat("a", 129) + `"}`, true, "at most 128"},
				{"read leading slash", "read_note", `{"name":"/etc"}`, true, "must not start or end with /"},
				{"list all", "list_notes", `{}`, false, "shared/roadmap\nwelcome"},
				{"list prefix", "list_notes", `{"prefix":"shared/"}`, false, "shared/roadmap"},
				{"list none", "list_notes", `{"prefix":"zzz"}`, false, "(no notes)"},
				{"write new", "write_note", `{"name":"todo/today","text":"buy milk"}`, false, `note "todo/today" created (8 bytes)`},
				{"write again", "write_note", `{"name":"todo/today","text":"buy milk"}`, false, `note "todo/today" updated`},
				{"read written", "read_note", `{"name":"todo/today"}`, false, "buy milk"},
				{"write empty text", "write_note", `{"name":"empty","text":""}`, false, "created (0 bytes)"},
				{"write missing text", "write_note", `{"name":"x"}`, true, "text is required"},
				{"write missing name", "write_note", `{"text":"x"}`, true, "name is required"},
				{"write index reserved", "write_note", `{"name":"index","text":"x"}`, true, `"index" is reserved`},
				{"write too big", "write_note", `{"name":"big","text":"` + strings.Repeat("x", maxNoteBytes+1) + `"}`, true, "at most 65536 bytes"},
				{"delete", "delete_note", `{"name":"todo/today"}`, false, `note "todo/today" deleted`},
				{"delete again", "delete_note", `{"name":"todo/today"}`, true, "not found"},
				{"read deleted", "read_note", `{"name":"todo/today"}`, true, "not found"},
				{"delete missing name", "delete_note", `{}`, true, "name is required"},
			})
		})
	}
}

func TestNotesListStructured(t *testing.T) {
	c := connect(t, NewNotes())
	res := call(t, c, "list_notes", `{}`)
	b, err := json.Marshal(res.StructuredContent)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(b), `{"names":["shared/roadmap","welcome"]}`; got != want {
		t.Fatalf("structuredContent = %s, want %s", got, want)
	}
}

func TestNotesResources(t *testing.T) {
	for _, era := range eras {
		t.Run(era.name, func(t *testing.T) {
			c := connect(t, NewNotes(), era.opts...)
			if got, err := readResource(t, c, "notes://index"); err != nil || got != `["shared/roadmap","welcome"]` {
				t.Fatalf("index = %q, %v", got, err)
			}
			if got, err := readResource(t, c, "notes://welcome"); err != nil || !strings.HasPrefix(got, "Welcome") {
				t.Fatalf("welcome = %q, %v", got, err)
			}
			if got, err := readResource(t, c, "notes://shared/roadmap"); err != nil || !strings.HasPrefix(got, "Roadmap:") {
				t.Fatalf("shared/roadmap = %q, %v", got, err)
			}
			call(t, c, "write_note", `{"name":"new","text":"hello"}`)
			if got, err := readResource(t, c, "notes://index"); err != nil || got != `["new","shared/roadmap","welcome"]` {
				t.Fatalf("index after write = %q, %v", got, err)
			}
			for _, uri := range []string{"notes://missing", "notes://shared/../welcome", "notes://a%20b", "other://welcome"} {
				if got, err := readResource(t, c, uri); err == nil {
					t.Errorf("read %s = %q, want an error", uri, got)
				}
			}
		})
	}
}

func TestNotesPrompt(t *testing.T) {
	for _, era := range eras {
		t.Run(era.name, func(t *testing.T) {
			c := connect(t, NewNotes(), era.opts...)
			res, err := getPrompt(t, c, "summarize_note", map[string]string{"name": "shared/roadmap"})
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Messages) != 2 {
				t.Fatalf("messages = %+v", res.Messages)
			}
			if tc, ok := res.Messages[0].Content.(mcp.TextContent); !ok || !strings.Contains(tc.Text, `"shared/roadmap"`) {
				t.Fatalf("first message = %#v", res.Messages[0].Content)
			}
			er, ok := res.Messages[1].Content.(mcp.EmbeddedResource)
			if !ok {
				t.Fatalf("second message = %#v", res.Messages[1].Content)
			}
			if trc, ok := mcp.AsTextResourceContents(er.Resource); !ok || !strings.HasPrefix(trc.Text, "Roadmap:") || trc.URI != "notes://shared/roadmap" {
				t.Fatalf("embedded = %#v", er.Resource)
			}
			for name, args := range map[string]map[string]string{
				"missing": {},
				"unknown": {"name": "nope"},
				"invalid": {"name": "../x"},
			} {
				if _, err := getPrompt(t, c, "summarize_note", args); err == nil {
					t.Errorf("%s: want an error", name)
				}
			}
		})
	}
}

func TestValidateNoteName(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"a", true},
		{"A-z_0.9/x", true},
		{strings.Repeat("n", 128), true},
		{"", false},
		{strings.Repeat("n", 129), false},
		{"..", false},
		{"a/../b", false},
		{"a..b", false},
		{"/a", false},
		{"a/", false},
		{"a//b", false},
		{"a b", false},
		{"a\\b", false},
		{"é", false},
		{"index", false},
		{"a\x00", false},
	} {
		if err := validateNoteName(tc.name); (err == nil) != tc.ok {
			t.Errorf("validateNoteName(%q) = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

func FuzzValidateNoteName(f *testing.F) {
	for _, s := range []string{"welcome", "shared/roadmap", "../x", "a//b", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if validateNoteName(name) != nil {
			return
		}
		if strings.Contains(name, "..") || len(name) == 0 || len(name) > 128 || strings.HasPrefix(name, "/") {
			t.Fatalf("accepted %q", name)
		}
	})
}
