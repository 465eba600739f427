package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
)

// The write-ahead log makes ledger appends durable with one fdatasync per
// group commit instead of bbolt's two (its pages, then its meta page): an
// appended entry is acknowledged once its group is in the log, and it is
// applied to the bbolt file, in one ordinary fsync'd transaction, at the
// next checkpoint (every checkpointEvery, or sooner: when the log grows past
// checkpointBytes, before any other write transaction, before a ledger read,
// and on Close). Open replays what the log holds beyond the file's ledger
// head. This is how etcd pairs its WAL with bbolt.
//
// The log is <store>.wal. Records are
//
//	u32 length | u32 checksum | payload
//
// where checksum is CRC-32C of the payload seeded with the previous
// record's checksum (0 for the record at offset 0). The chain is what makes
// replay stop at the right place: the log is rewritten from offset 0 after
// each checkpoint, and a group whose write failed is rewritten in place, so
// stale records can follow the last good one; a stale record does not chain
// to it. Replay also stops at a zero length (the log is pre-filled with
// zeros as it grows, so that fdatasync need not update its size), at a
// record that does not fit, and at a sequence number that does not follow.
//
// Payload: u64 seq | u16 len, hash | u32 len, entry | u16 n, n × (u16 len,
// task id | u64 calls spent).

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

const (
	walGrowChunk   = 1 << 20 // the log is extended (zero-filled) by this much
	walMaxRecord   = 64 << 20
	walHeaderBytes = 8
)

// walRec is one ledger append: the entry, its hash, and the call counters
// it set (absolute values, so replay is idempotent).
type walRec struct {
	seq    uint64
	hash   []byte
	entry  []byte
	spends []spendPut
}

type spendPut struct {
	id string
	n  uint64
}

// wal is the open log; only the committer goroutine uses it.
type wal struct {
	f      *os.File
	off    int64  // where the next group goes
	size   int64  // bytes of the file known to exist (zero-filled beyond the records)
	last   uint32 // checksum of the record before off
	noSync bool
	// broken is set when a failed group could not be erased: it might
	// be replayed, so the log takes no more appends until reopened.
	broken error
}

// recFits reports whether a record with this hash, entry and spends can be
// encoded and read back (the length fields' limits).
func recFits(hash, entry []byte, spends []spendPut) error {
	size := 8 + 2 + len(hash) + 4 + len(entry) + 2
	for _, sp := range spends {
		if len(sp.id) > 0xffff {
			return fmt.Errorf("task id of %d bytes is too long for the write-ahead log", len(sp.id))
		}
		size += 2 + len(sp.id) + 8
	}
	switch {
	case len(hash) > 0xffff:
		return fmt.Errorf("hash of %d bytes is too long for the write-ahead log", len(hash))
	case len(spends) > 0xffff:
		return fmt.Errorf("%d budget charges are too many for one write-ahead log record", len(spends))
	case size > walMaxRecord:
		return fmt.Errorf("ledger entry of %d bytes exceeds the write-ahead log's record limit (%d)", len(entry), walMaxRecord)
	}
	return nil
}

func walPath(dbPath string) string { return dbPath + ".wal" }

// appendRec encodes r after buf, chained to prev, and returns the new
// buffer and r's checksum.
func appendRec(buf []byte, r *walRec, prev uint32) ([]byte, uint32) {
	start := len(buf)
	buf = append(buf, make([]byte, walHeaderBytes)...)
	buf = binary.BigEndian.AppendUint64(buf, r.seq)
	buf = binary.BigEndian.AppendUint16(buf, uint16(len(r.hash)))
	buf = append(buf, r.hash...)
	buf = binary.BigEndian.AppendUint32(buf, uint32(len(r.entry)))
	buf = append(buf, r.entry...)
	buf = binary.BigEndian.AppendUint16(buf, uint16(len(r.spends)))
	for _, sp := range r.spends {
		buf = binary.BigEndian.AppendUint16(buf, uint16(len(sp.id)))
		buf = append(buf, sp.id...)
		buf = binary.BigEndian.AppendUint64(buf, sp.n)
	}
	payload := buf[start+walHeaderBytes:]
	sum := crc32.Update(prev, castagnoli, payload)
	binary.BigEndian.PutUint32(buf[start:], uint32(len(payload)))
	binary.BigEndian.PutUint32(buf[start+4:], sum)
	return buf, sum
}

var errWALRecord = errors.New("malformed write-ahead log record")

func decodeRec(p []byte) (walRec, error) {
	var r walRec
	take := func(n int) ([]byte, bool) {
		if len(p) < n {
			return nil, false
		}
		b := p[:n]
		p = p[n:]
		return b, true
	}
	b, ok := take(10)
	if !ok {
		return r, errWALRecord
	}
	r.seq = binary.BigEndian.Uint64(b)
	if r.hash, ok = take(int(binary.BigEndian.Uint16(b[8:]))); !ok {
		return r, errWALRecord
	}
	if b, ok = take(4); !ok {
		return r, errWALRecord
	}
	if r.entry, ok = take(int(binary.BigEndian.Uint32(b))); !ok {
		return r, errWALRecord
	}
	if b, ok = take(2); !ok {
		return r, errWALRecord
	}
	n := int(binary.BigEndian.Uint16(b))
	for range n {
		if b, ok = take(2); !ok {
			return r, errWALRecord
		}
		id, ok := take(int(binary.BigEndian.Uint16(b)))
		if !ok {
			return r, errWALRecord
		}
		if b, ok = take(8); !ok {
			return r, errWALRecord
		}
		r.spends = append(r.spends, spendPut{id: string(id), n: binary.BigEndian.Uint64(b)})
	}
	if len(p) != 0 || len(r.hash) == 0 || len(r.entry) == 0 {
		return r, errWALRecord
	}
	return r, nil
}

