package agents

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"
	"time"
)

// Task is a delegated task boundary: what a session may do, for whom, how
// long and how often. Tasks are created by a grant (operator or initiator),
// from an agent's registration (a coarse default), or by delegation from a
// parent task, and are never widened: a child is always a subset of its
// parent (Narrow).
type Task struct {
	ID            string        `json:"id"`
	HandleHash    string        `json:"handle_hash,omitempty"` // hex SHA-256 of the handle; the handle itself is never stored
	Initiator     string        `json:"initiator"`
	InitiatorKind InitiatorKind `json:"initiator_kind"`
	Tenant        string        `json:"tenant,omitempty"`
	// Groups are the initiator's groups (Cedar Team parents), bound at grant:
	// never taken from whichever agent later presents the handle.
	Groups []string `json:"groups,omitempty"`
	// Agent is the SPIFFE ID the task is for, or a pattern with * path
	// segments (spiffe://example.org/agent/*).
	Agent   string `json:"agent"`
	Purpose string `json:"purpose,omitempty"`
	// Tools are glob patterns over the names agents see (notes__read_*).
	Tools     []string `json:"tools"`
	Resources []string `json:"resources,omitempty"`
	MaxCalls  int64    `json:"max_calls"` // 0: no budget of its own (bounded by ancestors)
	MaxDepth  int      `json:"max_depth,omitempty"`
	// Chain lists the agents upstream of Agent, outermost first: empty for
	// a granted task, the delegating agents for a delegated one.
	Chain     []string   `json:"chain,omitempty"`
	Parent    string     `json:"parent,omitempty"`
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt time.Time  `json:"expires_at"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
	Source    string     `json:"source"` // grant | default | delegate
}

// Validate reports whether t is well formed.
func (t *Task) Validate() error {
	var errs []error
	if t.ID == "" {
		errs = append(errs, errors.New("id is required"))
	}
	if t.Initiator == "" {
		errs = append(errs, errors.New("initiator is required"))
	}
	if t.Agent == "" {
		errs = append(errs, errors.New("agent is required"))
	}
	if len(t.Tools) == 0 {
		errs = append(errs, errors.New("at least one tool pattern is required"))
	}
	for _, p := range t.Tools {
		if _, err := path.Match(p, ""); err != nil || p == "" {
			errs = append(errs, fmt.Errorf("tool pattern %q is malformed", p))
		}
	}
	if t.MaxCalls < 0 {
		errs = append(errs, errors.New("max_calls must not be negative"))
	}
	if t.ExpiresAt.IsZero() {
		errs = append(errs, errors.New("expiry is required"))
	}
	return errors.Join(errs...)
}

// AllowsTool reports whether the task's patterns cover the tool name.
func (t *Task) AllowsTool(name string) bool {
	for _, p := range t.Tools {
		if ok, _ := path.Match(p, name); ok {
			return true
		}
	}
	return false
}

// ForAgent reports whether agent may use the task.
func (t *Task) ForAgent(agent string) bool {
	if t.Agent == agent {
		return true
	}
	if !strings.Contains(t.Agent, "*") {
		return false
	}
	ok, _ := path.Match(t.Agent, agent)
	return ok
}

// Live reports whether the task is unrevoked and unexpired at now.
func (t *Task) Live(now time.Time) error {
	if t.RevokedAt != nil {
		return fmt.Errorf("%w: task %s revoked at %s", ErrTaskEnded, t.ID, t.RevokedAt.UTC().Format(time.RFC3339))
	}
	if !now.Before(t.ExpiresAt) {
		return fmt.Errorf("%w: task %s expired at %s", ErrTaskEnded, t.ID, t.ExpiresAt.UTC().Format(time.RFC3339))
	}
	return nil
}

// Depth is the chain depth of a call made under the task by its agent.
func (t *Task) Depth() int { return len(t.Chain) + 1 }

// SubTask is what a delegating agent asks for.
type SubTask struct {
	Agent    string
	Tools    []string
	TTL      time.Duration
	MaxCalls int64
	Purpose  string
}

// Narrow derives a child task for req from parent, which the delegating
// agent (the parent's agent, acting in it) holds. It enforces monotonic
// narrowing: every requested tool pattern must lie inside a parent pattern,
// the expiry may not pass the parent's, the budget may not exceed what is
// left of the parent's, and the chain may not grow past maxDepth or revisit
// an agent.
func Narrow(parent *Task, delegator string, req SubTask, remaining int64, maxDepth int, now time.Time) (*Task, error) {
	if err := parent.Live(now); err != nil {
		return nil, err
	}
	if req.Agent == "" {
		return nil, fmt.Errorf("%w: the sub-agent is required", ErrOutsideTask)
	}
	chain := append(slices.Clone(parent.Chain), delegator)
	if slices.Contains(chain, req.Agent) {
		return nil, fmt.Errorf("%w: %s is already on the chain (cycle)", ErrOutsideTask, req.Agent)
	}
	if maxDepth > 0 && len(chain)+1 > maxDepth {
		return nil, fmt.Errorf("%w: chain depth %d exceeds the limit %d", ErrOutsideTask, len(chain)+1, maxDepth)
	}
	if parent.MaxDepth > 0 && len(chain)+1 > parent.MaxDepth {
		return nil, fmt.Errorf("%w: chain depth %d exceeds task %s's limit %d", ErrOutsideTask, len(chain)+1, parent.ID, parent.MaxDepth)
	}
	if len(req.Tools) == 0 {
		return nil, fmt.Errorf("%w: no tools requested", ErrOutsideTask)
	}
	for _, p := range req.Tools {
		if !patternWithin(p, parent.Tools) {
			return nil, fmt.Errorf("%w: %q is not inside the parent task's tools", ErrOutsideTask, p)
		}
	}
	exp := parent.ExpiresAt
	if req.TTL > 0 {
		if e := now.Add(req.TTL); e.After(parent.ExpiresAt) {
			return nil, fmt.Errorf("%w: a ttl of %s outlives the parent task (expires %s)", ErrOutsideTask, req.TTL, parent.ExpiresAt.UTC().Format(time.RFC3339))
		} else {
			exp = e
		}
	}
	budget := req.MaxCalls
	if remaining >= 0 {
		if budget > remaining {
			return nil, fmt.Errorf("%w: a budget of %d calls exceeds the parent's remaining %d", ErrOutsideTask, budget, remaining)
		}
		if budget == 0 {
			budget = remaining
		}
	}
	depth := parent.MaxDepth
	child := &Task{
		ID:            NewTaskID(),
		Initiator:     parent.Initiator,
		InitiatorKind: parent.InitiatorKind,
		Tenant:        parent.Tenant,
		Groups:        slices.Clone(parent.Groups),
		Agent:         req.Agent,
		Purpose:       req.Purpose,
		Tools:         slices.Clone(req.Tools),
		MaxCalls:      budget,
		MaxDepth:      depth,
		Chain:         chain,
		Parent:        parent.ID,
		CreatedAt:     now,
		ExpiresAt:     exp,
		Source:        "delegate",
	}
	return child, nil
}

// patternWithin reports whether every name p can match is matched by one of
// parents. It is conservative: p must equal a parent pattern, be a literal
// name a parent matches, or extend a parent pattern of the form
// "prefix*" (no other wildcard) with a longer prefix.
func patternWithin(p string, parents []string) bool {
	literal := !strings.ContainsAny(p, `*?[\`)
	for _, q := range parents {
		if p == q {
			return true
		}
		if literal {
			if ok, _ := path.Match(q, p); ok {
				return true
			}
			continue
		}
		if strings.HasSuffix(q, "*") && !strings.ContainsAny(q[:len(q)-1], `*?[\`) {
			prefix := q[:len(q)-1]
			// A * never matches "/", but a literal, escaped or bracketed
			// "/" in p would: such a p is not inside q.
			if strings.HasPrefix(p, prefix) && !strings.ContainsAny(p[len(prefix):], `/[\`) {
				return true
			}
		}
	}
	return false
}

// NewTaskID returns a fresh task ID.
func NewTaskID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return "task_" + hex.EncodeToString(b[:])
}

// NewHandle returns a task handle (192 random bits) and the hash stored in
// its place.
func NewHandle() (handle, hash string) {
	var b [24]byte
	_, _ = rand.Read(b[:])
	handle = "mcpbt_" + base64.RawURLEncoding.EncodeToString(b[:])
	return handle, HashHandle(handle)
}

// HashHandle is how a handle is looked up: only its hash is stored.
func HashHandle(handle string) string {
	var hx [2 * sha256.Size]byte
	return string(appendHandleHash(hx[:0], handle))
}

// appendHandleHash appends HashHandle(handle) to dst. A handle of the usual
// length is hashed from a copy on the stack, not from a []byte conversion,
// which would allocate.
func appendHandleHash(dst []byte, handle string) []byte {
	var sum [sha256.Size]byte
	var b [64]byte
	if len(handle) <= len(b) {
		sum = sha256.Sum256(b[:copy(b[:], handle)])
	} else {
		sum = sha256.Sum256([]byte(handle))
	}
	return hex.AppendEncode(dst, sum[:])
}
