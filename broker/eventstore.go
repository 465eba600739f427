package broker

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"

	"github.com/mark3labs/mcp-go/server"
)

// eventStore keeps the last few SSE events of each session so that a
// client that lost a stream can resume it (Last-Event-ID), and, as a side
// effect, so that mcp-go does not drop a handler's final notification
// (notes/mcp-go.md pitfall 4). mcp-go's InMemoryEventStore keeps every
// event of a session until the session ends: a long-lived agent session
// grows without bound (measured: heap +4 MiB per minute under load). This
// one keeps at most eventsPerSession per session; a resume from an event
// older than that is refused as unknown, and the client starts over.
type eventStore struct {
	mu       sync.Mutex
	seq      int64
	sessions map[string][]storedEvent
}

type storedEvent struct {
	id, stream string
	msg        json.RawMessage
}

const eventsPerSession = 256

var _ server.EventStore = (*eventStore)(nil)

func newEventStore() *eventStore { return &eventStore{sessions: map[string][]storedEvent{}} }

func (s *eventStore) StoreEvent(_ context.Context, session, stream string, msg json.RawMessage) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq++
	id := strconv.FormatInt(s.seq, 10)
	evs := s.sessions[session]
	if len(evs) >= eventsPerSession {
		evs = append(evs[:0], evs[len(evs)-eventsPerSession+1:]...)
	}
	s.sessions[session] = append(evs, storedEvent{id: id, stream: stream, msg: append(json.RawMessage(nil), msg...)})
	return id, nil
}

func (s *eventStore) ReplayEventsAfter(_ context.Context, session, last string, send func(string, json.RawMessage) error) (string, error) {
	s.mu.Lock()
	evs := s.sessions[session]
	at := -1
	for i, e := range evs {
		if e.id == last {
			at = i
			break
		}
	}
	if at < 0 {
		s.mu.Unlock()
		return "", fmt.Errorf("%w: %s", server.ErrUnknownEventID, last)
	}
	stream := evs[at].stream
	var tail []storedEvent
	for _, e := range evs[at+1:] {
		if e.stream == stream {
			tail = append(tail, e)
		}
	}
	s.mu.Unlock()
	for _, e := range tail {
		if err := send(e.id, e.msg); err != nil {
			return "", err
		}
	}
	return stream, nil
}

func (s *eventStore) PurgeSession(_ context.Context, session string) error {
	s.mu.Lock()
	delete(s.sessions, session)
	s.mu.Unlock()
	return nil
}
