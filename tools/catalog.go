package tools

import (
	"encoding/json"
	"fmt"
	"slices"

	"github.com/mark3labs/mcp-go/mcp"
)

// Tool is one downstream tool as agents see it.
type Tool struct {
	Server  string
	Name    string // the downstream's own name
	Exposed string // Prefix + Name: what agents call
	// Def is the definition re-exported to agents: the downstream's own,
	// schemas byte-exact (RawInputSchema/RawOutputSchema), Name = Exposed.
	Def mcp.Tool
	// Effective hints: the server's own if it is trusted, otherwise the MCP
	// defaults (not read-only, destructive, not idempotent, open-world).
	ReadOnly, Destructive, Idempotent, OpenWorld bool
	RiskTags                                     []string
}

// Resource is one downstream resource; URIs pass through unchanged.
type Resource struct {
	Server string
	Def    mcp.Resource
}

// Template is one downstream resource template.
type Template struct {
	Server string
	Def    mcp.ResourceTemplate
}

// Prompt is one downstream prompt as agents see it.
type Prompt struct {
	Server  string
	Name    string
	Exposed string
	Def     mcp.Prompt // Name = Exposed
}

// serverCatalog is what one downstream offers, already namespaced.
type serverCatalog struct {
	tools     []Tool
	resources []Resource
	templates []Template
	prompts   []Prompt
}

// Snapshot is the merged catalog of every connected downstream. It is
// immutable; the pool swaps in a new one on every change.
type Snapshot struct {
	Tools     []Tool
	Resources []Resource
	Templates []Template
	Prompts   []Prompt
	// Withheld lists names dropped because another server owns them.
	Withheld []string

	tools     map[string]*Tool
	prompts   map[string]*Prompt
	resources map[string]*Resource
}

// Tool looks up a tool by the name agents see.
func (s *Snapshot) Tool(exposed string) (*Tool, bool) {
	t, ok := s.tools[exposed]
	return t, ok
}

// Prompt looks up a prompt by the name agents see.
func (s *Snapshot) Prompt(exposed string) (*Prompt, bool) {
	p, ok := s.prompts[exposed]
	return p, ok
}

// Resource looks up a listed resource by URI.
func (s *Snapshot) Resource(uri string) (*Resource, bool) {
	r, ok := s.resources[uri]
	return r, ok
}

// parseTools turns raw tools/list result pages into namespaced tools whose
// schemas are the downstream's bytes.
func parseTools(spec *Spec, pages []json.RawMessage) ([]Tool, error) {
	var out []Tool
	for _, page := range pages {
		var res struct {
			Tools []json.RawMessage `json:"tools"`
		}
		if err := json.Unmarshal(page, &res); err != nil {
			return nil, fmt.Errorf("decode tools/list: %w", err)
		}
		for _, raw := range res.Tools {
			t, err := parseTool(spec, raw)
			if err != nil {
				return nil, err
			}
			out = append(out, t)
		}
	}
	return out, nil
}

func parseTool(spec *Spec, raw json.RawMessage) (Tool, error) {
	var def mcp.Tool
	if err := json.Unmarshal(raw, &def); err != nil {
		return Tool{}, fmt.Errorf("decode tool: %w", err)
	}
	var schemas struct {
		Input  json.RawMessage `json:"inputSchema"`
		Output json.RawMessage `json:"outputSchema"`
	}
	if err := json.Unmarshal(raw, &schemas); err != nil {
		return Tool{}, fmt.Errorf("decode tool %q schemas: %w", def.Name, err)
	}
	if def.Name == "" {
		return Tool{}, fmt.Errorf("tool without a name")
	}
	if len(schemas.Input) == 0 || string(schemas.Input) == "null" {
		schemas.Input = json.RawMessage(`{"type":"object"}`)
	}
	def.InputSchema = mcp.ToolInputSchema{}
	def.OutputSchema = mcp.ToolOutputSchema{}
	def.RawInputSchema = schemas.Input
	if len(schemas.Output) > 0 && string(schemas.Output) != "null" {
		def.RawOutputSchema = schemas.Output
	} else {
		def.RawOutputSchema = nil
	}
	t := Tool{Server: spec.Name, Name: def.Name, Exposed: spec.Prefix + def.Name, RiskTags: slices.Clone(spec.RiskTags)}
	def.Name = t.Exposed
	// MCP: annotations from an untrusted server are hints an attacker
	// controls; assume the most dangerous defaults.
	t.ReadOnly, t.Destructive, t.Idempotent, t.OpenWorld = false, true, false, true
	if spec.Trusted {
		a := def.Annotations
		if a.ReadOnlyHint != nil {
			t.ReadOnly = *a.ReadOnlyHint
		}
		if a.DestructiveHint != nil {
			t.Destructive = *a.DestructiveHint
		}
		if a.IdempotentHint != nil {
			t.Idempotent = *a.IdempotentHint
		}
		if a.OpenWorldHint != nil {
			t.OpenWorld = *a.OpenWorldHint
		}
		if t.ReadOnly {
			t.Destructive = false
		}
	}
	t.Def = def
	return t, nil
}

