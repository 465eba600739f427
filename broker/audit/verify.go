package audit

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/mcpbroker/mcpbroker/broker/store"
)

// VerifyOptions are what a verifier trusts beyond the ledger itself.
type VerifyOptions struct {
	// PublicKey pins the checkpoint signing key. Without it checkpoints are
	// checked against the key they carry, which proves they were not
	// altered but not who signed them (Report.KeyPinned is false).
	PublicKey ed25519.PublicKey
	// Anchor is a signed Checkpoint kept outside the ledger (AnchorFile or
	// an operator's copy): the ledger must contain entry Anchor.Seq with
	// Anchor.Hash, so cutting the tail below it is detected.
	Anchor *Checkpoint
	// RequireSealed fails a file whose last entry no signed trailer
	// follows (VerifyJSONL).
	RequireSealed bool
	// Base, if set, is the compaction base a file's entries must start
	// right after (VerifyJSONL of a compacted ledger's export): checked
	// as a base (kind and signature), and the first entry must chain to it.
	Base *Checkpoint
}

// Report summarizes a successful verification.
type Report struct {
	First       uint64 `json:"first"`       // first sequence number checked (0: empty)
	Last        uint64 `json:"last"`        // last sequence number checked
	Entries     uint64 `json:"entries"`     // entries checked
	Checkpoints int    `json:"checkpoints"` // signed checkpoint entries checked
	// Signed is the highest sequence number vouched for by a verified
	// signature (checkpoint entry, compaction base or anchor); entries after
	// it are chained but unsigned.
	Signed    uint64 `json:"signed"`
	KeyPinned bool   `json:"key_pinned"`
	// Base is the compaction base the first entry follows, if any.
	Base *Checkpoint `json:"base,omitempty"`
	// Unanchored is set when the entries start after seq 1 with no signed
	// base (an export that starts mid-ledger): the first prev is taken as
	// given.
	Unanchored bool `json:"unanchored,omitempty"`
	// Anchored is set when VerifyOptions.Anchor was found in the ledger.
	Anchored bool `json:"anchored,omitempty"`
	// Sealed is set when a file ended with a valid signed trailer that
	// vouches for exactly the entries read (so no cut went unnoticed).
	Sealed bool `json:"sealed,omitempty"`
}

// verifier checks entries fed in order. It is the single implementation
// behind VerifyStore and VerifyJSONL.
type verifier struct {
	fileMode bool // entries may start mid-ledger (VerifyJSONL)
	opts     VerifyOptions
	rep      Report
	prev     string // hash of the last good entry
}

func newVerifier(opts VerifyOptions) *verifier {
	return &verifier{opts: opts, rep: Report{KeyPinned: opts.PublicKey != nil}}
}

// start sets what the first entry must follow: a signed base, or nothing
// (seq 1). An unanchored start is set by startAt.
func (v *verifier) start(base *Checkpoint) error {
	if base == nil {
		return nil
	}
	if base.Kind != KindBase {
		// An ordinary checkpoint (say, the anchor) copied into the base
		// record would otherwise vouch for deleting every entry before it.
		return &ChainError{Seq: base.Seq + 1, Reason: "compaction base is not signed as one (a checkpoint planted as a base, or compacted by an older mcpbroker)"}
	}
	if err := base.Verify(v.opts.PublicKey); err != nil {
		return &ChainError{Seq: base.Seq + 1, Reason: "compaction base: " + err.Error()}
	}
	v.rep.Base = base
	v.rep.Signed = base.Seq
	v.rep.Last = base.Seq
	v.prev = base.Hash
	return nil
}

