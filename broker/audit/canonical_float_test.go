package audit

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

// TestAppendJSONFloat: latency_ms is printed exactly as encoding/json
// prints a float64, and NaN and infinities fail with its error.
func TestAppendJSONFloat(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 5))
	vals := []float64{0, 1, -1, 0.1, 12.5, 1e-6, 9.99999e-7, 1e-7, 1.5e-9, 1e20, 1e21, 999999999999999999999, 3e21, 1e300, 5e-324,
		math.MaxFloat64, math.SmallestNonzeroFloat64, -1e-7, 12345.678, 1e6, 123456789012}
	for range 20000 {
		vals = append(vals, math.Float64frombits(rng.Uint64()), rng.Float64()*1e4, rng.NormFloat64()*math.Pow(10, float64(rng.IntN(60)-30)))
	}
	for _, f := range vals {
		want, werr := json.Marshal(f)
		got, gerr := appendJSONFloat(nil, f)
		if fmt.Sprint(gerr) != fmt.Sprint(werr) || string(got) != string(want) {
			t.Fatalf("%v (%x): got %q %v, want %q %v", f, math.Float64bits(f), got, gerr, want, werr)
		}
	}
	for _, f := range []float64{math.NaN(), math.Inf(1), math.Inf(-1)} {
		_, werr := json.Marshal(f)
		if _, gerr := appendJSONFloat(nil, f); gerr == nil || gerr.Error() != werr.Error() {
			t.Fatalf("%v: error %v, want %v", f, gerr, werr)
		}
		if _, err := Canonical(Event{Type: CallCompleted, LatencyMS: f}); err == nil || err.Error() != "encode event: "+werr.Error() {
			t.Fatalf("Canonical with latency %v: %v", f, err)
		}
	}
}

// TestCanonicalTimeError: a time encoding/json cannot print fails with
// time.Time.MarshalJSON's error, before a bad latency's.
func TestCanonicalTimeError(t *testing.T) {
	bad := time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)
	_, want := bad.MarshalJSON()
	for _, ev := range []Event{{Type: CallCompleted, Time: bad}, {Type: CallCompleted, Time: bad, LatencyMS: math.NaN()}} {
		if _, err := Canonical(ev); err == nil || err.Error() != "encode event: "+want.Error() {
			t.Fatalf("Canonical = %v, want encode event: %v", err, want)
		}
	}
}
