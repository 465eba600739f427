package approval

import (
	"fmt"
	"slices"
	"time"
)

// Scope is what an approval covers. A closed set.
type Scope string

const (
	// ScopeOnce covers exactly one call: the one whose digest (tool,
	// canonical arguments, session, chain) it was asked for. The default.
	ScopeOnce Scope = "once"
	// ScopeSession covers calls of the same tool by the same chain in the
	// same session until the grant expires. Only if policy allows it.
	ScopeSession Scope = "session"
	// ScopeTask covers calls of the same tool by the same chain in the same
	// task until the grant expires. Only if policy allows it.
	ScopeTask Scope = "task"
)

// Validate reports whether s is a known scope.
func (s Scope) Validate() error {
	switch s {
	case ScopeOnce, ScopeSession, ScopeTask:
		return nil
	}
	return fmt.Errorf("approval scope %q is not once, session or task: %w", string(s), ErrInvalidRecord)
}

// Channel is where an approval was asked or decided. A closed set.
type Channel string

const (
	ChannelElicitation Channel = "elicitation" // in band, in the agent's UI
	ChannelOutOfBand   Channel = "out_of_band" // asked out of band (any of the below)
	ChannelCLI         Channel = "cli"         // mcpbroker approvals, admin socket or store
	ChannelHTTP        Channel = "http"        // the approver HTTP API
	ChannelWeb         Channel = "web"         // the /approvals page
	ChannelBroker      Channel = "broker"      // the broker itself (expiry, cancellation, use)
)

// Validate reports whether c is a known channel.
func (c Channel) Validate() error {
	switch c {
	case ChannelElicitation, ChannelOutOfBand, ChannelCLI, ChannelHTTP, ChannelWeb, ChannelBroker:
		return nil
	}
	return fmt.Errorf("approval channel %q: %w", string(c), ErrInvalidRecord)
}

// Mode says who may decide. A closed set.
type Mode string

const (
	// ModeInitiator: only the initiator, in band (elicitation).
	ModeInitiator Mode = "initiator"
	// ModeApprover: an approver out of band, never the initiator or an
	// agent on the chain, and in Group when the policy names one.
	ModeApprover Mode = "approver"
)

// Validate reports whether m is a known mode.
func (m Mode) Validate() error {
	switch m {
	case ModeInitiator, ModeApprover:
		return nil
	}
	return fmt.Errorf("approval mode %q: %w", string(m), ErrInvalidRecord)
}

// Field is one argument as it was shown to the human: secret-looking
// fields are replaced by "[redacted]", long values are cut.
type Field struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Record is one approval. The fields down to ExpiresAt are the request,
// written once by Service.Request; the fields after it are derived from
// Transitions (the append-only history) whenever a record is read.
type Record struct {
	ID           string    `json:"id"`
	CallID       string    `json:"call_id"`           // the call that asked
	Session      string    `json:"session,omitempty"` // broker session (or the 2026-07-28 session key)
	Agent        string    `json:"agent"`
	Chain        []string  `json:"chain,omitempty"` // every agent, outermost first, the acting one last
	Initiator    string    `json:"initiator"`
	Tenant       string    `json:"tenant,omitempty"`
	Task         string    `json:"task,omitempty"`
	TaskPurpose  string    `json:"task_purpose,omitempty"`
	Server       string    `json:"server"`
	Tool         string    `json:"tool"`                    // as the agent sees it
	ArgsDigest   string    `json:"args_digest"`             // hmac-sha256 of the canonical arguments
	CallDigest   string    `json:"call_digest"`             // hmac-sha256 of tool, arguments, session, chain, initiator
	Summary      []Field   `json:"summary"`                 // the redacted argument summary that was shown
	Prompt       string    `json:"prompt"`                  // the exact text shown
	Reason       string    `json:"reason,omitempty"`        // the policy's reason
	PolicyIDs    []string  `json:"policy_ids"`              // the policies that asked
	Mode         Mode      `json:"mode"`                    // who may decide
	Group        string    `json:"group,omitempty"`         // approver group(s) named by policy, comma-separated
	Asked        Channel   `json:"asked"`                   // elicitation or out_of_band
	Scope        Scope     `json:"scope"`                   // what an approval covers
	ScopeTTL     Duration  `json:"scope_ttl,omitempty"`     // how long a session/task grant lasts after approval
	RequestedAt  time.Time `json:"requested_at"`            //
	ExpiresAt    time.Time `json:"expires_at"`              // decision deadline
	PolicyDigest string    `json:"policy_digest,omitempty"` // policy set that asked

	// Derived from Transitions.
	State       State        `json:"state"`
	DecidedAt   *time.Time   `json:"decided_at,omitempty"`
	Approver    string       `json:"approver,omitempty"`
	Decision    string       `json:"decision,omitempty"` // approve, deny
	Channel     Channel      `json:"channel,omitempty"`  // where it was decided
	Comment     string       `json:"comment,omitempty"`
	GrantUntil  *time.Time   `json:"grant_until,omitempty"` // session/task scope: end of the grant
	UsedBy      []string     `json:"used_by,omitempty"`     // call IDs the approval let through
	Transitions []Transition `json:"transitions"`
}

