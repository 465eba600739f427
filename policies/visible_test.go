package policies

import (
	"context"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cedar-policy/cedar-go"
	"github.com/cedar-policy/cedar-go/types"
	"github.com/cedar-policy/cedar-go/x/exp/batch"
)

// referenceVisible is Visible as it was before its answers were cached and
// before it split the candidates: every candidate of a pass through batch
// evaluation, nothing from the Set's cache.
func referenceVisible(s *Set, req Request) bool {
	action := ActionCallTool
	switch req.Target.Kind {
	case TargetResource:
		action = ActionReadResource
	case TargetPrompt:
		action = ActionGetPrompt
	}
	req.Approval = nil
	if validateRequest(&req, action) != nil {
		return false
	}
	st := s.buildStatic(&req)
	ents := overlay{req: st.ents, base: s.model.actions}
	parts := newContextParts(&req, st.chain, taskRecord(req.Task), batch.Ignore())
	actUID := actionUID(action)
	eval := func(i int, p types.EntityUID, ctx types.Value) (types.Decision, types.Diagnostic) {
		var res types.Decision
		var diag types.Diagnostic
		n := 0
		err := batch.Authorize(context.Background(), st.cands[i], ents, batch.Request{
			Principal: p, Action: actUID, Resource: st.resource, Context: ctx,
		}, func(r batch.Result) error {
			n++
			res, diag = r.Decision, r.Diagnostic
			return nil
		})
		if err != nil || n != 1 {
			return cedar.Deny, types.Diagnostic{Errors: []types.DiagnosticError{{Message: "batch"}}}
		}
		return res, diag
	}
	passes, results, allowed := runPasses(st.principals, st.names, parts.record(nil), eval)
	if allowed {
		return true
	}
	if !s.approvalCurable(passes, results) {
		return false
	}
	hyp := &Approval{Granted: true, CallID: req.CallID}
	_, _, ok := runPasses(st.principals, st.names, parts.record(hyp), eval)
	return ok
}

// visiblePolicies add to keyPolicies what Visible's key and its split of the
// candidates must get right: a per-call field (callId) and per-call risk
// tags without an approval, an args-free policy that errors, a permit whose
// only condition reads args, forbids that read args next to args-free ones
// on the same target (satisfied before they reach args, one of them
// curable by an approval, and one erring before), and a comparison of now with the expiry that tells now == expiry
// from now < expiry.
const visiblePolicies = `
@id("v-callid")
forbid (principal, action, resource in Broker::ToolServer::"s1")
when { context.callId == "call-bad" };
@id("v-risk")
forbid (principal, action, resource in Broker::ToolServer::"s1")
when { context.riskTags.contains("danger") };
@id("v-free-err")
forbid (principal, action, resource in Broker::ToolServer::"s3")
when { context.chain.depth * 4611686018427387904 > 4611686018427387904 };
@id("v-args-permit")
permit (principal is Broker::Agent, action, resource in Broker::ToolServer::"s3")
when { context.args has name && context.args.name == "x" };
@id("v-args-forbid")
forbid (principal, action, resource == Broker::Tool::"s1/t2")
unless { context.args has amount && context.args.amount < 100 };
@id("v-args-forbid-fires")
forbid (principal, action, resource == Broker::Tool::"s2/t2")
when { resource.destructiveHint || context.args has amount };
@id("v-args-approval")
@approval("required")
forbid (principal, action, resource == Broker::Tool::"s3/t2")
when { resource.openWorldHint || context.args has amount }
unless { context has approval && context.approval.granted && context.approval.callId == context.callId };
@id("v-args-err")
forbid (principal, action, resource in Broker::ToolServer::"s2")
when { context.chain.depth * 4611686018427387904 > 1 && context.args has amount };
@id("v-expiry-inclusive")
forbid (principal, action, resource in Broker::ToolServer::"s2")
when { context has task && context.task.expiresAt <= context.now };
`

func visibleSet(t testing.TB, extra ...string) *Set {
	t.Helper()
	src := keyPolicies + visiblePolicies
	for _, e := range extra {
		src += e
	}
	return mustCompile(t, append(Baseline(), Source{Name: "v.cedar", Text: []byte(src)})...)
}

