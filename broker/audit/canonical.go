package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// hashDomain separates ledger hashes from any other SHA-256 use.
const hashDomain = "mcpbroker.audit.v1\n"

// Canonical returns the canonical JSON of ev, the bytes the ledger hashes.
//
// It is defined as: encode ev with encoding/json (so field names, omitempty,
// time.Time as RFC3339Nano and float64 formatting are exactly what
// encoding/json prints for the typed struct), then re-encode the result with
// every object's keys sorted by byte order, no insignificant whitespace,
// numbers kept as the literal text first printed, strings in UTF-8 with
// encoding/json's escaping (", \, control characters, and <, >, &, U+2028,
// U+2029 as \u escapes; invalid UTF-8 replaced by U+FFFD). The golden test in
// testdata/ freezes these bytes.
func Canonical(ev Event) ([]byte, error) {
	b, err := canonicalEvent(&ev)
	if err != nil {
		return nil, fmt.Errorf("encode event: %w", err)
	}
	return b, nil
}

// canonicalGeneric is the reference definition Canonical must match:
// encoding/json of the typed event, re-encoded with sorted keys.
func canonicalGeneric(ev Event) ([]byte, error) {
	raw, err := json.Marshal(ev)
	if err != nil {
		return nil, fmt.Errorf("encode event: %w", err)
	}
	return canonicalize(raw)
}

// canonicalize re-encodes one JSON value with sorted keys and no
// insignificant whitespace, keeping number literals. It is idempotent.
func canonicalize(raw []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("canonicalize: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("canonicalize: trailing data after JSON value")
	}
	// encoding/json sorts map keys and prints json.Number literally.
	out, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("canonicalize: %w", err)
	}
	return out, nil
}

// entryHash is the chain hash of one entry; see the package doc.
func entryHash(seq uint64, prevHex string, canonicalEvent []byte) [sha256.Size]byte {
	h := sha256.New()
	h.Write([]byte(hashDomain))
	h.Write(strconv.AppendUint(nil, seq, 10))
	h.Write([]byte{'\n'})
	h.Write([]byte(prevHex))
	h.Write([]byte{'\n'})
	h.Write(canonicalEvent)
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return sum
}

// storedEntry is the ledger value: Entry with the event kept as its exact
// canonical bytes.
type storedEntry struct {
	Seq   uint64          `json:"seq"`
	Prev  string          `json:"prev"`
	Hash  string          `json:"hash"`
	Event json.RawMessage `json:"event"`
}
