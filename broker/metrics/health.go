package metrics

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"time"
)

// checkTimeout bounds one readiness check.
const checkTimeout = 2 * time.Second

// Readiness answers /readyz from named checks (policy set loaded, store
// writable, downstream pool initialised). The zero value has no checks and
// is ready. Add checks before serving; Handler is safe for concurrent use.
type Readiness struct {
	mu     sync.Mutex
	checks []check
}

type check struct {
	name string
	fn   func(context.Context) error
}

// Add registers a check. fn returns nil when that part of the broker is
// ready; it must honour ctx (bounded by two seconds).
func (r *Readiness) Add(name string, fn func(context.Context) error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.checks = append(r.checks, check{name, fn})
}

// Status is the /readyz body.
type Status struct {
	Ready  bool              `json:"ready"`
	Failed map[string]string `json:"failed,omitempty"` // check name → error
}

// Check runs every check concurrently and reports them all.
func (r *Readiness) Check(ctx context.Context) Status {
	r.mu.Lock()
	checks := append([]check(nil), r.checks...)
	r.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	errs := make([]error, len(checks))
	var wg sync.WaitGroup
	for i, c := range checks {
		wg.Go(func() { errs[i] = c.fn(ctx) })
	}
	wg.Wait()
	st := Status{Ready: true}
	for i, err := range errs {
		if err != nil {
			if st.Failed == nil {
				st.Failed = map[string]string{}
			}
			st.Ready = false
			st.Failed[checks[i].name] = err.Error()
		}
	}
	return st
}

// Handler serves /readyz: 200 with {"ready":true}, or 503 naming every
// failed check. Check errors are operator-facing: serve it where agents
// cannot read it, or make the checks return safe messages.
func (r *Readiness) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		st := r.Check(req.Context())
		code := http.StatusOK
		if !st.Ready {
			code = http.StatusServiceUnavailable
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(st)
	})
}

// Healthz serves /healthz: 200 while the process serves HTTP at all.
func Healthz() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write([]byte("ok\n"))
	})
}
