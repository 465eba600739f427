package policies

import (
	"iter"
	"slices"

	"github.com/cedar-policy/cedar-go"
	"github.com/cedar-policy/cedar-go/types"
	xast "github.com/cedar-policy/cedar-go/x/exp/ast"
)

// scopeIndex buckets the enforced policies by the entity named in their
// principal scope and in their resource scope (`== E`, `in E`, `is T in E` →
// E; `is T` or unconstrained → any). A policy whose scope names E can only
// match a request whose principal (resource) is E or has E among its
// ancestors, so Authorize needs only the buckets of {any, self, ancestors}.
// This is exact: a policy whose scope does not match evaluates to false without
// its conditions being evaluated, so it contributes neither a reason nor an
// error. Cost per decision becomes independent of the policy count (notes §3.3).
type scopeIndex struct {
	// buckets[principalKey][resourceKey]; anyKey (the zero UID) = unconstrained.
	buckets map[types.EntityUID]map[types.EntityUID][]indexEntry
}

var anyKey types.EntityUID

type indexEntry struct {
	id   cedar.PolicyID
	p    *cedar.Policy
	args bool // the policy can read context.args (contextUse.args): Visible batch-evaluates it
}

func scopeKey(n any) types.EntityUID {
	switch sc := n.(type) {
	case xast.ScopeTypeEq:
		return sc.Entity
	case xast.ScopeTypeIn:
		return sc.Entity
	case xast.ScopeTypeIsIn:
		return sc.Entity
	}
	return anyKey // ScopeTypeAll, ScopeTypeIs
}

func newScopeIndex(policies cedar.PolicyMap) *scopeIndex {
	x := &scopeIndex{buckets: map[types.EntityUID]map[types.EntityUID][]indexEntry{}}
	for _, id := range sortedKeys(policies) {
		p := policies[id]
		a := (*xast.Policy)(p.AST())
		pk, rk := scopeKey(a.Principal), scopeKey(a.Resource)
		byRes := x.buckets[pk]
		if byRes == nil {
			byRes = map[types.EntityUID][]indexEntry{}
			x.buckets[pk] = byRes
		}
		byRes[rk] = append(byRes[rk], indexEntry{id: id, p: p, args: contextUseOf(p).args})
	}
	return x
}

// scopeKeys returns anyKey, uid and every ancestor of uid reachable in ents
// (an ancestor missing from ents is included but not traversed, as cedar-go does).
func scopeKeys(ents types.EntityGetter, uid types.EntityUID) []types.EntityUID {
	keys := []types.EntityUID{anyKey, uid}
	for i := 1; i < len(keys); i++ {
		e, ok := ents.Get(keys[i])
		if !ok {
			continue
		}
		for p := range e.Parents.All() {
			if !slices.Contains(keys, p) {
				keys = append(keys, p)
			}
		}
	}
	return keys
}

// candidates returns the policies that could match principal keys pk and
// resource keys rk (in no particular order).
func (x *scopeIndex) candidates(pk, rk []types.EntityUID) candidateList {
	var out candidateList
	for _, p := range pk {
		byRes, ok := x.buckets[p]
		if !ok {
			continue
		}
		for _, r := range rk {
			out = append(out, byRes[r]...)
		}
	}
	return out
}

// candidateList is a cedar.PolicyIterator over a slice.
type candidateList []indexEntry

func (l candidateList) All() iter.Seq2[cedar.PolicyID, *cedar.Policy] {
	return func(yield func(cedar.PolicyID, *cedar.Policy) bool) {
		for _, e := range l {
			if !yield(e.id, e.p) {
				return
			}
		}
	}
}
