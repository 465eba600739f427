package agents

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestTasksReturnCopies: what Get, Resolve and Ancestry return is the
// caller's: changing it changes nothing another lookup sees.
func TestTasksReturnCopies(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	ts := NewTasks(newMemStore(), func() time.Time { return now })
	h, root, err := ts.Grant(Task{Initiator: "alice", Agent: "spiffe://t/agent/a", Tools: []string{"x*"}, ExpiresAt: now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	_, child, err := ts.Delegate(root, root.Agent, SubTask{Agent: "spiffe://t/agent/b", Tools: []string{"x1"}}, 0)
	if err != nil {
		t.Fatal(err)
	}
	spoil := func(x *Task) {
		past := now.Add(-time.Hour)
		x.RevokedAt, x.ExpiresAt, x.Agent, x.Parent, x.MaxCalls = &past, past, "spiffe://t/agent/evil", "nope", 1
	}
	for range 2 { // the first round may fill the cache, the second reads it
		g, err := ts.Get(child.ID)
		if err != nil {
			t.Fatal(err)
		}
		spoil(g)
		r, err := ts.Resolve(h, "spiffe://t/agent/a")
		if err != nil {
			t.Fatal(err)
		}
		spoil(r)
		anc, err := ts.Ancestry(child)
		if err != nil || len(anc) != 2 {
			t.Fatalf("Ancestry = %v, %v", anc, err)
		}
		for _, a := range anc {
			spoil(a)
		}
		if err := ts.Check(child); err != nil {
			t.Fatalf("Check after changing returned copies: %v", err)
		}
		if ids, limits, err := ts.Charge(child); err != nil || len(ids) != 0 || len(limits) != 0 {
			t.Fatalf("Charge = %v %v %v", ids, limits, err)
		}
		if _, err := ts.Resolve(h, "spiffe://t/agent/a"); err != nil {
			t.Fatalf("Resolve after changing returned copies: %v", err)
		}
	}
}

// TestAncestryLongAndCycles: a chain longer than the scanned prefix is
// walked in order, and a parent cycle is found at any length.
func TestAncestryLongAndCycles(t *testing.T) {
	for _, n := range []int{1, 2, shortAncestry - 1, shortAncestry, shortAncestry + 1, 3 * shortAncestry} {
		now := time.Unix(1_000_000, 0)
		st := newMemStore()
		ts := NewTasks(st, func() time.Time { return now })
		ids := make([]string, n)
		for i := range ids {
			ids[i] = fmt.Sprintf("task_%03d", i)
			parent := ""
			if i > 0 {
				parent = ids[i-1]
			}
			if err := st.PutTask(&Task{ID: ids[i], Parent: parent, Initiator: "alice", Agent: "a", Tools: []string{"x"},
				MaxCalls: int64(i + 1), ExpiresAt: now.Add(time.Hour)}); err != nil {
				t.Fatal(err)
			}
		}
		leaf := &Task{ID: ids[n-1]}
		anc, err := ts.Ancestry(leaf)
		if err != nil || len(anc) != n {
			t.Fatalf("n=%d: Ancestry: %d tasks, %v", n, len(anc), err)
		}
		for i, a := range anc {
			if a.ID != ids[n-1-i] {
				t.Fatalf("n=%d: ancestry[%d] = %s, want %s", n, i, a.ID, ids[n-1-i])
			}
		}
		if err := ts.Check(leaf); err != nil {
			t.Fatalf("n=%d: Check: %v", n, err)
		}
		cids, limits, err := ts.Charge(leaf)
		if err != nil || len(cids) != n || cids[0] != ids[n-1] || limits[n-1] != 1 {
			t.Fatalf("n=%d: Charge = %v %v %v", n, cids, limits, err)
		}
		if rem, err := ts.Remaining(leaf); err != nil || rem != 1 {
			t.Fatalf("n=%d: Remaining = %d, %v", n, rem, err)
		}
		// Close the chain into a cycle: the root's parent is the leaf (a
		// fresh Tasks, so that nothing is cached).
		if err := st.PutTask(&Task{ID: ids[0], Parent: ids[n-1], Initiator: "alice", Agent: "a", Tools: []string{"x"}, ExpiresAt: now.Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		ts = NewTasks(st, func() time.Time { return now })
		want := fmt.Sprintf("task %s: parent cycle", ids[n-1])
		if _, err := ts.Ancestry(leaf); err == nil || err.Error() != want {
			t.Fatalf("n=%d: Ancestry of a cycle: %v, want %s", n, err, want)
		}
		if err := ts.Check(leaf); err == nil || err.Error() != want {
			t.Fatalf("n=%d: Check of a cycle: %v", n, err)
		}
		// A missing parent is named.
		if err := st.PutTask(&Task{ID: ids[0], Parent: "task_gone", Initiator: "alice", Agent: "a", Tools: []string{"x"}, ExpiresAt: now.Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		ts = NewTasks(st, func() time.Time { return now })
		if _, _, err := ts.Charge(leaf); err == nil || !strings.HasPrefix(err.Error(), "parent of "+ids[0]+": ") {
			t.Fatalf("n=%d: Charge with a missing parent: %v", n, err)
		}
	}
}

// BenchmarkTasksCall is what the broker asks of the task service per call
// made with a handle to a delegated task: Resolve, then Charge.
func BenchmarkTasksCall(b *testing.B) {
	now := time.Unix(1_000_000, 0)
	ts := NewTasks(newMemStore(), func() time.Time { return now })
	_, root, err := ts.Grant(Task{Initiator: "alice", Agent: "spiffe://t/agent/a", Tools: []string{"notes__*"}, MaxCalls: 1 << 40,
		ExpiresAt: now.Add(time.Hour), Groups: []string{"eng"}, Purpose: "plan"})
	if err != nil {
		b.Fatal(err)
	}
	h, _, err := ts.Delegate(root, root.Agent, SubTask{Agent: "spiffe://t/agent/b", Tools: []string{"notes__read"}}, 0)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		t, err := ts.Resolve(h, "spiffe://t/agent/b")
		if err != nil {
			b.Fatal(err)
		}
		if _, _, err := ts.Charge(t); err != nil {
			b.Fatal(err)
		}
	}
}

// TestHashHandle: the hex SHA-256 of the handle, for handles of every
// length around the stack copy's size.
func TestHashHandle(t *testing.T) {
	for n := range 200 {
		h := strings.Repeat("h", n)
		sum := sha256.Sum256([]byte(h))
		if got, want := HashHandle(h), hex.EncodeToString(sum[:]); got != want {
			t.Fatalf("HashHandle of %d bytes = %s, want %s", n, got, want)
		}
	}
}
