package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"

	"github.com/mark3labs/mcp-go/server"
)

func TestEventStoreBoundedAndReplays(t *testing.T) {
	s := newEventStore()
	ctx := context.Background()
	var ids []string
	for i := range eventsPerSession * 3 {
		stream := "a"
		if i%2 == 1 {
			stream = "b"
		}
		id, err := s.StoreEvent(ctx, "sess", stream, json.RawMessage(fmt.Sprintf(`{"n":%d}`, i)))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if n := len(s.sessions["sess"]); n != eventsPerSession {
		t.Fatalf("kept %d events, want %d", n, eventsPerSession)
	}
	// Replaying after a recent event of stream "a" sends the later "a" events only.
	last := ids[len(ids)-6] // stream a (even index)
	var got []string
	stream, err := s.ReplayEventsAfter(ctx, "sess", last, func(id string, _ json.RawMessage) error { got = append(got, id); return nil })
	if err != nil || stream != "a" || len(got) != 2 {
		t.Fatalf("replay: stream %q, %v, sent %v", stream, err, got)
	}
	// An evicted event is unknown: the client starts over.
	if _, err := s.ReplayEventsAfter(ctx, "sess", ids[0], func(string, json.RawMessage) error { return nil }); !errors.Is(err, server.ErrUnknownEventID) {
		t.Fatalf("evicted event: %v", err)
	}
	_ = s.PurgeSession(ctx, "sess")
	if len(s.sessions) != 0 {
		t.Fatal("purge left the session")
	}
}
