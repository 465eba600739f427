package audit

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/mcpbroker/mcpbroker/broker/store"
)

// Verify recomputes the whole hash chain and returns the number of entries
// checked. On failure the error is a *ChainError (matching ErrChainBroken)
// naming the first bad sequence number, and n counts the good entries before
// it. It reads the head (last sequence and hash) first and checks entries up
// to it, so it may run against a live store.
//
// Verify detects altered, removed, reordered or inserted entries and a
// truncated tail. It cannot detect a rewrite of the whole chain including the
// head: anchor the head hash outside the store for that.
func Verify(s *store.Store) (n uint64, err error) {
	headSeq, headHash, err := s.LedgerHead()
	if err != nil {
		return 0, fmt.Errorf("verify audit: %w", err)
	}
	prev := ""
	scanErr := s.ScanLedger(1, func(seq uint64, raw []byte) error {
		if seq > headSeq {
			return errStop
		}
		if seq != n+1 {
			return &ChainError{Seq: n + 1, Reason: "entry missing"}
		}
		if reason := checkEntry(seq, prev, raw); reason != "" {
			return &ChainError{Seq: seq, Reason: reason}
		}
		var se storedEntry
		_ = json.Unmarshal(raw, &se) // checked by checkEntry
		prev = se.Hash
		n = seq
		return nil
	})
	if scanErr != nil && !errors.Is(scanErr, errStop) {
		var ce *ChainError
		if errors.As(scanErr, &ce) {
			return n, ce
		}
		return n, fmt.Errorf("verify audit: %w", scanErr)
	}
	if n != headSeq {
		return n, &ChainError{Seq: n + 1, Reason: fmt.Sprintf("entry missing: ledger head is seq %d", headSeq)}
	}
	if n > 0 && hex.EncodeToString(headHash) != prev {
		return n - 1, &ChainError{Seq: n, Reason: "hash does not match the ledger head"}
	}
	return n, nil
}

// checkEntry returns why the stored entry raw at seq, following an entry
// with hash prev, is invalid, or "".
func checkEntry(seq uint64, prev string, raw []byte) string {
	var se storedEntry
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&se); err != nil {
		return "malformed entry: " + err.Error()
	}
	if se.Seq != seq {
		return fmt.Sprintf("entry says seq %d", se.Seq)
	}
	if se.Prev != prev {
		return "prev does not match the hash of the previous entry"
	}
	if len(se.Event) == 0 {
		return "event missing"
	}
	canon, err := canonicalize(se.Event)
	if err != nil {
		return "malformed event: " + err.Error()
	}
	var ev Event
	if err := json.Unmarshal(canon, &ev); err != nil {
		return "malformed event: " + err.Error()
	}
	sum := entryHash(seq, prev, canon)
	if hex.EncodeToString(sum[:]) != se.Hash {
		return "hash mismatch: entry altered"
	}
	return ""
}
