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

// groupCommit is the store's write path: leader-based group commit. A
// writer arriving at an idle store commits at once (no timer, unlike
// bbolt's db.Batch, whose MaxBatchDelay every lone call pays); writers that
// arrive while a commit (and its fsync) is in flight queue up and share the
// next commit. Throughput under load is that of db.Batch, latency when idle
// is one commit.
type groupCommit struct {
	mu      sync.Mutex
	queue   []*pendingWrite
	running bool

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
	done chan error
}

// write runs fn in a write transaction, possibly shared with other
// writers, and returns when it is committed (or failed). As with db.Batch,
// fn may run more than once: when another function in the same batch
// fails, the batch is retried without it. So fn must depend only on tx.
func (s *Store) write(fn func(*bolt.Tx) error) error {
	p := &pendingWrite{fn: fn, done: make(chan error, 1)}
	g := &s.commits
	g.mu.Lock()
	g.queue = append(g.queue, p)
	if g.running {
		g.mu.Unlock()
		return <-p.done
	}
	g.running = true
	g.mu.Unlock()
	s.lead()
	return <-p.done
}

// lead commits queued batches until the queue is empty. The caller's own
// write is in the first batch; later batches are led by a goroutine so the
// first leader returns as soon as its own commit is done.
func (s *Store) lead() {
	g := &s.commits
	// Let the goroutines that are ready to run go first: under load some
	// of them are about to write and join this batch (one commit and two
	// fsyncs fewer each); on an idle machine this returns at once.
	runtime.Gosched()
	g.mu.Lock()
	batch := g.queue
	g.queue = nil
	g.mu.Unlock()
	s.commitBatch(batch)
	g.mu.Lock()
	if len(g.queue) == 0 {
		g.running = false
		g.mu.Unlock()
		return
	}
	g.mu.Unlock()
	go s.lead()
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
