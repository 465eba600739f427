package policies

import (
	"slices"
	"strings"
	"testing"
)

const (
	logOnlyPermitWeb = `
@id("shadow-web")
@mode("log_only")
permit (principal, action, resource in Broker::ToolServer::"web");`
	logOnlyErroring = `
@id("shadow-overflow")
@mode("log_only")
forbid (principal, action == Broker::Action::"call_tool", resource in Broker::ToolServer::"ops")
when { context.args has amount && context.args.amount * 1000000 > 5000000000 };`
)

func TestShadow(t *testing.T) {
	srcs := append(Baseline(),
		Source{Name: "a.cedar", Text: []byte(agentOnlyPolicy + engTeamPolicy + logOnlyForbid + logOnlyPermitWeb + logOnlyErroring)})
	eng := NewEngine(mustCompile(t, srcs...))
	tests := []struct {
		name          string
		target        Target
		args          map[string]any
		want, shadow  Outcome
		shadowEffects []string
	}{
		{name: "log_only forbid: enforced allow, shadow deny in every pass",
			target: tool("ops", "run"), want: Allow, shadow: Deny, shadowEffects: []string{"shadow_deny:shadow-no-ops"}},
		{name: "log_only permit: enforced deny, shadow allow",
			target: tool("web", "fetch"), want: Deny, shadow: Allow, shadowEffects: []string{"shadow_allow:shadow-web"}},
		{name: "no log_only policy applies: no shadow",
			target: tool("notes", "read"), want: Deny},
		{name: "erroring log_only policy is reported, not enforced",
			target: tool("ops", "run"), args: map[string]any{"amount": int64(1) << 60}, want: Allow, shadow: Deny,
			shadowEffects: []string{"shadow_deny:shadow-no-ops", "shadow_error:shadow-overflow"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := eng.Decide(req(ActionCallTool, tt.target, tt.args))
			if d.Outcome != tt.want || d.ShadowOutcome != tt.shadow {
				t.Fatalf("outcome %s shadow %q, want %s %q (%+v)", d.Outcome, d.ShadowOutcome, tt.want, tt.shadow, d)
			}
			if got := ShadowStrings(d.Shadow); !slices.Equal(got, tt.shadowEffects) {
				t.Errorf("shadow %v, want %v", got, tt.shadowEffects)
			}
			for _, r := range d.Shadow {
				if err := r.Effect.Validate(); err != nil || r.Principal == "" {
					t.Errorf("bad shadow result %+v", r)
				}
			}
			// Enforced semantics never see log_only policies.
			for _, id := range d.PolicyIDs {
				if strings.HasPrefix(id, "shadow-") {
					t.Errorf("log_only policy %s in enforced PolicyIDs", id)
				}
			}
		})
	}
}

func TestCandidate(t *testing.T) {
	live := demoSet(t)
	cand := mustCompile(t, Baseline()...) // would deny everything
	eng := NewEngine(live)
	r := req(ActionCallTool, tool("notes", "read_note"), nil)
	if d := eng.Decide(r); d.Candidate != nil {
		t.Fatalf("candidate without SetCandidate: %+v", d.Candidate)
	}
	eng.SetCandidate(cand)
	d := eng.Decide(r)
	if d.Outcome != Allow || d.Digest != live.Digest() {
		t.Fatalf("enforced decision changed: %+v", d)
	}
	if d.Candidate == nil || d.Candidate.Outcome != Deny || d.Candidate.Digest != cand.Digest() || d.Candidate.DeniedBy != `Broker::User::"alice"` {
		t.Fatalf("candidate %+v", d.Candidate)
	}
	if x := eng.Explain(r); x.Candidate == nil || x.Candidate.Outcome != Deny {
		t.Fatalf("explain candidate %+v", x.Candidate)
	}
	eng.SetCandidate(nil)
	if d := eng.Decide(r); d.Candidate != nil {
		t.Fatal("candidate after SetCandidate(nil)")
	}
}

