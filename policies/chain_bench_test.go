package policies

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkChainDepth is the per-call cost of the chain check (issue
// "delegated task boundaries"): Engine.Decide with a task in context for a
// chain of 1, 2 and 4 agents (2, 3 and 5 Cedar passes) at 50 and 500
// policies.
func BenchmarkChainDepth(b *testing.B) {
	for _, n := range []int{50, 500} {
		eng := NewEngine(scaleSet(b, n))
		for _, depth := range []int{1, 2, 4} {
			r := scaleRequest(depth)
			r.Task = &Task{ID: "task_1", AllowedTools: []string{"s2__t3", "s2__t4", "broker__task"}, ExpiresAt: testNow.Add(time.Hour), Purpose: "bench"}
			if d := eng.Decide(r); d.Outcome != Allow {
				b.Fatalf("%d policies depth %d: %s %+v", n, depth, d.Outcome, d.Passes)
			}
			b.Run(fmt.Sprintf("policies=%d/depth=%d", n, depth), func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					eng.Decide(r)
				}
			})
		}
	}
}
