package policies

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cedar-policy/cedar-go/types"
)

// Entity types of the schema.
const (
	typeTeam       types.EntityType = "Broker::Team"
	typeUser       types.EntityType = "Broker::User"
	typeWorkload   types.EntityType = "Broker::Workload"
	typeAgentClass types.EntityType = "Broker::AgentClass"
	typeAgent      types.EntityType = "Broker::Agent"
	typeToolServer types.EntityType = "Broker::ToolServer"
	typeTool       types.EntityType = "Broker::Tool"
	typeResource   types.EntityType = "Broker::Resource"
	typePrompt     types.EntityType = "Broker::Prompt"
	typeAction     types.EntityType = "Broker::Action"
)

func actionUID(a Action) types.EntityUID { return types.NewEntityUID(typeAction, types.String(a)) }

// overlay is the per-request entity store: the request's own entities first, the
// Set's shared immutable ones (the action entities) second. Nothing shared is
// ever mutated.
type overlay struct {
	req  types.EntityMap
	base types.EntityMap
}

func (o overlay) Get(uid types.EntityUID) (types.Entity, bool) {
	if e, ok := o.req[uid]; ok {
		return e, true
	}
	e, ok := o.base[uid]
	return e, ok
}

// built is what one request turns into: the principals in pass order, the
// resource, and the entity store.
type built struct {
	principals []types.EntityUID
	resource   types.EntityUID
	entities   overlay
}

// validateRequest checks what the engine relies on; a request that fails it is
// denied (fail closed).
func validateRequest(req *Request, action Action) error {
	var errs []error
	if err := action.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := req.Initiator.Kind.Validate(); err != nil {
		errs = append(errs, err)
	}
	if req.Initiator.ID == "" {
		errs = append(errs, errors.New("empty initiator id"))
	}
	if len(req.Chain) == 0 {
		errs = append(errs, errors.New("empty delegation chain"))
	}
	for i, a := range req.Chain {
		if a.ID == "" {
			errs = append(errs, fmt.Errorf("chain[%d]: empty agent id", i))
		}
	}
	if err := req.Target.Kind.Validate(); err != nil {
		errs = append(errs, err)
	} else if k := action.targetKind(); k != "" && k != req.Target.Kind {
		errs = append(errs, fmt.Errorf("action %s does not apply to a %s", action, req.Target.Kind))
	}
	if req.Target.Server == "" || req.Target.Name == "" {
		errs = append(errs, errors.New("target needs a server and a name"))
	}
	return errors.Join(errs...)
}

func (k TargetKind) entityType() types.EntityType {
	switch k {
	case TargetResource:
		return typeResource
	case TargetPrompt:
		return typePrompt
	}
	return typeTool
}

// trustDomain returns the host part of a SPIFFE ID, "" if id is not one.
// Identity was authenticated upstream; a non-SPIFFE ID (dev mode) simply has no
// trust domain that a policy could match.
func trustDomain(id string) string {
	rest, ok := strings.CutPrefix(id, "spiffe://")
	if !ok {
		return ""
	}
	td, _, _ := strings.Cut(rest, "/")
	return td
}

// emptyStringSet is stringSet(nil), built once: Sets are immutable.
var emptyStringSet = types.NewSet(make([]types.Value, 0)...)

func stringSet(ss []string) types.Set {
	if len(ss) == 0 {
		return emptyStringSet
	}
	vs := make([]types.Value, len(ss))
	for i, s := range ss {
		vs[i] = types.String(s)
	}
	return types.NewSet(vs...)
}

