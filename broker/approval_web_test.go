package broker

import (
	"context"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/mark3labs/mcp-go/mcp"

	"github.com/mcpbroker/mcpbroker/broker/approval"
)

// chromiumPath finds Debian's chromium (test/approval-deps.sh installs it).
// Without it the test skips, or fails when MCPBROKER_E2E_REQUIRE=1.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("MCPBROKER_E2E_REQUIRE") == "1" {
		t.Fatal("chromium not found and MCPBROKER_E2E_REQUIRE=1 (install: test/approval-deps.sh)")
	}
	t.Skip("chromium not found (install: test/approval-deps.sh)")
	return ""
}

// TestApprovalWebPage drives the /approvals page in a real headless
// Chromium: sign in, open the pending approval, see the tool and its
// arguments, approve, and the agent's waiting call completes.
func TestApprovalWebPage(t *testing.T) {
	chrome := chromiumPath(t)
	b, u := approvalBroker(t)
	base := strings.TrimSuffix(u, "/mcp")

	c := dial(t, u, mcp.ProtocolVersion20251125, nil) // cannot elicit: out of band
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	done := callAsync(c, ctx, "shared/from-the-web")
	r := waitPending(t, b, "shared/from-the-web")

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chrome), chromedp.NoSandbox,
		chromedp.Flag("disable-dev-shm-usage", true))
	actx, acancel := chromedp.NewExecAllocator(ctx, opts...)
	defer acancel()
	bctx, bcancel := chromedp.NewContext(actx)
	defer bcancel()

	step := func(steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(bctx, steps...); err != nil {
			t.Fatalf("browser: %v", err)
		}
	}
	textOf := func(id string) string {
		t.Helper()
		v, err := chromedp.Run(bctx, chromedp.Text(chromedp.ID(id)))
		if err != nil {
			t.Fatalf("browser: text of #%s: %v", id, err)
		}
		return v
	}
	step(chromedp.Navigate(base+"/approvals/"),
		chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SendKeys(chromedp.ID("token"), carolToken),
		chromedp.Click(chromedp.ID("signin")),
		chromedp.WaitVisible(chromedp.ID("approver")))
	who := textOf("approver")
	step(chromedp.Click(chromedp.CSS(`a.approval[href="/approvals/`+r.ID+`"]`)),
		chromedp.WaitVisible(chromedp.ID("tool")))
	tool, args := textOf("tool"), textOf("args")
	step(chromedp.SendKeys(chromedp.ID("comment"), "checked on the web"),
		chromedp.Click(chromedp.ID("approve")),
		chromedp.WaitVisible(chromedp.ID("flash")))
	state := textOf("state")
	if who != "carol" || tool != "notes__write_note" || !strings.Contains(args, "shared/from-the-web") {
		t.Fatalf("page showed approver %q tool %q args %q", who, tool, args)
	}
	if state != string(approval.Approved) && state != string(approval.Consumed) {
		t.Fatalf("state after approving: %q", state)
	}
	select {
	case res := <-done:
		if res.err != nil || res.res.IsError {
			t.Fatalf("waiting call: %v %s", res.err, text(res.res))
		}
	case <-time.After(20 * time.Second):
		t.Fatal("waiting call did not complete after the approval")
	}
	got, _ := b.approvals.svc.Get(r.ID)
	if got.Approver != "carol" || got.Channel != approval.ChannelWeb || got.Comment != "checked on the web" {
		t.Fatalf("record approver %q channel %q comment %q", got.Approver, got.Channel, got.Comment)
	}
}

// TestApprovalWebCSRF: a decision without the session's CSRF token, or
// from another origin, or without signing in, is refused.
func TestApprovalWebCSRF(t *testing.T) {
	b, u := approvalBroker(t)
	base := strings.TrimSuffix(u, "/mcp")
	cookie, csrf := "", ""
	{
		cookieVal, s := b.approvals.web.create(approverCred{id: "carol", groups: []string{"finance"}}, time.Now())
		cookie, csrf = cookieVal, s.csrf
	}
	post := func(form url.Values, origin string, withCookie bool) int {
		req, _ := http.NewRequest(http.MethodPost, base+"/approvals/some-id/decide", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		if withCookie {
			req.AddCookie(&http.Cookie{Name: approverCookie, Value: cookie})
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	cases := []struct {
		name   string
		form   url.Values
		origin string
		cookie bool
		want   int
	}{
		{"not signed in", url.Values{"csrf": {csrf}, "action": {"approve"}}, "", false, http.StatusUnauthorized},
		{"no csrf token", url.Values{"action": {"approve"}}, "", true, http.StatusForbidden},
		{"wrong csrf token", url.Values{"csrf": {"x"}, "action": {"approve"}}, "", true, http.StatusForbidden},
		{"other origin", url.Values{"csrf": {csrf}, "action": {"approve"}}, "https://evil.example", true, http.StatusForbidden},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := post(tc.form, tc.origin, tc.cookie); got != tc.want {
				t.Fatalf("HTTP %d, want %d", got, tc.want)
			}
		})
	}
}
