package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// crashStore stops s as a crash would: the committer exits without its
// checkpoint and the files are closed, so what was acknowledged since the
// last checkpoint is only in the write-ahead log.
func crashStore(t *testing.T, s *Store) {
	t.Helper()
	g := &s.commits
	g.mu.Lock()
	g.crash, g.closed = true, true
	g.mu.Unlock()
	select {
	case g.wake <- struct{}{}:
	default:
	}
	<-g.exited
	s.closed.Store(true)
	if err := s.db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := g.log.close(); err != nil {
		t.Fatal(err)
	}
}

// noCheckpoints holds checkpoints off for the test (Close still makes one).
func noCheckpoints(t *testing.T) {
	every, bytes := checkpointEvery, checkpointBytes
	checkpointEvery, checkpointBytes = time.Hour, 1<<40
	t.Cleanup(func() { checkpointEvery, checkpointBytes = every, bytes })
}

// ledgerOf reads back the whole ledger and checks that it chains.
func ledgerOf(t *testing.T, s *Store) (n uint64) {
	t.Helper()
	var prev []byte
	err := s.ScanLedger(1, func(seq uint64, entry []byte) error {
		n++
		if seq != n {
			return fmt.Errorf("seq %d at position %d", seq, n)
		}
		if want := fmt.Appendf(nil, "%d:%x:", seq, prev); !bytes.HasPrefix(entry, want) {
			return fmt.Errorf("seq %d entry %q does not chain to %x", seq, entry, prev)
		}
		h := sha256.Sum256(entry)
		prev = h[:]
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	head, hash, err := s.LedgerHead()
	if err != nil || head != n || !bytes.Equal(hash, prev) {
		t.Fatalf("head %d %x (%v), ledger ends at %d %x", head, hash, err, n, prev)
	}
	return n
}

func TestWALReplayAfterCrash(t *testing.T) {
	noCheckpoints(t)
	path := filepath.Join(t.TempDir(), "broker.db")
	s := mustOpen(t, path, Options{})
	// Some entries reach the file (a write transaction checkpoints the
	// log first), the rest only the log.
	for i := range 10 {
		if _, err := s.AppendLedgerSpending(context.Background(), chainBuild(fmt.Sprint(i)), Spend{IDs: []string{"t"}, Limits: []int64{0}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.SpendCalls([]string{"other"}, []int64{0}); err != nil {
		t.Fatal(err)
	}
	for i := range 90 {
		if _, err := s.AppendLedgerSpending(context.Background(), chainBuild(fmt.Sprint(i)), Spend{IDs: []string{"t"}, Limits: []int64{100}}); err != nil {
			t.Fatal(err)
		}
	}
	if n, _ := s.CallCount("t"); n != 100 {
		t.Fatalf("call count before the crash %d, want 100", n)
	}
	if st := s.CommitStats(); st.Checkpoints != 1 || st.LogBytes == 0 || st.Writes != 101 {
		t.Fatalf("stats before the crash: %+v, want 1 checkpoint (SpendCalls), 101 writes, bytes in the log", st)
	}
	crashStore(t, s)

	// Read-only, the log cannot be applied: refused, not a short ledger.
	if _, err := Open(path, Options{ReadOnly: true}); !errors.Is(err, ErrPendingLog) {
		t.Fatalf("read-only open with 90 records in the log: %v, want ErrPendingLog", err)
	}
	s = mustOpen(t, path, Options{})
	if n := ledgerOf(t, s); n != 100 {
		t.Fatalf("ledger after replay has %d entries, want 100", n)
	}
	if n, _ := s.CallCount("t"); n != 100 {
		t.Fatalf("call count after replay %d, want 100", n)
	}
	// The budget holds across the crash: t is at its limit of 100.
	if _, err := s.AppendLedgerSpending(context.Background(), chainBuild("over"), Spend{IDs: []string{"t"}, Limits: []int64{100}}); err == nil {
		t.Fatal("a spent budget was charged again after replay")
	}
	mustAppend(t, s, "after")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	ro := mustOpen(t, path, Options{ReadOnly: true})
	defer ro.Close()
	if n := ledgerOf(t, ro); n != 101 {
		t.Fatalf("ledger has %d entries, want 101", n)
	}
	if err := ro.Check(); err != nil {
		t.Fatal(err)
	}
}

// TestWALTornTail damages the log's last record, as a crash in the middle
// of a group's write can: replay keeps what precedes it.
func TestWALTornTail(t *testing.T) {
	noCheckpoints(t)
	for _, damage := range []string{"truncate", "flip"} {
		t.Run(damage, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "broker.db")
			s := mustOpen(t, path, Options{})
			var end int64
			for i := range 20 {
				mustAppend(t, s, fmt.Sprint(i))
				if i == 18 {
					end = s.commits.log.off // where record 20 starts
				}
			}
			crashStore(t, s)
			wal := walPath(path)
			switch damage {
			case "truncate":
				if err := os.Truncate(wal, end+20); err != nil {
					t.Fatal(err)
				}
			case "flip":
				f, err := os.OpenFile(wal, os.O_RDWR, 0)
				if err != nil {
					t.Fatal(err)
				}
				b := make([]byte, 1)
				f.ReadAt(b, end+30)
				b[0] ^= 0x40
				f.WriteAt(b, end+30)
				f.Close()
			}
			s = mustOpen(t, path, Options{})
			defer s.Close()
			if n := ledgerOf(t, s); n != 19 {
				t.Fatalf("ledger after a torn tail has %d entries, want 19", n)
			}
			// Appends chain on from what was kept.
			mustAppend(t, s, "next")
			if n := ledgerOf(t, s); n != 20 {
				t.Fatalf("ledger has %d entries, want 20", n)
			}
		})
	}
}

// TestReadWALStopsAtStaleRecords: a group rewritten in place (its first
// write failed) can leave records of the failed group after the new one;
// they carry the next sequence numbers but do not chain, so replay stops.
func TestReadWALStopsAtStaleRecords(t *testing.T) {
	rec := func(seq uint64, tag string) *walRec {
		return &walRec{seq: seq, hash: []byte{byte(seq)}, entry: []byte(tag), spends: []spendPut{{id: "t", n: seq}}}
	}
	// The failed group: 4, 5, 6 after 1..3.
	var buf []byte
	var sum uint32
	for i := uint64(1); i <= 6; i++ {
		tag := "ok"
		if i > 3 {
			tag = "failed"
		}
		buf, sum = appendRec(buf, rec(i, tag), sum)
	}
	// Rewritten: 4 only, in place.
	var rewritten []byte
	sum = 0
	for i := uint64(1); i <= 4; i++ {
		rewritten, sum = appendRec(rewritten, rec(i, map[bool]string{true: "ok", false: "new"}[i <= 3]), sum)
	}
	copy(buf, rewritten)
	path := filepath.Join(t.TempDir(), "x.wal")
	if err := os.WriteFile(path, buf, 0o600); err != nil {
		t.Fatal(err)
	}
	recs, err := readWAL(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 4 || string(recs[3].entry) != "new" {
		t.Fatalf("replayed %d records (last %q), want 1..4 ending with the rewritten one", len(recs), recs[len(recs)-1].entry)
	}
	// Records at or below the file's head are skipped.
	recs, _ = readWAL(path, 2)
	if len(recs) != 2 || recs[0].seq != 3 {
		t.Fatalf("after head 2: %d records from %d", len(recs), recs[0].seq)
	}
	// A round trip of every field.
	r := rec(9, "entry")
	r.spends = append(r.spends, spendPut{id: "parent", n: 1 << 40})
	b, _ := appendRec(nil, r, 0)
	got, err := decodeRec(b[walHeaderBytes:])
	if err != nil || got.seq != 9 || string(got.entry) != "entry" || len(got.spends) != 2 || got.spends[1] != (spendPut{"parent", 1 << 40}) {
		t.Fatalf("decode: %+v, %v", got, err)
	}
}

// failSyncs makes the next n fdatasyncs fail, as a failing disk would.
func failSyncs(t *testing.T, n int) {
	orig := fdatasync
	left := n
	fdatasync = func(f *os.File) error {
		if left > 0 {
			left--
			return errors.New("EIO (injected)")
		}
		return orig(f)
	}
	t.Cleanup(func() { fdatasync = orig })
}

// TestWALFailedGroupNeverReplays: a group whose fdatasync failed was
// reported failed (the call was denied), but its bytes may be in the file;
// it must not come back as an acknowledged entry (nor spend a budget) when
// the log is replayed. One failed sync: the group is erased and the log
// goes on. Failed syncs throughout: the log refuses appends (and Probe
// fails) until reopened.
func TestWALFailedGroupNeverReplays(t *testing.T) {
	noCheckpoints(t)
	t.Run("erased", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "broker.db")
		s := mustOpen(t, path, Options{})
		mustAppend(t, s, "good")
		failSyncs(t, 1)
		if _, err := s.AppendLedgerSpending(context.Background(), chainBuild("FAILED"), Spend{IDs: []string{"t1"}, Limits: []int64{1}}); err == nil {
			t.Fatal("append whose sync failed reported success")
		}
		if err := s.Probe(context.Background()); err != nil {
			t.Fatalf("probe after an erased failure: %v", err)
		}
		crashStore(t, s)
		s = mustOpen(t, path, Options{})
		defer s.Close()
		if n := ledgerOf(t, s); n != 1 {
			t.Fatalf("ledger has %d entries after replay, want 1 (the failed one came back)", n)
		}
		if c, _ := s.CallCount("t1"); c != 0 {
			t.Fatalf("the failed append's budget charge came back: %d", c)
		}
	})
	t.Run("broken", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "broker.db")
		s := mustOpen(t, path, Options{})
		mustAppend(t, s, "good")
		failSyncs(t, 2) // the group's sync and the erase's
		if _, err := s.AppendLedger(context.Background(), chainBuild("FAILED")); err == nil {
			t.Fatal("append whose sync failed reported success")
		}
		if _, err := s.AppendLedger(context.Background(), chainBuild("after")); err == nil {
			t.Fatal("the log took an append after a failure it could not erase")
		}
		if err := s.Probe(context.Background()); err == nil {
			t.Fatal("probe reports a store ready whose log refuses appends")
		}
		if err := s.Close(); err != nil { // checkpoints "good", empties the log
			t.Fatal(err)
		}
		if st, err := os.Stat(walPath(path)); err != nil || st.Size() != 0 {
			t.Fatalf("log after a clean close: %v, %v bytes", err, st.Size())
		}
		s = mustOpen(t, path, Options{})
		defer s.Close()
		if n := ledgerOf(t, s); n != 1 {
			t.Fatalf("ledger has %d entries, want 1", n)
		}
		mustAppend(t, s, "reopened")
	})
}

