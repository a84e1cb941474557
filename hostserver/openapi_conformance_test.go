package hostserver_test

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keyclaim/keyclaim/hostserver"
	"github.com/keyclaim/keyclaim/hostserver/federation"
	"github.com/keyclaim/keyclaim/hostserver/internal/specconform"
)

// OpenAPI conformance (issue 14): every answer the keys server (in each mode) and the proxy mode
// send in these scenarios, success and error, is validated against the Matrix spec's own
// OpenAPI files (../shared/matrix-spec/data/api, spec v1.19) by kin-openapi: the status must be
// one the operation declares and the body must satisfy its schema, or it is an error status with
// the spec's standard error body (every operation here declares only 200). The scenarios also
// send the spec's own request examples verbatim and require them to be accepted.
//
// The validation sits in the test client's transport (specconform.Transport): whatever the
// server answered to a spec endpoint is checked before the test looks at it.

// conformClient makes ts's client check every answer against the spec.
func conformClient(t *testing.T, v *specconform.Validator, ts *testServer) {
	ts.client = &http.Client{Timeout: 30 * time.Second,
		Transport: &specconform.Transport{V: v, T: t, Lenient: specLenient[strings.SplitN(t.Name(), "/", 2)[0]]}}
}

// checkAgainstSpec is called by the harness for every test server: every answer of every test
// of this package to a spec endpoint is checked against the spec (where the spec files are
// there; in CI they must be).
func checkAgainstSpec(t *testing.T, ts *testServer) {
	if v := specconform.LoadIfPresent(t); v != nil {
		conformClient(t, v, ts)
	}
}

// specLenient lists the tests whose answers may break the spec's schemas, each with the
// reason; their violations are logged, not failed. Keep it short: each entry is a known
// deviation.
var specLenient = map[string]string{
	// Their fake remote servers answer key objects without "signatures" (and device keys
	// without "algorithms"), which the remote-answer sanitiser keeps (BRIEF section 4 keeps "an
	// object with a string key"), so the client answer breaks the spec's KeyObject schema.
	"TestClaimRemoteAnswersAreNotTrusted": "remote key objects without signatures are passed on (BRIEF section 4)",
	"TestFederationMisbehavingRemote":     "remote key objects without signatures are passed on (BRIEF section 4)",
}

// step is one request of a scenario and the status it must get.
type step struct {
	name         string
	method, path string
	token        string
	body         string
	status       int
}

func runSteps(t *testing.T, ts *testServer, steps []step) {
	t.Helper()
	for _, s := range steps {
		r := ts.do(s.method, s.path, s.token, s.body)
		if r.status != s.status {
			t.Errorf("%s: %s %s: got %d %s, want %d", s.name, s.method, s.path, r.status, r.body, s.status)
		}
	}
}