// readWAL returns the records of the log at path that follow head: the
// contiguous run head+1, head+2, … of well-formed, chained records, in
// order. Records at or below head (already in the file) are skipped. A
// missing log is an empty one.
func readWAL(path string, head uint64) ([]walRec, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read write-ahead log: %w", err)
	}
	var out []walRec
	var prev uint32
	next := head + 1
	for off := 0; off+walHeaderBytes <= len(data); {
		n := int(binary.BigEndian.Uint32(data[off:]))
		sum := binary.BigEndian.Uint32(data[off+4:])
		if n == 0 || n > walMaxRecord || off+walHeaderBytes+n > len(data) {
			break
		}
		payload := data[off+walHeaderBytes : off+walHeaderBytes+n]
		if crc32.Update(prev, castagnoli, payload) != sum {
			break
		}
		r, err := decodeRec(payload)
		if err != nil {
			break
		}
		switch {
		case r.seq <= head: // in the file already
		case r.seq == next:
			out = append(out, r)
			next++
		default:
			return out, nil // not the record that follows
		}
		prev = sum
		off += walHeaderBytes + n
	}
	return out, nil
}

// openWAL opens (creating) the log for writing from offset 0.
func openWAL(path string, noSync bool) (*wal, error) {
	_, statErr := os.Stat(path)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open write-ahead log: %w", err)
	}
	if errors.Is(statErr, os.ErrNotExist) && !noSync {
		// A new file: its directory entry must be durable before any
		// record in it is acknowledged.
		if err := syncDir(filepath.Dir(path)); err != nil {
			f.Close()
			return nil, fmt.Errorf("open write-ahead log: %w", err)
		}
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open write-ahead log: %w", err)
	}
	return &wal{f: f, size: st.Size(), noSync: noSync}, nil
}

// write puts one group of records (encoded chained to w.last, ending with
// checksum last) at the log's end and makes it durable. On error nothing
// moves: the next group is written in the same place.
func (w *wal) write(buf []byte, last uint32) error {
	if w.broken != nil {
		return w.broken
	}
	if end := w.off + int64(len(buf)); end > w.size {
		if err := w.grow(end); err != nil {
			return err // nothing written where records go
		}
	}
	_, err := w.f.WriteAt(buf, w.off)
	if err == nil && !w.noSync {
		if err = fdatasync(w.f); err != nil {
			err = fmt.Errorf("sync: %w", err)
		}
	}
	if err != nil {
		// The group may be in the file anyway (a failed sync leaves the
		// data in the page cache): erase its first header, so it never
		// replays as if it had been acknowledged.
		if eraseErr := w.erase(); eraseErr != nil {
			w.broken = fmt.Errorf("write-ahead log unusable until the store is reopened: a failed write (%v) could not be erased: %w", err, eraseErr)
			return w.broken
		}
		return fmt.Errorf("write-ahead log: %w", err)
	}
	w.off += int64(len(buf))
	w.last = last
	return nil
}

// headroom reports whether the log can take a group: not broken, and
// room for walGrowChunk/4 bytes past off (the file is grown if needed).
func (w *wal) headroom() error {
	if w.broken != nil {
		return w.broken
	}
	if end := w.off + walGrowChunk/4; end > w.size {
		return w.grow(end)
	}
	return nil
}

// erase zeroes the record header at off, durably: replay stops there.
func (w *wal) erase() error {
	if _, err := w.f.WriteAt(make([]byte, walHeaderBytes), w.off); err != nil {
		return err
	}
	if w.noSync {
		return nil
	}
	return fdatasync(w.f)
}

// truncate empties the log (a clean stop: everything is in the file).
func (w *wal) truncate() error {
	if err := w.f.Truncate(0); err != nil {
		return err
	}
	w.off, w.size, w.last = 0, 0, 0
	if w.noSync {
		return nil
	}
	return w.f.Sync()
}

// grow zero-fills the log up to at least end (in walGrowChunk steps) and
// syncs its new size, so that a group's fdatasync is data only.
func (w *wal) grow(end int64) error {
	size := (end + walGrowChunk - 1) / walGrowChunk * walGrowChunk
	zeros := make([]byte, 64<<10)
	for off := w.size; off < size; {
		n := min(int64(len(zeros)), size-off)
		if _, err := w.f.WriteAt(zeros[:n], off); err != nil {
			return fmt.Errorf("grow write-ahead log: %w", err)
		}
		off += n
	}
	if !w.noSync {
		if err := w.f.Sync(); err != nil {
			return fmt.Errorf("grow write-ahead log: %w", err)
		}
	}
	w.size = size
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// reset starts the log over at offset 0: everything in it is in the file.
func (w *wal) reset() {
	w.off = 0
	w.last = 0
}

func (w *wal) close() error {
	if w == nil {
		return nil
	}
	return w.f.Close()
}