// visiblePerCall varies what Visible's key holds beyond the static key and
// the task: the call ID, the per-call risk tags and the clock (around the
// task's expiry, to the millisecond), and what it ignores (args, approval).
func (k keyRandom) visiblePerCall(r *Request) {
	k.perCall(r)
	r.CallID = k.pick("call-0", "call-1", "call-bad")
	if k.rng.IntN(4) == 0 {
		r.RiskTags = []string{"danger"}
	}
	if r.Task != nil && k.rng.IntN(3) == 0 {
		r.Now = r.Task.ExpiresAt.Add(time.Duration(k.rng.IntN(3)-1) * time.Millisecond)
	}
}

// TestVisibleMatchesReference: random requests that repeat, differ in single
// fields and vary per call get the same Visible from the cached Set (normal
// and tiny bounds), from the Set without cache, and from referenceVisible.
func TestVisibleMatchesReference(t *testing.T) {
	set := visibleSet(t)
	if set.visNow != nowVsExpiry {
		t.Fatalf("visNow = %d, want nowVsExpiry (the baseline compares now with the expiry)", set.visNow)
	}
	tiny := *set
	tiny.cache = newReqCache(7, 3)
	tiny.cache.maxVis, tiny.cache.maxVisBytes = 5, 2000
	engines := map[string]*Engine{"cached": NewEngine(set), "tiny": NewEngine(&tiny), "uncached": NewEngine(uncached(set))}
	k := keyRandom{rand.New(rand.NewPCG(7, 8))}
	// keyRandom's requests are mostly denied: draw a pool half visible.
	var pool []Request
	for nVis, nHid := 0, 0; nVis < 150 || nHid < 150; {
		r := k.request()
		k.visiblePerCall(&r)
		if referenceVisible(set, r) {
			if nVis++; nVis > 150 {
				continue
			}
		} else if nHid++; nHid > 150 {
			continue
		}
		pool = append(pool, r)
	}
	n := 8000
	if testing.Short() {
		n = 2000
	}
	seen := map[bool]int{}
	hits := 0
	for range n {
		r := pool[k.rng.IntN(len(pool))]
		if k.rng.IntN(3) == 0 {
			r = k.mutate(r)
		}
		k.visiblePerCall(&r)
		want := referenceVisible(set, r)
		seen[want]++
		before := len(set.cache.vis)
		for name, eng := range engines {
			if got := eng.Visible(r); got != want {
				t.Fatalf("%s: Visible = %v, reference %v for %+v (task %+v)", name, got, want, r, r.Task)
			}
		}
		if len(set.cache.vis) == before {
			hits++
		}
	}
	t.Logf("%d requests: visible %d, hidden %d; %d answered from the cache (%d entries, %d key bytes)",
		n, seen[true], seen[false], hits, len(set.cache.vis), set.cache.visBytes)
	if seen[true] < n/10 || seen[false] < n/10 {
		t.Errorf("visible %d, hidden %d: the comparison proves little", seen[true], seen[false])
	}
	if hits < n/4 {
		t.Errorf("%d of %d from the cache: the comparison proves little about cached answers", hits, n)
	}
	if c := tiny.cache; len(c.vis) > c.maxVis || c.visBytes > c.maxVisBytes {
		t.Errorf("tiny cache over its bounds: %d entries, %d bytes", len(c.vis), c.visBytes)
	}
}

// visibleBase is visible; every visibleVariants entry changes one field that
// Visible's key holds and hides the target.
func visibleBase() Request {
	r := keyBase()
	r.Args = nil
	return r
}

var visibleVariants = append(slices.Clip(keyVariants), []struct {
	name string
	f    func(r *Request)
}{
	{"call id", func(r *Request) { r.CallID = "call-bad" }},
	{"per-call risk tags", func(r *Request) { r.RiskTags = []string{"danger"} }},
	{"now past the expiry", func(r *Request) { r.Now = r.Task.ExpiresAt.Add(time.Millisecond) }},
	{"expiry at now", func(r *Request) { t := *r.Task; t.ExpiresAt = r.Now.Add(-time.Millisecond); r.Task = &t }},
}...)

