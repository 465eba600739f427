package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/mcpbroker/mcpbroker/agents"
)

// Checkpoints: the write-ahead log (wal.go) is applied to the bbolt file
// when its oldest record is this old, or when it holds this many bytes.
var (
	checkpointEvery = 50 * time.Millisecond // vars for the tests
	checkpointBytes = 4 << 20
	walLimit        = 64 << 20 // appends fail while the log holds this much (checkpoints failing)
)

// groupCommit is the store's write path: group commit by one long-lived
// committer goroutine. A writer arriving at an idle store is committed at
// once (no timer, unlike bbolt's db.Batch, whose MaxBatchDelay every lone
// call pays); writers that arrive while a commit (and its fsync) is in
// flight queue up and share the next commit. Throughput under load is that
// of db.Batch, latency when idle is one commit. Writers start no goroutine:
// the committer's stack stays grown, and a writer can stop waiting (its
// context ended) without stopping the commit.
//
// Ledger appends are committed to the write-ahead log (one fdatasync per
// group) and applied to the bbolt file at checkpoints; every other write
// is a bbolt transaction, which first applies what the log holds.
type groupCommit struct {
	mu     sync.Mutex
	queue  []*pendingWrite
	closed bool          // no more writes: the committer drains and exits
	crash  bool          // tests: exit without the final checkpoint
	wake   chan struct{} // buffered 1: work queued (or closed)
	exited chan struct{} // closed when the committer has returned

	txs, writes atomic.Uint64 // committed groups (log or bbolt); writes they carried
	busy        atomic.Int64  // nanoseconds spent committing
	checkpoints atomic.Uint64 // log applied to the file (checkpoints and other write transactions)
	cpFailures  atomic.Uint64 // checkpoints that failed (the records stay in the log)
	logBytes    atomic.Int64  // bytes in the log not yet in the file (written by the committer only)

	// The committer's own state.
	log      *wal
	pending  []walRec  // in the log, not yet in the bbolt file
	since    time.Time // when the oldest pending record was logged
	failedAt time.Time // the last failed checkpoint
	cpErr    error     // and its error
	buf      []byte

	// What readers need of the log's state (headMu).
	headMu   sync.Mutex
	headSeq  uint64
	headHash []byte
	counts   map[string]uint64 // call counters set since the last checkpoint
}

// CommitStats are the store's group-commit counters.
type CommitStats struct {
	Txs    uint64        // durable group commits that carried writes: log groups, and bbolt transactions with other writes
	Writes uint64        // writes they carried (Writes/Txs is the mean batch)
	Busy   time.Duration // time spent in commits, fsync included

	Checkpoints        uint64 // times the write-ahead log was applied to the file
	CheckpointFailures uint64 // checkpoints that failed (their records stay in the log)
	LogBytes           int64  // bytes in the log now, not yet in the file
}

// CommitStats reports the store's group-commit counters.
func (s *Store) CommitStats() CommitStats {
	g := &s.commits
	return CommitStats{Txs: g.txs.Load(), Writes: g.writes.Load(), Busy: time.Duration(g.busy.Load()),
		Checkpoints: g.checkpoints.Load(), CheckpointFailures: g.cpFailures.Load(), LogBytes: g.logBytes.Load()}
}

// pendingWrite is a queued write: a transaction function (fn), a ledger
// append (led), or neither (a checkpoint).
type pendingWrite struct {
	fn    func(*bolt.Tx) error
	led   *ledgerOp
	probe bool       // Probe: fails while the log refuses appends
	done  chan error // buffered 1
}

// ledgerOp is an append: build makes the entry for its sequence number,
// and spend, if set, is charged with it.
type ledgerOp struct {
	ctx   context.Context
	build func(seq uint64, prevHash []byte) (entry, hash []byte, err error)
	spend *Spend
	seq   uint64 // set once logged
}

// startCommitter starts the store's committer goroutine with the log lg,
// whose records up to head (hash) are in the file.
func (s *Store) startCommitter(lg *wal, head uint64, hash []byte) {
	g := &s.commits
	g.log = lg
	g.headSeq, g.headHash = head, hash
	g.counts = map[string]uint64{}
	g.wake = make(chan struct{}, 1)
	g.exited = make(chan struct{})
	go s.committer()
}

