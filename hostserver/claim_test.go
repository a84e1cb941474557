package hostserver_test

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyclaim/keyclaim/core"
	"github.com/keyclaim/keyclaim/hostserver"
)

// BRIEF sections 2, 3, 4 and 5 over HTTP.

func TestClaimSelectionOrder(t *testing.T) {
	// BRIEF section 3: the oldest one-time key by upload batch, ties broken by key ID; then the
	// fallback key, again and again; never a one-time key twice.
	forEachStore(t, func(t *testing.T, b backend) {
		ts := startServer(t, b, nil)
		ts.ok(uploadPath, bobToken, `{"one_time_keys":{"signed_curve25519:M":`+key("M")+`,"signed_curve25519:C":`+key("C")+`}}`)
		ts.ok(uploadPath, bobToken, `{"one_time_keys":{"signed_curve25519:A":`+key("A")+`,"signed_curve25519:Z":`+key("Z")+`}}`)
		ts.ok(uploadPath, bobToken, `{"fallback_keys":{"signed_curve25519:FB":"fallback-key"}}`)
		for _, want := range []string{"C", "M", "A", "Z"} {
			wantBody(t, "claim "+want, ts.ok(claimPath, aliceToken, claimBody(bob, "BOBDEV")),
				`{"failures":{},"one_time_keys":{"`+bob+`":{"BOBDEV":{"signed_curve25519:`+want+`":`+key(want)+`}}}}`)
		}
		for i := range 2 {
			wantBody(t, "fallback "+strconv.Itoa(i), ts.ok(claimPath, aliceToken, claimBody(bob, "BOBDEV")),
				`{"failures":{},"one_time_keys":{"`+bob+`":{"BOBDEV":{"signed_curve25519:FB":"fallback-key"}}}}`)
		}
		// Another algorithm has nothing.
		wantBody(t, "other algorithm", ts.ok(claimPath, aliceToken, `{"one_time_keys":{"`+bob+`":{"BOBDEV":"curve25519"}}}`),
			`{"failures":{},"one_time_keys":{"`+bob+`":{"BOBDEV":{}}}}`)
	})
}

func TestClaimCompleteAnswers(t *testing.T) {
	// BRIEF sections 2 and 4: every requested device answered; exhausted and unknown devices are
	// {} in msc4072 mode and absent in legacy mode, where a user none of whose devices has a key
	// (or asked with an empty device map) is left out too, as Synapse does (BRIEF 1, 2); an
	// empty device map asks nobody; remote users (no federation yet) are failures of their
	// server only; our own server is never in failures; nothing is null.
	req := `{"one_time_keys":{` +
		`"` + bob + `":{"BOBDEV":"signed_curve25519","BOBPHONE":"signed_curve25519","NOSUCHDEV":"signed_curve25519"},` +
		`"` + carol + `":{"CAROLDEV":"signed_curve25519"},` +
		`"@nobody:` + serverName + `":{"X":"signed_curve25519"},` +
		`"@empty:` + serverName + `":{},` +
		`"` + remoteUser + `":{"DAVEDEV":"signed_curve25519"},` +
		`"@erin:remote.test":{"E1":"signed_curve25519","E2":"signed_curve25519"},` +
		`"@frank:other.test":{}` +
		`},"timeout":5000}`
	cases := []struct {
		mode string
		want string
	}{
		{"msc4072", `{"failures":{"remote.test":{"message":"federation is off on this server","status":503}},"one_time_keys":{` +
			`"` + bob + `":{"BOBDEV":{"signed_curve25519:A":` + key("A") + `},"BOBPHONE":{},"NOSUCHDEV":{}},` +
			`"` + carol + `":{"CAROLDEV":{}},` +
			`"@empty:` + serverName + `":{},` +
			`"@frank:other.test":{},` +
			`"@nobody:` + serverName + `":{"X":{}}}}`},
		{"legacy", `{"failures":{"remote.test":{"message":"federation is off on this server","status":503}},"one_time_keys":{` +
			`"` + bob + `":{"BOBDEV":{"signed_curve25519:A":` + key("A") + `}}}}`},
	}
	forEachStore(t, func(t *testing.T, b backend) {
		for _, c := range cases {
			t.Run(c.mode, func(t *testing.T) {
				ts := startServer(t, b, func(cfg *hostserver.Config) { cfg.Mode = c.mode })
				ts.ok(uploadPath, bobToken, `{"one_time_keys":{"signed_curve25519:A":`+key("A")+`}}`)
				ts.ok(uploadPath, carolToken, `{"one_time_keys":{"curve25519:A":"other-algorithm"}}`)
				got := ts.ok(claimPath, aliceToken, req)
				wantBody(t, "claim", got, c.want)
				if strings.Contains(got, "null") {
					t.Errorf("null in the answer: %s", got)
				}
				if strings.Contains(got, `"failures":{"`+serverName) {
					t.Errorf("our own server in failures: %s", got)
				}
			})
		}
		t.Run("empty request", func(t *testing.T) {
			ts := startServer(t, b, nil)
			wantBody(t, "claim", ts.ok(claimPath, aliceToken, `{"one_time_keys":{}}`), `{"failures":{},"one_time_keys":{}}`)
		})
		t.Run("r0 path", func(t *testing.T) {
			ts := startServer(t, b, nil)
			wantBody(t, "claim", ts.ok("/_matrix/client/r0/keys/claim", aliceToken, claimBody(bob, "BOBDEV")),
				`{"failures":{},"one_time_keys":{"`+bob+`":{"BOBDEV":{}}}}`)
		})
	})
}

