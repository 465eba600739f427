package policies

import "testing"

func benchRequest() Request {
	r := req(ActionCallTool, tool("payments", "transfer"), map[string]any{
		"account": "acc-1", "recipient": "bob", "amount": int64(5000), "currency": "EUR",
	})
	r.Chain = []Agent{
		{ID: "spiffe://example.org/agent/orchestrator", Classes: []string{"planning"}},
		{ID: "spiffe://example.org/agent/planner", Classes: []string{"planning"}},
		{ID: "spiffe://example.org/agent/paybot", Classes: []string{"payments"}},
	}
	return r
}

// BenchmarkDecide: initiator + 3-agent chain (4 passes) against Baseline()+Demo().
func BenchmarkDecide(b *testing.B) {
	eng := NewEngine(demoSet(b))
	r := benchRequest()
	if d := eng.Decide(r); d.Outcome != Allow {
		b.Fatalf("outcome %s", d.Outcome)
	}
	b.ReportAllocs()
	for b.Loop() {
		eng.Decide(r)
	}
}

func BenchmarkVisible(b *testing.B) {
	eng := NewEngine(demoSet(b))
	r := benchRequest()
	if !eng.Visible(r) {
		b.Fatal("not visible")
	}
	b.ReportAllocs()
	for b.Loop() {
		eng.Visible(r)
	}
}
