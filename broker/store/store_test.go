package store

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// openTest opens a store in t.TempDir and checks the file's consistency in
// cleanup, after closing it.
func openTest(t testing.TB, opts Options) *Store {
	t.Helper()
	path := filepath.Join(t.TempDir(), "data", "broker.db")
	s, err := Open(path, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Check(); err != nil && !errors.Is(err, ErrClosed) {
			t.Errorf("Check: %v", err)
		}
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		checkFile(t, path)
	})
	return s
}

// checkFile reopens a closed store file and runs the consistency check.
func checkFile(t testing.TB, path string) {
	t.Helper()
	s, err := Open(path, Options{ReadOnly: true})
	if err != nil {
		t.Errorf("reopen for check: %v", err)
		return
	}
	defer s.Close()
	if err := s.Check(); err != nil {
		t.Errorf("Check after close: %v", err)
	}
}

// chainBuild returns a pure build func whose hash is sha256(prev || entry).
func chainBuild(payload string) func(uint64, []byte) ([]byte, []byte, error) {
	return func(seq uint64, prev []byte) ([]byte, []byte, error) {
		entry := fmt.Appendf(nil, "%d:%x:%s", seq, prev, payload)
		h := sha256.Sum256(entry)
		return entry, h[:], nil
	}
}

func TestOpenCreatesBuckets(t *testing.T) {
	s := openTest(t, Options{})
	err := s.db.View(func(tx *bolt.Tx) error {
		for _, b := range allBuckets {
			if tx.Bucket(b) == nil {
				return fmt.Errorf("bucket %s missing", b)
			}
		}
		if v := tx.Bucket(bucketMeta).Get(metaSchema); string(v) != string(u64(1)) {
			return fmt.Errorf("schema version = %x", v)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	if m := info.Mode().Perm(); m != 0o600 {
		t.Errorf("file mode = %o, want 600", m)
	}
}

func TestAppendScanOrder(t *testing.T) {
	s := openTest(t, Options{})
	ctx := context.Background()
	var hashes [][]byte
	for i := range 600 { // more than two scan chunks
		var got []byte
		seq, err := s.AppendLedger(ctx, func(seq uint64, prev []byte) ([]byte, []byte, error) {
			if i == 0 && prev != nil {
				t.Errorf("first prev = %x, want nil", prev)
			}
			if i > 0 && string(prev) != string(hashes[i-1]) {
				t.Errorf("seq %d prev = %x, want %x", seq, prev, hashes[i-1])
			}
			e, h, err := chainBuild(fmt.Sprint(i))(seq, prev)
			got = h
			return e, h, err
		})
		if err != nil {
			t.Fatal(err)
		}
		if seq != uint64(i+1) {
			t.Fatalf("seq = %d, want %d", seq, i+1)
		}
		hashes = append(hashes, got)
	}
	n, head, err := s.LedgerHead()
	if err != nil || n != 600 || string(head) != string(hashes[599]) {
		t.Fatalf("LedgerHead = %d %x %v", n, head, err)
	}
	var want uint64 = 100
	err = s.ScanLedger(100, func(seq uint64, entry []byte) error {
		if seq != want {
			return fmt.Errorf("seq %d, want %d", seq, want)
		}
		if prefix := fmt.Sprintf("%d:", seq); string(entry[:len(prefix)]) != prefix {
			return fmt.Errorf("entry %q for seq %d", entry, seq)
		}
		want++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if want != 601 {
		t.Fatalf("scan stopped before %d", want)
	}
	stop := errors.New("stop")
	if err := s.ScanLedger(0, func(uint64, []byte) error { return stop }); !errors.Is(err, stop) {
		t.Fatalf("ScanLedger error = %v, want stop", err)
	}
}

func TestAppendConcurrentNoGaps(t *testing.T) {
	s := openTest(t, Options{})
	const n = 200
	var wg sync.WaitGroup
	seqs := make(chan uint64, n)
	for i := range n {
		wg.Go(func() {
			seq, err := s.AppendLedger(context.Background(), chainBuild(fmt.Sprint(i)))
			if err != nil {
				t.Error(err)
			}
			seqs <- seq
		})
	}
	wg.Wait()
	close(seqs)
	seen := map[uint64]bool{}
	for seq := range seqs {
		if seen[seq] {
			t.Errorf("seq %d twice", seq)
		}
		seen[seq] = true
	}
	var prevHash []byte
	var count uint64
	err := s.ScanLedger(1, func(seq uint64, entry []byte) error {
		count++
		if want := fmt.Appendf(nil, "%d:%x:", seq, prevHash); string(entry[:len(want)]) != string(want) {
			return fmt.Errorf("seq %d entry %q does not chain to %x", seq, entry, prevHash)
		}
		h := sha256.Sum256(entry)
		prevHash = h[:]
		return nil
	})
	if err != nil || count != n || len(seen) != n {
		t.Fatalf("scan: %v, count %d, distinct seqs %d", err, count, len(seen))
	}
}

func TestBuildErrorWritesNothing(t *testing.T) {
	s := openTest(t, Options{})
	boom := errors.New("boom")
	_, err := s.AppendLedger(context.Background(), func(uint64, []byte) ([]byte, []byte, error) { return nil, nil, boom })
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want boom", err)
	}
	_, err = s.AppendLedger(context.Background(), func(uint64, []byte) ([]byte, []byte, error) { return []byte("x"), nil, nil })
	if err == nil {
		t.Fatal("empty hash accepted")
	}
	if n, err := s.LedgerLen(); n != 0 || err != nil {
		t.Fatalf("LedgerLen = %d, %v", n, err)
	}
}

func TestSecondOpenLocked(t *testing.T) {
	s := openTest(t, Options{})
	for _, ro := range []bool{false, true} {
		start := time.Now()
		s2, err := Open(s.Path(), Options{LockTimeout: 200 * time.Millisecond, ReadOnly: ro})
		if err == nil {
			s2.Close()
			t.Fatalf("second Open (read-only %v) succeeded", ro)
		}
		if !errors.Is(err, ErrLocked) {
			t.Fatalf("second Open err = %v, want ErrLocked", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("second Open took %v", d)
		}
	}
}

func TestClosedStore(t *testing.T) {
	s := openTest(t, Options{})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := s.AppendLedger(context.Background(), chainBuild("x")); !errors.Is(err, ErrClosed) {
		t.Fatalf("AppendLedger after Close = %v, want ErrClosed", err)
	}
	if _, err := s.LedgerLen(); !errors.Is(err, ErrClosed) {
		t.Fatalf("LedgerLen after Close = %v, want ErrClosed", err)
	}
	if err := s.ScanLedger(1, func(uint64, []byte) error { return nil }); !errors.Is(err, ErrClosed) {
		t.Fatalf("ScanLedger after Close = %v, want ErrClosed", err)
	}
}

func TestCancelledContextWritesNothing(t *testing.T) {
	s := openTest(t, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.AppendLedger(ctx, chainBuild("x")); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if n, _ := s.LedgerLen(); n != 0 {
		t.Fatalf("LedgerLen = %d after cancelled append", n)
	}
}

func TestReadOnly(t *testing.T) {
	path := filepath.Join(t.TempDir(), "broker.db")
	if _, err := Open(path, Options{ReadOnly: true}); err == nil {
		t.Fatal("read-only Open of a missing file succeeded")
	}
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.AppendLedger(context.Background(), chainBuild("a")); err != nil {
		t.Fatal(err)
	}
	s.Close()
	ro1, err := Open(path, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro1.Close()
	ro2, err := Open(path, Options{ReadOnly: true, LockTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatalf("two readers: %v", err)
	}
	defer ro2.Close()
	if n, err := ro2.LedgerLen(); n != 1 || err != nil {
		t.Fatalf("LedgerLen = %d, %v", n, err)
	}
	if _, err := ro1.AppendLedger(context.Background(), chainBuild("b")); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("append on read-only = %v, want ErrReadOnly", err)
	}
	if err := ro1.Check(); err != nil {
		t.Fatal(err)
	}
}

func TestSchemaVersionMismatch(t *testing.T) {
	path := filepath.Join(t.TempDir(), "broker.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(metaSchema, u64(2)) }); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := Open(path, Options{}); !errors.Is(err, ErrSchema) {
		t.Fatalf("Open of schema 2 = %v, want ErrSchema", err)
	}
}

// TestCloseDuringAppends closes the store while appends are in flight:
// every append either succeeds and is in the file afterwards, or fails with
// ErrClosed at the queue; Close commits what it let in (appends that charge
// a budget too).
func TestCloseDuringAppends(t *testing.T) {
	for _, spending := range []bool{false, true} {
		t.Run(fmt.Sprint("spending=", spending), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "broker.db")
			s := mustOpen(t, path, Options{})
			const n = 300
			var wg sync.WaitGroup
			acked := make(chan uint64, n)
			for i := range n {
				wg.Go(func() {
					var seq uint64
					var err error
					if spending {
						seq, err = s.AppendLedgerSpending(context.Background(), chainBuild(fmt.Sprint(i)), Spend{IDs: []string{fmt.Sprint("t", i)}, Limits: []int64{5}})
					} else {
						seq, err = s.AppendLedger(context.Background(), chainBuild(fmt.Sprint(i)))
					}
					switch {
					case err == nil:
						acked <- seq
					case !errors.Is(err, ErrClosed) || strings.Contains(err.Error(), "call count"):
						t.Errorf("append %d: %v, want success, or ErrClosed at the queue", i, err)
					}
				})
				if i == n/2 {
					if err := s.Close(); err != nil {
						t.Fatal(err)
					}
				}
			}
			wg.Wait()
			close(acked)
			r := mustOpen(t, path, Options{ReadOnly: true})
			defer r.Close()
			last, err := r.LedgerLen()
			if err != nil {
				t.Fatal(err)
			}
			got := 0
			for seq := range acked {
				got++
				if seq == 0 || seq > last {
					t.Errorf("acknowledged seq %d not in the file (last %d)", seq, last)
				}
			}
			if uint64(got) != last {
				t.Errorf("%d appends acknowledged, %d in the file", got, last)
			}
		})
	}
}

// mustOpen opens the store at path or fails the test.
func mustOpen(t testing.TB, path string, opts Options) *Store {
	t.Helper()
	s, err := Open(path, opts)
	if err != nil {
		t.Fatalf("Open %s: %v", path, err)
	}
	return s
}

// mustAppend appends chainBuild(payload) or fails the test.
func mustAppend(t testing.TB, s *Store, payload string) uint64 {
	t.Helper()
	seq, err := s.AppendLedger(context.Background(), chainBuild(payload))
	if err != nil {
		t.Fatalf("append %q: %v", payload, err)
	}
	return seq
}
