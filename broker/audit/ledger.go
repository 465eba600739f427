package audit

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mcpbroker/mcpbroker/broker/store"
)

// RecordTimeout bounds one Record, however long the caller's context lives.
const RecordTimeout = 5 * time.Second

// Ledger appends events to the store's ledger and reads them back. It is
// safe for concurrent use; it starts no goroutines of its own and owns
// nothing that needs closing (the caller owns the Store).
type Ledger struct {
	store    *store.Store
	log      *slog.Logger
	now      func() time.Time
	signer   *Signer
	every    uint64
	anchor   string
	observer func(seq uint64, d time.Duration, err error)

	failed atomic.Bool // the last append failed; cleared by a success or Ready

	cpMu     sync.Mutex
	cpSeq    uint64 // sequence of the last checkpoint entry this process wrote or started
	anchored uint64 // Seq of the Checkpoint last written to the anchor file
}

// Option configures a Ledger.
type Option func(*Ledger)

// WithClock sets the clock that stamps events recorded without a Time.
func WithClock(now func() time.Time) Option { return func(l *Ledger) { l.now = now } }

// WithSigner makes the ledger sign checkpoints with s: Checkpoint works, and
// Record writes a checkpoint once DefaultCheckpointEvery (or
// WithCheckpointEvery) entries follow the last one.
func WithSigner(s *Signer) Option { return func(l *Ledger) { l.signer = s } }

// WithCheckpointEvery sets how many entries may follow a checkpoint before
// Record writes the next one; 0 turns periodic checkpoints off (Checkpoint
// still works). Only meaningful with WithSigner.
func WithCheckpointEvery(n uint64) Option { return func(l *Ledger) { l.every = n } }

// WithAnchorFile makes every checkpoint also replace the file at path (see
// AnchorFile), so `audit verify` can detect a ledger cut below it.
func WithAnchorFile(path string) Option { return func(l *Ledger) { l.anchor = path } }

// WithCommitObserver calls fn after every append with the sequence number
// (0 on failure), how long the commit took and its error; for metrics. fn
// must be quick and must not call back into the Ledger.
func WithCommitObserver(fn func(seq uint64, d time.Duration, err error)) Option {
	return func(l *Ledger) { l.observer = fn }
}

// NewLedger returns a Ledger over s. A nil logger discards logs.
func NewLedger(s *store.Store, logger *slog.Logger, opts ...Option) *Ledger {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	l := &Ledger{store: s, log: logger, now: time.Now, every: DefaultCheckpointEvery}
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
	return l.recordWith(ctx, ev, nil)
}

// RecordSpending is Record that charges a call budget in the same
// transaction (store.AppendLedgerSpending): the record and the charge are
// committed together or not at all. A spent budget is an error wrapping
// agents.ErrBudget, and nothing is written.
func (l *Ledger) RecordSpending(ctx context.Context, ev Event, sp store.Spend) (Entry, error) {
	return l.recordWith(ctx, ev, &sp)
}

func (l *Ledger) recordWith(ctx context.Context, ev Event, sp *store.Spend) (Entry, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), RecordTimeout)
	defer cancel()
	ev.Version = EventVersion
	if ev.Time.IsZero() {
		ev.Time = l.now()
	}
	ev.Time = ev.Time.UTC().Round(0)
	if ev.Type == LedgerCheckpoint {
		return Entry{}, fmt.Errorf("record %s: written by Checkpoint only: %w", ev.Type, ErrInvalidEvent)
	}
	entry, err := l.record(ctx, ev, sp)
	if err != nil {
		l.log.Error("audit record failed", "type", string(ev.Type), "call_id", ev.CallID, "err", err)
		return Entry{}, err
	}
	if l.dueCheckpoint(entry.Seq) {
		// The record itself is durable: a failed checkpoint is logged, and
		// the next record retries it.
		if _, err := l.checkpoint(ctx); err != nil {
			l.cpMu.Lock()
			l.cpSeq = max(1, entry.Seq-l.every) // the next record retries
			l.cpMu.Unlock()
		}
	}
	return entry, nil
}

