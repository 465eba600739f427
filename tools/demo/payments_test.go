package demo

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/mark3labs/mcp-go/mcp"
)

func TestPaymentsListing(t *testing.T) {
	for _, era := range eras {
		t.Run(era.name, func(t *testing.T) {
			c := connect(t, NewPayments(), era.opts...)
			ctx := testCtx(t)
			tools, err := c.ListTools(ctx, mcp.ListToolsRequest{})
			if err != nil {
				t.Fatal(err)
			}
			if len(tools.Tools) != 2 {
				t.Fatalf("tools = %+v", tools.Tools)
			}
			byName := map[string]mcp.Tool{}
			for _, tool := range tools.Tools {
				byName[tool.Name] = tool
			}
			wantAnnotations(t, byName["balance"], true, false, true)
			wantAnnotations(t, byName["transfer"], false, true, false)

			tr := byName["transfer"]
			for _, f := range []string{"account", "recipient", "amount", "currency"} {
				if !slices.Contains(tr.InputSchema.Required, f) {
					t.Errorf("transfer: %s not required (%v)", f, tr.InputSchema.Required)
				}
			}
			if slices.Contains(tr.InputSchema.Required, "memo") {
				t.Errorf("transfer: memo must be optional")
			}
			amount, _ := tr.InputSchema.Properties["amount"].(map[string]any)
			if amount["type"] != "integer" || amount["minimum"] != float64(1) || amount["description"] == nil {
				t.Errorf("transfer amount schema = %v", amount)
			}
			cur, _ := tr.InputSchema.Properties["currency"].(map[string]any)
			if enum, _ := cur["enum"].([]any); len(enum) != 2 || enum[0] != "EUR" || enum[1] != "USD" {
				t.Errorf("transfer currency schema = %v", cur)
			}
			if tr.OutputSchema.Type != "object" || !slices.Contains(tr.OutputSchema.Required, "transferId") || !slices.Contains(tr.OutputSchema.Required, "balance") {
				t.Errorf("transfer outputSchema = %+v", tr.OutputSchema)
			}

			res, err := c.ListResources(ctx, mcp.ListResourcesRequest{})
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Resources) != 1 || res.Resources[0].URI != "payments://accounts" {
				t.Fatalf("resources = %+v", res.Resources)
			}
			prompts, err := c.ListPrompts(ctx, mcp.ListPromptsRequest{})
			if err != nil {
				t.Fatal(err)
			}
			if len(prompts.Prompts) != 1 || prompts.Prompts[0].Name != "explain_transfer" {
				t.Fatalf("prompts = %+v", prompts.Prompts)
			}
		})
	}
}

