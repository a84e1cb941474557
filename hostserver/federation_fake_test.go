package hostserver_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyclaim/keyclaim/core"
	"github.com/keyclaim/keyclaim/hostserver"
	"github.com/keyclaim/keyclaim/hostserver/federation"
)

// A deliberately misbehaving remote server (fakeRemote) against the federation client of
// hs1.test: whatever the remote answers, hs1's answer to Alice is complete and valid (BRIEF
// section 4, MSC4072's "a single misbehaving server") and arrives within the timeout plus a
// small margin.

const (
	// fakeTimeout is the timeout of Alice's requests in this suite.
	fakeTimeout = 1500 * time.Millisecond
	// fakeMargin is how much later than the timeout an answer may arrive: generous, because a
	// loaded machine (CI runs packages in parallel) has taken 1.3 s more, and a client that ignored
	// the timeout would wait for the hanging fakes until the test ends, far beyond it.
	fakeMargin = 5 * time.Second
	// goodRemote is a well-behaved remote server asked in every request beside the misbehaving
	// one: one bad server must not spoil the answer of another.
	goodRemote = "good.fake.test"
)

// fakeBehaviour answers one federation request to a fake server; n is the server's name.
type fakeBehaviour func(w http.ResponseWriter, r *http.Request, n string)

// fakeRemote is one HTTP server on 127.0.0.1 that plays many remote servers, each with its
// own behaviour, chosen by the X-Matrix destination of the request. It checks that every
// request is correctly X-Matrix signed by hs1.test (fetching hs1's key from hs1 itself), and
// records the bodies it was sent.
type fakeRemote struct {
	t          *testing.T
	url        *url.URL
	fetcher    *federation.Client // fetches hs1's keys
	behaviours map[string]map[string]fakeBehaviour

	mu        sync.Mutex
	verifiers map[core.ServerName]*federation.Verifier
	received  map[string][]string // "server endpoint" -> bodies
	authErrs  []string
	stop      chan struct{}
}

// startFakeRemote starts a fake remote that verifies requests of hs1 at hs1URL. behaviours
// maps a server name, then an endpoint ("claim" or "query"), to its behaviour.
func startFakeRemote(t *testing.T, hs1URL *url.URL, behaviours map[string]map[string]fakeBehaviour) *fakeRemote {
	t.Helper()
	key, err := federation.NewSigningKey("fake.test", "fake", bytes.Repeat([]byte{3}, 32))
	if err != nil {
		t.Fatal(err)
	}
	fetcher, err := federation.NewClient(federation.ClientOptions{
		SigningKey: key,
		Resolver:   federation.NewResolver(federation.ResolverOptions{Static: federation.StaticRoutes{serverName: hs1URL}}),
	})
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeRemote{
		t: t, fetcher: fetcher, behaviours: behaviours,
		verifiers: map[core.ServerName]*federation.Verifier{},
		received:  map[string][]string{},
		stop:      make(chan struct{}),
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.url = routeTo(t, ln)
	srv := &http.Server{Handler: f, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		close(f.stop) // release the hanging handlers
		_ = srv.Close()
		fetcher.Resolver().CloseIdleConnections()
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, e := range f.authErrs {
			t.Errorf("fake remote: a request of hs1 did not verify: %s", e)
		}
	})
	return f
}

// ServeHTTP verifies the request, records it and plays the behaviour of its destination.
func (f *fakeRemote) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	x, err := federation.ParseXMatrix(r.Header.Get("Authorization"))
	if err != nil {
		f.authFailed(w, r.URL.Path+": "+err.Error())
		return
	}
	f.mu.Lock()
	v := f.verifiers[x.Destination]
	if v == nil {
		v, err = federation.NewVerifier(federation.VerifierOptions{ServerName: x.Destination, Keys: f.fetcher})
		if err != nil {
			f.mu.Unlock()
			f.authFailed(w, err.Error())
			return
		}
		f.verifiers[x.Destination] = v
	}
	f.mu.Unlock()
	origin, err := v.AuthenticateFederation(r, body)
	if err != nil || origin != serverName {
		f.authFailed(w, string(x.Destination)+" "+r.URL.Path+": origin "+string(origin)+": "+errString(err))
		return
	}
	endpoint := strings.TrimPrefix(r.URL.Path, "/_matrix/federation/v1/user/keys/")
	name := string(x.Destination)
	f.mu.Lock()
	f.received[name+" "+endpoint] = append(f.received[name+" "+endpoint], string(body))
	f.mu.Unlock()
	b := f.behaviours[name][endpoint]
	if b == nil {
		http.Error(w, `{"errcode":"M_UNRECOGNIZED","error":"no behaviour"}`, http.StatusNotFound)
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	b(w, r.WithContext(context.WithValue(r.Context(), fakeRemoteKey{}, f)), name)
}