// slowFederation never answers before the fan-out's deadline; it records the time it waited.
type slowFederation struct {
	mu     sync.Mutex
	waited []time.Duration
	calls  int
}

func (f *slowFederation) ClaimKeys(ctx context.Context, _ core.ServerName, _ []byte) core.RemoteOutcome {
	start := time.Now()
	<-ctx.Done()
	f.mu.Lock()
	f.waited = append(f.waited, time.Since(start))
	f.calls++
	f.mu.Unlock()
	time.Sleep(50 * time.Millisecond) // answer late: the fan-out has given up already
	return core.RemoteOutcome{Failure: &core.Failure{Status: 500, Message: "late"}}
}

func (f *slowFederation) QueryKeys(ctx context.Context, s core.ServerName, b []byte) core.RemoteOutcome {
	return f.ClaimKeys(ctx, s, b)
}

func TestClaimTimeout(t *testing.T) {
	// BRIEF section 2: the timeout comes from the body, else from ?timeout=, else the default;
	// it is clamped to --max-timeout and bounds the whole federation fan-out.
	fed := &slowFederation{}
	ts := startServer(t, sqliteBackend, func(cfg *hostserver.Config) {
		cfg.Federation = fed
		cfg.DefaultTimeout = 120 * time.Millisecond
		cfg.MaxTimeout = 300 * time.Millisecond
	})
	remote := `"` + remoteUser + `":{"DAVEDEV":"signed_curve25519"},"@erin:other.test":{"E":"signed_curve25519"}`
	cases := []struct {
		name, query, body string
		wantMS            int
	}{
		{"from the body", "", `{"one_time_keys":{` + remote + `},"timeout":60}`, 60},
		{"from the query string", "?timeout=80", `{"one_time_keys":{` + remote + `}}`, 80},
		{"body wins over the query string", "?timeout=250", `{"one_time_keys":{` + remote + `},"timeout":40}`, 40},
		{"null in the body falls back to the query string", "?timeout=70", `{"one_time_keys":{` + remote + `},"timeout":null}`, 70},
		{"default", "", `{"one_time_keys":{` + remote + `}}`, 120},
		{"clamped", "", `{"one_time_keys":{` + remote + `},"timeout":100000}`, 300},
		{"zero", "", `{"one_time_keys":{` + remote + `},"timeout":0}`, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			start := time.Now()
			got := ts.ok(claimPath+c.query, aliceToken, c.body)
			elapsed := time.Since(start)
			msg := func(server string) string {
				return `{"message":"no answer from ` + server + ` within the timeout of ` + strconv.Itoa(c.wantMS) + ` ms","status":504}`
			}
			wantBody(t, "claim", got, `{"failures":{"other.test":`+msg("other.test")+`,"remote.test":`+msg("remote.test")+`},"one_time_keys":{}}`)
			if elapsed < time.Duration(c.wantMS)*time.Millisecond {
				t.Errorf("answered after %s, before the timeout of %d ms", elapsed, c.wantMS)
			}
			if elapsed > time.Duration(c.wantMS)*time.Millisecond+2*time.Second {
				t.Errorf("answered after %s, long after the timeout of %d ms", elapsed, c.wantMS)
			}
		})
	}
}