// Duration is a time.Duration that reads and writes as "5m0s" in JSON.
type Duration time.Duration

func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	*d = Duration(v)
	return err
}

// Transition is one appended change of state.
type Transition struct {
	Seq     int       `json:"seq"` // 1 for the request, then +1 each
	At      time.Time `json:"at"`
	From    State     `json:"from,omitempty"`
	To      State     `json:"to"`
	By      string    `json:"by,omitempty"` // approver identity, or "broker"
	Channel Channel   `json:"channel"`
	Comment string    `json:"comment,omitempty"`
	CallID  string    `json:"call_id,omitempty"` // the call that used the approval
	Note    string    `json:"note,omitempty"`
}

// request returns the record's request part (derived fields zeroed).
func (r *Record) request() *Record {
	q := *r
	q.State, q.DecidedAt, q.Approver, q.Decision, q.Channel, q.Comment = "", nil, "", "", "", ""
	q.GrantUntil, q.UsedBy, q.Transitions = nil, nil, nil
	return &q
}

func (r *Record) validate() error {
	var missing []string
	for name, v := range map[string]string{"id": r.ID, "call_id": r.CallID, "agent": r.Agent, "initiator": r.Initiator,
		"tool": r.Tool, "call_digest": r.CallDigest, "prompt": r.Prompt} {
		if v == "" {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		return fmt.Errorf("approval %s: missing %v: %w", r.ID, missing, ErrInvalidRecord)
	}
	if r.ExpiresAt.IsZero() || !r.ExpiresAt.After(r.RequestedAt) {
		return fmt.Errorf("approval %s: expires_at must follow requested_at: %w", r.ID, ErrInvalidRecord)
	}
	if err := r.Scope.Validate(); err != nil {
		return err
	}
	if err := r.Mode.Validate(); err != nil {
		return err
	}
	return r.Asked.Validate()
}

// Fold recomputes the derived fields of r from ts, which must be in
// sequence order starting at 1 with a transition to Requested. It fails on
// a gap or a move the state machine does not allow: a record whose history
// does not replay is not trusted.
func Fold(r *Record, ts []Transition) error {
	q := r.request()
	*r = *q
	for i, t := range ts {
		if t.Seq != i+1 {
			return fmt.Errorf("approval %s: transition %d has seq %d: %w", r.ID, i+1, t.Seq, ErrInvalidTransition)
		}
		if i == 0 {
			if t.To != Requested || t.From != "" {
				return fmt.Errorf("approval %s: history does not start with requested: %w", r.ID, ErrInvalidTransition)
			}
		} else if t.From != r.State || !CanMove(t.From, t.To) {
			return fmt.Errorf("approval %s: %s → %s at seq %d: %w", r.ID, t.From, t.To, t.Seq, ErrInvalidTransition)
		}
		apply(r, t)
	}
	r.Transitions = slices.Clone(ts)
	return nil
}

func apply(r *Record, t Transition) {
	switch t.To {
	case Approved, Denied:
		if t.From == Requested {
			at := t.At
			r.DecidedAt, r.Approver, r.Channel, r.Comment = &at, t.By, t.Channel, t.Comment
			r.Decision = "deny"
			if t.To == Approved {
				r.Decision = "approve"
				if r.Scope != ScopeOnce {
					until := t.At.Add(time.Duration(r.ScopeTTL))
					r.GrantUntil = &until
				}
			}
		} else if t.CallID != "" {
			r.UsedBy = append(r.UsedBy, t.CallID)
		}
	case Consumed:
		r.UsedBy = append(r.UsedBy, t.CallID)
	case Expired, Cancelled:
		if t.From == Requested {
			at := t.At
			r.DecidedAt, r.Channel, r.Comment = &at, t.Channel, t.Comment
			if t.By != "" && t.By != "broker" {
				r.Approver = t.By
			}
		}
	}
	r.State = t.To
}
