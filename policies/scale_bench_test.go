package policies

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cedar-policy/cedar-go"
	"github.com/cedar-policy/cedar-go/types"
)

// The scale benchmarks use a universe of about 1,000 entities: 400 agents in
// 20 classes, 200 users in 10 teams, 50 workloads, 20 servers with 15 tools
// each (300 tools). Policies are generated over it in equal shares of five
// shapes (class grants, team grants, agent-to-tool grants, per-tool argument
// forbids, per-tool approval forbids), plus two fixed grants so that the
// benchmark request is allowed at every size.

func scaleSource(n int) Source {
	rng := rand.New(rand.NewPCG(1, 2))
	var b strings.Builder
	b.WriteString(`@id("bench-team")
permit (principal is Broker::User in Broker::Team::"t3", action in Broker::Action::"mcp", resource in Broker::ToolServer::"s2");
@id("bench-class")
permit (principal in Broker::AgentClass::"c2", action == Broker::Action::"call_tool", resource in Broker::ToolServer::"s2")
when { resource.readOnlyHint || context.chain.depth <= 3 };
`)
	for i := range n - 2 {
		s, t := rng.IntN(20), rng.IntN(15)
		fmt.Fprintf(&b, "@id(\"gen-%04d\")\n", i)
		switch i % 5 {
		case 0:
			fmt.Fprintf(&b, `permit (principal in Broker::AgentClass::"c%d", action == Broker::Action::"call_tool", resource in Broker::ToolServer::"s%d") when { resource.readOnlyHint || context.chain.depth == 1 };`, rng.IntN(20), s)
		case 1:
			fmt.Fprintf(&b, `permit (principal is Broker::User in Broker::Team::"t%d", action in Broker::Action::"mcp", resource in Broker::ToolServer::"s%d");`, rng.IntN(10), s)
		case 2:
			fmt.Fprintf(&b, `permit (principal == Broker::Agent::"spiffe://example.org/a%d", action, resource == Broker::Tool::"s%d/t%d");`, rng.IntN(400), s, t)
		case 3:
			fmt.Fprintf(&b, `forbid (principal, action == Broker::Action::"call_tool", resource == Broker::Tool::"s%d/t%d") unless { context.args has amount && context.args.amount < %d };`, s, t, 1000+rng.IntN(20000))
		case 4:
			fmt.Fprintf(&b, "@approval(\"required\")\n"+`forbid (principal is Broker::Agent in Broker::User::"u%d", action, resource == Broker::Tool::"s%d/t%d") unless { context has approval && context.approval.granted && context.approval.callId == context.callId };`, rng.IntN(200), s, t)
		}
		b.WriteString("\n")
	}
	return Source{Name: fmt.Sprintf("scale-%d.cedar", n), Text: []byte(b.String())}
}

func scaleSet(tb testing.TB, n int) *Set {
	tb.Helper()
	return mustCompile(tb, append(Baseline(), scaleSource(n))...)
}

// scaleRequest: user u7 (team t3) through `agents` agents of class c2 to tool s2/t3.
func scaleRequest(agents int) Request {
	r := Request{
		CallID:    "call-1",
		Action:    ActionCallTool,
		Initiator: Initiator{Kind: InitiatorUser, ID: "u7", Tenant: "acme", Groups: []string{"t3"}},
		Target: Target{Kind: TargetTool, Server: "s2", Name: "t3", Exposed: "s2__t3",
			ReadOnly: true, Idempotent: true, RiskTags: []string{"pii"}},
		Args: map[string]any{"path": "/workspace/a", "amount": int64(100)},
		Now:  testNow,
	}
	for i := range agents {
		r.Chain = append(r.Chain, Agent{ID: fmt.Sprintf("spiffe://example.org/a%d", 42+i), Classes: []string{"c2", "c7"}})
	}
	return r
}

var scaleSizes = []int{50, 500, 5000}

// BenchmarkScalePass is one Cedar evaluation for one principal through the
// index, with the request already turned into entities, context and index
// candidates (as the Set's request cache keeps them).
func BenchmarkScalePass(b *testing.B) {
	for _, n := range scaleSizes {
		set := scaleSet(b, n)
		p, err := set.prepare(scaleRequest(1))
		if err != nil {
			b.Fatal(err)
		}
		ctx := p.parts.record(nil)
		b.Run(fmt.Sprintf("policies=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				dec, _ := cedar.Authorize(set.policiesFor(p, 1, viewIndexed), p.b.entities, cedar.Request{
					Principal: p.b.principals[1], Action: p.action, Resource: p.b.resource, Context: ctx,
				})
				if dec != types.Allow {
					b.Fatal("deny")
				}
			}
		})
	}
}

