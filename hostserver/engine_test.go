package hostserver_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/keyclaim/keyclaim/core"
	"github.com/keyclaim/keyclaim/hostserver"
)

// TestEnginesAgree sends the same requests to a server on the native engine and one on the wasm
// engine, each with its own store holding the same keys, and requires the same status and the
// same bytes.
func TestEnginesAgree(t *testing.T) {
	servers := map[string]*testServer{}
	for _, engine := range []string{"native", "wasm"} {
		ts := startServer(t, sqliteBackend, func(cfg *hostserver.Config) {
			cfg.Engine = engine
			cfg.MaxPairs = 20
			cfg.MaxTimeout = 500 * time.Millisecond
			cfg.DefaultTimeout = 100 * time.Millisecond
		})
		if got := ts.srv.Engine().Name(); got != engine {
			t.Fatalf("engine %s runs %s", engine, got)
		}
		ts.ok(uploadPath, bobToken, `{"one_time_keys":{"signed_curve25519:B":`+key("B")+`,"signed_curve25519:A":`+key("A")+`},"fallback_keys":{"signed_curve25519:F":"fb"}}`)
		servers[engine] = ts
	}
	requests := []struct{ path, query, body string }{
		{claimPath, "", claimBody(bob, "BOBDEV", "BOBPHONE", "NOSUCH")},
		{claimPath, "?timeout=5", `{"one_time_keys":{"` + bob + `":{"BOBDEV":"signed_curve25519"},"` + remoteUser + `":{"D":"x"},"@e:` + serverName + `":{}}}`},
		{claimPath, "", `{"one_time_keys":{"` + bob + `":{"BOBDEV":"signed_curve25519"}},"timeout":7}`},
		{claimPath, "", `{"one_time_keys":{}}`},
		{claimPath, "", `{"one_time_keys":{"` + bob + `":{"BOBDEV":"signed_curve25519"}},"timeout":-1}`},
		{claimPath, "?timeout=x", `{"one_time_keys":{}}`},
		{claimPath, "", `{"one_time_keys":{"bob":{}}}`},
		{claimPath, "", "{\"one_time_keys\":{\"\xff\":{}}}"},
		{claimPath, "", `{"one_time_keys":{"` + bob + `":{"BOBDEV":"a","BOBDEV":"a"}}}`},
		{claimPath, "", `[1]`},
		{claimPath, "", `{`},
		{claimPath, "", ``},
		{claimPath, "", `{"one_time_keys":{"` + bob + `":{"A":"a","B":"a","C":"a","D":"a","E":"a","F":"a","G":"a","H":"a","I":"a","J":"a","K":"a","L":"a","M":"a","N":"a","O":"a","P":"a","Q":"a","R":"a","S":"a","T":"a","U":"a"}}}`},
		{fedClaimPath, "", claimBody(bob, "BOBDEV", "NOSUCH")},
		{fedClaimPath, "", claimBody(remoteUser, "D")},
		{fedClaimPath, "", `{"one_time_keys":{"` + bob + `":{}},"timeout":"not a number"}`},
		{fedClaimPath, "", `{"one_time_keys":{"` + bob + `":{}},"timeout":-5}`},
		{fedClaimPath, "?timeout=x", `{"one_time_keys":{"` + bob + `":{}},"timeout":5000}`},
	}
	for _, r := range requests {
		native := servers["native"].post(r.path+r.query, aliceToken, r.body)
		wasm := servers["wasm"].post(r.path+r.query, aliceToken, r.body)
		if native.status != wasm.status || native.body != wasm.body {
			t.Errorf("%s%s %q:\n native %d %s\n wasm   %d %s", r.path, r.query, r.body, native.status, native.body, wasm.status, wasm.body)
		}
		if native.status == http.StatusInternalServerError {
			t.Errorf("%s %q: 500", r.path, r.body)
		}
	}
}

// TestClaimMetricsFromTally: keyclaim_device_claims_total counts remote devices from the tally
// completion kept (issue 13: the answer is not classified again), alike on both engines and in
// both answer shapes: a remote key is one_time_key, a remote device left out or {} is empty, a
// device of a failed server is failed; local devices are counted from the store.
func TestClaimMetricsFromTally(t *testing.T) {
	for _, engine := range []string{"native", "wasm"} {
		for _, ua := range []string{"", "nio"} {
			t.Run(engine+" "+ua, func(t *testing.T) {
				fed := &scriptedFederation{claims: map[core.ServerName]core.RemoteOutcome{
					"remote.test": {Status: 200, Body: []byte(`{"one_time_keys":{"@dave:remote.test":{"D1":{"signed_curve25519:K":"k"},"D2":{},"JUNK":{}},"@mallory:remote.test":{}}}`)},
					"down.test":   {Status: 500, Body: []byte(`{}`)},
				}}
				ts := startServer(t, sqliteBackend, func(cfg *hostserver.Config) { cfg.Engine, cfg.Federation = engine, fed })
				ts.ok(uploadPath, bobToken, `{"one_time_keys":{"signed_curve25519:A":`+key("A")+`},"fallback_keys":{"signed_curve25519:F":`+key("F")+`}}`)
				body := `{"one_time_keys":{"` + bob + `":{"BOBDEV":"signed_curve25519","BOBPHONE":"signed_curve25519"},"` +
					`@dave:remote.test":{"D1":"signed_curve25519","D2":"signed_curve25519","D3":"signed_curve25519"},"@x:down.test":{"X1":"signed_curve25519","X2":"signed_curve25519"}}}`
				for range 2 { // the second claim gets bob's fallback key
					if r := ts.claimAs(ua, aliceToken, body); r.status != http.StatusOK {
						t.Fatalf("claim: %d %s", r.status, r.body)
					}
				}
				m := ts.metrics()
				want := map[string]float64{
					hostserver.OutcomeOneTimeKey: 1 + 2, // bob's A; dave's D1 twice
					hostserver.OutcomeFallback:   1,     // bob's F
					hostserver.OutcomeEmpty:      2 + 4, // BOBPHONE twice; D2 and D3 twice
					hostserver.OutcomeFailed:     4,     // X1 and X2 twice
				}
				for outcome, n := range want {
					if got := m[`keyclaim_device_claims_total{outcome="`+outcome+`"}`]; got != n {
						t.Errorf("%s: %v, want %v", outcome, got, n)
					}
				}
			})
		}
	}
}
