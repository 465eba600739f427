package main

import (
	"fmt"
	"os"
	"strings"
	"sync"
)

// eventLog appends one line per event to the file named by TESTSERVER_EVENTS.
// The zero value and a nil *eventLog discard events. Each line is written
// with a single write on an O_APPEND file, so concurrent processes sharing
// the file do not interleave within a line.
type eventLog struct {
	mu sync.Mutex
	f  *os.File
}

func openEvents(path string) (*eventLog, error) {
	if path == "" {
		return &eventLog{}, nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open events file: %w", err)
	}
	return &eventLog{f: f}, nil
}

// Log appends one formatted line; newlines in the result are replaced so
// that one call is always one line. Write errors are reported on stderr.
func (e *eventLog) Log(format string, a ...any) {
	if e == nil {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.f == nil {
		return
	}
	line := strings.ReplaceAll(fmt.Sprintf(format, a...), "\n", " ") + "\n"
	if _, err := e.f.WriteString(line); err != nil {
		fmt.Fprintf(os.Stderr, "testserver: write event: %v\n", err)
	}
}

// Close closes the file; later Log calls are dropped.
func (e *eventLog) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.f == nil {
		return nil
	}
	err := e.f.Close()
	e.f = nil
	return err
}
