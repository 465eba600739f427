package approval_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/mcpbroker/mcpbroker/broker/approval"
	"github.com/mcpbroker/mcpbroker/broker/store"
)

// clock is an injected, hand-moved clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func newService(t *testing.T) (*approval.Service, *clock, *[]approval.Transition, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "a.db")
	st, err := store.Open(path, store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = st.Close()
		db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if err := db.View(func(tx *bolt.Tx) error {
			for err := range tx.Check() {
				return err
			}
			return nil
		}); err != nil {
			t.Errorf("bbolt check: %v", err)
		}
	})
	clk := &clock{t: time.Date(2026, 10, 1, 12, 0, 0, 0, time.UTC)}
	var mu sync.Mutex
	var seen []approval.Transition
	svc := approval.New(approval.Options{Store: st, Now: clk.Now, OnTransition: func(r *approval.Record, tr approval.Transition) {
		mu.Lock()
		seen = append(seen, tr)
		mu.Unlock()
	}})
	return svc, clk, &seen, path
}

func request(svc *approval.Service, clk *clock, mode approval.Mode, scope approval.Scope, group string) (*approval.Record, error) {
	return svc.Request(approval.Record{
		CallID: "call-1", Session: "s1", Agent: "spiffe://t/agent/a", Chain: []string{"spiffe://t/agent/p", "spiffe://t/agent/a"},
		Initiator: "alice", Task: "task-1", Server: "payments", Tool: "payments__transfer", ArgsDigest: "hmac-sha256:aa",
		CallDigest: "hmac-sha256:call1", Prompt: "approve?", PolicyIDs: []string{"p1"}, Mode: mode, Group: group,
		Asked: approval.ChannelOutOfBand, Scope: scope, ScopeTTL: approval.Duration(time.Hour),
		RequestedAt: clk.Now(), ExpiresAt: clk.Now().Add(5 * time.Minute),
	})
}

func use(callID, digest string) approval.Use {
	return approval.Use{CallID: callID, CallDigest: digest, Session: "s1", Task: "task-1", Tool: "payments__transfer",
		Initiator: "alice", Chain: []string{"spiffe://t/agent/p", "spiffe://t/agent/a"}}
}

func TestDecideSeparationOfDuties(t *testing.T) {
	carol := approval.Approver{ID: "carol", Groups: []string{"secops"}}
	cases := []struct {
		name  string
		mode  approval.Mode
		group string
		d     approval.Decision
		want  error
	}{
		{"approver decides", approval.ModeApprover, "secops", approval.Decision{Approve: true, By: carol, Channel: approval.ChannelWeb}, nil},
		{"initiator approves own request", approval.ModeApprover, "", approval.Decision{Approve: true, By: approval.Approver{ID: "alice", Operator: true}, Channel: approval.ChannelCLI}, approval.ErrSeparation},
		{"agent on the chain", approval.ModeApprover, "", approval.Decision{Approve: true, By: approval.Approver{ID: "spiffe://t/agent/p"}, Channel: approval.ChannelHTTP}, approval.ErrSeparation},
		{"not in the group", approval.ModeApprover, "finance", approval.Decision{Approve: true, By: carol, Channel: approval.ChannelWeb}, approval.ErrNotInGroup},
		{"operator is in every group", approval.ModeApprover, "finance", approval.Decision{Approve: true, By: approval.Approver{ID: "ops", Operator: true}, Channel: approval.ChannelCLI}, nil},
		{"out of band answered by elicitation", approval.ModeApprover, "", approval.Decision{Approve: true, By: approval.Approver{ID: "alice"}, Channel: approval.ChannelElicitation}, approval.ErrWrongChannel},
		{"in band answered on the web", approval.ModeInitiator, "", approval.Decision{Approve: true, By: carol, Channel: approval.ChannelWeb}, approval.ErrWrongChannel},
		{"in band answered by someone else", approval.ModeInitiator, "", approval.Decision{Approve: true, By: carol, Channel: approval.ChannelElicitation}, approval.ErrSeparation},
		{"in band answered by the initiator", approval.ModeInitiator, "", approval.Decision{Approve: true, By: approval.Approver{ID: "alice"}, Channel: approval.ChannelElicitation}, nil},
		{"anonymous", approval.ModeApprover, "", approval.Decision{Approve: true, Channel: approval.ChannelWeb}, approval.ErrSeparation},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			svc, clk, _, _ := newService(t)
			r, err := request(svc, clk, tc.mode, approval.ScopeOnce, tc.group)
			if err != nil {
				t.Fatal(err)
			}
			got, err := svc.Decide(r.ID, tc.d)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Decide: %v, want %v", err, tc.want)
			}
			if tc.want != nil && got.State != approval.Requested {
				t.Fatalf("refused decision changed the state to %s", got.State)
			}
		})
	}
}

