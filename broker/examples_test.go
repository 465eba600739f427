package broker

import (
	"path/filepath"
	"testing"

	"github.com/mcpbroker/mcpbroker/policies"
)

// TestExampleConfigs loads every example configuration and its policies, so
// that the examples in the README cannot rot.
func TestExampleConfigs(t *testing.T) {
	files, _ := filepath.Glob("../examples/*/mcpbroker.yaml")
	if len(files) == 0 {
		t.Fatal("no example configs found")
	}
	for _, f := range files {
		t.Run(filepath.Base(filepath.Dir(f)), func(t *testing.T) {
			c, err := LoadConfig(f)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Validate(); err != nil {
				t.Fatal(err)
			}
			op, err := policies.ReadDir(c.Policies)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := policies.Compile(append(policies.Baseline(), op...)); err != nil {
				t.Fatal(err)
			}
		})
	}
}
