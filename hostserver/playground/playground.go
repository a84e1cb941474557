// Package playground serves keyclaim's browser playground (web/): a static site whose logic is
// the engine's WebAssembly module, run in the page.
//
// The built site is embedded at build time: `make build` (through `make web`) builds web/dist
// and copies it into site/ here, which is gitignored except for a placeholder. Until then the
// package still compiles (so that go build, go vet and everything importing the keys server keep
// working on a fresh checkout) and [Embedded] reports the site missing; a server then answers
// the playground's paths with [NotBuiltMessage].
package playground

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"slices"
	"strings"
)

//go:embed all:site
var site embed.FS

// Index is the page served at "/".
const Index = "index.html"

// NotBuiltMessage is the error of a server whose binary was built without the site.
const NotBuiltMessage = "the playground is not built into this binary: run `make build` (it builds web/ and embeds it) and start the server again"

// Embedded returns the site embedded at build time, or ok false when the build did not copy it
// (no index.html).
func Embedded() (fsys fs.FS, ok bool) {
	sub, err := fs.Sub(site, "site")
	if err != nil {
		return nil, false
	}
	if _, err := fs.Stat(sub, Index); err != nil {
		return nil, false
	}
	return sub, true
}

// Site is a loaded site: the files of its top directory, kept in memory.
type Site struct {
	files map[string]file
}

type file struct {
	body        []byte
	contentType string
	etag        string
}

// ContentSecurityPolicy is the policy of every playground file: only its own files, the module
// compiled with WebAssembly (wasm-unsafe-eval, which allows no JavaScript eval), and requests
// only to its own origin (live mode's keys server).
const ContentSecurityPolicy = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; img-src 'self' data:; connect-src 'self'; worker-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Load reads the files of fsys's top directory (subdirectories and dot files are ignored). It
// fails when there is no index.html.
func Load(fsys fs.FS) (*Site, error) {
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return nil, fmt.Errorf("playground: %w", err)
	}
	s := &Site{files: map[string]file{}}
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || strings.HasPrefix(name, ".") {
			continue
		}
		body, err := fs.ReadFile(fsys, name)
		if err != nil {
			return nil, fmt.Errorf("playground: %w", err)
		}
		sum := sha256.Sum256(body)
		s.files[name] = file{body: body, contentType: contentType(name), etag: `"` + hex.EncodeToString(sum[:12]) + `"`}
	}
	if _, ok := s.files[Index]; !ok {
		return nil, fmt.Errorf("playground: no %s in the site", Index)
	}
	return s, nil
}

func contentType(name string) string {
	switch path.Ext(name) {
	case ".html":
		return "text/html; charset=utf-8"
	case ".js", ".mjs":
		return "text/javascript; charset=utf-8"
	case ".css":
		return "text/css; charset=utf-8"
	case ".wasm":
		return "application/wasm"
	case ".json", ".map":
		return "application/json"
	}
	if t := mime.TypeByExtension(path.Ext(name)); t != "" {
		return t
	}
	return "application/octet-stream"
}

// Paths returns the URL paths the site answers: "/" and "/" + each file name, sorted.
func (s *Site) Paths() []string {
	paths := []string{"/"}
	for name := range s.files {
		paths = append(paths, "/"+name)
	}
	slices.Sort(paths)
	return paths
}

// ServeHTTP answers GET and HEAD of the site's paths ("/" is index.html) with the file, its
// content type, a strong ETag (If-None-Match answers 304) and Cache-Control no-cache (the
// browser revalidates; the page's service worker keeps its own copy for offline use), plus the
// security headers. Any other path is 404.
func (s *Site) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimPrefix(r.URL.Path, "/")
	if name == "" {
		name = Index
	}
	f, ok := s.files[name]
	if !ok {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	h := w.Header()
	h.Set("Content-Type", f.contentType)
	h.Set("ETag", f.etag)
	h.Set("Cache-Control", "no-cache")
	SetSecurityHeaders(h)
	if match := r.Header.Get("If-None-Match"); match != "" && etagMatches(match, f.etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	h.Set("Content-Length", fmt.Sprint(len(f.body)))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_, _ = w.Write(f.body)
	}
}

// SetSecurityHeaders sets the headers every playground answer carries.
func SetSecurityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", ContentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
}

func etagMatches(header, etag string) bool {
	for _, part := range strings.Split(header, ",") {
		if p := strings.TrimSpace(part); p == etag || p == "*" || p == "W/"+etag {
			return true
		}
	}
	return false
}