// buildEntities turns the request into principals, resource and entities.
func buildEntities(req *Request, base types.EntityMap) built {
	ents := make(types.EntityMap, len(req.Chain)+3)

	initType := typeUser
	if req.Initiator.Kind == InitiatorWorkload {
		initType = typeWorkload
	}
	initUID := types.NewEntityUID(initType, types.String(req.Initiator.ID))
	teams := make([]types.EntityUID, len(req.Initiator.Groups))
	for i, g := range req.Initiator.Groups {
		teams[i] = types.NewEntityUID(typeTeam, types.String(g))
	}
	initAttrs := types.RecordMap{}
	if req.Initiator.Tenant != "" {
		initAttrs["tenant"] = types.String(req.Initiator.Tenant)
	}
	if req.Initiator.SpendLimit != nil {
		initAttrs["spendLimit"] = types.Long(*req.Initiator.SpendLimit)
	}
	ents[initUID] = types.Entity{UID: initUID, Parents: types.NewEntityUIDSet(teams...), Attributes: types.NewRecord(initAttrs)}

	principals := make([]types.EntityUID, 0, len(req.Chain)+1)
	principals = append(principals, initUID)
	for _, a := range req.Chain {
		uid := types.NewEntityUID(typeAgent, types.String(a.ID))
		parents := make([]types.EntityUID, 0, len(a.Classes)+1)
		for _, c := range a.Classes {
			parents = append(parents, types.NewEntityUID(typeAgentClass, types.String(c)))
		}
		parents = append(parents, initUID) // task binding
		ents[uid] = types.Entity{
			UID:     uid,
			Parents: types.NewEntityUIDSet(parents...),
			Attributes: types.NewRecord(types.RecordMap{
				"spiffeId":    types.String(a.ID),
				"trustDomain": types.String(trustDomain(a.ID)),
			}),
		}
		principals = append(principals, uid)
	}

	t := &req.Target
	serverUID := types.NewEntityUID(typeToolServer, types.String(t.Server))
	ents[serverUID] = types.Entity{UID: serverUID, Attributes: types.NewRecord(nil)}
	resUID := types.NewEntityUID(t.Kind.entityType(), types.String(t.Server+"/"+t.Name))
	resAttrs := types.RecordMap{
		"name":            types.String(t.Exposed),
		"readOnlyHint":    types.Boolean(t.ReadOnly),
		"destructiveHint": types.Boolean(t.Destructive),
		"idempotentHint":  types.Boolean(t.Idempotent),
		"openWorldHint":   types.Boolean(t.OpenWorld),
		"riskTags":        stringSet(t.RiskTags),
	}
	if t.Tenant != "" {
		resAttrs["tenant"] = types.String(t.Tenant)
	}
	if t.Kind == TargetTool {
		resAttrs["pinned"] = types.Boolean(!t.Unpinned)
	}
	ents[resUID] = types.Entity{
		UID:        resUID,
		Parents:    types.NewEntityUIDSet(serverUID),
		Attributes: types.NewRecord(resAttrs),
	}
	return built{principals: principals, resource: resUID, entities: overlay{req: ents, base: base}}
}

// argsRecord keeps only the ToolArgs fields the schema declares, with a
// matching Go type; everything else is dropped.
func argsRecord(args map[string]any, kinds map[string]argKind) types.Record {
	rm := types.RecordMap{}
	for k, v := range args {
		kind, ok := kinds[k]
		if !ok {
			continue
		}
		switch v := v.(type) {
		case string:
			if kind == argString {
				rm[types.String(k)] = types.String(v)
			}
		case int64:
			if kind == argLong {
				rm[types.String(k)] = types.Long(v)
			}
		case bool:
			if kind == argBool {
				rm[types.String(k)] = types.Boolean(v)
			}
		}
	}
	return types.NewRecord(rm)
}

// contextParts are the context fields shared by every pass of one request.
type contextParts struct {
	callID        string
	now           time.Time
	chain         types.Record
	args          types.Value
	riskTags      types.Set
	task          types.Value // nil without a task
	approvalValue *Approval
}

// chainRecord is the context.chain value; principals are buildEntities'.
func chainRecord(req *Request, principals []types.EntityUID) types.Record {
	agents := make([]types.Value, 0, len(principals)-1)
	for _, p := range principals[1:] {
		agents = append(agents, p)
	}
	return types.NewRecord(types.RecordMap{
		"depth":         types.Long(len(req.Chain)),
		"agents":        types.NewSet(agents...),
		"initiatorKind": types.String(req.Initiator.Kind),
	})
}

// newContextParts takes the request's chain record (chainRecord) and task value
// (taskRecord), which the Set caches, and adds what varies per call.
func newContextParts(req *Request, chain types.Record, task types.Value, args types.Value) contextParts {
	return contextParts{
		callID:        req.CallID,
		now:           req.Now,
		chain:         chain,
		args:          args,
		riskTags:      stringSet(req.RiskTags),
		task:          task,
		approvalValue: req.Approval,
	}
}

// taskRecord is the context.task value, or nil without a task.
func taskRecord(t *Task) types.Value {
	if t == nil {
		return nil
	}
	return types.NewRecord(types.RecordMap{
		"id":           types.String(t.ID),
		"allowedTools": stringSet(t.AllowedTools),
		"expiresAt":    types.NewDatetime(t.ExpiresAt),
		"purpose":      types.String(t.Purpose),
	})
}

// record builds the context; approval (if non-nil) overrides the request's.
func (c contextParts) record(approval *Approval) types.Record {
	rm := types.RecordMap{
		"callId":   types.String(c.callID),
		"now":      types.NewDatetime(c.now),
		"chain":    c.chain,
		"args":     c.args,
		"riskTags": c.riskTags,
	}
	if c.task != nil {
		rm["task"] = c.task
	}
	if approval == nil {
		approval = c.approvalValue
	}
	if approval != nil {
		rm["approval"] = types.NewRecord(types.RecordMap{
			"granted":  types.Boolean(approval.Granted),
			"approver": types.String(approval.Approver),
			"callId":   types.String(approval.CallID),
		})
	}
	return types.NewRecord(rm)
}