// scriptedFederation answers each remote server with a fixed outcome and records the bodies
// it was sent.
type scriptedFederation struct {
	claims  map[core.ServerName]core.RemoteOutcome
	queries map[core.ServerName]core.RemoteOutcome
	mu      sync.Mutex
	sent    map[core.ServerName]string
}

func (f *scriptedFederation) record(s core.ServerName, body []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.sent == nil {
		f.sent = map[core.ServerName]string{}
	}
	f.sent[s] = string(body)
}

func (f *scriptedFederation) ClaimKeys(_ context.Context, s core.ServerName, body []byte) core.RemoteOutcome {
	f.record(s, body)
	return f.claims[s]
}

func (f *scriptedFederation) QueryKeys(_ context.Context, s core.ServerName, body []byte) core.RemoteOutcome {
	f.record(s, body)
	return f.queries[s]
}

func TestClaimRemoteAnswersAreNotTrusted(t *testing.T) {
	// BRIEF section 4 through the Federation hook: the engine walks the request, not the answer.
	fed := &scriptedFederation{claims: map[core.ServerName]core.RemoteOutcome{
		"remote.test": {Status: 200, Body: []byte(`{"one_time_keys":{` +
			`"@dave:remote.test":{"D1":{"signed_curve25519:K2":"k2","signed_curve25519:K1":{"key":"k1"},"curve25519:X":"x"},"UNASKED":{"signed_curve25519:U":"u"}},` +
			`"@mallory:remote.test":{"M":{"signed_curve25519:M":"m"}},` +
			`"` + bob + `":{"BOBDEV":{"signed_curve25519:EVIL":"evil"}}}}`)},
		"down.test":  {Status: 502, Body: []byte(`{"errcode":"M_UNKNOWN","error":"upstream broke"}`)},
		"weird.test": {Status: 200, Body: []byte(`[1,2]`)},
	}}
	ts := startServer(t, sqliteBackend, func(cfg *hostserver.Config) { cfg.Federation = fed })
	got := ts.ok(claimPath, aliceToken, `{"one_time_keys":{`+
		`"@dave:remote.test":{"D1":"signed_curve25519","D2":"signed_curve25519"},`+
		`"@gone:down.test":{"G":"signed_curve25519"},`+
		`"@w:weird.test":{"W":"signed_curve25519"},`+
		`"`+bob+`":{"BOBDEV":"signed_curve25519"}}}`)
	wantBody(t, "claim", got, `{"failures":{`+
		`"down.test":{"errcode":"M_UNKNOWN","message":"upstream broke","status":502},`+
		`"weird.test":{"message":"the remote answer is not a JSON object","status":502}},`+
		`"one_time_keys":{"`+bob+`":{"BOBDEV":{}},"@dave:remote.test":{"D1":{"signed_curve25519:K1":{"key":"k1"}},"D2":{}}}}`)
	wantBody(t, "federation body sent", fed.sent["remote.test"], `{"one_time_keys":{"@dave:remote.test":{"D1":"signed_curve25519","D2":"signed_curve25519"}}}`)

	// The outcomes of remote devices are counted too.
	m := ts.metrics()
	for outcome, want := range map[string]float64{"one_time_key": 1, "empty": 2, "failed": 2, "fallback": 0} {
		if got := m[`keyclaim_device_claims_total{outcome="`+outcome+`"}`]; got != want {
			t.Errorf("claims %s = %v, want %v", outcome, got, want)
		}
	}
}