// TestWALCheckpointsUnderLoad: with writers that never let the queue run
// dry, checkpoints still happen (the log stays near checkpointBytes).
func TestWALCheckpointsUnderLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "broker.db")
	s := mustOpen(t, path, Options{NoSync: true})
	defer s.Close()
	var stop atomic.Bool
	var wg sync.WaitGroup
	pad := strings.Repeat("x", 1024)
	for i := range 32 {
		wg.Go(func() {
			for j := 0; !stop.Load(); j++ {
				if _, err := s.AppendLedger(context.Background(), chainBuild(fmt.Sprint(i, ".", j, pad))); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	var maxSize int64
	for deadline := time.Now().Add(1500 * time.Millisecond); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if st, err := os.Stat(walPath(path)); err == nil && st.Size() > maxSize {
			maxSize = st.Size()
		}
	}
	stop.Store(true)
	wg.Wait()
	if limit := int64(checkpointBytes) + 2*walGrowChunk; maxSize > limit {
		t.Fatalf("the log grew to %d bytes under load (checkpoints at %d)", maxSize, checkpointBytes)
	}
	if s.CommitStats().Writes < 1000 {
		t.Fatalf("only %d appends in 1.5 s: the load did not run", s.CommitStats().Writes)
	}
}

// TestWALRefusesWhatItCannotReplay: an entry too large for a log record is
// refused, not acknowledged and then lost (with everything after it) on
// replay.
func TestWALRefusesWhatItCannotReplay(t *testing.T) {
	noCheckpoints(t)
	path := filepath.Join(t.TempDir(), "broker.db")
	s := mustOpen(t, path, Options{NoSync: true})
	if _, err := s.AppendLedger(context.Background(), chainBuild(strings.Repeat("y", walMaxRecord))); err == nil {
		t.Fatal("an entry larger than a log record was acknowledged")
	}
	mustAppend(t, s, "small")
	crashStore(t, s)
	s = mustOpen(t, path, Options{})
	defer s.Close()
	if n := ledgerOf(t, s); n != 1 {
		t.Fatalf("ledger has %d entries after replay, want 1", n)
	}
}

// TestFailedCheckpointRetryDelay: a failing checkpoint is retried
// checkpointEvery later, not on every batch, however big the log grows (each
// attempt re-applies every pending record).
func TestFailedCheckpointRetryDelay(t *testing.T) {
	every, bytes := checkpointEvery, checkpointBytes
	checkpointEvery, checkpointBytes = time.Hour, 4<<10
	t.Cleanup(func() { checkpointEvery, checkpointBytes = every, bytes })
	path := filepath.Join(t.TempDir(), "broker.db")
	s := mustOpen(t, path, Options{NoSync: true})
	defer crashStore(t, s)
	// Every checkpoint fails: the file's head no longer matches the log.
	if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(metaLedgerSeq, u64(1000)) }); err != nil {
		t.Fatal(err)
	}
	for range 200 {
		mustAppend(t, s, strings.Repeat("padding-", 8))
	}
	if st := s.CommitStats(); st.CheckpointFailures != 1 || st.Checkpoints != 0 {
		t.Fatalf("%d failed checkpoints (want 1: retried an hour later), %d done", st.CheckpointFailures, st.Checkpoints)
	}
}

