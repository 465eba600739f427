package audit

import (
	"bytes"
	"math/rand/v2"
	"testing"
	"time"
)

// TestCanonicalFastMatchesGeneric: the direct encoder writes exactly the
// bytes of the reference definition on random events, including strings
// that need escaping, empty and nil fields, passes, args and checkpoints.
func TestCanonicalFastMatchesGeneric(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 9))
	strs := []string{"", "a", "spiffe://t/agent/x", "<script>&", "quote\"back\\slash", "tab\tnl\n", "é ünïcode", "\u2028", string([]byte{0xff, 'x'}), "ctl\x01"}
	pick := func() string { return strs[rng.IntN(len(strs))] }
	picks := func() []string {
		switch rng.IntN(3) {
		case 0:
			return nil
		case 1:
			return []string{}
		}
		out := make([]string, 1+rng.IntN(3))
		for i := range out {
			out[i] = pick()
		}
		return out
	}
	for i := range 3000 {
		ev := Event{
			Type: Type(pick()), Version: rng.IntN(3), Time: time.Unix(rng.Int64N(2e9), rng.Int64N(1e9)).UTC(),
			CallID: pick(), Session: pick(), Agent: pick(), Initiator: pick(), Tenant: pick(), Chain: picks(),
			Task: pick(), Method: pick(), Server: pick(), Target: pick(), ArgsDigest: pick(),
			Decision: pick(), Reason: pick(), PolicyIDs: picks(), PolicyDigest: pick(),
			ShadowOutcome: pick(), Shadow: picks(), Candidate: pick(), Status: pick(), ErrorClass: pick(), Detail: pick(),
		}
		if rng.IntN(2) == 0 {
			ev.LatencyMS = []float64{0.001, 1.5, 12345.678, 1e-7, 3e21, 42}[rng.IntN(6)]
		}
		if rng.IntN(2) == 0 {
			ev.Args = map[string]string{pick(): pick(), pick(): pick()}
		}
		for range rng.IntN(3) {
			ev.Passes = append(ev.Passes, Pass{Principal: pick(), Allowed: rng.IntN(2) == 0, Reasons: picks(), Errors: picks()})
		}
		if rng.IntN(10) == 0 {
			ev.Checkpoint = &Checkpoint{}
		}
		want, err := canonicalGeneric(ev)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Canonical(ev)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("event %d differs:\n fast    %s\n generic %s", i, got, want)
		}
	}
}