// dueCheckpoint reports whether the record at seq should be followed by a
// periodic checkpoint, and if so claims it so that concurrent records do not
// write one each.
func (l *Ledger) dueCheckpoint(seq uint64) bool {
	if l.signer == nil || l.every == 0 {
		return false
	}
	l.cpMu.Lock()
	defer l.cpMu.Unlock()
	if l.cpSeq == 0 {
		// First record of this process: count from here, so a restart
		// does not immediately checkpoint a long ledger twice.
		l.cpSeq = seq
		return false
	}
	if seq < l.cpSeq+l.every {
		return false
	}
	l.cpSeq = seq
	return true
}

// Checkpoint appends a LedgerCheckpoint event that signs the hash of the
// entry before it, and (WithAnchorFile) replaces the anchor file. The broker
// calls it at shutdown, after its last record, so that a verifier can tell a
// cleanly closed ledger from a cut one. It fails without WithSigner. Like
// Record it runs detached from ctx's cancellation, bounded by RecordTimeout.
func (l *Ledger) Checkpoint(ctx context.Context) (Entry, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), RecordTimeout)
	defer cancel()
	return l.checkpoint(ctx)
}

func (l *Ledger) checkpoint(ctx context.Context) (Entry, error) {
	if l.signer == nil {
		return Entry{}, fmt.Errorf("audit checkpoint: %w", ErrNoSigner)
	}
	ev := Event{Type: LedgerCheckpoint, Version: EventVersion, Time: l.now().UTC().Round(0)}
	var prev, hash string
	var cp Checkpoint
	start := time.Now()
	seq, err := l.store.AppendLedger(ctx, func(seq uint64, prevHash []byte) ([]byte, []byte, error) {
		p := hex.EncodeToString(prevHash)
		c := l.signer.Sign(seq-1, p)
		e := ev
		e.Checkpoint = &c
		canon, err := Canonical(e)
		if err != nil {
			return nil, nil, err
		}
		sum := entryHash(seq, p, canon)
		h := hex.EncodeToString(sum[:])
		b, err := json.Marshal(storedEntry{Seq: seq, Prev: p, Hash: h, Event: canon})
		if err != nil {
			return nil, nil, err
		}
		prev, hash, cp = p, h, c
		return b, sum[:], nil
	})
	l.observe(seq, start, err)
	if err != nil {
		l.log.Error("audit checkpoint failed", "err", err)
		return Entry{}, fmt.Errorf("audit checkpoint: %w", err)
	}
	ev.Checkpoint = &cp
	entry := Entry{Seq: seq, Prev: prev, Hash: hash, Event: ev}
	if l.anchor != "" {
		// The anchor vouches for the checkpoint entry itself, so that
		// cutting the checkpoint off the ledger is detected too.
		a := l.signer.Sign(seq, hash)
		l.cpMu.Lock()
		defer l.cpMu.Unlock()
		if a.Seq > l.anchored {
			if err := WriteAnchor(l.anchor, a); err != nil {
				l.log.Error("audit anchor not written", "seq", seq, "err", err)
				return entry, err
			}
			l.anchored = a.Seq
		}
	}
	return entry, nil
}

func (l *Ledger) observe(seq uint64, start time.Time, err error) {
	l.failed.Store(err != nil)
	if l.observer != nil {
		l.observer(seq, time.Since(start), err)
	}
}

func (l *Ledger) record(ctx context.Context, ev Event, sp *store.Spend) (Entry, error) {
	if err := ev.Validate(); err != nil {
		return Entry{}, fmt.Errorf("record %s: %w", ev.Type, err)
	}
	eb, err := newEntryBuilder(&ev)
	if err != nil {
		return Entry{}, fmt.Errorf("record %s: %w", ev.Type, err)
	}
	start := time.Now()
	var seq uint64
	if sp != nil {
		seq, err = l.store.AppendLedgerSpending(ctx, eb.build, *sp)
	} else {
		seq, err = l.store.AppendLedger(ctx, eb.build)
	}
	l.observe(seq, start, err)
	if err != nil {
		return Entry{}, fmt.Errorf("record %s call %q: %w", ev.Type, ev.CallID, err)
	}
	return Entry{Seq: seq, Prev: eb.prev, Hash: eb.hash, Event: ev}, nil
}

