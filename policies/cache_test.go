package policies

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// keyPolicies are policies whose outcome turns on every field of a request
// that the request cache keys on (initiator kind, id, tenant, groups, spend
// limit; agents and classes; target kind, server, name, exposed name, hints,
// risk tags, tenant, pinning; task id, tools, expiry, purpose), with log_only
// policies (shadow pass), @approval forbids and an erroring forbid.
const keyPolicies = `
@id("k-team")
permit (principal is Broker::User in Broker::Team::"g1", action in Broker::Action::"mcp", resource in Broker::ToolServer::"s1");
@id("k-team0")
permit (principal is Broker::User in Broker::Team::"g0", action in Broker::Action::"mcp", resource);
@id("k-class0")
permit (principal in Broker::AgentClass::"c0", action, resource)
unless { resource.destructiveHint && resource.openWorldHint };
@id("k-tool")
permit (principal is Broker::Agent, action, resource == Broker::Tool::"s1/t1");
@id("k-closed-writer")
forbid (principal, action, resource)
when { !resource.readOnlyHint && resource.idempotentHint && !resource.openWorldHint && !resource.destructiveHint };
@id("k-workload")
permit (principal is Broker::Workload in Broker::Team::"g2", action in Broker::Action::"mcp", resource);
@id("k-user")
permit (principal == Broker::User::"u1", action, resource);
@id("k-class")
permit (principal in Broker::AgentClass::"c1", action in Broker::Action::"mcp", resource)
when { resource.readOnlyHint || context.chain.depth <= 2 };
@id("k-agent")
permit (principal is Broker::Agent, action in Broker::Action::"mcp", resource in Broker::ToolServer::"s2")
when { principal.trustDomain == "example.org" && principal.spiffeId != "spiffe://example.org/a3" };
@id("k-bound")
permit (principal is Broker::Agent in Broker::User::"u2", action, resource);
@id("k-task")
permit (principal is Broker::Agent, action, resource)
when { context has task && context.task.id == "task-open" };
@id("k-tenant")
forbid (principal, action, resource)
when { principal has tenant && resource has tenant && principal.tenant != resource.tenant };
@id("k-spend")
forbid (principal, action == Broker::Action::"call_tool", resource)
when { principal has spendLimit && context.args has amount && context.args.amount > principal.spendLimit };
@id("k-hints")
forbid (principal is Broker::Agent in Broker::AgentClass::"c3", action, resource)
when { resource.destructiveHint && !resource.idempotentHint };
@id("k-open")
@approval("required")
forbid (principal, action, resource)
when { resource.openWorldHint && context.riskTags.contains("pii") }
unless { context has approval && context.approval.granted && context.approval.callId == context.callId };
@id("k-risk")
forbid (principal, action, resource)
when { resource.riskTags.contains("danger") };
@id("k-name")
forbid (principal, action, resource)
when { resource.name like "*secret*" };
@id("k-purpose")
forbid (principal, action, resource)
when { context has task && context.task.purpose == "forbidden" };
@id("k-agents")
forbid (principal, action, resource)
when { context.chain.agents.contains(Broker::Agent::"spiffe://evil.org/x") };
@id("k-kind")
forbid (principal, action == Broker::Action::"get_prompt", resource)
when { context.chain.initiatorKind == "workload" };
@id("k-err")
forbid (principal, action, resource in Broker::ToolServer::"s4")
when { context.args has amount && context.args.amount * 4611686018427387904 > 1 };
@id("k-shadow-forbid")
@mode("log_only")
forbid (principal in Broker::AgentClass::"c2", action, resource)
when { resource.openWorldHint };
@id("k-shadow-permit")
@mode("log_only")
permit (principal, action, resource in Broker::ToolServer::"s3");
@id("k-shadow-err")
@mode("log_only")
forbid (principal is Broker::Workload, action, resource)
when { context.args has amount && context.args.amount * 4611686018427387904 > 1 };
`

// keyCandidatePolicies are a candidate Set's extra policies.
const keyCandidatePolicies = `
@id("c-deny-s2")
forbid (principal, action, resource in Broker::ToolServer::"s2");
`

// keyRandom draws request fields from small pools, so that random requests
// repeat and differ from each other in a few fields.
type keyRandom struct{ rng *rand.Rand }

