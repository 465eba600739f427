package audit

import (
	"context"
	"strings"
	"testing"

	"github.com/mcpbroker/mcpbroker/broker/store"
)

// These complete BenchmarkRecordParallel / BenchmarkRecordSerial (group
// commit vs one commit per record, fsync on) with the same two shapes on a
// store that does not fsync, so that one run shows what durability costs,
// and with Canonical alone, the CPU part of a record.

func benchRecordOpts(b *testing.B, opts store.Options, parallel bool) {
	s := openStore(b, opts)
	l := NewLedger(s, nil)
	ev := benchEvent()
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	if parallel {
		b.SetParallelism(32)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := l.Record(ctx, ev); err != nil {
					b.Error(err)
					return
				}
			}
		})
		return
	}
	for b.Loop() {
		if _, err := l.Record(ctx, ev); err != nil {
			b.Fatal(err)
		}
	}
}

func benchEvent() Event {
	return Event{Type: CallDecided, CallID: "019abf0e-6a2b-7c3d-8e4f-0123456789ab", Agent: "spiffe://example.org/agent/planner",
		Initiator: `User::"alice"`, Method: "tools/call", Server: "files", Target: "files__read", Decision: DecisionAllow,
		ArgsDigest: "hmac-sha256:" + strings.Repeat("0f", 32), PolicyIDs: []string{"permit-read"},
		Chain: []string{"spiffe://example.org/agent/planner", "spiffe://example.org/agent/coder"},
		Passes: []Pass{{Principal: `Broker::User::"alice"`, Allowed: true, Reasons: []string{"permit-read"}},
			{Principal: `Broker::Agent::"spiffe://example.org/agent/planner"`, Allowed: true, Reasons: []string{"agents"}},
			{Principal: `Broker::Agent::"spiffe://example.org/agent/coder"`, Allowed: true, Reasons: []string{"agents"}}}}
}

// BenchmarkRecordParallelNoSync is group commit without fsync.
func BenchmarkRecordParallelNoSync(b *testing.B) {
	benchRecordOpts(b, store.Options{NoSync: true}, true)
}

// BenchmarkRecordSerialNoSync is one caller without fsync: the batch delay
// and the CPU work only.
func BenchmarkRecordSerialNoSync(b *testing.B) {
	benchRecordOpts(b, store.Options{NoSync: true}, false)
}

// BenchmarkCanonicalEvent is the canonical encoding of a three-pass
// decision record, done once per record before the commit.
func BenchmarkCanonicalEvent(b *testing.B) {
	ev := benchEvent()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Canonical(ev); err != nil {
			b.Fatal(err)
		}
	}
}
