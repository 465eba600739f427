package audit

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/mcpbroker/mcpbroker/broker/store"
)

// This file tampers with real bbolt files the way an attacker with write
// access to the data directory would. It imports bbolt directly: test code
// only, the production import rule (only broker/store) is unaffected.

// ledgerFixture is a closed data directory with n call records, periodic
// checkpoints every 5 entries, a shutdown checkpoint and an anchor file.
type ledgerFixture struct {
	dir    string
	db     string
	anchor string
	signer *Signer
}

func newFixture(t *testing.T, n int) ledgerFixture {
	t.Helper()
	dir := t.TempDir()
	f := ledgerFixture{dir: dir, db: filepath.Join(dir, "broker.db"), anchor: filepath.Join(dir, AnchorFile)}
	var err error
	if f.signer, err = LoadOrCreateSigner(filepath.Join(dir, SigningKeyFile)); err != nil {
		t.Fatal(err)
	}
	s, err := store.Open(f.db, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	l := NewLedger(s, nil, WithClock(fixedClock()), WithSigner(f.signer), WithCheckpointEvery(5), WithAnchorFile(f.anchor))
	for i := 1; i <= n; i++ {
		if _, err := l.Record(context.Background(), Event{Type: CallDecided, CallID: fmt.Sprintf("call-%02d", i), Decision: DecisionAllow}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := l.Checkpoint(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f ledgerFixture) opts(t *testing.T) VerifyOptions {
	t.Helper()
	a, err := ReadAnchor(f.anchor)
	if err != nil {
		t.Fatal(err)
	}
	return VerifyOptions{PublicKey: f.signer.PublicKey(), Anchor: a}
}

// verifyFile opens the file read-only, checks bbolt consistency and
// verifies the ledger.
func verifyFile(t *testing.T, path string, opts VerifyOptions) (Report, error) {
	t.Helper()
	s, err := store.Open(path, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Check(); err != nil {
		t.Fatalf("bbolt Check: %v", err)
	}
	return VerifyStore(s, opts)
}

func key(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

// tamper edits the file in one bbolt transaction.
func tamper(t *testing.T, path string, fn func(ledger, meta *bolt.Bucket) error) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bolt.Tx) error {
		return fn(tx.Bucket([]byte("ledger")), tx.Bucket([]byte("meta")))
	}); err != nil {
		t.Fatal(err)
	}
}

func readEntry(t *testing.T, b *bolt.Bucket, seq uint64) storedEntry {
	t.Helper()
	var se storedEntry
	if err := json.Unmarshal(b.Get(key(seq)), &se); err != nil {
		t.Fatalf("entry %d: %v", seq, err)
	}
	return se
}

// forge returns a well-formed entry for ev at seq after prev, with a
// correct hash: what an attacker who knows the format can write.
func forge(t *testing.T, seq uint64, prev string, ev Event) ([]byte, string) {
	t.Helper()
	ev.Version = EventVersion
	canon, err := Canonical(ev)
	if err != nil {
		t.Fatal(err)
	}
	sum := entryHash(seq, prev, canon)
	h := hex.EncodeToString(sum[:])
	b, _ := json.Marshal(storedEntry{Seq: seq, Prev: prev, Hash: h, Event: canon})
	return b, h
}

// rechain rewrites every entry from seq `from` to the end so the chain
// links again, and moves the head: the strongest edit without the key.
func rechain(t *testing.T, ledger, meta *bolt.Bucket, from uint64) {
	t.Helper()
	prev := ""
	if from > 1 {
		prev = readEntry(t, ledger, from-1).Hash
	}
	var last uint64
	var lastHash string
	for seq := from; ledger.Get(key(seq)) != nil; seq++ {
		se := readEntry(t, ledger, seq)
		var ev Event
		if err := json.Unmarshal(se.Event, &ev); err != nil {
			t.Fatal(err)
		}
		b, h := forge(t, seq, prev, ev)
		if err := ledger.Put(key(seq), b); err != nil {
			t.Fatal(err)
		}
		prev, last, lastHash = h, seq, h
	}
	raw, _ := hex.DecodeString(lastHash)
	if err := meta.Put([]byte("ledger_seq"), key(last)); err != nil {
		t.Fatal(err)
	}
	if err := meta.Put([]byte("ledger_hash"), raw); err != nil {
		t.Fatal(err)
	}
}

func TestVerifyCatchesTampering(t *testing.T) {
	const n = 12 // records; checkpoints follow seq 6 and 12 (every 5 after the first), plus the shutdown one
	base := newFixture(t, n)
	good, err := verifyFile(t, base.db, base.opts(t))
	if err != nil {
		t.Fatalf("untouched ledger: %v", err)
	}
	if good.Checkpoints < 2 || !good.Anchored || !good.KeyPinned || good.Signed != good.Last {
		t.Fatalf("untouched report = %+v", good)
	}
	last := good.Last

	cases := []struct {
		name    string
		edit    func(t *testing.T, ledger, meta *bolt.Bucket)
		noPin   bool   // verify without pinned key and anchor
		seq     uint64 // first bad seq expected
		because string // substring of the reason
	}{
		{"edit a field", func(t *testing.T, l, _ *bolt.Bucket) {
			se := readEntry(t, l, 4)
			se.Event = json.RawMessage(strings.Replace(string(se.Event), `"allow"`, `"deny"`, 1))
			b, _ := json.Marshal(se)
			l.Put(key(4), b)
		}, false, 4, "hash mismatch"},
		{"a second decision key before the real one", func(t *testing.T, l, _ *bolt.Bucket) {
			// Hashing the canonical form alone would verify this, while a
			// reader taking the first key sees deny.
			se := readEntry(t, l, 4)
			se.Event = json.RawMessage(strings.Replace(string(se.Event), `"decision":"allow"`, `"decision":"deny","decision":"allow"`, 1))
			b, _ := json.Marshal(se)
			l.Put(key(4), b)
		}, false, 4, "not in canonical form"},
		{"edit and rehash one entry", func(t *testing.T, l, _ *bolt.Bucket) {
			se := readEntry(t, l, 4)
			b, _ := forge(t, 4, se.Prev, Event{Type: CallDecided, Time: t0, CallID: "call-04", Decision: DecisionDeny})
			l.Put(key(4), b)
		}, false, 5, "prev does not match"},
		{"edit and rechain to the end", func(t *testing.T, l, m *bolt.Bucket) {
			se := readEntry(t, l, 4)
			b, _ := forge(t, 4, se.Prev, Event{Type: CallDecided, Time: t0, CallID: "call-04", Decision: DecisionDeny})
			l.Put(key(4), b)
			rechain(t, l, m, 5)
		}, false, 7, "checkpoint covers"},
		{"delete an entry", func(t *testing.T, l, _ *bolt.Bucket) {
			l.Delete(key(3))
		}, false, 3, "entry missing"},
		{"insert an entry", func(t *testing.T, l, m *bolt.Bucket) {
			// Shift 5.. up by one and plant a forged entry at 5.
			for seq := last; seq >= 5; seq-- {
				l.Put(key(seq+1), l.Get(key(seq)))
			}
			b, _ := forge(t, 5, readEntry(t, l, 4).Hash, Event{Type: CallDecided, Time: t0, CallID: "planted", Decision: DecisionAllow})
			l.Put(key(5), b)
			m.Put([]byte("ledger_seq"), key(last+1))
		}, false, 6, "entry says seq 5"},
		{"insert past the head", func(t *testing.T, l, _ *bolt.Bucket) {
			b, _ := forge(t, last+1, readEntry(t, l, last).Hash, Event{Type: CallDecided, Time: t0, CallID: "planted", Decision: DecisionAllow})
			l.Put(key(last+1), b)
		}, false, last + 1, "inserted after the ledger head"},
		{"swap two entries", func(t *testing.T, l, _ *bolt.Bucket) {
			a, b := l.Get(key(8)), l.Get(key(9))
			a, b = append([]byte(nil), a...), append([]byte(nil), b...)
			l.Put(key(8), b)
			l.Put(key(9), a)
		}, false, 8, "entry says seq 9"},
		{"cut the tail, head left", func(t *testing.T, l, _ *bolt.Bucket) {
			l.Delete(key(last))
			l.Delete(key(last - 1))
		}, true, last - 1, "ledger head is seq"},
		{"cut the tail and move the head", func(t *testing.T, l, m *bolt.Bucket) {
			l.Delete(key(last))
			l.Delete(key(last - 1))
			raw, _ := hex.DecodeString(readEntry(t, l, last-2).Hash)
			m.Put([]byte("ledger_seq"), key(last-2))
			m.Put([]byte("ledger_hash"), raw)
		}, false, last - 1, "tail truncated"},
		{"plant a ledger checkpoint as a compaction base", func(t *testing.T, l, m *bolt.Bucket) {
			// The checkpoint in entry 7 vouches for seq 6: as a base it
			// would let entries 1–6 go.
			var se struct {
				Event struct {
					Checkpoint *Checkpoint `json:"checkpoint"`
				} `json:"event"`
			}
			if err := json.Unmarshal(l.Get(key(7)), &se); err != nil || se.Event.Checkpoint == nil {
				t.Fatalf("entry 7 is not a checkpoint: %v", err)
			}
			b, _ := json.Marshal(se.Event.Checkpoint)
			m.Put([]byte("ledger_base"), b)
			for seq := uint64(1); seq <= se.Event.Checkpoint.Seq; seq++ {
				l.Delete(key(seq))
			}
		}, false, 7, "not signed as one"},
		{"plant the anchor as a base and empty the ledger", func(t *testing.T, l, m *bolt.Bucket) {
			b, err := os.ReadFile(base.anchor)
			if err != nil {
				t.Fatal(err)
			}
			m.Put([]byte("ledger_base"), b)
			for seq := uint64(1); seq <= last; seq++ {
				l.Delete(key(seq))
			}
		}, false, last + 1, "not signed as one"}, // the base (the anchor) vouches for the last entry
		{"forge a checkpoint with another key", func(t *testing.T, l, m *bolt.Bucket) {
			_, priv, _ := ed25519.GenerateKey(nil)
			other := NewSigner(priv)
			prev := readEntry(t, l, 6).Hash
			cp := other.Sign(6, prev)
			b, _ := forge(t, 7, prev, Event{Type: LedgerCheckpoint, Time: t0, Checkpoint: &cp})
			l.Put(key(7), b)
			rechain(t, l, m, 8)
		}, false, 7, "not the pinned key"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "copy.db")
			raw, err := os.ReadFile(base.db)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, raw, 0o600); err != nil {
				t.Fatal(err)
			}
			tamper(t, path, func(l, m *bolt.Bucket) error { tc.edit(t, l, m); return nil })
			opts := base.opts(t)
			if tc.noPin {
				opts = VerifyOptions{}
			}
			_, err = verifyFile(t, path, opts)
			var ce *ChainError
			if !errors.As(err, &ce) || !errors.Is(err, ErrChainBroken) {
				t.Fatalf("Verify = %v, want a ChainError", err)
			}
			if ce.Seq != tc.seq || !strings.Contains(ce.Reason, tc.because) {
				t.Fatalf("Verify = seq %d %q, want seq %d %q", ce.Seq, ce.Reason, tc.seq, tc.because)
			}
		})
	}
}

