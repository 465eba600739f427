package approval

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
)

// MaxComment caps an approver's comment, in bytes.
const MaxComment = 2000

// Options configure a Service.
type Options struct {
	Store Store
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// NewID makes approval IDs; nil means UUIDv7.
	NewID func() string
	// OnTransition, if set, is called after every appended transition
	// (outside the Service's lock) with the record as it now stands: the
	// broker records audit events and sends webhooks from it.
	OnTransition func(r *Record, t Transition)
}

// Service runs the approval state machine over a Store. It is safe for
// concurrent use within one process; the Store's sequence check guards
// against any other writer.
type Service struct {
	st    Store
	now   func() time.Time
	newID func() string
	on    func(*Record, Transition)

	mu      sync.Mutex // serializes read → check → append
	waitMu  sync.Mutex
	waiters map[string]chan struct{}
}

// New returns a Service. It starts no goroutines.
func New(opts Options) *Service {
	s := &Service{st: opts.Store, now: opts.Now, newID: opts.NewID, on: opts.OnTransition, waiters: map[string]chan struct{}{}}
	if s.now == nil {
		s.now = time.Now
	}
	if s.newID == nil {
		s.newID = func() string {
			id, err := uuid.NewV7()
			if err != nil {
				return uuid.NewString()
			}
			return id.String()
		}
	}
	return s
}

// Now is the Service's clock.
func (s *Service) Now() time.Time { return s.now() }

// Approver is who decides out of band (or, in band, the initiator).
type Approver struct {
	ID     string
	Groups []string
	// Initiators are the initiator IDs the approver also acts as:
	// separation of duties keeps them from approving those calls.
	Initiators []string
	// Tenants, if set, are the only tenants whose approvals the approver
	// may decide.
	Tenants []string
	// Operator is the owner of the broker's admin socket or store: a member
	// of every group. Separation of duties still applies to ID.
	Operator bool
}

// Decision is a human's answer.
type Decision struct {
	Approve bool
	By      Approver
	Channel Channel
	Comment string
}

// Use is a call presenting itself as covered by an approval.
type Use struct {
	CallID     string
	CallDigest string
	Session    string
	Task       string
	Tool       string
	Initiator  string
	Chain      []string
	// Asked, if set, is what the current policies ask of the call's
	// approval: an earlier approval covers it only if it answered at
	// least as much.
	Asked *Asked
}

// Asked is what the policies that want a call approved ask.
type Asked struct {
	PolicyIDs []string // every one must be among the approval's
	Group     string   // the approver groups, sorted, comma-separated: must be the approval's
	Mode      Mode     // if set, the approval must have been decided this way
	Scope     Scope    // if set, a grant wider than a once approval covers only if its scope is this
}

// OnceGrace is how long after its decision deadline an approved
// once-scoped approval may still be used by its call (one retried after
// the broker restarted, or whose agent reconnected): after it, the
// approval expires unused.
const OnceGrace = 10 * time.Minute

// Request stores a new approval in state Requested. ID and RequestedAt are
// filled when empty.
func (s *Service) Request(r Record) (*Record, error) {
	if r.ID == "" {
		r.ID = s.newID()
	}
	if r.RequestedAt.IsZero() {
		r.RequestedAt = s.now()
	}
	if r.Scope == "" {
		r.Scope = ScopeOnce
	}
	if err := r.validate(); err != nil {
		return nil, err
	}
	q := r.request()
	t := Transition{Seq: 1, At: r.RequestedAt, To: Requested, By: "broker", Channel: r.Asked, CallID: r.CallID}
	s.mu.Lock()
	err := s.st.CreateApproval(q, t)
	s.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("request approval %s: %w", r.ID, err)
	}
	if err := Fold(q, []Transition{t}); err != nil {
		return nil, err
	}
	s.notify(q, t)
	return q, nil
}

func (s *Service) load(id string) (*Record, error) {
	st, err := s.st.Approval(id)
	if err != nil {
		return nil, err
	}
	r := st.Record
	if err := Fold(r, st.Transitions); err != nil {
		return nil, err
	}
	return r, nil
}

// appendLocked appends the next transition to r (s.mu held) and returns
// the record after it.
func (s *Service) appendLocked(r *Record, t Transition) (*Record, Transition, error) {
	t.Seq = len(r.Transitions) + 1
	t.From = r.State
	if t.At.IsZero() {
		t.At = s.now()
	}
	if !CanMove(t.From, t.To) {
		return nil, t, fmt.Errorf("approval %s: %s → %s: %w", r.ID, t.From, t.To, ErrInvalidTransition)
	}
	if err := s.st.AppendApprovalTransition(r.ID, t); err != nil {
		return nil, t, fmt.Errorf("approval %s: %w", r.ID, err)
	}
	nr := *r
	if err := Fold(&nr, append(slices.Clone(r.Transitions), t)); err != nil {
		return nil, t, err
	}
	return &nr, t, nil
}

