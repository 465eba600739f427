package policies

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"
)

var testNow = time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)

// wire forms of a Request for testdata/cases.json.
type jsonRequest struct {
	CallID    string         `json:"call_id"`
	Action    string         `json:"action"`
	Initiator jsonInitiator  `json:"initiator"`
	Chain     []jsonAgent    `json:"chain"`
	Target    jsonTarget     `json:"target"`
	Args      map[string]any `json:"args,omitempty"`
	Approval  *jsonApproval  `json:"approval,omitempty"`
}

type jsonInitiator struct {
	Kind   string   `json:"kind"`
	ID     string   `json:"id"`
	Tenant string   `json:"tenant,omitempty"`
	Groups []string `json:"groups,omitempty"`
}

type jsonAgent struct {
	ID      string   `json:"id"`
	Classes []string `json:"classes,omitempty"`
}

type jsonTarget struct {
	Kind        string   `json:"kind"`
	Server      string   `json:"server"`
	Name        string   `json:"name"`
	Exposed     string   `json:"exposed"`
	ReadOnly    bool     `json:"read_only"`
	Destructive bool     `json:"destructive"`
	Idempotent  bool     `json:"idempotent"`
	OpenWorld   bool     `json:"open_world"`
	RiskTags    []string `json:"risk_tags,omitempty"`
}

type jsonApproval struct {
	Granted  bool   `json:"granted"`
	Approver string `json:"approver"`
	CallID   string `json:"call_id"`
}

type jsonWant struct {
	Outcome   string   `json:"outcome"`
	DeniedBy  string   `json:"denied_by"`
	PolicyIDs []string `json:"policy_ids"`
}

type decisionCase struct {
	Name    string      `json:"name"`
	Request jsonRequest `json:"request"`
	Want    jsonWant    `json:"want"`
}

// toRequest converts the wire form; JSON integers become int64 (json.Number).
func (j jsonRequest) toRequest(t testing.TB) Request {
	t.Helper()
	req := Request{
		CallID: j.CallID,
		Action: Action(j.Action),
		Initiator: Initiator{
			Kind: InitiatorKind(j.Initiator.Kind), ID: j.Initiator.ID,
			Tenant: j.Initiator.Tenant, Groups: j.Initiator.Groups,
		},
		Target: Target{
			Kind: TargetKind(j.Target.Kind), Server: j.Target.Server, Name: j.Target.Name, Exposed: j.Target.Exposed,
			ReadOnly: j.Target.ReadOnly, Destructive: j.Target.Destructive, Idempotent: j.Target.Idempotent,
			OpenWorld: j.Target.OpenWorld, RiskTags: j.Target.RiskTags,
		},
		Args: map[string]any{},
		Now:  testNow,
	}
	for _, a := range j.Chain {
		req.Chain = append(req.Chain, Agent{ID: a.ID, Classes: a.Classes})
	}
	for k, v := range j.Args {
		switch v := v.(type) {
		case json.Number:
			n, err := v.Int64()
			if err != nil {
				t.Fatalf("arg %s: %v", k, err)
			}
			req.Args[k] = n
		default:
			req.Args[k] = v
		}
	}
	if j.Approval != nil {
		req.Approval = &Approval{Granted: j.Approval.Granted, Approver: j.Approval.Approver, CallID: j.Approval.CallID}
	}
	return req
}

// demoSet compiles Baseline()+Demo() (plus extra sources) or fails the test.
func demoSet(t testing.TB, extra ...Source) *Set {
	t.Helper()
	s, err := Compile(append(append(Baseline(), Demo()...), extra...))
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return s
}

func mustCompile(t testing.TB, srcs ...Source) *Set {
	t.Helper()
	s, err := Compile(srcs)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return s
}

// req builds a request for alice (team eng) through planner -> coder.
func req(action Action, target Target, args map[string]any) Request {
	return Request{
		CallID:    "call-1",
		Action:    action,
		Initiator: Initiator{Kind: InitiatorUser, ID: "alice", Tenant: "acme", Groups: []string{"eng"}},
		Chain: []Agent{
			{ID: "spiffe://example.org/agent/planner", Classes: []string{"planning"}},
			{ID: "spiffe://example.org/agent/coder", Classes: []string{"coding"}},
		},
		Target: target,
		Args:   args,
		Now:    testNow,
	}
}

func tool(server, name string) Target {
	return Target{
		Kind: TargetTool, Server: server, Name: name, Exposed: fmt.Sprintf("%s__%s", server, name),
		Destructive: true, OpenWorld: true,
	}
}
