package audit

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/mcpbroker/mcpbroker/broker/store"
)

// CompactResult describes one compaction.
type CompactResult struct {
	Archived uint64      // entries written to the archive and removed
	First    uint64      // first archived seq (0: nothing to do)
	Last     uint64      // last archived seq
	Base     *Checkpoint // the signed base the remaining ledger now follows
}

// Compact moves the entries recorded before `before` out of the ledger: it
// verifies the whole ledger (a broken ledger is never compacted, that would
// destroy the evidence), writes the oldest entries up to the first one at or
// after `before` to archive as Export JSONL, syncs archive if it has a Sync
// method, and only then deletes them and records a checkpoint of the last
// archived entry, signed by signer, as the store's compaction base. The
// remaining ledger then verifies on its own (VerifyStore) and the archive
// verifies with VerifyJSONL. The newest entry is always kept.
//
// s must be writable: the CLI runs Compact when no broker holds the store.
func Compact(ctx context.Context, s *store.Store, signer *Signer, before time.Time, archive io.Writer) (CompactResult, error) {
	if signer == nil {
		return CompactResult{}, fmt.Errorf("compact audit: %w", ErrNoSigner)
	}
	rep, err := VerifyStore(s, VerifyOptions{PublicKey: signer.PublicKey()})
	if err != nil {
		return CompactResult{}, fmt.Errorf("compact audit: refusing to compact a ledger that does not verify: %w", err)
	}
	if rep.Entries < 2 {
		return CompactResult{}, nil
	}
	// Find the cut: the last entry of the prefix recorded before `before`,
	// never the head.
	var cut uint64
	var cutHash string
	err = s.ScanLedger(rep.First, func(seq uint64, raw []byte) error {
		if seq >= rep.Last {
			return errStop
		}
		var se struct {
			Hash  string `json:"hash"`
			Event struct {
				Time time.Time `json:"time"`
			} `json:"event"`
		}
		if err := json.Unmarshal(raw, &se); err != nil {
			return fmt.Errorf("decode ledger entry %d: %w", seq, err)
		}
		if !se.Event.Time.Before(before) {
			return errStop
		}
		cut, cutHash = seq, se.Hash
		return nil
	})
	if err != nil && !errors.Is(err, errStop) {
		return CompactResult{}, fmt.Errorf("compact audit: %w", err)
	}
	if cut == 0 {
		return CompactResult{}, nil
	}
	sum := sha256.New()
	n, last, err := Export(ctx, s, io.MultiWriter(archive, sum), ExportOptions{From: rep.First, To: cut, Signer: signer})
	if err != nil {
		return CompactResult{}, fmt.Errorf("compact audit: archive: %w", err)
	}
	if last != cut || uint64(n) != cut-rep.First+1 {
		return CompactResult{}, fmt.Errorf("compact audit: archive holds %d entries up to seq %d, want up to %d", n, last, cut)
	}
	if f, ok := archive.(interface{ Sync() error }); ok {
		if err := f.Sync(); err != nil {
			return CompactResult{}, fmt.Errorf("compact audit: archive: %w", err)
		}
	}
	base := signer.SignBase(cut, cutHash, hex.EncodeToString(sum.Sum(nil)))
	b, err := json.Marshal(base)
	if err != nil {
		return CompactResult{}, err
	}
	if _, err := s.CompactLedger(ctx, cut, b); err != nil {
		return CompactResult{}, fmt.Errorf("compact audit: %w", err)
	}
	return CompactResult{Archived: uint64(n), First: rep.First, Last: cut, Base: &base}, nil
}