// overdue reports whether r must expire now: a request past its deadline,
// or a scoped grant past its end.
func (s *Service) overdue(r *Record) bool {
	now := s.now()
	switch r.State {
	case Requested:
		return now.After(r.ExpiresAt)
	case Approved:
		if r.Scope == ScopeOnce {
			return now.After(r.ExpiresAt.Add(OnceGrace))
		}
		return r.GrantUntil != nil && now.After(*r.GrantUntil)
	}
	return false
}

// expireLocked expires r if it is overdue; the transition is returned for
// notification (zero Seq if nothing happened).
func (s *Service) expireLocked(r *Record) (*Record, Transition, error) {
	if !s.overdue(r) {
		return r, Transition{}, nil
	}
	note := "no decision before the deadline"
	if r.State == Approved {
		note = "the " + string(r.Scope) + " grant ended"
	}
	return s.appendLocked(r, Transition{To: Expired, By: "broker", Channel: ChannelBroker, Note: note})
}

func (s *Service) notify(r *Record, t Transition) {
	if t.Seq == 0 {
		return
	}
	s.waitMu.Lock()
	if ch, ok := s.waiters[r.ID]; ok {
		close(ch)
		delete(s.waiters, r.ID)
	}
	s.waitMu.Unlock()
	if s.on != nil {
		s.on(r, t)
	}
}

// Changed returns a channel that is closed at the next transition of id.
func (s *Service) Changed(id string) <-chan struct{} {
	s.waitMu.Lock()
	defer s.waitMu.Unlock()
	ch, ok := s.waiters[id]
	if !ok {
		ch = make(chan struct{})
		s.waiters[id] = ch
	}
	return ch
}

// Get returns the record id, expiring it first if it is overdue.
func (s *Service) Get(id string) (*Record, error) {
	s.mu.Lock()
	r, err := s.load(id)
	var t Transition
	if err == nil {
		r, t, err = s.expireLocked(r)
	}
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	s.notify(r, t)
	return r, nil
}

// List returns the records, oldest first, expiring overdue ones: only the
// pending ones unless all.
func (s *Service) List(all bool) ([]*Record, error) {
	if _, err := s.Sweep(); err != nil {
		return nil, err
	}
	sts, err := s.st.Approvals()
	if err != nil {
		return nil, err
	}
	var out []*Record
	for _, st := range sts {
		r := st.Record
		if err := Fold(r, st.Transitions); err != nil {
			return nil, err
		}
		if all || r.State == Requested {
			out = append(out, r)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].RequestedAt.Before(out[j].RequestedAt) })
	return out, nil
}