func (k keyRandom) subset(prefix string, n int) []string {
	var out []string
	for i := range n {
		if k.rng.IntN(2) == 0 {
			out = append(out, fmt.Sprintf("%s%d", prefix, i))
		}
	}
	if len(out) > 1 && k.rng.IntN(4) == 0 {
		slices.Reverse(out)
	}
	return out
}

func (k keyRandom) pick(ss ...string) string { return ss[k.rng.IntN(len(ss))] }

func (k keyRandom) initiator() Initiator {
	in := Initiator{Kind: InitiatorUser, ID: k.pick("u0", "u1", "u2"), Tenant: k.pick("", "", "acme", "beta"), Groups: k.subset("g", 3)}
	if k.rng.IntN(4) == 0 {
		in.Kind, in.ID = InitiatorWorkload, k.pick("spiffe://example.org/w0", "u1")
		in.Groups = append(in.Groups, "g2")
	}
	switch k.rng.IntN(3) {
	case 0:
		l := int64(100)
		in.SpendLimit = &l
	case 1:
		l := int64(10000)
		in.SpendLimit = &l
	}
	return in
}

func (k keyRandom) agent() Agent {
	return Agent{ID: k.pick("spiffe://example.org/a0", "spiffe://example.org/a1", "spiffe://example.org/a3", "spiffe://evil.org/x", "a-local"),
		Classes: k.subset("c", 4)}
}

func (k keyRandom) chain() []Agent {
	var out []Agent
	for range 1 + k.rng.IntN(3) {
		out = append(out, k.agent())
	}
	return out
}

func (k keyRandom) target(action Action) Target {
	s, n := k.pick("s1", "s2", "s3", "s4"), k.pick("t1", "t2", "t2", "secret")
	t := Target{Kind: action.targetKind(), Server: s, Name: n, Exposed: s + "__" + n,
		ReadOnly: k.rng.IntN(2) == 0, Destructive: k.rng.IntN(2) == 0, Idempotent: k.rng.IntN(2) == 0, OpenWorld: k.rng.IntN(2) == 0,
		RiskTags: k.subset("r", 2), Tenant: k.pick("", "", "acme", "beta"), Unpinned: k.rng.IntN(8) == 0}
	if t.Kind == "" {
		t.Kind = TargetTool
	}
	if k.rng.IntN(6) == 0 {
		t.Exposed = "x__" + n
	}
	if k.rng.IntN(4) == 0 {
		t.RiskTags = append(t.RiskTags, k.pick("pii", "danger", "shell"))
	}
	return t
}

func (k keyRandom) task() *Task {
	if k.rng.IntN(3) == 0 {
		return nil
	}
	return &Task{ID: k.pick("task-1", "task-open"), AllowedTools: k.tools(),
		ExpiresAt: testNow.Add(time.Duration(k.rng.IntN(4)-1) * time.Hour), Purpose: k.pick("p", "p", "forbidden")}
}

func (k keyRandom) tools() []string {
	tools := []string{"broker__task"}
	for _, s := range []string{"s1", "s2", "s3", "s4", "x"} {
		for _, n := range []string{"t1", "t2", "secret"} {
			if k.rng.IntN(4) > 0 {
				tools = append(tools, s+"__"+n)
			}
		}
	}
	return tools
}

// perCall fills the fields the cache does not key on.
func (k keyRandom) perCall(r *Request) {
	r.CallID = k.pick("call-0", "call-1")
	r.Now = testNow.Add(time.Duration(k.rng.IntN(3)) * time.Minute)
	r.Args = map[string]any{}
	if k.rng.IntN(3) > 0 {
		r.Args["amount"] = int64(k.rng.IntN(20000))
	}
	r.Approval = nil
	if k.rng.IntN(4) == 0 {
		r.Approval = &Approval{Granted: k.rng.IntN(2) == 0, Approver: "bob", CallID: k.pick("call-0", "call-1")}
	}
	r.RiskTags = nil
	if k.rng.IntN(2) == 0 {
		r.RiskTags = []string{"pii"}
	}
}

var keyActions = []Action{ActionCallTool, ActionCallTool, ActionCallTool, ActionListTools, ActionReadResource, ActionGetPrompt, ActionElicit, ActionSample}

