package policies

import (
	"context"
	"encoding/binary"

	"github.com/cedar-policy/cedar-go"
	"github.com/cedar-policy/cedar-go/types"
	xast "github.com/cedar-policy/cedar-go/x/exp/ast"
	"github.com/cedar-policy/cedar-go/x/exp/batch"
)

// Visible reports whether policy could allow this chain to use req.Target for
// SOME arguments; the broker uses it to filter tools/list (and resource and
// prompt lists). It asks the question of the action that uses the target
// (call_tool for a tool, read_resource for a resource, get_prompt for a prompt),
// whatever req.Action says, with context.args unknown: through cedar-go's
// experimental batch evaluation with args ignored, a forbid that tests args is
// dropped and a permit's condition on args is dropped. A deny that an approval
// would cure counts as visible. req.Args and req.Approval are not used.
//
// The answer is cached in the Set (see visibleKey): a listing repeated with
// the same chain and task costs a key and a map lookup per target.
func (e *Engine) Visible(req Request) bool {
	return e.Set().visible(&req)
}

// visibleAction is the action Visible asks about for a target of kind k.
func visibleAction(k TargetKind) Action {
	switch k {
	case TargetResource:
		return ActionReadResource
	case TargetPrompt:
		return ActionGetPrompt
	}
	return ActionCallTool
}

// Bounds of the Visible cache: when either is reached, the next insert starts
// it afresh. A key is about 200 bytes for a tools/list (the chain, the
// target, a task naming three tools), so the cache holds some 30 listings of
// 1,000 tools; a key over maxVisibleKey (a task naming hundreds of tools, as
// completions pass it) is not cached.
const (
	maxCachedVisible     = 1 << 15
	maxCachedVisibleKeys = 8 << 20 // bytes of keys
	maxVisibleKey        = 4 << 10
)

func (s *Set) visible(req *Request) bool {
	action := visibleAction(req.Target.Kind)
	if validateRequest(req, action) != nil {
		return false
	}
	c := s.cache
	if c == nil || s.visNow == nowOpaque {
		return s.visibleUncached(req, s.static(req), action)
	}
	var buf [1024]byte
	key := appendStaticKey(buf[:0], req)
	nStatic := len(key)
	key = s.appendVisibleKey(key, req)
	if len(key) > maxVisibleKey {
		return s.visibleUncached(req, s.staticByKey(req, key[:nStatic]), action)
	}
	c.visMu.RLock()
	v, ok := c.vis[string(key)]
	c.visMu.RUnlock()
	if ok {
		return v
	}
	v = s.visibleUncached(req, s.staticByKey(req, key[:nStatic]), action)
	c.visMu.Lock()
	if len(c.vis) >= c.maxVis || c.visBytes+len(key) > c.maxVisBytes {
		c.vis, c.visBytes = map[string]bool{}, 0
	}
	if _, dup := c.vis[string(key)]; !dup {
		c.vis[string(key)] = v
		c.visBytes += len(key)
	}
	c.visMu.Unlock()
	return v
}

// appendVisibleKey appends to a static key (appendStaticKey) every other
// field of req that the answer of Visible can depend on:
//   - CallID (context.callId, and the hypothetical approval's callId);
//   - RiskTags (context.riskTags);
//   - the whole Task (context.task), exactly;
//   - of Now (context.now), only what s.visNow says matters: nothing when no
//     enforced policy reads it, else how it compares with the task's expiry
//     (nowVsExpiry; s.visible does not cache under nowOpaque).
//
// Action, Args and Approval are not read by Visible (the action follows from
// Target.Kind, which the static key holds).
func (s *Set) appendVisibleKey(b []byte, req *Request) []byte {
	b = appendKeyString(b, req.CallID)
	b = appendKeyStrings(b, req.RiskTags)
	t := req.Task
	if t == nil {
		return append(b, 0)
	}
	b = append(b, 1)
	b = appendKeyString(b, t.ID)
	b = appendKeyString(b, t.Purpose)
	exp := types.NewDatetime(t.ExpiresAt).Milliseconds()
	b = binary.LittleEndian.AppendUint64(b, uint64(exp))
	b = appendKeyStrings(b, t.AllowedTools)
	if s.visNow == nowVsExpiry {
		now := types.NewDatetime(req.Now).Milliseconds()
		switch {
		case now < exp:
			b = append(b, '<')
		case now == exp:
			b = append(b, '=')
		default:
			b = append(b, '>')
		}
	}
	return b
}