// keysServerSteps are the client and federation requests of the keys server scenario: hs1.test
// with alice, bob and carol; hs2.test, a real second keyclaim server with bob2's devices
// (setUpBob2); dead.test, a server that cannot be reached.
func keysServerSteps() []step {
	otk := func(id, name string) string { return `"signed_curve25519:` + id + `":` + key(name) }
	bobKeys := `{"user_id":"` + bob + `","device_id":"BOBDEV","algorithms":["m.olm.v1.curve25519-aes-sha2","m.megolm.v1.aes-sha2"],` +
		`"keys":{"curve25519:BOBDEV":"cu-bob","ed25519:BOBDEV":"ed-bob"},"signatures":{"` + bob + `":{"ed25519:BOBDEV":"self-sig"}}}`
	fb := `{"key":"fb-phone","fallback":true,"signatures":{"` + bob + `":{"ed25519:BOBPHONE":"sig-fb"}}}`
	many := func(n int) string {
		var b strings.Builder
		b.WriteString(`{"one_time_keys":{"` + bob + `":{`)
		for i := range n {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(`"D` + strings.Repeat("x", i%7) + string(rune('a'+i%26)) + string(rune('a'+i/26)) + `":"signed_curve25519"`)
		}
		b.WriteString(`}}}`)
		return b.String()
	}
	post := http.MethodPost
	return []step{
		{"versions", http.MethodGet, versionsPath, "", "", 200},
		{"versions with a token", http.MethodGet, versionsPath, aliceToken, "", 200},
		{"key server", http.MethodGet, federation.KeyServerPath, "", "", 200},

		// Uploads: two batches, a fallback key, re-uploads, counts, and every kind of refusal.
		{"upload device keys and a batch", post, uploadPath, bobToken, `{"device_keys":` + bobKeys + `,"one_time_keys":{` + otk("AAAAAQ", "k1") + `,` + otk("AAAAAg", "k2") + `}}`, 200},
		{"upload a second batch", post, uploadPath, bobToken, `{"one_time_keys":{` + otk("AAAAAw", "k3") + `}}`, 200},
		{"identical re-upload", post, uploadPath, bobToken, `{"device_keys":` + bobKeys + `,"one_time_keys":{` + otk("AAAAAQ", "k1") + `}}`, 200},
		{"fallback key", post, uploadPath, bobPhoneTok, `{"fallback_keys":{"signed_curve25519:FB":` + fb + `}}`, 200},
		{"empty upload: the counts", post, uploadPath, bobToken, `{}`, 200},
		{"upload, a different key under an unclaimed ID", post, uploadPath, bobToken, `{"one_time_keys":{` + otk("AAAAAQ", "other") + `}}`, 400},
		{"upload, a key object without signatures", post, uploadPath, bobToken, `{"one_time_keys":{"signed_curve25519:E2":{"key":"k-E2"}}}`, 400},
		{"upload, signatures not a map", post, uploadPath, bobToken, `{"one_time_keys":{"signed_curve25519:E3":{"key":"k-E3","signatures":[]}}}`, 400},
		{"upload, device keys of another user", post, uploadPath, aliceToken, `{"device_keys":` + bobKeys + `}`, 400},
		{"upload, not JSON", post, uploadPath, bobToken, `{"one_time_keys":`, 400},
		{"upload, not an object", post, uploadPath, bobToken, `[]`, 400},
		{"upload, no token", post, uploadPath, "", `{}`, 401},
		{"upload, an unknown token", post, uploadPath, "tok-nobody", `{}`, 401},
		{"upload, too large", post, uploadPath, bobToken, `{"one_time_keys":{` + otk("BIG", strings.Repeat("x", 70_000)) + `}}`, 413},

		// Queries.
		{"query, all devices", post, queryPath, aliceToken, `{"device_keys":{"` + bob + `":[]}}`, 200},
		{"query, one device, an unknown user, a remote user, an unreachable server", post, queryPath, aliceToken,
			`{"device_keys":{"` + bob + `":["BOBDEV"],"@nobody:hs1.test":[],"` + bob2 + `":[],"@eve:dead.test":[]},"timeout":2000}`, 200},
		{"query, device_keys missing", post, queryPath, aliceToken, `{}`, 400},
		{"query, not JSON", post, queryPath, aliceToken, `nope`, 400},
		{"query, no token", post, queryPath, "", `{"device_keys":{}}`, 401},

		// Claims: one-time keys until exhaustion, the fallback key, unknown devices and users,
		// an empty device map, a remote server, an unreachable one.
		{"claim", post, claimPath, aliceToken, claimBody(bob, "BOBDEV", "BOBPHONE", "NOSUCH"), 200},
		{"claim again", post, claimPath, aliceToken, claimBody(bob, "BOBDEV", "BOBPHONE"), 200},
		{"claim, the last key", post, claimPath, aliceToken, claimBody(bob, "BOBDEV"), 200},
		{"claim, exhausted", post, claimPath, aliceToken, claimBody(bob, "BOBDEV"), 200},
		{"claim, unknown user and an empty device map", post, claimPath, aliceToken, `{"one_time_keys":{"@nobody:hs1.test":{"D":"signed_curve25519"},"` + carol + `":{}}}`, 200},
		{"claim, a remote server and an unreachable one", post, claimPath, aliceToken,
			`{"one_time_keys":{"` + bob2 + `":{"BOBDEV":"signed_curve25519","BOBPHONE":"signed_curve25519","BOBTAB":"signed_curve25519","NOSUCH":"signed_curve25519"},"@eve:dead.test":{"E":"signed_curve25519"}},"timeout":2000}`, 200},
		{"claim, r0 prefix", post, "/_matrix/client/r0/keys/claim", aliceToken, claimBody(bob, "BOBPHONE"), 200},
		{"claim, timeout in the query string", post, claimPath + "?timeout=500", aliceToken, claimBody(bob, "BOBPHONE"), 200},
		{"claim, an invalid user ID", post, claimPath, aliceToken, `{"one_time_keys":{"bob":{"D":"signed_curve25519"}}}`, 400},
		{"claim, a device map that is not an object", post, claimPath, aliceToken, `{"one_time_keys":{"` + bob + `":["D"]}}`, 400},
		{"claim, one_time_keys missing", post, claimPath, aliceToken, `{"timeout":10}`, 400},
		{"claim, duplicate keys", post, claimPath, aliceToken, `{"one_time_keys":{},"one_time_keys":{}}`, 400},
		{"claim, a negative timeout", post, claimPath, aliceToken, `{"one_time_keys":{},"timeout":-1}`, 400},
		{"claim, a timeout that is a string", post, claimPath, aliceToken, `{"one_time_keys":{},"timeout":"10"}`, 400},
		{"claim, an integral timeout written 1000.0", post, claimPath, aliceToken, `{"one_time_keys":{},"timeout":1000.0}`, 200},
		{"claim, an integral timeout written 1e3", post, claimPath, aliceToken, `{"one_time_keys":{},"timeout":1e3}`, 200},
		{"claim, a timeout of 1.5", post, claimPath, aliceToken, `{"one_time_keys":{},"timeout":1.5}`, 400},
		{"claim, a bad query timeout", post, claimPath + "?timeout=soon", aliceToken, `{"one_time_keys":{}}`, 400},
		{"claim, too many pairs", post, claimPath, aliceToken, many(101), 400},
		{"claim, not JSON", post, claimPath, aliceToken, `{`, 400},
		{"claim, no token", post, claimPath, "", `{"one_time_keys":{}}`, 401},
		{"claim, GET", http.MethodGet, claimPath, aliceToken, "", 405},

		// Federation (signed by the harness's origin server, verified for real).
		{"federation claim", post, fedClaimPath, "", claimBody(bob, "BOBDEV", "BOBPHONE", "NOSUCH"), 200},
		{"federation claim, an empty device map", post, fedClaimPath, "", `{"one_time_keys":{"` + carol + `":{}}}`, 200},
		{"federation claim, a user of another server", post, fedClaimPath, "", claimBody(bob2, "BOBDEV"), 400},
		{"federation claim, not JSON", post, fedClaimPath, "", `{`, 400},
		{"federation query", post, fedQueryPath, "", `{"device_keys":{"` + bob + `":[],"@nobody:hs1.test":[]}}`, 200},
		{"federation query, a user of another server", post, fedQueryPath, "", `{"device_keys":{"` + bob2 + `":[]}}`, 400},
		{"federation query, device_keys missing", post, fedQueryPath, "", `{}`, 400},
	}
}