func TestOnceScopeConsumedExactlyOnce(t *testing.T) {
	svc, clk, seen, _ := newService(t)
	r, _ := request(svc, clk, approval.ModeApprover, approval.ScopeOnce, "")
	if _, err := svc.Decide(r.ID, approval.Decision{Approve: true, By: approval.Approver{ID: "carol"}, Channel: approval.ChannelCLI, Comment: "ok"}); err != nil {
		t.Fatal(err)
	}
	// A replayed decision is refused.
	if _, err := svc.Decide(r.ID, approval.Decision{Approve: false, By: approval.Approver{ID: "carol"}, Channel: approval.ChannelCLI}); !errors.Is(err, approval.ErrNotPending) {
		t.Fatalf("second decision: %v", err)
	}
	if _, err := svc.Consume(r.ID, use("call-2", "hmac-sha256:other")); !errors.Is(err, approval.ErrNotCovered) {
		t.Fatalf("other arguments: %v", err)
	}
	got, err := svc.Consume(r.ID, use("call-1", "hmac-sha256:call1"))
	if err != nil || got.State != approval.Consumed || got.Approver != "carol" || got.Comment != "ok" {
		t.Fatalf("consume: %+v %v", got, err)
	}
	if _, err := svc.Consume(r.ID, use("call-3", "hmac-sha256:call1")); !errors.Is(err, approval.ErrNotCovered) {
		t.Fatalf("second use: %v", err)
	}
	if _, err := svc.Covering(use("call-3", "hmac-sha256:call1")); !errors.Is(err, approval.ErrNotCovered) {
		t.Fatalf("covering after consumption: %v", err)
	}
	var states []string
	for _, tr := range *seen {
		states = append(states, string(tr.To))
	}
	if got := strings.Join(states, ","); got != "requested,approved,consumed" {
		t.Errorf("transitions %s", got)
	}
}

func TestSessionScopeCoversUntilExpiry(t *testing.T) {
	svc, clk, _, _ := newService(t)
	r, _ := request(svc, clk, approval.ModeApprover, approval.ScopeSession, "")
	if _, err := svc.Decide(r.ID, approval.Decision{Approve: true, By: approval.Approver{ID: "carol"}, Channel: approval.ChannelWeb}); err != nil {
		t.Fatal(err)
	}
	for i, u := range []approval.Use{use("c2", "d2"), use("c3", "d3")} {
		if _, err := svc.Covering(u); err != nil {
			t.Fatalf("use %d: %v", i, err)
		}
	}
	other := use("c4", "d4")
	other.Session = "s2"
	if _, err := svc.Covering(other); !errors.Is(err, approval.ErrNotCovered) {
		t.Fatalf("another session: %v", err)
	}
	other = use("c5", "d5")
	other.Tool = "payments__refund"
	if _, err := svc.Covering(other); !errors.Is(err, approval.ErrNotCovered) {
		t.Fatalf("another tool: %v", err)
	}
	clk.Add(61 * time.Minute)
	if _, err := svc.Covering(use("c6", "d6")); !errors.Is(err, approval.ErrNotCovered) {
		t.Fatalf("after the grant: %v", err)
	}
	got, _ := svc.Get(r.ID)
	if got.State != approval.Expired || len(got.UsedBy) != 2 {
		t.Fatalf("record %s used by %v", got.State, got.UsedBy)
	}
}

func TestExpiryByClock(t *testing.T) {
	svc, clk, _, _ := newService(t)
	r, _ := request(svc, clk, approval.ModeApprover, approval.ScopeOnce, "")
	clk.Add(5*time.Minute + time.Second)
	got, err := svc.Decide(r.ID, approval.Decision{Approve: true, By: approval.Approver{ID: "carol"}, Channel: approval.ChannelWeb})
	if !errors.Is(err, approval.ErrExpired) || got.State != approval.Expired {
		t.Fatalf("late decision: %v %v", got.State, err)
	}
	if pend, _ := svc.List(false); len(pend) != 0 {
		t.Fatalf("pending after expiry: %d", len(pend))
	}
}

func TestPendingSurvivesReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.db")
	st, err := store.Open(path, store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	clk := &clock{t: time.Now()}
	svc := approval.New(approval.Options{Store: st, Now: clk.Now})
	r, err := request(svc, clk, approval.ModeApprover, approval.ScopeOnce, "")
	if err != nil {
		t.Fatal(err)
	}
	_ = st.Close()
	st, err = store.Open(path, store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	svc = approval.New(approval.Options{Store: st, Now: clk.Now})
	p, ok := svc.Pending("hmac-sha256:call1")
	if !ok || p.ID != r.ID {
		t.Fatalf("pending after reopen: %v", ok)
	}
	if _, err := svc.Decide(r.ID, approval.Decision{Approve: true, By: approval.Approver{ID: "carol"}, Channel: approval.ChannelCLI}); err != nil {
		t.Fatal(err)
	}
	if got, err := svc.Covering(use("retry", "hmac-sha256:call1")); err != nil || got.State != approval.Consumed {
		t.Fatalf("retry after restart: %v", err)
	}
}

func TestStoreIsAppendOnly(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.db")
	st, err := store.Open(path, store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	clk := &clock{t: time.Now()}
	svc := approval.New(approval.Options{Store: st, Now: clk.Now})
	r, _ := request(svc, clk, approval.ModeApprover, approval.ScopeOnce, "")
	// Another writer cannot rewrite history: seq 2 twice is a conflict.
	t2 := approval.Transition{Seq: 2, At: clk.Now(), From: approval.Requested, To: approval.Approved, By: "x", Channel: approval.ChannelCLI}
	if err := st.AppendApprovalTransition(r.ID, t2); err != nil {
		t.Fatal(err)
	}
	t2.To = approval.Denied
	if err := st.AppendApprovalTransition(r.ID, t2); !errors.Is(err, approval.ErrConflict) {
		t.Fatalf("overwrite: %v", err)
	}
	// A history the state machine does not allow does not fold.
	bad := approval.Transition{Seq: 3, At: clk.Now(), From: approval.Approved, To: approval.Requested, Channel: approval.ChannelCLI}
	if err := st.AppendApprovalTransition(r.ID, bad); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Get(r.ID); !errors.Is(err, approval.ErrInvalidTransition) {
		t.Fatalf("forged history accepted: %v", err)
	}
}

func TestSealedState(t *testing.T) {
	s, err := approval.NewSealer([]byte(strings.Repeat("k", 32)))
	if err != nil {
		t.Fatal(err)
	}
	other, _ := approval.NewSealer([]byte(strings.Repeat("x", 32)))
	now := time.Unix(1_800_000_000, 0)
	who := approval.Who("agent|alice")
	state := s.Seal(approval.Claims{Approval: "a1", Who: who, Digest: "d1", Exp: now.Add(time.Minute).Unix()})
	if c, err := s.Open(state, who, now); err != nil || c.Approval != "a1" || c.Digest != "d1" {
		t.Fatalf("open: %+v %v", c, err)
	}
	body := strings.Split(strings.TrimPrefix(state, approval.StatePrefix), ".")
	cases := map[string]struct {
		state string
		who   string
		now   time.Time
		want  error
	}{
		"other identity": {state, approval.Who("agent|mallory"), now, approval.ErrStateInvalid},
		"expired":        {state, who, now.Add(2 * time.Minute), approval.ErrStateExpired},
		"altered body":   {approval.StatePrefix + body[0] + "x." + body[1], who, now, approval.ErrStateInvalid},
		"forged mac":     {other.Seal(approval.Claims{Approval: "a1", Who: who, Digest: "d1", Exp: now.Add(time.Hour).Unix()}), who, now, approval.ErrStateInvalid},
		"garbage":        {"mcpba1.hello", who, now, approval.ErrStateInvalid},
		"relay state":    {"mcpb1.x.y", who, now, approval.ErrStateInvalid},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := s.Open(tc.state, tc.who, tc.now); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func TestWebhookSigned(t *testing.T) {
	secret := []byte("webhook-secret")
	got := make(chan error, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		got <- approval.Verify(secret, r.Header.Get(approval.HeaderSignature), r.Header.Get(approval.HeaderTimestamp), body, time.Now(), time.Minute)
		if approval.Verify([]byte("wrong"), r.Header.Get(approval.HeaderSignature), r.Header.Get(approval.HeaderTimestamp), body, time.Now(), time.Minute) == nil {
			t.Error("verified under the wrong secret")
		}
	}))
	defer srv.Close()
	wh := &approval.Webhook{URL: srv.URL, Secret: secret}
	if err := wh.Send(context.Background(), approval.Notification{Event: "approval.requested", Approval: &approval.Record{ID: "a1"}}, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("receiver: %v", err)
	}
	if !strings.Contains(wh.String(), "<redacted>") {
		t.Error("secret printed")
	}
}

// TestApprovedOnceExpiresUnused: a once approval nobody used expires
// OnceGrace after its decision deadline.
func TestApprovedOnceExpiresUnused(t *testing.T) {
	svc, clk, _, _ := newService(t)
	r, _ := request(svc, clk, approval.ModeApprover, approval.ScopeOnce, "")
	if _, err := svc.Decide(r.ID, approval.Decision{Approve: true, By: approval.Approver{ID: "carol"}, Channel: approval.ChannelCLI}); err != nil {
		t.Fatal(err)
	}
	clk.Add(5*time.Minute + approval.OnceGrace + time.Second)
	if _, err := svc.Covering(use("call-1", "hmac-sha256:call1")); !errors.Is(err, approval.ErrNotCovered) {
		t.Fatalf("a month-old once approval still covers its call: %v", err)
	}
}

// TestGrantCoversOnlyWhatWasAsked: a session grant answers the policies
// that asked for it, for their approver groups; a call another policy (or
// another group) wants approved is not covered.
func TestGrantCoversOnlyWhatWasAsked(t *testing.T) {
	svc, clk, _, _ := newService(t)
	r, _ := request(svc, clk, approval.ModeApprover, approval.ScopeSession, "")
	if _, err := svc.Decide(r.ID, approval.Decision{Approve: true, By: approval.Approver{ID: "carol"}, Channel: approval.ChannelWeb}); err != nil {
		t.Fatal(err)
	}
	asked := func(a approval.Asked) approval.Use {
		u := use("c2", "d2")
		u.Asked = &a
		return u
	}
	for name, a := range map[string]approval.Asked{
		"another policy":        {PolicyIDs: []string{"p1", "p2"}},
		"an approver group":     {PolicyIDs: []string{"p1"}, Group: "finance"},
		"only by the initiator": {PolicyIDs: []string{"p1"}, Mode: approval.ModeInitiator},
		"once only now":         {PolicyIDs: []string{"p1"}, Scope: approval.ScopeOnce},
	} {
		if _, err := svc.Covering(asked(a)); !errors.Is(err, approval.ErrNotCovered) {
			t.Errorf("%s: covered (%v)", name, err)
		}
	}
	if _, err := svc.Covering(asked(approval.Asked{PolicyIDs: []string{"p1"}})); err != nil {
		t.Fatalf("what was asked: %v", err)
	}
}

// TestApproverInitiatorsAndTenants: an approver never decides a call of an
// initiator they also act as, nor one of a tenant not theirs.
func TestApproverInitiatorsAndTenants(t *testing.T) {
	svc, clk, _, _ := newService(t)
	for name, by := range map[string]approval.Approver{
		"approver who is also the initiator": {ID: "carol", Initiators: []string{"okta:x", "alice"}},
		"approver of another tenant":         {ID: "carol", Tenants: []string{"globex"}},
	} {
		r, _ := request(svc, clk, approval.ModeApprover, approval.ScopeOnce, "")
		if _, err := svc.Decide(r.ID, approval.Decision{Approve: true, By: by, Channel: approval.ChannelHTTP}); !errors.Is(err, approval.ErrSeparation) {
			t.Errorf("%s: %v", name, err)
		}
	}
	r, _ := request(svc, clk, approval.ModeApprover, approval.ScopeOnce, "")
	if _, err := svc.Decide(r.ID, approval.Decision{Approve: true, By: approval.Approver{ID: "carol", Tenants: []string{""}}, Channel: approval.ChannelHTTP}); err != nil {
		t.Fatalf("an approver of the record's tenant: %v", err)
	}
}
