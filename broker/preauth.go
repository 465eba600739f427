package broker

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/mcpbroker/mcpbroker/broker/audit"
)

// Refusals before authentication (bad Origin, oversized body, no or bad
// credential) are recorded too, but anyone who can reach the port can cause
// them: unthrottled, they would let an anonymous client grow the
// fsync'ed, hash-chained ledger at will. preAuthLimit records at most
// preAuthRate per second (bursts of preAuthBurst) and folds the rest into a
// count carried by the next record.
const (
	preAuthRate  = 20.0
	preAuthBurst = 200.0
)

type preAuthLimit struct {
	mu         sync.Mutex
	tokens     float64
	last       time.Time
	suppressed int
}

// allow reports whether to record now, and how many were suppressed since
// the last recorded one.
func (l *preAuthLimit) allow(now time.Time) (bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.last.IsZero() {
		l.tokens = preAuthBurst
	} else {
		l.tokens = min(preAuthBurst, l.tokens+now.Sub(l.last).Seconds()*preAuthRate)
	}
	l.last = now
	if l.tokens < 1 {
		l.suppressed++
		return false, 0
	}
	l.tokens--
	n := l.suppressed
	l.suppressed = 0
	return true, n
}

func (b *Broker) recordPreAuth(ctx context.Context, ev audit.Event) {
	ok, suppressed := b.preAuth.allow(b.now())
	if !ok {
		return
	}
	if suppressed > 0 {
		ev.Detail = fmt.Sprintf("%s (%d similar refusals before this one were not recorded: rate limit)", ev.Detail, suppressed)
	}
	b.record(ctx, ev)
}