// Sweep expires every overdue record and returns how many it expired.
func (s *Service) Sweep() (int, error) {
	sts, err := s.st.Approvals()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, st := range sts {
		r := st.Record
		if Fold(r, st.Transitions) != nil || !s.overdue(r) {
			continue
		}
		if _, err := s.Get(r.ID); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// Decide records a human decision on a pending approval. It refuses (and
// changes nothing) when the approval is not pending (ErrNotPending: a
// replay), the channel does not fit (ErrWrongChannel), or the approver may
// not decide it (ErrSeparation, ErrNotInGroup). A decision after the
// deadline expires the approval and fails with ErrExpired.
func (s *Service) Decide(id string, d Decision) (*Record, error) {
	if len(d.Comment) > MaxComment {
		d.Comment = d.Comment[:MaxComment]
	}
	if err := d.Channel.Validate(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	r, err := s.load(id)
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	if r.State == Requested && s.overdue(r) {
		r, t, err := s.expireLocked(r)
		s.mu.Unlock()
		if err != nil {
			return nil, err
		}
		s.notify(r, t)
		return r, fmt.Errorf("decide approval %s: %w", id, ErrExpired)
	}
	if r.State != Requested {
		s.mu.Unlock()
		return r, fmt.Errorf("decide approval %s (%s): %w", id, r.State, ErrNotPending)
	}
	if err := mayDecide(r, d); err != nil {
		s.mu.Unlock()
		return r, fmt.Errorf("decide approval %s by %q via %s: %w", id, d.By.ID, d.Channel, err)
	}
	to := Denied
	if d.Approve {
		to = Approved
	}
	r, t, err := s.appendLocked(r, Transition{To: to, By: d.By.ID, Channel: d.Channel, Comment: d.Comment})
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	s.notify(r, t)
	return r, nil
}

// MaySee reports whether the approver's tenants include r's (an
// approver with no tenants sees every tenant's approvals).
func (a Approver) MaySee(r *Record) bool {
	return len(a.Tenants) == 0 || slices.Contains(a.Tenants, r.Tenant)
}

// mayDecide applies separation of duties and the channel rule.
func mayDecide(r *Record, d Decision) error {
	if d.By.ID == "" {
		return ErrSeparation
	}
	switch r.Mode {
	case ModeInitiator:
		if d.Channel != ChannelElicitation {
			return ErrWrongChannel
		}
		if d.By.ID != r.Initiator {
			return ErrSeparation
		}
		return nil
	case ModeApprover:
		if d.Channel == ChannelElicitation || d.Channel == ChannelBroker || d.Channel == ChannelOutOfBand {
			return ErrWrongChannel
		}
		if strings.EqualFold(d.By.ID, r.Initiator) || slices.Contains(d.By.Initiators, r.Initiator) || slices.Contains(r.Chain, d.By.ID) || d.By.ID == r.Agent {
			return ErrSeparation
		}
		if !d.By.MaySee(r) {
			return ErrSeparation
		}
		if !d.By.Operator {
			for _, g := range Groups(r.Group) {
				if !slices.Contains(d.By.Groups, g) {
					return fmt.Errorf("%w: %s", ErrNotInGroup, g)
				}
			}
		}
		return nil
	}
	return ErrInvalidRecord
}

// Groups splits Record.Group.
func Groups(g string) []string {
	var out []string
	for _, p := range strings.Split(g, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// Cancel ends a pending approval: its call went away or the human
// dismissed the prompt. A record that is not pending is left alone
// (ErrNotPending).
func (s *Service) Cancel(id, note string) (*Record, error) {
	return s.end(id, Cancelled, note)
}

// Expire ends a pending approval whose deadline passed while its call
// waited, even if the clock and the timer disagree by a hair.
func (s *Service) Expire(id, note string) (*Record, error) {
	return s.end(id, Expired, note)
}

func (s *Service) end(id string, to State, note string) (*Record, error) {
	s.mu.Lock()
	r, err := s.load(id)
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	if r.State != Requested {
		s.mu.Unlock()
		return r, fmt.Errorf("end approval %s (%s): %w", id, r.State, ErrNotPending)
	}
	r, t, err := s.appendLocked(r, Transition{To: to, By: "broker", Channel: ChannelBroker, Note: note})
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	s.notify(r, t)
	return r, nil
}

// covers reports whether the approved record r covers u.
func (s *Service) covers(r *Record, u Use) bool {
	if r.State != Approved || s.overdue(r) {
		return false
	}
	if a := u.Asked; a != nil {
		for _, id := range a.PolicyIDs {
			if !slices.Contains(r.PolicyIDs, id) {
				return false // another policy asks, which this approval never answered
			}
		}
		if r.Group != a.Group || a.Mode != "" && r.Mode != a.Mode {
			return false
		}
		if a.Scope != "" && r.Scope != ScopeOnce && r.Scope != a.Scope {
			return false // the policies now grant less (say, once only) than this grant did
		}
	}
	switch r.Scope {
	case ScopeOnce:
		return r.CallDigest == u.CallDigest
	case ScopeSession:
		return r.Session != "" && r.Session == u.Session && r.Tool == u.Tool && r.Initiator == u.Initiator && slices.Equal(r.Chain, u.Chain)
	case ScopeTask:
		return r.Task != "" && r.Task == u.Task && r.Tool == u.Tool && r.Initiator == u.Initiator && slices.Equal(r.Chain, u.Chain)
	}
	return false
}

// Consume uses the approval id for the call u: a once-scoped approval moves
// to Consumed (it never covers another call); a session or task grant stays
// Approved and records the use. ErrNotCovered if id does not cover u.
func (s *Service) Consume(id string, u Use) (*Record, error) {
	s.mu.Lock()
	r, err := s.load(id)
	var t Transition
	if err == nil {
		r, t, err = s.expireLocked(r)
	}
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	if t.Seq != 0 {
		s.mu.Unlock()
		s.notify(r, t)
		return r, fmt.Errorf("use approval %s: %w", id, ErrExpired)
	}
	if !s.covers(r, u) {
		s.mu.Unlock()
		return r, fmt.Errorf("use approval %s (%s, scope %s) for call %s: %w", id, r.State, r.Scope, u.CallID, ErrNotCovered)
	}
	to := Consumed
	if r.Scope != ScopeOnce {
		to = Approved
	}
	r, t, err = s.appendLocked(r, Transition{To: to, By: "broker", Channel: ChannelBroker, CallID: u.CallID, Note: "used by call " + u.CallID})
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	s.notify(r, t)
	return r, nil
}

// Covering finds an approved record that covers u and uses it: a
// once-scoped approval for this very call (for example one decided while
// the broker restarted), or a live session or task grant. ErrNotCovered if
// there is none.
func (s *Service) Covering(u Use) (*Record, error) {
	sts, err := s.st.Approvals()
	if err != nil {
		return nil, err
	}
	for _, st := range sts {
		r := st.Record
		if Fold(r, st.Transitions) != nil || !s.covers(r, u) {
			continue
		}
		r, err := s.Consume(r.ID, u)
		if errors.Is(err, ErrNotCovered) || errors.Is(err, ErrExpired) {
			continue // raced with another use or the clock
		}
		return r, err
	}
	return nil, ErrNotCovered
}

// Pending returns a pending out-of-band approval asked for the same call
// digest, so that a retried call waits on it instead of asking again.
func (s *Service) Pending(callDigest string) (*Record, bool) {
	sts, err := s.st.Approvals()
	if err != nil {
		return nil, false
	}
	for _, st := range sts {
		r := st.Record
		if r.CallDigest != callDigest || r.Asked != ChannelOutOfBand || Fold(r, st.Transitions) != nil {
			continue
		}
		if r.State == Requested && !s.overdue(r) {
			return r, true
		}
	}
	return nil, false
}