func (k keyRandom) request() Request {
	a := keyActions[k.rng.IntN(len(keyActions))]
	r := Request{Action: a, Initiator: k.initiator(), Chain: k.chain(), Target: k.target(a), Task: k.task()}
	k.perCall(&r)
	return r
}

// mutate changes one keyed field of r (in fresh slices: r's may be shared).
func (k keyRandom) mutate(r Request) Request {
	r.Chain = slices.Clone(r.Chain)
	switch k.rng.IntN(14) {
	case 0:
		r.Initiator.Groups = k.subset("g", 3)
	case 1:
		r.Initiator.Tenant = k.pick("", "acme", "beta")
	case 2:
		r.Initiator.SpendLimit = k.initiator().SpendLimit
	case 3:
		r.Initiator.ID = k.pick("u0", "u1", "u2")
	case 4:
		i := k.rng.IntN(len(r.Chain))
		r.Chain[i].Classes = k.subset("c", 4)
	case 5:
		i := k.rng.IntN(len(r.Chain))
		r.Chain[i].ID = k.agent().ID
	case 6:
		r.Chain = append(r.Chain, k.agent())
	case 7:
		r.Target.Unpinned = !r.Target.Unpinned
	case 8:
		r.Target.ReadOnly, r.Target.Destructive, r.Target.Idempotent, r.Target.OpenWorld = k.rng.IntN(2) == 0, k.rng.IntN(2) == 0, k.rng.IntN(2) == 0, k.rng.IntN(2) == 0
	case 9:
		r.Target.RiskTags = append(slices.Clip(r.Target.RiskTags), k.pick("pii", "danger", "shell"))
	case 10:
		r.Target.Tenant = k.pick("", "acme", "beta")
	case 11:
		r.Target.Exposed = k.pick("s1__t1", "s2__secret", "x__t2")
	case 12: // same task ID, other tools
		if r.Task != nil {
			t := *r.Task
			t.AllowedTools = k.tools()
			if k.rng.IntN(2) == 0 {
				t.AllowedTools = t.AllowedTools[:len(t.AllowedTools)/2]
			}
			r.Task = &t
		} else {
			r.Task = k.task()
		}
	case 13:
		if r.Task != nil {
			t := *r.Task
			t.Purpose, t.ExpiresAt = k.pick("p", "forbidden"), testNow.Add(time.Duration(k.rng.IntN(3)-1)*time.Hour)
			r.Task = &t
		}
	}
	return r
}

// uncached returns a copy of s that builds every request afresh.
func uncached(s *Set) *Set {
	c := *s
	c.cache = nil
	return &c
}

func keySets(t testing.TB) (set, cand *Set) {
	t.Helper()
	set = mustCompile(t, append(Baseline(), Source{Name: "k.cedar", Text: []byte(keyPolicies)})...)
	cand = mustCompile(t, append(Baseline(), Source{Name: "k.cedar", Text: []byte(keyPolicies + keyCandidatePolicies)})...)
	return set, cand
}

// checkSame decides r with both engines (Decide, Visible, Explain) and fails
// on any difference.
func checkSame(t testing.TB, cached, plain *Engine, r Request) Decision {
	t.Helper()
	got, want := cached.Decide(r), plain.Decide(r)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("request %+v:\ncached   %+v\nuncached %+v", r, got, want)
	}
	if g, w := cached.Visible(r), plain.Visible(r); g != w {
		t.Fatalf("request %+v: Visible cached %v, uncached %v", r, g, w)
	}
	if g, w := cached.Explain(r), plain.Explain(r); !reflect.DeepEqual(g, w) {
		t.Fatalf("request %+v: Explain\ncached   %+v\nuncached %+v", r, g, w)
	}
	return got
}