func TestClaimRejects(t *testing.T) {
	// BRIEF section 2: every malformed request gets its errcode and status.
	ts := startServer(t, sqliteBackend, func(cfg *hostserver.Config) {
		cfg.MaxPairs = 3
		cfg.MaxBodyBytes = 4096
	})
	longUser := "@" + strings.Repeat("a", 255-len(":"+serverName)) + ":" + serverName // 256 bytes
	cases := []struct {
		name, query, body string
		status            int
		errcode           string
	}{
		{"empty body", "", ``, 400, "M_NOT_JSON"},
		{"not JSON", "", `{"one_time_keys":`, 400, "M_NOT_JSON"},
		{"trailing garbage", "", `{"one_time_keys":{}} {}`, 400, "M_NOT_JSON"},
		{"invalid UTF-8", "", "{\"one_time_keys\":{\"@a:" + serverName + "\":{\"D\":\"\xc3\x28\"}}}", 400, "M_NOT_JSON"},
		{"lone surrogate escape", "", `{"one_time_keys":{"@a:` + serverName + `":{"D":"\ud800"}}}`, 400, "M_NOT_JSON"},
		{"array", "", `[]`, 400, "M_BAD_JSON"},
		{"string", "", `"x"`, 400, "M_BAD_JSON"},
		{"missing one_time_keys", "", `{"timeout":10}`, 400, "M_BAD_JSON"},
		{"one_time_keys null", "", `{"one_time_keys":null}`, 400, "M_BAD_JSON"},
		{"one_time_keys an array", "", `{"one_time_keys":[]}`, 400, "M_BAD_JSON"},
		{"device map not an object", "", `{"one_time_keys":{"` + bob + `":["BOBDEV"]}}`, 400, "M_BAD_JSON"},
		{"algorithm not a string", "", `{"one_time_keys":{"` + bob + `":{"BOBDEV":1}}}`, 400, "M_BAD_JSON"},
		{"duplicate user", "", `{"one_time_keys":{"` + bob + `":{},"` + bob + `":{}}}`, 400, "M_BAD_JSON"},
		{"duplicate device", "", `{"one_time_keys":{"` + bob + `":{"D":"a","D":"a"}}}`, 400, "M_BAD_JSON"},
		{"duplicate one_time_keys", "", `{"one_time_keys":{},"one_time_keys":{}}`, 400, "M_BAD_JSON"},
		{"user ID without sigil", "", `{"one_time_keys":{"bob:` + serverName + `":{}}}`, 400, "M_INVALID_PARAM"},
		{"user ID without server", "", `{"one_time_keys":{"@bob":{}}}`, 400, "M_INVALID_PARAM"},
		{"user ID with a bad server name", "", `{"one_time_keys":{"@bob:bad_host":{}}}`, 400, "M_INVALID_PARAM"},
		{"user ID over 255 bytes", "", `{"one_time_keys":{"` + longUser + `":{}}}`, 400, "M_INVALID_PARAM"},
		{"empty device ID", "", `{"one_time_keys":{"` + bob + `":{"":"signed_curve25519"}}}`, 400, "M_INVALID_PARAM"},
		{"empty algorithm", "", `{"one_time_keys":{"` + bob + `":{"D":""}}}`, 400, "M_INVALID_PARAM"},
		{"negative timeout", "", `{"one_time_keys":{},"timeout":-1}`, 400, "M_INVALID_PARAM"},
		{"fractional timeout", "", `{"one_time_keys":{},"timeout":1.5}`, 400, "M_INVALID_PARAM"},
		{"string timeout", "", `{"one_time_keys":{},"timeout":"10"}`, 400, "M_INVALID_PARAM"},
		{"bad query timeout", "?timeout=abc", `{"one_time_keys":{}}`, 400, "M_INVALID_PARAM"},
		{"negative query timeout", "?timeout=-5", `{"one_time_keys":{}}`, 400, "M_INVALID_PARAM"},
		{"too many pairs", "", `{"one_time_keys":{"` + bob + `":{"A":"a","B":"a"},"` + carol + `":{"C":"a","D":"a"}}}`, 400, "M_INVALID_PARAM"},
		{"body too large", "", `{"one_time_keys":{},"pad":"` + strings.Repeat("x", 4096) + `"}`, 413, "M_TOO_LARGE"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			wantError(t, c.name, ts.post(claimPath+c.query, aliceToken, c.body), c.status, c.errcode)
		})
	}
	// Historical localparts are accepted, even the empty one; at the pair limit is fine.
	wantBody(t, "historical and empty localparts", ts.ok(claimPath, aliceToken, `{"one_time_keys":{"@:`+serverName+`":{"A":"a"},"@Ünïcode/x:`+serverName+`":{"B":"b"},"`+bob+`":{"C":"c"}}}`),
		`{"failures":{},"one_time_keys":{"@:`+serverName+`":{"A":{}},"`+bob+`":{"C":{}},"@Ünïcode/x:`+serverName+`":{"B":{}}}}`)
}