// TestVisibleKeyVariants: a request that differs from a cached one in a single
// keyed field gets its own answer; fields Visible ignores or that cannot
// change it share the cached one.
func TestVisibleKeyVariants(t *testing.T) {
	set := visibleSet(t)
	eng := NewEngine(set)
	check := func(r Request) bool {
		t.Helper()
		got, want := eng.Visible(r), referenceVisible(set, r)
		if got != want {
			t.Fatalf("Visible = %v, reference %v for %+v", got, want, r)
		}
		return got
	}
	if !check(visibleBase()) {
		t.Fatal("base request hidden")
	}
	changed := 0
	for _, v := range visibleVariants {
		r := visibleBase()
		v.f(&r)
		if !check(r) {
			changed++
		}
		if !check(visibleBase()) {
			t.Fatalf("base hidden after %s", v.name)
		}
	}
	// keyVariants change decisions, not all of them visibility (an
	// approval-curable deny stays visible, a spend limit only reads args).
	if changed < len(visibleVariants)/2 {
		t.Errorf("%d of %d variants hide the target: the test proves little", changed, len(visibleVariants))
	}
	n := len(set.cache.vis)
	for _, f := range []func(r *Request){
		func(r *Request) { r.Args = map[string]any{"amount": int64(1 << 40)} },
		func(r *Request) { r.Approval = &Approval{Granted: false, CallID: r.CallID} },
		func(r *Request) { r.Action = ActionElicit },
		func(r *Request) { r.Now = r.Now.Add(time.Minute) },                  // still before the expiry
		func(r *Request) { r.Now = r.Task.ExpiresAt.Add(-time.Millisecond) }, // just before it
	} {
		r := visibleBase()
		f(&r)
		if !check(r) {
			t.Errorf("hidden: %+v", r)
		}
	}
	if len(set.cache.vis) != n {
		t.Errorf("fields Visible does not depend on made %d new entries", len(set.cache.vis)-n)
	}
}

// TestVisibleSplit: the halves of the split candidates each decide alone
// (free = policies that cannot read args, batch = the others).
func TestVisibleSplit(t *testing.T) {
	set := visibleSet(t)
	agentOnly := func(r *Request) {
		r.Task = nil
		r.Chain = []Agent{{ID: "spiffe://example.org/a1"}}
		r.Target = Target{Kind: TargetTool, Server: "s3", Name: "t1", Exposed: "s3__t1", ReadOnly: true}
	}
	for _, tt := range []struct {
		name string
		f    func(r *Request)
		want bool
	}{
		{"the agent's only permit is in the batch half", agentOnly, true},
		{"a curable forbid in the batch half", func(r *Request) {
			agentOnly(r)
			r.Target.Name, r.Target.Exposed, r.Target.OpenWorld = "t2", "s3__t2", true
		}, true},
		{"a forbid in the batch half", func(r *Request) {
			r.Target.Server, r.Target.Name, r.Target.Exposed, r.Target.Destructive = "s2", "t2", "s2__t2", true
			r.Task.AllowedTools = []string{"s2__t2"}
		}, false},
		{"an error in the batch half", func(r *Request) {
			r.Target.Server, r.Target.Exposed = "s2", "s2__t1"
			r.Task.AllowedTools = []string{"s2__t1"}
			r.Chain = append(r.Chain, Agent{ID: "spiffe://example.org/a0", Classes: []string{"c0"}})
		}, false},
		{"an error in the free half", func(r *Request) {
			agentOnly(r)
			r.Chain = append(r.Chain, Agent{ID: "spiffe://example.org/a0", Classes: []string{"c0"}})
		}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := visibleBase()
			tt.f(&r)
			ref := referenceVisible(set, r)
			if ref != tt.want {
				t.Fatalf("reference says %v, the case wants %v: fix the case", ref, tt.want)
			}
			if got := NewEngine(set).Visible(r); got != ref {
				t.Errorf("Visible = %v, reference %v", got, ref)
			}
			if got := NewEngine(uncached(set)).Visible(r); got != ref {
				t.Errorf("uncached Visible = %v, reference %v", got, ref)
			}
		})
	}
}