func TestPaymentsTools(t *testing.T) {
	for _, era := range eras {
		t.Run(era.name, func(t *testing.T) {
			c := connect(t, NewPayments(), era.opts...)
			runToolCases(t, c, []toolCase{
				{"balance alice", "balance", `{"account":"alice"}`, false, "alice: 500.00 EUR (50000 cents)"},
				{"balance ops", "balance", `{"account":"ops"}`, false, "(1000000 cents)"},
				{"balance unknown", "balance", `{"account":"mallory"}`, true, `unknown account "mallory"`},
				{"balance missing", "balance", `{}`, true, "account is required"},
				{"balance wrong type", "balance", `{"account":1}`, true, "account must be of type string"},
				{"transfer ok", "transfer", `{"account":"alice","recipient":"bob","amount":1250,"currency":"EUR","memo":"lunch"}`, false, "tx-000001: moved 12.50 EUR from alice to bob; alice balance is now 487.50 EUR"},
				{"balance after", "balance", `{"account":"bob"}`, false, "(21250 cents)"},
				{"transfer float", "transfer", `{"account":"alice","recipient":"bob","amount":12.5,"currency":"EUR"}`, true, "amount must be an integer"},
				{"transfer float zero fraction", "transfer", `{"account":"alice","recipient":"bob","amount":100.0,"currency":"EUR"}`, true, "amount must be an integer"},
				{"transfer exponent", "transfer", `{"account":"alice","recipient":"bob","amount":1e3,"currency":"EUR"}`, true, "amount must be an integer"},
				{"transfer string amount", "transfer", `{"account":"alice","recipient":"bob","amount":"100","currency":"EUR"}`, true, "amount must be an integer"},
				{"transfer zero", "transfer", `{"account":"alice","recipient":"bob","amount":0,"currency":"EUR"}`, true, "at least 1 cent"},
				{"transfer negative", "transfer", `{"account":"alice","recipient":"bob","amount":-5,"currency":"EUR"}`, true, "at least 1 cent"},
				{"transfer huge", "transfer", `{"account":"alice","recipient":"bob","amount":99999999999999999999,"currency":"EUR"}`, true, "at most 1000000000"},
				{"transfer missing amount", "transfer", `{"account":"alice","recipient":"bob","currency":"EUR"}`, true, "amount is required"},
				{"transfer insufficient", "transfer", `{"account":"bob","recipient":"alice","amount":999999,"currency":"EUR"}`, true, `insufficient funds: "bob" has 21250`},
				{"transfer unknown account", "transfer", `{"account":"mallory","recipient":"bob","amount":1,"currency":"EUR"}`, true, `unknown account "mallory"`},
				{"transfer unknown recipient", "transfer", `{"account":"alice","recipient":"mallory","amount":1,"currency":"EUR"}`, true, `unknown recipient "mallory"`},
				{"transfer self", "transfer", `{"account":"alice","recipient":"alice","amount":1,"currency":"EUR"}`, true, "must differ"},
				{"transfer bad currency", "transfer", `{"account":"alice","recipient":"bob","amount":1,"currency":"GBP"}`, true, `currency must be EUR or USD, not "GBP"`},
				{"transfer missing currency", "transfer", `{"account":"alice","recipient":"bob","amount":1}`, true, "currency is required"},
				{"transfer currency mismatch", "transfer", `{"account":"alice","recipient":"bob","amount":1,"currency":"USD"}`, true, "currency mismatch"},
				{"transfer missing account", "transfer", `{"recipient":"bob","amount":1,"currency":"EUR"}`, true, "account is required"},
				{"transfer missing recipient", "transfer", `{"account":"alice","amount":1,"currency":"EUR"}`, true, "recipient is required"},
				{"transfer long memo", "transfer", `{"account":"alice","recipient":"bob","amount":1,"currency":"EUR","memo":"` + strings.Repeat("m", 141) + `"}`, true, "memo must be at most 140"},
				{"transfer unknown field", "transfer", `{"account":"alice","recipient":"bob","amount":1,"currency":"EUR","fee":1}`, true, `unknown field "fee"`},
				{"balance unchanged by failures", "balance", `{"account":"alice"}`, false, "(48750 cents)"},
			})
		})
	}
}

func TestPaymentsTransferStructured(t *testing.T) {
	c := connect(t, NewPayments())
	res := call(t, c, "transfer", `{"account":"ops","recipient":"alice","amount":100000,"currency":"EUR"}`)
	if res.IsError {
		t.Fatalf("transfer failed: %s", resultText(t, res))
	}
	b, err := json.Marshal(res.StructuredContent)
	if err != nil {
		t.Fatal(err)
	}
	// The client decodes structuredContent into a map, so keys come back sorted.
	want := `{"account":"ops","amount":100000,"balance":900000,"currency":"EUR","recipient":"alice","transferId":"tx-000001"}`
	if string(b) != want {
		t.Fatalf("structuredContent = %s\nwant %s", b, want)
	}
	res = call(t, c, "transfer", `{"account":"ops","recipient":"bob","amount":1,"currency":"EUR"}`)
	if m, _ := res.StructuredContent.(map[string]any); m["transferId"] != "tx-000002" || m["balance"] != float64(899999) {
		t.Fatalf("second transfer = %v", res.StructuredContent)
	}
	res = call(t, c, "balance", `{"account":"alice"}`)
	if m, _ := res.StructuredContent.(map[string]any); m["balance"] != float64(150000) || m["currency"] != "EUR" {
		t.Fatalf("balance structured = %v", res.StructuredContent)
	}
}

func TestPaymentsResource(t *testing.T) {
	for _, era := range eras {
		t.Run(era.name, func(t *testing.T) {
			c := connect(t, NewPayments(), era.opts...)
			got, err := readResource(t, c, "payments://accounts")
			if err != nil {
				t.Fatal(err)
			}
			want := `[{"account":"alice","currency":"EUR","balance":50000},{"account":"bob","currency":"EUR","balance":20000},{"account":"ops","currency":"EUR","balance":1000000}]`
			if got != want {
				t.Fatalf("accounts = %s\nwant %s", got, want)
			}
			call(t, c, "transfer", `{"account":"alice","recipient":"bob","amount":50000,"currency":"EUR"}`)
			got, _ = readResource(t, c, "payments://accounts")
			if !strings.Contains(got, `{"account":"alice","currency":"EUR","balance":0}`) || !strings.Contains(got, `"balance":70000`) {
				t.Fatalf("accounts after transfer = %s", got)
			}
		})
	}
}

