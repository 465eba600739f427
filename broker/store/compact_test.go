package store

import (
	"context"
	"fmt"
	"testing"
)

func TestCompactLedger(t *testing.T) {
	defer func(n int) { compactChunk = n }(compactChunk)
	compactChunk = 100
	s := openTest(t, Options{NoSync: true})
	ctx := context.Background()
	for i := range 500 {
		if _, err := s.AppendLedger(ctx, chainBuild(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.CompactLedger(ctx, 500, []byte("base")); err == nil {
		t.Fatal("compacting the head succeeded")
	}
	if b, _ := s.LedgerBase(); b != nil {
		t.Fatalf("refused compaction left a base %q", b)
	}
	n, err := s.CompactLedger(ctx, 450, []byte("base-450"))
	if err != nil || n != 450 {
		t.Fatalf("CompactLedger = %d, %v", n, err)
	}
	if b, _ := s.LedgerBase(); string(b) != "base-450" {
		t.Fatalf("LedgerBase = %q", b)
	}
	var first, count uint64
	_ = s.ScanLedger(1, func(seq uint64, _ []byte) error {
		if first == 0 {
			first = seq
		}
		count++
		return nil
	})
	if first != 451 || count != 50 {
		t.Fatalf("after compaction: first %d, count %d", first, count)
	}
	// Appends continue from the head.
	if seq, err := s.AppendLedger(ctx, chainBuild("next")); err != nil || seq != 501 {
		t.Fatalf("append after compaction = %d, %v", seq, err)
	}
	if size, err := s.Size(); err != nil || size <= 0 {
		t.Fatalf("Size = %d, %v", size, err)
	}
}
