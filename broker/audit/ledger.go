package audit

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/mcpbroker/mcpbroker/broker/store"
)

// RecordTimeout bounds one Record, however long the caller's context lives.
const RecordTimeout = 5 * time.Second

// Ledger appends events to the store's ledger and reads them back. It is
// safe for concurrent use; it starts no goroutines of its own and owns
// nothing that needs closing (the caller owns the Store).
type Ledger struct {
	store *store.Store
	log   *slog.Logger
	now   func() time.Time
}

// Option configures a Ledger.
type Option func(*Ledger)

// WithClock sets the clock that stamps events recorded without a Time.
func WithClock(now func() time.Time) Option { return func(l *Ledger) { l.now = now } }

// NewLedger returns a Ledger over s. A nil logger discards logs.
func NewLedger(s *store.Store, logger *slog.Logger, opts ...Option) *Ledger {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	l := &Ledger{store: s, log: logger, now: time.Now}
	for _, o := range opts {
		o(l)
	}
	return l
}

// Record appends ev and returns the committed entry. It sets ev.Version to
// EventVersion, stamps ev.Time from the ledger's clock if it is zero, and
// converts it to UTC. It runs on context.WithoutCancel(ctx) bounded by
// RecordTimeout, so a caller that hangs up cannot erase its record.
//
// A non-nil error means the record is not known to be durable: the caller
// must deny the call it describes.
func (l *Ledger) Record(ctx context.Context, ev Event) (Entry, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), RecordTimeout)
	defer cancel()
	ev.Version = EventVersion
	if ev.Time.IsZero() {
		ev.Time = l.now()
	}
	ev.Time = ev.Time.UTC().Round(0)
	entry, err := l.record(ctx, ev)
	if err != nil {
		l.log.Error("audit record failed", "type", string(ev.Type), "call_id", ev.CallID, "err", err)
		return Entry{}, err
	}
	return entry, nil
}

func (l *Ledger) record(ctx context.Context, ev Event) (Entry, error) {
	if err := ev.Validate(); err != nil {
		return Entry{}, fmt.Errorf("record %s: %w", ev.Type, err)
	}
	canon, err := Canonical(ev)
	if err != nil {
		return Entry{}, fmt.Errorf("record %s: %w", ev.Type, err)
	}
	// build may run more than once; the last run is the one committed, so
	// prev and hash hold the committed values when AppendLedger succeeds.
	var prev, hash string
	seq, err := l.store.AppendLedger(ctx, func(seq uint64, prevHash []byte) ([]byte, []byte, error) {
		p := hex.EncodeToString(prevHash)
		sum := entryHash(seq, p, canon)
		h := hex.EncodeToString(sum[:])
		b, err := json.Marshal(storedEntry{Seq: seq, Prev: p, Hash: h, Event: canon})
		if err != nil {
			return nil, nil, err
		}
		prev, hash = p, h
		return b, sum[:], nil
	})
	if err != nil {
		return Entry{}, fmt.Errorf("record %s call %q: %w", ev.Type, ev.CallID, err)
	}
	return Entry{Seq: seq, Prev: prev, Hash: hash, Event: ev}, nil
}