func TestPaymentsPrompt(t *testing.T) {
	for _, era := range eras {
		t.Run(era.name, func(t *testing.T) {
			c := connect(t, NewPayments(), era.opts...)
			call(t, c, "transfer", `{"account":"alice","recipient":"bob","amount":1250,"currency":"EUR","memo":"lunch"}`)
			res, err := getPrompt(t, c, "explain_transfer", map[string]string{"transfer_id": "tx-000001"})
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Messages) != 1 {
				t.Fatalf("messages = %+v", res.Messages)
			}
			tc, ok := res.Messages[0].Content.(mcp.TextContent)
			if !ok || !strings.Contains(tc.Text, "12.50 EUR") || !strings.Contains(tc.Text, `"memo":"lunch"`) {
				t.Fatalf("message = %#v", res.Messages[0].Content)
			}
			for name, args := range map[string]map[string]string{
				"missing": {},
				"unknown": {"transfer_id": "tx-999999"},
			} {
				if _, err := getPrompt(t, c, "explain_transfer", args); err == nil {
					t.Errorf("%s: want an error", name)
				}
			}
		})
	}
}

func TestParseMinorUnits(t *testing.T) {
	for _, tc := range []struct {
		raw  string
		want int64
		ok   bool
	}{
		{"1", 1, true},
		{"1250", 1250, true},
		{"1000000000", 1000000000, true},
		{"1000000001", 0, false},
		{"0", 0, false},
		{"-1", 0, false},
		{"1.5", 0, false},
		{"1.0", 0, false},
		{"1e2", 0, false},
		{`"5"`, 0, false},
		{"null", 0, false},
		{"", 0, false},
		{"true", 0, false},
		{"9223372036854775808", 0, false},
	} {
		got, err := parseMinorUnits(json.RawMessage(tc.raw))
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseMinorUnits(%s) = %d, %v; want %d ok=%v", tc.raw, got, err, tc.want, tc.ok)
		}
	}
}

func FuzzParseMinorUnits(f *testing.F) {
	for _, s := range []string{"1", "1250", "1.5", "-0", "1e3", `"7"`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		n, err := parseMinorUnits(json.RawMessage(raw))
		if err == nil && (n < 1 || n > maxAmount) {
			t.Fatalf("accepted %q as %d", raw, n)
		}
	})
}

func TestFormatMinor(t *testing.T) {
	for in, want := range map[int64]string{0: "0.00", 5: "0.05", 1250: "12.50", -1250: "-12.50", 100000: "1000.00"} {
		if got := formatMinor(in); got != want {
			t.Errorf("formatMinor(%d) = %q, want %q", in, got, want)
		}
	}
}

func TestServers(t *testing.T) {
	a, b := Servers(), Servers()
	if len(a) != 2 || a["notes"] == nil || a["payments"] == nil {
		t.Fatalf("Servers() = %v", a)
	}
	if a["notes"] == b["notes"] {
		t.Fatal("Servers must return fresh instances")
	}
	// State is per instance.
	ca, cb := connect(t, a["notes"]), connect(t, b["notes"])
	call(t, ca, "delete_note", `{"name":"welcome"}`)
	if res := call(t, cb, "read_note", `{"name":"welcome"}`); res.IsError {
		t.Fatal("deleting in one instance affected another")
	}
}

func TestEraNegotiation(t *testing.T) {
	for _, tc := range []struct {
		era  int
		want string
	}{{0, mcp.ProtocolVersion20260728}, {1, mcp.ProtocolVersion20251125}} {
		c := connect(t, NewNotes(), eras[tc.era].opts...)
		if got := c.ProtocolVersion(); got != tc.want {
			t.Errorf("%s: negotiated %q, want %q", eras[tc.era].name, got, tc.want)
		}
	}
}

// TestConcurrentTransfers checks the ledger conserves money under -race.
func TestConcurrentTransfers(t *testing.T) {
	s := NewPayments()
	c := connect(t, s)
	done := make(chan struct{})
	for i := range 8 {
		go func() {
			defer func() { done <- struct{}{} }()
			from, to := "alice", "bob"
			if i%2 == 1 {
				from, to = to, from
			}
			for range 20 {
				req := mcp.CallToolRequest{}
				req.Params.Name = "transfer"
				req.Params.Arguments = map[string]any{"account": from, "recipient": to, "amount": 7, "currency": "EUR"}
				if _, err := c.CallTool(t.Context(), req); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	for range 8 {
		<-done
	}
	got, err := readResource(t, c, "payments://accounts")
	if err != nil {
		t.Fatal(err)
	}
	var accts []accountView
	if err := json.Unmarshal([]byte(got), &accts); err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, a := range accts {
		total += a.Balance
	}
	if total != 50000+20000+1000000 {
		t.Fatalf("money not conserved: total %d", total)
	}
}
