package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyclaim/keyclaim/core"
	"github.com/keyclaim/keyclaim/hostserver/proxy"
	"github.com/prometheus/client_golang/prometheus"
)

// The proxy runs in front of fakeUpstream, a deliberately misbehaving homeserver written for
// these tests, over real sockets on 127.0.0.1.

const (
	upstreamName = "hs1.test" // the fake upstream's own server name
	alice        = "@alice:hs1.test"
	bob          = "@bob:hs2.test"
	token        = "Bearer syt_YWxpY2U_secret"
)

// fakeUpstream is a homeserver stand-in whose claim answer each test chooses. It records every
// request it receives.
type fakeUpstream struct {
	srv *httptest.Server

	mu   sync.Mutex
	seen []seenRequest
}

// seenRequest is one request as the fake upstream received it.
type seenRequest struct {
	method, path, rawQuery string
	header                 http.Header
	body                   []byte
}

// newFakeUpstream starts a fake upstream that answers with answer.
func newFakeUpstream(t *testing.T, answer http.HandlerFunc) *fakeUpstream {
	t.Helper()
	f := &fakeUpstream{}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("fake upstream: reading the body: %v", err)
		}
		f.mu.Lock()
		f.seen = append(f.seen, seenRequest{r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Clone(), body})
		f.mu.Unlock()
		r.Body = io.NopCloser(bytes.NewReader(body))
		answer(w, r)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

// requests returns the requests received so far.
func (f *fakeUpstream) requests() []seenRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]seenRequest(nil), f.seen...)
}

// answerWith answers every request with status, Content-Type and body, plus extra headers.
func answerWith(status int, contentType, body string, extra ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if contentType != "" {
			w.Header().Set("Content-Type", contentType)
		} else {
			w.Header()["Content-Type"] = nil // no sniffing: no Content-Type at all
		}
		for i := 0; i+1 < len(extra); i += 2 {
			w.Header().Set(extra[i], extra[i+1])
		}
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}
}

// testProxy is a running proxy and what its Metrics received.
type testProxy struct {
	base string
	obs  chan proxy.Observation
}

// startProxy starts a proxy in front of upstream; edit may change the configuration.
func startProxy(t *testing.T, upstream string, edit func(cfg *proxy.Config)) *testProxy {
	t.Helper()
	u, err := url.Parse(upstream)
	if err != nil {
		t.Fatal(err)
	}
	tp := &testProxy{obs: make(chan proxy.Observation, 64)}
	cfg := proxy.Config{
		Upstream:      u,
		ServerName:    upstreamName,
		TimeoutMargin: 300 * time.Millisecond,
		Logger:        slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})),
		Metrics:       proxy.MetricsFunc(func(o proxy.Observation) { tp.obs <- o }),
	}
	if edit != nil {
		edit(&cfg)
	}
	p, err := proxy.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	tp.base = srv.URL
	return tp
}

// observation returns the next observation the proxy recorded.
func (tp *testProxy) observation(t *testing.T) proxy.Observation {
	t.Helper()
	select {
	case o := <-tp.obs:
		return o
	case <-time.After(5 * time.Second):
		t.Fatal("the proxy recorded no observation")
		return proxy.Observation{}
	}
}

// response is an HTTP answer as the client saw it.
type response struct {
	status int
	header http.Header
	body   string
}

var client = &http.Client{Timeout: 30 * time.Second}

// send sends a request to the proxy; auth "" sends no Authorization header.
func send(t *testing.T, method, target, auth, body string) response {
	t.Helper()
	req, err := http.NewRequestWithContext(specTest(t), method, target, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", method, target, err)
	}
	return response{resp.StatusCode, resp.Header, string(data)}
}

// claimRequest is the request of most tests: written with spaces, an unknown field and a
// timeout, so that "the original body" differs from any canonical form.
const claimRequest = `{ "timeout": 3000, "x-extension": [1, {"a": null}],
  "one_time_keys": {"` + bob + `": {"B1": "signed_curve25519"},
    "` + alice + `": {"A2": "signed_curve25519", "A1": "signed_curve25519"}}}`

const keyA1 = `{"key":"kA1","signatures":{"` + alice + `":{"ed25519:A1":"sig"}}}`

