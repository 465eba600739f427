package broker

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/mcpbroker/mcpbroker/broker/audit"
	"github.com/mcpbroker/mcpbroker/broker/store"
	"github.com/mcpbroker/mcpbroker/tools"
)

// Tool pinning: the first definition of a tool the broker sees is pinned
// (trust on first use); a later change to what the tool says it does
// (description, schemas, annotations, title) unpins it, which the baseline
// policy turns into a refusal, until an operator reviews the diff and pins
// the new definition. This stops a server from changing a tool after it
// was approved ("rug pull").

// pins tracks which tools are currently unpinned.
type pins struct {
	st *store.Store

	obsMu sync.Mutex            // serializes observePins
	known map[string]*store.Pin // cache of the pins bucket; nil until loaded

	mu       sync.RWMutex
	unpinned map[string]bool // server/tool
}

// definitionDigest hashes the parts of a tool that say what it does.
func definitionDigest(t tools.Tool) (string, json.RawMessage) {
	d := t.Def
	def := map[string]any{
		"name":         t.Name,
		"title":        d.Title,
		"description":  d.Description,
		"inputSchema":  d.RawInputSchema,
		"outputSchema": d.RawOutputSchema,
		"annotations":  d.Annotations,
	}
	b, _ := json.Marshal(def) // map keys are sorted: canonical enough for a digest
	var pretty bytes.Buffer
	_ = json.Indent(&pretty, b, "", "  ")
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:]), pretty.Bytes()
}

// observePins pins new tools and flags changed ones. Pins are cached in
// memory (loaded once) and written in one transaction per catalog change.
func (b *Broker) observePins(snap *tools.Snapshot) {
	if b.pins == nil {
		return
	}
	b.pins.obsMu.Lock()
	defer b.pins.obsMu.Unlock()
	if b.pins.known == nil {
		all, err := b.pins.st.ListPins()
		if err != nil {
			b.log.Error("tool pins unreadable; every tool is treated as unpinned", "err", err)
			next := map[string]bool{}
			for _, t := range snap.Tools {
				next[t.Server+"/"+t.Name] = true
			}
			b.pins.mu.Lock()
			b.pins.unpinned = next
			b.pins.mu.Unlock()
			return
		}
		b.pins.known = map[string]*store.Pin{}
		for _, p := range all {
			b.pins.known[p.Key] = p
		}
	}
	now := b.now()
	next := map[string]bool{}
	var writes []*store.Pin
	var events []audit.Event
	for _, t := range snap.Tools {
		key := t.Server + "/" + t.Name
		digest, def := definitionDigest(t)
		p := b.pins.known[key]
		switch {
		case p == nil:
			p = &store.Pin{Key: key, Digest: digest, Definition: def, PinnedAt: now, PinnedBy: "first use"}
			writes = append(writes, p)
			events = append(events, audit.Event{Type: audit.ToolPinned, Server: t.Server, Target: t.Exposed, Detail: "pinned on first use " + digest})
		case p.Digest == digest:
			if p.PendingDigest != "" { // the server went back to the pinned definition
				c := *p
				c.PendingDigest, c.Pending, c.ChangedAt = "", nil, nil
				writes = append(writes, &c)
			}
		default:
			next[key] = true
			if p.PendingDigest != digest {
				c := *p
				c.PendingDigest, c.Pending, c.ChangedAt = digest, def, &now
				writes = append(writes, &c)
				events = append(events, audit.Event{Type: audit.ToolChanged, Server: t.Server, Target: t.Exposed,
					Detail: fmt.Sprintf("definition changed from %s to %s; calls refused until re-pinned", p.Digest, digest)})
				b.log.Warn("tool definition changed since it was pinned: calls are refused until an operator re-pins it (mcpbroker tools diff/pin)",
					"tool", key, "pinned", p.Digest, "now", digest)
			}
		}
	}
	if err := b.pins.st.PutPins(writes); err != nil {
		// Unrecorded first sightings stay unpinned: fail closed.
		b.log.Error("tool pins not stored; the affected tools are refused", "err", err)
		for _, p := range writes {
			next[p.Key] = true
		}
	} else {
		for _, p := range writes {
			b.pins.known[p.Key] = p
		}
		for _, ev := range events {
			b.record(context.Background(), ev)
		}
	}
	b.pins.mu.Lock()
	b.pins.unpinned = next
	b.pins.mu.Unlock()
}

func (b *Broker) isUnpinned(server, tool string) bool {
	if b.pins == nil {
		return false
	}
	b.pins.mu.RLock()
	defer b.pins.mu.RUnlock()
	return b.pins.unpinned[server+"/"+tool]
}

// PinTool accepts the pending definition of key (or confirms the current
// one) on behalf of by.
func PinTool(st *store.Store, key, by string, now time.Time) (*store.Pin, error) {
	p, err := st.GetPin(key)
	if err != nil {
		return nil, err
	}
	if p == nil {
		return nil, fmt.Errorf("no tool %q has been seen", key)
	}
	if p.PendingDigest == "" {
		return p, nil
	}
	p.Digest, p.Definition = p.PendingDigest, p.Pending
	p.PendingDigest, p.Pending, p.ChangedAt = "", nil, nil
	p.PinnedAt, p.PinnedBy = now, by
	return p, st.PutPin(p)
}

// DiffDefinitions is a line diff of two pretty-printed definitions.
func DiffDefinitions(old, new []byte) string {
	a, b := strings.Split(string(old), "\n"), strings.Split(string(new), "\n")
	// Longest common subsequence; definitions are small.
	l := make([][]int, len(a)+1)
	for i := range l {
		l[i] = make([]int, len(b)+1)
	}
	for i := len(a) - 1; i >= 0; i-- {
		for j := len(b) - 1; j >= 0; j-- {
			if a[i] == b[j] {
				l[i][j] = l[i+1][j+1] + 1
			} else {
				l[i][j] = max(l[i+1][j], l[i][j+1])
			}
		}
	}
	var out strings.Builder
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case i < len(a) && j < len(b) && a[i] == b[j]:
			out.WriteString("  " + a[i] + "\n")
			i, j = i+1, j+1
		case j < len(b) && (i == len(a) || l[i][j+1] >= l[i+1][j]):
			out.WriteString("+ " + b[j] + "\n")
			j++
		default:
			out.WriteString("- " + a[i] + "\n")
			i++
		}
	}
	return out.String()
}

// PinsPath is the admin API for pins: GET lists, POST {key}/pin pins.
const PinsPath = "/v1/tools"

func (b *Broker) pinAdmin(mux *http.ServeMux) {
	mux.HandleFunc("GET "+PinsPath, func(w http.ResponseWriter, r *http.Request) {
		ps, err := b.store.ListPins()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(ps)
	})
	mux.HandleFunc("POST "+PinsPath+"/pin", func(w http.ResponseWriter, r *http.Request) {
		key := r.URL.Query().Get("key")
		p, err := PinTool(b.store, key, "operator", b.now())
		if err != nil {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			_ = json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
			return
		}
		b.record(r.Context(), audit.Event{Type: audit.ToolPinned, Target: key, Detail: "re-pinned by operator " + p.Digest})
		b.applyCatalogForce()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(p)
	})
}

// applyCatalogForce re-reads the pins (after a re-pin by anyone) and
// re-evaluates them without waiting for the next catalog change.
func (b *Broker) applyCatalogForce() {
	b.pins.obsMu.Lock()
	b.pins.known = nil
	b.pins.obsMu.Unlock()
	b.observePins(b.pool.Snapshot())
}

var _ = errors.New