// TestClaimUndialablePort: user IDs on a server name that the grammar allows but no connection
// can be made to (a port of 0 or over 65535) are valid; that server is a failure of the request,
// reported in failures, and everyone else is answered.
func TestClaimUndialablePort(t *testing.T) {
	ts := startServer(t, sqliteBackend, func(cfg *hostserver.Config) {
		cfg.Federation = nil // the real federation client: discovery decides
	})
	body := `{"one_time_keys":{"` + bob + `":{"BOBDEV":"signed_curve25519"},"@x:hs2.test:99999":{"X1":"signed_curve25519"},"@y:hs3.test:0":{"Y1":"signed_curve25519"}},"timeout":2000}`
	wantBody(t, "claim", ts.ok(claimPath, aliceToken, body),
		`{"failures":{"hs2.test:99999":{"message":"could not reach hs2.test:99999: its port 99999 is outside 1-65535","status":503},`+
			`"hs3.test:0":{"message":"could not reach hs3.test:0: its port 0 is outside 1-65535","status":503}},`+
			`"one_time_keys":{"`+bob+`":{"BOBDEV":{}}}}`)
}

func TestFederationClaim(t *testing.T) {
	// BRIEF section 5: local users only, answered as in section 3, without failures.
	forEachStore(t, func(t *testing.T, b backend) {
		for _, mode := range []string{"msc4072", "legacy"} {
			t.Run(mode, func(t *testing.T) {
				ts := startServer(t, b, func(cfg *hostserver.Config) { cfg.FederationAnswers = mode })
				ts.ok(uploadPath, bobToken, `{"one_time_keys":{"signed_curve25519:A":`+key("A")+`}}`)
				body := `{"one_time_keys":{"` + bob + `":{"BOBDEV":"signed_curve25519","BOBPHONE":"signed_curve25519"},"` + carol + `":{}}}`
				want := `{"one_time_keys":{"` + bob + `":{"BOBDEV":{"signed_curve25519:A":` + key("A") + `},"BOBPHONE":{}},"` + carol + `":{}}}`
				if mode == "legacy" {
					want = `{"one_time_keys":{"` + bob + `":{"BOBDEV":{"signed_curve25519:A":` + key("A") + `}}}}`
				}
				// No access token: the harness signs federation requests with X-Matrix as origin.test.
				wantBody(t, "federation claim", ts.ok(fedClaimPath, "", body), want)

				r := ts.post(fedClaimPath, "", `{"one_time_keys":{"`+bob+`":{"BOBDEV":"signed_curve25519"},"`+remoteUser+`":{"D":"signed_curve25519"}}}`)
				msg := wantError(t, "non-local user", r, http.StatusBadRequest, "M_INVALID_PARAM")
				if !strings.Contains(msg, remoteUser) {
					t.Errorf("the message does not name the user: %q", msg)
				}
				// The rejected request claimed nothing.
				ts.ok(uploadPath, bobToken, `{"one_time_keys":{"signed_curve25519:B":`+key("B")+`}}`)
				wantBody(t, "counts", ts.ok(uploadPath, bobToken, `{}`), `{"one_time_key_counts":{"signed_curve25519":1}}`)
				wantError(t, "not JSON", ts.post(fedClaimPath, "", `{`), http.StatusBadRequest, "M_NOT_JSON")
				// The body's timeout is checked as on the client endpoint (BRIEF 2), and unused.
				for _, bad := range []string{"-5", "1.5", `"5000"`} {
					msg := wantError(t, "timeout "+bad, ts.post(fedClaimPath, "", `{"one_time_keys":{},"timeout":`+bad+`}`), http.StatusBadRequest, "M_INVALID_PARAM")
					if !strings.Contains(msg, "timeout must be a non-negative integer") {
						t.Errorf("timeout %s: message %q", bad, msg)
					}
				}
				want = `{"one_time_keys":{"` + carol + `":{}}}` // msc4072: an empty device map is {} (BRIEF 2)
				if mode == "legacy" {
					want = `{"one_time_keys":{}}` // legacy: left out, as Synapse does (BRIEF 2)
				}
				wantBody(t, "valid timeout", ts.ok(fedClaimPath, "", `{"one_time_keys":{"`+carol+`":{}},"timeout":5000}`), want)
				wantBody(t, "null timeout", ts.ok(fedClaimPath, "", `{"one_time_keys":{"`+carol+`":{}},"timeout":null}`), want)
			})
		}
	})
}