func TestClaimAgainstMisbehavingUpstream(t *testing.T) {
	big := `{"one_time_keys":{"` + alice + `":{"A1":{"signed_curve25519:AAAA":"` + strings.Repeat("x", 9<<20) + `"}}}}`
	// The bound on the answer to claimRequest's 3 devices: 8 MiB plus 2 KiB per device.
	tooLarge := tooLargeBody(proxy.DefaultMaxUpstreamBody + 3*proxy.DefaultUpstreamBodyPerDevice)
	cases := []struct {
		name        string
		answer      http.HandlerFunc
		status      int
		body        string
		contentType string // "" for no Content-Type
		header      map[string]string
		result      proxy.Result
		filled      int
		dropped     int
		slow        bool // moves megabytes: a generous timeout margin, for slow (race-enabled) runs
	}{
		{
			name:        "omits devices",
			answer:      answerWith(200, "application/json", `{"one_time_keys":{"`+alice+`":{"A1":{"signed_curve25519:AAAA":`+keyA1+`}}}}`),
			status:      200,
			body:        `{"failures":{},"one_time_keys":{"` + alice + `":{"A1":{"signed_curve25519:AAAA":` + keyA1 + `},"A2":{}},"` + bob + `":{"B1":{}}}}`,
			contentType: "application/json",
			result:      proxy.ResultCompleted,
			filled:      2,
		},
		{
			name:        "answers {} itself: nothing filled",
			answer:      answerWith(200, "application/json", `{"failures":{},"one_time_keys":{"`+alice+`":{"A1":{},"A2":{}},"`+bob+`":{"B1":{}}}}`),
			status:      200,
			body:        `{"failures":{},"one_time_keys":{"` + alice + `":{"A1":{},"A2":{}},"` + bob + `":{"B1":{}}}}`,
			contentType: "application/json",
			result:      proxy.ResultCompleted,
		},
		{
			// Junk: an unrequested user (1), an unrequested device (1), a key of another
			// algorithm (1), a value that is not a key (1), a second key beyond the one kept (1),
			// a device value that is not an object (1), and a failure of a server nobody asked
			// about (1).
			name: "adds junk",
			answer: answerWith(200, "application/json", `{"one_time_keys":{`+
				`"@eve:hs1.test":{"E1":{"signed_curve25519:E":"e"}},`+
				`"`+alice+`":{"A9":{"signed_curve25519:Z":"z"},`+
				`"A1":{"curve25519:X":"x","signed_curve25519:BBBB":42,"signed_curve25519:CCCC":"second","signed_curve25519:AAAA":`+keyA1+`},`+
				`"A2":"not an object"}},"failures":{"elsewhere.test":{"status":500,"message":"boom"}}}`),
			status:      200,
			body:        `{"failures":{},"one_time_keys":{"` + alice + `":{"A1":{"signed_curve25519:AAAA":` + keyA1 + `},"A2":{}},"` + bob + `":{"B1":{}}}}`,
			contentType: "application/json",
			result:      proxy.ResultCompleted,
			filled:      2,
			dropped:     7,
		},
		{
			name:        "null maps",
			answer:      answerWith(200, "application/json", `{"one_time_keys":null,"failures":null}`),
			status:      200,
			body:        `{"failures":{},"one_time_keys":{"` + alice + `":{"A1":{},"A2":{}},"` + bob + `":{"B1":{}}}}`,
			contentType: "application/json",
			result:      proxy.ResultCompleted,
			filled:      3,
		},
		{
			name:        "null user map",
			answer:      answerWith(200, "application/json", `{"one_time_keys":{"`+alice+`":null,"`+bob+`":{"B1":null}}}`),
			status:      200,
			body:        `{"failures":{},"one_time_keys":{"` + alice + `":{"A1":{},"A2":{}},"` + bob + `":{"B1":{}}}}`,
			contentType: "application/json",
			result:      proxy.ResultCompleted,
			filled:      3,
			dropped:     2,
		},
		{
			// The failed server's user leaves one_time_keys even though the upstream answered
			// for it too (1 dropped); failures of the upstream itself (1) and of a server nobody
			// asked about (1) are dropped; the kept failure is reduced to the shape clients read.
			name: "failures",
			answer: answerWith(200, "application/json", `{"one_time_keys":{"`+bob+`":{"B1":{"signed_curve25519:Q":"q"}}},"failures":{`+
				`"hs2.test":{"status":503,"message":"Not ready for retry","extra":true},"hs1.test":{"status":500},"other.test":{}}}`),
			status:      200,
			body:        `{"failures":{"hs2.test":{"message":"Not ready for retry","status":503}},"one_time_keys":{"` + alice + `":{"A1":{},"A2":{}}}}`,
			contentType: "application/json",
			result:      proxy.ResultCompleted,
			filled:      2,
			dropped:     3,
		},
		{
			name:        "500 passed through",
			answer:      answerWith(500, "application/json", `{"errcode":"M_UNKNOWN","error":"Internal server error"}`),
			status:      500,
			body:        `{"errcode":"M_UNKNOWN","error":"Internal server error"}`,
			contentType: "application/json",
			result:      proxy.ResultPassedThrough,
		},
		{
			name:        "401 M_UNKNOWN_TOKEN passed through",
			answer:      answerWith(401, "application/json", `{"errcode":"M_UNKNOWN_TOKEN","error":"Invalid access token passed.","soft_logout":false}`, "WWW-Authenticate", "Bearer"),
			status:      401,
			body:        `{"errcode":"M_UNKNOWN_TOKEN","error":"Invalid access token passed.","soft_logout":false}`,
			contentType: "application/json",
			result:      proxy.ResultPassedThrough,
		},
		{
			name:        "403 passed through",
			answer:      answerWith(403, "application/json", `{"errcode":"M_FORBIDDEN","error":"You are not allowed to do that"}`),
			status:      403,
			body:        `{"errcode":"M_FORBIDDEN","error":"You are not allowed to do that"}`,
			contentType: "application/json",
			result:      proxy.ResultPassedThrough,
		},
		{
			name:        "429 passed through with Retry-After",
			answer:      answerWith(429, "application/json", `{"errcode":"M_LIMIT_EXCEEDED","error":"Too Many Requests","retry_after_ms":2000}`, "Retry-After", "2"),
			status:      429,
			body:        `{"errcode":"M_LIMIT_EXCEEDED","error":"Too Many Requests","retry_after_ms":2000}`,
			contentType: "application/json",
			header:      map[string]string{"Retry-After": "2"},
			result:      proxy.ResultPassedThrough,
		},
		{
			name:        "400 passed through",
			answer:      answerWith(400, "application/json", `{"errcode":"M_INVALID_PARAM","error":"One time key signed_curve25519 has no key"}`),
			status:      400,
			body:        `{"errcode":"M_INVALID_PARAM","error":"One time key signed_curve25519 has no key"}`,
			contentType: "application/json",
			result:      proxy.ResultPassedThrough,
		},
		{
			name:        "404 in plain text passed through",
			answer:      answerWith(404, "text/plain; charset=utf-8", "404 page not found\n"),
			status:      404,
			body:        "404 page not found\n",
			contentType: "text/plain; charset=utf-8",
			result:      proxy.ResultPassedThrough,
		},
		{
			name:   "502 without Content-Type passed through",
			answer: answerWith(502, "", "bad gateway"),
			status: 502,
			body:   "bad gateway",
			result: proxy.ResultPassedThrough,
		},
		{
			name:        "HTML garbage",
			answer:      answerWith(200, "text/html", "<html><body>Welcome to nginx!</body></html>"),
			status:      502,
			body:        `{"errcode":"M_UNKNOWN","error":"the upstream homeserver answered HTTP 200 with a body that is not a claim answer (M_NOT_JSON: invalid JSON at byte 0: expected a JSON value)"}`,
			contentType: "application/json",
			result:      proxy.ResultBadAnswer,
		},
		{
			name:        "not an object",
			answer:      answerWith(200, "application/json", `[{"one_time_keys":{}}]`),
			status:      502,
			body:        `{"errcode":"M_UNKNOWN","error":"the upstream homeserver answered HTTP 200 with a body that is not a claim answer (M_BAD_JSON: the upstream answer is not a JSON object)"}`,
			contentType: "application/json",
			result:      proxy.ResultBadAnswer,
		},
		{
			name:        "wrong shape",
			answer:      answerWith(200, "application/json", `{"one_time_keys":["@alice:hs1.test"]}`),
			status:      502,
			body:        `{"errcode":"M_UNKNOWN","error":"the upstream homeserver answered HTTP 200 with a body that is not a claim answer (M_BAD_JSON: one_time_keys must be an object)"}`,
			contentType: "application/json",
			result:      proxy.ResultBadAnswer,
		},
		{
			name:        "truncated JSON",
			answer:      answerWith(200, "application/json", `{"one_time_keys":{"`+alice+`":{"A1":{}`),
			status:      502,
			body:        `{"errcode":"M_UNKNOWN","error":"the upstream homeserver answered HTTP 200 with a body that is not a claim answer (M_NOT_JSON: invalid JSON: unexpected end of input, expected ',' or '}')"}`,
			contentType: "application/json",
			result:      proxy.ResultBadAnswer,
		},
		{
			name:        "204 with no body",
			answer:      answerWith(204, "", ""),
			status:      502,
			body:        `{"errcode":"M_UNKNOWN","error":"the upstream homeserver answered HTTP 204 with a body that is not a claim answer (M_NOT_JSON: invalid JSON: unexpected end of input, expected a JSON value)"}`,
			contentType: "application/json",
			result:      proxy.ResultBadAnswer,
		},
		{
			name:        "9 MiB answer with Content-Length",
			answer:      answerWith(200, "application/json", big, "Content-Length", strconv.Itoa(len(big))),
			status:      502,
			body:        tooLarge,
			contentType: "application/json",
			result:      proxy.ResultTooLarge,
			slow:        true,
		},
		{
			name: "9 MiB answer streamed",
			answer: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				for i := 0; i < len(big); i += 1 << 20 {
					_, _ = io.WriteString(w, big[i:min(i+1<<20, len(big))])
					w.(http.Flusher).Flush() // chunked: no Content-Length
				}
			},
			status:      502,
			body:        tooLarge,
			contentType: "application/json",
			result:      proxy.ResultTooLarge,
			slow:        true,
		},
		{
			name: "connection closed mid-answer",
			answer: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Length", "1000")
				w.WriteHeader(200)
				_, _ = io.WriteString(w, `{"one_time_keys":{`)
				w.(http.Flusher).Flush()
				conn, _, err := http.NewResponseController(w).Hijack()
				if err == nil {
					_ = conn.Close()
				}
			},
			status:      502,
			body:        `{"errcode":"M_UNKNOWN","error":"the upstream homeserver could not be reached (the connection closed before a complete answer)"}`,
			contentType: "application/json",
			result:      proxy.ResultUnreachable,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			up := newFakeUpstream(t, tc.answer)
			tp := startProxy(t, up.srv.URL, func(cfg *proxy.Config) {
				if tc.slow {
					cfg.TimeoutMargin = time.Minute
				}
			})
			r := send(t, http.MethodPost, tp.base+proxy.ClaimPathV3+"?access_token=ignored&timeout=250", token, claimRequest)
			if r.status != tc.status || r.body != tc.body {
				t.Errorf("got %d %s\nwant %d %s", r.status, r.body, tc.status, tc.body)
			}
			if got := r.header.Get("Content-Type"); got != tc.contentType {
				t.Errorf("Content-Type %q, want %q", got, tc.contentType)
			}
			for k, v := range tc.header {
				if got := r.header.Get(k); got != v {
					t.Errorf("%s %q, want %q", k, got, v)
				}
			}
			if got := r.header.Get("Access-Control-Allow-Origin"); got != "*" {
				t.Errorf("Access-Control-Allow-Origin %q, want *", got)
			}
			if tc.status == 200 {
				assertComplete(t, r.body)
			}

			// What the upstream received: the original request.
			seen := up.requests()
			if len(seen) != 1 {
				t.Fatalf("the upstream received %d requests, want 1", len(seen))
			}
			s := seen[0]
			if s.method != http.MethodPost || s.path != proxy.ClaimPathV3 || s.rawQuery != "access_token=ignored&timeout=250" {
				t.Errorf("upstream got %s %s?%s", s.method, s.path, s.rawQuery)
			}
			if got := s.header.Get("Authorization"); got != token {
				t.Errorf("upstream got Authorization %q, want %q", got, token)
			}
			if string(s.body) != claimRequest {
				t.Errorf("upstream got body %q, want the original bytes %q", s.body, claimRequest)
			}
			if got := s.header.Get("X-Forwarded-For"); got != "127.0.0.1" {
				t.Errorf("upstream got X-Forwarded-For %q", got)
			}

			o := tp.observation(t)
			if o.Result != tc.result || o.Devices != 3 || o.Filled != tc.filled || o.Dropped != tc.dropped || o.Latency <= 0 {
				t.Errorf("observation %v, want result %s, 3 devices, %d filled, %d dropped", o, tc.result, tc.filled, tc.dropped)
			}
		})
	}
}

