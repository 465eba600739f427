package agents

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"
)

// memStore is an in-memory TaskStore for the agents tests (broker/store
// implements the real one on bbolt and has its own tests).
type memStore struct {
	mu     sync.Mutex
	tasks  map[string]*Task
	handle map[string]string
	calls  map[string]int64
}

func newMemStore() *memStore {
	return &memStore{tasks: map[string]*Task{}, handle: map[string]string{}, calls: map[string]int64{}}
}

func (m *memStore) PutTask(t *Task) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := *t
	m.tasks[t.ID] = &c
	if t.HandleHash != "" {
		m.handle[t.HandleHash] = t.ID
	}
	return nil
}

func (m *memStore) GetTask(id string) (*Task, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, ok := m.tasks[id]
	if !ok {
		return nil, ErrUnknownTask
	}
	c := *t
	return &c, nil
}

func (m *memStore) TaskByHandle(h string) (*Task, error) {
	m.mu.Lock()
	id, ok := m.handle[h]
	m.mu.Unlock()
	if !ok {
		return nil, ErrUnknownTask
	}
	return m.GetTask(id)
}

func (m *memStore) ListTasks() ([]*Task, error) { return nil, nil }

func (m *memStore) SpendCalls(ids []string, limits []int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, id := range ids {
		if limits[i] > 0 && m.calls[id]+1 > limits[i] {
			return ErrBudget
		}
	}
	for _, id := range ids {
		m.calls[id]++
	}
	return nil
}

func (m *memStore) CallCount(id string) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.calls[id], nil
}

func TestPatternWithin(t *testing.T) {
	cases := []struct {
		p       string
		parents []string
		want    bool
	}{
		{"notes__read_note", []string{"notes__*"}, true},
		{"notes__read_*", []string{"notes__*"}, true},
		{"notes__*", []string{"notes__read_*"}, false},
		{"*", []string{"notes__*"}, false},
		{"notes__*", []string{"*"}, true},
		{"payments__transfer", []string{"notes__*"}, false},
		{"notes__?ead", []string{"notes__*"}, true},
		{"notes__[rw]*", []string{"notes__r*"}, false},
		{"notes__a*b", []string{"notes__a*"}, true},
		{"x", []string{"x"}, true},
		{"notes__a/*", []string{"notes__*"}, false},
		{"notes__[/]x", []string{"notes__*"}, false},
		{`notes__a\/*`, []string{"notes__*"}, false},
		{"a/*", []string{"*"}, false},
		{"a/b", []string{"*"}, false},
	}
	for _, tc := range cases {
		if got := patternWithin(tc.p, tc.parents); got != tc.want {
			t.Errorf("patternWithin(%q, %v) = %v, want %v", tc.p, tc.parents, got, tc.want)
		}
	}
}

