package audit

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/mcpbroker/mcpbroker/broker/store"
)

// Control tags name the control framework items a record evidences.
const (
	// ControlCSFIdentity is NIST CSF 2.0 PR.AA: identities, credentials and
	// access are managed and authenticated.
	ControlCSFIdentity = "NIST-CSF-2.0:PR.AA"
	// ControlCSFLeastPrivilege is NIST CSF 2.0 PR.AA-05 (CSF 1.1 PR.AC-4):
	// access permissions enforce least privilege.
	ControlCSFLeastPrivilege = "NIST-CSF-2.0:PR.AA-05"
	// ControlLeastPrivilegeV11 is the CSF 1.1 name of the same control,
	// still used by many SIEM content packs.
	ControlLeastPrivilegeV11 = "NIST-CSF-1.1:PR.AC-4"
	// ControlNHI01 is OWASP Non-Human Identities Top 10 NHI-01 (lifecycle
	// and authentication of non-human identities).
	ControlNHI01 = "OWASP-NHI:NHI-01"
	// ControlAIRMFGovern is NIST AI RMF GOVERN: policies in force.
	ControlAIRMFGovern = "NIST-AI-RMF:GOVERN"
	// ControlAIRMFMeasure is NIST AI RMF MEASURE: the system is monitored.
	ControlAIRMFMeasure = "NIST-AI-RMF:MEASURE"
)

// Controls returns the control tags an event of type t evidences. Identity
// events map to PR.AA and NHI-01, decisions and approvals to least
// privilege, policy events to AI RMF GOVERN, and monitoring events (starts,
// stops, checkpoints, tool changes, outcomes) to AI RMF MEASURE.
func Controls(t Type) []string {
	switch t {
	case AuthFailed, SessionOpened, SessionClosed:
		return []string{ControlCSFIdentity, ControlNHI01}
	case CallDecided, RequestRejected, TaskGranted, TaskRevoked, ApprovalRequested, ApprovalDecided:
		return []string{ControlCSFIdentity, ControlCSFLeastPrivilege, ControlLeastPrivilegeV11}
	case PolicyLoaded, PolicyRejected:
		return []string{ControlAIRMFGovern}
	case CallCompleted, ToolPinned, ToolChanged, BrokerStarted, BrokerStopped, LedgerCheckpoint:
		return []string{ControlAIRMFMeasure}
	}
	return nil
}

// ExportOptions select the entries Export writes. The zero value exports the
// whole ledger.
type ExportOptions struct {
	// From is the first sequence number to export (inclusive). A SIEM
	// resumes with From = last exported seq + 1.
	From uint64
	// To is the last sequence number to export (inclusive); 0 means the end.
	To uint64
	// Since skips entries recorded before it; entries are exported from
	// the first one at or after Since, in sequence order, whatever their
	// later timestamps, so the output stays one unbroken chain.
	Since time.Time
	// Signer, if set, seals the export: a last line {"trailer":{...}}
	// signed over its first and last sequence numbers, the last hash and
	// the entry count, so that a cut anywhere, the end included, fails
	// VerifyJSONL.
	Signer *Signer
}

// exportDomain separates export trailers from checkpoints and bases.
const exportDomain = "mcpbroker.audit.export.v1\n"

// Trailer is a sealed export's last line.
type Trailer struct {
	First   uint64 `json:"first"`
	Last    uint64 `json:"last"`
	Hash    string `json:"hash"` // the last entry's
	Entries uint64 `json:"entries"`
	Key     string `json:"key"`
	Sig     string `json:"sig"`
}

func trailerMessage(t *Trailer) []byte {
	return fmt.Appendf(nil, "%s%d\n%d\n%s\n%d", exportDomain, t.First, t.Last, t.Hash, t.Entries)
}

// isTrailer reports whether an export line is the trailer.
func isTrailer(line []byte) bool {
	return bytes.HasPrefix(bytes.TrimSpace(line), []byte(`{"trailer":`))
}

// sealExport signs a trailer for the entries written.
func (s *Signer) sealExport(first, last uint64, hash string, n uint64) Trailer {
	t := Trailer{First: first, Last: last, Hash: hash, Entries: n, Key: s.pub}
	t.Sig = hex.EncodeToString(ed25519.Sign(s.priv, trailerMessage(&t)))
	return t
}

// verify checks the trailer's signature (against pinned, if set).
func (t *Trailer) verify(pinned ed25519.PublicKey) error {
	pub, err := ParsePublicKey(t.Key)
	if err != nil {
		return fmt.Errorf("export trailer: %w", err)
	}
	if pinned != nil && !pub.Equal(pinned) {
		return fmt.Errorf("export trailer signed by %s, not the pinned key %s", t.Key, FormatPublicKey(pinned))
	}
	sig, err := hex.DecodeString(t.Sig)
	if err != nil || !ed25519.Verify(pub, trailerMessage(t), sig) {
		return errors.New("export trailer: bad signature")
	}
	return nil
}

// Export writes ledger entries as JSON lines, one per entry:
// {"seq","prev","hash","event","controls"}. The event is the exact stored
// canonical JSON, so the output re-verifies with VerifyJSONL; "controls" is
// not part of the hash. It returns the number of entries written and the
// last sequence number (0 if none), from which a later export resumes.
func Export(ctx context.Context, s *store.Store, w io.Writer, opts ExportOptions) (n int, last uint64, err error) {
	bw := bufio.NewWriterSize(w, 64<<10)
	started := opts.Since.IsZero()
	from, err := liveFrom(s, opts.From)
	if err != nil {
		return 0, 0, fmt.Errorf("export audit: %w", err)
	}
	var first uint64
	var lastHash string
	err = s.ScanLedger(from, func(seq uint64, raw []byte) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if opts.To > 0 && seq > opts.To {
			return errStop
		}
		var se exportRecord
		if err := json.Unmarshal(raw, &se); err != nil {
			return fmt.Errorf("decode ledger entry %d: %w", seq, err)
		}
		lastHashCandidate := se.Hash
		var head struct {
			Type Type      `json:"type"`
			Time time.Time `json:"time"`
		}
		if err := json.Unmarshal(se.Event, &head); err != nil {
			return fmt.Errorf("decode ledger entry %d: %w", seq, err)
		}
		if !started {
			if head.Time.Before(opts.Since) {
				return nil
			}
			started = true
		}
		se.Controls = Controls(head.Type)
		b, err := json.Marshal(se)
		if err != nil {
			return err
		}
		bw.Write(b)
		if err := bw.WriteByte('\n'); err != nil {
			return err
		}
		if n == 0 {
			first = seq
		}
		n++
		last, lastHash = seq, lastHashCandidate
		return nil
	})
	if err != nil && !errors.Is(err, errStop) {
		return n, last, fmt.Errorf("export audit: %w", err)
	}
	if opts.Signer != nil {
		b, err := json.Marshal(struct {
			Trailer Trailer `json:"trailer"`
		}{opts.Signer.sealExport(first, last, lastHash, uint64(n))})
		if err != nil {
			return n, last, err
		}
		bw.Write(b)
		if err := bw.WriteByte('\n'); err != nil {
			return n, last, fmt.Errorf("export audit: %w", err)
		}
	}
	if err := bw.Flush(); err != nil {
		return n, last, fmt.Errorf("export audit: %w", err)
	}
	return n, last, nil
}
