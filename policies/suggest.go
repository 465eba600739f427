package policies

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/cedar-policy/cedar-go/types"
)

// Observation is one recorded decision, as the audit trail keeps it (the
// caller converts audit records; this package never reads them itself).
type Observation struct {
	Time time.Time
	// Principals are the Cedar UIDs of the passes, initiator first
	// (Decision.Passes[].Principal), e.g. `Broker::Agent::"spiffe://x/coder"`.
	Principals []string
	Action     Action
	Server     string
	Target     string // the name the agent sees (resource.name)
	Decision   string // allow, deny, needs_approval
	ArgsDigest string // digest of the canonical arguments; "" if none
}

// SuggestOptions tune Suggest.
type SuggestOptions struct {
	// Coarse grants whole servers instead of the tools seen: the first step
	// of "start coarse, then tighten".
	Coarse bool
}

type suggestKey struct {
	principal types.EntityUID
	action    Action
	server    string
}

type targetStats struct {
	calls     int
	decisions map[string]int
	digests   map[string]bool
}

// Suggest proposes least-privilege permit policies for the calls that were
// observed: one per principal (every initiator and agent that had a pass),
// action and server, naming exactly the tools seen, with what was seen as
// comments. The result is Cedar text for a human to review; it is checked by
// compiling it with the Baseline (an error means a bug here, not in the data).
// Observations without passes, with an unknown principal type or a
// list_tools action are skipped. It returns ErrNoSources if nothing remains.
func Suggest(obs []Observation, opts SuggestOptions) ([]byte, error) {
	groups := map[suggestKey]map[string]*targetStats{}
	var first, last time.Time
	used := 0
	for _, o := range obs {
		if o.Action.Validate() != nil || o.Action == ActionListTools || o.Server == "" || o.Target == "" {
			continue
		}
		counted := false
		for _, ps := range o.Principals {
			var uid types.EntityUID
			if uid.UnmarshalCedar([]byte(ps)) != nil {
				continue
			}
			switch uid.Type {
			case typeUser, typeWorkload, typeAgent:
			default:
				continue
			}
			k := suggestKey{principal: uid, action: o.Action, server: o.Server}
			ts := groups[k]
			if ts == nil {
				ts = map[string]*targetStats{}
				groups[k] = ts
			}
			st := ts[o.Target]
			if st == nil {
				st = &targetStats{decisions: map[string]int{}, digests: map[string]bool{}}
				ts[o.Target] = st
			}
			st.calls++
			st.decisions[cmp.Or(o.Decision, "unknown")]++
			if o.ArgsDigest != "" {
				st.digests[o.ArgsDigest] = true
			}
			counted = true
		}
		if counted {
			used++
			if first.IsZero() || o.Time.Before(first) {
				first = o.Time
			}
			if o.Time.After(last) {
				last = o.Time
			}
		}
	}
	if len(groups) == 0 {
		return nil, fmt.Errorf("suggest: no usable call decisions: %w", ErrNoSources)
	}
	keys := slices.SortedFunc(maps.Keys(groups), func(a, b suggestKey) int {
		return cmp.Or(
			cmp.Compare(principalRank(a.principal.Type), principalRank(b.principal.Type)),
			strings.Compare(string(a.principal.ID), string(b.principal.ID)),
			strings.Compare(string(a.action), string(b.action)),
			strings.Compare(a.server, b.server))
	})

	var b bytes.Buffer
	fmt.Fprintf(&b, "// Suggested by `mcpbroker policy suggest` from %d recorded decisions, %s to %s.\n",
		used, first.UTC().Format(time.RFC3339), last.UTC().Format(time.RFC3339))
	b.WriteString("// REVIEW BEFORE USE: each permit grants exactly what was observed, denied calls included.\n")
	b.WriteString("// Argument values are not in the audit trail (only an HMAC digest), so tighten with\n")
	b.WriteString("// conditions on context.args (path prefixes, hosts, amounts) from what each task needs.\n")
	b.WriteString("// Consider @mode(\"log_only\") first to watch their effect on live traffic.\n")
	ids := map[string]bool{}
	for _, k := range keys {
		ts := groups[k]
		targets := slices.Sorted(maps.Keys(ts))
		total := 0
		for _, t := range targets {
			total += ts[t].calls
		}
		fmt.Fprintf(&b, "\n// %s, %s on server %s: %d calls\n", comment(k.principal.String()), k.action, comment(k.server), total)
		for _, t := range targets {
			st := ts[t]
			var ds []string
			for _, d := range slices.Sorted(maps.Keys(st.decisions)) {
				ds = append(ds, fmt.Sprintf("%s %d", d, st.decisions[d]))
			}
			fmt.Fprintf(&b, "//   %s: %d calls (%s), %d distinct argument sets\n", comment(t), st.calls, strings.Join(ds, ", "), len(st.digests))
		}
		id := uniqueID(ids, "suggested-"+principalKind(k.principal.Type)+"-"+slug(string(k.principal.ID))+"-"+slug(k.server)+"-"+slug(string(k.action)))
		fmt.Fprintf(&b, "@id(%s)\npermit (\n  principal == %s,\n  action == %s,\n  resource in %s\n)",
			types.String(id).MarshalCedar(), k.principal.MarshalCedar(), actionUID(k.action).MarshalCedar(),
			types.NewEntityUID(typeToolServer, types.String(k.server)).MarshalCedar())
		if !opts.Coarse {
			names := make([]string, len(targets))
			for i, t := range targets {
				names[i] = string(types.String(t).MarshalCedar())
			}
			fmt.Fprintf(&b, "\nwhen { [%s].contains(resource.name) }", strings.Join(names, ", "))
		}
		b.WriteString(";\n")
	}
	if _, err := Compile(append(Baseline(), Source{Name: "suggested.cedar", Text: b.Bytes()})); err != nil {
		return nil, errors.Join(errors.New("suggest: generated policies do not compile"), err)
	}
	return b.Bytes(), nil
}

func principalRank(t types.EntityType) int {
	switch t {
	case typeUser:
		return 0
	case typeWorkload:
		return 1
	}
	return 2
}

func principalKind(t types.EntityType) string {
	switch t {
	case typeUser:
		return "user"
	case typeWorkload:
		return "workload"
	}
	return "agent"
}

// comment makes s safe inside a // comment (no line breaks).
func comment(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' || r == '\u2028' || r == '\u2029' {
			return ' '
		}
		return r
	}, s)
}

// slug keeps [a-z0-9], turns runs of anything else into "-", and keeps at
// most the last 40 characters (the end of a SPIFFE ID is its most specific part).
func slug(s string) string {
	s = strings.TrimPrefix(strings.ToLower(s), "spiffe://")
	var b strings.Builder
	dash := false
	for _, r := range s {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
			dash = false
		} else if !dash {
			b.WriteByte('-')
			dash = true
		}
	}
	out := strings.Trim(b.String(), "-")
	if len(out) > 40 {
		out = strings.TrimLeft(out[len(out)-40:], "-")
	}
	return cmp.Or(out, "x")
}

func uniqueID(used map[string]bool, id string) string {
	out := id
	for n := 2; used[out]; n++ {
		out = fmt.Sprintf("%s-%d", id, n)
	}
	used[out] = true
	return out
}