// merge builds a snapshot from per-server catalogs. owners remembers which
// server first exposed each name; a later server offering the same name is
// withheld (and reported), so a downstream cannot hijack another's tool by
// renaming its own. order is the configured server order.
func merge(order []string, cats map[string]*serverCatalog, owners map[string]string) *Snapshot {
	s := &Snapshot{tools: map[string]*Tool{}, prompts: map[string]*Prompt{}, resources: map[string]*Resource{}}
	// Release names whose owner no longer offers them.
	offered := map[string]map[string]bool{}
	for name, c := range cats {
		m := map[string]bool{}
		for _, t := range c.tools {
			m["tool:"+t.Exposed] = true
		}
		for _, p := range c.prompts {
			m["prompt:"+p.Exposed] = true
		}
		for _, r := range c.resources {
			m["resource:"+r.Def.URI] = true
		}
		for _, r := range c.templates {
			m["template:"+r.Def.URITemplate.Raw()] = true
		}
		offered[name] = m
	}
	for key, owner := range owners {
		if !offered[owner][key] {
			delete(owners, key)
		}
	}
	claim := func(key, server string) bool {
		if o, ok := owners[key]; ok && o != server {
			s.Withheld = append(s.Withheld, fmt.Sprintf("%s from %s (owned by %s)", key, server, o))
			return false
		}
		owners[key] = server
		return true
	}
	for _, name := range order {
		c := cats[name]
		if c == nil {
			continue
		}
		for _, t := range c.tools {
			if claim("tool:"+t.Exposed, name) {
				s.Tools = append(s.Tools, t)
			}
		}
		for _, p := range c.prompts {
			if claim("prompt:"+p.Exposed, name) {
				s.Prompts = append(s.Prompts, p)
			}
		}
		for _, r := range c.resources {
			if claim("resource:"+r.Def.URI, name) {
				s.Resources = append(s.Resources, r)
			}
		}
		for _, r := range c.templates {
			if claim("template:"+r.Def.URITemplate.Raw(), name) {
				s.Templates = append(s.Templates, r)
			}
		}
	}
	for i := range s.Tools {
		s.tools[s.Tools[i].Exposed] = &s.Tools[i]
	}
	for i := range s.Prompts {
		s.prompts[s.Prompts[i].Exposed] = &s.Prompts[i]
	}
	for i := range s.Resources {
		s.resources[s.Resources[i].Def.URI] = &s.Resources[i]
	}
	return s
}

// collisions reports names two servers expose, for the start-up check.
func collisions(order []string, cats map[string]*serverCatalog) []error {
	seen := map[string]string{}
	var errs []error
	check := func(key, server string) {
		if o, ok := seen[key]; ok && o != server {
			errs = append(errs, fmt.Errorf("%w: %s is exposed by both %q and %q (set a prefix on one of them)", ErrCollision, key, o, server))
			return
		}
		seen[key] = server
	}
	for _, name := range order {
		c := cats[name]
		if c == nil {
			continue
		}
		for _, t := range c.tools {
			check("tool "+t.Exposed, name)
		}
		for _, p := range c.prompts {
			check("prompt "+p.Exposed, name)
		}
	}
	return errs
}