// entryHeadroom is the longest prefix of a stored entry,
// {"seq":N,"prev":"P","hash":"H","event":, for a 20-digit N and SHA-256 P and
// H: entryBuilder leaves this much room in front of the canonical event, and
// build writes the prefix into it, so the stored entry needs no copy.
const entryHeadroom = len(`{"seq":`) + 20 + len(`,"prev":"`) + 2*sha256.Size + len(`","hash":"`) + 2*sha256.Size + len(`","event":`)

// entryBuilder makes the stored entry of one record (storedEntry's JSON,
// written directly: canon is already compact JSON) in the store's write
// path. Its build method is the store's build callback.
type entryBuilder struct {
	// buf holds the stored entry, buf[at:end] (room for the prefix, the
	// canonical event, the closing brace), and after it the entry hash,
	// buf[end:]. build gives both slices to the store, which owns them
	// from then on.
	buf   []byte
	end   int
	first bool // build has not run yet

	// After build: the hex hashes of the previous entry and this one.
	prev, hash string
}

// newEntryBuilder encodes ev (Canonical's bytes) for build. The event is
// encoded into a pooled buffer, since its length is not known before, and
// copied into the entry's own allocation; the pooled buffer is back in the
// pool before the append, so nothing the store holds is ever reused.
func newEntryBuilder(ev *Event) (*entryBuilder, error) {
	sc := getScratch()
	defer putScratch(sc)
	canon, err := appendCanonicalEvent(sc.b[:0], ev)
	if err != nil {
		return nil, fmt.Errorf("encode event: %w", err)
	}
	sc.b = canon
	end := entryHeadroom + len(canon) + 1
	buf := make([]byte, end+sha256.Size)
	copy(buf[entryHeadroom:], canon)
	buf[end-1] = '}'
	return &entryBuilder{buf: buf, end: end, first: true}, nil
}

// build runs on the store's committer, serialized with every other append:
// it writes the prefix and the hash into buf and nothing else, and keeps
// nothing of prevHash. Should the store ever run it again, the store owns
// buf by then: a later run returns new slices (reading only the event's
// bytes in buf). The last run is the one committed, so prev and hash hold
// the committed values when the append succeeds.
func (e *entryBuilder) build(seq uint64, prevHash []byte) ([]byte, []byte, error) {
	canon := e.buf[entryHeadroom : e.end-1]
	var pre [entryHeadroom]byte
	p := append(pre[:0], `{"seq":`...)
	p = strconv.AppendUint(p, seq, 10)
	p = append(p, `,"prev":"`...)
	i := len(p)
	p = hex.AppendEncode(p, prevHash)
	sum := entryHash(seq, p[i:], canon)
	p = append(p, `","hash":"`...)
	j := len(p)
	p = hex.AppendEncode(p, sum[:])
	// One string holds both hex hashes: P","hash":"H.
	both := string(p[i:])
	e.prev, e.hash = both[:j-len(`","hash":"`)-i], both[j-i:]
	p = append(p, `","event":`...)
	if !e.first || len(p) > entryHeadroom { // run again, or a previous hash longer than SHA-256's (no room)
		b := make([]byte, 0, len(p)+len(canon)+1+sha256.Size)
		b = append(append(append(b, p...), canon...), '}')
		n := len(b)
		b = append(b, sum[:]...)
		return b[:n:n], b[n:], nil
	}
	e.first = false
	at := entryHeadroom - len(p)
	copy(e.buf[at:], p)
	h := e.buf[e.end : e.end+sha256.Size : e.end+sha256.Size]
	copy(h, sum[:])
	return e.buf[at:e.end:e.end], h, nil
}

// Ready returns nil while the ledger can be written: after a failed append
// it probes the store with a small write, so readiness recovers when space
// returns even if no call is being recorded. Mount it as a /readyz check.
func (l *Ledger) Ready(ctx context.Context) error {
	if !l.failed.Load() {
		return nil
	}
	if err := l.store.Probe(ctx); err != nil {
		return fmt.Errorf("audit ledger not writable: %w", err)
	}
	l.failed.Store(false)
	return nil
}