func errString(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

func (f *fakeRemote) authFailed(w http.ResponseWriter, msg string) {
	f.mu.Lock()
	f.authErrs = append(f.authErrs, msg)
	f.mu.Unlock()
	http.Error(w, `{"errcode":"M_UNAUTHORIZED","error":"bad X-Matrix"}`, http.StatusUnauthorized)
}

// requests returns the bodies server was sent on endpoint.
func (f *fakeRemote) requests(server, endpoint string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.received[server+" "+endpoint])
}

// hang waits until the client gives up (or the test ends).
func (f *fakeRemote) hang(r *http.Request) {
	select {
	case <-r.Context().Done():
	case <-f.stop:
	case <-time.After(30 * time.Second):
	}
}

// answer writes status and body as JSON (N in body is replaced by the server name).
func answer(status int, body string) fakeBehaviour {
	return answerAs(status, "application/json", body)
}

// answerAs writes status, content type and body, with its Content-Length (N in body is
// replaced by the server name).
func answerAs(status int, contentType, body string) fakeBehaviour {
	return func(w http.ResponseWriter, _ *http.Request, n string) {
		body := strings.ReplaceAll(body, "N", n)
		w.Header().Set("Content-Type", contentType)
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}
}

// goodClaim answers every requested device with the key signed_curve25519:GOOD, "good-<device>".
func goodClaim(w http.ResponseWriter, r *http.Request, _ string) {
	var req struct {
		OneTimeKeys map[string]map[string]string `json:"one_time_keys"`
	}
	body, _ := io.ReadAll(r.Body)
	_ = json.Unmarshal(body, &req)
	out := map[string]map[string]map[string]string{}
	for u, devs := range req.OneTimeKeys {
		out[u] = map[string]map[string]string{}
		for d, alg := range devs {
			out[u][d] = map[string]string{alg + ":GOOD": "good-" + d}
		}
	}
	data, _ := json.Marshal(map[string]any{"one_time_keys": out})
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(data)
}

// The users every case asks of its server n (and of goodRemote, and of hs1 itself).
const (
	fakeU = "@u:N" // devices D1 and D2
	fakeW = "@w:N" // device W1
)

// fakeCase is one misbehaviour and what hs1 must make of it.
type fakeCase struct {
	name  string // the fake server's name is name + ".fake.test"
	claim fakeBehaviour
	// failed: the server must be in failures (with this status, and message containing
	// failMsg); otherwise devices says what each of its requested devices must be answered
	// with in msc4072 mode: "" for {}, else the key ID and key as JSON, "signed_curve25519:K1":{"key":"k1"}.
	failed    bool
	status    int
	failMsg   string
	devices   map[string]string // "user device" -> expected entry; user with N
	backedOff bool              // a second request must fail with "Not ready for retry", unsent
}

