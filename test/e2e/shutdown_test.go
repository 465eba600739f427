package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// TestShutdownWithCallsInFlight (cases 9 and 10): SIGTERM while calls hang
// in both downstreams: the broker exits 0 within 10 s, its stdio child is
// gone, and every decided call has an outcome record.
func TestShutdownWithCallsInFlight(t *testing.T) {
	b, events := tsBroker(t, brokerConfig{})
	cs := connect(t, b.url, eraLegacy, nil, "")
	waitTools(t, cs, "ts__hang", "tsh__hang")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan struct{}, 2)
	for _, srv := range []string{"ts", "tsh"} {
		go func() {
			_, _ = cs.CallTool(ctx, &mcp.CallToolParams{Name: srv + "__hang", Arguments: map[string]any{}})
			done <- struct{}{}
		}()
	}
	for _, srv := range []string{"ts", "tsh"} {
		poll(t, 10*time.Second, srv+" hang to reach the downstream", func() bool {
			return len(eventsWith(t, events[srv], "call hang ")) > 0
		})
	}
	b.stop() // SIGTERM; fails the test unless exit 0 within 10 s
	b.checkChildrenGone()
	for range 2 {
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("a hanging call did not end when the broker stopped")
		}
	}

	entries := b.audit() // the broker is gone: read from the file
	decided := map[string]string{}
	completed := map[string]string{}
	for _, e := range entries {
		switch e.Event.Type {
		case "call.decided":
			decided[e.Event.CallID] = e.Event.Target
		case "call.completed":
			completed[e.Event.CallID] = e.Event.Status
		}
	}
	for id, target := range decided {
		if _, ok := completed[id]; !ok {
			t.Errorf("call %s (%s) was decided but has no call.completed record after shutdown", id, target)
		}
	}
	if last := lastEvent(entries); last != "broker.stopped" {
		t.Errorf("last audit record is %s, want broker.stopped", last)
	}
}
