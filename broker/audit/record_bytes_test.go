package audit

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/mcpbroker/mcpbroker/agents"
	"github.com/mcpbroker/mcpbroker/broker/store"
)

// refEntryHash is the chain hash exactly as the package doc states it,
// written independently of entryHash.
func refEntryHash(seq uint64, prev string, canon []byte) string {
	sum := sha256.Sum256([]byte(hashDomain + strconv.FormatUint(seq, 10) + "\n" + prev + "\n" + string(canon)))
	return hex.EncodeToString(sum[:])
}

// TestRecordStoredBytes: every stored entry is exactly
// json.Marshal(storedEntry) of the reference canonical event and the
// documented hash, and Record returns its Prev and Hash; with concurrent
// records sharing commits, and budget refusals among them.
func TestRecordStoredBytes(t *testing.T) {
	s := openStore(t, store.Options{}) // fsync: slower commits, so groups form
	l := NewLedger(s, nil, WithClock(fixedClock()))
	ctx := context.Background()
	events := []Event{goldenEvent(), benchEvent(), {Type: BrokerStarted}, {Type: CallCompleted, CallID: "c", Status: StatusOK, LatencyMS: 1e-7},
		{Type: CallDecided, Args: map[string]string{"path": "/etc/<x>", "q": "é"}, Detail: strings.Repeat("d", 5000)}}
	var mu sync.Mutex
	got := map[uint64]Entry{}
	keep := func(e Entry, err error) {
		if err != nil {
			if !errors.Is(err, agents.ErrBudget) {
				t.Error(err)
			}
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if _, dup := got[e.Seq]; dup {
			t.Errorf("seq %d returned twice", e.Seq)
		}
		got[e.Seq] = e
	}
	for _, ev := range events {
		keep(l.Record(ctx, ev))
	}
	var wg sync.WaitGroup
	for g := range 32 {
		wg.Go(func() {
			for i := range 20 {
				ev := events[(g+i)%len(events)]
				ev.CallID = fmt.Sprintf("g%d-%d", g, i)
				if i%3 == 0 {
					// Limit 1: all but the first fail inside a batch.
					keep(l.RecordSpending(ctx, ev, store.Spend{IDs: []string{"t"}, Limits: []int64{1}}))
					continue
				}
				keep(l.Record(ctx, ev))
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	n := uint64(len(got))
	prev := ""
	err := s.ScanLedger(1, func(seq uint64, raw []byte) error {
		e, ok := got[seq]
		if !ok {
			return fmt.Errorf("seq %d stored but not returned", seq)
		}
		canon, err := canonicalGeneric(e.Event)
		if err != nil {
			return err
		}
		hash := refEntryHash(seq, prev, canon)
		want, err := json.Marshal(storedEntry{Seq: seq, Prev: prev, Hash: hash, Event: canon})
		if err != nil {
			return err
		}
		if string(raw) != string(want) {
			return fmt.Errorf("seq %d stored\n %s\nwant\n %s", seq, raw, want)
		}
		if e.Prev != prev || e.Hash != hash {
			return fmt.Errorf("seq %d: Record returned prev %q hash %q, want %q %q", seq, e.Prev, e.Hash, prev, hash)
		}
		prev = hash
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if last, head, err := s.LedgerHead(); err != nil || last != n || hex.EncodeToString(head) != prev {
		t.Fatalf("head %d %x %v, want %d %s", last, head, err, n, prev)
	}
	if v, err := Verify(s); err != nil || v != n {
		t.Fatalf("Verify = %d, %v; want %d", v, err, n)
	}
}

// TestEntryBuilder: build writes the reference entry and hash for the
// first entry, a later one and a previous hash of unusual length, and a
// second run (which the store does not do today) leaves the slices the
// first run returned untouched.
func TestEntryBuilder(t *testing.T) {
	ev := goldenEvent()
	canon, err := canonicalGeneric(ev)
	if err != nil {
		t.Fatal(err)
	}
	check := func(eb *entryBuilder, seq uint64, prev []byte, entry, hash []byte) {
		t.Helper()
		p := hex.EncodeToString(prev)
		h := refEntryHash(seq, p, canon)
		want, _ := json.Marshal(storedEntry{Seq: seq, Prev: p, Hash: h, Event: canon})
		if string(entry) != string(want) || hex.EncodeToString(hash) != h || eb.prev != p || eb.hash != h {
			t.Fatalf("seq %d prev %x:\n entry %s\n want  %s\n hash %x / %s %s, want %s", seq, prev, entry, want, hash, eb.prev, eb.hash, h)
		}
	}
	prevs := [][]byte{nil, bytes.Repeat([]byte{0xab}, sha256.Size), bytes.Repeat([]byte{1}, 40), {7}}
	for _, prev := range prevs {
		for _, seq := range []uint64{1, 42, math.MaxUint64} {
			eb, err := newEntryBuilder(&ev)
			if err != nil {
				t.Fatal(err)
			}
			e1, h1, err := eb.build(seq, prev)
			if err != nil {
				t.Fatal(err)
			}
			check(eb, seq, prev, e1, h1)
			keepE, keepH := bytes.Clone(e1), bytes.Clone(h1)
			other := bytes.Repeat([]byte{0xcd}, sha256.Size)
			e2, h2, err := eb.build(seq+1, other)
			if err != nil {
				t.Fatal(err)
			}
			check(eb, seq+1, other, e2, h2)
			if !bytes.Equal(e1, keepE) || !bytes.Equal(h1, keepH) {
				t.Fatalf("a second build changed the first one's entry or hash")
			}
		}
	}
}