func fakeCases() []fakeCase {
	huge := `{"one_time_keys":{"@u:N":{"D1":{"signed_curve25519:K1":"` + strings.Repeat("A", 2<<20) + `"}}}}`
	return []fakeCase{
		{name: "omits-device", claim: answer(200, `{"one_time_keys":{"@u:N":{"D1":{"signed_curve25519:K1":{"key":"k1"}}}}}`),
			devices: map[string]string{"@u:N D1": `"signed_curve25519:K1":{"key":"k1"}`, "@u:N D2": "", "@w:N W1": ""}},
		{name: "adds-device", claim: answer(200, `{"one_time_keys":{"@u:N":{"D1":{"signed_curve25519:K1":"k1"},"D2":{"signed_curve25519:K2":"k2"},"UNASKED":{"signed_curve25519:K3":"k3"}},"@w:N":{"W1":{},"W2":{"signed_curve25519:K4":"k4"}}}}`),
			devices: map[string]string{"@u:N D1": `"signed_curve25519:K1":"k1"`, "@u:N D2": `"signed_curve25519:K2":"k2"`, "@w:N W1": ""}},
		{name: "other-servers-users", claim: answer(200, `{"one_time_keys":{"@u:N":{"D1":{"signed_curve25519:K1":"k1"}},`+
			`"@g:good.fake.test":{"G1":{"signed_curve25519:EVIL":"evil"}},"@bob:hs1.test":{"BOBDEV":{"signed_curve25519:EVIL":"evil"}},"@x:elsewhere.test":{"X":{"signed_curve25519:EVIL":"evil"}}}}`),
			devices: map[string]string{"@u:N D1": `"signed_curve25519:K1":"k1"`, "@u:N D2": "", "@w:N W1": ""}},
		{name: "unasked-users", claim: answer(200, `{"one_time_keys":{"@nobody:N":{"D1":{"signed_curve25519:K1":"k1"}},"@w:N":{"W1":{"signed_curve25519:K2":"k2"}}}}`),
			devices: map[string]string{"@u:N D1": "", "@u:N D2": "", "@w:N W1": `"signed_curve25519:K2":"k2"`}},
		{name: "wrong-algorithm", claim: answer(200, `{"one_time_keys":{"@u:N":{"D1":{"curve25519:K1":"k1","signed_curve25519":"no key ID","signed_curve25519:":"empty key ID"},"D2":{"signed_curve25519:K2":"k2","curve25519:K0":"k0"}}}}`),
			devices: map[string]string{"@u:N D1": "", "@u:N D2": `"signed_curve25519:K2":"k2"`, "@w:N W1": ""}},
		{name: "several-keys", claim: answer(200, `{"one_time_keys":{"@u:N":{"D1":{"signed_curve25519:K3":"k3","signed_curve25519:K1":{"key":"k1"},"signed_curve25519:K2":"k2"}},"@w:N":{"W1":{"signed_curve25519:B":5,"signed_curve25519:C":"c","signed_curve25519:A":{"nokey":1}}}}}`),
			devices: map[string]string{"@u:N D1": `"signed_curve25519:K1":{"key":"k1"}`, "@u:N D2": "", "@w:N W1": `"signed_curve25519:C":"c"`}},
		{name: "non-object-values", claim: answer(200, `{"one_time_keys":{"@u:N":{"D1":"a string","D2":["signed_curve25519:K1","k1"]},"@w:N":42}}`),
			devices: map[string]string{"@u:N D1": "", "@u:N D2": "", "@w:N W1": ""}},
		{name: "bad-key-values", claim: answer(200, `{"one_time_keys":{"@u:N":{"D1":{"signed_curve25519:K1":7},"D2":{"signed_curve25519:K2":{"key":8}}},"@w:N":{"W1":{"signed_curve25519:K3":[]}}}}`),
			devices: map[string]string{"@u:N D1": "", "@u:N D2": "", "@w:N W1": ""}},
		{name: "nulls", claim: answer(200, `{"one_time_keys":{"@u:N":{"D1":null,"D2":{"signed_curve25519:K2":null}},"@w:N":null},"failures":null}`),
			devices: map[string]string{"@u:N D1": "", "@u:N D2": "", "@w:N W1": ""}},
		{name: "null-inside-keys", claim: answer(200, `{"one_time_keys":{"@u:N":{"D1":{"signed_curve25519:A":{"key":"k","signatures":null,"unsigned":{"x":null}}},`+
			`"D2":{"signed_curve25519:A":{"key":"ok","extra":null},"signed_curve25519:B":{"key":"kb"}}},"@w:N":{"W1":{"signed_curve25519:K":{"key":"k","l":[null]}}}}}`),
			devices: map[string]string{"@u:N D1": "", "@u:N D2": `"signed_curve25519:B":{"key":"kb"}`, "@w:N W1": ""}},
		{name: "injects-failures", claim: answer(200, `{"failures":{"hs1.test":{"status":500,"message":"x"},"good.fake.test":{"status":500,"message":"x"}},"one_time_keys":{"@u:N":{"D1":{"signed_curve25519:K1":"k1"}}}}`),
			devices: map[string]string{"@u:N D1": `"signed_curve25519:K1":"k1"`, "@u:N D2": "", "@w:N W1": ""}},
		{name: "one-time-keys-null", claim: answer(200, `{"one_time_keys":null}`), failed: true, status: 502, failMsg: "required shape"},
		{name: "one-time-keys-missing", claim: answer(200, `{"keys":{}}`), failed: true, status: 502, failMsg: "one_time_keys is missing"},
		{name: "duplicate-keys", claim: answer(200, `{"one_time_keys":{"@u:N":{"D1":{"signed_curve25519:K1":"k1"}},"@u:N":{"D1":{"signed_curve25519:K2":"k2"}}}}`), failed: true, status: 502, failMsg: "duplicate"},
		{name: "not-json", claim: answer(200, `{"one_time_keys":{"@u:N":`), failed: true, status: 502, failMsg: "not valid JSON"},
		{name: "invalid-utf8", claim: answer(200, "{\"one_time_keys\":{\"@u:N\":{\"D1\":{\"signed_curve25519:K1\":\"\xff\xfe\"}}}}"), failed: true, status: 502, failMsg: "not valid JSON"},
		{name: "html-ok", claim: answerAs(200, "text/html", `<!DOCTYPE html><html><body><h1>Welcome to nginx!</h1></body></html>`), failed: true, status: 502, failMsg: "not valid JSON"},
		{name: "html-error-page", claim: answerAs(502, "text/html", `<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center></body></html>`),
			failed: true, status: 502, failMsg: "the remote server answered HTTP 502", backedOff: true},
		{name: "server-error", claim: answer(500, `{"errcode":"M_UNKNOWN","error":"Internal server error"}`), failed: true, status: 500, failMsg: "Internal server error", backedOff: true},
		{name: "not-found", claim: answer(404, `{"errcode":"M_UNRECOGNIZED","error":"Unrecognized request"}`), failed: true, status: 404, failMsg: "Unrecognized request"},
		{name: "redirect", claim: func(w http.ResponseWriter, r *http.Request, _ string) {
			http.Redirect(w, r, "http://127.0.0.1:1/elsewhere", http.StatusFound)
		}, failed: true, status: 302, failMsg: "HTTP 302"},
		{name: "not-an-object", claim: answer(200, `[{"one_time_keys":{}}]`), failed: true, status: 502, failMsg: "not a JSON object"},
		{name: "a-string", claim: answer(200, `"one_time_keys"`), failed: true, status: 502, failMsg: "not a JSON object"},
		{name: "huge-body", claim: answer(200, huge), failed: true, status: 502, failMsg: "larger than the limit"},
		{name: "huge-body-chunked", claim: func(w http.ResponseWriter, _ *http.Request, n string) {
			w.Header().Set("Content-Type", "application/json")
			body := strings.ReplaceAll(huge, "N", n)
			for i := 0; i < len(body); i += 64 << 10 { // no Content-Length: chunked
				_, _ = io.WriteString(w, body[i:min(i+64<<10, len(body))])
				w.(http.Flusher).Flush()
			}
		}, failed: true, status: 502, failMsg: "larger than the limit"},
		{name: "deep-nesting", claim: answer(200, `{"one_time_keys":{"@u:N":{"D1":{"signed_curve25519:K1":`+strings.Repeat(`[`, 100000)+strings.Repeat(`]`, 100000)+`,"signed_curve25519:K2":"k2"}}}}`),
			failed: true, status: 502, failMsg: "nested deeper than"},
		{name: "hangs", claim: func(w http.ResponseWriter, r *http.Request, _ string) {
			fakeRemoteOf(r).hang(r)
		}, failed: true, status: 504},
		{name: "hangs-mid-body", claim: func(w http.ResponseWriter, r *http.Request, _ string) {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Content-Length", "1000")
			_, _ = io.WriteString(w, `{"one_time_keys":{"@u:N":`)
			w.(http.Flusher).Flush()
			fakeRemoteOf(r).hang(r)
		}, failed: true, status: 504},
		{name: "closes-connection", claim: func(w http.ResponseWriter, _ *http.Request, _ string) {
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				_ = conn.Close()
			}
		}, failed: true, status: 503, failMsg: "could not reach", backedOff: true},
	}
}