// startConformServers starts hs1.test in mode (checked against the spec), with hs2.test (also
// checked) and an unreachable dead.test as remote servers.
func startConformServers(t *testing.T, v *specconform.Validator, mode string) *testServer {
	dead := listenLoopback(t)
	deadURL := routeTo(t, dead)
	_ = dead.Close() // nobody listens there any more: connection refused
	hs1, hs2 := startPairWith(t, sqliteBackend, func(cfg *hostserver.Config) {
		cfg.Mode = mode
		if mode == "msc4072-federation" {
			cfg.Mode, cfg.FederationAnswers = "msc4072", "msc4072"
		}
		cfg.FederationResolve["dead.test"] = deadURL
		cfg.MaxBodyBytes = 64 << 10
		cfg.MaxPairs = 100
	}, func(cfg *hostserver.Config) { cfg.Mode = strings.TrimSuffix(mode, "-federation") })
	conformClient(t, v, hs1)
	conformClient(t, v, hs2)
	setUpBob2(t, hs2)
	return hs1
}

// TestOpenAPIConformanceKeysServer runs the keys server scenario in each mode.
func TestOpenAPIConformanceKeysServer(t *testing.T) {
	v := specconform.Load(t).Fresh()
	// "msc4072-federation" is msc4072 mode with --federation-answers msc4072: {} entries in
	// the federation claim answers too.
	for _, mode := range []string{"msc4072", "legacy", "msc4072-federation"} {
		t.Run(mode, func(t *testing.T) {
			hs1 := startConformServers(t, v, mode)
			runSteps(t, hs1, keysServerSteps())
			// Unsigned federation requests are refused with a Matrix error too.
			req, _ := http.NewRequest(http.MethodPost, hs1.base+fedClaimPath, strings.NewReader(claimBody(bob, "BOBDEV")))
			if r := hs1.sendRaw(req); r.status != http.StatusUnauthorized {
				t.Errorf("an unsigned federation claim: %d %s", r.status, r.body)
			}
		})
	}
	t.Run("federation off", func(t *testing.T) {
		ts := startServer(t, sqliteBackend, func(cfg *hostserver.Config) {
			cfg.FederationEnabled = false
			cfg.Federation = nil
		})
		conformClient(t, v, ts)
		runSteps(t, ts, []step{
			{"key server", http.MethodGet, federation.KeyServerPath, "", "", 404},
			{"federation claim", http.MethodPost, fedClaimPath, "", claimBody(bob, "BOBDEV"), 403},
			{"federation query", http.MethodPost, fedQueryPath, "", `{"device_keys":{}}`, 403},
			{"a remote user", http.MethodPost, claimPath + "?timeout=0", aliceToken, claimBody(bob2, "BOBDEV"), 200},
			{"a remote user's keys", http.MethodPost, queryPath, aliceToken, `{"device_keys":{"` + bob2 + `":[]}}`, 200},
		})
	})
	requireCoverage(t, v, []string{
		"GET /server 404", "POST /user/keys/claim 403", "POST /user/keys/query 403",
		"GET /versions 200", "GET /server 200",
		"POST /keys/upload 200", "POST /keys/upload 400", "POST /keys/upload 401", "POST /keys/upload 413",
		"POST /keys/query 200", "POST /keys/query 400", "POST /keys/query 401",
		"POST /keys/claim 200", "POST /keys/claim 400", "POST /keys/claim 401", "GET /keys/claim 405",
		"POST /user/keys/claim 200", "POST /user/keys/claim 400", "POST /user/keys/claim 401",
		"POST /user/keys/query 200", "POST /user/keys/query 400",
	})
}

