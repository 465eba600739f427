package store

import (
	"context"
	"fmt"
	"testing"
)

func TestCompactLedger(t *testing.T) {
	s := openTest(t, Options{NoSync: true})
	ctx := context.Background()
	for i := range 5000 {
		if _, err := s.AppendLedger(ctx, chainBuild(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.CompactLedger(ctx, 5000, []byte("base")); err == nil {
		t.Fatal("compacting the head succeeded")
	}
	if b, _ := s.LedgerBase(); b != nil {
		t.Fatalf("refused compaction left a base %q", b)
	}
	n, err := s.CompactLedger(ctx, 4500, []byte("base-4500"))
	if err != nil || n != 4500 {
		t.Fatalf("CompactLedger = %d, %v", n, err)
	}
	if b, _ := s.LedgerBase(); string(b) != "base-4500" {
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
	if first != 4501 || count != 500 {
		t.Fatalf("after compaction: first %d, count %d", first, count)
	}
	// Appends continue from the head.
	if seq, err := s.AppendLedger(ctx, chainBuild("next")); err != nil || seq != 5001 {
		t.Fatalf("append after compaction = %d, %v", seq, err)
	}
	if size, err := s.Size(); err != nil || size <= 0 {
		t.Fatalf("Size = %d, %v", size, err)
	}
}