// visibleUncached answers Visible for a validated req whose static part is st.
//
// Each pass evaluates the candidates that cannot read context.args with
// cedar.Authorize and only the others through batch evaluation: both decide
// every policy on its own (batch.Authorize partially evaluates each policy
// separately, and a policy that never reaches the ignored args evaluates as
// it would with them known), so the two halves combine (combine) into what
// batch evaluation of all candidates would say.
func (s *Set) visibleUncached(req *Request, st *reqStatic, action Action) bool {
	ents := overlay{req: st.ents, base: s.model.actions}
	parts := newContextParts(req, st.chain, s.taskValue(req.Task), batch.Ignore())
	parts.approvalValue = nil
	actUID := actionUID(action)
	eval := func(i int, p types.EntityUID, ctx types.Value) (types.Decision, types.Diagnostic) {
		free, args := st.visFree[i], st.visArgs[i]
		dec, diag := cedar.Authorize(free, ents, cedar.Request{
			Principal: p, Action: actUID, Resource: st.resource, Context: ctx.(types.Record),
		})
		if len(args) == 0 {
			return dec, diag
		}
		var bdec types.Decision
		var bdiag types.Diagnostic
		n := 0
		err := batch.Authorize(context.Background(), args, ents, batch.Request{
			Principal: p, Action: actUID, Resource: st.resource, Context: ctx,
		}, func(r batch.Result) error {
			n++
			bdec, bdiag = r.Decision, r.Diagnostic
			return nil
		})
		if err != nil || n != 1 {
			// Fail closed: an evaluation we cannot interpret is not an allow.
			msg := "batch evaluation did not produce exactly one result"
			if err != nil {
				msg = err.Error()
			}
			return cedar.Deny, types.Diagnostic{Errors: []types.DiagnosticError{{PolicyID: "", Message: msg}}}
		}
		return combine(dec, diag, bdec, bdiag)
	}
	passes, results, allowed := runPasses(st.principals, st.names, parts.record(nil), eval)
	if allowed {
		return true
	}
	if !s.approvalCurable(passes, results) {
		return false
	}
	hyp := &Approval{Granted: true, CallID: req.CallID}
	_, _, ok := runPasses(st.principals, st.names, parts.record(hyp), eval)
	return ok
}

// combine is the decision over two disjoint sets of policies, given the
// decision over each (as cedar.Authorize reports them: a Deny with reasons
// lists every satisfied forbid, an Allow every satisfied permit, a Deny
// without reasons has neither). Errors of both are kept.
func combine(d1 types.Decision, g1 types.Diagnostic, d2 types.Decision, g2 types.Diagnostic) (types.Decision, types.Diagnostic) {
	var out types.Diagnostic
	out.Errors = append(append(out.Errors, g1.Errors...), g2.Errors...)
	f1, f2 := d1 == cedar.Deny && len(g1.Reasons) > 0, d2 == cedar.Deny && len(g2.Reasons) > 0
	switch {
	case f1 || f2:
		if f1 {
			out.Reasons = append(out.Reasons, g1.Reasons...)
		}
		if f2 {
			out.Reasons = append(out.Reasons, g2.Reasons...)
		}
		return cedar.Deny, out
	case d1 == cedar.Allow || d2 == cedar.Allow:
		out.Reasons = append(append(out.Reasons, g1.Reasons...), g2.Reasons...)
		return cedar.Allow, out
	}
	return cedar.Deny, out
}

// splitArgs splits candidates into those that cannot read context.args and
// the others. Without the latter, free is l itself.
func splitArgs(l candidateList) (free, args candidateList) {
	n := 0
	for _, e := range l {
		if e.args {
			n++
		}
	}
	if n == 0 {
		return l, nil
	}
	free = make(candidateList, 0, len(l)-n)
	args = make(candidateList, 0, n)
	for _, e := range l {
		if e.args {
			args = append(args, e)
		} else {
			free = append(free, e)
		}
	}
	return free, args
}