// TestVisibleKeyCoversRequest: every field of Request either changes
// Visible's key (static key + appendVisibleKey) or is one Visible ignores;
// a field added later fails here until it is classified.
func TestVisibleKeyCoversRequest(t *testing.T) {
	set := visibleSet(t)
	ignored := map[string]bool{"Action": true, "Args": true, "Approval": true}
	key := func(r *Request) string {
		return string(set.appendVisibleKey(appendStaticKey(nil, r), r))
	}
	fresh := func() Request {
		r := visibleBase()
		r.RiskTags = []string{"pii"}
		return r
	}
	base := fresh()
	baseKey := key(&base)
	for _, f := range reflect.VisibleFields(reflect.TypeFor[Request]()) {
		r := fresh()
		v := reflect.ValueOf(&r).Elem().FieldByIndex(f.Index)
		switch {
		case ignored[f.Name]:
			continue
		case f.Name == "Now": // only through the comparison with the expiry
			r.Now = r.Task.ExpiresAt.Add(time.Millisecond)
		case f.Name == "Task":
			r.Task = nil
		case f.Name == "Chain":
			r.Chain = append(r.Chain, r.Chain[0])
		case f.Name == "Initiator" || f.Name == "Target": // field by field in TestCacheKeyCoversFields
			continue
		default:
			nv, ok := mutateField(v)
			if !ok {
				t.Errorf("Request.%s (%s): decide whether Visible's key must hold it", f.Name, f.Type)
				continue
			}
			v.Set(nv)
		}
		if key(&r) == baseKey {
			t.Errorf("Request.%s changed, same Visible key", f.Name)
		}
	}
	// Task fields, one at a time (the whole task is keyed).
	tv := reflect.ValueOf(base.Task).Elem()
	for i := range tv.NumField() {
		r := fresh()
		task := *r.Task
		r.Task = &task
		fv := reflect.ValueOf(&task).Elem().Field(i)
		nv, ok := mutateField(fv)
		if !ok {
			t.Errorf("Task.%s: teach appendVisibleKey and this test about it", tv.Type().Field(i).Name)
			continue
		}
		fv.Set(nv)
		if key(&r) == baseKey {
			t.Errorf("Task.%s changed, same Visible key", tv.Type().Field(i).Name)
		}
	}
}

// TestVisibleReload: an engine swapped to another Set answers from that Set,
// never from the old Set's cache; a recompiled Set starts with an empty one.
func TestVisibleReload(t *testing.T) {
	open := visibleSet(t)
	closed := visibleSet(t, `
@id("v-close-s1")
forbid (principal, action, resource in Broker::ToolServer::"s1");
`)
	eng := NewEngine(open)
	r := visibleBase()
	for range 2 {
		if !eng.Visible(r) {
			t.Fatal("hidden under the open set")
		}
		eng.Swap(closed)
		if eng.Visible(r) {
			t.Fatal("visible under the closed set: a stale answer")
		}
		eng.Swap(open)
	}
	again := visibleSet(t)
	if len(again.cache.vis) != 0 {
		t.Fatalf("a new Set starts with %d cached answers", len(again.cache.vis))
	}
	if len(open.cache.vis) == 0 {
		t.Fatal("the open set cached nothing")
	}
}

// TestVisibleNowDependence: how a Set's policies read context.now decides
// whether (and how) Visible's answers may be cached across clocks.
func TestVisibleNowDependence(t *testing.T) {
	for _, tt := range []struct {
		src  string
		now  nowDep
		args bool
	}{
		{`permit (principal, action, resource);`, nowNone, false},
		{`permit (principal, action, resource) when { context has now && context.callId == "x" };`, nowNone, false},
		{`forbid (principal, action, resource) when { context has task && context.now > context.task.expiresAt };`, nowVsExpiry, false},
		{`forbid (principal, action, resource) when { context.task.expiresAt <= context.now };`, nowVsExpiry, false},
		{`forbid (principal, action, resource) when { context.now == context.task.expiresAt || context.now != context.task.expiresAt || context.now >= context.task.expiresAt || context.now < context.task.expiresAt };`, nowVsExpiry, false},
		{`forbid (principal, action, resource) when { context["now"] > context["task"]["expiresAt"] };`, nowVsExpiry, false},
		{`forbid (principal, action, resource) when { context.now > datetime("2026-01-01") };`, nowOpaque, false},
		{`forbid (principal, action, resource) when { context.now.toTime() > duration("18h") };`, nowOpaque, false},
		{`forbid (principal, action, resource) when { context.now > context.task.expiresAt.offset(duration("1h")) };`, nowOpaque, false},
		{`forbid (principal, action, resource) when { context.now > context.now };`, nowOpaque, false},
		{`forbid (principal, action, resource) when { [context.now].contains(context.task.expiresAt) };`, nowOpaque, false},
		{`forbid (principal, action, resource) when { context == {} };`, nowOpaque, true},
		{`forbid (principal, action, resource) when { context.args has amount };`, nowNone, true},
		{`forbid (principal, action, resource) when { context has args };`, nowNone, true},
		{`permit (principal, action, resource) when { context["args"] == {} };`, nowNone, true},
	} {
		ps, err := cedar.NewPolicyListFromBytes("t.cedar", []byte(tt.src))
		if err != nil || len(ps) != 1 {
			t.Fatalf("%s: %v", tt.src, err)
		}
		u := contextUseOf(ps[0])
		if u.now != tt.now || u.args != tt.args {
			t.Errorf("%s: now %d, args %v; want %d, %v", tt.src, u.now, u.args, tt.now, tt.args)
		}
	}

	// A Set that reads the clock otherwise: answers follow the clock, nothing
	// is cached.
	set := visibleSet(t, `
@id("v-after-ten-thirty")
forbid (principal, action, resource in Broker::ToolServer::"s1")
when { context.now > datetime("2026-11-26T10:30:00Z") };
`)
	if set.visNow != nowOpaque {
		t.Fatalf("visNow = %d, want nowOpaque", set.visNow)
	}
	eng := NewEngine(set)
	r := visibleBase()
	for i, want := range []bool{true, false, true, false} {
		r.Now = testNow.Add(time.Duration(i%2) * time.Hour)
		if got := eng.Visible(r); got != want || got != referenceVisible(set, r) {
			t.Errorf("now %s: Visible %v, want %v", r.Now, got, want)
		}
	}
	if len(set.cache.vis) != 0 {
		t.Errorf("%d answers cached under a clock-dependent policy", len(set.cache.vis))
	}
	// Without the baseline nothing reads the clock: one entry for every clock.
	none := mustCompile(t, Source{Name: "k.cedar", Text: []byte(keyPolicies)})
	if none.visNow != nowNone {
		t.Fatalf("visNow = %d, want nowNone", none.visNow)
	}
	eng = NewEngine(none)
	for i := range 3 {
		r.Now = testNow.Add(time.Duration(i) * 24 * time.Hour)
		if got, want := eng.Visible(r), referenceVisible(none, r); got != want {
			t.Errorf("now %s: Visible %v, reference %v", r.Now, got, want)
		}
	}
	if len(none.cache.vis) != 1 {
		t.Errorf("%d entries, want 1", len(none.cache.vis))
	}
}

