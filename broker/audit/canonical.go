package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"strconv"
	"sync"
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
	sc := getScratch()
	defer putScratch(sc)
	b, err := appendCanonicalEvent(sc.b[:0], &ev)
	if err != nil {
		return nil, fmt.Errorf("encode event: %w", err)
	}
	sc.b = b
	return bytes.Clone(b), nil
}

// scratch is a reusable encoding buffer (scratchPool). Whoever takes one
// from the pool owns it until putScratch; nothing may keep a slice of it
// after that.
type scratch struct{ b []byte }

// maxPooledScratch keeps a record with a huge detail from pinning a huge
// buffer in the pool.
const maxPooledScratch = 64 << 10

var scratchPool = sync.Pool{New: func() any { return &scratch{b: make([]byte, 0, 2048)} }}

func getScratch() *scratch { return scratchPool.Get().(*scratch) }

func putScratch(sc *scratch) {
	if cap(sc.b) <= maxPooledScratch {
		scratchPool.Put(sc)
	}
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

// entryHash is the chain hash of one entry; see the package doc. prevHex is
// the previous entry's hash in lower-case hex, as a string or as bytes.
func entryHash[S string | []byte](seq uint64, prevHex S, canonicalEvent []byte) [sha256.Size]byte {
	c := chainHashers.Get().(*chainHasher)
	defer chainHashers.Put(c)
	c.h.Reset()
	hdr := append(c.hdr[:0], hashDomain...)
	hdr = strconv.AppendUint(hdr, seq, 10)
	hdr = append(hdr, '\n')
	hdr = append(hdr, prevHex...)
	hdr = append(hdr, '\n')
	c.h.Write(hdr)
	c.h.Write(canonicalEvent)
	var sum [sha256.Size]byte
	copy(sum[:], c.h.Sum(c.sum[:0]))
	return sum
}

// chainHasher is the state entryHash reuses (chainHashers): a SHA-256 and
// buffers for the hash input's header and the sum, so that hashing an entry
// allocates nothing. entryHash holds one only for the duration of a call.
type chainHasher struct {
	h   hash.Hash
	hdr [len(hashDomain) + 20 + 1 + 2*sha256.Size + 1]byte
	sum [sha256.Size]byte
}

var chainHashers = sync.Pool{New: func() any { return &chainHasher{h: sha256.New()} }}

// storedEntry is the ledger value: Entry with the event kept as its exact
// canonical bytes.
type storedEntry struct {
	Seq   uint64          `json:"seq"`
	Prev  string          `json:"prev"`
	Hash  string          `json:"hash"`
	Event json.RawMessage `json:"event"`
}