// TestCheckpointsCountOnlyTheLog: bbolt writes with nothing in the log are
// not checkpoints.
func TestCheckpointsCountOnlyTheLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "broker.db")
	s := mustOpen(t, path, Options{NoSync: true})
	defer s.Close()
	for range 3 {
		if err := s.SpendCalls([]string{"t"}, []int64{0}); err != nil {
			t.Fatal(err)
		}
	}
	mustAppend(t, s, "one")
	if err := s.SpendCalls([]string{"t"}, []int64{0}); err != nil {
		t.Fatal(err)
	}
	if st := s.CommitStats(); st.Checkpoints != 1 {
		t.Fatalf("Checkpoints = %d, want 1 (the log applied once)", st.Checkpoints)
	}
}

// TestWALFullRefusesAppends: while checkpoints fail, the log takes appends
// up to walLimit, then refuses them (nothing more is acknowledged), and
// every acknowledged one replays.
func TestWALFullRefusesAppends(t *testing.T) {
	every, bytes, limit := checkpointEvery, checkpointBytes, walLimit
	checkpointEvery, checkpointBytes, walLimit = time.Hour, 4<<10, 16<<10
	t.Cleanup(func() { checkpointEvery, checkpointBytes, walLimit = every, bytes, limit })
	path := filepath.Join(t.TempDir(), "broker.db")
	s := mustOpen(t, path, Options{NoSync: true})
	// Every checkpoint fails: the file's head no longer matches the log.
	if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(metaLedgerSeq, u64(1000)) }); err != nil {
		t.Fatal(err)
	}
	acked := 0
	var err error
	for range 1000 {
		if _, err = s.AppendLedger(context.Background(), chainBuild(strings.Repeat("padding-", 8))); err != nil {
			break
		}
		acked++
	}
	if err == nil || !strings.Contains(err.Error(), "write-ahead log full") {
		t.Fatalf("after %d appends with failing checkpoints: %v, want the log full", acked, err)
	}
	if st := s.CommitStats(); st.LogBytes < int64(walLimit) || st.Writes != uint64(acked) {
		t.Fatalf("stats %+v after %d acknowledged appends", st, acked)
	}
	// Repair the file's head; the records are still in the log.
	crashStore(t, s)
	raw, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := raw.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Delete(metaLedgerSeq) }); err != nil {
		t.Fatal(err)
	}
	raw.Close()
	s = mustOpen(t, path, Options{})
	defer s.Close()
	if n := ledgerOf(t, s); n != uint64(acked) {
		t.Fatalf("ledger has %d entries after replay, want the %d acknowledged", n, acked)
	}
}