// requireCoverage fails unless every "METHOD path status" in want has been checked: a scenario
// that stopped exercising an answer cannot pass unnoticed.
func requireCoverage(t *testing.T, v *specconform.Validator, want []string) {
	t.Helper()
	checked := strings.Join(v.Checked(), "\n")
	for _, w := range want {
		if !strings.Contains(checked, w+":") {
			t.Errorf("no %q answer was checked against the spec; checked:\n%s", w, checked)
		}
	}
}

// deepCopyJSON copies a value decoded from JSON.
func deepCopyJSON(v any) any {
	data, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	var out any
	if err := json.Unmarshal(data, &out); err != nil {
		panic(err)
	}
	return out
}

// firstDiff names the first place where two values decoded from JSON differ ("" if equal):
// long answers are then quick to compare.
func firstDiff(got, want any, path string) string {
	if reflect.DeepEqual(got, want) {
		return ""
	}
	g, gok := got.(map[string]any)
	w, wok := want.(map[string]any)
	if !gok || !wok {
		return fmt.Sprintf("at %s: got %s, want %s", path, compact(got), compact(want))
	}
	for _, k := range slices.Sorted(maps.Keys(w)) {
		if _, ok := g[k]; !ok {
			return fmt.Sprintf("at %s: %q missing (want %s)", path, k, compact(w[k]))
		}
	}
	for _, k := range slices.Sorted(maps.Keys(g)) {
		if _, ok := w[k]; !ok {
			return fmt.Sprintf("at %s: %q not wanted (got %s)", path, k, compact(g[k]))
		}
		if d := firstDiff(g[k], w[k], path+"/"+k); d != "" {
			return d
		}
	}
	return ""
}

// compact is a value as one line of JSON.
func compact(v any) string {
	data, _ := json.Marshal(v)
	return string(data)
}

// exampleTokens is the token file of the server named example.com that the spec's examples
// address: @alice:example.com on device JLAFKJWSCS, with the display name of the spec's
// /keys/query example.
var exampleTokens = map[string]map[string]string{
	"tok-example-alice": {"user_id": "@alice:example.com", "device_id": "JLAFKJWSCS", "display_name": "Alice's mobile phone"},
}

