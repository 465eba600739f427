package store

import (
	"errors"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// groupCommit is the store's write path: group commit by one long-lived
// committer goroutine. A writer arriving at an idle store is committed at
// once (no timer, unlike bbolt's db.Batch, whose MaxBatchDelay every lone
// call pays); writers that arrive while a commit (and its fsync) is in
// flight queue up and share the next commit. Throughput under load is that
// of db.Batch, latency when idle is one commit. Writers start no goroutine:
// the committer's stack stays grown, and a writer can stop waiting (its
// context ended) without stopping the commit.
type groupCommit struct {
	mu     sync.Mutex
	queue  []*pendingWrite
	closed bool          // no more writes: the committer drains and exits
	wake   chan struct{} // buffered 1: work queued (or closed)
	exited chan struct{} // closed when the committer has returned

	txs, writes atomic.Uint64 // committed transactions; writes they carried
	busy        atomic.Int64  // nanoseconds spent committing
}

// CommitStats are the store's group-commit counters.
type CommitStats struct {
	Txs    uint64        // write transactions committed (one fsync'd commit each)
	Writes uint64        // writes they carried (Writes/Txs is the mean batch)
	Busy   time.Duration // time spent in commits, fsync included
}

// CommitStats reports the store's group-commit counters.
func (s *Store) CommitStats() CommitStats {
	return CommitStats{Txs: s.commits.txs.Load(), Writes: s.commits.writes.Load(), Busy: time.Duration(s.commits.busy.Load())}
}

type pendingWrite struct {
	fn   func(*bolt.Tx) error
	done chan error // buffered 1
}

// startCommitter starts the store's committer goroutine.
func (s *Store) startCommitter() {
	s.commits.wake = make(chan struct{}, 1)
	s.commits.exited = make(chan struct{})
	go s.committer()
}

// stopCommitter lets the committer commit what is queued, then stops it;
// later writes fail with ErrClosed. It returns when the committer has.
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

// enqueue queues fn for the next commit and returns its pending write.
func (s *Store) enqueue(fn func(*bolt.Tx) error) (*pendingWrite, error) {
	p := &pendingWrite{fn: fn, done: make(chan error, 1)}
	g := &s.commits
	g.mu.Lock()
	if g.wake == nil {
		g.mu.Unlock()
		return nil, ErrReadOnly // no committer: opened read-only
	}
	if g.closed {
		g.mu.Unlock()
		return nil, ErrClosed
	}
	g.queue = append(g.queue, p)
	g.mu.Unlock()
	select {
	case g.wake <- struct{}{}:
	default: // already signalled
	}
	return p, nil
}

// write runs fn in a write transaction, possibly shared with other
// writers, and returns when it is committed (or failed). As with db.Batch,
// fn may run more than once: when another function in the same batch
// fails, the batch is retried without it. So fn must depend only on tx.
func (s *Store) write(fn func(*bolt.Tx) error) error {
	p, err := s.enqueue(fn)
	if err != nil {
		return err
	}
	return <-p.done
}

// committer commits queued batches until the store closes.
func (s *Store) committer() {
	g := &s.commits
	defer close(g.exited)
	for range g.wake {
		for {
			// Let the goroutines that are ready to run go first: under
			// load some of them are about to write and join this batch
			// (one commit and two fsyncs fewer each); on an idle machine
			// this returns at once.
			runtime.Gosched()
			g.mu.Lock()
			batch, closed := g.queue, g.closed
			g.queue = nil
			g.mu.Unlock()
			if len(batch) == 0 {
				if closed {
					return
				}
				break
			}
			s.commitBatch(batch)
		}
	}
}

func (s *Store) commitBatch(batch []*pendingWrite) {
	start := time.Now()
	defer func() { s.commits.busy.Add(int64(time.Since(start))) }()
	for len(batch) > 0 {
		failed, failErr := -1, error(nil)
		err := s.db.Update(func(tx *bolt.Tx) error {
			for i, p := range batch {
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
			s.commits.txs.Add(1)
			s.commits.writes.Add(uint64(len(batch)))
		}
		for _, p := range batch {
			p.done <- err
		}
		return
	}
}