// tooLargeBody is the proxy's answer to an upstream answer larger than limit bytes.
func tooLargeBody(limit int64) string {
	return `{"errcode":"M_UNKNOWN","error":"upstream answer too large: the upstream homeserver's answer is larger than ` + itoa(limit) + ` bytes"}`
}

// assertComplete checks a completed answer as a client would: both maps present, no null
// anywhere.
func assertComplete(t *testing.T, body string) {
	t.Helper()
	var top map[string]any
	if err := json.Unmarshal([]byte(body), &top); err != nil {
		t.Fatalf("the answer is not JSON: %v", err)
	}
	for _, k := range []string{"one_time_keys", "failures"} {
		if _, ok := top[k].(map[string]any); !ok {
			t.Errorf("%s is %v, want an object", k, top[k])
		}
	}
	if strings.Contains(body, "null") {
		t.Errorf("the answer contains null: %s", body)
	}
}

func TestClaimUpstreamTooSlow(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	up := newFakeUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
		answerWith(200, "application/json", `{"one_time_keys":{}}`)(w, r)
	})
	const margin = 300 * time.Millisecond
	tp := startProxy(t, up.srv.URL, func(cfg *proxy.Config) { cfg.TimeoutMargin = margin })
	for _, tc := range []struct {
		name, query, body string
		timeout           time.Duration
	}{
		{"timeout in the body", "", `{"one_time_keys":{"` + alice + `":{"A1":"signed_curve25519"}},"timeout":200}`, 200 * time.Millisecond},
		{"timeout in the query string", "?timeout=100", `{"one_time_keys":{"` + alice + `":{"A1":"signed_curve25519"}}}`, 100 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			r := send(t, http.MethodPost, tp.base+proxy.ClaimPathV3+tc.query, token, tc.body)
			elapsed := time.Since(start)
			budget := tc.timeout + margin
			want := `{"errcode":"M_UNKNOWN","error":"the upstream homeserver did not answer within ` + itoa(budget.Milliseconds()) + ` ms"}`
			if r.status != http.StatusGatewayTimeout || r.body != want {
				t.Errorf("got %d %s, want 504 %s", r.status, r.body, want)
			}
			if elapsed < budget || elapsed > budget+2*time.Second {
				t.Errorf("answered after %s, want within %s plus scheduling", elapsed, budget)
			}
			if o := tp.observation(t); o.Result != proxy.ResultTimeout || o.UpstreamStatus != 0 {
				t.Errorf("observation %v", o)
			}
		})
	}
}

