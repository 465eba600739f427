package policies

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
)

// generatedPolicies returns n validating policies over teams t0..t9, classes
// c0..c4, agents a0..a29, users u0..u19, servers s0..s7 and tools t0..t5,
// with every scope shape the index distinguishes, forbids that an approval
// cures, and forbids that error (Long overflow) for large amounts.
func generatedPolicies(rng *rand.Rand, n int) Source {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "@id(\"gen-%03d\")\n", i)
		s, t := rng.IntN(8), rng.IntN(6)
		switch i % 9 {
		case 0:
			fmt.Fprintf(&b, `permit (principal is Broker::User in Broker::Team::"t%d", action in Broker::Action::"mcp", resource in Broker::ToolServer::"s%d");`, rng.IntN(10), s)
		case 1:
			fmt.Fprintf(&b, `permit (principal in Broker::AgentClass::"c%d", action == Broker::Action::"call_tool", resource in Broker::ToolServer::"s%d") when { resource.readOnlyHint || context.chain.depth == 1 };`, rng.IntN(5), s)
		case 2:
			fmt.Fprintf(&b, `permit (principal == Broker::Agent::"spiffe://example.org/a%d", action, resource == Broker::Tool::"s%d/t%d");`, rng.IntN(30), s, t)
		case 3:
			fmt.Fprintf(&b, `forbid (principal, action == Broker::Action::"call_tool", resource in Broker::ToolServer::"s%d") unless { context.args has amount && context.args.amount < %d };`, s, rng.IntN(20000))
		case 4:
			fmt.Fprintf(&b, `forbid (principal is Broker::Agent in Broker::User::"u%d", action, resource) when { resource.destructiveHint };`, rng.IntN(20))
		case 5:
			fmt.Fprintf(&b, "@approval(\"required\")\n"+`forbid (principal, action, resource == Broker::Tool::"s%d/t%d") unless { context has approval && context.approval.granted && context.approval.callId == context.callId };`, s, t)
		case 6:
			fmt.Fprintf(&b, `forbid (principal in Broker::Team::"t%d", action == Broker::Action::"call_tool", resource in Broker::ToolServer::"s%d") when { context.args has amount && context.args.amount * 4611686018427387904 > 1 };`, rng.IntN(10), s)
		case 7:
			fmt.Fprintf(&b, `permit (principal is Broker::Workload, action, resource is Broker::Resource) when { resource in Broker::ToolServer::"s%d" };`, s)
		case 8:
			fmt.Fprintf(&b, `permit (principal is Broker::Agent, action in Broker::Action::"mcp", resource) when { principal.trustDomain == "example.org" && resource.name like "s%d*" };`, s)
		}
		b.WriteString("\n\n")
	}
	return Source{Name: "generated.cedar", Text: []byte(b.String())}
}

func randomRequest(rng *rand.Rand) Request {
	pick := func(prefix string, n, max int) []string {
		var out []string
		for range rng.IntN(max + 1) {
			out = append(out, fmt.Sprintf("%s%d", prefix, rng.IntN(n)))
		}
		return out
	}
	r := Request{CallID: fmt.Sprintf("call-%d", rng.IntN(3)), Now: testNow, Args: map[string]any{}}
	if rng.IntN(5) == 0 {
		r.Initiator = Initiator{Kind: InitiatorWorkload, ID: fmt.Sprintf("spiffe://example.org/w%d", rng.IntN(5)), Groups: pick("t", 10, 2)}
	} else {
		r.Initiator = Initiator{Kind: InitiatorUser, ID: fmt.Sprintf("u%d", rng.IntN(20)), Groups: pick("t", 10, 3)}
	}
	for range 1 + rng.IntN(4) {
		r.Chain = append(r.Chain, Agent{ID: fmt.Sprintf("spiffe://example.org/a%d", rng.IntN(30)), Classes: pick("c", 5, 2)})
	}
	s, t := rng.IntN(8), rng.IntN(6)
	r.Target = Target{
		Server: fmt.Sprintf("s%d", s), Name: fmt.Sprintf("t%d", t), Exposed: fmt.Sprintf("s%d__t%d", s, t),
		ReadOnly: rng.IntN(2) == 0, Destructive: rng.IntN(2) == 0, Idempotent: rng.IntN(2) == 0, OpenWorld: rng.IntN(2) == 0,
	}
	switch rng.IntN(5) {
	case 0:
		r.Action, r.Target.Kind = ActionReadResource, TargetResource
	case 1:
		r.Action, r.Target.Kind = ActionGetPrompt, TargetPrompt
	case 2:
		r.Action, r.Target.Kind = ActionListTools, TargetTool
	default:
		r.Action, r.Target.Kind = ActionCallTool, TargetTool
	}
	if rng.IntN(3) > 0 {
		r.Args["amount"] = int64(rng.IntN(25000))
	}
	if rng.IntN(4) == 0 {
		r.Approval = &Approval{Granted: rng.IntN(2) == 0, Approver: "bob", CallID: fmt.Sprintf("call-%d", rng.IntN(3))}
	}
	return r
}

// TestIndexMatchesUnindexed: the scope index must not change any decision,
// pass, reason or error.
func TestIndexMatchesUnindexed(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	set := mustCompile(t, append(Baseline(), generatedPolicies(rng, 450))...)
	outcomes := map[Outcome]int{}
	errs := 0
	n := 4000
	if testing.Short() {
		n = 500
	}
	for i := range n {
		r := randomRequest(rng)
		got, want := set.decide(r, true), set.decide(r, false)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("request %d %+v:\nindexed   %+v\nunindexed %+v", i, r, got, want)
		}
		outcomes[got.Outcome]++
		for _, p := range got.Passes {
			if len(p.Errors) > 0 {
				errs++
				break
			}
		}
	}
	t.Logf("%d requests: %v, %d with evaluation errors", n, outcomes, errs)
	// The corpus must exercise every outcome, or the comparison proves little.
	for _, o := range []Outcome{Allow, Deny, NeedsApproval} {
		if outcomes[o] == 0 {
			t.Errorf("no %s decisions among %d random requests", o, n)
		}
	}
	if errs == 0 {
		t.Error("no evaluation errors among random requests")
	}
}

func BenchmarkDecideLargeSet(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 2))
	set := mustCompile(b, append(Baseline(), generatedPolicies(rng, 900))...)
	r := randomRequest(rng)
	for _, indexed := range []bool{true, false} {
		b.Run(fmt.Sprintf("indexed=%v", indexed), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				set.decide(r, indexed)
			}
		})
	}
}
