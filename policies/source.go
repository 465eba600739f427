package policies

import (
	"embed"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Source is the text of one policy file. Name is the file name; it appears in
// every error position (file:line:col) that Compile reports.
type Source struct {
	Name string
	Text []byte
}

//go:embed broker.cedarschema
var schemaText []byte

//go:embed baseline/*.cedar
var baselineFS embed.FS

//go:embed demo/*.cedar
var demoFS embed.FS

// SchemaText returns a copy of the embedded Cedar schema (broker.cedarschema).
func SchemaText() []byte { return slices.Clone(schemaText) }

// Baseline returns the embedded baseline policies (policies/baseline/*.cedar),
// sorted by name. They hold invariants that always load and never permit anything.
func Baseline() []Source { return mustEmbedded(baselineFS, "baseline") }

// Demo returns the embedded policies for the built-in demo servers
// (policies/demo/*.cedar), sorted by name.
func Demo() []Source { return mustEmbedded(demoFS, "demo") }

func mustEmbedded(fsys embed.FS, dir string) []Source {
	srcs, err := readFS(fsys, dir)
	if err != nil {
		// The files are compiled into the binary; a failure here is a build defect.
		panic(fmt.Sprintf("policies: embedded %s: %v", dir, err))
	}
	return srcs
}

// ReadDir returns every *.cedar file directly in dir (not recursive), sorted by
// name. Names are "<dir>/<file>" as given. It fails if dir cannot be read or holds
// no *.cedar file (ErrNoSources).
func ReadDir(dir string) ([]Source, error) {
	srcs, err := readFS(os.DirFS(dir), ".")
	if err != nil {
		return nil, fmt.Errorf("read policy dir %s: %w", dir, err)
	}
	for i := range srcs {
		srcs[i].Name = filepath.Join(dir, srcs[i].Name)
	}
	return srcs, nil
}

func readFS(fsys fs.FS, dir string) ([]Source, error) {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, err
	}
	var srcs []Source
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".cedar") {
			continue
		}
		name := e.Name()
		if dir != "." {
			name = dir + "/" + name
		}
		text, err := fs.ReadFile(fsys, name)
		if err != nil {
			return nil, err
		}
		srcs = append(srcs, Source{Name: name, Text: text})
	}
	if len(srcs) == 0 {
		return nil, ErrNoSources
	}
	slices.SortFunc(srcs, func(a, b Source) int { return strings.Compare(a.Name, b.Name) })
	return srcs, nil
}

// LoadDir compiles base (typically Baseline(), plus Demo() in demo mode)
// together with every *.cedar file in dir. It is what start-up, reload and the
// CLI use, so that all three accept exactly the same sets.
func LoadDir(dir string, base ...Source) (*Set, error) {
	srcs, err := ReadDir(dir)
	if err != nil {
		return nil, err
	}
	return Compile(append(slices.Clip(base), srcs...))
}
