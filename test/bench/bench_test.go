package bench

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// TestSmoke runs the whole harness briefly: every target answers, in both
// eras, and the table renders. It is the only test in the default run.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three targets")
	}
	ctx := context.Background()
	for _, era := range []string{Legacy, Modern} {
		t.Run(era, func(t *testing.T) {
			rig, err := NewRig(ctx, RigOptions{Era: era, NoSync: true})
			if err != nil {
				t.Fatal(err)
			}
			defer rig.Close()
			stats, err := Run(ctx, rig.Targets, era, 2, Workload{Kind: "echo"}, 1, 100*time.Millisecond)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range stats {
				if s.Calls == 0 || s.Errors > 0 {
					t.Errorf("%s: %d calls, %d errors (%v)", s.Target, s.Calls, s.Errors, s.FirstErr)
				}
			}
			if testing.Verbose() {
				WriteTable(os.Stdout, era, stats)
			}
		})
	}
}

// BenchmarkTargets is the same comparison as a Go benchmark: ns/op is wall
// time per call at the given concurrency (1/throughput), per target.
func BenchmarkTargets(b *testing.B) {
	ctx := context.Background()
	for _, era := range []string{Legacy, Modern} {
		rig, err := NewRig(ctx, RigOptions{Era: era})
		if err != nil {
			b.Fatal(err)
		}
		for _, clients := range []int{1, 16} {
			for _, t := range rig.Targets {
				b.Run(fmt.Sprintf("era=%s/clients=%d/%s", era, clients, t.Name), func(b *testing.B) {
					benchTarget(b, t, era, clients)
				})
			}
		}
		_ = rig.Close()
	}
}

func benchTarget(b *testing.B, t Target, era string, clients int) {
	ctx := context.Background()
	sessions := make([]interface{ Close() error }, 0, clients)
	defer func() {
		for _, s := range sessions {
			_ = s.Close()
		}
	}()
	var css []*mcp.ClientSession
	for range clients {
		cs, err := Connect(ctx, t.URL, era, t.Token, t.Handle)
		if err != nil {
			b.Fatal(err)
		}
		sessions = append(sessions, cs)
		css = append(css, cs)
	}
	st := &Stats{}
	round(ctx, t, css, Workload{Kind: "echo"}, 0, 5, st)
	if st.Errors > 0 {
		b.Fatal(st.FirstErr)
	}
	b.ReportAllocs()
	b.ResetTimer()
	per := max(b.N/clients, 1)
	st = &Stats{}
	round(ctx, t, css, Workload{Kind: "echo"}, 0, per, st)
	b.StopTimer()
	if st.Errors > 0 {
		b.Fatal(st.FirstErr)
	}
}
