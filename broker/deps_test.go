package broker

import (
	"os/exec"
	"strings"
	"testing"
)

// TestImportRules fails on a forbidden import (STYLE.md rule 1): leaf
// packages never import broker/…, and only broker/store imports bbolt.
func TestImportRules(t *testing.T) {
	const mod = "github.com/mcpbroker/mcpbroker/"
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}} {{join .Imports " "}}`, mod+"...").Output()
	if err != nil {
		t.Skipf("go list: %v", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		pkg, imports := f[0], f[1:]
		rel := strings.TrimPrefix(pkg, mod)
		leaf := strings.HasPrefix(rel, "agents") || strings.HasPrefix(rel, "tools") || strings.HasPrefix(rel, "policies")
		for _, imp := range imports {
			if leaf && strings.HasPrefix(imp, mod+"broker") {
				t.Errorf("%s imports %s: leaf packages never import broker/…", rel, imp)
			}
			if imp == "go.etcd.io/bbolt" && rel != "broker/store" {
				t.Errorf("%s imports bbolt: only broker/store may", rel)
			}
		}
	}
}