// BenchmarkScaleDecide is Engine.Decide end to end (entities, context, every
// pass, outcome): chain=1 is the initiator and one agent (2 passes), chain=2
// the full three-pass chain (initiator, planner, acting agent).
func BenchmarkScaleDecide(b *testing.B) {
	for _, n := range scaleSizes {
		eng := NewEngine(scaleSet(b, n))
		for _, agents := range []int{1, 2} {
			r := scaleRequest(agents)
			if d := eng.Decide(r); d.Outcome != Allow {
				b.Fatalf("%d policies: %s %+v", n, d.Outcome, d.Passes)
			}
			b.Run(fmt.Sprintf("policies=%d/passes=%d", n, agents+1), func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					eng.Decide(r)
				}
			})
		}
	}
}

// BenchmarkScaleDecideUnindexed is the same three-pass decision with every
// policy handed to Cedar: what the index saves.
func BenchmarkScaleDecideUnindexed(b *testing.B) {
	for _, n := range scaleSizes {
		set := scaleSet(b, n)
		r := scaleRequest(2)
		b.Run(fmt.Sprintf("policies=%d/passes=3", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				set.decide(r, false)
			}
		})
	}
}

// BenchmarkScaleCompile is a full load: parse, @id, schema validation, lint,
// index.
func BenchmarkScaleCompile(b *testing.B) {
	for _, n := range scaleSizes {
		srcs := append(Baseline(), scaleSource(n))
		b.Run(fmt.Sprintf("policies=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Compile(srcs); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkScaleReloadUnderLoad compiles and swaps 5,000-policy sets in a
// loop while one goroutine decides three-pass requests at a steady pace (one
// every 200µs), and reports the decision latency during reloads (p50, p99,
// max) next to the same loop measured without reloads first. Decisions never
// wait for a reload (the swap is one atomic store); they only share the CPU
// and the GC with the compile.
func BenchmarkScaleReloadUnderLoad(b *testing.B) {
	srcs := append(Baseline(), scaleSource(5000))
	eng := NewEngine(scaleSet(b, 5000))
	r := scaleRequest(2)
	measure := func(stop *atomic.Bool) []time.Duration {
		var lat []time.Duration
		for !stop.Load() {
			t0 := time.Now()
			if d := eng.Decide(r); d.Outcome != Allow {
				b.Error("deny during reload")
				return lat
			}
			lat = append(lat, time.Since(t0))
			time.Sleep(200 * time.Microsecond)
		}
		return lat
	}
	report := func(prefix string, lat []time.Duration) {
		if len(lat) == 0 {
			b.Fatal("no decisions")
		}
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds()), prefix+"p50-ns")
		b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds()), prefix+"p99-ns")
		b.ReportMetric(float64(lat[len(lat)-1].Nanoseconds()), prefix+"max-ns")
	}
	// Baseline: the same loop for 500ms without reloads.
	var idle atomic.Bool
	time.AfterFunc(500*time.Millisecond, func() { idle.Store(true) })
	idleLat := measure(&idle)

	var stop atomic.Bool
	var lat []time.Duration
	var wg sync.WaitGroup
	wg.Go(func() { lat = measure(&stop) })
	for b.Loop() {
		set, err := Compile(srcs)
		if err != nil {
			b.Fatal(err)
		}
		eng.Swap(set)
	}
	stop.Store(true)
	wg.Wait()
	report("idle-", idleLat) // after b.Loop: its first call resets reported metrics
	report("reload-", lat)
}

// TestScaleIndexEquivalence checks the scale policies the benchmarks use give
// the same decisions with and without the index on random requests.
func TestScaleIndexEquivalence(t *testing.T) {
	set := scaleSet(t, 500)
	rng := rand.New(rand.NewPCG(3, 4))
	for range 500 {
		r := scaleRequest(1 + rng.IntN(3))
		r.Initiator.ID = fmt.Sprintf("u%d", rng.IntN(200))
		r.Initiator.Groups = []string{fmt.Sprintf("t%d", rng.IntN(10))}
		for i := range r.Chain {
			r.Chain[i] = Agent{ID: fmt.Sprintf("spiffe://example.org/a%d", rng.IntN(400)), Classes: []string{fmt.Sprintf("c%d", rng.IntN(20))}}
		}
		r.Target.Server = fmt.Sprintf("s%d", rng.IntN(20))
		r.Target.Name = fmt.Sprintf("t%d", rng.IntN(15))
		r.Target.ReadOnly = rng.IntN(2) == 0
		r.Args["amount"] = int64(rng.IntN(25000))
		got, want := set.decide(r, true), set.decide(r, false)
		if got.Outcome != want.Outcome || !slices.Equal(got.PolicyIDs, want.PolicyIDs) {
			t.Fatalf("indexed %s %v, unindexed %s %v", got.Outcome, got.PolicyIDs, want.Outcome, want.PolicyIDs)
		}
	}
}
