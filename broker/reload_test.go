package broker

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mcpbroker/mcpbroker/policies"
)

const (
	reloadPolicyA = `@id("users-notes")
permit (principal is Broker::User, action, resource in Broker::ToolServer::"notes");
`
	reloadPolicyB = `@id("users-notes")
permit (principal is Broker::User, action, resource in Broker::ToolServer::"notes");
@id("agents-notes")
permit (principal is Broker::Agent, action, resource in Broker::ToolServer::"notes");
`
	reloadPolicyBad = `@id("users-notes")
permit (principal is Broker::User, action, resource in Broker::ToolServer::"notes")
when { context.args.paht == "x" };
`
)

type reloadEvent struct {
	digest string
	err    error
}

// reloadFixture is a policy dir, an engine serving it, and a reloader whose
// callbacks arrive on events.
type reloadFixture struct {
	dir    string
	engine *policies.Engine
	r      *policyReloader
	events chan reloadEvent
}

func newReloadFixture(t *testing.T, candidate bool) *reloadFixture {
	t.Helper()
	dir := t.TempDir()
	writePolicy(t, dir, "a.cedar", reloadPolicyA)
	set, err := policies.LoadDir(dir, policies.Baseline()...)
	if err != nil {
		t.Fatal(err)
	}
	f := &reloadFixture{dir: dir, engine: policies.NewEngine(set), events: make(chan reloadEvent, 100)}
	if candidate {
		f.engine.SetCandidate(set)
	}
	f.r, err = newPolicyReloader(reloaderConfig{
		Dir: dir, Base: policies.Baseline(), Engine: f.engine, Candidate: candidate,
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
		Debounce: 100 * time.Millisecond,
		OnReload: func(d string, err error) { f.events <- reloadEvent{d, err} },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := f.r.Close(); err != nil {
			t.Error(err)
		}
	})
	return f
}

func writePolicy(t *testing.T, dir, name, text string) {
	t.Helper()
	// Write to a temporary name and rename, as editors and deploy tools do.
	tmp := filepath.Join(dir, "."+name+".tmp")
	if err := os.WriteFile(tmp, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
}

func (f *reloadFixture) next(t *testing.T) reloadEvent {
	t.Helper()
	select {
	case ev := <-f.events:
		return ev
	case <-time.After(10 * time.Second):
		t.Fatal("no reload reported within 10s")
	}
	return reloadEvent{}
}

// quiet fails if a reload is reported within d.
func (f *reloadFixture) quiet(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case ev := <-f.events:
		t.Fatalf("unexpected reload %+v", ev)
	case <-time.After(d):
	}
}

func TestReloadValidChangeSwaps(t *testing.T) {
	f := newReloadFixture(t, false)
	old := f.engine.Set().Digest()
	writePolicy(t, f.dir, "a.cedar", reloadPolicyB)
	ev := f.next(t)
	if ev.err != nil || ev.digest == old || ev.digest != f.engine.Set().Digest() {
		t.Fatalf("event %+v, old %s, engine %s", ev, old, f.engine.Set().Digest())
	}
	if !slices.Contains(f.engine.Set().IDs(), "agents-notes") {
		t.Fatalf("ids %v", f.engine.Set().IDs())
	}
	// A new file counts too.
	writePolicy(t, f.dir, "b.cedar", `@id("extra") forbid (principal, action, resource in Broker::ToolServer::"x");`)
	if ev := f.next(t); ev.err != nil || !slices.Contains(f.engine.Set().IDs(), "extra") {
		t.Fatalf("event %+v ids %v", ev, f.engine.Set().IDs())
	}
	// Removing it too.
	if err := os.Remove(filepath.Join(f.dir, "b.cedar")); err != nil {
		t.Fatal(err)
	}
	if ev := f.next(t); ev.err != nil || slices.Contains(f.engine.Set().IDs(), "extra") {
		t.Fatalf("event %+v ids %v", ev, f.engine.Set().IDs())
	}
}