// stopCommitter lets the committer commit what is queued and checkpoint,
// then stops it; later writes fail with ErrClosed. It returns when the
// committer has.
func (s *Store) stopCommitter() {
	g := &s.commits
	if g.exited == nil {
		return // read-only: never started
	}
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
	select {
	case g.wake <- struct{}{}:
	default:
	}
	<-g.exited
}

// enqueue queues p for the committer.
func (s *Store) enqueue(p *pendingWrite) error {
	g := &s.commits
	g.mu.Lock()
	if g.wake == nil {
		g.mu.Unlock()
		return ErrReadOnly // no committer: opened read-only
	}
	if g.closed {
		g.mu.Unlock()
		return ErrClosed
	}
	g.queue = append(g.queue, p)
	g.mu.Unlock()
	select {
	case g.wake <- struct{}{}:
	default: // already signalled
	}
	return nil
}

// write runs fn in a write transaction, possibly shared with other
// writers, and returns when it is committed (or failed). As with db.Batch,
// fn may run more than once: when another function in the same batch
// fails, the batch is retried without it. So fn must depend only on tx.
func (s *Store) write(fn func(*bolt.Tx) error) error {
	p := &pendingWrite{fn: fn, done: make(chan error, 1)}
	if err := s.enqueue(p); err != nil {
		return err
	}
	return <-p.done
}

// flush applies the write-ahead log to the bbolt file, for readers of the
// ledger. A read-only store has no log to apply.
func (s *Store) flush() error {
	p := &pendingWrite{done: make(chan error, 1)}
	if err := s.enqueue(p); err != nil {
		if errors.Is(err, ErrReadOnly) {
			return nil
		}
		return err
	}
	return <-p.done
}

// committer commits queued writes until the store closes.
func (s *Store) committer() {
	g := &s.commits
	defer close(g.exited)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case <-g.wake:
		case <-timer.C:
		}
		closed := false
		for {
			// Let the goroutines that are ready to run go first: under
			// load some of them are about to write and join this batch
			// (one commit and one fsync fewer each); on an idle machine
			// this returns at once.
			runtime.Gosched()
			g.mu.Lock()
			batch := g.queue
			g.queue = nil
			closed = g.closed
			crash := g.crash
			g.mu.Unlock()
			if crash {
				return
			}
			if len(batch) == 0 {
				break
			}
			s.process(batch)
			// Under steady load the queue never runs dry: checkpoints
			// are due between batches, not only when it does.
			s.checkpointIfDue()
		}
		if closed {
			// Close: a clean stop leaves nothing in the log. If the
			// checkpoint fails the records stay there for Open.
			if s.checkpoint() == nil {
				_ = g.log.truncate()
			}
			return
		}
		s.checkpointIfDue()
		if len(g.pending) > 0 {
			timer.Reset(max(time.Until(s.dueAt()), time.Millisecond))
		}
	}
}

