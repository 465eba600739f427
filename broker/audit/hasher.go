package audit

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
)

// KeySize is the length of the digest key in bytes.
const KeySize = 32

// DigestPrefix starts every Hasher digest.
const DigestPrefix = "hmac-sha256:"

// Hasher computes keyed digests of argument values so that the ledger can
// show that two calls had the same arguments without holding them. The key
// is per deployment; without it a digest cannot be brute-forced from guesses.
// Hasher is safe for concurrent use and never prints its key.
type Hasher struct {
	key []byte
	// macs holds keyed HMAC states for Digest to reuse (*hmacState); each
	// is used by one Digest at a time and reset before use.
	macs sync.Pool
}

// hmacState is one reusable HMAC-SHA256 under the Hasher's key, with room
// for its sum so that Sum need not allocate.
type hmacState struct {
	mac hash.Hash
	sum [sha256.Size]byte
}

// LoadOrCreateKey reads the 32-byte key at path, or creates it with mode
// 0600 from crypto/rand if the file does not exist (atomically: two
// processes racing end up with the same key). It refuses a key file that is
// readable or writable by group or others, or that is not exactly 32 bytes.
func LoadOrCreateKey(path string) (*Hasher, error) {
	key, err := loadOrCreateKeyFile(path, "digest key")
	if err != nil {
		return nil, err
	}
	return &Hasher{key: key}, nil
}

// LoadKey reads the digest key at path without creating it (for the CLI's
// `audit hash`). It applies the same checks as LoadOrCreateKey.
func LoadKey(path string) (*Hasher, error) {
	key, err := loadKey(path, "digest key")
	if err != nil {
		return nil, err
	}
	return &Hasher{key: key}, nil
}

// loadOrCreateKeyFile returns the KeySize random bytes in the owner-only
// file at path, creating it if missing.
func loadOrCreateKeyFile(path, what string) ([]byte, error) {
	key, err := loadKey(path, what)
	if !errors.Is(err, fs.ErrNotExist) {
		return key, err
	}
	if err := createKey(path, what); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, err
	}
	return loadKey(path, what)
}

func loadKey(path, what string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", what, err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", what, err)
	}
	if !info.Mode().IsRegular() {
		return nil, fmt.Errorf("load %s %s: not a regular file", what, path)
	}
	if perm := info.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("load %s %s: mode %04o allows group or other access, want 0600", what, path, perm)
	}
	key := make([]byte, KeySize+1)
	n, err := io.ReadFull(f, key)
	if n != KeySize || !errors.Is(err, io.ErrUnexpectedEOF) {
		return nil, fmt.Errorf("load %s %s: want exactly %d bytes", what, path, KeySize)
	}
	return key[:KeySize], nil
}

// createKey writes a fresh key to a temporary file and links it into place,
// so a reader never sees a partial key. It returns fs.ErrExist if path
// already exists.
func createKey(path, what string) error {
	key := make([]byte, KeySize)
	if _, err := rand.Read(key); err != nil {
		return fmt.Errorf("create %s: %w", what, err)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", what, err)
	}
	tmp, err := os.CreateTemp(dir, ".key-*")
	if err != nil {
		return fmt.Errorf("create %s: %w", what, err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("create %s: %w", what, err)
	}
	if _, err := tmp.Write(key); err != nil {
		tmp.Close()
		return fmt.Errorf("create %s: %w", what, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("create %s: %w", what, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("create %s: %w", what, err)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		return fmt.Errorf("create %s: %w", what, err)
	}
	return nil
}

// Digest returns "hmac-sha256:<hex>" of b under the deployment key. The
// caller canonicalizes b first: equal canonical bytes give equal digests.
func (h *Hasher) Digest(b []byte) string {
	st, _ := h.macs.Get().(*hmacState)
	if st == nil {
		st = &hmacState{mac: hmac.New(sha256.New, h.key)}
	}
	st.mac.Reset() // back to the keyed initial state
	st.mac.Write(b)
	sum := st.mac.Sum(st.sum[:0])
	var out [len(DigestPrefix) + 2*sha256.Size]byte
	d := append(out[:0], DigestPrefix...)
	d = hex.AppendEncode(d, sum)
	h.macs.Put(st)
	return string(d)
}

// String hides the key.
func (h *Hasher) String() string { return "audit.Hasher{key:<redacted>}" }

// LogValue hides the key.
func (h *Hasher) LogValue() slog.Value { return slog.StringValue("<redacted>") }
