package store

import (
	"context"
	"errors"
	"testing"

	"github.com/mcpbroker/mcpbroker/agents"
)

// TestAppendLedgerSpending: a decision record and its budget charge commit
// together or not at all.
func TestAppendLedgerSpending(t *testing.T) {
	s := openTest(t, Options{})
	ctx := context.Background()
	build := func(seq uint64, prev []byte) ([]byte, []byte, error) {
		return []byte(`{"seq":1}`), []byte{byte(seq)}, nil
	}
	sp := Spend{IDs: []string{"child", "parent"}, Limits: []int64{5, 2}}
	for i := range 2 {
		if _, err := s.AppendLedgerSpending(ctx, build, sp); err != nil {
			t.Fatalf("charge %d: %v", i, err)
		}
	}
	_, err := s.AppendLedgerSpending(ctx, build, sp)
	if !errors.Is(err, agents.ErrBudget) {
		t.Fatalf("third charge over the parent's 2: %v", err)
	}
	n, _ := s.LedgerLen()
	child, _ := s.CallCount("child")
	parent, _ := s.CallCount("parent")
	if n != 2 || child != 2 || parent != 2 {
		t.Fatalf("after a refused charge: ledger %d, child %d, parent %d; want 2, 2, 2", n, child, parent)
	}
}
