package policies

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/cedar-policy/cedar-go"
	"github.com/cedar-policy/cedar-go/types"
	xast "github.com/cedar-policy/cedar-go/x/exp/ast"
	"github.com/cedar-policy/cedar-go/x/exp/schema"
	"github.com/cedar-policy/cedar-go/x/exp/schema/resolved"
	"github.com/cedar-policy/cedar-go/x/exp/schema/validate"
)

// This file is the only one that touches cedar-go's x/exp/schema packages
// (outside semver); the rest of the package sees the small interface below.

// policyChecker validates one parsed policy against the schema.
type policyChecker interface {
	check(id cedar.PolicyID, p *cedar.Policy) []error
}

// argKind is the Cedar type of one ToolArgs field.
type argKind uint8

const (
	argString argKind = iota + 1
	argLong
	argBool
)

// model is what the package needs from the schema: a validator, the action
// entities (so `action in Broker::Action::"mcp"` matches) and the ToolArgs shape.
type model struct {
	checker policyChecker
	actions types.EntityMap
	args    map[string]argKind
}

const schemaName = "broker.cedarschema"

var loadModel = sync.OnceValues(func() (*model, error) { return newModel(schemaText) })

func newModel(text []byte) (*model, error) {
	var s schema.Schema
	s.SetFilename(schemaName)
	if err := s.UnmarshalCedar(text); err != nil {
		return nil, fmt.Errorf("parse schema: %w", err)
	}
	rs, err := s.Resolve()
	if err != nil {
		return nil, fmt.Errorf("resolve schema: %w", err)
	}
	m := &model{
		checker: validator{mu: new(sync.Mutex), v: validate.New(rs, validate.WithStrict())},
		actions: types.EntityMap{},
		args:    map[string]argKind{},
	}
	for uid, a := range rs.Actions {
		e := a.Entity
		e.UID = uid
		m.actions[uid] = e
	}
	call, ok := rs.Actions[actionUID(ActionCallTool)]
	if !ok || call.AppliesTo == nil {
		return nil, errors.New("schema: action call_tool missing")
	}
	argsAttr, ok := call.AppliesTo.Context["args"]
	if !ok {
		return nil, errors.New("schema: context.args missing")
	}
	rec, ok := argsAttr.Type.(resolved.RecordType)
	if !ok {
		return nil, errors.New("schema: context.args is not a record")
	}
	for name, attr := range rec {
		switch attr.Type.(type) {
		case resolved.StringType:
			m.args[string(name)] = argString
		case resolved.LongType:
			m.args[string(name)] = argLong
		case resolved.BoolType:
			m.args[string(name)] = argBool
		}
	}
	return m, nil
}

// validator serialises calls: the experimental validator does not document
// whether it is safe for concurrent use, and Compile is not on the hot path.
type validator struct {
	mu *sync.Mutex
	v  *validate.Validator
}

func (v validator) check(id cedar.PolicyID, p *cedar.Policy) []error {
	v.mu.Lock()
	defer v.mu.Unlock()
	err := v.v.Policy(string(id), (*xast.Policy)(p.AST()))
	if err == nil {
		return nil
	}
	errs := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = slices.Clone(j.Unwrap())
	}
	// The validator visits actions in map order; sort for stable output.
	slices.SortFunc(errs, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
	return errs
}