// TestOpenAPISpecExamples sends the spec's own request examples verbatim, in each mode, and
// requires them to be accepted; where the spec also gives the answer, the server's answer must
// equal it.
func TestOpenAPISpecExamples(t *testing.T) {
	v := specconform.Load(t).Fresh()
	const cs, ss = "/_matrix/client/v3", "/_matrix/federation/v1"
	for _, mode := range []string{"msc4072", "legacy"} {
		t.Run(mode, func(t *testing.T) {
			ts := startServer(t, sqliteBackend, func(cfg *hostserver.Config) {
				tokens := filepath.Join(t.TempDir(), "example-tokens.json")
				writeTokenFile(t, tokens, exampleTokens)
				cfg.ServerName = "example.com"
				cfg.Tokens = tokens
				cfg.Mode = mode
			})
			conformClient(t, v, ts)
			send := func(prefix, path, token string) response {
				t.Helper()
				ex := v.RequestExample(prefix, path, http.MethodPost)
				if ex == nil {
					t.Fatalf("the spec has no request example for %s%s", prefix, path)
				}
				body, err := json.Marshal(ex)
				if err != nil {
					t.Fatal(err)
				}
				req, _ := http.NewRequest(http.MethodPost, ts.base+prefix+path, nil)
				if err := v.ValidateRequest(req, body); err != nil {
					t.Fatalf("the spec's example for %s%s is not a valid request by the spec: %v", prefix, path, err)
				}
				r := ts.do(http.MethodPost, prefix+path, token, string(body))
				if r.status != http.StatusOK {
					t.Errorf("the spec's example request %s%s %s: got %d %s, want 200", prefix, path, body, r.status, r.body)
				}
				return r
			}
			const tok = "tok-example-alice"
			up := send(cs, "/keys/upload", tok)
			wantBody(t, "counts after the example upload", up.body, `{"one_time_key_counts":{"signed_curve25519":2}}`)
			for _, c := range []struct {
				prefix, path, token string
			}{{cs, "/keys/query", tok}, {ss, "/user/keys/query", ""}} {
				r := send(c.prefix, c.path, c.token)
				want, ok := v.ResponseExample(c.prefix, c.path, http.MethodPost)
				if !ok {
					// keys.yaml gives the /keys/query answer as per-property examples.
					want, ok = v.PropertyExample(c.prefix, c.path, http.MethodPost, "device_keys")
					want = map[string]any{"device_keys": want}
				}
				if !ok {
					t.Fatalf("the spec has no answer example for %s%s", c.prefix, c.path)
				}
				var got map[string]any
				if err := json.Unmarshal([]byte(r.body), &got); err != nil {
					t.Fatal(err)
				}
				w := deepCopyJSON(want).(map[string]any)["device_keys"]
				if c.prefix == ss {
					// Over federation the display name stays home, as Synapse does by default
					// (allow_device_name_lookup_over_federation: false), and a device without
					// a name comes back exactly as uploaded (BRIEF section 6; unsigned is
					// optional in the spec's DeviceInformation).
					for _, devs := range w.(map[string]any) {
						for _, d := range devs.(map[string]any) {
							dev := d.(map[string]any)
							delete(dev["unsigned"].(map[string]any), "device_display_name")
							if len(dev["unsigned"].(map[string]any)) == 0 {
								delete(dev, "unsigned")
							}
						}
					}
				}
				if !reflect.DeepEqual(got["device_keys"], w) {
					t.Errorf("%s%s: the answer's device_keys differ from the spec's example %s", c.prefix, c.path, firstDiff(got["device_keys"], w, ""))
				}
			}
			// The example claims the device the example upload gave two one-time keys: each
			// claim (client, then federation) hands out one of them, then the fallback key.
			uploaded := v.RequestExample(cs, "/keys/upload", http.MethodPost)
			otks := uploaded["one_time_keys"].(map[string]any)
			seen := map[string]bool{}
			for i, c := range []struct{ prefix, path, token string }{{cs, "/keys/claim", tok}, {ss, "/user/keys/claim", ""}, {cs, "/keys/claim", tok}} {
				var got struct {
					OneTimeKeys map[string]map[string]map[string]any `json:"one_time_keys"`
				}
				if err := json.Unmarshal([]byte(send(c.prefix, c.path, c.token).body), &got); err != nil {
					t.Fatal(err)
				}
				keys := got.OneTimeKeys["@alice:example.com"]["JLAFKJWSCS"]
				if len(keys) != 1 {
					t.Fatalf("claim %d: %v, want one key", i, got)
				}
				for id, k := range keys {
					want, ok := otks[id]
					if i == 2 {
						want, ok = uploaded["fallback_keys"].(map[string]any)[id]
					}
					if !ok || !reflect.DeepEqual(k, want) || seen[id] {
						t.Errorf("claim %d handed out %s %v: not the spec example's next key", i, id, k)
					}
					seen[id] = true
				}
			}
		})
	}
}

