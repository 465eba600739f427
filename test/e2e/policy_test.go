package e2e

import (
	"slices"
	"testing"
)

const forbidFail = permitAll + `
@id("no-fail")
forbid (principal, action == Broker::Action::"call_tool", resource == Broker::Tool::"ts/fail");
`

// TestDeniedByPolicy (case 6): a forbidden call is refused with
// denied_by_policy, recorded as a deny naming the policy, and never reaches
// the downstream; the same tool of another server still works.
func TestDeniedByPolicy(t *testing.T) {
	b, events := tsBroker(t, brokerConfig{policies: forbidFail})
	for _, era := range eras {
		t.Run(era, func(t *testing.T) {
			cs := connect(t, b.url, era, nil, "")
			ts := waitTools(t, cs, "ts__echo", "tsh__fail")
			if slices.Contains(toolNames(ts), "ts__fail") {
				t.Errorf("ts__fail is listed although policy forbids every call of it")
			}
			res := callTool(t, cs, "ts__fail", map[string]any{})
			callID := expectRefusal(t, res, "denied_by_policy")
			if txt := resultText(res); txt == "intentional failure" {
				t.Errorf("the downstream answered: %q", txt)
			}
			ev := b.waitAudit("call.decided deny for "+callID, func(e auditEvent) bool {
				return e.Type == "call.decided" && e.CallID == callID
			})
			if ev.Decision != "deny" || ev.Reason != "denied_by_policy" || !slices.Contains(ev.PolicyIDs, "no-fail") {
				t.Errorf("decision record = %+v, want deny, denied_by_policy, policy_ids with no-fail", ev)
			}
			if ev.Target != "ts__fail" || ev.Server != "ts" || ev.Agent != defaultAgent {
				t.Errorf("decision record names target %q server %q agent %q", ev.Target, ev.Server, ev.Agent)
			}
			for _, e := range b.callEvents(callID) {
				if e.Type == "call.completed" && e.Status == "ok" {
					t.Errorf("denied call has an ok outcome: %+v", e)
				}
			}
			if calls := eventsWith(t, events["ts"], "call fail "); len(calls) > 0 {
				t.Errorf("the denied call reached the downstream: %v", calls)
			}
			// Not forbidden on the other server: forwarded, and the
			// downstream's own isError result comes back.
			res = callTool(t, cs, "tsh__fail", map[string]any{})
			if !res.IsError || resultText(res) != "intentional failure" {
				t.Errorf("tsh__fail = %s, want the downstream's intentional failure", mustJSON(res))
			}
		})
	}
}