func TestChainTokens(t *testing.T) {
	cs := NewChains()
	now := time.Now()
	tok, release := cs.Mint(ChainClaims{Initiator: "alice", Chain: []string{"a"}, Target: "b", ParentCall: "c1"}, time.Minute, now)
	if c, err := cs.Verify(tok, "b", now); err != nil || c.Initiator != "alice" {
		t.Fatalf("own token: %v %+v", err, c)
	}
	for name, tc := range map[string]struct {
		tok, who string
		at       time.Time
	}{
		"other agent": {tok, "c", now},
		"expired":     {tok, "b", now.Add(2 * time.Minute)},
		"altered":     {tok[:len(tok)-3] + "abc", "b", now},
		"other key":   {func() string { t, _ := NewChains().Mint(ChainClaims{Target: "b"}, time.Minute, now); return t }(), "b", now},
		"not a token": {"hello", "b", now},
	} {
		if _, err := cs.Verify(tc.tok, tc.who, tc.at); !errors.Is(err, ErrChainToken) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
	release()
	if _, err := cs.Verify(tok, "b", now); !errors.Is(err, ErrChainToken) {
		t.Errorf("replay after the parent call ended: %v", err)
	}
}

// TestDelegationProperty builds random delegation trees and checks that no
// descendant may ever use a tool, outlive, or out-spend any ancestor, and
// that revoking an ancestor ends every descendant.
func TestDelegationProperty(t *testing.T) {
	universe := []string{"a__x", "a__y", "a__z", "b__x", "b__y", "c__x"}
	pats := []string{"*", "a__*", "b__*", "a__x", "a__y", "b__x", "c__*", "a__?", "c__x"}
	rng := rand.New(rand.NewPCG(1, 2))
	for trial := range 300 {
		now := time.Unix(1_000_000, 0)
		st := newMemStore()
		ts := NewTasks(st, func() time.Time { return now })
		_, root, err := ts.Grant(Task{Initiator: "alice", Agent: "spiffe://t/agent/0", Tools: []string{pats[rng.IntN(len(pats))]},
			MaxCalls: int64(rng.IntN(20)), ExpiresAt: now.Add(time.Duration(1+rng.IntN(100)) * time.Minute)})
		if err != nil {
			t.Fatal(err)
		}
		nodes := []*Task{root}
		for i := 1; i < 12; i++ {
			parent := nodes[rng.IntN(len(nodes))]
			var tools []string
			for range 1 + rng.IntN(2) {
				tools = append(tools, pats[rng.IntN(len(pats))])
			}
			req := SubTask{Agent: fmt.Sprintf("spiffe://t/agent/%d", i), Tools: tools,
				TTL: time.Duration(rng.IntN(150)) * time.Minute, MaxCalls: int64(rng.IntN(25))}
			_, child, err := ts.Delegate(parent, parent.Agent, req, 8)
			if err != nil {
				if !errors.Is(err, ErrOutsideTask) && !errors.Is(err, ErrTaskEnded) {
					t.Fatalf("trial %d: unexpected error %v", trial, err)
				}
				continue
			}
			nodes = append(nodes, child)
		}
		for _, n := range nodes {
			anc, err := ts.Ancestry(n)
			if err != nil {
				t.Fatal(err)
			}
			for _, a := range anc[1:] {
				for _, tool := range universe {
					if n.AllowsTool(tool) && !a.AllowsTool(tool) {
						t.Fatalf("trial %d: %s (%v) allows %s that ancestor %s (%v) does not", trial, n.ID, n.Tools, tool, a.ID, a.Tools)
					}
				}
				if n.ExpiresAt.After(a.ExpiresAt) {
					t.Fatalf("trial %d: %s outlives ancestor %s", trial, n.ID, a.ID)
				}
				if a.MaxCalls > 0 && (n.MaxCalls <= 0 || n.MaxCalls > a.MaxCalls) {
					t.Fatalf("trial %d: %s budget %d exceeds ancestor %s budget %d", trial, n.ID, n.MaxCalls, a.ID, a.MaxCalls)
				}
				if !slices.Contains(n.Chain, a.Agent) {
					t.Fatalf("trial %d: ancestor agent %s missing from chain %v", trial, a.Agent, n.Chain)
				}
			}
		}
		// Spending anywhere never lets a subtree exceed an ancestor's budget.
		for range 60 {
			n := nodes[rng.IntN(len(nodes))]
			_ = ts.Spend(n)
		}
		for _, n := range nodes {
			if n.MaxCalls > 0 {
				if c, _ := st.CallCount(n.ID); c > n.MaxCalls {
					t.Fatalf("trial %d: %s spent %d of %d", trial, n.ID, c, n.MaxCalls)
				}
			}
		}
		// Revoking the root ends every descendant.
		if _, err := ts.Revoke(root.ID); err != nil {
			t.Fatal(err)
		}
		for _, n := range nodes {
			if err := ts.Check(n); !errors.Is(err, ErrTaskEnded) {
				t.Fatalf("trial %d: %s still live after its root was revoked: %v", trial, n.ID, err)
			}
		}
	}
}

func TestResolveChecksAgentAndHandle(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	ts := NewTasks(newMemStore(), func() time.Time { return now })
	h, task, err := ts.Grant(Task{Initiator: "alice", Agent: "spiffe://t/agent/*", Tools: []string{"x"}, ExpiresAt: now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if task.HandleHash == h || len(h) < 30 {
		t.Fatal("handle stored in the clear or too short")
	}
	if _, err := ts.Resolve(h, "spiffe://t/agent/a"); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.Resolve(h, "spiffe://other/agent/a"); !errors.Is(err, ErrOutsideTask) {
		t.Fatalf("other agent: %v", err)
	}
	if _, err := ts.Resolve(h+"x", "spiffe://t/agent/a"); !errors.Is(err, ErrUnknownTask) {
		t.Fatalf("wrong handle: %v", err)
	}
	now = now.Add(2 * time.Hour)
	if _, err := ts.Resolve(h, "spiffe://t/agent/a"); !errors.Is(err, ErrTaskEnded) {
		t.Fatalf("expired: %v", err)
	}
}

func TestNarrowDepthLimit(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	parent := &Task{ID: "p", Initiator: "alice", Agent: "spiffe://t/agent/b", Tools: []string{"x"}, ExpiresAt: now.Add(time.Hour),
		Chain: []string{"spiffe://t/agent/a"}}
	// b (at depth 2) delegating to c: c would act at depth 3.
	if _, err := Narrow(parent, parent.Agent, SubTask{Agent: "spiffe://t/agent/c", Tools: []string{"x"}}, -1, 2, now); !errors.Is(err, ErrOutsideTask) {
		t.Fatalf("depth 3 under a limit of 2: %v", err)
	}
	if _, err := Narrow(parent, parent.Agent, SubTask{Agent: "spiffe://t/agent/c", Tools: []string{"x"}}, -1, 3, now); err != nil {
		t.Fatalf("depth 3 under a limit of 3: %v", err)
	}
	if _, err := Narrow(parent, parent.Agent, SubTask{Agent: "spiffe://t/agent/a", Tools: []string{"x"}}, -1, 8, now); !errors.Is(err, ErrOutsideTask) {
		t.Fatalf("delegating back to an agent on the chain: %v", err)
	}
}