// TestFederationOffSaysSo: with federation off, a remote user's server fails with "federation is
// off on this server" (503) whatever the client's timeout, 0 included, on the claim
// and the query endpoint; not with a timeout message (issue 14, fix 5).
func TestFederationOffSaysSo(t *testing.T) {
	for _, name := range []string{"NoFederation", "--federation=false"} {
		t.Run(name, func(t *testing.T) {
			ts := startServer(t, sqliteBackend, func(cfg *hostserver.Config) {
				if name == "--federation=false" {
					cfg.Federation, cfg.FederationEnabled = nil, false
				}
			})
			off := `{"message":"` + hostserver.NoFederationMessage + `","status":503}`
			for _, q := range []string{"", "?timeout=0"} {
				for _, body := range []string{
					`{"one_time_keys":{"` + remoteUser + `":{"D":"signed_curve25519"}},"timeout":0}`,
					`{"one_time_keys":{"` + remoteUser + `":{"D":"signed_curve25519"}}}`,
				} {
					wantBody(t, "claim "+q+" "+body, ts.ok(claimPath+q, aliceToken, body), `{"failures":{"remote.test":`+off+`},"one_time_keys":{}}`)
				}
				wantBody(t, "query "+q, ts.ok(queryPath+q, aliceToken, `{"device_keys":{"`+remoteUser+`":[]},"timeout":0}`),
					`{"device_keys":{},"failures":{"remote.test":`+off+`}}`)
			}
		})
	}
}

// TestIntegralTimeouts: a timeout is an integer by value (JSON Schema, the spec's OpenAPI
// validators): 1000.0 and 1e3 are 1000 in a claim body, a query string and a /keys/query body;
// 1.5, negatives and strings stay 400 M_INVALID_PARAM (issue 14, fix 6).
func TestIntegralTimeouts(t *testing.T) {
	fed := &slowFederation{}
	ts := startServer(t, sqliteBackend, func(cfg *hostserver.Config) { cfg.Federation = fed })
	failed := func(ms string) string {
		return `{"failures":{"remote.test":{"message":"no answer from remote.test within the timeout of ` + ms + ` ms","status":504}},"one_time_keys":{}}`
	}
	claim := `{"one_time_keys":{"` + remoteUser + `":{"D":"signed_curve25519"}}`
	for _, v := range []string{"100.0", "1e2", "1E+2", "0.1e3", "1000e-1"} {
		wantBody(t, "claim body timeout "+v, ts.ok(claimPath, aliceToken, claim+`,"timeout":`+v+`}`), failed("100"))
		wantBody(t, "claim ?timeout="+v, ts.ok(claimPath+"?timeout="+url.QueryEscape(v), aliceToken, claim+`}`), failed("100"))
		wantBody(t, "query body timeout "+v, ts.ok(queryPath, aliceToken, `{"device_keys":{"`+remoteUser+`":[]},"timeout":`+v+`}`),
			`{"device_keys":{},"failures":{"remote.test":{"message":"no answer from remote.test within the timeout of 100 ms","status":504}}}`)
		wantBody(t, "federation claim timeout "+v, ts.ok(fedClaimPath, "", `{"one_time_keys":{},"timeout":`+v+`}`), `{"one_time_keys":{}}`)
	}
	for _, v := range []string{"1.5", "-1", "-1e3", "1e-3", `"1000"`} {
		wantError(t, "claim body timeout "+v, ts.post(claimPath, aliceToken, claim+`,"timeout":`+v+`}`), http.StatusBadRequest, "M_INVALID_PARAM")
		wantError(t, "federation claim timeout "+v, ts.post(fedClaimPath, "", `{"one_time_keys":{},"timeout":`+v+`}`), http.StatusBadRequest, "M_INVALID_PARAM")
	}
	for _, v := range []string{"1.5", "-1", "1e-3", "abc", "%2B5"} {
		wantError(t, "claim ?timeout="+v, ts.post(claimPath+"?timeout="+v, aliceToken, claim+`}`), http.StatusBadRequest, "M_INVALID_PARAM")
	}
}
