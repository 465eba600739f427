package broker

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/mcpbroker/mcpbroker/policies"
)

// defaultReloadDebounce is how long the policy directory must stay quiet
// after a change before it is reloaded: editors and deploy tools write
// several files (or rename a temporary one) per change.
const defaultReloadDebounce = 300 * time.Millisecond

// reloaderConfig configures a policyReloader.
type reloaderConfig struct {
	Dir    string            // operator policy directory; watched (not recursively)
	Base   []policies.Source // compiled with every load: Baseline(), plus Demo() in demo mode
	Engine *policies.Engine  // receives the new Set
	Logger *slog.Logger      // nil = slog.Default()
	// Candidate sends loads to Engine.SetCandidate instead of Engine.Swap:
	// the directory holds a candidate set evaluated next to the live one and
	// never enforced (policy.mode: log_only for a whole set).
	Candidate bool
	// Debounce overrides defaultReloadDebounce (tests).
	Debounce time.Duration
	// OnReload, if set, is called after every reload that changed the set
	// (digest = the new digest, err = nil) and after every failed one (digest =
	// the digest that stays in force, "" if none; err = every problem, joined,
	// each "file:line:col: message"). It is called from the reloader's
	// goroutine or from Reload's caller, never concurrently with itself; it must
	// not call Reload. The broker records policy.loaded / policy.rejected and
	// updates its metrics here.
	OnReload func(digest string, err error)
}

// policyReloader recompiles the policy directory when it changes (fsnotify,
// debounced) and when Reload is called (SIGHUP), and swaps the result into
// the Engine atomically. An invalid set never replaces a valid one: the old
// set stays and the errors are reported. Calls in flight keep the Set they
// started with. Close stops the watcher.
type policyReloader struct {
	cfg     reloaderConfig
	log     *slog.Logger
	watcher *fsnotify.Watcher

	mu sync.Mutex // serialises reloads (watcher and Reload)

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

// newPolicyReloader starts watching cfg.Dir. It does not load anything
// itself: the caller compiled the start-up set (policies.LoadDir with the same
// Base) and gave it to the Engine. Close must be called to stop the watcher.
func newPolicyReloader(cfg reloaderConfig) (*policyReloader, error) {
	if cfg.Dir == "" || cfg.Engine == nil {
		return nil, errors.New("policy reloader: need a directory and an engine")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Debounce <= 0 {
		cfg.Debounce = defaultReloadDebounce
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("policy reloader: %w", err)
	}
	if err := w.Add(cfg.Dir); err != nil {
		_ = w.Close()
		return nil, fmt.Errorf("policy reloader: watch %s: %w", cfg.Dir, err)
	}
	r := &policyReloader{
		cfg: cfg, log: cfg.Logger.With("component", "policy_reload", "dir", cfg.Dir, "candidate", cfg.Candidate),
		watcher: w, stop: make(chan struct{}), done: make(chan struct{}),
	}
	go r.loop()
	return r, nil
}

// current returns the Set the reloader maintains (live or candidate).
func (r *policyReloader) current() *policies.Set {
	if r.cfg.Candidate {
		return r.cfg.Engine.Candidate()
	}
	return r.cfg.Engine.Set()
}

// Reload compiles the directory now and, if it is valid and differs from
// the current set, swaps it in. It returns the digest in force afterwards and
// the compile errors, if any (the old set then stays). Safe for concurrent
// use; reloads are serialised.
func (r *policyReloader) Reload() (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	start := time.Now()
	old := ""
	if s := r.current(); s != nil {
		old = s.Digest()
	}
	set, err := policies.LoadDir(r.cfg.Dir, r.cfg.Base...)
	if err != nil {
		r.log.Error("policy set rejected, the previous set stays", "digest", old, "error", err)
		if r.cfg.OnReload != nil {
			r.cfg.OnReload(old, err)
		}
		return old, err
	}
	if set.Digest() == old {
		r.log.Debug("policy set unchanged", "digest", old)
		return old, nil
	}
	if r.cfg.Candidate {
		r.cfg.Engine.SetCandidate(set)
	} else {
		r.cfg.Engine.Swap(set)
	}
	r.log.Info("policy set loaded", "digest", set.Digest(), "previous", old, "policies", set.Len(),
		"log_only", len(set.LogOnlyIDs()), "took_ms", time.Since(start).Milliseconds())
	if r.cfg.OnReload != nil {
		r.cfg.OnReload(set.Digest(), nil)
	}
	return set.Digest(), nil
}

func (r *policyReloader) loop() {
	defer close(r.done)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-r.stop:
			return
		case ev, ok := <-r.watcher.Events:
			if !ok {
				return
			}
			if ev.Op == fsnotify.Chmod {
				continue
			}
			// Any other change (a .cedar file, or a directory-level swap such as
			// a Kubernetes ConfigMap's ..data symlink) restarts the quiet period.
			timer.Reset(r.cfg.Debounce)
		case err, ok := <-r.watcher.Errors:
			if !ok {
				return
			}
			r.log.Warn("policy directory watch error", "error", err)
		case <-timer.C:
			_, _ = r.Reload()
		}
	}
}

// Close stops watching and waits for a reload in progress to finish. It is
// idempotent.
func (r *policyReloader) Close() error {
	var err error
	r.closeOnce.Do(func() {
		close(r.stop)
		err = r.watcher.Close()
		<-r.done
	})
	return err
}