// TestCacheMatchesUncached: random requests that repeat and differ from each
// other in single keyed fields get the same Decision (every field, shadow and
// candidate included), Visible and Explain from a Set with the request cache
// as from one without, with the normal bounds and with tiny ones (the cache
// resets all the time).
func TestCacheMatchesUncached(t *testing.T) {
	for _, bounds := range [][2]int{{maxCachedStatics, maxCachedTasks}, {7, 3}} {
		t.Run(fmt.Sprintf("bounds=%v", bounds), func(t *testing.T) {
			set, cand := keySets(t)
			set.cache, cand.cache = newReqCache(bounds[0], bounds[1]), newReqCache(bounds[0], bounds[1])
			cached, plain := NewEngine(set), NewEngine(uncached(set))
			cached.SetCandidate(cand)
			plain.SetCandidate(uncached(cand))
			k := keyRandom{rand.New(rand.NewPCG(5, 6))}
			pool := make([]Request, 200)
			for i := range pool {
				pool[i] = k.request()
			}
			n := 6000
			if testing.Short() {
				n = 1000
			}
			outcomes := map[string]int{}
			for range n {
				r := pool[k.rng.IntN(len(pool))]
				if k.rng.IntN(3) == 0 {
					r = k.mutate(r)
				}
				k.perCall(&r)
				d := checkSame(t, cached, plain, r)
				outcomes[string(d.Outcome)+"/"+string(d.ShadowOutcome)+"/"+string(d.Candidate.Outcome)]++
			}
			t.Logf("%d requests: %v; cached statics %d, tasks %d", n, outcomes, len(set.cache.statics), set.cache.nTasks)
			for _, o := range []Outcome{Allow, Deny, NeedsApproval} {
				found := false
				for k := range outcomes {
					found = found || strings.HasPrefix(k, string(o)+"/")
				}
				if !found {
					t.Errorf("no %s decision: the comparison proves little", o)
				}
			}
			if len(set.cache.statics) > bounds[0] || set.cache.nTasks > bounds[1] {
				t.Errorf("cache over its bounds: %d statics, %d tasks", len(set.cache.statics), set.cache.nTasks)
			}
		})
	}
}

// keyBase is allowed under keyPolicies; every keyVariants entry changes one
// keyed field and changes the decision.
func keyBase() Request {
	limit := int64(10000)
	return Request{
		CallID: "call-0", Action: ActionCallTool, Now: testNow, Args: map[string]any{"amount": int64(500)},
		Initiator: Initiator{Kind: InitiatorUser, ID: "u0", Tenant: "acme", Groups: []string{"g0"}, SpendLimit: &limit},
		Chain:     []Agent{{ID: "spiffe://example.org/a0", Classes: []string{"c0"}}},
		Target: Target{Kind: TargetTool, Server: "s1", Name: "t1", Exposed: "s1__t1",
			ReadOnly: true, Idempotent: true, Tenant: "acme"},
		Task: &Task{ID: "task-1", AllowedTools: []string{"s1__t1"}, ExpiresAt: testNow.Add(time.Hour), Purpose: "p"},
	}
}

var keyVariants = []struct {
	name string
	f    func(r *Request)
}{
	{"groups", func(r *Request) { r.Initiator.Groups = []string{"g1"} }},
	{"no groups", func(r *Request) { r.Initiator.Groups = nil }},
	{"initiator kind", func(r *Request) { r.Initiator.Kind = InitiatorWorkload }},
	{"initiator id", func(r *Request) { r.Initiator.ID = "u2" }},
	{"initiator tenant", func(r *Request) { r.Initiator.Tenant = "beta" }},
	{"spend limit", func(r *Request) { l := int64(100); r.Initiator.SpendLimit = &l }},
	{"classes", func(r *Request) { r.Chain = []Agent{{ID: r.Chain[0].ID, Classes: []string{"c3"}}} }},
	{"more classes", func(r *Request) { r.Chain = []Agent{{ID: r.Chain[0].ID, Classes: []string{"c0", "c1"}}} }},
	{"agent id", func(r *Request) { r.Chain = []Agent{{ID: "spiffe://evil.org/x", Classes: []string{"c0"}}} }},
	{"longer chain", func(r *Request) {
		r.Chain = []Agent{r.Chain[0], {ID: "spiffe://example.org/a1", Classes: []string{"c3"}}}
	}},
	{"unpinned", func(r *Request) { r.Target.Unpinned = true }},
	{"hints", func(r *Request) { r.Target.Destructive, r.Target.OpenWorld = true, true }},
	{"read only", func(r *Request) { r.Target.ReadOnly = false }},
	{"risk tags", func(r *Request) { r.Target.RiskTags = []string{"danger"} }},
	{"target tenant", func(r *Request) { r.Target.Tenant = "beta" }},
	{"exposed name", func(r *Request) { r.Target.Exposed = "s1__secret" }},
	{"server", func(r *Request) { r.Target.Server = "s4" }},
	{"name", func(r *Request) { r.Target.Name = "t2" }},
	{"task tools, same task id", func(r *Request) {
		r.Task = &Task{ID: "task-1", AllowedTools: []string{"s1__t2"}, ExpiresAt: r.Task.ExpiresAt, Purpose: "p"}
	}},
	{"task id", func(r *Request) { t := *r.Task; t.ID = "task-open"; r.Task = &t }},
	{"task purpose", func(r *Request) { t := *r.Task; t.Purpose = "forbidden"; r.Task = &t }},
	{"task expired", func(r *Request) { t := *r.Task; t.ExpiresAt = testNow.Add(-time.Hour); r.Task = &t }},
	{"no task", func(r *Request) { r.Task = nil; r.Target.ReadOnly = false; r.Chain[0].Classes = []string{"c1", "c3"} }},
}

