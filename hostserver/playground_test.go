package hostserver_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/keyclaim/keyclaim/hostserver"
	"github.com/keyclaim/keyclaim/hostserver/playground"
)

// The browser playground (issue 12): served at "/" only with --dev or --playground, live mode's
// tokens only with --dev, over loopback, to the page itself.

// testSite stands for a built web/dist.
var testSite = fstest.MapFS{
	"index.html":    {Data: []byte("<!doctype html><title>keyclaim playground</title>")},
	"app.js":        {Data: []byte("console.log(1)")},
	"keyclaim.wasm": {Data: []byte("\x00asm\x01\x00\x00\x00")},
	".gitkeep":      {Data: nil},
}

func get(ts *testServer, path string, header map[string]string) response {
	ts.t.Helper()
	req, err := http.NewRequest(http.MethodGet, ts.base+path, nil)
	if err != nil {
		ts.t.Fatal(err)
	}
	for k, v := range header {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	return ts.sendRaw(req)
}

var liveHeader = map[string]string{hostserver.PlaygroundLiveHeader: "live"}

func TestPlaygroundNotServedByDefault(t *testing.T) {
	ts := startServer(t, sqliteBackend, func(cfg *hostserver.Config) { cfg.PlaygroundFS = testSite })
	for _, path := range []string{"/", "/index.html", "/app.js", "/keyclaim.wasm"} {
		wantError(t, "GET "+path, get(ts, path, nil), http.StatusNotFound, "M_UNRECOGNIZED")
	}
	wantError(t, "live configuration", get(ts, hostserver.PlaygroundLivePath, liveHeader), http.StatusNotFound, "M_UNRECOGNIZED")
}

func TestPlaygroundServed(t *testing.T) {
	for _, flags := range []struct {
		name            string
		dev, playground bool
	}{{"--playground", false, true}, {"--dev", true, false}, {"--dev --playground", true, true}} {
		t.Run(flags.name, func(t *testing.T) {
			ts := startServer(t, sqliteBackend, func(cfg *hostserver.Config) {
				cfg.Dev, cfg.Playground, cfg.PlaygroundFS = flags.dev, flags.playground, testSite
			})
			r := get(ts, "/", nil)
			if r.status != http.StatusOK || r.body != string(testSite["index.html"].Data) {
				t.Fatalf("GET /: %d %q", r.status, r.body)
			}
			if ct := r.header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
				t.Errorf("GET /: Content-Type %q", ct)
			}
			if csp := r.header.Get("Content-Security-Policy"); csp != playground.ContentSecurityPolicy {
				t.Errorf("GET /: Content-Security-Policy %q", csp)
			}
			if r := get(ts, "/keyclaim.wasm", nil); r.status != http.StatusOK || r.header.Get("Content-Type") != "application/wasm" {
				t.Errorf("GET /keyclaim.wasm: %d %q", r.status, r.header.Get("Content-Type"))
			}
			if r := get(ts, "/.gitkeep", nil); r.status != http.StatusNotFound {
				t.Errorf("GET /.gitkeep: %d, want 404 (dot files are not served)", r.status)
			}
			// The Matrix API is still there, and unknown paths are still Matrix errors.
			wantError(t, "unknown path", get(ts, "/nope.js", nil), http.StatusNotFound, "M_UNRECOGNIZED")
			if r := get(ts, "/_matrix/client/versions", nil); r.status != http.StatusOK {
				t.Errorf("versions: %d", r.status)
			}
			live := get(ts, hostserver.PlaygroundLivePath, liveHeader)
			if !flags.dev {
				wantError(t, "live configuration without --dev", live, http.StatusNotFound, "M_UNRECOGNIZED")
				return
			}
			if live.status != http.StatusOK {
				t.Fatalf("live configuration: %d %s", live.status, live.body)
			}
			if cc := live.header.Get("Cache-Control"); cc != "no-store" {
				t.Errorf("live configuration: Cache-Control %q", cc)
			}
			var cfg struct {
				ServerName string `json:"server_name"`
				Mode       string `json:"mode"`
				Identities []struct {
					UserID      string `json:"user_id"`
					DeviceID    string `json:"device_id"`
					AccessToken string `json:"access_token"`
				} `json:"identities"`
			}
			if err := json.Unmarshal([]byte(live.body), &cfg); err != nil {
				t.Fatal(err)
			}
			if cfg.ServerName != serverName || cfg.Mode != "msc4072" || len(cfg.Identities) != len(testTokens) {
				t.Fatalf("live configuration: %s", live.body)
			}
			for _, id := range cfg.Identities {
				want := testTokens[id.AccessToken]
				if want == nil || want["user_id"] != id.UserID || want["device_id"] != id.DeviceID {
					t.Errorf("identity %+v is not the token file's", id)
				}
				// The tokens work.
				ts.ok(uploadPath, id.AccessToken, `{}`)
			}
		})
	}
}

func TestPlaygroundLiveRefusals(t *testing.T) {
	ts := startServer(t, sqliteBackend, func(cfg *hostserver.Config) { cfg.Dev, cfg.PlaygroundFS = true, testSite })
	with := func(extra map[string]string) map[string]string {
		h := map[string]string{hostserver.PlaygroundLiveHeader: "live"}
		for k, v := range extra {
			h[k] = v
		}
		return h
	}
	for _, c := range []struct {
		name   string
		header map[string]string
	}{
		{"no header", nil},
		{"wrong header value", map[string]string{hostserver.PlaygroundLiveHeader: "yes"}},
		{"another site", with(map[string]string{"Sec-Fetch-Site": "cross-site"})},
		{"a sibling site", with(map[string]string{"Sec-Fetch-Site": "same-site"})},
		{"a DNS-rebound name", with(map[string]string{"Host": "attacker.example:8008"})},
		{"a public IP as host", with(map[string]string{"Host": "203.0.113.7"})},
	} {
		r := get(ts, hostserver.PlaygroundLivePath, c.header)
		msg := wantError(t, c.name, r, http.StatusForbidden, "M_FORBIDDEN")
		if strings.Contains(r.body, "kc_") || strings.Contains(r.body, aliceToken) {
			t.Errorf("%s: a token leaked: %s", c.name, msg)
		}
	}
	for _, host := range []string{"localhost:8008", "LOCALHOST", "127.0.0.1:1", "[::1]:8008", "127.0.0.2"} {
		if r := get(ts, hostserver.PlaygroundLivePath, with(map[string]string{"Host": host, "Sec-Fetch-Site": "same-origin"})); r.status != http.StatusOK {
			t.Errorf("Host %s: %d %s", host, r.status, r.body)
		}
	}
}

func TestPlaygroundNotBuilt(t *testing.T) {
	ts := startServer(t, sqliteBackend, func(cfg *hostserver.Config) { cfg.Playground, cfg.PlaygroundFS = true, fstest.MapFS{".gitkeep": {}} })
	msg := wantError(t, "GET /", get(ts, "/", nil), http.StatusNotFound, "M_NOT_FOUND")
	if msg != playground.NotBuiltMessage {
		t.Errorf("message %q", msg)
	}
}

func TestPlaygroundNotInProxyMode(t *testing.T) {
	_, err := hostserver.LoadConfig([]string{"--playground", "--upstream", "http://127.0.0.1:1"}, func(string) (string, bool) { return "", false }, nil)
	if err == nil || !strings.Contains(err.Error(), "--playground") {
		t.Fatalf("err = %v", err)
	}
}
