package audit

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
)

// TestDigestReuse: Digest with its reused HMAC states gives what a fresh
// HMAC gives, for any input order and from many goroutines.
func TestDigestReuse(t *testing.T) {
	h := &Hasher{key: []byte(strings.Repeat("k", KeySize))}
	ref := func(b []byte) string {
		m := hmac.New(sha256.New, h.key)
		m.Write(b)
		return DigestPrefix + hex.EncodeToString(m.Sum(nil))
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			for range 500 {
				b := make([]byte, rng.IntN(300))
				for i := range b {
					b[i] = byte(rng.Uint32())
				}
				if got, want := h.Digest(b), ref(b); got != want {
					t.Errorf("Digest(%x) = %s, want %s", b, got, want)
					return
				}
			}
		})
	}
	wg.Wait()
}

// BenchmarkDigest is one argument digest (the broker computes one per call,
// and one per sensitive argument).
func BenchmarkDigest(b *testing.B) {
	h := &Hasher{key: []byte(strings.Repeat("k", KeySize))}
	args := []byte(`{"path":"/srv/notes/2026/plan.md","limit":200}`)
	b.ReportAllocs()
	for b.Loop() {
		_ = h.Digest(args)
	}
}