func TestReloadInvalidKeepsOldSet(t *testing.T) {
	f := newReloadFixture(t, false)
	old := f.engine.Set()
	writePolicy(t, f.dir, "a.cedar", reloadPolicyBad)
	ev := f.next(t)
	if ev.err == nil || ev.digest != old.Digest() {
		t.Fatalf("event %+v", ev)
	}
	if !strings.Contains(ev.err.Error(), filepath.Join(f.dir, "a.cedar")+":1:1: ") || !strings.Contains(ev.err.Error(), "paht") {
		t.Errorf("error lacks file:line:col: %v", ev.err)
	}
	if f.engine.Set() != old {
		t.Fatal("invalid set replaced the valid one")
	}
	// An empty directory is invalid too (no policies at all).
	if err := os.Remove(filepath.Join(f.dir, "a.cedar")); err != nil {
		t.Fatal(err)
	}
	if ev := f.next(t); ev.err == nil || f.engine.Set() != old {
		t.Fatalf("event %+v", ev)
	}
	// Fixing it recovers.
	writePolicy(t, f.dir, "a.cedar", reloadPolicyB)
	if ev := f.next(t); ev.err != nil || f.engine.Set().Digest() == old.Digest() {
		t.Fatalf("event %+v", ev)
	}
}

func TestReloadDebounce(t *testing.T) {
	f := newReloadFixture(t, false)
	for i := range 20 {
		text := reloadPolicyA
		if i%2 == 1 {
			text = reloadPolicyB
		}
		writePolicy(t, f.dir, "a.cedar", text)
	}
	if ev := f.next(t); ev.err != nil || !slices.Contains(f.engine.Set().IDs(), "agents-notes") {
		t.Fatalf("event %+v", ev)
	}
	f.quiet(t, 500*time.Millisecond)
	// Touching a file without changing the set reloads but reports nothing.
	writePolicy(t, f.dir, "a.cedar", "// a comment\n"+reloadPolicyB)
	f.quiet(t, 500*time.Millisecond)
	if err := os.Chmod(filepath.Join(f.dir, "a.cedar"), 0o600); err != nil {
		t.Fatal(err)
	}
	f.quiet(t, 300*time.Millisecond)
}

func TestReloadExplicit(t *testing.T) {
	f := newReloadFixture(t, false)
	// Reload with nothing changed: same digest, no report.
	d, err := f.r.Reload()
	if err != nil || d != f.engine.Set().Digest() {
		t.Fatalf("%s %v", d, err)
	}
	// Concurrent explicit reloads and watcher reloads are serialised.
	writePolicy(t, f.dir, "a.cedar", reloadPolicyB)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			if _, err := f.r.Reload(); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if ev := f.next(t); ev.err != nil || ev.digest != f.engine.Set().Digest() {
		t.Fatalf("event %+v", ev)
	}
	f.quiet(t, 400*time.Millisecond) // exactly one report for one change
}

func TestReloadCandidate(t *testing.T) {
	f := newReloadFixture(t, true)
	live := f.engine.Set()
	writePolicy(t, f.dir, "a.cedar", reloadPolicyB)
	ev := f.next(t)
	if ev.err != nil || f.engine.Set() != live || f.engine.Candidate().Digest() != ev.digest {
		t.Fatalf("event %+v", ev)
	}
}

func TestReloadClose(t *testing.T) {
	f := newReloadFixture(t, false)
	if err := f.r.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-f.r.done:
	default:
		t.Fatal("watcher goroutine still running after Close")
	}
	writePolicy(t, f.dir, "a.cedar", reloadPolicyB)
	f.quiet(t, 400*time.Millisecond)
	if _, err := newPolicyReloader(reloaderConfig{Dir: filepath.Join(f.dir, "missing"), Engine: f.engine}); err == nil {
		t.Fatal("watching a missing directory succeeded")
	}
}
