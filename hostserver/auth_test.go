package hostserver_test

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/keyclaim/keyclaim/hostserver"
)

func TestTokenFileReloadOnSIGHUP(t *testing.T) {
	// The server installs its SIGHUP handler in this process (Server.Start), so the test signals
	// itself.
	ts := startServer(t, sqliteBackend, nil)
	tokens := filepath.Join(ts.dir, "tokens.json")
	wantError(t, "new token before reload", ts.post(uploadPath, "tok-new", `{}`), http.StatusUnauthorized, "M_UNKNOWN_TOKEN")

	writeTokenFile(t, tokens, map[string]map[string]string{"tok-new": {"user_id": alice, "device_id": "NEWDEV"}})
	hup(t)
	waitFor(t, "the new token to work", func() bool { return ts.post(uploadPath, "tok-new", `{}`).status == http.StatusOK })
	wantError(t, "removed token", ts.post(uploadPath, aliceToken, `{}`), http.StatusUnauthorized, "M_UNKNOWN_TOKEN")

	// An invalid file keeps the tokens in force.
	if err := os.WriteFile(tokens, []byte(`{"tok-bad": {"user_id": "not a user"}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	hup(t)
	time.Sleep(200 * time.Millisecond)
	if r := ts.post(uploadPath, "tok-new", `{}`); r.status != http.StatusOK {
		t.Errorf("after an invalid reload the old token fails: %d %s", r.status, r.body)
	}
	wantError(t, "token of the invalid file", ts.post(uploadPath, "tok-bad", `{}`), http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
}

func hup(t *testing.T) {
	t.Helper()
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatalf("SIGHUP: %v", err)
	}
}

// waitFor polls cond for up to 5 seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestTokenFileAuth(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "tokens.json")
	writeTokenFile(t, path, map[string]map[string]string{"t1": {"user_id": alice, "device_id": "D1"}})
	a, err := hostserver.NewTokenFileAuth(path, serverName)
	if err != nil {
		t.Fatal(err)
	}
	id, err := a.Authenticate(t.Context(), "t1")
	if err != nil || id.User != alice || id.Device != "D1" {
		t.Fatalf("Authenticate(t1) = %+v, %v", id, err)
	}
	if _, err := a.Authenticate(t.Context(), "t2"); err == nil {
		t.Errorf("unknown token accepted")
	}

	bad := []struct{ name, content, wantErr string }{
		{"not JSON", `{`, "token file"},
		{"duplicate token", `{"t":{"user_id":"` + alice + `","device_id":"D"},"t":{"user_id":"` + bob + `","device_id":"D"}}`, "duplicate"},
		{"unknown field", `{"t":{"user_id":"` + alice + `","device_id":"D","admin":true}}`, "admin"},
		{"invalid user", `{"t":{"user_id":"alice","device_id":"D"}}`, "alice"},
		{"remote user", `{"t":{"user_id":"@alice:elsewhere.test","device_id":"D"}}`, "not local"},
		{"no device", `{"t":{"user_id":"` + alice + `"}}`, "device_id"},
		{"empty token", `{"":{"user_id":"` + alice + `","device_id":"D"}}`, "empty access token"},
	}
	for _, c := range bad {
		t.Run(c.name, func(t *testing.T) {
			if err := os.WriteFile(path, []byte(c.content), 0o600); err != nil {
				t.Fatal(err)
			}
			err := a.Reload()
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("Reload = %v, want an error mentioning %q", err, c.wantErr)
			}
			if _, err := a.Authenticate(t.Context(), "t1"); err != nil {
				t.Errorf("the previous tokens were dropped: %v", err)
			}
		})
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := a.Reload(); err == nil {
		t.Errorf("Reload of a missing file succeeded")
	}
	if _, err := a.Authenticate(t.Context(), "t1"); err != nil {
		t.Errorf("the previous tokens were dropped: %v", err)
	}
}

// fakeHomeserver is a stand-in homeserver for --homeserver: it answers
// /_matrix/client/v3/account/whoami from a token table and counts the calls.
type fakeHomeserver struct {
	*httptest.Server
	calls  atomic.Int64
	status atomic.Int64 // when non-zero, every answer has this status
}

func newFakeHomeserver(t *testing.T, tokens map[string]string) *fakeHomeserver {
	hs := &fakeHomeserver{}
	hs.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hs.calls.Add(1)
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Path != "/_matrix/client/v3/account/whoami" || r.Method != http.MethodGet {
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"errcode":"M_UNRECOGNIZED","error":"no"}`))
			return
		}
		if s := hs.status.Load(); s != 0 {
			w.WriteHeader(int(s))
			_, _ = w.Write([]byte(`{"errcode":"M_UNKNOWN","error":"broken"}`))
			return
		}
		token := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		answer, ok := tokens[token]
		if !ok {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"errcode":"M_UNKNOWN_TOKEN","error":"Unknown access token"}`))
			return
		}
		_, _ = w.Write([]byte(answer))
	}))
	t.Cleanup(hs.Close)
	return hs
}

func TestWhoamiDelegation(t *testing.T) {
	hs := newFakeHomeserver(t, map[string]string{
		"hs-bob":      `{"user_id":"` + bob + `","device_id":"BOBDEV"}`,
		"hs-appsvc":   `{"user_id":"` + carol + `"}`,
		"hs-foreign":  `{"user_id":"@x:elsewhere.test","device_id":"X"}`,
		"hs-garbled":  `{"user_id":`,
		"hs-bad-user": `{"user_id":"nobody","device_id":"X"}`,
	})
	ts := startServer(t, sqliteBackend, func(cfg *hostserver.Config) {
		cfg.Tokens = ""
		cfg.Homeserver = hs.URL
	})
	up := `{"one_time_keys":{"signed_curve25519:A":"a"}}`
	wantBody(t, "upload with a delegated token", ts.ok(uploadPath, "hs-bob", up), `{"one_time_key_counts":{"signed_curve25519":1}}`)
	calls := hs.calls.Load()
	wantBody(t, "cached", ts.ok(uploadPath, "hs-bob", `{}`), `{"one_time_key_counts":{"signed_curve25519":1}}`)
	if hs.calls.Load() != calls {
		t.Errorf("the second request asked the homeserver again (%d calls, want %d)", hs.calls.Load(), calls)
	}
	wantError(t, "unknown token", ts.post(uploadPath, "hs-nope", `{}`), http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
	wantError(t, "no device", ts.post(uploadPath, "hs-appsvc", `{}`), http.StatusForbidden, "M_FORBIDDEN")
	if r := ts.post(claimPath, "hs-appsvc", claimBody(bob, "BOBDEV")); r.status != http.StatusOK {
		t.Errorf("a token without device cannot claim: %d %s", r.status, r.body)
	}
	wantError(t, "user of another server", ts.post(uploadPath, "hs-foreign", `{}`), http.StatusBadGateway, "M_UNKNOWN")
	wantError(t, "garbled answer", ts.post(uploadPath, "hs-garbled", `{}`), http.StatusBadGateway, "M_UNKNOWN")
	wantError(t, "invalid user ID", ts.post(uploadPath, "hs-bad-user", `{}`), http.StatusBadGateway, "M_UNKNOWN")

	hs.status.Store(http.StatusInternalServerError)
	wantError(t, "homeserver error", ts.post(uploadPath, "hs-other", `{}`), http.StatusBadGateway, "M_UNKNOWN")
	// Cached identities still work while the homeserver is broken.
	if r := ts.post(uploadPath, "hs-bob", `{}`); r.status != http.StatusOK {
		t.Errorf("cached token while the homeserver fails: %d %s", r.status, r.body)
	}
	hs.Close()
	msg := wantError(t, "homeserver down", ts.post(uploadPath, "hs-other", `{}`), http.StatusServiceUnavailable, "M_UNKNOWN")
	if !strings.Contains(msg, "homeserver") {
		t.Errorf("the message does not say the homeserver is the problem: %q", msg)
	}
	wantError(t, "no token", ts.post(uploadPath, "", `{}`), http.StatusUnauthorized, "M_MISSING_TOKEN")
}