func TestExplain(t *testing.T) {
	eng := NewEngine(demoSet(t))
	t.Run("allow lists permits with positions", func(t *testing.T) {
		x := eng.Explain(req(ActionCallTool, tool("notes", "read_note"), nil))
		if x.Outcome != Allow || len(x.Passes) != 3 || x.ApprovalNote != "" {
			t.Fatalf("%+v", x)
		}
		p := x.Passes[0]
		if !p.Allowed || p.Cedar != "allow" || p.Evaluated == 0 || len(p.Determining) != 1 {
			t.Fatalf("pass %+v", p)
		}
		if d := p.Determining[0]; d.ID != "demo-users-demo-servers" || d.Effect != "permit" || d.Position != "demo/grants.cedar:6:1" {
			t.Errorf("determining %+v", d)
		}
	})
	t.Run("approval cures", func(t *testing.T) {
		x := eng.Explain(req(ActionCallTool, tool("notes", "write_note"), map[string]any{"name": "shared/x"}))
		if x.Outcome != NeedsApproval || !x.ApprovalCures || !strings.Contains(x.ApprovalNote, "would allow") {
			t.Fatalf("%+v", x)
		}
		if d := x.Passes[0].Determining[0]; d.Approval != "required" || d.Effect != "forbid" {
			t.Errorf("%+v", d)
		}
	})
	t.Run("plain forbid is not curable", func(t *testing.T) {
		x := eng.Explain(req(ActionCallTool, tool("notes", "delete_note"), nil))
		if x.Outcome != Deny || x.ApprovalCures || !strings.Contains(x.ApprovalNote, "demo-notes-no-delete, which has no @approval") {
			t.Fatalf("%+v", x)
		}
	})
	t.Run("no permit", func(t *testing.T) {
		x := eng.Explain(req(ActionCallTool, tool("ops", "run"), nil))
		if x.Outcome != Deny || len(x.Passes[0].Determining) != 0 || !strings.Contains(x.ApprovalNote, "no policy permits") {
			t.Fatalf("%+v", x)
		}
	})
	t.Run("errors carry positions", func(t *testing.T) {
		e := NewEngine(mustCompile(t, append(Baseline(), Source{Name: "o.cedar", Text: []byte(agentOnlyPolicy + engTeamPolicy + overflowForbid)})...))
		x := e.Explain(req(ActionCallTool, tool("ops", "run"), map[string]any{"amount": int64(1) << 62}))
		if x.Outcome != Deny || len(x.Passes[0].Errors) != 1 {
			t.Fatalf("%+v", x)
		}
		if pe := x.Passes[0].Errors[0]; pe.ID != "overflow-forbid" || pe.Position != "o.cedar:6:1" || pe.Message == "" {
			t.Errorf("%+v", pe)
		}
		if !strings.Contains(x.ApprovalNote, "evaluation errors") {
			t.Errorf("note %q", x.ApprovalNote)
		}
	})
	t.Run("invalid request", func(t *testing.T) {
		r := req(ActionCallTool, tool("notes", "read_note"), nil)
		r.Chain = nil
		if x := eng.Explain(r); x.Outcome != Deny || !strings.Contains(x.Invalid, "empty delegation chain") {
			t.Fatalf("%+v", x)
		}
	})
}

func TestSpendLimitAndTenantAttributes(t *testing.T) {
	const pol = `
@id("user-spend")
permit (principal is Broker::User, action, resource)
when { principal has spendLimit && context.args has amount && context.args.amount <= principal.spendLimit };
@id("agents-any")
permit (principal is Broker::Agent, action, resource);
@id("tenant-isolation")
forbid (principal is Broker::User, action, resource)
when { resource has tenant && !(principal has tenant && principal.tenant == resource.tenant) };`
	eng := NewEngine(mustCompile(t, append(Baseline(), Source{Name: "p.cedar", Text: []byte(pol)})...))
	limit := int64(500)
	for _, tt := range []struct {
		name   string
		limit  *int64
		amount int64
		tenant string
		want   Outcome
	}{
		{"under limit", &limit, 400, "", Allow},
		{"over limit", &limit, 600, "", Deny},
		{"no limit attribute", nil, 1, "", Deny},
		{"own tenant", &limit, 1, "acme", Allow},
		{"other tenant", &limit, 1, "globex", Deny},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tg := tool("pay", "transfer")
			tg.Tenant = tt.tenant
			r := req(ActionCallTool, tg, map[string]any{"amount": tt.amount})
			r.Initiator.SpendLimit = tt.limit
			if d := eng.Decide(r); d.Outcome != tt.want {
				t.Errorf("%s, want %s: %+v", d.Outcome, tt.want, d.Passes)
			}
		})
	}
}
