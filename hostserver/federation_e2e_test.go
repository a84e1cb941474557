package hostserver_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keyclaim/keyclaim/core"
	"github.com/keyclaim/keyclaim/hostserver"
	"github.com/keyclaim/keyclaim/hostserver/federation"
)

// Federation over real sockets (issue 5): two keyclaim servers, hs1.test and hs2.test, on
// 127.0.0.1 with static routes to each other and real X-Matrix signatures both ways.

const (
	hs2Name     = "hs2.test"
	bob2        = "@bob:" + hs2Name
	carol2      = "@carol:" + hs2Name
	bob2DevTok  = "tok-bob2-dev"
	bob2PhoneTo = "tok-bob2-phone"
	bob2TabTok  = "tok-bob2-tab"
	carol2Tok   = "tok-carol2"
)

// hs2Tokens is the token file of hs2.test.
var hs2Tokens = map[string]map[string]string{
	bob2DevTok:  {"user_id": bob2, "device_id": "BOBDEV"},
	bob2PhoneTo: {"user_id": bob2, "device_id": "BOBPHONE"},
	bob2TabTok:  {"user_id": bob2, "device_id": "BOBTAB"},
	carol2Tok:   {"user_id": carol2, "device_id": "CAROLDEV"},
}

// listenLoopback opens a listener on a random port of 127.0.0.1.
func listenLoopback(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// routeTo returns the static route URL of a listener.
func routeTo(t *testing.T, ln net.Listener) *url.URL {
	t.Helper()
	u, err := url.Parse("http://" + ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// startPair starts hs1.test (mode1) and hs2.test (mode2, for its client and its federation
// answers) on store backend b, federating with each other through the real federation client.
func startPair(t *testing.T, b backend, mode1, mode2 string) (hs1, hs2 *testServer) {
	t.Helper()
	return startPairWith(t, b,
		func(cfg *hostserver.Config) { cfg.Mode = mode1 },
		func(cfg *hostserver.Config) { cfg.Mode, cfg.FederationAnswers = mode2, mode2 })
}

// startPairWith is startPair with each server's configuration adjusted by its function.
func startPairWith(t *testing.T, b backend, adjust1, adjust2 func(*hostserver.Config)) (hs1, hs2 *testServer) {
	t.Helper()
	ln1, ln2 := listenLoopback(t), listenLoopback(t)
	url1, url2 := routeTo(t, ln1), routeTo(t, ln2)
	hs1 = startServerOn(t, b, ln1, func(cfg *hostserver.Config) {
		cfg.Federation = nil // the real client
		cfg.FederationResolve[hs2Name] = url2
		adjust1(cfg)
	})
	hs2 = startServerOn(t, b, ln2, func(cfg *hostserver.Config) {
		tokens := filepath.Join(t.TempDir(), "hs2-tokens.json")
		writeTokenFile(t, tokens, hs2Tokens)
		cfg.ServerName = hs2Name
		cfg.Tokens = tokens
		cfg.Federation = nil
		cfg.FederationResolve[serverName] = url1
		adjust2(cfg)
	})
	return hs1, hs2
}

// otk2 is a signed one-time key of a device of bob2, as uploaded (canonical JSON).
func otk2(device, name string) string {
	return `{"key":"` + name + `","signatures":{"` + bob2 + `":{"ed25519:` + device + `":"sig-` + name + `"}}}`
}

// fallback2 is a signed fallback key of a device of bob2 (canonical JSON).
func fallback2(device, name string) string {
	return `{"fallback":true,"key":"` + name + `","signatures":{"` + bob2 + `":{"ed25519:` + device + `":"sig-` + name + `"}}}`
}

// bob2DeviceKeys are the device keys of bob2's BOBDEV as uploaded: not canonical (spaces, key
// order), so that "byte for byte" means something.
const bob2DeviceKeys = `{ "user_id": "` + bob2 + `",  "device_id": "BOBDEV", "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
 "keys": {"curve25519:BOBDEV": "cu-bob2", "ed25519:BOBDEV": "ed-bob2"}, "signatures": {"` + bob2 + `": {"ed25519:BOBDEV": "self-sig"}} }`

// setUpBob2 gives bob2 three devices on hs2: BOBDEV with three one-time keys and device keys,
// BOBPHONE with only a fallback key, BOBTAB exhausted (its only one-time key claimed by carol2).
func setUpBob2(t *testing.T, hs2 *testServer) {
	t.Helper()
	hs2.ok(uploadPath, bob2DevTok, `{"device_keys": `+bob2DeviceKeys+`, "one_time_keys":{"signed_curve25519:AAAAAQ":`+otk2("BOBDEV", "k1")+`,"signed_curve25519:AAAAAg":`+otk2("BOBDEV", "k2")+`,"signed_curve25519:AAAAAw":`+otk2("BOBDEV", "k3")+`}}`)
	hs2.ok(uploadPath, bob2PhoneTo, `{"fallback_keys":{"signed_curve25519:FB":`+fallback2("BOBPHONE", "fb")+`}}`)
	hs2.ok(uploadPath, bob2TabTok, `{"one_time_keys":{"signed_curve25519:T1":`+otk2("BOBTAB", "t1")+`}}`)
	wantBody(t, "carol2 exhausts BOBTAB", hs2.ok(claimPath, carol2Tok, claimBody(bob2, "BOBTAB")),
		`{"failures":{},"one_time_keys":{"`+bob2+`":{"BOBTAB":{"signed_curve25519:T1":`+otk2("BOBTAB", "t1")+`}}}}`)
}

func TestFederationTwoServers(t *testing.T) {
	forEachStore(t, func(t *testing.T, b backend) {
		for _, modes := range [][2]string{{"msc4072", "msc4072"}, {"legacy", "legacy"}, {"msc4072", "legacy"}, {"legacy", "msc4072"}} {
			t.Run("hs1-"+modes[0]+"-hs2-"+modes[1], func(t *testing.T) {
				testTwoServers(t, b, modes[0], modes[1])
			})
		}
	})
}

func testTwoServers(t *testing.T, b backend, mode1, mode2 string) {
	hs1, hs2 := startPair(t, b, mode1, mode2)
	setUpBob2(t, hs2)
	legacy := mode1 == "legacy"
	bobDevices := []string{"BOBDEV", "BOBPHONE", "BOBTAB", "NOSUCH"}
	req := claimRequest{bob2: devicesOf(bobDevices...)}

	t.Run("claim", func(t *testing.T) {
		// The one-time key, the fallback key, and for the exhausted and unknown devices {}
		// (msc4072) or nothing (legacy), whatever mode hs2 answers in.
		for i, k := range []string{"AAAAAQ", "AAAAAg"} {
			start := time.Now()
			got := hs1.ok(claimPath, aliceToken, req.body(5000))
			checkCompleteAnswer(t, got, req, mode1, nil)
			want := `{"failures":{},"one_time_keys":{"` + bob2 + `":{"BOBDEV":{"signed_curve25519:` + k + `":` + otk2("BOBDEV", "k"+strconv.Itoa(i+1)) + `},` +
				`"BOBPHONE":{"signed_curve25519:FB":` + fallback2("BOBPHONE", "fb") + `},"BOBTAB":{},"NOSUCH":{}}}}`
			if legacy {
				want = `{"failures":{},"one_time_keys":{"` + bob2 + `":{"BOBDEV":{"signed_curve25519:` + k + `":` + otk2("BOBDEV", "k"+strconv.Itoa(i+1)) + `},` +
					`"BOBPHONE":{"signed_curve25519:FB":` + fallback2("BOBPHONE", "fb") + `}}}}`
			}
			wantBody(t, "claim "+strconv.Itoa(i+1), got, want)
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("claim took %s", d)
			}
		}
		// hs2 handed the keys out once: its own counts say so.
		wantBody(t, "counts on hs2", hs2.ok(uploadPath, bob2DevTok, `{}`), `{"one_time_key_counts":{"signed_curve25519":1}}`)
	})

	t.Run("local and remote users in one claim", func(t *testing.T) {
		hs1.ok(uploadPath, bobToken, `{"one_time_keys":{"signed_curve25519:L1":`+key("L1")+`}}`)
		mixed := claimRequest{
			bob:    devicesOf("BOBDEV", "BOBPHONE"),
			carol:  devicesOf("CAROLDEV"),
			bob2:   devicesOf("BOBDEV", "BOBTAB"),
			carol2: devicesOf("CAROLDEV"),
		}
		got := hs1.ok(claimPath, aliceToken, mixed.body(5000))
		checkCompleteAnswer(t, got, mixed, mode1, nil)
		want := `{"failures":{},"one_time_keys":{` +
			`"` + bob + `":{"BOBDEV":{"signed_curve25519:L1":` + key("L1") + `},"BOBPHONE":{}},` +
			`"` + bob2 + `":{"BOBDEV":{"signed_curve25519:AAAAAw":` + otk2("BOBDEV", "k3") + `},"BOBTAB":{}},` +
			`"` + carol + `":{"CAROLDEV":{}},` +
			`"` + carol2 + `":{"CAROLDEV":{}}}}`
		if legacy {
			want = `{"failures":{},"one_time_keys":{` +
				`"` + bob + `":{"BOBDEV":{"signed_curve25519:L1":` + key("L1") + `}},` +
				`"` + bob2 + `":{"BOBDEV":{"signed_curve25519:AAAAAw":` + otk2("BOBDEV", "k3") + `}}}}`
		}
		wantBody(t, "mixed claim", got, want)
	})

	t.Run("key query", func(t *testing.T) {
		// Device keys cross the two servers byte for byte.
		hs1.ok(uploadPath, bobToken, `{"device_keys":`+deviceKeys(bob, "BOBDEV")+`}`)
		got := hs1.ok(queryPath, aliceToken, `{"device_keys":{"`+bob2+`":[],"`+carol2+`":[],"`+bob+`":["BOBDEV"]},"timeout":5000}`)
		wantBody(t, "query", got, `{"device_keys":{"`+bob+`":{"BOBDEV":`+deviceKeys(bob, "BOBDEV")+`},"`+bob2+`":{"BOBDEV":`+bob2DeviceKeys+`},"`+carol2+`":{}},"failures":{}}`)
		got = hs1.ok(queryPath, aliceToken, `{"device_keys":{"`+bob2+`":["BOBPHONE"]}}`)
		wantBody(t, "query of a device without device keys", got, `{"device_keys":{"`+bob2+`":{}},"failures":{}}`)
	})

	t.Run("X-Matrix both ways", func(t *testing.T) {
		// hs2 fetched hs1's key to verify hs1's requests, through its own federation client.
		m := hs2.metrics()
		if got := m[`keyclaim_federation_requests_total{destination="hs1.test",endpoint="server_keys",outcome="ok"}`]; got != 1 {
			t.Errorf("hs2 fetched hs1's keys %v times, want once (then cached)", got)
		}
		if got := m[`keyclaim_federation_auth_failures_total{cause="bad_signature"}`]; got != 0 {
			t.Errorf("hs2 refused %v requests of hs1", got)
		}
		m = hs1.metrics()
		if got := m[`keyclaim_federation_requests_total{destination="hs2.test",endpoint="claim",outcome="ok"}`]; got != 3 {
			t.Errorf("hs1 sent %v claims to hs2, want 3", got)
		}
		if got := m[`keyclaim_federation_requests_total{destination="hs2.test",endpoint="query",outcome="ok"}`]; got != 2 {
			t.Errorf("hs1 sent %v queries to hs2, want 2", got)
		}
		if got := m[`keyclaim_federation_request_duration_seconds_count{destination="hs2.test",endpoint="claim"}`]; got != 3 {
			t.Errorf("latency of claims to hs2 observed %v times, want 3", got)
		}
	})

	t.Run("hs2 down, then backed off", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := hs2.srv.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
		both := claimRequest{bob: devicesOf("BOBDEV"), bob2: devicesOf("BOBDEV", "BOBPHONE")}
		got := hs1.ok(claimPath, aliceToken, both.body(5000))
		failures := checkCompleteAnswer(t, got, both, mode1, []core.ServerName{hs2Name})
		if f := failures[hs2Name]; f.Status != http.StatusServiceUnavailable || !strings.Contains(f.Message, "could not reach hs2.test") {
			t.Errorf("failure of hs2 down: %+v", f)
		}
		// The next call fails fast without trying: hs2.test is backed off.
		start := time.Now()
		got = hs1.ok(claimPath, aliceToken, both.body(5000))
		failures = checkCompleteAnswer(t, got, both, mode1, []core.ServerName{hs2Name})
		if f := failures[hs2Name]; f.Status != http.StatusServiceUnavailable || f.Message != federation.NotReadyForRetry {
			t.Errorf("failure of hs2 backed off: %+v", f)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("a backed-off server took %s to fail", d)
		}
		got = hs1.ok(queryPath, aliceToken, `{"device_keys":{"`+bob2+`":[]}}`)
		wantBody(t, "query while backed off", got, `{"device_keys":{},"failures":{"hs2.test":{"message":"Not ready for retry","status":503}}}`)
		m := hs1.metrics()
		if got := m[`keyclaim_federation_requests_total{destination="hs2.test",endpoint="claim",outcome="transport_error"}`]; got != 1 {
			t.Errorf("transport errors to hs2: %v, want 1", got)
		}
		if got := m[`keyclaim_federation_requests_total{destination="hs2.test",endpoint="claim",outcome="backoff"}`]; got != 1 {
			t.Errorf("backed-off claims to hs2: %v, want 1", got)
		}
	})
}

func TestFederationInboundAuth(t *testing.T) {
	// Inbound federation requests must carry a valid X-Matrix authorization: anything else is
	// 401 M_UNAUTHORIZED with a message that says which check failed.
	otherKeySeed := bytes.Repeat([]byte{7}, 32)
	impostor, err := federation.NewSigningKey(originName, "test", otherKeySeed) // origin.test's key ID, another key
	if err != nil {
		t.Fatal(err)
	}
	strangerKey, err := federation.NewSigningKey("stranger.test", "test", otherKeySeed)
	if err != nil {
		t.Fatal(err)
	}
	// badself.test publishes a key whose self-signature is wrong; expired.test publishes keys
	// that expired an hour ago; closed.test is routed to a closed port.
	badSelf := startKeyServer(t, func(w http.ResponseWriter) {
		body, err := strangerKey.KeyServerResponse(time.Now(), time.Hour)
		if err != nil {
			t.Error(err)
		}
		body = bytes.Replace(body, []byte(`"stranger.test"`), []byte(`"badself.test"`), -1) // signature no longer matches
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	})
	expiredKey, _ := federation.NewSigningKey("expired.test", "test", otherKeySeed)
	expired := startKeyServer(t, func(w http.ResponseWriter) {
		body, _ := expiredKey.KeyServerResponse(time.Now().Add(-2*time.Hour), time.Hour)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	})
	closed := listenLoopback(t)
	closedURL := routeTo(t, closed)
	_ = closed.Close()

	ts := startServer(t, sqliteBackend, func(cfg *hostserver.Config) {
		cfg.FederationResolve["badself.test"] = badSelf
		cfg.FederationResolve["expired.test"] = expired
		cfg.FederationResolve["closed.test"] = closedURL
	})
	ts.ok(uploadPath, bobToken, `{"one_time_keys":{"signed_curve25519:A":`+key("A")+`}}`)
	body := claimBody(bob, "BOBDEV")

	request := func(path, body string) *http.Request {
		req, err := http.NewRequest(http.MethodPost, ts.base+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		return req
	}
	signed := func(key *federation.SigningKey, origin, destination core.ServerName, path, signedBody, sentBody string) *http.Request {
		req := request(path, sentBody)
		if err := federation.SignRequest(req, []byte(signedBody), origin, destination, key); err != nil {
			t.Fatal(err)
		}
		return req
	}
	origin := ts.origin.key
	cases := []struct {
		name    string
		req     *http.Request
		status  int
		errcode string
		inMsg   string
		cause   string
	}{
		{"no Authorization header", request(fedClaimPath, body), 401, "M_UNAUTHORIZED", "missing Authorization header", "missing_header"},
		{"an access token instead", func() *http.Request {
			r := request(fedClaimPath, body)
			r.Header.Set("Authorization", "Bearer "+aliceToken)
			return r
		}(), 401, "M_UNAUTHORIZED", "X-Matrix", "missing_header"},
		{"malformed header", func() *http.Request {
			r := request(fedClaimPath, body)
			r.Header.Set("Authorization", `X-Matrix origin="origin.test"`)
			return r
		}(), 401, "M_UNAUTHORIZED", "", "malformed_header"},
		{"wrong destination", signed(origin, originName, "hs9.test", fedClaimPath, body, body), 401, "M_UNAUTHORIZED", `destination "hs9.test" is not this server`, "wrong_destination"},
		{"bad signature (another key under the origin's key ID)", signed(impostor, originName, serverName, fedClaimPath, body, body), 401, "M_UNAUTHORIZED", "signature", "bad_signature"},
		{"body changed after signing", signed(origin, originName, serverName, fedClaimPath, body, claimBody(bob, "BOBPHONE")), 401, "M_UNAUTHORIZED", "does not verify", "bad_signature"},
		{"signed for another endpoint", func() *http.Request {
			r := signed(origin, originName, serverName, fedQueryPath, body, body) // signed for the query endpoint ...
			r.URL.Path = fedClaimPath                                             // ... sent to the claim endpoint
			return r
		}(), 401, "M_UNAUTHORIZED", "does not verify", "bad_signature"},
		{"unknown key ID", signed(mustKey(t, originName, "other"), originName, serverName, fedClaimPath, body, body), 401, "M_UNAUTHORIZED", "ed25519:other", "unknown_key"},
		{"unknown origin (unreachable)", signed(origin, "closed.test", serverName, fedClaimPath, body, body), 401, "M_UNAUTHORIZED", "server keys of closed.test", "key_fetch_failed"},
		{"unknown origin (private address, not discovered)", signed(origin, "127.0.0.1:9", serverName, fedClaimPath, body, body), 401, "M_UNAUTHORIZED", "127.0.0.1:9", "key_fetch_failed"},
		{"origin with an invalid key self-signature", signed(strangerKey, "badself.test", serverName, fedClaimPath, body, body), 401, "M_UNAUTHORIZED", "self-signature", "key_fetch_failed"},
		{"origin whose keys expired", signed(expiredKey, "expired.test", serverName, fedClaimPath, body, body), 401, "M_UNAUTHORIZED", "expired", "key_expired"},
		{"body not JSON", signed(origin, originName, serverName, fedClaimPath, "", "{"), 400, "M_NOT_JSON", "not JSON", "body_not_json"},
		{"a user of another server", signed(origin, originName, serverName, fedClaimPath, claimBody(bob2, "BOBDEV"), claimBody(bob2, "BOBDEV")), 400, "M_INVALID_PARAM", bob2, ""},
		{"query: no Authorization header", request(fedQueryPath, `{"device_keys":{}}`), 401, "M_UNAUTHORIZED", "missing Authorization header", "missing_header"},
		{"query: a user of another server", signed(origin, originName, serverName, fedQueryPath, `{"device_keys":{"`+bob2+`":[]}}`, `{"device_keys":{"`+bob2+`":[]}}`), 400, "M_INVALID_PARAM", bob2, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := ts.sendRaw(c.req)
			msg := wantError(t, c.name, r, c.status, c.errcode)
			if !strings.Contains(msg, c.inMsg) {
				t.Errorf("message %q does not contain %q", msg, c.inMsg)
			}
			t.Logf("%d %s", r.status, msg)
		})
	}
	// Nothing was claimed by the refused requests; a valid one claims.
	wantBody(t, "valid request", ts.ok(fedClaimPath, "", body), `{"one_time_keys":{"`+bob+`":{"BOBDEV":{"signed_curve25519:A":`+key("A")+`}}}}`)
	m := ts.metrics()
	wantCauses := map[string]float64{}
	for _, c := range cases {
		if c.cause != "" {
			wantCauses[c.cause]++
		}
	}
	for cause, want := range wantCauses {
		if got := m[`keyclaim_federation_auth_failures_total{cause="`+cause+`"}`]; got != want {
			t.Errorf("auth failures %s = %v, want %v", cause, got, want)
		}
	}
	if got := m[`keyclaim_federation_requests_total{destination="closed.test",endpoint="server_keys",outcome="transport_error"}`]; got != 1 {
		t.Errorf("key fetches of closed.test: %v, want 1", got)
	}
}

// mustKey returns a signing key of server with key version version.
func mustKey(t *testing.T, server core.ServerName, version string) *federation.SigningKey {
	t.Helper()
	k, err := federation.NewSigningKey(server, version, bytes.Repeat([]byte{9}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// startKeyServer serves GET /_matrix/key/v2/server on 127.0.0.1 with answer and returns its
// route URL.
func startKeyServer(t *testing.T, answer func(w http.ResponseWriter)) *url.URL {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+federation.KeyServerPath, func(w http.ResponseWriter, _ *http.Request) { answer(w) })
	ln := listenLoopback(t)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return routeTo(t, ln)
}

func TestFederationSigningKeyAndKeyServer(t *testing.T) {
	// The key is created on first start, kept across restarts, and published self-signed.
	dir := t.TempDir()
	keyPath := filepath.Join(dir, "sub", "signing.key")
	var ids []core.KeyID
	for range 2 {
		ts := startServer(t, sqliteBackend, func(cfg *hostserver.Config) { cfg.SigningKey = keyPath })
		r := ts.do(http.MethodGet, federation.KeyServerPath, "", "")
		if r.status != http.StatusOK {
			t.Fatalf("key server: %d %s", r.status, r.body)
		}
		keys, err := federation.ParseServerKeys([]byte(r.body), serverName)
		if err != nil {
			t.Fatalf("key server answer: %v\n%s", err, r.body)
		}
		if len(keys.VerifyKeys) != 1 || keys.VerifyKeys[ts.srv.SigningKey().ID()] == nil {
			t.Errorf("verify keys %v, want the server's key %s", keys.VerifyKeys, ts.srv.SigningKey().ID())
		}
		if d := time.Until(keys.ValidUntil); d < time.Hour || d > 25*time.Hour {
			t.Errorf("valid_until_ts %s from now", d)
		}
		ids = append(ids, ts.srv.SigningKey().ID())
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_ = ts.srv.Shutdown(ctx)
		cancel()
	}
	if ids[0] != ids[1] {
		t.Errorf("the key changed across restarts: %s, %s", ids[0], ids[1])
	}

	// A key file that cannot be read stops the start, saying what to do.
	bad := filepath.Join(dir, "bad.key")
	if err := os.WriteFile(bad, []byte("not a key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := hostserver.DefaultConfig()
	cfg.ServerName = serverName
	cfg.Tokens = filepath.Join(dir, "tokens.json")
	writeTokenFile(t, cfg.Tokens, testTokens)
	cfg.DB = "sqlite:" + filepath.Join(dir, "keys.db")
	cfg.SigningKey = bad
	if _, err := hostserver.New(cfg); err == nil || !strings.Contains(err.Error(), "bad.key") || !strings.Contains(err.Error(), "--federation=false") {
		t.Errorf("New with a bad key file: %v", err)
	}
}

func TestFederationOff(t *testing.T) {
	// --federation=false: no key is created or served, federation endpoints answer 403, remote
	// users are failures of their server.
	keyPath := filepath.Join(t.TempDir(), "signing.key")
	ts := startServer(t, sqliteBackend, func(cfg *hostserver.Config) {
		cfg.FederationEnabled = false
		cfg.SigningKey = keyPath
		cfg.Federation = nil
	})
	if ts.srv.SigningKey() != nil {
		t.Errorf("a signing key with federation off")
	}
	if _, err := os.Stat(keyPath); err == nil {
		t.Errorf("the key file was created with federation off")
	}
	wantError(t, "key server", ts.do(http.MethodGet, federation.KeyServerPath, "", ""), http.StatusNotFound, "M_UNRECOGNIZED")
	wantError(t, "federation claim", ts.post(fedClaimPath, "", claimBody(bob, "BOBDEV")), http.StatusForbidden, "M_FORBIDDEN")
	wantError(t, "federation query", ts.post(fedQueryPath, "", `{"device_keys":{}}`), http.StatusForbidden, "M_FORBIDDEN")
	wantBody(t, "remote claim", ts.ok(claimPath, aliceToken, claimBody(bob2, "BOBDEV")),
		`{"failures":{"hs2.test":{"message":"federation is off on this server","status":503}},"one_time_keys":{}}`)
}

// claimRequest is the one_time_keys of a claim request: user, device, algorithm.
type claimRequest map[string]map[string]string

// devicesOf asks signed_curve25519 keys of devices.
func devicesOf(devices ...string) map[string]string {
	m := make(map[string]string, len(devices))
	for _, d := range devices {
		m[d] = "signed_curve25519"
	}
	return m
}

// body returns the claim request body with a timeout in milliseconds.
func (r claimRequest) body(timeoutMS int) string {
	data, err := json.Marshal(map[string]any{"one_time_keys": r, "timeout": timeoutMS})
	if err != nil {
		panic(err)
	}
	return string(data)
}

// failureEntry is an entry of the failures map of a client claim answer.
type failureEntry struct {
	Status  int
	Errcode string
	Message string
}

// checkCompleteAnswer checks a client claim answer of a server in mode against the request
// (BRIEF section 4) and returns its failures: exactly the keys failures and one_time_keys, both
// objects; no null anywhere; failures only for servers of requested remote users (never
// hs1.test), each {status, message[, errcode]} (a bounded message, an errcode that looks like
// one), and exactly the servers in wantFailed; no user
// of a failed server in one_time_keys; only requested users and devices; every requested user
// of a server that did not fail present, in both modes; every requested device of such a server
// answered (msc4072) or answered only with a key (legacy); at most one key per device, of the
// requested algorithm, a string or an object with a string "key".
func checkCompleteAnswer(t *testing.T, body string, req claimRequest, mode string, wantFailed []core.ServerName) map[core.ServerName]failureEntry {
	t.Helper()
	var top map[string]json.RawMessage
	if err := json.Unmarshal([]byte(body), &top); err != nil {
		t.Fatalf("answer is not a JSON object: %v\n%s", err, body)
	}
	var whole any
	_ = json.Unmarshal([]byte(body), &whole)
	if p := findNull(whole, "$"); p != "" {
		t.Errorf("null at %s in %s", p, body)
	}
	if len(top) != 2 || top["failures"] == nil || top["one_time_keys"] == nil {
		t.Fatalf("answer keys: want exactly failures and one_time_keys: %s", body)
	}
	var rawFailures map[string]map[string]any
	if err := json.Unmarshal(top["failures"], &rawFailures); err != nil || rawFailures == nil {
		t.Fatalf("failures is not an object of objects: %s", top["failures"])
	}
	requestedServers := map[core.ServerName]bool{}
	for u := range req {
		id, err := core.ParseUserID(u)
		if err != nil {
			t.Fatal(err)
		}
		requestedServers[id.Server()] = true
	}
	failures := map[core.ServerName]failureEntry{}
	for s, f := range rawFailures {
		server := core.ServerName(s)
		if server == serverName || !requestedServers[server] {
			t.Errorf("failures names %s, which is ours or was not asked", s)
		}
		status, ok1 := f["status"].(float64)
		msg, ok2 := f["message"].(string)
		if !ok1 || !ok2 || status != float64(int(status)) || status <= 0 {
			t.Errorf("failure of %s is not {status, message}: %v", s, f)
		}
		if len(msg) > core.MaxFailureMessageBytes {
			t.Errorf("failure of %s: a message of %d bytes", s, len(msg))
		}
		e := failureEntry{Status: int(status), Message: msg}
		for k, v := range f {
			switch k {
			case "status", "message":
			case "errcode":
				if e.Errcode, _ = v.(string); !core.IsErrcode(e.Errcode) {
					t.Errorf("failure of %s: errcode %v", s, v)
				}
			default:
				t.Errorf("failure of %s has an unexpected key %q", s, k)
			}
		}
		failures[server] = e
	}
	var got []core.ServerName
	for s := range failures {
		got = append(got, s)
	}
	slices.Sort(got)
	want := slices.Clone(wantFailed)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("failed servers %v, want %v; answer %s", got, want, body)
	}
	var otk map[string]map[string]map[string]json.RawMessage
	if err := json.Unmarshal(top["one_time_keys"], &otk); err != nil || otk == nil {
		t.Fatalf("one_time_keys is not user -> device -> key ID -> key: %v: %s", err, top["one_time_keys"])
	}
	for u, devs := range otk {
		asked, ok := req[u]
		if !ok {
			t.Errorf("one_time_keys has %s, who was not asked for", u)
			continue
		}
		id, _ := core.ParseUserID(u)
		if _, failed := failures[id.Server()]; failed {
			t.Errorf("%s is in one_time_keys although its server %s is in failures", u, id.Server())
		}
		if devs == nil {
			t.Errorf("%s: devices are not an object", u)
		}
		if len(devs) == 0 && mode == "legacy" {
			t.Errorf("%s: {} in legacy mode (a user with no device to show is left out)", u)
		}
		for d, keys := range devs {
			alg, ok := asked[d]
			if !ok {
				t.Errorf("one_time_keys has %s %s, which was not asked for", u, d)
				continue
			}
			if keys == nil {
				t.Errorf("%s %s: not an object", u, d)
			}
			if len(keys) > 1 {
				t.Errorf("%s %s: %d keys, want at most one", u, d, len(keys))
			}
			if len(keys) == 0 && mode == "legacy" {
				t.Errorf("%s %s: {} in legacy mode", u, d)
			}
			for kid, v := range keys {
				if a, _, _ := strings.Cut(kid, ":"); a != alg {
					t.Errorf("%s %s: key %s is not of the algorithm %s", u, d, kid, alg)
				}
				var s string
				var o struct {
					Key *string `json:"key"`
				}
				if json.Unmarshal(v, &s) != nil && (json.Unmarshal(v, &o) != nil || o.Key == nil) {
					t.Errorf("%s %s: key %s is neither a string nor an object with a string key: %s", u, d, kid, v)
				}
			}
		}
	}
	for u, devs := range req {
		id, _ := core.ParseUserID(u)
		if _, failed := failures[id.Server()]; failed {
			continue
		}
		if _, ok := otk[u]; !ok && mode != "legacy" {
			t.Errorf("%s was asked for, its server did not fail, and it is not in one_time_keys: %s", u, body)
		}
		if mode != "legacy" {
			for d := range devs {
				if _, ok := otk[u][d]; !ok {
					t.Errorf("%s %s was asked for and is answered neither in one_time_keys nor by failures: %s", u, d, body)
				}
			}
		}
	}
	return failures
}

// findNull returns the path of the first null in v, or "".
func findNull(v any, path string) string {
	switch x := v.(type) {
	case nil:
		return path
	case map[string]any:
		for k, e := range x {
			if p := findNull(e, path+"."+k); p != "" {
				return p
			}
		}
	case []any:
		for i, e := range x {
			if p := findNull(e, fmt.Sprintf("%s[%d]", path, i)); p != "" {
				return p
			}
		}
	}
	return ""
}
