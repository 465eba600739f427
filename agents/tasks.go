package agents

import (
	"fmt"
	"sync"
	"time"
)

// TaskStore persists tasks and their call counters. broker/store
// implements it; agents never imports the store.
type TaskStore interface {
	PutTask(t *Task) error
	GetTask(id string) (*Task, error) // ErrUnknownTask if absent
	TaskByHandle(hash string) (*Task, error)
	ListTasks() ([]*Task, error)
	// SpendCalls adds one call to every task in ids if none would exceed
	// its limit (limits[i] <= 0: no limit), atomically; it returns
	// ErrBudget naming the exhausted task otherwise.
	SpendCalls(ids []string, limits []int64) error
	CallCount(id string) (int64, error)
}

// Tasks is the task service: grants, lookups, delegation, budgets and
// revocation, on a TaskStore.
type Tasks struct {
	store TaskStore
	now   func() time.Time

	// A cache of the store: tasks change only through this service (grant,
	// revoke), so it is never stale for the process that owns the store.
	mu     sync.RWMutex
	byID   map[string]*Task
	byHash map[string]string
}

// NewTasks returns a task service.
func NewTasks(s TaskStore, now func() time.Time) *Tasks {
	if now == nil {
		now = time.Now
	}
	return &Tasks{store: s, now: now, byID: map[string]*Task{}, byHash: map[string]string{}}
}

// Grant stores t (filling ID, creation time) and returns its handle: the
// only time the handle exists outside the caller.
func (ts *Tasks) Grant(t Task) (string, *Task, error) {
	if t.ID == "" {
		t.ID = NewTaskID()
	}
	if t.CreatedAt.IsZero() {
		t.CreatedAt = ts.now()
	}
	if t.InitiatorKind == "" {
		t.InitiatorKind = InitiatorUser
	}
	if t.Source == "" {
		t.Source = "grant"
	}
	if err := t.Validate(); err != nil {
		return "", nil, fmt.Errorf("invalid task: %w", err)
	}
	handle, hash := NewHandle()
	t.HandleHash = hash
	if err := ts.put(&t); err != nil {
		return "", nil, fmt.Errorf("store task: %w", err)
	}
	return handle, &t, nil
}

// maxCachedTasks bounds the task cache.
const maxCachedTasks = 50000

// Get returns a task by ID.
func (ts *Tasks) Get(id string) (*Task, error) { return ts.get(id) }

// get returns a copy of the task with id, which the caller may change.
func (ts *Tasks) get(id string) (*Task, error) {
	t, err := ts.lookup(id)
	if err != nil {
		return nil, err
	}
	c := *t
	return &c, nil
}

// lookup returns the task with id read-only: the cached value itself,
// shared with every other lookup, or the store's. Only readers in this
// file call it (ancestry and its users, Resolve until it copies); they never
// change the task or let it out. Cached values are never changed after
// remember stores them: a change (Revoke) is made to a copy, which put
// caches anew.
func (ts *Tasks) lookup(id string) (*Task, error) {
	ts.mu.RLock()
	t, ok := ts.byID[id]
	ts.mu.RUnlock()
	if ok {
		return t, nil
	}
	t, err := ts.store.GetTask(id)
	if err != nil {
		return nil, err
	}
	ts.remember(t)
	return t, nil
}

func (ts *Tasks) remember(t *Task) {
	c := *t
	ts.mu.Lock()
	if len(ts.byID) >= maxCachedTasks { // bounded: start over (the store has them all)
		ts.byID, ts.byHash = map[string]*Task{}, map[string]string{}
	}
	ts.byID[t.ID] = &c
	if t.HandleHash != "" {
		ts.byHash[t.HandleHash] = t.ID
	}
	ts.mu.Unlock()
}

func (ts *Tasks) put(t *Task) error {
	if err := ts.store.PutTask(t); err != nil {
		return err
	}
	ts.remember(t)
	return nil
}

// List returns every task.
func (ts *Tasks) List() ([]*Task, error) { return ts.store.ListTasks() }

// Resolve finds the task a handle names and checks that agent may use it
// and that it (and every ancestor) is live.
func (ts *Tasks) Resolve(handle, agent string) (*Task, error) {
	var hx [64]byte
	hash := appendHandleHash(hx[:0], handle) // HashHandle(handle), on the stack
	ts.mu.RLock()
	id, cached := ts.byHash[string(hash)]
	ts.mu.RUnlock()
	var t *Task // read-only until copied for the caller
	var err error
	if cached {
		t, err = ts.lookup(id)
	} else {
		t, err = ts.store.TaskByHandle(string(hash))
		if err == nil {
			ts.remember(t)
		}
	}
	if err != nil {
		return nil, err
	}
	if !t.ForAgent(agent) {
		return nil, fmt.Errorf("%w: task %s is for %s, presented by %s", ErrOutsideTask, t.ID, t.Agent, agent)
	}
	if err := ts.Check(t); err != nil {
		return nil, err
	}
	if cached {
		c := *t
		t = &c
	}
	return t, nil
}