// TestCacheKeyVariants: a request that differs from a cached one in a single
// keyed field gets its own decision, never the cached request's.
func TestCacheKeyVariants(t *testing.T) {
	set, _ := keySets(t)
	cached, plain := NewEngine(set), NewEngine(uncached(set))
	base := checkSame(t, cached, plain, keyBase())
	if base.Outcome != Allow {
		t.Fatalf("base: %s %+v", base.Outcome, base.Passes)
	}
	for _, v := range keyVariants {
		t.Run(v.name, func(t *testing.T) {
			r := keyBase()
			v.f(&r)
			d := checkSame(t, cached, plain, r)
			if reflect.DeepEqual(d, base) {
				t.Errorf("variant decided like the base request: the test proves nothing (%+v)", d)
			}
			// The base request still gets its own decision.
			if again := checkSame(t, cached, plain, keyBase()); !reflect.DeepEqual(again, base) {
				t.Errorf("base after variant: %+v, want %+v", again, base)
			}
		})
	}
	// Fields that are not keyed vary on one cached entry.
	t.Run("per-call fields", func(t *testing.T) {
		r := keyBase()
		l := int64(100)
		r.Initiator.SpendLimit = &l
		if d := checkSame(t, cached, plain, r); d.Outcome != Deny {
			t.Errorf("call_tool over the spend limit: %s", d.Outcome)
		}
		r.Action = ActionListTools
		if d := checkSame(t, cached, plain, r); d.Outcome != Allow {
			t.Errorf("list_tools over the spend limit: %s", d.Outcome)
		}
		r.Action, r.Args = ActionCallTool, map[string]any{"amount": int64(50)}
		if d := checkSame(t, cached, plain, r); d.Outcome != Allow {
			t.Errorf("call_tool under the spend limit: %s", d.Outcome)
		}
		r.Now = testNow.Add(2 * time.Hour)
		if d := checkSame(t, cached, plain, r); d.Outcome != Deny {
			t.Errorf("call_tool after the task expired: %s", d.Outcome)
		}
		r.Now, r.RiskTags, r.Target.OpenWorld = testNow, []string{"pii"}, true
		if d := checkSame(t, cached, plain, r); d.Outcome != NeedsApproval {
			t.Errorf("pii to an open-world tool: %s", d.Outcome)
		}
		r.Approval = &Approval{Granted: true, Approver: "bob", CallID: r.CallID}
		if d := checkSame(t, cached, plain, r); d.Outcome != Allow {
			t.Errorf("approved: %s", d.Outcome)
		}
	})
}

// TestCacheSlicesChangedInPlace: the caller may reuse and change the slices
// of a request after a decision (same backing array, same length).
func TestCacheSlicesChangedInPlace(t *testing.T) {
	set, _ := keySets(t)
	cached, plain := NewEngine(set), NewEngine(uncached(set))
	r := keyBase()
	base := checkSame(t, cached, plain, r)
	if base.Outcome != Allow {
		t.Fatalf("base: %s", base.Outcome)
	}
	for _, change := range []func(){
		func() { r.Task.AllowedTools[0] = "s1__t2" },
		func() { r.Initiator.Groups[0] = "g2" },
		func() { r.Chain[0].Classes[0] = "c3" },
	} {
		r = keyBase()
		checkSame(t, cached, plain, r)
		change()
		if d := checkSame(t, cached, plain, r); reflect.DeepEqual(d, base) {
			t.Errorf("changed in place, decided as before: %+v", d)
		}
	}
	// Equal content in another slice: the same record (two entries at most).
	r = keyBase()
	r.Task.AllowedTools = slices.Clone(r.Task.AllowedTools)
	if d := checkSame(t, cached, plain, r); d.Outcome != Allow {
		t.Errorf("equal tools in another slice: %s", d.Outcome)
	}
}