// add checks the raw entry at position seq (as keyed in the store or read
// from a file).
func (v *verifier) add(seq uint64, raw []byte) error {
	var se exportRecord
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&se); err != nil {
		return &ChainError{Seq: seq, Reason: "malformed entry: " + err.Error()}
	}
	if seq == 0 { // a file line: the entry names its own position
		seq = se.Seq
	}
	if v.rep.Entries == 0 && v.rep.Base == nil && seq > 1 && v.unanchoredOK() {
		v.rep.Unanchored = true
		v.rep.Last = seq - 1
		v.prev = se.Prev
	}
	want := v.rep.Last + 1
	switch {
	case seq < want:
		return &ChainError{Seq: seq, Reason: fmt.Sprintf("out of order or duplicated: follows seq %d", v.rep.Last)}
	case seq > want:
		return &ChainError{Seq: want, Reason: fmt.Sprintf("entry missing (next present is seq %d)", seq)}
	}
	if se.Seq != seq {
		return &ChainError{Seq: seq, Reason: fmt.Sprintf("entry says seq %d", se.Seq)}
	}
	if se.Prev != v.prev {
		return &ChainError{Seq: seq, Reason: "prev does not match the hash of the previous entry"}
	}
	if len(se.Event) == 0 {
		return &ChainError{Seq: seq, Reason: "event missing"}
	}
	canon, err := canonicalize(se.Event)
	if err != nil {
		return &ChainError{Seq: seq, Reason: "malformed event: " + err.Error()}
	}
	if !bytes.Equal(canon, se.Event) {
		// What is hashed must be what is stored and exported: a reader
		// that takes the first of two "decision" keys would otherwise
		// see another event than the one verified.
		return &ChainError{Seq: seq, Reason: "event not in canonical form: entry altered"}
	}
	var ev Event
	if err := json.Unmarshal(canon, &ev); err != nil {
		return &ChainError{Seq: seq, Reason: "malformed event: " + err.Error()}
	}
	sum := entryHash(seq, se.Prev, canon)
	if hex.EncodeToString(sum[:]) != se.Hash {
		return &ChainError{Seq: seq, Reason: "hash mismatch: entry altered"}
	}
	if err := ev.Validate(); err != nil {
		return &ChainError{Seq: seq, Reason: "invalid event: " + err.Error()}
	}
	if cp := ev.Checkpoint; cp != nil {
		if cp.Seq != seq-1 || cp.Hash != se.Prev {
			return &ChainError{Seq: seq, Reason: fmt.Sprintf("checkpoint covers seq %d, not the entry before it", cp.Seq)}
		}
		if cp.Kind != "" {
			return &ChainError{Seq: seq, Reason: fmt.Sprintf("checkpoint of kind %q where a ledger checkpoint belongs", cp.Kind)}
		}
		if err := cp.Verify(v.opts.PublicKey); err != nil {
			return &ChainError{Seq: seq, Reason: err.Error()}
		}
		v.rep.Checkpoints++
		v.rep.Signed = cp.Seq
	}
	if a := v.opts.Anchor; a != nil && a.Seq == seq {
		if a.Hash != se.Hash {
			return &ChainError{Seq: seq, Reason: "hash differs from the signed anchor checkpoint"}
		}
		v.rep.Anchored = true
		v.rep.Signed = max(v.rep.Signed, seq)
	}
	if v.rep.Entries == 0 {
		v.rep.First = seq
	}
	v.rep.Entries++
	v.rep.Last = seq
	v.prev = se.Hash
	return nil
}

func (v *verifier) unanchoredOK() bool { return v.fileMode }

// finish checks the anchor against the end of the ledger.
func (v *verifier) finish() (Report, error) {
	if v.rep.Base != nil && v.rep.Entries == 0 {
		// Compaction never cuts the head: a base with nothing after it
		// is a ledger emptied behind verify's back.
		return v.rep, &ChainError{Seq: v.rep.Base.Seq + 1, Reason: "entry missing: nothing follows the compaction base"}
	}
	if a := v.opts.Anchor; a != nil {
		if a.Kind != "" {
			return v.rep, &ChainError{Seq: a.Seq, Reason: fmt.Sprintf("anchor: a checkpoint of kind %q is not an anchor", a.Kind)}
		}
		if err := a.Verify(v.opts.PublicKey); err != nil {
			return v.rep, &ChainError{Seq: a.Seq, Reason: "anchor: " + err.Error()}
		}
		switch {
		case a.Seq > v.rep.Last:
			return v.rep, &ChainError{Seq: v.rep.Last + 1, Reason: fmt.Sprintf("entry missing: tail truncated (the signed anchor vouches for seq %d)", a.Seq)}
		case v.rep.Base != nil && a.Seq == v.rep.Base.Seq:
			if a.Hash != v.rep.Base.Hash {
				return v.rep, &ChainError{Seq: a.Seq, Reason: "compaction base differs from the signed anchor checkpoint"}
			}
			v.rep.Anchored = true
		}
	}
	return v.rep, nil
}

// exportRecord is a ledger entry as exported to JSONL: the stored entry plus
// the controls it evidences, which are not hashed.
type exportRecord struct {
	Seq      uint64          `json:"seq"`
	Prev     string          `json:"prev"`
	Hash     string          `json:"hash"`
	Event    json.RawMessage `json:"event"`
	Controls []string        `json:"controls,omitempty"`
}

// Verify recomputes the whole hash chain of the store and returns the number
// of entries checked. It is VerifyStore with no pinned key or anchor.
func Verify(s *store.Store) (n uint64, err error) {
	rep, err := VerifyStore(s, VerifyOptions{})
	return rep.Entries, err
}