// dueAt is when the pending records are due in the file: checkpointEvery
// after the oldest of them, or after the last failed attempt.
func (s *Store) dueAt() time.Time {
	g := &s.commits
	return later(g.since, g.failedAt).Add(checkpointEvery)
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// checkpointIfDue checkpoints when the log is old or big enough. A failed
// checkpoint is retried checkpointEvery later, however big the log (the
// records are safe in it meanwhile).
func (s *Store) checkpointIfDue() {
	g := &s.commits
	now := time.Now()
	switch {
	case len(g.pending) == 0:
		return
	case !g.failedAt.IsZero() && now.Before(g.failedAt.Add(checkpointEvery)):
		return // retry delay
	case g.logBytes.Load() < int64(checkpointBytes) && now.Before(g.since.Add(checkpointEvery)):
		return
	}
	if err := s.checkpoint(); err != nil {
		g.failedAt, g.cpErr = now, err
	}
}

// process commits a batch in queue order: runs of ledger appends to the
// log, runs of other writes (and checkpoints) in a bbolt transaction.
func (s *Store) process(batch []*pendingWrite) {
	for len(batch) > 0 {
		n := 1
		led := batch[0].led != nil
		for n < len(batch) && (batch[n].led != nil) == led {
			n++
		}
		if led {
			s.logAppends(batch[:n])
		} else {
			s.commitBatch(batch[:n])
		}
		batch = batch[n:]
	}
}

// logAppends commits a run of ledger appends to the log: each is checked
// (its context, its budget) and built on the log's head; those that pass go
// to the log in one write and one fdatasync, and are acknowledged when it
// is durable.
func (s *Store) logAppends(ops []*pendingWrite) {
	g := &s.commits
	if err := g.log.broken; err != nil {
		for _, p := range ops {
			p.done <- err
		}
		return
	}
	if g.logBytes.Load() >= int64(walLimit) {
		// Checkpoints have been failing (the file cannot take the
		// records): the log does not grow without bound in memory and on
		// disk; appends fail until a checkpoint succeeds.
		s.checkpointIfDue()
		if n := g.logBytes.Load(); n >= int64(walLimit) {
			err := fmt.Errorf("write-ahead log full (%d bytes): checkpoints to the file are failing: %w", n, g.cpErr)
			for _, p := range ops {
				p.done <- err
			}
			return
		}
	}
	start := time.Now()
	seq, hash := g.headSeq, g.headHash
	var spent map[string]uint64 // counters this group sets
	buf := g.buf[:0]
	sum := g.log.last
	var recs []walRec
	var ok []*pendingWrite
	for _, p := range ops {
		op := p.led
		if err := op.ctx.Err(); err != nil {
			p.done <- err
			continue
		}
		var puts []spendPut
		if op.spend != nil {
			var err error
			if puts, err = s.charge(op.spend, spent); err != nil {
				p.done <- err
				continue
			}
		}
		entry, h, err := op.build(seq+1, hash)
		if err == nil && (len(entry) == 0 || len(h) == 0) {
			err = errors.New("empty entry or hash")
		}
		if err == nil {
			err = recFits(h, entry, puts)
		}
		if err != nil {
			p.done <- fmt.Errorf("build ledger entry %d: %w", seq+1, err)
			continue
		}
		seq++
		hash = h
		op.seq = seq
		if len(puts) > 0 && spent == nil {
			spent = map[string]uint64{}
		}
		for _, sp := range puts {
			spent[sp.id] = sp.n
		}
		r := walRec{seq: seq, hash: h, entry: entry, spends: puts}
		buf, sum = appendRec(buf, &r, sum)
		recs = append(recs, r)
		ok = append(ok, p)
	}
	if len(ok) == 0 {
		return
	}
	err := g.log.write(buf, sum)
	if cap(buf) <= checkpointBytes {
		g.buf = buf[:0]
	}
	if err == nil {
		g.headMu.Lock()
		g.headSeq, g.headHash = seq, hash
		for id, n := range spent {
			g.counts[id] = n
		}
		g.headMu.Unlock()
		if len(g.pending) == 0 {
			g.since = start
		}
		g.pending = append(g.pending, recs...)
		g.logBytes.Add(int64(len(buf)))
		g.txs.Add(1)
		g.writes.Add(uint64(len(ok)))
	}
	g.busy.Add(int64(time.Since(start)))
	for _, p := range ok {
		p.done <- err
	}
}

// charge checks a spend against the task counters (this group's, then the
// log's, then the file's) and returns the counters it sets.
func (s *Store) charge(sp *Spend, group map[string]uint64) ([]spendPut, error) {
	puts := make([]spendPut, len(sp.IDs))
	for i, id := range sp.IDs {
		n, ok := group[id]
		if !ok {
			var err error
			if n, err = s.counter(id); err != nil {
				return nil, err
			}
		}
		if sp.Limits[i] > 0 && n+1 > uint64(sp.Limits[i]) {
			return nil, fmt.Errorf("%w: task %s has used %d of %d calls", agents.ErrBudget, id, n, sp.Limits[i])
		}
		puts[i] = spendPut{id: id, n: n + 1}
	}
	return puts, nil
}

// callCount is a task's call counter, for readers.
func (s *Store) callCount(id string) (uint64, error) {
	if s.closed.Load() {
		return 0, fmt.Errorf("call count: %w", ErrClosed)
	}
	return s.counter(id)
}

// counter is a task's call counter: the log's if it set one since the last
// checkpoint, else the file's. The committer uses it while Close drains
// the queue.
func (s *Store) counter(id string) (n uint64, err error) {
	g := &s.commits
	g.headMu.Lock()
	n, ok := g.counts[id]
	g.headMu.Unlock()
	if ok {
		return n, nil
	}
	err = recoverCorrupt(func() error {
		return s.db.View(func(tx *bolt.Tx) error {
			if v := tx.Bucket(bucketTasks).Get([]byte("c/" + id)); len(v) == 8 {
				n = binary.BigEndian.Uint64(v)
			}
			return nil
		})
	})
	if err != nil {
		return 0, fmt.Errorf("call count: %w", mapErr(err))
	}
	return n, nil
}

// applyRecs writes logged records into the file.
func applyRecs(tx *bolt.Tx, recs []walRec) error {
	if len(recs) == 0 {
		return nil
	}
	meta, ledger, tasks := tx.Bucket(bucketMeta), tx.Bucket(bucketLedger), tx.Bucket(bucketTasks)
	if meta == nil || ledger == nil || tasks == nil {
		return fmt.Errorf("store buckets missing: %w", ErrSchema)
	}
	last, err := readSeq(meta.Get(metaLedgerSeq))
	if err != nil {
		return err
	}
	ledger.FillPercent = 1.0 // keys only ever grow: pack pages full
	for _, r := range recs {
		if r.seq != last+1 {
			return fmt.Errorf("ledger entry %d does not follow the head %d", r.seq, last)
		}
		if err := ledger.Put(u64(r.seq), r.entry); err != nil {
			return err
		}
		for _, sp := range r.spends {
			if err := tasks.Put([]byte("c/"+sp.id), u64(sp.n)); err != nil {
				return err
			}
		}
		last = r.seq
	}
	if err := meta.Put(metaLedgerSeq, u64(last)); err != nil {
		return err
	}
	return meta.Put(metaLedgerHash, recs[len(recs)-1].hash)
}

// checkpoint applies the log to the file in one transaction and starts the
// log over.
func (s *Store) checkpoint() error {
	g := &s.commits
	if len(g.pending) == 0 {
		return nil
	}
	start := time.Now()
	err := s.db.Update(func(tx *bolt.Tx) error { return applyRecs(tx, g.pending) })
	g.busy.Add(int64(time.Since(start)))
	if err != nil {
		g.cpFailures.Add(1)
		return err
	}
	s.checkpointed()
	return nil
}

// checkpointed notes that the pending records are in the file.
func (s *Store) checkpointed() {
	g := &s.commits
	if len(g.pending) > 0 {
		g.checkpoints.Add(1)
	}
	clear(g.pending) // drop the entries (the array is kept)
	g.pending = g.pending[:0]
	g.logBytes.Store(0)
	g.failedAt, g.cpErr = time.Time{}, nil
	g.headMu.Lock()
	clear(g.counts)
	g.headMu.Unlock()
	g.log.reset()
}

// commitBatch commits a run of transaction functions (and checkpoint
// requests, which have none) in one bbolt transaction, after the log's
// pending records. A function that fails is answered with its error and the
// transaction retried without it.
func (s *Store) commitBatch(batch []*pendingWrite) {
	g := &s.commits
	if slices.ContainsFunc(batch, func(p *pendingWrite) bool { return p.probe }) {
		// A probe also asks whether the log can take appends: not
		// broken, and room for a group without growing the file.
		if err := g.log.headroom(); err != nil {
			batch = slices.DeleteFunc(slices.Clone(batch), func(p *pendingWrite) bool {
				if p.probe {
					p.done <- err
				}
				return p.probe
			})
		}
	}
	start := time.Now()
	defer func() { g.busy.Add(int64(time.Since(start))) }()
	fns := 0
	for _, p := range batch {
		if p.fn != nil {
			fns++
		}
	}
	if fns == 0 && len(g.pending) == 0 {
		for _, p := range batch {
			p.done <- nil
		}
		return
	}
	for len(batch) > 0 {
		failed, failErr := -1, error(nil)
		err := s.db.Update(func(tx *bolt.Tx) error {
			if err := applyRecs(tx, g.pending); err != nil {
				return err
			}
			for i, p := range batch {
				if p.fn == nil {
					continue
				}
				if err := p.fn(tx); err != nil {
					failed, failErr = i, err
					return err
				}
			}
			return nil
		})
		if failed >= 0 && errors.Is(err, failErr) {
			batch[failed].done <- failErr
			batch = slices.Delete(batch, failed, failed+1)
			continue
		}
		if err == nil {
			s.checkpointed()
			g.txs.Add(1)
			g.writes.Add(uint64(len(batch)))
		}
		for _, p := range batch {
			p.done <- err
		}
		return
	}
}
