package hostserver_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/keyclaim/keyclaim/hostserver"
	"github.com/keyclaim/keyclaim/hostserver/store"
)

// The HTTP surface: authentication, Matrix errors for everything, CORS, versions, health,
// metrics.

func TestAuthentication(t *testing.T) {
	ts := startServer(t, sqliteBackend, nil)
	for _, path := range []string{uploadPath, queryPath, claimPath} {
		t.Run(path, func(t *testing.T) {
			body := `{"one_time_keys":{},"device_keys":{}}`
			wantError(t, "no token", ts.post(path, "", body), http.StatusUnauthorized, "M_MISSING_TOKEN")
			wantError(t, "unknown token", ts.post(path, "nope", body), http.StatusUnauthorized, "M_UNKNOWN_TOKEN")

			req, _ := http.NewRequest(http.MethodPost, ts.base+path, strings.NewReader(body))
			req.Header.Set("Authorization", "Basic "+aliceToken)
			wantError(t, "not a Bearer token", ts.send(req), http.StatusUnauthorized, "M_MISSING_TOKEN")

			req, _ = http.NewRequest(http.MethodPost, ts.base+path+"?access_token="+aliceToken, strings.NewReader(body))
			if r := ts.send(req); r.status != http.StatusOK {
				t.Errorf("access_token query parameter: %d %s", r.status, r.body)
			}
			req, _ = http.NewRequest(http.MethodPost, ts.base+path+"?access_token=nope", strings.NewReader(body))
			wantError(t, "unknown token in the query", ts.send(req), http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
		})
	}
	// Authentication comes before the body is looked at.
	wantError(t, "no token, bad body", ts.post(claimPath, "", `{`), http.StatusUnauthorized, "M_MISSING_TOKEN")
}

func TestMatrixErrorsForEverything(t *testing.T) {
	ts := startServer(t, sqliteBackend, func(cfg *hostserver.Config) { cfg.MaxBodyBytes = 1024 })
	wantError(t, "unknown path", ts.do(http.MethodGet, "/nope", "", ""), http.StatusNotFound, "M_UNRECOGNIZED")
	wantError(t, "unknown Matrix path", ts.post("/_matrix/client/v3/keys/nope", aliceToken, `{}`), http.StatusNotFound, "M_UNRECOGNIZED")
	wantError(t, "unknown version", ts.post("/_matrix/client/v9/keys/claim", aliceToken, `{}`), http.StatusNotFound, "M_UNRECOGNIZED")
	wantError(t, "GET on claim", ts.do(http.MethodGet, claimPath, aliceToken, ""), http.StatusMethodNotAllowed, "M_UNRECOGNIZED")
	wantError(t, "PUT on upload", ts.do(http.MethodPut, uploadPath, aliceToken, "{}"), http.StatusMethodNotAllowed, "M_UNRECOGNIZED")
	wantError(t, "POST on versions", ts.post(versionsPath, "", "{}"), http.StatusMethodNotAllowed, "M_UNRECOGNIZED")
	wantError(t, "DELETE on federation claim", ts.do(http.MethodDelete, fedClaimPath, "", ""), http.StatusMethodNotAllowed, "M_UNRECOGNIZED")

	big := `{"one_time_keys":{},"pad":"` + strings.Repeat("x", 1024) + `"}`
	for _, path := range []string{uploadPath, queryPath, claimPath, fedClaimPath, fedQueryPath} {
		wantError(t, "too large "+path, ts.post(path, aliceToken, big), http.StatusRequestEntityTooLarge, "M_TOO_LARGE")
		// Without Content-Length (chunked), the server stops reading at the limit.
		req, _ := http.NewRequest(http.MethodPost, ts.base+path, io.MultiReader(strings.NewReader(big), strings.NewReader(strings.Repeat(" ", 8192))))
		req.ContentLength = -1
		req.Header.Set("Authorization", "Bearer "+aliceToken)
		wantError(t, "too large chunked "+path, ts.send(req), http.StatusRequestEntityTooLarge, "M_TOO_LARGE")
	}
	// Exactly at the limit is fine.
	exact := `{"one_time_keys":{},"pad":"` + strings.Repeat("x", 1024-len(`{"one_time_keys":{},"pad":""}`)) + `"}`
	if len(exact) != 1024 {
		t.Fatalf("exact body is %d bytes", len(exact))
	}
	ts.ok(claimPath, aliceToken, exact)
}

func TestCORS(t *testing.T) {
	ts := startServer(t, sqliteBackend, nil)
	check := func(what string, r response) {
		t.Helper()
		for h, want := range map[string]string{
			"Access-Control-Allow-Origin":  "*",
			"Access-Control-Allow-Methods": "GET, POST, PUT, DELETE, OPTIONS",
			"Access-Control-Allow-Headers": "X-Requested-With, Content-Type, Authorization",
		} {
			if got := r.header.Get(h); got != want {
				t.Errorf("%s: %s = %q, want %q", what, h, got, want)
			}
		}
	}
	for _, path := range []string{claimPath, uploadPath, queryPath, versionsPath, "/_matrix/client/v3/nope"} {
		req, _ := http.NewRequest(http.MethodOptions, ts.base+path, nil)
		req.Header.Set("Origin", "https://app.example")
		req.Header.Set("Access-Control-Request-Method", "POST")
		req.Header.Set("Access-Control-Request-Headers", "authorization, content-type")
		r := ts.send(req)
		if r.status != http.StatusNoContent && r.status != http.StatusOK {
			t.Errorf("OPTIONS %s: status %d %s", path, r.status, r.body)
		}
		check("OPTIONS "+path, r)
	}
	// OPTIONS runs no endpoint logic: nothing was claimed or needed a token.
	check("POST claim", ts.post(claimPath, aliceToken, `{"one_time_keys":{}}`))
	check("401", ts.post(claimPath, "", `{}`))
	check("GET versions", ts.do(http.MethodGet, versionsPath, "", ""))
}

func TestVersions(t *testing.T) {
	for _, c := range []struct {
		mode string
		want bool
	}{{"msc4072", true}, {"legacy", false}} {
		t.Run(c.mode, func(t *testing.T) {
			ts := startServer(t, sqliteBackend, func(cfg *hostserver.Config) { cfg.Mode = c.mode })
			r := ts.do(http.MethodGet, versionsPath, "", "")
			var v struct {
				Versions []string        `json:"versions"`
				Unstable map[string]bool `json:"unstable_features"`
			}
			if r.status != http.StatusOK || json.Unmarshal([]byte(r.body), &v) != nil {
				t.Fatalf("versions: %d %s", r.status, r.body)
			}
			for _, want := range []string{"v1.13", "v1.14", "v1.15", "v1.16", "v1.17", "v1.18", "v1.19"} {
				if !contains(v.Versions, want) {
					t.Errorf("versions lacks %s: %v", want, v.Versions)
				}
			}
			if got, ok := v.Unstable["org.matrix.msc4072"]; !ok || got != c.want {
				t.Errorf("unstable_features = %v, want org.matrix.msc4072 = %v", v.Unstable, c.want)
			}
		})
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func TestHealth(t *testing.T) {
	forEachStore(t, func(t *testing.T, b backend) {
		ts := startServer(t, b, nil)
		if r := ts.do(http.MethodGet, "/healthz", "", ""); r.status != http.StatusOK {
			t.Errorf("healthz: %d %s", r.status, r.body)
		}
		if r := ts.do(http.MethodGet, "/readyz", "", ""); r.status != http.StatusOK {
			t.Errorf("readyz: %d %s", r.status, r.body)
		}
	})
	t.Run("store down", func(t *testing.T) {
		fs := &faultyStore{err: errors.New("dial tcp 10.0.0.1:5432: secret-host unreachable")}
		ts := startServer(t, sqliteBackend, func(cfg *hostserver.Config) { cfg.Store = fs })
		if r := ts.do(http.MethodGet, "/healthz", "", ""); r.status != http.StatusOK {
			t.Errorf("healthz: %d %s", r.status, r.body)
		}
		msg := wantError(t, "readyz", ts.do(http.MethodGet, "/readyz", "", ""), http.StatusServiceUnavailable, "M_UNKNOWN")
		if strings.Contains(msg, "secret") {
			t.Errorf("readyz leaks the store error: %q", msg)
		}
	})
}

// faultyStore fails (or panics in) every operation.
type faultyStore struct {
	err   error
	panic bool
}

func (f *faultyStore) fail() error {
	if f.panic {
		panic("faultyStore: boom")
	}
	return f.err
}

func (f *faultyStore) Upload(context.Context, string, string, store.Upload) (store.Counts, error) {
	return nil, f.fail()
}
func (f *faultyStore) Counts(context.Context, string, string) (store.Counts, error) {
	return nil, f.fail()
}
func (f *faultyStore) QueryDevices(context.Context, map[string][]string) (map[string]map[string]json.RawMessage, error) {
	return nil, f.fail()
}
func (f *faultyStore) Claim(context.Context, []store.Want) ([]store.Claimed, error) {
	return nil, f.fail()
}
func (f *faultyStore) Close() error { return nil }

func TestStoreFailures(t *testing.T) {
	fs := &faultyStore{err: errors.New("pq: relation one_time_keys does not exist at secret-host")}
	ts := startServer(t, sqliteBackend, func(cfg *hostserver.Config) { cfg.Store = fs })
	for _, c := range []struct{ path, body, op string }{
		{uploadPath, `{"one_time_keys":{"a:b":"c"}}`, "upload"},
		{uploadPath, `{}`, "counts"},
		{queryPath, `{"device_keys":{"` + bob + `":[]}}`, "query"},
		{claimPath, claimBody(bob, "BOBDEV"), "claim"},
		{fedClaimPath, claimBody(bob, "BOBDEV"), "claim"},
		{fedQueryPath, `{"device_keys":{"` + bob + `":[]}}`, "query"},
	} {
		msg := wantError(t, c.path+" "+c.op, ts.post(c.path, aliceToken, c.body), http.StatusInternalServerError, "M_UNKNOWN")
		if strings.Contains(msg, "secret") || strings.Contains(msg, "relation") {
			t.Errorf("%s: the message leaks the store error: %q", c.path, msg)
		}
	}
	m := ts.metrics()
	for op, want := range map[string]float64{"upload": 1, "counts": 1, "query": 2, "claim": 2} {
		if got := m[`keyclaim_store_errors_total{op="`+op+`"}`]; got != want {
			t.Errorf("store errors %s = %v, want %v", op, got, want)
		}
	}
	// A claim that needs no store access still works.
	wantBody(t, "remote-only claim", ts.ok(claimPath, aliceToken, claimBody(remoteUser, "D")),
		`{"failures":{"remote.test":{"message":"federation is off on this server","status":503}},"one_time_keys":{}}`)
}

func TestPanicsAreRecovered(t *testing.T) {
	ts := startServer(t, sqliteBackend, func(cfg *hostserver.Config) { cfg.Store = &faultyStore{panic: true} })
	msg := wantError(t, "panic", ts.post(claimPath, aliceToken, claimBody(bob, "BOBDEV")), http.StatusInternalServerError, "M_UNKNOWN")
	if strings.Contains(msg, "boom") {
		t.Errorf("the message leaks the panic: %q", msg)
	}
	// The server is still serving.
	if r := ts.do(http.MethodGet, "/healthz", "", ""); r.status != http.StatusOK {
		t.Errorf("healthz after a panic: %d", r.status)
	}
}

func TestMetrics(t *testing.T) {
	forEachStore(t, func(t *testing.T, b backend) {
		ts := startServer(t, b, nil)
		ts.ok(uploadPath, bobToken, `{"one_time_keys":{"signed_curve25519:A":"a"},"fallback_keys":{"signed_curve25519:F":"f"}}`)
		// BOBDEV: one-time key, then fallback; BOBPHONE and NOSUCH: empty; the remote device: failed.
		ts.ok(claimPath, aliceToken, `{"one_time_keys":{"`+bob+`":{"BOBDEV":"signed_curve25519","BOBPHONE":"signed_curve25519"},"`+remoteUser+`":{"D":"signed_curve25519"}}}`)
		ts.ok(fedClaimPath, "", `{"one_time_keys":{"`+bob+`":{"BOBDEV":"signed_curve25519","NOSUCH":"signed_curve25519"}}}`)
		ts.post(claimPath, aliceToken, `{`)
		m := ts.metrics()
		for outcome, want := range map[string]float64{"one_time_key": 1, "fallback": 1, "empty": 2, "failed": 1} {
			if got := m[`keyclaim_device_claims_total{outcome="`+outcome+`"}`]; got != want {
				t.Errorf("claims %s = %v, want %v", outcome, got, want)
			}
		}
		for series, want := range map[string]float64{
			`keyclaim_http_request_duration_seconds_count{method="POST",route="/_matrix/client/v3/keys/claim",status="200"}`:          1,
			`keyclaim_http_request_duration_seconds_count{method="POST",route="/_matrix/client/v3/keys/claim",status="400"}`:          1,
			`keyclaim_http_request_duration_seconds_count{method="POST",route="/_matrix/federation/v1/user/keys/claim",status="200"}`: 1,
			`keyclaim_http_request_duration_seconds_count{method="POST",route="/_matrix/client/v3/keys/upload",status="200"}`:         1,
			`keyclaim_store_errors_total{op="claim"}`: 0,
		} {
			if got, ok := m[series]; !ok || got != want {
				t.Errorf("%s = %v (present %v), want %v", series, got, ok, want)
			}
		}
		ts.do(http.MethodGet, "/no/such/path", "", "")
		if got := ts.metrics()[`keyclaim_http_request_duration_seconds_count{method="GET",route="unmatched",status="404"}`]; got != 1 {
			t.Errorf("unmatched 404s = %v, want 1", got)
		}
		if _, ok := m["process_cpu_seconds_total"]; !ok {
			t.Errorf("process metrics missing")
		}
	})
}
