package policies

import (
	"encoding/binary"
	"slices"
	"sync"

	"github.com/cedar-policy/cedar-go/types"
)

// The request cache keeps what a request's Initiator, Chain, Target and Task
// turn into, so that a repeated request (the same agent session calling the
// same tool again) builds only what varies per call: the call ID, now, the
// args, the per-call risk tags and the approval.
//
// Everything cached is immutable once built (cedar-go entities, records and
// sets are values; the slices and maps below are never written after
// construction), so entries are shared by concurrent decisions. The cache
// belongs to one Set: a reload starts empty, and the cached index candidates
// are those of that Set. It also keeps Visible's answers (visible.go).

// Bounds of the cache: when a map is full, the next insert starts it afresh.
const (
	maxCachedStatics = 4096
	maxCachedTasks   = 1024
)

// reqStatic is what a request's Initiator, Chain and Target turn into for one
// Set. Read-only once built.
type reqStatic struct {
	principals []types.EntityUID // pass order: initiator, then the chain
	names      []string          // principals[i].String(), for Pass.Principal
	resource   types.EntityUID
	ents       types.EntityMap // the request's entities (overlaid on the Set's)
	chain      types.Record    // context.chain
	resKeys    []types.EntityUID
	prinKeys   [][]types.EntityUID // scope keys per principal
	// cands are the enforced policies the index hands to Cedar per principal;
	// shadowCands the enforced and log_only ones (nil without log_only
	// policies). Both clipped: an append never writes into them.
	cands, shadowCands []candidateList
	shadowApplies      bool // a log_only policy could match some pass
	// visFree and visArgs split cands for Visible: the policies that cannot
	// read context.args and the others (splitArgs). Clipped.
	visFree, visArgs []candidateList
}

// buildStatic builds the static part of req without the cache.
func (s *Set) buildStatic(req *Request) *reqStatic {
	b := buildEntities(req, s.model.actions)
	n := len(b.principals)
	st := &reqStatic{
		principals: b.principals,
		names:      make([]string, n),
		resource:   b.resource,
		ents:       b.entities.req,
		chain:      chainRecord(req, b.principals),
		resKeys:    scopeKeys(b.entities, b.resource),
		prinKeys:   make([][]types.EntityUID, n),
		cands:      make([]candidateList, n),
		visFree:    make([]candidateList, n),
		visArgs:    make([]candidateList, n),
	}
	if s.shadow != nil {
		st.shadowCands = make([]candidateList, n)
	}
	for i, p := range b.principals {
		st.names[i] = p.String()
		st.prinKeys[i] = scopeKeys(b.entities, p)
		st.cands[i] = slices.Clip(s.index.candidates(st.prinKeys[i], st.resKeys))
		st.visFree[i], st.visArgs[i] = splitArgs(st.cands[i])
		if s.shadow != nil {
			sc := s.shadow.candidates(st.prinKeys[i], st.resKeys)
			st.shadowCands[i] = slices.Clip(append(slices.Clone(st.cands[i]), sc...))
			st.shadowApplies = st.shadowApplies || len(sc) > 0
		}
	}
	return st
}

// taskKey is the cheap part of a task's identity: every field but the
// allowed tools, of which only the count, the first and the last.
type taskKey struct {
	id, purpose string
	expires     int64 // ExpiresAt.UnixMilli(): all of it a Cedar datetime keeps
	n           int
	first, last string
}

func taskKeyOf(t *Task) taskKey {
	k := taskKey{id: t.ID, purpose: t.Purpose, expires: t.ExpiresAt.UnixMilli(), n: len(t.AllowedTools)}
	if k.n > 0 {
		k.first, k.last = t.AllowedTools[0], t.AllowedTools[k.n-1]
	}
	return k
}

// taskEntry is one cached context.task value with the tools it was built
// from.
type taskEntry struct {
	tools []string // a copy of AllowedTools (the caller may change its slice)
	rec   types.Value
}

// reqCache holds the static parts, keyed by an exact encoding of the
// Initiator, Chain and Target (appendStaticKey), and the task records, keyed
// by taskKey and checked against every allowed tool on each hit (the caller's
// slice usually shares its strings with the copy, so comparing them is cheap).
type reqCache struct {
	mu      sync.RWMutex
	statics map[string]*reqStatic

	taskMu sync.RWMutex
	tasks  map[taskKey][]*taskEntry // entries written only under taskMu
	nTasks int

	// vis holds Visible's answers, keyed by appendStaticKey followed by
	// appendVisibleKey; visBytes is the length of its keys together.
	visMu    sync.RWMutex
	vis      map[string]bool
	visBytes int

	maxStatics, maxTasks int
	maxVis, maxVisBytes  int
}