func TestClaimUpstreamSlowBody(t *testing.T) {
	// The headers come at once; the body never ends: the deadline covers reading it too.
	up := newFakeUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"one_time_keys":{`)
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	})
	tp := startProxy(t, up.srv.URL, nil)
	r := send(t, http.MethodPost, tp.base+proxy.ClaimPathV3, token, `{"one_time_keys":{},"timeout":100}`)
	want := `{"errcode":"M_UNKNOWN","error":"the upstream homeserver did not answer within 400 ms"}`
	if r.status != http.StatusGatewayTimeout || r.body != want {
		t.Errorf("got %d %s, want 504 %s", r.status, r.body, want)
	}
	if o := tp.observation(t); o.Result != proxy.ResultTimeout || o.UpstreamStatus != 200 {
		t.Errorf("observation %v", o)
	}
}

func TestClaimUpstreamRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close() // nothing listens there now
	tp := startProxy(t, "http://"+addr, nil)
	r := send(t, http.MethodPost, tp.base+proxy.ClaimPathR0, token, claimRequest)
	want := `{"errcode":"M_UNKNOWN","error":"the upstream homeserver could not be reached (connection refused)"}`
	if r.status != http.StatusBadGateway || r.body != want {
		t.Errorf("got %d %s, want 502 %s", r.status, r.body, want)
	}
	if o := tp.observation(t); o.Result != proxy.ResultUnreachable {
		t.Errorf("observation %v", o)
	}
}

func TestClaimRejectedBeforeUpstream(t *testing.T) {
	up := newFakeUpstream(t, answerWith(200, "application/json", `{"one_time_keys":{}}`))
	tp := startProxy(t, up.srv.URL, func(cfg *proxy.Config) { cfg.Limits = core.Limits{MaxBodyBytes: 1024} })
	cases := []struct {
		name, query, body string
		status            int
		errcode           string
	}{
		{"not JSON", "", `{"one_time_keys":`, 400, "M_NOT_JSON"},
		{"not an object", "", `["one_time_keys"]`, 400, "M_BAD_JSON"},
		{"one_time_keys missing", "", `{"timeout":10}`, 400, "M_BAD_JSON"},
		{"duplicate user", "", `{"one_time_keys":{"` + alice + `":{"A1":"signed_curve25519"},"` + alice + `":{"A2":"signed_curve25519"}}}`, 400, "M_BAD_JSON"},
		{"duplicate device", "", `{"one_time_keys":{"` + alice + `":{"A1":"signed_curve25519","A1":"curve25519"}}}`, 400, "M_BAD_JSON"},
		{"duplicate top-level key", "", `{"one_time_keys":{},"one_time_keys":{}}`, 400, "M_BAD_JSON"},
		{"bad user ID", "", `{"one_time_keys":{"alice:hs1.test":{"A1":"signed_curve25519"}}}`, 400, "M_INVALID_PARAM"},
		{"bad server name", "", `{"one_time_keys":{"@alice:hs1 test":{"A1":"signed_curve25519"}}}`, 400, "M_INVALID_PARAM"},
		{"empty algorithm", "", `{"one_time_keys":{"` + alice + `":{"A1":""}}}`, 400, "M_INVALID_PARAM"},
		{"negative timeout", "", `{"one_time_keys":{},"timeout":-1}`, 400, "M_INVALID_PARAM"},
		{"bad query timeout", "?timeout=soon", `{"one_time_keys":{}}`, 400, "M_INVALID_PARAM"},
		{"too large", "", `{"one_time_keys":{},"pad":"` + strings.Repeat("x", 2000) + `"}`, 413, "M_TOO_LARGE"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := send(t, http.MethodPost, tp.base+proxy.ClaimPathV3+tc.query, token, tc.body)
			wantError(t, r, tc.status, tc.errcode)
			if o := tp.observation(t); o.Result != proxy.ResultRejected || o.Latency != 0 {
				t.Errorf("observation %v", o)
			}
		})
	}
	t.Run("too large without Content-Length", func(t *testing.T) {
		pr, pw := io.Pipe()
		go func() {
			_, _ = io.WriteString(pw, `{"one_time_keys":{},"pad":"`+strings.Repeat("x", 4000)+`"}`)
			_ = pw.Close()
		}()
		req, _ := http.NewRequest(http.MethodPost, tp.base+proxy.ClaimPathV3, pr)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		wantError(t, response{resp.StatusCode, resp.Header, string(data)}, 413, "M_TOO_LARGE")
		tp.observation(t)
	})
	if n := len(up.requests()); n != 0 {
		t.Errorf("the upstream received %d requests for malformed claims, want none", n)
	}
}

// wantError fails unless r is a Matrix error with this status and errcode.
func wantError(t *testing.T, r response, status int, errcode string) {
	t.Helper()
	var e struct {
		Errcode string `json:"errcode"`
		Error   string `json:"error"`
	}
	if err := json.Unmarshal([]byte(r.body), &e); err != nil {
		t.Fatalf("not a Matrix error: %d %q", r.status, r.body)
	}
	if r.status != status || e.Errcode != errcode || e.Error == "" {
		t.Errorf("got %d %s, want %d %s", r.status, r.body, status, errcode)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
}

func TestClaimPathMethodsAndCORS(t *testing.T) {
	up := newFakeUpstream(t, answerWith(200, "application/json", `{"one_time_keys":{}}`))
	tp := startProxy(t, up.srv.URL, nil)

	t.Run("OPTIONS is answered locally", func(t *testing.T) {
		for _, path := range []string{proxy.ClaimPathV3, proxy.ClaimPathR0} {
			r := send(t, http.MethodOptions, tp.base+path, "", "")
			if r.status != http.StatusNoContent || r.body != "" {
				t.Errorf("OPTIONS %s: %d %q", path, r.status, r.body)
			}
			for k, v := range map[string]string{
				"Access-Control-Allow-Origin":  "*",
				"Access-Control-Allow-Methods": "GET, POST, PUT, DELETE, OPTIONS",
				"Access-Control-Allow-Headers": "X-Requested-With, Content-Type, Authorization",
			} {
				if got := r.header.Get(k); got != v {
					t.Errorf("OPTIONS %s: %s %q, want %q", path, k, got, v)
				}
			}
		}
	})
	t.Run("other methods are 405", func(t *testing.T) {
		r := send(t, http.MethodGet, tp.base+proxy.ClaimPathV3, token, "")
		wantError(t, r, http.StatusMethodNotAllowed, "M_UNRECOGNIZED")
	})
	t.Run("other paths are 404 without passthrough", func(t *testing.T) {
		for _, path := range []string{"/_matrix/client/v3/keys/query", "/_matrix/client/v3/keys/claim/", "/", "/_matrix/client/v4/keys/claim"} {
			r := send(t, http.MethodPost, tp.base+path, token, `{}`)
			wantError(t, r, http.StatusNotFound, "M_UNRECOGNIZED")
		}
	})
	t.Run("the r0 path goes to the upstream's r0 path", func(t *testing.T) {
		r := send(t, http.MethodPost, tp.base+proxy.ClaimPathR0, token, `{"one_time_keys":{}}`)
		if r.status != 200 || r.body != `{"failures":{},"one_time_keys":{}}` {
			t.Errorf("got %d %s", r.status, r.body)
		}
		tp.observation(t)
	})
	seen := up.requests()
	if len(seen) != 1 || seen[0].path != proxy.ClaimPathR0 {
		t.Errorf("the upstream received %d requests (%v), want one on the r0 path", len(seen), seen)
	}
}

func TestClaimUpstreamWithPathPrefix(t *testing.T) {
	up := newFakeUpstream(t, answerWith(200, "application/json", `{"one_time_keys":{}}`))
	tp := startProxy(t, up.srv.URL+"/matrix/", nil)
	r := send(t, http.MethodPost, tp.base+proxy.ClaimPathV3, token, `{"one_time_keys":{}}`)
	if r.status != 200 {
		t.Fatalf("got %d %s", r.status, r.body)
	}
	if seen := up.requests(); len(seen) != 1 || seen[0].path != "/matrix"+proxy.ClaimPathV3 {
		t.Errorf("upstream requests %v", seen)
	}
}

func TestClaimConcurrent(t *testing.T) {
	up := newFakeUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		// Echo the first requested user back with a key for A1: each answer is its own request's.
		var req struct {
			OneTimeKeys map[string]map[string]string `json:"one_time_keys"`
		}
		_ = json.NewDecoder(r.Body).Decode(&req)
		var user string
		for u := range req.OneTimeKeys {
			user = u
		}
		answerWith(200, "application/json", `{"one_time_keys":{"`+user+`":{"A1":{"signed_curve25519:K":"`+user+`"}}}}`)(w, r)
	})
	tp := startProxy(t, up.srv.URL, func(cfg *proxy.Config) { cfg.Metrics = nil })
	var wg sync.WaitGroup
	for i := range 32 {
		wg.Go(func() {
			user := "@u" + itoa(int64(i)) + ":hs1.test"
			r := send(t, http.MethodPost, tp.base+proxy.ClaimPathV3, token, `{"one_time_keys":{"`+user+`":{"A1":"signed_curve25519","A2":"signed_curve25519"}}}`)
			want := `{"failures":{},"one_time_keys":{"` + user + `":{"A1":{"signed_curve25519:K":"` + user + `"},"A2":{}}}}`
			if r.status != 200 || r.body != want {
				t.Errorf("got %d %s, want %s", r.status, r.body, want)
			}
		})
	}
	wg.Wait()
}

// In legacy mode the proxy sanitises and fills in no device; a requested user the upstream left
// out (bob, whose server did not fail) stays out, as Synapse answers (BRIEF 1).
func TestLegacyModeOnlySanitises(t *testing.T) {
	up := newFakeUpstream(t, answerWith(200, "application/json", `{"one_time_keys":{"@eve:hs1.test":{},"`+alice+`":{"A1":{"signed_curve25519:AAAA":`+keyA1+`}}}}`))
	tp := startProxy(t, up.srv.URL, func(cfg *proxy.Config) { cfg.Mode = core.ModeLegacy })
	r := send(t, http.MethodPost, tp.base+proxy.ClaimPathV3, token, claimRequest)
	want := `{"failures":{},"one_time_keys":{"` + alice + `":{"A1":{"signed_curve25519:AAAA":` + keyA1 + `}}}}`
	if r.status != 200 || r.body != want {
		t.Errorf("got %d %s, want %s", r.status, r.body, want)
	}
	if o := tp.observation(t); o.Filled != 0 || o.Dropped != 1 {
		t.Errorf("observation %v, want 0 filled, 1 dropped", o)
	}
}

func TestPassthrough(t *testing.T) {
	gate := make(chan struct{})
	up := newFakeUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/_matrix/client/versions":
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Connection", "X-Hop-Response")
			w.Header().Set("X-Hop-Response", "secret")
			w.Header().Set("Keep-Alive", "timeout=5")
			w.Header().Set("X-End-To-End", "kept")
			_, _ = io.WriteString(w, `{"versions":["v1.19"]}`)
		case "/_matrix/client/v3/sync":
			// A long answer in parts: the first part must reach the client before the last is written.
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, "part one\n")
			w.(http.Flusher).Flush()
			<-gate
			_, _ = io.WriteString(w, "part two\n")
		default:
			w.Header().Set("Content-Type", "text/plain")
			w.WriteHeader(http.StatusTeapot)
			_, _ = io.WriteString(w, r.Method+" "+r.URL.RequestURI())
		}
	})
	tp := startProxy(t, up.srv.URL, func(cfg *proxy.Config) { cfg.Passthrough = true })

	t.Run("hop-by-hop headers are removed both ways", func(t *testing.T) {
		// Written by hand so that no client library drops the hop-by-hop headers on its own.
		conn, err := net.Dial("tcp", strings.TrimPrefix(tp.base, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_, err = io.WriteString(conn, "GET /_matrix/client/versions?x=1 HTTP/1.1\r\nHost: matrix.example.org\r\n"+
			"Connection: keep-alive, X-Hop-Request\r\nX-Hop-Request: secret\r\nKeep-Alive: timeout=5\r\n"+
			"Proxy-Authorization: Basic c2VjcmV0\r\nTE: gzip\r\nX-Forwarded-For: 203.0.113.9\r\n"+
			"Authorization: Bearer tok\r\n\r\n")
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != `{"versions":["v1.19"]}` {
			t.Errorf("got %d %s", resp.StatusCode, body)
		}
		for _, h := range []string{"X-Hop-Response", "Keep-Alive"} {
			if v := resp.Header.Get(h); v != "" {
				t.Errorf("the client got the hop-by-hop header %s: %q", h, v)
			}
		}
		if v := resp.Header.Get("X-End-To-End"); v != "kept" {
			t.Errorf("X-End-To-End %q, want kept", v)
		}
		seen := up.requests()
		s := seen[len(seen)-1]
		if s.path != "/_matrix/client/versions" || s.rawQuery != "x=1" {
			t.Errorf("upstream got %s?%s", s.path, s.rawQuery)
		}
		for _, h := range []string{"X-Hop-Request", "Keep-Alive", "Proxy-Authorization", "Te"} {
			if v := s.header.Get(h); v != "" {
				t.Errorf("the upstream got the hop-by-hop header %s: %q", h, v)
			}
		}
		for h, want := range map[string]string{
			"Authorization":     "Bearer tok",
			"X-Forwarded-For":   "127.0.0.1", // the client's own value is not trusted by default
			"X-Forwarded-Host":  "matrix.example.org",
			"X-Forwarded-Proto": "http",
		} {
			if v := s.header.Get(h); v != want {
				t.Errorf("the upstream got %s %q, want %q", h, v, want)
			}
		}
	})

	t.Run("bodies and statuses pass unchanged", func(t *testing.T) {
		// An escaped slash inside a path segment must stay escaped.
		r := send(t, http.MethodPut, tp.base+"/_matrix/client/v3/rooms/%21r%3Ahs1.test/state/m.room.name/a%2Fb?a=b%20c", token, `{"body":"hi"}`)
		want := "PUT /_matrix/client/v3/rooms/%21r%3Ahs1.test/state/m.room.name/a%2Fb?a=b%20c"
		if r.status != http.StatusTeapot || r.body != want {
			t.Errorf("got %d %q, want 418 %q", r.status, r.body, want)
		}
		seen := up.requests()
		if s := seen[len(seen)-1]; string(s.body) != `{"body":"hi"}` {
			t.Errorf("upstream body %q", s.body)
		}
	})

	t.Run("the response streams", func(t *testing.T) {
		resp, err := client.Get(tp.base + "/_matrix/client/v3/sync")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		br := bufio.NewReader(resp.Body)
		line, err := br.ReadString('\n')
		if err != nil || line != "part one\n" {
			t.Fatalf("first part %q, %v", line, err)
		}
		close(gate) // only now may the upstream finish
		rest, _ := io.ReadAll(br)
		if string(rest) != "part two\n" {
			t.Errorf("second part %q", rest)
		}
	})

	t.Run("the claim path is still completed", func(t *testing.T) {
		r := send(t, http.MethodPost, tp.base+proxy.ClaimPathV3, token, `{"one_time_keys":{"`+alice+`":{"A1":"signed_curve25519"}}}`)
		// The fake answers 418 to a POST on the claim path: passed through as an error.
		if r.status != http.StatusTeapot {
			t.Errorf("got %d %s", r.status, r.body)
		}
		if o := tp.observation(t); o.Result != proxy.ResultPassedThrough || o.UpstreamStatus != 418 {
			t.Errorf("observation %v", o)
		}
	})
}

func TestPassthroughTrustForwarded(t *testing.T) {
	up := newFakeUpstream(t, answerWith(200, "text/plain", "ok"))
	tp := startProxy(t, up.srv.URL, func(cfg *proxy.Config) { cfg.Passthrough, cfg.TrustForwarded = true, true })
	req, _ := http.NewRequest(http.MethodGet, tp.base+"/_matrix/client/versions", nil)
	req.Header.Set("X-Forwarded-For", "203.0.113.9")
	req.Header.Set("X-Forwarded-Host", "matrix.example.org")
	req.Header.Set("X-Forwarded-Proto", "https")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	s := up.requests()[0]
	for h, want := range map[string]string{"X-Forwarded-For": "203.0.113.9, 127.0.0.1", "X-Forwarded-Host": "matrix.example.org", "X-Forwarded-Proto": "https"} {
		if v := s.header.Get(h); v != want {
			t.Errorf("%s %q, want %q", h, v, want)
		}
	}
}

func TestPassthroughUpstreamDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	tp := startProxy(t, "http://"+addr, func(cfg *proxy.Config) { cfg.Passthrough = true })
	r := send(t, http.MethodGet, tp.base+"/_matrix/client/versions", "", "")
	want := `{"errcode":"M_UNKNOWN","error":"the upstream homeserver could not be reached (connection refused)"}`
	if r.status != http.StatusBadGateway || r.body != want {
		t.Errorf("got %d %s, want 502 %s", r.status, r.body, want)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	good, _ := url.Parse("https://matrix.example.org")
	ftp, _ := url.Parse("ftp://matrix.example.org")
	withQuery, _ := url.Parse("https://matrix.example.org/?a=b")
	cases := []struct {
		name string
		cfg  proxy.Config
	}{
		{"no upstream", proxy.Config{ServerName: "example.org"}},
		{"not http", proxy.Config{Upstream: ftp, ServerName: "example.org"}},
		{"a query", proxy.Config{Upstream: withQuery, ServerName: "example.org"}},
		{"user information", proxy.Config{Upstream: &url.URL{Scheme: "https", Host: "matrix.example.org", User: url.UserPassword("a", "b")}, ServerName: "example.org"}},
		{"no server name", proxy.Config{Upstream: good}},
		{"bad server name", proxy.Config{Upstream: good, ServerName: "exa mple.org"}},
		{"bad mode", proxy.Config{Upstream: good, ServerName: "example.org", Mode: "complete"}},
		{"negative body limit", proxy.Config{Upstream: good, ServerName: "example.org", MaxUpstreamBody: -1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := proxy.New(tc.cfg); err == nil {
				t.Error("New accepted the configuration")
			}
		})
	}
	if _, err := proxy.New(proxy.Config{Upstream: good, ServerName: "example.org"}); err != nil {
		t.Errorf("New refused a minimal configuration: %v", err)
	}
}

func TestPrometheusMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := proxy.NewPrometheusMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := proxy.NewPrometheusMetrics(reg); err == nil {
		t.Error("registering twice succeeded")
	}
	up := newFakeUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") == "" {
			answerWith(401, "application/json", `{"errcode":"M_MISSING_TOKEN","error":"Missing access token"}`)(w, r)
			return
		}
		answerWith(200, "application/json", `{"one_time_keys":{"@x:hs1.test":{}}}`)(w, r)
	})
	tp := startProxy(t, up.srv.URL, func(cfg *proxy.Config) { cfg.Metrics = m })
	send(t, http.MethodPost, tp.base+proxy.ClaimPathV3, token, claimRequest) // 3 filled, 1 dropped
	send(t, http.MethodPost, tp.base+proxy.ClaimPathV3, "", claimRequest)    // 401
	send(t, http.MethodPost, tp.base+proxy.ClaimPathV3, token, `nope`)       // rejected

	want := map[string]float64{
		`keyclaim_proxy_claims_total{result="completed"}`:              1,
		`keyclaim_proxy_claims_total{result="passed_through"}`:         1,
		`keyclaim_proxy_claims_total{result="rejected"}`:               1,
		`keyclaim_proxy_claims_total{result="timeout"}`:                0,
		`keyclaim_proxy_devices_filled_total`:                          3,
		`keyclaim_proxy_junk_dropped_total`:                            1,
		`keyclaim_proxy_upstream_errors_total{kind="status_4xx"}`:      1,
		`keyclaim_proxy_upstream_errors_total{kind="unreachable"}`:     0,
		`keyclaim_proxy_upstream_duration_seconds{result="completed"}`: 1, // the sample count
	}
	// The handler records after answering: wait until the last observation is in.
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := gather(t, reg)
		ok := true
		for k, v := range want {
			if got[k] != v {
				ok = false
				if time.Now().After(deadline) {
					t.Errorf("%s = %v, want %v", k, got[k], v)
				}
			}
		}
		if ok || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// gather reads reg into "name{labels}" -> value; a histogram gives its sample count.
func gather(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			key := mf.GetName()
			if len(m.GetLabel()) > 0 {
				var parts []string
				for _, l := range m.GetLabel() {
					parts = append(parts, l.GetName()+`="`+l.GetValue()+`"`)
				}
				key += "{" + strings.Join(parts, ",") + "}"
			}
			switch {
			case m.GetCounter() != nil:
				out[key] = m.GetCounter().GetValue()
			case m.GetHistogram() != nil:
				out[key] = float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return out
}

func TestClientGoneDuringExchange(t *testing.T) {
	entered := make(chan struct{})
	up := newFakeUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-r.Context().Done() // the proxy cancels when its client goes away
	})
	tp := startProxy(t, up.srv.URL, nil)
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, tp.base+proxy.ClaimPathV3, strings.NewReader(`{"one_time_keys":{},"timeout":20000}`))
	done := make(chan struct{})
	go func() {
		defer close(done)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
		}
	}()
	<-entered
	cancel()
	<-done
	if o := tp.observation(t); o.Result != proxy.ResultCanceled {
		t.Errorf("observation %v, want canceled", o)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func TestRequestLoopIsRefused(t *testing.T) {
	// The upstream URL routes back to the proxy itself, as it would if --upstream named the
	// public address whose /keys/claim the reverse proxy sends to keyclaim.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	self, _ := url.Parse("http://" + ln.Addr().String())
	var (
		mu  sync.Mutex
		obs []proxy.Observation
	)
	p, err := proxy.New(proxy.Config{Upstream: self, ServerName: upstreamName, Passthrough: true,
		Metrics: proxy.MetricsFunc(func(o proxy.Observation) { mu.Lock(); obs = append(obs, o); mu.Unlock() })})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: p, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })

	want := `{"errcode":"M_UNKNOWN","error":"request loop: the keyclaim proxy's upstream sends this request back to the proxy"}`
	for _, path := range []string{proxy.ClaimPathV3, "/_matrix/client/versions"} {
		r := send(t, http.MethodPost, self.String()+path, token, `{"one_time_keys":{}}`)
		if r.status != http.StatusBadGateway || r.body != want {
			t.Errorf("%s: got %d %s, want 502 %s", path, r.status, r.body, want)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n := len(obs)
		mu.Unlock()
		if n >= 2 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	// The second pass found the loop; the first passed the upstream's 502 through.
	if len(obs) != 2 || obs[0].Result != proxy.ResultLoop || obs[1].Result != proxy.ResultPassedThrough || obs[1].UpstreamStatus != 502 {
		t.Errorf("observations %v", obs)
	}
}
