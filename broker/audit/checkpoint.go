package audit

import (
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Default file names in the broker's data directory.
const (
	// SigningKeyFile holds the Ed25519 seed that signs checkpoints.
	SigningKeyFile = "audit.ed25519"
	// AnchorFile holds the latest signed Checkpoint, written next to the
	// store so that a verifier can tell a truncated ledger from a short one.
	AnchorFile = "audit.anchor"
)

// DefaultCheckpointEvery is how many entries may follow a checkpoint before
// Record writes the next one, when WithSigner is given without
// WithCheckpointEvery.
const DefaultCheckpointEvery = 1000

// checkpointDomain separates checkpoint signatures from any other use of
// the key; baseDomain separates compaction bases from checkpoints, so that
// no checkpoint (one in the ledger, the anchor) can be planted as a base.
const (
	checkpointDomain = "mcpbroker.audit.checkpoint.v1\n"
	baseDomain       = "mcpbroker.audit.compaction-base.v1\n"
)

// KindBase marks a Checkpoint that is a compaction base.
const KindBase = "compaction-base"

// keyPrefix starts the text form of an Ed25519 public key.
const keyPrefix = "ed25519:"

// Checkpoint is a signed statement that ledger entry Seq has hash Hash. As
// the hash chains every earlier entry, it vouches for the whole ledger up to
// Seq. It is stored in LedgerCheckpoint events (covering the entry just
// before), in the store's base record after compaction, and in AnchorFile.
//
// Sig is hex(Ed25519(key, "mcpbroker.audit.checkpoint.v1\n" + decimal(Seq) +
// "\n" + Hash)).
//
// A compaction base has Kind KindBase and Archive, the SHA-256 (hex) of the
// archive it was cut into, and its Sig is over "mcpbroker.audit.
// compaction-base.v1\n" + decimal(Seq) + "\n" + Hash + "\n" + Archive.
type Checkpoint struct {
	Seq     uint64 `json:"seq"`
	Hash    string `json:"hash"` // lower-case hex entry hash
	Key     string `json:"key"`  // "ed25519:<hex public key>"
	Sig     string `json:"sig"`  // hex signature
	Kind    string `json:"kind,omitempty"`
	Archive string `json:"archive,omitempty"`
}

func checkpointMessage(seq uint64, hash string) []byte {
	return []byte(checkpointDomain + strconv.FormatUint(seq, 10) + "\n" + hash)
}

func baseMessage(seq uint64, hash, archive string) []byte {
	return []byte(baseDomain + strconv.FormatUint(seq, 10) + "\n" + hash + "\n" + archive)
}

// message is what c's signature covers.
func (c *Checkpoint) message() ([]byte, error) {
	switch c.Kind {
	case "":
		return checkpointMessage(c.Seq, c.Hash), nil
	case KindBase:
		return baseMessage(c.Seq, c.Hash, c.Archive), nil
	}
	return nil, fmt.Errorf("checkpoint of seq %d: unknown kind %q", c.Seq, c.Kind)
}

// Verify checks the signature. With pinned non-nil, the checkpoint must also
// be signed by that key; with pinned nil it is checked against the key it
// names, which proves integrity but not origin.
func (c *Checkpoint) Verify(pinned ed25519.PublicKey) error {
	pub, err := ParsePublicKey(c.Key)
	if err != nil {
		return fmt.Errorf("checkpoint of seq %d: %w", c.Seq, err)
	}
	if pinned != nil && !pub.Equal(pinned) {
		return fmt.Errorf("checkpoint of seq %d: signed by %s, not the pinned key %s", c.Seq, c.Key, FormatPublicKey(pinned))
	}
	sig, err := hex.DecodeString(c.Sig)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return fmt.Errorf("checkpoint of seq %d: malformed signature", c.Seq)
	}
	msg, err := c.message()
	if err != nil {
		return err
	}
	if !ed25519.Verify(pub, msg, sig) {
		return fmt.Errorf("checkpoint of seq %d: bad signature", c.Seq)
	}
	return nil
}

