package broker

import (
	"fmt"
	"path"
	"time"
)

// AgentConfig registers one agent: its classes (Cedar AgentClass parents),
// the deepest delegation chain it may act in, and the coarse task it gets
// when it presents none.
type AgentConfig struct {
	// ID is the agent's SPIFFE ID.
	ID      string   `yaml:"id"`
	Classes []string `yaml:"classes"`
	Owner   string   `yaml:"owner"`
	// MaxDepth limits the chain this agent may act in (default 4).
	MaxDepth    int                `yaml:"max_depth"`
	DefaultTask *DefaultTaskConfig `yaml:"default_task"`
}

// DefaultTaskConfig is the task an agent gets without a handle. It is
// created per (agent, initiator) the first time, and renewed when it
// expires.
type DefaultTaskConfig struct {
	Tools    []string `yaml:"tools"`
	TTL      Duration `yaml:"ttl"`
	MaxCalls int64    `yaml:"max_calls"`
	Purpose  string   `yaml:"purpose"`
}

// defaultMaxDepth bounds chains for agents the registry does not limit.
const defaultMaxDepth = 4

func (c *Config) validateAgents() []error {
	var errs []error
	seen := map[string]int{}
	for i, a := range c.Agents {
		where := fmt.Sprintf("agents[%d]", i)
		if err := ValidateSPIFFEID(a.ID); err != nil {
			errs = append(errs, fmt.Errorf("%s.id: %w", where, err))
		}
		if j, dup := seen[a.ID]; dup {
			errs = append(errs, fmt.Errorf("%s.id: duplicate of agents[%d]", where, j))
		}
		seen[a.ID] = i
		if a.MaxDepth < 0 || a.MaxDepth > 8 {
			errs = append(errs, fmt.Errorf("%s.max_depth: %d is not between 1 and 8", where, a.MaxDepth))
		}
		if d := a.DefaultTask; d != nil {
			if len(d.Tools) == 0 {
				errs = append(errs, fmt.Errorf("%s.default_task.tools: at least one pattern is required", where))
			}
			for _, p := range d.Tools {
				if _, err := path.Match(p, ""); err != nil {
					errs = append(errs, fmt.Errorf("%s.default_task.tools: %q is malformed", where, p))
				}
			}
			if time.Duration(d.TTL) <= 0 {
				errs = append(errs, fmt.Errorf("%s.default_task.ttl: required (e.g. 8h)", where))
			}
			if d.MaxCalls < 0 {
				errs = append(errs, fmt.Errorf("%s.default_task.max_calls: must not be negative", where))
			}
		}
	}
	for i, s := range c.Servers {
		if s.Agent != "" {
			if err := ValidateSPIFFEID(s.Agent); err != nil {
				errs = append(errs, fmt.Errorf("servers[%d].agent: %w", i, err))
			}
		}
	}
	return errs
}

// agent returns the registry entry for id, if any.
func (c *Config) agent(id string) (AgentConfig, bool) {
	for _, a := range c.Agents {
		if a.ID == id {
			return a, true
		}
	}
	return AgentConfig{}, false
}