// nowDep is how the answer of Visible can depend on context.now.
type nowDep uint8

const (
	nowNone     nowDep = iota // no policy reads context.now
	nowVsExpiry               // only as `context.now <op> context.task.expiresAt` (either side, any comparison)
	nowOpaque                 // any other way, or the policy reads the whole context
)

// contextUse is what the conditions of one policy read of the context,
// found syntactically: a policy can only observe a context attribute through
// an expression that names it (`context.a`, `context["a"]`, `context has a`),
// unless it uses the context record as a whole (wholeContext).
type contextUse struct {
	wholeContext bool // `context` other than as `context.a` or `context has a`
	args         bool // context.args accessed or tested
	now          nowDep
}

func contextUseOf(p *cedar.Policy) contextUse {
	var u contextUse
	var nCtx, nCtxAttr, nNow, nNowVsExp int
	for _, c := range (*xast.Policy)(p.AST()).Conditions {
		xast.Inspect(xast.NewNode(c.Body), func(n xast.IsNode) bool {
			switch n := n.(type) {
			case xast.NodeTypeVariable:
				if n.Name == "context" {
					nCtx++
				}
			case xast.NodeTypeAccess:
				if isContextAttr(n.Arg) {
					nCtxAttr++
					switch n.Value {
					case "args":
						u.args = true
					case "now":
						nNow++
					}
				}
			case xast.NodeTypeHas:
				if isContextAttr(n.Arg) {
					nCtxAttr++
					if n.Value == "args" {
						u.args = true
					}
				}
			case xast.NodeTypeLessThan:
				nNowVsExp += nowVsExpiryOperands(n.BinaryNode)
			case xast.NodeTypeLessThanOrEqual:
				nNowVsExp += nowVsExpiryOperands(n.BinaryNode)
			case xast.NodeTypeGreaterThan:
				nNowVsExp += nowVsExpiryOperands(n.BinaryNode)
			case xast.NodeTypeGreaterThanOrEqual:
				nNowVsExp += nowVsExpiryOperands(n.BinaryNode)
			case xast.NodeTypeEquals:
				nNowVsExp += nowVsExpiryOperands(n.BinaryNode)
			case xast.NodeTypeNotEquals:
				nNowVsExp += nowVsExpiryOperands(n.BinaryNode)
			}
			return true
		})
	}
	u.wholeContext = nCtx != nCtxAttr
	switch {
	case u.wholeContext:
		u.args, u.now = true, nowOpaque
	case nNow == 0:
		u.now = nowNone
	case nNow == nNowVsExp:
		u.now = nowVsExpiry
	default:
		u.now = nowOpaque
	}
	return u
}

// isContextAttr reports whether n is the variable context (so that its
// parent, an access or a has, names one attribute of it).
func isContextAttr(n xast.IsNode) bool {
	v, ok := n.(xast.NodeTypeVariable)
	return ok && v.Name == "context"
}

// isContextAccess reports whether n is context.<attr>.
func isContextAccess(n xast.IsNode, attr string) bool {
	a, ok := n.(xast.NodeTypeAccess)
	return ok && string(a.Value) == attr && isContextAttr(a.Arg)
}

// nowVsExpiryOperands is 1 if b compares context.now with
// context.task.expiresAt (in either order), else 0.
func nowVsExpiryOperands(b xast.BinaryNode) int {
	isExp := func(n xast.IsNode) bool {
		a, ok := n.(xast.NodeTypeAccess)
		return ok && a.Value == "expiresAt" && isContextAccess(a.Arg, "task")
	}
	if (isContextAccess(b.Left, "now") && isExp(b.Right)) || (isExp(b.Left) && isContextAccess(b.Right, "now")) {
		return 1
	}
	return 0
}

// nowDependence is how decisions over policies can depend on context.now:
// the most of any policy's.
func nowDependence(policies cedar.PolicyMap) nowDep {
	d := nowNone
	for _, p := range policies {
		d = max(d, contextUseOf(p).now)
	}
	return d
}