// TestVisibleLongKeyNotCached: a task naming many tools (as completions pass
// it) is answered right but not cached.
func TestVisibleLongKeyNotCached(t *testing.T) {
	set := visibleSet(t)
	eng := NewEngine(set)
	r := visibleBase()
	tools := []string{"s1__t1"}
	for i := range 500 {
		tools = append(tools, fmt.Sprintf("server%d__tool_%d", i%20, i))
	}
	r.Task = &Task{ID: "task-1", AllowedTools: tools, ExpiresAt: testNow.Add(time.Hour), Purpose: "p"}
	for range 2 {
		if got, want := eng.Visible(r), referenceVisible(set, r); got != want || !got {
			t.Fatalf("Visible %v, reference %v", got, want)
		}
	}
	if len(set.cache.vis) != 0 {
		t.Errorf("%d entries for a %d-byte key", len(set.cache.vis), len(set.appendVisibleKey(nil, &r)))
	}
}

// TestVisibleConcurrent answers the same requests from many goroutines
// through a cache that resets all the time, and through an engine whose Set
// is swapped meanwhile; run with -race.
func TestVisibleConcurrent(t *testing.T) {
	set := visibleSet(t)
	set.cache = newReqCache(5, 2)
	set.cache.maxVis = 7
	other := visibleSet(t, `
@id("v-close-s1")
forbid (principal, action, resource in Broker::ToolServer::"s1");
`)
	k := keyRandom{rand.New(rand.NewPCG(13, 14))}
	reqs := make([]Request, 60)
	want := make([]bool, len(reqs))
	wantOther := make([]bool, len(reqs))
	for i := range reqs {
		reqs[i] = k.request()
		k.visiblePerCall(&reqs[i])
		want[i] = referenceVisible(set, reqs[i])
		wantOther[i] = referenceVisible(other, reqs[i])
	}
	eng, swapped := NewEngine(set), NewEngine(set)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 15))
			for range 400 {
				i := rng.IntN(len(reqs))
				if got := eng.Visible(reqs[i]); got != want[i] {
					t.Errorf("request %d: %v, want %v", i, got, want[i])
					return
				}
				if got := swapped.Visible(reqs[i]); got != want[i] && got != wantOther[i] {
					t.Errorf("request %d on a swapped engine: %v, neither set's answer", i, got)
					return
				}
			}
		})
	}
	wg.Go(func() {
		for i := range 200 {
			if i%2 == 0 {
				swapped.Swap(other)
			} else {
				swapped.Swap(set)
			}
		}
	})
	wg.Wait()
}
