package audit

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
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
}

// LoadOrCreateKey reads the 32-byte key at path, or creates it with mode
// 0600 from crypto/rand if the file does not exist (atomically: two
// processes racing end up with the same key). It refuses a key file that is
// readable or writable by group or others, or that is not exactly 32 bytes.
func LoadOrCreateKey(path string) (*Hasher, error) {
	h, err := loadKey(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return h, err
	}
	if err := createKey(path); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, err
	}
	return loadKey(path)
}

func loadKey(path string) (*Hasher, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("load digest key: %w", err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("load digest key: %w", err)
	}
	if !info.Mode().IsRegular() {
		return nil, fmt.Errorf("load digest key %s: not a regular file", path)
	}
	if perm := info.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("load digest key %s: mode %04o allows group or other access, want 0600", path, perm)
	}
	key := make([]byte, KeySize+1)
	n, err := f.Read(key)
	if err != nil || n != KeySize {
		return nil, fmt.Errorf("load digest key %s: want exactly %d bytes", path, KeySize)
	}
	return &Hasher{key: key[:KeySize]}, nil
}

// createKey writes a fresh key to a temporary file and links it into place,
// so a reader never sees a partial key. It returns fs.ErrExist if path
// already exists.
func createKey(path string) error {
	key := make([]byte, KeySize)
	if _, err := rand.Read(key); err != nil {
		return fmt.Errorf("create digest key: %w", err)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create digest key: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".digest-key-*")
	if err != nil {
		return fmt.Errorf("create digest key: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("create digest key: %w", err)
	}
	if _, err := tmp.Write(key); err != nil {
		tmp.Close()
		return fmt.Errorf("create digest key: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("create digest key: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("create digest key: %w", err)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		return fmt.Errorf("create digest key: %w", err)
	}
	return nil
}

// Digest returns "hmac-sha256:<hex>" of b under the deployment key. The
// caller canonicalizes b first: equal canonical bytes give equal digests.
func (h *Hasher) Digest(b []byte) string {
	m := hmac.New(sha256.New, h.key)
	m.Write(b)
	return DigestPrefix + hex.EncodeToString(m.Sum(nil))
}

// String hides the key.
func (h *Hasher) String() string { return "audit.Hasher{key:<redacted>}" }

// LogValue hides the key.
func (h *Hasher) LogValue() slog.Value { return slog.StringValue("<redacted>") }