// Signer signs checkpoints with the deployment's Ed25519 key. It is safe for
// concurrent use and never prints its key.
type Signer struct {
	priv ed25519.PrivateKey
	pub  string
}

// NewSigner returns a Signer for an Ed25519 private key, for a key that is
// configured rather than kept in the data directory.
func NewSigner(priv ed25519.PrivateKey) *Signer {
	return &Signer{priv: priv, pub: FormatPublicKey(priv.Public().(ed25519.PublicKey))}
}

// LoadOrCreateSigner reads the 32-byte Ed25519 seed at path, or creates it
// with mode 0600 if the file does not exist, with the same checks and
// atomicity as LoadOrCreateKey.
func LoadOrCreateSigner(path string) (*Signer, error) {
	seed, err := loadOrCreateKeyFile(path, "signing key")
	if err != nil {
		return nil, err
	}
	return NewSigner(ed25519.NewKeyFromSeed(seed)), nil
}

// LoadSigner reads the seed at path without creating it.
func LoadSigner(path string) (*Signer, error) {
	seed, err := loadKey(path, "signing key")
	if err != nil {
		return nil, err
	}
	return NewSigner(ed25519.NewKeyFromSeed(seed)), nil
}

// PublicKey returns the verifying key.
func (s *Signer) PublicKey() ed25519.PublicKey { return s.priv.Public().(ed25519.PublicKey) }

// Sign returns a Checkpoint of entry seq with hash hash.
func (s *Signer) Sign(seq uint64, hash string) Checkpoint {
	sig := ed25519.Sign(s.priv, checkpointMessage(seq, hash))
	return Checkpoint{Seq: seq, Hash: hash, Key: s.pub, Sig: hex.EncodeToString(sig)}
}

// SignBase signs a compaction base: entries up to seq (whose hash is hash)
// were cut into the archive whose SHA-256 (hex) is archive.
func (s *Signer) SignBase(seq uint64, hash, archive string) Checkpoint {
	sig := ed25519.Sign(s.priv, baseMessage(seq, hash, archive))
	return Checkpoint{Seq: seq, Hash: hash, Key: s.pub, Sig: hex.EncodeToString(sig), Kind: KindBase, Archive: archive}
}

// String hides the key.
func (s *Signer) String() string { return "audit.Signer{key:<redacted>}" }

// LogValue hides the private key.
func (s *Signer) LogValue() slog.Value { return slog.StringValue(s.pub) }

// FormatPublicKey returns "ed25519:<hex>".
func FormatPublicKey(pub ed25519.PublicKey) string { return keyPrefix + hex.EncodeToString(pub) }

// ParsePublicKey accepts "ed25519:<hex>" or bare hex.
func ParsePublicKey(s string) (ed25519.PublicKey, error) {
	b, err := hex.DecodeString(strings.TrimPrefix(strings.TrimSpace(s), keyPrefix))
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, errors.New("malformed ed25519 public key")
	}
	return ed25519.PublicKey(b), nil
}

// WriteAnchor atomically replaces the file at path with cp (JSON), synced.
func WriteAnchor(path string, cp Checkpoint) error {
	b, err := json.Marshal(cp)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".anchor-*")
	if err != nil {
		return fmt.Errorf("write anchor: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("write anchor: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write anchor: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write anchor: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write anchor: %w", err)
	}
	return nil
}

// ReadAnchor reads a Checkpoint written by WriteAnchor. It does not check
// the signature (Verify does).
func ReadAnchor(path string) (*Checkpoint, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read anchor: %w", err)
	}
	var cp Checkpoint
	if err := json.Unmarshal(b, &cp); err != nil {
		return nil, fmt.Errorf("read anchor %s: %w", path, err)
	}
	return &cp, nil
}
