package policies

import (
	"fmt"
	"testing"
	"time"
)

// visibleCatalog is a tools/list as the broker filters it: 1,000 tools on 20
// servers, one chain (user u7 in team t3 through two agents of class c2), a
// task whose context names only the listed tool (the broker's per-tool task),
// call ID "list" and a clock that moves on every call.
func visibleCatalog() []Request {
	base := scaleRequest(2)
	base.CallID, base.Args = "list", nil
	out := make([]Request, 0, 1000)
	for i := range 1000 {
		r := base
		s, n := fmt.Sprintf("s%d", i%20), fmt.Sprintf("t%d", i/20)
		exposed := s + "__" + n
		r.Target = Target{Kind: TargetTool, Server: s, Name: n, Exposed: exposed,
			ReadOnly: i%3 == 0, Destructive: i%3 != 0, Idempotent: i%2 == 0, OpenWorld: i%5 == 0}
		if i%7 == 0 {
			r.Target.RiskTags = []string{"shell"}
		}
		r.Task = &Task{ID: "task_1", AllowedTools: []string{"broker__delegate", "broker__task", exposed},
			ExpiresAt: testNow.Add(time.Hour), Purpose: "bench"}
		out = append(out, r)
	}
	return out
}

// BenchmarkVisibleCatalog: one op is a whole listing (1,000 Visible calls).
// first: every op starts from an empty request cache (the first listing
// after a reload); new-task: the chain lists again in a session with another
// task (what Initiator, Chain and Target turn into is cached, the rest is
// not); repeat: the same listing again and again.
func BenchmarkVisibleCatalog(b *testing.B) {
	set := scaleSet(b, 500)
	reqs := visibleCatalog()
	visible := 0
	for _, r := range reqs {
		if NewEngine(set).Visible(r) {
			visible++
		}
	}
	if visible == 0 || visible == len(reqs) {
		b.Fatalf("%d of %d visible: the benchmark filters nothing", visible, len(reqs))
	}
	list := func(eng *Engine, now *time.Time) {
		for _, r := range reqs {
			*now = now.Add(time.Microsecond)
			r.Now = *now
			eng.Visible(r)
		}
	}
	b.Run("first", func(b *testing.B) {
		b.ReportAllocs()
		now := testNow
		for b.Loop() {
			s := *set
			s.cache = newReqCache(maxCachedStatics, maxCachedTasks)
			list(NewEngine(&s), &now)
		}
	})
	b.Run("new-task", func(b *testing.B) {
		s := *set // a cache of its own: task IDs repeat with -count
		s.cache = newReqCache(maxCachedStatics, maxCachedTasks)
		eng := NewEngine(&s)
		now := testNow
		list(eng, &now)
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			i++
			id := fmt.Sprintf("task_%d", i)
			for j := range reqs {
				t := *reqs[j].Task
				t.ID = id
				reqs[j].Task = &t
			}
			list(eng, &now)
		}
	})
	b.Run("repeat", func(b *testing.B) {
		eng := NewEngine(set)
		now := testNow
		list(eng, &now)
		b.ReportAllocs()
		for b.Loop() {
			list(eng, &now)
		}
	})
}