// Ancestry returns t and its ancestors, t first, as stored now (so a
// revocation made since t was loaded is seen). The tasks are the caller's.
func (ts *Tasks) Ancestry(t *Task) ([]*Task, error) {
	anc, err := ts.ancestry(t, nil)
	if err != nil {
		return nil, err
	}
	for i, a := range anc {
		c := *a
		anc[i] = &c
	}
	return anc, nil
}

// ancestry is Ancestry appended to buf, read-only: the tasks are lookup's,
// shared, for the readers in this file (Check, Charge, Remaining).
func (ts *Tasks) ancestry(t *Task, buf []*Task) ([]*Task, error) {
	t, err := ts.lookup(t.ID)
	if err != nil {
		return nil, err
	}
	out := append(buf[:0], t)
	var seen map[string]bool // past a short ancestry; a short one is scanned
	for cur := t; cur.Parent != ""; {
		p, err := ts.lookup(cur.Parent)
		if err != nil {
			return nil, fmt.Errorf("parent of %s: %w", cur.ID, err)
		}
		if seenTask(out, seen, p.ID) {
			return nil, fmt.Errorf("task %s: parent cycle", t.ID)
		}
		out = append(out, p)
		if seen != nil {
			seen[p.ID] = true
		} else if len(out) > shortAncestry {
			seen = make(map[string]bool, 2*len(out))
			for _, a := range out {
				seen[a.ID] = true
			}
		}
		cur = p
	}
	return out, nil
}

// shortAncestry is how long an ancestry is scanned for a cycle before
// ancestry keeps a set of the IDs it has seen.
const shortAncestry = 16

func seenTask(out []*Task, seen map[string]bool, id string) bool {
	if seen != nil {
		return seen[id]
	}
	for _, a := range out {
		if a.ID == id {
			return true
		}
	}
	return false
}

// Check reports whether t and all its ancestors are unrevoked and
// unexpired: revoking or expiring a task ends its descendants.
func (ts *Tasks) Check(t *Task) error {
	var buf [8]*Task
	anc, err := ts.ancestry(t, buf[:0])
	if err != nil {
		return err
	}
	now := ts.now()
	for _, a := range anc {
		if err := a.Live(now); err != nil {
			return err
		}
	}
	return nil
}

// Spend takes one call from t's budget and every ancestor's. Tasks
// without a budget are not counted; when nothing on the ancestry has a
// budget, nothing is written.
func (ts *Tasks) Spend(t *Task) error {
	ids, limits, err := ts.Charge(t)
	if err != nil || len(ids) == 0 {
		return err
	}
	return ts.store.SpendCalls(ids, limits)
}

// Charge is what one call under t costs: the tasks on its ancestry that
// have a budget, with their limits (empty when nothing bounds it). The
// broker commits the charge together with the call's decision record.
func (ts *Tasks) Charge(t *Task) (ids []string, limits []int64, err error) {
	var buf [8]*Task
	anc, err := ts.ancestry(t, buf[:0])
	if err != nil {
		return nil, nil, err
	}
	n := 0
	for _, a := range anc {
		if a.MaxCalls > 0 {
			n++
		}
	}
	if n == 0 {
		return nil, nil, nil
	}
	ids, limits = make([]string, 0, n), make([]int64, 0, n)
	for _, a := range anc {
		if a.MaxCalls > 0 {
			ids, limits = append(ids, a.ID), append(limits, a.MaxCalls)
		}
	}
	return ids, limits, nil
}

// Remaining is the number of calls t may still make (the least over its
// ancestry), or -1 if nothing bounds it.
func (ts *Tasks) Remaining(t *Task) (int64, error) {
	var buf [8]*Task
	anc, err := ts.ancestry(t, buf[:0])
	if err != nil {
		return 0, err
	}
	rem := int64(-1)
	for _, a := range anc {
		if a.MaxCalls <= 0 {
			continue
		}
		n, err := ts.store.CallCount(a.ID)
		if err != nil {
			return 0, err
		}
		left := max(a.MaxCalls-n, 0)
		if rem < 0 || left < rem {
			rem = left
		}
	}
	return rem, nil
}

// Delegate creates a sub-task of parent for req.Agent, narrowed by Narrow,
// and returns its handle.
func (ts *Tasks) Delegate(parent *Task, delegator string, req SubTask, maxDepth int) (string, *Task, error) {
	if err := ts.Check(parent); err != nil {
		return "", nil, err
	}
	rem, err := ts.Remaining(parent)
	if err != nil {
		return "", nil, err
	}
	child, err := Narrow(parent, delegator, req, rem, maxDepth, ts.now())
	if err != nil {
		return "", nil, err
	}
	return ts.Grant(*child)
}

// Revoke ends a task now; its descendants end at their next call.
func (ts *Tasks) Revoke(id string) (*Task, error) {
	t, err := ts.get(id)
	if err != nil {
		return nil, err
	}
	if t.RevokedAt != nil {
		return t, nil
	}
	now := ts.now()
	t.RevokedAt = &now
	if err := ts.put(t); err != nil {
		return nil, err
	}
	return t, nil
}