// fakeRemoteKey is the request context key of the fake remote, for behaviours that hang.
type fakeRemoteKey struct{}

func fakeRemoteOf(r *http.Request) *fakeRemote {
	f, _ := r.Context().Value(fakeRemoteKey{}).(*fakeRemote)
	return f
}

func TestFederationMisbehavingRemote(t *testing.T) {
	for _, mode := range []string{"msc4072", "legacy"} {
		t.Run(mode, func(t *testing.T) { testMisbehavingRemote(t, mode) })
	}
}

func testMisbehavingRemote(t *testing.T, mode string) {
	cases := fakeCases()
	behaviours := map[string]map[string]fakeBehaviour{goodRemote: {"claim": goodClaim, "query": answer(200, `{"device_keys":{}}`)}}
	for _, c := range cases {
		behaviours[c.name+".fake.test"] = map[string]fakeBehaviour{"claim": c.claim}
	}
	for name, b := range fakeQueryBehaviours() {
		behaviours[name] = map[string]fakeBehaviour{"query": b}
	}
	ln := listenLoopback(t)
	fake := startFakeRemote(t, routeTo(t, ln), behaviours)
	hs1 := startServerOn(t, sqliteBackend, ln, func(cfg *hostserver.Config) {
		cfg.Mode = mode
		cfg.Federation = nil // the real client
		for name := range behaviours {
			cfg.FederationResolve[core.ServerName(name)] = fake.url
		}
	})

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			n := c.name + ".fake.test"
			req := claimRequest{
				"@u:" + n:              devicesOf("D1", "D2"),
				"@w:" + n:              devicesOf("W1"),
				"@g:" + goodRemote:     devicesOf("G1"),
				bob:                    devicesOf("BOBDEV"),
				"@empty:" + goodRemote: {},
			}
			var wantFailed []core.ServerName
			if c.failed {
				wantFailed = []core.ServerName{core.ServerName(n)}
			}
			start := time.Now()
			got := hs1.ok(claimPath, aliceToken, req.body(int(fakeTimeout.Milliseconds())))
			elapsed := time.Since(start)
			if elapsed > fakeTimeout+fakeMargin {
				t.Errorf("answered after %s, more than the timeout %s plus %s", elapsed, fakeTimeout, fakeMargin)
			}
			failures := checkCompleteAnswer(t, got, req, mode, wantFailed)
			var otk map[string]map[string]map[string]json.RawMessage
			var top struct {
				OneTimeKeys json.RawMessage `json:"one_time_keys"`
			}
			_ = json.Unmarshal([]byte(got), &top)
			_ = json.Unmarshal(top.OneTimeKeys, &otk)

			// The good server and hs1's own user are answered whatever the bad one said.
			if g := string(otk["@g:"+goodRemote]["G1"]["signed_curve25519:GOOD"]); g != `"good-G1"` {
				t.Errorf("the good server's device: %s", got)
			}
			if mode == "msc4072" && string(hs1Device(otk, bob, "BOBDEV")) != "{}" {
				t.Errorf("hs1's own device was changed by a remote answer: %s", got)
			}
			if c.failed {
				f := failures[core.ServerName(n)]
				if f.Status != c.status || !strings.Contains(f.Message, c.failMsg) {
					t.Errorf("failure %+v, want status %d and a message containing %q", f, c.status, c.failMsg)
				}
			} else {
				for ud, want := range c.devices {
					user, dev, _ := strings.Cut(strings.ReplaceAll(ud, "N", n), " ")
					entry := string(hs1Device(otk, user, dev))
					switch {
					case mode == "msc4072" && entry != "{"+want+"}":
						t.Errorf("%s %s: got %s, want {%s}", user, dev, entry, want)
					case mode == "legacy" && want == "" && entry != "":
						t.Errorf("%s %s: got %s, want it left out (legacy)", user, dev, entry)
					case mode == "legacy" && want != "" && entry != "{"+want+"}":
						t.Errorf("%s %s: got %s, want {%s}", user, dev, entry, want)
					}
				}
			}
			// hs1 asked the fake server about its own users only, once.
			sent := fake.requests(n, "claim")
			wantSent := `{"one_time_keys":{"@u:` + n + `":{"D1":"signed_curve25519","D2":"signed_curve25519"},"@w:` + n + `":{"W1":"signed_curve25519"}}}`
			if len(sent) != 1 || sent[0] != wantSent {
				t.Errorf("hs1 sent %q, want once %s", sent, wantSent)
			}
			if !c.backedOff {
				return
			}
			// A server that failed so (5xx, unreachable) is not asked again for a while.
			got = hs1.ok(claimPath, aliceToken, req.body(int(fakeTimeout.Milliseconds())))
			failures = checkCompleteAnswer(t, got, req, mode, wantFailed)
			if f := failures[core.ServerName(n)]; f.Status != 503 || f.Message != federation.NotReadyForRetry {
				t.Errorf("second call: failure %+v, want 503 %q", f, federation.NotReadyForRetry)
			}
			if sent := fake.requests(n, "claim"); len(sent) != 1 {
				t.Errorf("a backed-off server was sent %d requests", len(sent))
			}
		})
	}

	t.Run("query", func(t *testing.T) { testMisbehavingQueries(t, hs1) })

	t.Run("metrics", func(t *testing.T) {
		// A request abandoned at the deadline is recorded when its call returns, just after
		// the answer to the client: wait a little for those.
		want := map[string]float64{
			`keyclaim_federation_requests_total{destination="good.fake.test",endpoint="claim",outcome="ok"}`:                           float64(len(cases) + 3), // + the backed-off cases' second calls
			`keyclaim_federation_requests_total{destination="omits-device.fake.test",endpoint="claim",outcome="ok"}`:                   1,
			`keyclaim_federation_requests_total{destination="server-error.fake.test",endpoint="claim",outcome="http_error"}`:           1,
			`keyclaim_federation_requests_total{destination="server-error.fake.test",endpoint="claim",outcome="backoff"}`:              1,
			`keyclaim_federation_requests_total{destination="html-error-page.fake.test",endpoint="claim",outcome="http_error"}`:        1,
			`keyclaim_federation_requests_total{destination="huge-body.fake.test",endpoint="claim",outcome="too_large"}`:               1,
			`keyclaim_federation_requests_total{destination="huge-body-chunked.fake.test",endpoint="claim",outcome="too_large"}`:       1,
			`keyclaim_federation_requests_total{destination="hangs.fake.test",endpoint="claim",outcome="timeout"}`:                     1,
			`keyclaim_federation_requests_total{destination="hangs-mid-body.fake.test",endpoint="claim",outcome="timeout"}`:            1,
			`keyclaim_federation_requests_total{destination="closes-connection.fake.test",endpoint="claim",outcome="transport_error"}`: 1,
			`keyclaim_federation_requests_total{destination="q-hangs.fake.test",endpoint="query",outcome="timeout"}`:                   1,
			`keyclaim_federation_requests_total{destination="q-500.fake.test",endpoint="query",outcome="http_error"}`:                  1,
			`keyclaim_federation_request_duration_seconds_count{destination="hangs.fake.test",endpoint="claim"}`:                       1,
			// The backed-off call was not sent: one latency observation.
			`keyclaim_federation_request_duration_seconds_count{destination="server-error.fake.test",endpoint="claim"}`: 1,
		}
		deadline := time.Now().Add(2 * time.Second)
		for {
			m := hs1.metrics()
			var wrong []string
			for series, w := range want {
				if got := m[series]; got != w {
					wrong = append(wrong, series+" = "+strconv.FormatFloat(got, 'g', -1, 64)+", want "+strconv.FormatFloat(w, 'g', -1, 64))
				}
			}
			if len(wrong) == 0 {
				return
			}
			if time.Now().After(deadline) {
				slices.Sort(wrong)
				t.Errorf("metrics:\n%s", strings.Join(wrong, "\n"))
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}

// hs1Device returns the raw entry of user's device in one_time_keys ("" when absent).
func hs1Device(otk map[string]map[string]map[string]json.RawMessage, user, device string) []byte {
	keys, ok := otk[user][device]
	if !ok {
		return nil
	}
	var buf bytes.Buffer
	buf.WriteByte('{')
	ids := make([]string, 0, len(keys))
	for k := range keys {
		ids = append(ids, k)
	}
	slices.Sort(ids)
	for i, k := range ids {
		if i > 0 {
			buf.WriteByte(',')
		}
		kj, _ := json.Marshal(k)
		buf.Write(kj)
		buf.WriteByte(':')
		buf.Write(keys[k])
	}
	buf.WriteByte('}')
	return buf.Bytes()
}

// fakeQueryBehaviours are the query behaviours of fake servers named q-*.fake.test.
func fakeQueryBehaviours() map[string]fakeBehaviour {
	dk := func(user, device string) string {
		return `{"device_id":"` + device + `","keys":{"ed25519:` + device + `":"ed"},"user_id":"` + user + `"}`
	}
	return map[string]fakeBehaviour{
		"q-good.fake.test": func(w http.ResponseWriter, _ *http.Request, n string) {
			u, v := "@u:"+n, "@v:"+n
			answer(200, `{"device_keys":{`+
				`"`+u+`":{"D1":`+dk(u, "D1")+`,"D2":`+dk("@someone:"+n, "D2")+`,"D3":`+dk(u, "OTHER")+`,"D4":"not an object"},`+
				`"`+v+`":{"V1":`+dk(v, "V1")+`,"V2":`+dk(v, "V2")+`},`+
				`"@evil:N":{"E":`+dk("@evil:"+n, "E")+`},"`+bob+`":{"BOBDEV":`+dk(bob, "BOBDEV")+`}},"failures":{"hs1.test":{}}}`)(w, nil, n)
		},
		"q-not-json.fake.test":       answer(200, `{"device_keys":`),
		"q-not-object.fake.test":     answer(200, `[]`),
		"q-no-device-keys.fake.test": answer(200, `{"device_keys":null}`),
		"q-500.fake.test":            answer(500, `{"errcode":"M_UNKNOWN","error":"boom"}`),
		"q-huge.fake.test":           answer(200, `{"device_keys":{"x":"`+strings.Repeat("x", 2<<20)+`"}}`),
		"q-hangs.fake.test": func(w http.ResponseWriter, r *http.Request, _ string) {
			fakeRemoteOf(r).hang(r)
		},
	}
}

// testMisbehavingQueries queries the fake servers named q-*.fake.test through hs1.
func testMisbehavingQueries(t *testing.T, hs1 *testServer) {
	n := "q-good.fake.test"
	got := hs1.ok(queryPath, aliceToken, `{"device_keys":{"@u:`+n+`":[],"@v:`+n+`":["V1"]},"timeout":1500}`)
	wantBody(t, "well-formed answer, filtered", got, `{"device_keys":{"@u:`+n+`":{"D1":{"device_id":"D1","keys":{"ed25519:D1":"ed"},"user_id":"@u:`+n+`"}},`+
		`"@v:`+n+`":{"V1":{"device_id":"V1","keys":{"ed25519:V1":"ed"},"user_id":"@v:`+n+`"}}},"failures":{}}`)
	for _, c := range []struct {
		name    string
		devices string // the device list of @u
		status  int
		message string
	}{
		{"q-not-json", `[]`, 502, "the remote answer is not valid JSON"},
		{"q-not-object", `[]`, 502, "the remote answer is not of the required shape: device_keys must be an object"},
		{"q-no-device-keys", `[]`, 502, "the remote answer is not of the required shape: device_keys must be an object"},
		{"q-500", `[]`, 500, "boom"},
		// One device asked: the bound is 1 MiB and 2 KiB (see "q-huge, all devices" below).
		{"q-huge", `["D1"]`, 502, "the answer of q-huge.fake.test is larger than the limit of 1050624 bytes"},
		{"q-hangs", `[]`, 504, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			n := c.name + ".fake.test"
			start := time.Now()
			got := hs1.ok(queryPath, aliceToken, `{"device_keys":{"@u:`+n+`":`+c.devices+`,"@g:`+goodRemote+`":[]},"timeout":1500}`)
			if d := time.Since(start); d > fakeTimeout+fakeMargin {
				t.Errorf("answered after %s", d)
			}
			var answer struct {
				DeviceKeys map[string]json.RawMessage `json:"device_keys"`
				Failures   map[string]failureEntry    `json:"failures"`
			}
			if err := json.Unmarshal([]byte(got), &answer); err != nil {
				t.Fatalf("%v: %s", err, got)
			}
			f, ok := answer.Failures[n]
			if !ok || f.Status != c.status || c.message != "" && f.Message != c.message {
				t.Errorf("failure %+v, want status %d, message %q: %s", f, c.status, c.message, got)
			}
			if _, ok := answer.DeviceKeys["@u:"+n]; ok || strings.Contains(got, "null") {
				t.Errorf("a failed server's user in device_keys, or a null: %s", got)
			}
		})
	}
	t.Run("q-huge, all devices", func(t *testing.T) {
		// How many devices "all" is cannot be known before the answer: the bound is the ceiling
		// (the allowance of --max-pairs devices), so the 2 MiB answer is read, and judged: it
		// holds nothing of @u.
		n := "q-huge.fake.test"
		got := hs1.ok(queryPath, aliceToken, `{"device_keys":{"@u:`+n+`":[]},"timeout":1500}`)
		wantBody(t, "all devices of a user of q-huge", got, `{"device_keys":{"@u:`+n+`":{}},"failures":{}}`)
	})
}