// mutateField returns a value different from v (of the kinds request fields
// have) and false for a kind it does not know.
func mutateField(v reflect.Value) (reflect.Value, bool) {
	out := reflect.New(v.Type()).Elem()
	switch {
	case v.Kind() == reflect.String:
		out.SetString(v.String() + "x")
	case v.Kind() == reflect.Bool:
		out.SetBool(!v.Bool())
	case v.Type() == reflect.TypeFor[[]string]():
		out.Set(reflect.ValueOf(append(slices.Clone(v.Interface().([]string)), "x")))
	case v.Type() == reflect.TypeFor[*int64]():
		if v.IsNil() {
			n := int64(1)
			out.Set(reflect.ValueOf(&n))
		} else {
			n := *v.Interface().(*int64) + 1
			out.Set(reflect.ValueOf(&n))
		}
	case v.Type() == reflect.TypeFor[time.Time]():
		out.Set(reflect.ValueOf(v.Interface().(time.Time).Add(time.Millisecond)))
	default:
		return out, false
	}
	return out, true
}

// TestCacheKeyCoversFields changes every field of Initiator, Agent, Target
// and Task in turn (found by reflection, so that a field added later is
// covered or fails this test) and checks that the static key, or the task
// entry, tells the changed request apart; and that Request has no field the
// cache does not know about.
func TestCacheKeyCoversFields(t *testing.T) {
	fresh := func() Request {
		r := keyBase()
		r.Target.RiskTags = []string{"pii"}
		r.Task.AllowedTools = []string{"s1__t1", "s1__t2", "s2__t1"}
		return r
	}
	base := fresh()
	baseKey := string(appendStaticKey(nil, &base))
	base.Task.AllowedTools = []string{"s1__t1", "s1__t2", "s2__t1"}
	baseTask := *base.Task
	sameTask := func(t *Task) bool {
		return taskKeyOf(t) == taskKeyOf(&baseTask) && slices.Equal(t.AllowedTools, baseTask.AllowedTools)
	}
	if !sameTask(base.Task) {
		t.Fatal("a task differs from itself")
	}
	structs := []struct {
		name  string
		field func(r *Request) reflect.Value
	}{
		{"Initiator", func(r *Request) reflect.Value { return reflect.ValueOf(&r.Initiator).Elem() }},
		{"Agent", func(r *Request) reflect.Value { return reflect.ValueOf(&r.Chain[0]).Elem() }},
		{"Target", func(r *Request) reflect.Value { return reflect.ValueOf(&r.Target).Elem() }},
		{"Task", func(r *Request) reflect.Value { return reflect.ValueOf(r.Task).Elem() }},
	}
	for _, st := range structs {
		typ := st.field(&base).Type()
		for i := range typ.NumField() {
			name := st.name + "." + typ.Field(i).Name
			r := fresh()
			f := st.field(&r).Field(i)
			nv, ok := mutateField(f)
			if !ok {
				t.Errorf("%s: a field of type %s: teach appendStaticKey (or taskEntry) and this test about it", name, f.Type())
				continue
			}
			f.Set(nv)
			if st.name == "Task" {
				if sameTask(r.Task) {
					t.Errorf("%s changed, the task cache would take it for the same task", name)
				}
				if f.Type() == reflect.TypeFor[[]string]() {
					r := fresh()
					r.Task.AllowedTools[1] = "x"
					if sameTask(r.Task) {
						t.Errorf("%s changed in the middle, the task cache would take it for the same task", name)
					}
				}
			} else if string(appendStaticKey(nil, &r)) == baseKey {
				t.Errorf("%s changed, same static key", name)
			}
		}
	}
	// Request's other fields vary per call; Task has its own cache.
	known := map[string]bool{"Initiator": true, "Chain": true, "Target": true, "Task": true,
		"CallID": true, "Action": true, "Args": true, "Now": true, "Approval": true, "RiskTags": true}
	for f := range reflect.TypeFor[Request]().Fields() {
		if !known[f.Name] {
			t.Errorf("Request.%s: decide whether the request cache must key on it", f.Name)
		}
	}
}