// TestOpenAPIConformanceProxyMode runs proxy mode (--upstream, with --upstream-passthrough so
// that one entry point serves upload and query too) in front of a real keyclaim keys server in
// legacy mode as the homeserver, in each mode, and its failures: an upstream that is down
// (502) and one that does not answer in time (504).
func TestOpenAPIConformanceProxyMode(t *testing.T) {
	v := specconform.Load(t).Fresh()
	post := http.MethodPost
	for _, mode := range []string{"msc4072", "legacy"} {
		t.Run(mode, func(t *testing.T) {
			upstream := startServer(t, sqliteBackend, func(cfg *hostserver.Config) { cfg.Mode = "legacy" })
			p := &testServer{t: t, base: startProxyMode(t, "--upstream", upstream.base, "--upstream-passthrough",
				"--server-name", serverName, "--listen", "127.0.0.1:0", "--mode", mode, "--max-pairs", "100"), name: serverName}
			conformClient(t, v, p)
			otks := `{"one_time_keys":{"signed_curve25519:AAAAAQ":` + key("k1") + `,"signed_curve25519:AAAAAg":` + key("k2") + `}}`
			runSteps(t, p, []step{
				{"versions", http.MethodGet, versionsPath, "", "", 200},
				{"upload through the proxy", post, uploadPath, bobToken, otks, 200},
				{"fallback key", post, uploadPath, bobPhoneTok, `{"fallback_keys":{"signed_curve25519:FB":{"key":"fb","fallback":true,"signatures":{"` + bob + `":{"ed25519:BOBPHONE":"s"}}}}}`, 200},
				{"query through the proxy", post, queryPath, aliceToken, `{"device_keys":{"` + bob + `":[]}}`, 200},
				{"claim", post, claimPath, aliceToken, claimBody(bob, "BOBDEV", "BOBPHONE", "NOSUCH"), 200},
				{"claim until exhausted", post, claimPath, aliceToken, claimBody(bob, "BOBDEV"), 200},
				{"claim, exhausted", post, claimPath, aliceToken, claimBody(bob, "BOBDEV"), 200},
				{"claim, unknown user and an empty device map", post, claimPath, aliceToken, `{"one_time_keys":{"@nobody:hs1.test":{"D":"signed_curve25519"},"` + carol + `":{}}}`, 200},
				{"claim, r0", post, "/_matrix/client/r0/keys/claim", aliceToken, claimBody(bob, "BOBPHONE"), 200},
				{"claim, an invalid user ID", post, claimPath, aliceToken, `{"one_time_keys":{"bob":{"D":"signed_curve25519"}}}`, 400},
				{"claim, not JSON", post, claimPath, aliceToken, `{`, 400},
				{"claim, a negative timeout", post, claimPath, aliceToken, `{"one_time_keys":{},"timeout":-1}`, 400},
				{"claim, the homeserver refuses the token", post, claimPath, "tok-nobody", claimBody(bob, "BOBDEV"), 401},
				{"upload, the homeserver refuses it", post, uploadPath, bobToken, `{"one_time_keys":{"signed_curve25519:E2":{"key":"k-E2"}}}`, 400},
			})

			down := listenLoopback(t)
			downURL := "http://" + down.Addr().String()
			_ = down.Close()
			p2 := &testServer{t: t, base: startProxyMode(t, "--upstream", downURL, "--server-name", serverName, "--listen", "127.0.0.1:0", "--mode", mode)}
			conformClient(t, v, p2)
			runSteps(t, p2, []step{{"claim, the homeserver is down", post, claimPath, aliceToken, claimBody(bob, "BOBDEV"), 502}})

			if mode != "legacy" {
				return // the 504 below takes the proxy's 5 s margin: once is enough
			}
			stop := make(chan struct{})
			hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				select {
				case <-r.Context().Done():
				case <-stop:
				}
			}))
			t.Cleanup(hang.Close)
			t.Cleanup(func() { close(stop) }) // runs first
			p3 := &testServer{t: t, base: startProxyMode(t, "--upstream", hang.URL, "--server-name", serverName, "--listen", "127.0.0.1:0", "--mode", mode)}
			conformClient(t, v, p3)
			runSteps(t, p3, []step{{"claim, the homeserver does not answer in time", post, claimPath, aliceToken,
				`{"one_time_keys":{"` + bob + `":{"BOBDEV":"signed_curve25519"}},"timeout":300}`, 504}})
		})
	}
	requireCoverage(t, v, []string{
		"GET /versions 200", "POST /keys/upload 200", "POST /keys/upload 400", "POST /keys/query 200",
		"POST /keys/claim 200", "POST /keys/claim 400", "POST /keys/claim 401", "POST /keys/claim 502", "POST /keys/claim 504",
	})
}
