package policies

import (
	"fmt"
	"time"
)

// Action is what the caller wants to do with the target. A closed set.
type Action string

const (
	ActionCallTool     Action = "call_tool"
	ActionReadResource Action = "read_resource"
	ActionGetPrompt    Action = "get_prompt"
	ActionListTools    Action = "list_tools"
	// ActionElicit and ActionSample are a downstream's server-initiated
	// requests made while serving a call (the call's target is the
	// resource): may this tool ask the agent's user, or sample its model?
	ActionElicit Action = "elicit"
	ActionSample Action = "sample"
)

// Validate reports whether a is one of the known actions.
func (a Action) Validate() error {
	switch a {
	case ActionCallTool, ActionReadResource, ActionGetPrompt, ActionListTools, ActionElicit, ActionSample:
		return nil
	}
	return fmt.Errorf("unknown action %q", string(a))
}

// targetKind is the kind of target the action applies to (the schema's appliesTo).
func (a Action) targetKind() TargetKind {
	switch a {
	case ActionCallTool, ActionListTools:
		return TargetTool
	case ActionReadResource:
		return TargetResource
	case ActionGetPrompt:
		return TargetPrompt
	}
	return ""
}

// InitiatorKind says whether the initiator is a human or a workload. A closed set.
type InitiatorKind string

const (
	InitiatorUser     InitiatorKind = "user"
	InitiatorWorkload InitiatorKind = "workload"
)

// Validate reports whether k is a known initiator kind.
func (k InitiatorKind) Validate() error {
	switch k {
	case InitiatorUser, InitiatorWorkload:
		return nil
	}
	return fmt.Errorf("unknown initiator kind %q", string(k))
}

// Initiator is the human or workload on whose behalf the chain acts. It becomes
// Broker::User::"<ID>" or Broker::Workload::"<ID>", in Broker::Team::"<g>" for
// every group.
type Initiator struct {
	Kind   InitiatorKind
	ID     string
	Tenant string // "" = no tenant attribute
	Groups []string
	// SpendLimit is the initiator's per-call spend limit in minor currency
	// units (principal.spendLimit); nil = no attribute.
	SpendLimit *int64
}

// Agent is one agent of the delegation chain: Broker::Agent::"<SPIFFE ID>", in
// Broker::AgentClass::"<c>" for every class and in its initiator.
type Agent struct {
	ID      string // SPIFFE ID
	Classes []string
}

// TargetKind is the kind of thing being used. A closed set.
type TargetKind string

const (
	TargetTool     TargetKind = "tool"
	TargetResource TargetKind = "resource"
	TargetPrompt   TargetKind = "prompt"
)

// Validate reports whether k is a known target kind.
func (k TargetKind) Validate() error {
	switch k {
	case TargetTool, TargetResource, TargetPrompt:
		return nil
	}
	return fmt.Errorf("unknown target kind %q", string(k))
}

// Target is the tool, resource or prompt of a request. The hints are taken as
// given: the caller has already applied the MCP defaults for untrusted servers
// (ReadOnly=false, Destructive=true, Idempotent=false, OpenWorld=true).
type Target struct {
	Kind    TargetKind
	Server  string // downstream server name from config, e.g. "notes"
	Name    string // downstream name: tool name, resource URI, or prompt name
	Exposed string // name the agent sees (e.g. "notes__read_note"); for resources the URI

	ReadOnly, Destructive, Idempotent, OpenWorld bool
	RiskTags                                     []string
	// Tenant is the tenant the server belongs to (resource.tenant); "" = a
	// shared server, no attribute.
	Tenant string
	// Unpinned says a tool's definition changed since it was pinned
	// (resource.pinned = false); the baseline forbids calling it until an
	// operator re-pins it. Tools only.
	Unpinned bool
}

// Approval is a human decision on one pending call, put into the Cedar context
// as context.approval. Only the approval service fills it in, after a human
// decided; policies compare CallID with context.callId.
type Approval struct {
	Granted  bool
	Approver string
	CallID   string
	// ID and Channel name the approval and where it was decided, for the
	// call's record; Cedar does not see them.
	ID      string
	Channel string
}

// Request is one authorization question. The engine reads it and never keeps it.
type Request struct {
	CallID    string
	Action    Action
	Initiator Initiator
	Chain     []Agent // delegation chain, acting agent LAST; len >= 1
	Target    Target
	// Args holds the canonical argument fields. Only fields declared by the
	// schema's ToolArgs whose Go type matches (string, int64, bool) reach Cedar;
	// everything else is dropped.
	Args     map[string]any
	Now      time.Time
	Approval *Approval // nil = no approval in context
	// RiskTags are per-call tags from argument scanning (context.riskTags),
	// e.g. "secret_in_args", "pii"; the target's own tags are Target.RiskTags.
	RiskTags []string
	Task     *Task // nil = the session carries no task
}

// Task is the session's delegated task boundary as Cedar sees it
// (context.task). AllowedTools are names agents see, already expanded from
// the task's patterns by the caller.
type Task struct {
	ID           string
	AllowedTools []string
	ExpiresAt    time.Time
	Purpose      string
}
