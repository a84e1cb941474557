package proxy_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyclaim/keyclaim/core"
	"github.com/keyclaim/keyclaim/hostserver"
	"github.com/keyclaim/keyclaim/hostserver/proxy"
)

// Proxy mode in front of a real keyclaim keys server running in legacy mode (spec v1.19: devices
// without a key are left out) must answer, byte for byte, what a keyclaim server in msc4072 mode
// answers for the same state.

const (
	ksName     = "hs1.test"
	ksAlice    = "@alice:hs1.test"
	ksBob      = "@bob:hs1.test"
	ksCarol    = "@carol:hs1.test"
	aliceTok   = "tok-alice"
	bobDevTok  = "tok-bob-dev"
	bobPhoTok  = "tok-bob-phone"
	bobTabTok  = "tok-bob-tablet"
	carolTok   = "tok-carol"
	uploadPath = "/_matrix/client/v3/keys/upload"
)

// startKeysServer starts a keyclaim keys server in mode with SQLite in a temporary directory and
// returns its base URL.
func startKeysServer(t *testing.T, mode core.Mode) string {
	t.Helper()
	dir := t.TempDir()
	tokens := map[string]map[string]string{
		aliceTok:  {"user_id": ksAlice, "device_id": "ALICEDEV"},
		bobDevTok: {"user_id": ksBob, "device_id": "BOBDEV"},
		bobPhoTok: {"user_id": ksBob, "device_id": "BOBPHONE"},
		bobTabTok: {"user_id": ksBob, "device_id": "BOBTAB"},
		carolTok:  {"user_id": ksCarol, "device_id": "CAROLDEV"},
	}
	data, err := json.Marshal(tokens)
	if err != nil {
		t.Fatal(err)
	}
	tokenFile := filepath.Join(dir, "tokens.json")
	if err := os.WriteFile(tokenFile, data, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := hostserver.DefaultConfig()
	cfg.ServerName = ksName
	cfg.Listen = "127.0.0.1:0"
	cfg.DB = "sqlite:" + filepath.Join(dir, "keys.db")
	cfg.Tokens = tokenFile
	cfg.Mode = string(mode)
	// No federation: remote users fail at once, with no network traffic, and no signing key is
	// written to the working directory.
	cfg.FederationEnabled = false
	cfg.Federation = hostserver.NoFederation{}
	cfg.SigningKey = filepath.Join(dir, "signing.key")
	cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	srv, err := hostserver.New(cfg)
	if err != nil {
		t.Fatalf("hostserver.New (%s): %v", mode, err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := srv.Start(ctx, ln); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		if err := srv.Shutdown(sctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return "http://" + ln.Addr().String()
}

// otk is a signed one-time key object as a client uploads it.
func otk(user, device, name string) string {
	return `{"key":"` + name + `","signatures":{"` + user + `":{"ed25519:` + device + `":"sig-` + name + `"}}}`
}

func TestLegacyUpstreamEqualsMSC4072(t *testing.T) {
	legacy := startKeysServer(t, core.ModeLegacy)
	complete := startKeysServer(t, core.ModeMSC4072)
	u, _ := url.Parse(legacy)
	p, err := proxy.New(proxy.Config{Upstream: u, ServerName: ksName})
	if err != nil {
		t.Fatal(err)
	}
	front := startHTTP(t, p)

	// The same state on both servers. BOBDEV: two batches of one-time keys and a fallback key;
	// BOBPHONE: only a fallback key; BOBTAB: one one-time key (exhausted after the first claim);
	// CAROLDEV: a one-time key of another algorithm only.
	uploads := []struct{ tok, body string }{
		{bobDevTok, `{"one_time_keys":{"signed_curve25519:M":` + otk(ksBob, "BOBDEV", "M") + `,"signed_curve25519:C":` + otk(ksBob, "BOBDEV", "C") + `}}`},
		{bobDevTok, `{"one_time_keys":{"signed_curve25519:A":` + otk(ksBob, "BOBDEV", "A") + `}}`},
		{bobDevTok, `{"fallback_keys":{"signed_curve25519:FB":{"fallback":true,"key":"fb-dev","signatures":{}}}}`},
		{bobPhoTok, `{"fallback_keys":{"signed_curve25519:FBP":{"fallback":true,"key":"fb-phone","signatures":{}}}}`},
		{bobTabTok, `{"one_time_keys":{"signed_curve25519:T1":` + otk(ksBob, "BOBTAB", "T1") + `}}`},
		{carolTok, `{"one_time_keys":{"curve25519:X":"plain-x"}}`},
	}
	for _, base := range []string{legacy, complete} {
		for _, up := range uploads {
			if r := send(t, http.MethodPost, base+uploadPath, "Bearer "+up.tok, up.body); r.status != http.StatusOK {
				t.Fatalf("upload to %s: %d %s", base, r.status, r.body)
			}
		}
	}

	everyone := `{"one_time_keys":{` +
		`"` + ksBob + `":{"BOBDEV":"signed_curve25519","BOBPHONE":"signed_curve25519","BOBTAB":"signed_curve25519","BOBGHOST":"signed_curve25519"},` +
		`"` + ksCarol + `":{"CAROLDEV":"signed_curve25519"},` +
		`"@nobody:hs1.test":{"X":"signed_curve25519"},` +
		`"@empty:hs1.test":{},` +
		`"@dave:remote.test":{"D1":"signed_curve25519"}},"timeout":2000}`
	steps := []struct {
		name, path, auth, body string
		claims                 bool   // the step hands out keys: the legacy server is not asked alone, which would change its state
		has                    string // a part of the answer, to show the state is what the step says
	}{
		{"first claim", proxy.ClaimPathV3, aliceTok, everyone, true, `"BOBTAB":{"signed_curve25519:T1":`},
		{"second claim: BOBTAB exhausted", proxy.ClaimPathV3, aliceTok, everyone, true, `"BOBTAB":{}`},
		{"third claim: BOBDEV's last one-time key", proxy.ClaimPathV3, aliceTok, everyone, true, `"BOBDEV":{"signed_curve25519:A":`},
		{"fourth claim: fallback keys only", proxy.ClaimPathR0, aliceTok, everyone, true, `"BOBDEV":{"signed_curve25519:FB":`},
		{"another algorithm", proxy.ClaimPathV3, aliceTok, `{"one_time_keys":{"` + ksCarol + `":{"CAROLDEV":"curve25519"},"` + ksBob + `":{"BOBDEV":"curve25519"}}}`, true, `"curve25519:X":"plain-x"`},
		{"nothing requested", proxy.ClaimPathV3, aliceTok, `{"one_time_keys":{}}`, false, `{"failures":{},"one_time_keys":{}}`},
		{"timeout from the query string", proxy.ClaimPathV3 + "?timeout=1500", aliceTok, `{"one_time_keys":{"` + ksBob + `":{"BOBTAB":"signed_curve25519"}}}`, true, `"BOBTAB":{}`},
		{"no token", proxy.ClaimPathV3, "", everyone, false, "M_MISSING_TOKEN"},
		{"unknown token", proxy.ClaimPathV3, "tok-nobody", everyone, false, "M_UNKNOWN_TOKEN"},
		{"malformed request", proxy.ClaimPathV3, aliceTok, `{"one_time_keys":{"bob":{}}}`, false, "M_INVALID_PARAM"},
		{"duplicate keys", proxy.ClaimPathV3, aliceTok, `{"one_time_keys":{"` + ksBob + `":{"A":"signed_curve25519","A":"signed_curve25519"}}}`, false, "M_BAD_JSON"},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			auth := ""
			if st.auth != "" {
				auth = "Bearer " + st.auth
			}
			// Where no key is handed out, the legacy server is also asked alone: the answers
			// that need no completion are the same without the proxy.
			var alone response
			if !st.claims {
				alone = send(t, http.MethodPost, legacy+st.path, auth, st.body)
			}
			got := send(t, http.MethodPost, front+st.path, auth, st.body)
			want := send(t, http.MethodPost, complete+st.path, auth, st.body)
			if got.status != want.status || got.body != want.body {
				t.Errorf("through the proxy in front of legacy:\n  %d %s\nmsc4072 server:\n  %d %s", got.status, got.body, want.status, want.body)
			}
			if g, w := got.header.Get("Content-Type"), want.header.Get("Content-Type"); g != w {
				t.Errorf("Content-Type %q, msc4072 server %q", g, w)
			}
			if !st.claims && (alone.status != want.status || alone.body != want.body) {
				t.Errorf("the legacy server alone answered %d %s", alone.status, alone.body)
			}
			if got.status == http.StatusOK {
				assertComplete(t, got.body)
			}
			if !strings.Contains(got.body, st.has) {
				t.Errorf("the answer lacks %s: %s", st.has, got.body)
			}
		})
	}

	// The legacy server really is legacy: on a fresh pair of servers, its own first answer
	// leaves out the devices the proxy fills in, and their users, none of whose devices has a
	// key (BRIEF 1, as Synapse).
	t.Run("legacy alone leaves devices out", func(t *testing.T) {
		fresh := startKeysServer(t, core.ModeLegacy)
		r := send(t, http.MethodPost, fresh+proxy.ClaimPathV3, "Bearer "+aliceTok, everyone)
		var answer struct {
			OneTimeKeys map[string]map[string]any `json:"one_time_keys"`
			Failures    map[string]any            `json:"failures"`
		}
		if err := json.Unmarshal([]byte(r.body), &answer); err != nil || r.status != http.StatusOK {
			t.Fatalf("got %d %s", r.status, r.body)
		}
		if len(answer.OneTimeKeys) != 0 || len(answer.Failures) != 1 || answer.Failures["remote.test"] == nil {
			t.Errorf("the legacy server answered %s, want none of its 4 local users (no device has a key) and remote.test failed", r.body)
		}
		u, _ := url.Parse(fresh)
		p, err := proxy.New(proxy.Config{Upstream: u, ServerName: ksName})
		if err != nil {
			t.Fatal(err)
		}
		r = send(t, http.MethodPost, startHTTP(t, p)+proxy.ClaimPathV3, "Bearer "+aliceTok, everyone)
		for _, dev := range []string{`"BOBDEV":{}`, `"BOBGHOST":{}`, `"CAROLDEV":{}`, `"@nobody:hs1.test":{"X":{}}`, `"@empty:hs1.test":{}`} {
			if !strings.Contains(r.body, dev) {
				t.Errorf("the completed answer lacks %s: %s", dev, r.body)
			}
		}
	})
}

// startHTTP serves h on 127.0.0.1 and returns its base URL.
func startHTTP(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "http://" + ln.Addr().String()
}