// TestCacheTaskSameKey: tasks that differ only in the middle of their tools
// (same taskKey) get their own records.
func TestCacheTaskSameKey(t *testing.T) {
	set, _ := keySets(t)
	a, b := keyBase().Task, keyBase().Task
	a.AllowedTools = []string{"s1__t1", "s1__t2", "s2__t1"}
	b.AllowedTools = []string{"s1__t1", "s3__t2", "s2__t1"}
	if taskKeyOf(a) != taskKeyOf(b) {
		t.Fatal("the test wants equal task keys")
	}
	for range 2 {
		for _, task := range []*Task{a, b} {
			if got, want := set.taskValue(task), taskRecord(task); !reflect.DeepEqual(got, want) {
				t.Errorf("task value %v, want %v", got, want)
			}
		}
	}
	if n := len(set.cache.tasks[taskKeyOf(a)]); n != 2 || set.cache.nTasks != 2 {
		t.Errorf("%d entries under the key, %d in all; want 2, 2", n, set.cache.nTasks)
	}
}

// TestCacheConcurrent decides the same requests from many goroutines through
// a cache that resets all the time; run with -race.
func TestCacheConcurrent(t *testing.T) {
	set, cand := keySets(t)
	set.cache = newReqCache(5, 2)
	plain := NewEngine(uncached(set))
	plain.SetCandidate(uncached(cand))
	k := keyRandom{rand.New(rand.NewPCG(9, 10))}
	reqs := make([]Request, 40)
	want := make([]Decision, len(reqs))
	for i := range reqs {
		reqs[i] = k.request()
		want[i] = plain.Decide(reqs[i])
	}
	eng := NewEngine(set)
	eng.SetCandidate(cand)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 11))
			for range 300 {
				i := rng.IntN(len(reqs))
				if d := eng.Decide(reqs[i]); !reflect.DeepEqual(d, want[i]) {
					t.Errorf("request %d: %+v, want %+v", i, d, want[i])
					return
				}
				eng.Visible(reqs[i])
			}
		})
	}
	wg.Wait()
}

// BenchmarkRequestCache: what a hit costs against what it saves.
func BenchmarkRequestCache(b *testing.B) {
	set := scaleSet(b, 50)
	r := scaleRequest(2)
	for _, n := range []int{3, 500} {
		tools := make([]string, n)
		for i := range tools {
			tools[i] = fmt.Sprintf("server%d__tool_number_%d", i%20, i)
		}
		r.Task = &Task{ID: "task_1", AllowedTools: tools, ExpiresAt: testNow.Add(time.Hour), Purpose: "bench"}
		b.Run(fmt.Sprintf("tools=%d/key", n), func(b *testing.B) {
			b.ReportAllocs()
			var buf [512]byte
			for b.Loop() {
				appendStaticKey(buf[:0], &r)
			}
		})
		b.Run(fmt.Sprintf("tools=%d/static-hit", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				set.static(&r)
			}
		})
		b.Run(fmt.Sprintf("tools=%d/static-build", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				set.buildStatic(&r)
			}
		})
		b.Run(fmt.Sprintf("tools=%d/task-hit", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				set.taskValue(r.Task)
			}
		})
		equal := *r.Task
		equal.AllowedTools = slices.Clone(tools)
		b.Run(fmt.Sprintf("tools=%d/task-hit-equal-copy", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				set.taskValue(&equal)
			}
		})
		b.Run(fmt.Sprintf("tools=%d/task-build", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				taskRecord(r.Task)
			}
		})
		for _, cached := range []bool{true, false} {
			eng := NewEngine(set)
			if !cached {
				eng = NewEngine(uncached(set))
			}
			b.Run(fmt.Sprintf("tools=%d/decide/cached=%v", n, cached), func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					eng.Decide(r)
				}
			})
		}
	}
}