// VerifyStore recomputes the chain and checks every checkpoint in s. On
// failure the error is a *ChainError (matching ErrChainBroken) naming the
// first bad sequence number. It reads the head (last sequence and hash)
// first and checks entries up to it, so it may run against a live store.
//
// It detects altered, removed, reordered or inserted entries; a truncated
// tail when the store's head was left alone, or below opts.Anchor however
// the store was edited; and forged checkpoints (with opts.PublicKey, forged
// by anyone but the key holder). A compacted ledger must start right after
// its signed base.
func VerifyStore(s *store.Store, opts VerifyOptions) (Report, error) {
	headSeq, headHash, err := s.LedgerHead()
	if err != nil {
		return Report{}, fmt.Errorf("verify audit: %w", err)
	}
	v := newVerifier(opts)
	rawBase, err := s.LedgerBase()
	if err != nil {
		return Report{}, fmt.Errorf("verify audit: %w", err)
	}
	if rawBase != nil {
		var base Checkpoint
		if err := json.Unmarshal(rawBase, &base); err != nil {
			return v.rep, &ChainError{Seq: 1, Reason: "malformed compaction base: " + err.Error()}
		}
		if err := v.start(&base); err != nil {
			return v.rep, err
		}
	}
	var beyond uint64 // an entry past the head read at the start
	scanErr := s.ScanLedger(1, func(seq uint64, raw []byte) error {
		if seq > headSeq {
			beyond = seq
			return errStop
		}
		if v.rep.Base != nil && seq <= v.rep.Base.Seq {
			return nil // covered by the base: left over from an interrupted compaction
		}
		return v.add(seq, raw)
	})
	if scanErr != nil && !errors.Is(scanErr, errStop) {
		var ce *ChainError
		if errors.As(scanErr, &ce) {
			return v.rep, ce
		}
		return v.rep, fmt.Errorf("verify audit: %w", scanErr)
	}
	if v.rep.Last != headSeq {
		return v.rep, &ChainError{Seq: v.rep.Last + 1, Reason: fmt.Sprintf("entry missing: ledger head is seq %d", headSeq)}
	}
	if headSeq > 0 && hex.EncodeToString(headHash) != v.prev {
		return v.rep, &ChainError{Seq: headSeq, Reason: "hash does not match the ledger head"}
	}
	if beyond > 0 {
		// A live writer moves the head in the same transaction as it adds
		// an entry: an entry past a head that has not moved was planted.
		now, _, err := s.LedgerHead()
		if err != nil {
			return v.rep, fmt.Errorf("verify audit: %w", err)
		}
		if beyond > now {
			return v.rep, &ChainError{Seq: beyond, Reason: fmt.Sprintf("entry inserted after the ledger head (seq %d)", now)}
		}
	}
	return v.finish()
}

// VerifyJSONL verifies a ledger export or compaction archive (one entry per
// line, as written by Export). A file that starts after seq 1 is checked
// from its first line on, with that line's prev taken as given
// (Report.Unanchored). Blank lines are skipped.
func VerifyJSONL(r io.Reader, opts VerifyOptions) (Report, error) {
	v := newVerifier(opts)
	v.fileMode = true
	if opts.Base != nil {
		if err := v.start(opts.Base); err != nil {
			return v.rep, err
		}
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	line := 0
	// A file may hold several sealed exports one after another (an
	// export resumed with --since and appended): each trailer seals the
	// entries since the previous one. The file is sealed when its last
	// entry is followed by a trailer.
	var segEntries, segFirst uint64
	sealed := false
	for sc.Scan() {
		line++
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		if isTrailer(b) {
			var t struct {
				Trailer *Trailer `json:"trailer"`
			}
			if err := json.Unmarshal(b, &t); err != nil || t.Trailer == nil {
				return v.rep, &ChainError{Seq: v.rep.Last + 1, Reason: fmt.Sprintf("line %d: malformed export trailer", line)}
			}
			tr := t.Trailer
			if err := tr.verify(v.opts.PublicKey); err != nil {
				return v.rep, &ChainError{Seq: v.rep.Last + 1, Reason: fmt.Sprintf("line %d: %v", line, err)}
			}
			if tr.Entries != segEntries || segEntries > 0 && (tr.First != segFirst || tr.Last != v.rep.Last || tr.Hash != v.prev) {
				return v.rep, &ChainError{Seq: v.rep.Last + 1, Reason: fmt.Sprintf("line %d: entries cut: the signed trailer vouches for %d entries, seq %d..%d", line, tr.Entries, tr.First, tr.Last)}
			}
			segEntries, sealed = 0, true
			continue
		}
		if err := v.add(0, b); err != nil {
			var ce *ChainError
			if errors.As(err, &ce) && ce.Seq == 0 {
				ce.Seq = v.rep.Last + 1
				ce.Reason = fmt.Sprintf("line %d: %s", line, ce.Reason)
			}
			return v.rep, err
		}
		if segEntries == 0 {
			segFirst = v.rep.Last
		}
		segEntries++
		sealed = false
	}
	if err := sc.Err(); err != nil {
		return v.rep, fmt.Errorf("verify audit file: line %d: %w", line+1, err)
	}
	v.rep.Sealed = sealed
	if opts.RequireSealed && !sealed {
		return v.rep, &ChainError{Seq: v.rep.Last + 1, Reason: "not sealed: no signed trailer after the last entry (its end may have been cut)"}
	}
	return v.finish()
}

// errStop ends a scan early.
var errStop = errors.New("stop")
