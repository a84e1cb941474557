package core_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// The import boundaries of STYLE.md, checked by a test rather than by review: core imports the
// standard library only, and no I/O, network, clock or randomness; wasm imports core and the
// standard library; nothing imports hostserver from outside it.

var forbiddenInCore = map[string]string{
	"os":                "core does no I/O",
	"net/http":          "core does no I/O",
	"net":               "core does no I/O",
	"math/rand":         "core has no randomness",
	"math/rand/v2":      "core has no randomness",
	"crypto/rand":       "core has no randomness",
	"time":              "time comes in as an argument",
	"io/ioutil":         "core does no I/O",
	"syscall":           "core does no I/O",
	"unsafe":            "core is safe Go",
	"os/exec":           "core does no I/O",
	"path/filepath":     "core does no I/O",
	"runtime/cgo":       "core is pure Go",
	"encoding/gob":      "not needed",
	"plugin":            "core is pure Go",
	"log":               "core does no I/O",
	"log/slog":          "core does no I/O",
	"database/sql":      "core does no I/O",
	"net/http/httptest": "core does no I/O",
}

func isStdlib(path string) bool {
	first, _, _ := strings.Cut(path, "/")
	return !strings.Contains(first, ".")
}

type goFile struct {
	path string
	file *ast.File
}

func parseDir(t *testing.T, dir string, tests bool) []goFile {
	t.Helper()
	var out []goFile
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			name := d.Name()
			if p != dir && (name == "testdata" || name == "node_modules" || strings.HasPrefix(name, ".") || name == "target") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(p, ".go") || (!tests && strings.HasSuffix(p, "_test.go")) {
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), p, nil, parser.ImportsOnly|parser.ParseComments)
		if err != nil {
			return err
		}
		if !tests {
			// Parse fully to find calls.
			f, err = parser.ParseFile(token.NewFileSet(), p, nil, 0)
			if err != nil {
				return err
			}
		}
		out = append(out, goFile{p, f})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func imports(f *ast.File) []string {
	var out []string
	for _, imp := range f.Imports {
		p, _ := strconv.Unquote(imp.Path.Value)
		out = append(out, p)
	}
	return out
}

func TestCoreImportsStandardLibraryOnly(t *testing.T) {
	files := parseDir(t, ".", false)
	if len(files) == 0 {
		t.Fatal("no Go files found in core")
	}
	for _, f := range files {
		for _, imp := range imports(f.file) {
			if !isStdlib(imp) {
				t.Errorf("%s imports %q: core imports the standard library only", f.path, imp)
			}
			if why, bad := forbiddenInCore[imp]; bad {
				t.Errorf("%s imports %q: %s", f.path, imp, why)
			}
		}
		ast.Inspect(f.file, func(n ast.Node) bool {
			sel, ok := n.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			if x, ok := sel.X.(*ast.Ident); ok && x.Name == "time" && (sel.Sel.Name == "Now" || sel.Sel.Name == "Since" || sel.Sel.Name == "Until") {
				t.Errorf("%s calls time.%s: time comes in as an argument", f.path, sel.Sel.Name)
			}
			return true
		})
	}
}

func TestWasmImportsCoreOnly(t *testing.T) {
	if _, err := os.Stat("../wasm"); err != nil {
		t.Fatalf("wasm/ is missing: %v", err)
	}
	for _, f := range parseDir(t, "../wasm", false) {
		for _, imp := range imports(f.file) {
			if !isStdlib(imp) && imp != "github.com/keyclaim/keyclaim/core" {
				t.Errorf("%s imports %q: wasm imports core and the standard library only", f.path, imp)
			}
		}
	}
}

func TestNothingImportsHostserver(t *testing.T) {
	for _, f := range parseDir(t, "..", true) {
		if strings.HasPrefix(filepath.ToSlash(f.path), "../hostserver/") || strings.HasPrefix(filepath.ToSlash(f.path), "../cmd/") || strings.HasPrefix(filepath.ToSlash(f.path), "../bench/") {
			continue
		}
		for _, imp := range imports(f.file) {
			if strings.HasPrefix(imp, "github.com/keyclaim/keyclaim/hostserver") {
				t.Errorf("%s imports %q: only the server's own command and tools may import hostserver", f.path, imp)
			}
		}
	}
}
