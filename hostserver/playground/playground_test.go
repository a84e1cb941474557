package playground

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/fstest"
)

func TestSite(t *testing.T) {
	site, err := Load(fstest.MapFS{
		"index.html":    {Data: []byte("<p>hi</p>")},
		"app.js":        {Data: []byte("x")},
		"style.css":     {Data: []byte("p{}")},
		"keyclaim.wasm": {Data: []byte("\x00asm")},
		"sw.js":         {Data: []byte("self")},
		".gitkeep":      {},
		"sub/x.js":      {Data: []byte("no")},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(site.Paths(), " "); got != "/ /app.js /index.html /keyclaim.wasm /style.css /sw.js" {
		t.Errorf("Paths() = %s", got)
	}
	serve := func(method, path string, header ...string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(method, path, nil)
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		w := httptest.NewRecorder()
		site.ServeHTTP(w, req)
		return w
	}
	for path, ct := range map[string]string{"/": "text/html; charset=utf-8", "/app.js": "text/javascript; charset=utf-8", "/sw.js": "text/javascript; charset=utf-8", "/style.css": "text/css; charset=utf-8", "/keyclaim.wasm": "application/wasm"} {
		w := serve(http.MethodGet, path)
		if w.Code != http.StatusOK || w.Header().Get("Content-Type") != ct || w.Header().Get("Cache-Control") != "no-cache" || w.Header().Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("GET %s: %d %v", path, w.Code, w.Header())
		}
	}
	if w := serve(http.MethodGet, "/"); w.Body.String() != "<p>hi</p>" {
		t.Errorf("GET /: %q", w.Body.String())
	}
	w := serve(http.MethodGet, "/app.js")
	etag := w.Header().Get("ETag")
	if !strings.HasPrefix(etag, `"`) || serve(http.MethodGet, "/index.html").Header().Get("ETag") == etag {
		t.Errorf("ETag %q", etag)
	}
	if w := serve(http.MethodGet, "/app.js", "If-None-Match", `"other", `+etag); w.Code != http.StatusNotModified || w.Body.Len() != 0 {
		t.Errorf("If-None-Match: %d", w.Code)
	}
	if w := serve(http.MethodGet, "/app.js", "If-None-Match", `"other"`); w.Code != http.StatusOK {
		t.Errorf("If-None-Match of another version: %d", w.Code)
	}
	if w := serve(http.MethodHead, "/app.js"); w.Code != http.StatusOK || w.Body.Len() != 0 || w.Header().Get("Content-Length") != "1" {
		t.Errorf("HEAD: %d %q %v", w.Code, w.Body.String(), w.Header())
	}
	for _, path := range []string{"/.gitkeep", "/sub/x.js", "/nope", "/index.html/"} {
		if w := serve(http.MethodGet, path); w.Code != http.StatusNotFound {
			t.Errorf("GET %s: %d", path, w.Code)
		}
	}
	if w := serve(http.MethodPost, "/"); w.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST /: %d", w.Code)
	}
}

func TestLoadWithoutIndex(t *testing.T) {
	if _, err := Load(fstest.MapFS{".gitkeep": {}}); err == nil {
		t.Fatal("a site without index.html loaded")
	}
}

func FuzzETagMatches(f *testing.F) {
	f.Add(`"abc"`, `"abc"`)
	f.Add(`W/"abc", "x"`, `"abc"`)
	f.Add(`*`, `"abc"`)
	f.Fuzz(func(t *testing.T, header, etag string) {
		got := etagMatches(header, etag)
		if header == etag && strings.TrimSpace(etag) == etag && !strings.Contains(etag, ",") && !got {
			t.Errorf("etagMatches(%q, %q) = false", header, etag)
		}
	})
}