// TestLeftoversBelowTheBaseHidden: entries at or below a compaction base
// (left over from an interrupted compaction, or planted) are outside what
// verify covers, so list and export do not show them.
func TestLeftoversBelowTheBaseHidden(t *testing.T) {
	f := newFixture(t, 20)
	s, err := store.Open(f.db, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	res, err := Compact(context.Background(), s, f.signer, t0.Add(10*time.Millisecond+time.Microsecond), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	tamper(t, f.db, func(l, _ *bolt.Bucket) error {
		b, _ := forge(t, res.Last, "", Event{Type: CallDecided, Time: t0, CallID: "planted", Decision: DecisionAllow})
		return l.Put(key(res.Last), b)
	})
	s, err = store.Open(f.db, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := VerifyStore(s, f.opts(t)); err != nil {
		t.Fatalf("verify: %v", err)
	}
	es, err := List(s, Filter{})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		if e.Seq <= res.Last || e.Event.CallID == "planted" {
			t.Fatalf("listed an entry below the base: %+v", e)
		}
	}
	var out bytes.Buffer
	if _, _, err := Export(context.Background(), s, &out, ExportOptions{}); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "planted") {
		t.Fatal("exported an entry below the base")
	}
}

// TestSealedExport: a signed trailer makes a cut anywhere in an export,
// its end included, fail verification.
func TestSealedExport(t *testing.T) {
	f := newFixture(t, 12)
	s, err := store.Open(f.db, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var out bytes.Buffer
	if _, _, err := Export(context.Background(), s, &out, ExportOptions{Signer: f.signer}); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	opts := VerifyOptions{PublicKey: f.signer.PublicKey()}
	rep, err := VerifyJSONL(strings.NewReader(out.String()), opts)
	if err != nil || !rep.Sealed {
		t.Fatalf("sealed export: %+v %v", rep, err)
	}
	cutEnd := strings.Join(append(lines[:len(lines)-2:len(lines)-2], lines[len(lines)-1]), "\n")
	if _, err := VerifyJSONL(strings.NewReader(cutEnd), opts); !errors.Is(err, ErrChainBroken) || !strings.Contains(err.Error(), "entries cut") {
		t.Fatalf("an export cut at its end: %v", err)
	}
	cutStart := strings.Join(lines[2:], "\n")
	if _, err := VerifyJSONL(strings.NewReader(cutStart), opts); !errors.Is(err, ErrChainBroken) {
		t.Fatalf("an export cut at its start: %v", err)
	}
	_, priv, _ := ed25519.GenerateKey(nil)
	var forged bytes.Buffer
	if _, _, err := Export(context.Background(), s, &forged, ExportOptions{Signer: NewSigner(priv)}); err != nil {
		t.Fatal(err)
	}
	if _, err := VerifyJSONL(&forged, opts); !errors.Is(err, ErrChainBroken) || !strings.Contains(err.Error(), "not the pinned key") {
		t.Fatalf("a trailer by another key: %v", err)
	}
	unsealed := strings.Join(lines[:len(lines)-1], "\n")
	if rep, err := VerifyJSONL(strings.NewReader(unsealed), opts); err != nil || rep.Sealed {
		t.Fatalf("an unsealed export: %+v %v", rep, err)
	}
	strict := opts
	strict.RequireSealed = true
	if _, err := VerifyJSONL(strings.NewReader(unsealed), strict); !errors.Is(err, ErrChainBroken) || !strings.Contains(err.Error(), "not sealed") {
		t.Fatalf("an unsealed export, sealed required: %v", err)
	}
	// An export resumed after its last entry and appended: two sealed
	// segments, one chain.
	var first, second bytes.Buffer
	_, last, err := Export(context.Background(), s, &first, ExportOptions{Signer: f.signer, To: 5})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := Export(context.Background(), s, &second, ExportOptions{Signer: f.signer, From: last + 1}); err != nil {
		t.Fatal(err)
	}
	if rep, err := VerifyJSONL(strings.NewReader(first.String()+second.String()), strict); err != nil || !rep.Sealed || rep.First != 1 {
		t.Fatalf("two appended sealed exports: %+v %v", rep, err)
	}
}

// TestServedExportJoinsItsBase: an export of a compacted ledger verified
// with its base must start right after it; a base that is not one, or
// that the first entry does not chain to, fails.
func TestServedExportJoinsItsBase(t *testing.T) {
	f := newFixture(t, 20)
	s, err := store.Open(f.db, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	res, err := Compact(context.Background(), s, f.signer, t0.Add(10*time.Millisecond+time.Microsecond), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if _, _, err := Export(context.Background(), s, &out, ExportOptions{Signer: f.signer}); err != nil {
		t.Fatal(err)
	}
	opts := VerifyOptions{PublicKey: f.signer.PublicKey(), Base: res.Base, RequireSealed: true}
	if rep, err := VerifyJSONL(bytes.NewReader(out.Bytes()), opts); err != nil || rep.Base == nil || rep.First != res.Last+1 {
		t.Fatalf("export after its base: %+v %v", rep, err)
	}
	plain := f.signer.Sign(res.Base.Seq, res.Base.Hash) // a checkpoint, not a base
	if _, err := VerifyJSONL(bytes.NewReader(out.Bytes()), VerifyOptions{PublicKey: f.signer.PublicKey(), Base: &plain}); !errors.Is(err, ErrChainBroken) {
		t.Fatalf("a checkpoint claimed as the base: %v", err)
	}
	other := f.signer.SignBase(res.Base.Seq, strings.Repeat("0", 64), res.Base.Archive)
	if _, err := VerifyJSONL(bytes.NewReader(out.Bytes()), VerifyOptions{PublicKey: f.signer.PublicKey(), Base: &other}); !errors.Is(err, ErrChainBroken) {
		t.Fatalf("a base the first entry does not chain to: %v", err)
	}
}