func newReqCache(maxStatics, maxTasks int) *reqCache {
	return &reqCache{
		statics: map[string]*reqStatic{}, tasks: map[taskKey][]*taskEntry{}, vis: map[string]bool{},
		maxStatics: maxStatics, maxTasks: maxTasks,
		maxVis: maxCachedVisible, maxVisBytes: maxCachedVisibleKeys,
	}
}

// static returns the static part of req (validated), from the cache if the
// Set has one.
func (s *Set) static(req *Request) *reqStatic {
	c := s.cache
	if c == nil {
		return s.buildStatic(req)
	}
	var buf [512]byte
	return s.staticByKey(req, appendStaticKey(buf[:0], req))
}

// staticByKey is static for a Set with a cache, given the static key of req
// (appendStaticKey).
func (s *Set) staticByKey(req *Request, key []byte) *reqStatic {
	c := s.cache
	c.mu.RLock()
	st := c.statics[string(key)]
	c.mu.RUnlock()
	if st != nil {
		return st
	}
	st = s.buildStatic(req)
	c.mu.Lock()
	if len(c.statics) >= c.maxStatics {
		c.statics = map[string]*reqStatic{}
	}
	c.statics[string(key)] = st
	c.mu.Unlock()
	return st
}

// taskValue returns the context.task value of t (nil without a task), from
// the cache if the Set has one.
func (s *Set) taskValue(t *Task) types.Value {
	c := s.cache
	if t == nil || c == nil {
		return taskRecord(t)
	}
	k := taskKeyOf(t)
	c.taskMu.RLock()
	for _, e := range c.tasks[k] {
		if slices.Equal(e.tools, t.AllowedTools) {
			c.taskMu.RUnlock()
			return e.rec
		}
	}
	c.taskMu.RUnlock()
	e := &taskEntry{tools: slices.Clone(t.AllowedTools), rec: taskRecord(t)}
	c.taskMu.Lock()
	for _, o := range c.tasks[k] { // built meanwhile by another request
		if slices.Equal(o.tools, t.AllowedTools) {
			c.taskMu.Unlock()
			return o.rec
		}
	}
	if c.nTasks >= c.maxTasks {
		c.tasks, c.nTasks = map[taskKey][]*taskEntry{}, 0
	}
	c.tasks[k] = append(c.tasks[k], e)
	c.nTasks++
	c.taskMu.Unlock()
	return e.rec
}

// appendStaticKey appends an encoding of every field of req that buildStatic
// reads (Initiator, Chain, Target) to b. Strings and lists are length-prefixed,
// so two requests get the same key only if those fields are equal.
func appendStaticKey(b []byte, req *Request) []byte {
	in := &req.Initiator
	b = appendKeyString(b, string(in.Kind))
	b = appendKeyString(b, in.ID)
	b = appendKeyString(b, in.Tenant)
	b = appendKeyStrings(b, in.Groups)
	if in.SpendLimit == nil {
		b = append(b, 0)
	} else {
		b = append(b, 1)
		b = binary.LittleEndian.AppendUint64(b, uint64(*in.SpendLimit))
	}
	b = binary.AppendUvarint(b, uint64(len(req.Chain)))
	for i := range req.Chain {
		b = appendKeyString(b, req.Chain[i].ID)
		b = appendKeyStrings(b, req.Chain[i].Classes)
	}
	t := &req.Target
	b = appendKeyString(b, string(t.Kind))
	b = appendKeyString(b, t.Server)
	b = appendKeyString(b, t.Name)
	b = appendKeyString(b, t.Exposed)
	var flags byte
	for i, f := range [...]bool{t.ReadOnly, t.Destructive, t.Idempotent, t.OpenWorld, t.Unpinned} {
		if f {
			flags |= 1 << i
		}
	}
	b = append(b, flags)
	b = appendKeyStrings(b, t.RiskTags)
	b = appendKeyString(b, t.Tenant)
	return b
}

func appendKeyString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendKeyStrings(b []byte, ss []string) []byte {
	b = binary.AppendUvarint(b, uint64(len(ss)))
	for _, s := range ss {
		b = appendKeyString(b, s)
	}
	return b
}
