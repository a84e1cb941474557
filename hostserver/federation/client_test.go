package federation

import (
	"bytes"
	"context"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyclaim/keyclaim/core"
)

// margin is how late past a timeout an answer may come; generous for the race detector on a
// loaded machine.
const margin = 750 * time.Millisecond

// misbehaving is a remote server on 127.0.0.1 whose behaviour the test sets.
type misbehaving struct {
	srv      *httptest.Server
	mode     atomic.Value // string
	requests atomic.Int32
	done     chan struct{}
}

func startMisbehaving(t *testing.T, mode string) *misbehaving {
	m := &misbehaving{done: make(chan struct{})}
	m.mode.Store(mode)
	m.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.requests.Add(1)
		io.Copy(io.Discard, r.Body)
		switch m.mode.Load().(string) {
		case "ok":
			writeJSON(w, 200, []byte(`{"one_time_keys":{}}`))
		case "500":
			writeJSON(w, 500, []byte(`{"errcode":"M_UNKNOWN","error":"boom"}`))
		case "429":
			writeJSON(w, 429, []byte(`{"errcode":"M_LIMIT_EXCEEDED","error":"slow down"}`))
		case "403":
			writeJSON(w, 403, []byte(`{"errcode":"M_FORBIDDEN","error":"no"}`))
		case "html":
			w.Header().Set("Content-Type", "text/html")
			io.WriteString(w, "<html><body>It works!</body></html>")
		case "html502":
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(502)
			io.WriteString(w, "<html><body>Bad Gateway</body></html>")
		case "redirect":
			http.Redirect(w, r, "https://elsewhere.example/", http.StatusFound)
		case "big":
			w.Header().Set("Content-Type", "application/json")
			w.Write(bytes.Repeat([]byte(" "), 2<<20))
		case "big-chunked":
			w.Header().Set("Content-Type", "application/json")
			chunk := bytes.Repeat([]byte(" "), 64<<10)
			for range 32 { // 2 MiB without a Content-Length
				if _, err := w.Write(chunk); err != nil {
					return
				}
				w.(http.Flusher).Flush()
			}
		case "hang":
			select {
			case <-r.Context().Done():
			case <-m.done:
			}
		case "hang-body":
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"one_time_keys":`)
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
			case <-m.done:
			}
		}
	}))
	t.Cleanup(func() { close(m.done); m.srv.Close() })
	return m
}

func (m *misbehaving) set(mode string) { m.mode.Store(mode) }

// refusedAddr returns a loopback address where nothing listens.
func refusedAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// events records observer events.
type events struct {
	mu  sync.Mutex
	all []RequestEvent
}

func (e *events) ObserveRequest(ev RequestEvent) {
	e.mu.Lock()
	e.all = append(e.all, ev)
	e.mu.Unlock()
}

func (e *events) last() RequestEvent {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.all[len(e.all)-1]
}

type clientEnv struct {
	client *Client
	clock  *fakeClock
	events *events
	routes StaticRoutes
}

func newClientEnv(t *testing.T, routes StaticRoutes, backoff BackoffPolicy) *clientEnv {
	env := &clientEnv{clock: newFakeClock(), events: &events{}, routes: routes}
	c, err := NewClient(ClientOptions{
		SigningKey: testKey(t, "hs1.test", "a_1"),
		Resolver:   NewResolver(ResolverOptions{Static: routes, DNS: newFakeDNS(), Logger: quietLog()}),
		Backoff:    backoff,
		Clock:      env.clock.Now,
		Observer:   env.events,
		Logger:     quietLog(),
	})
	if err != nil {
		t.Fatal(err)
	}
	env.client = c
	return env
}

var claimBody = []byte(`{"one_time_keys":{"@bob:remote.test":{"D1":"signed_curve25519"}}}`)

func TestClientOutcomes(t *testing.T) {
	routes := StaticRoutes{}
	servers := map[string]*misbehaving{}
	for _, mode := range []string{"ok", "500", "429", "403", "html", "html502", "redirect", "big", "big-chunked", "hang", "hang-body"} {
		servers[mode] = startMisbehaving(t, mode)
		mustRoute(t, routes, core.ServerName(mode+".test"), servers[mode].srv.URL)
	}
	mustRoute(t, routes, "refused.test", "http://"+refusedAddr(t))
	env := newClientEnv(t, routes, BackoffPolicy{Disabled: true})

	const timeout = 300 * time.Millisecond
	cases := []struct {
		dest     core.ServerName
		status   int    // of the answer, or of the failure
		failure  string // substring of the failure message; "" for an answer
		body     string // substring of the answer's body
		outcome  Outcome
		lateness time.Duration // how long it may take
	}{
		{"ok.test", 200, "", `{"one_time_keys":{}}`, OutcomeOK, margin},
		{"500.test", 500, "", `"boom"`, OutcomeHTTPError, margin},
		{"429.test", 429, "", `M_LIMIT_EXCEEDED`, OutcomeHTTPError, margin},
		{"403.test", 403, "", `M_FORBIDDEN`, OutcomeHTTPError, margin},
		{"html.test", 200, "", `<html>`, OutcomeOK, margin},
		{"html502.test", 502, "", `Bad Gateway`, OutcomeHTTPError, margin},
		{"redirect.test", 302, "", ``, OutcomeHTTPError, margin},
		// One device asked: 1 MiB and 2 KiB.
		{"big.test", 502, "larger than the limit of 1050624 bytes", "", OutcomeTooLarge, margin},
		{"big-chunked.test", 502, "larger than the limit of 1050624 bytes", "", OutcomeTooLarge, margin},
		{"hang.test", 504, "timed out after", "", OutcomeTimeout, timeout + margin},
		{"hang-body.test", 504, "timed out after", "", OutcomeTimeout, timeout + margin},
		{"refused.test", 503, "could not reach refused.test", "", OutcomeTransportError, margin},
	}
	for _, c := range cases {
		t.Run(string(c.dest), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			start := time.Now()
			out := env.client.ClaimKeys(ctx, c.dest, claimBody)
			took := time.Since(start)
			if took > c.lateness {
				t.Errorf("took %s, want at most %s", took, c.lateness)
			}
			if c.failure == "" {
				if out.Failure != nil || out.Status != c.status || !strings.Contains(string(out.Body), c.body) {
					t.Fatalf("got %d %q %+v, want %d with %q", out.Status, out.Body, out.Failure, c.status, c.body)
				}
			} else if out.Failure == nil || out.Failure.Status != c.status || !strings.Contains(out.Failure.Message, c.failure) {
				t.Fatalf("got %d %q %+v, want failure %d %q", out.Status, out.Body, out.Failure, c.status, c.failure)
			}
			ev := env.events.last()
			if ev.Destination != c.dest || ev.Endpoint != EndpointClaim || ev.Outcome != c.outcome || ev.Status != c.status || ev.Latency <= 0 {
				t.Fatalf("event %+v, want outcome %s status %d", ev, c.outcome, c.status)
			}
			t.Logf("%s: %d %+v", c.outcome, out.Status, out.Failure)
		})
	}
	t.Run("query", func(t *testing.T) {
		out := env.client.QueryKeys(context.Background(), "ok.test", []byte(`{"device_keys":{}}`))
		if out.Status != 200 || env.events.last().Endpoint != EndpointQuery {
			t.Fatalf("got %+v, event %+v", out, env.events.last())
		}
	})
	t.Run("configurable limit", func(t *testing.T) {
		c, _ := NewClient(ClientOptions{SigningKey: testKey(t, "hs1.test", "a_1"), MaxResponseBytes: 10, ResponseBytesPerDevice: -1, Logger: quietLog(),
			Resolver: NewResolver(ResolverOptions{Static: routes, DNS: newFakeDNS(), Logger: quietLog()})})
		out := c.ClaimKeys(context.Background(), "ok.test", claimBody)
		if out.Failure == nil || out.Failure.Status != 502 || !strings.Contains(out.Failure.Message, "limit of 10 bytes") {
			t.Fatalf("got %+v", out)
		}
	})
	t.Run("no deadline uses the default timeout", func(t *testing.T) {
		c, _ := NewClient(ClientOptions{SigningKey: testKey(t, "hs1.test", "a_1"), DefaultTimeout: 200 * time.Millisecond, Logger: quietLog(),
			Resolver: NewResolver(ResolverOptions{Static: routes, DNS: newFakeDNS(), Logger: quietLog()})})
		start := time.Now()
		out := c.ClaimKeys(context.Background(), "hang.test", claimBody)
		if out.Failure == nil || out.Failure.Status != 504 || time.Since(start) > 200*time.Millisecond+margin {
			t.Fatalf("got %+v after %s", out.Failure, time.Since(start))
		}
	})
	t.Run("a body that is not JSON is not sent", func(t *testing.T) {
		env := newClientEnv(t, routes, BackoffPolicy{})
		before := servers["ok"].requests.Load()
		out := env.client.ClaimKeys(context.Background(), "ok.test", []byte("not json"))
		if out.Failure == nil || out.Failure.Status != 500 || env.events.last().Outcome != OutcomeRequestError || servers["ok"].requests.Load() != before {
			t.Fatalf("got %+v, event %+v", out.Failure, env.events.last())
		}
		if out := env.client.ClaimKeys(context.Background(), "ok.test", claimBody); out.Status != 200 {
			t.Fatalf("the destination was backed off for our own mistake: %+v", out.Failure)
		}
		if out := env.client.ClaimKeys(context.Background(), "bad name", claimBody); out.Failure == nil || out.Failure.Status != 500 {
			t.Fatalf("invalid server name: %+v", out)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(50*time.Millisecond, cancel)
		out := env.client.ClaimKeys(ctx, "hang.test", claimBody)
		if out.Failure == nil || out.Failure.Status != 503 || env.events.last().Outcome != OutcomeCanceled {
			t.Fatalf("got %+v, event %+v", out.Failure, env.events.last())
		}
	})
}

// TestClientUndialablePort: a server name valid by the grammar whose port TCP has no room for
// fails at once with a clear message, touches no network and is not backed off.
func TestClientUndialablePort(t *testing.T) {
	env := newClientEnv(t, StaticRoutes{}, BackoffPolicy{Initial: 30 * time.Second})
	for i := range 2 {
		out := env.client.ClaimKeys(context.Background(), "hs2.test:99999", claimBody)
		want := "could not reach hs2.test:99999: its port 99999 is outside 1-65535"
		if out.Failure == nil || out.Failure.Status != 503 || out.Failure.Message != want {
			t.Fatalf("attempt %d: got %d %+v, want 503 %q", i, out.Status, out.Failure, want)
		}
		if ev := env.events.last(); ev.Outcome != OutcomeTransportError || ev.Status != 503 || ev.Destination != "hs2.test:99999" {
			t.Fatalf("attempt %d: event %+v", i, ev)
		}
	}
	if _, err := env.client.FetchServerKeys(context.Background(), "hs2.test:0"); err == nil || !strings.Contains(err.Error(), "its port 0 is outside 1-65535") {
		t.Fatalf("FetchServerKeys: %v", err)
	}
}

// TestClientResponseLimit: the bound on a claim or query answer grows with the devices the
// request names (a floor, plus an allowance per device, at most a ceiling); a query user asked for
// all of its devices, a number not known before the answer, counts as 10,000 devices.
func TestClientResponseLimit(t *testing.T) {
	var size atomic.Int64   // the size of the next answer
	var chunked atomic.Bool // whether it comes without a Content-Length
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		n := size.Load()
		w.Header().Set("Content-Type", "application/json")
		if !chunked.Load() {
			w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		}
		io.WriteString(w, "{}")
		w.(http.Flusher).Flush()
		w.Write(bytes.Repeat([]byte(" "), int(n-2)))
	}))
	t.Cleanup(srv.Close)
	routes := StaticRoutes{}
	mustRoute(t, routes, "remote.test", srv.URL)
	newClient := func(opts ClientOptions) *Client {
		opts.SigningKey = testKey(t, "hs1.test", "a_1")
		opts.Logger = quietLog()
		opts.Resolver = NewResolver(ResolverOptions{Static: routes, DNS: newFakeDNS(), Logger: quietLog()})
		c, err := NewClient(opts)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	claim := func(devices ...string) []byte {
		return []byte(`{"one_time_keys":{"@a:remote.test":{` + strings.Join(devices, ",") + `},"@b:remote.test":{}}}`)
	}
	dev := func(i int) string { return `"D` + strconv.Itoa(i) + `":"signed_curve25519"` }
	many := make([]string, 100)
	for i := range many {
		many[i] = dev(i)
	}
	small := newClient(ClientOptions{MaxResponseBytes: 1000, ResponseBytesPerDevice: 100, MaxResponseBytesCeiling: 5000})
	cases := []struct {
		name   string
		client *Client
		query  bool
		body   []byte
		limit  int64
	}{
		{"claim of no device: the floor", small, false, claim(), 1000},
		{"claim of 3 devices", small, false, []byte(`{"one_time_keys":{"@a:remote.test":{` + dev(1) + `,` + dev(2) + `},"@b:remote.test":{` + dev(1) + `}}}`), 1300},
		{"claim of 100 devices: the ceiling", small, false, claim(many...), 5000},
		{"query of 2 named devices", small, true, []byte(`{"device_keys":{"@a:remote.test":["D1","D2"]}}`), 1200},
		{"query of no user", small, true, []byte(`{"device_keys":{}}`), 1000},
		{"query of all devices of a user: 10,000 devices, here above the ceiling", small, true, []byte(`{"device_keys":{"@a:remote.test":["D1"],"@b:remote.test":[]}}`), 5000},
		{"no allowance per device", newClient(ClientOptions{MaxResponseBytes: 1000, ResponseBytesPerDevice: -1}), false, claim(dev(1), dev(2)), 1000},
		{"no allowance: all devices get the floor", newClient(ClientOptions{MaxResponseBytes: 1000, ResponseBytesPerDevice: -1}), true, []byte(`{"device_keys":{"@a:remote.test":[]}}`), 1000},
		{"defaults, one device", newClient(ClientOptions{}), false, claim(dev(1)), 1<<20 + 2048},
		{"defaults, all devices of one user: floor and 10,000 devices", newClient(ClientOptions{}), true, []byte(`{"device_keys":{"@a:remote.test":[]}}`), 1<<20 + 2048*10_000},
		{"defaults, all devices of two users and 3 named", newClient(ClientOptions{}), true, []byte(`{"device_keys":{"@a:remote.test":[],"@b:remote.test":["X","Y","Z"],"@c:remote.test":[]}}`), 1<<20 + 2048*20_003},
		{"defaults, all devices of six users: the ceiling", newClient(ClientOptions{}), true, []byte(`{"device_keys":{"@a:remote.test":[],"@b:remote.test":[],"@c:remote.test":[],"@d:remote.test":[],"@e:remote.test":[],"@f:remote.test":[]}}`), 1<<20 + 2048*50_000},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ep, call := EndpointClaim, c.client.ClaimKeys
			if c.query {
				ep, call = EndpointQuery, c.client.QueryKeys
			}
			if got := c.client.responseLimit(ep, c.body); got != c.limit {
				t.Fatalf("responseLimit = %d, want %d", got, c.limit)
			}
			if c.limit > 4<<20 {
				return // not worth sending
			}
			for _, withoutLength := range []bool{false, true} {
				dest := core.ServerName("remote.test")
				chunked.Store(withoutLength)
				size.Store(c.limit)
				if out := call(context.Background(), dest, c.body); out.Failure != nil || out.Status != 200 || int64(len(out.Body)) != c.limit {
					t.Fatalf("an answer of exactly the limit: %+v (%d bytes)", out.Failure, len(out.Body))
				}
				size.Store(c.limit + 1)
				out := call(context.Background(), dest, c.body)
				if out.Failure == nil || out.Failure.Status != StatusTooLarge ||
					out.Failure.Message != "the answer of remote.test is larger than the limit of "+strconv.FormatInt(c.limit, 10)+" bytes" {
					t.Fatalf("an answer one byte over the limit: %d %+v", out.Status, out.Failure)
				}
			}
		})
	}
}

// TestResponseBound checks the arithmetic the client, hostserver's configuration and proxy mode
// share: floor plus the allowance of each device, saturating instead of overflowing.
func TestResponseBound(t *testing.T) {
	for _, c := range []struct{ floor, perDevice, devices, want int64 }{
		{1000, 100, 0, 1000},
		{1000, 100, 3, 1300},
		{1000, 0, 3, 1000},
		{1000, -1, 3, 1000},
		{1000, 100, -1, 1000},
		{8 << 20, 2048, 50_000, 8<<20 + 2048*50_000},
		{math.MaxInt64 - 10, 1, 9, math.MaxInt64 - 1},
		{math.MaxInt64 - 10, 1, 11, math.MaxInt64 - 1},
		{math.MaxInt64, 1, 1, math.MaxInt64 - 1},
		{1, 1 << 40, 1 << 30, math.MaxInt64 - 1},
	} {
		if got := ResponseBound(c.floor, c.perDevice, c.devices); got != c.want {
			t.Errorf("ResponseBound(%d, %d, %d) = %d, want %d", c.floor, c.perDevice, c.devices, got, c.want)
		}
	}
	// A saturated bound still lets a reader ask for one byte more: an answer is read, not
	// taken for empty.
	body := `{"one_time_keys":{}}`
	if data, err := readLimited(strings.NewReader(body), ResponseBound(math.MaxInt64-1000, 2048, 50_000)); err != nil || string(data) != body {
		t.Fatalf("readLimited under a saturated bound: %q, %v", data, err)
	}
}

func TestClientBackoff(t *testing.T) {
	remote := startMisbehaving(t, "500")
	routes := StaticRoutes{}
	mustRoute(t, routes, "remote.test", remote.srv.URL)
	mustRoute(t, routes, "refused.test", "http://"+refusedAddr(t))
	env := newClientEnv(t, routes, BackoffPolicy{Initial: 30 * time.Second, Max: 2 * time.Minute, MinTimeout: 100 * time.Millisecond})
	ctx := context.Background()
	claim := func(dest core.ServerName) core.RemoteOutcome {
		c, cancel := context.WithTimeout(ctx, 2*time.Second) // bounds a failing test
		defer cancel()
		return env.client.ClaimKeys(c, dest, claimBody)
	}
	wantNotReady := func(t *testing.T, dest core.ServerName) {
		t.Helper()
		before := remote.requests.Load()
		start := time.Now()
		out := claim(dest)
		if out.Failure == nil || out.Failure.Status != 503 || out.Failure.Message != NotReadyForRetry {
			t.Fatalf("got %d %+v, want 503 %q", out.Status, out.Failure, NotReadyForRetry)
		}
		if remote.requests.Load() != before || time.Since(start) > margin {
			t.Fatal("a backed-off destination was contacted")
		}
		if ev := env.events.last(); ev.Outcome != OutcomeBackoff || ev.Status != 503 {
			t.Fatalf("event %+v", ev)
		}
	}
	wantSent := func(t *testing.T, dest core.ServerName, status int) {
		t.Helper()
		out := claim(dest)
		got := out.Status
		if out.Failure != nil {
			got = out.Failure.Status
			if out.Failure.Message == NotReadyForRetry {
				t.Fatalf("still backed off")
			}
		}
		if got != status {
			t.Fatalf("got %d %+v, want %d", out.Status, out.Failure, status)
		}
	}

	t.Run("5xx backs off, doubling up to the maximum", func(t *testing.T) {
		wantSent(t, "remote.test", 500)
		wantNotReady(t, "remote.test")
		env.clock.Advance(29 * time.Second)
		wantNotReady(t, "remote.test")
		env.clock.Advance(2 * time.Second) // 31 s: retried, fails again: 60 s
		wantSent(t, "remote.test", 500)
		env.clock.Advance(59 * time.Second)
		wantNotReady(t, "remote.test")
		env.clock.Advance(2 * time.Second)
		wantSent(t, "remote.test", 500) // now 120 s, the maximum
		env.clock.Advance(119 * time.Second)
		wantNotReady(t, "remote.test")
		env.clock.Advance(2 * time.Second)
		wantSent(t, "remote.test", 500) // still 120 s
		env.clock.Advance(119 * time.Second)
		wantNotReady(t, "remote.test")
	})
	t.Run("recovery after the backoff resets it", func(t *testing.T) {
		remote.set("ok")
		env.clock.Advance(2 * time.Second)
		wantSent(t, "remote.test", 200)
		wantSent(t, "remote.test", 200)
		remote.set("500")
		wantSent(t, "remote.test", 500)
		env.clock.Advance(31 * time.Second) // back to the initial 30 s
		wantSent(t, "remote.test", 500)
	})
	t.Run("4xx shows the server is up", func(t *testing.T) {
		remote.set("403")
		env.clock.Advance(10 * time.Minute)
		wantSent(t, "remote.test", 403)
		wantSent(t, "remote.test", 403)
	})
	t.Run("429 backs off", func(t *testing.T) {
		remote.set("429")
		wantSent(t, "remote.test", 429)
		wantNotReady(t, "remote.test")
	})
	t.Run("connection refused backs off, per destination", func(t *testing.T) {
		remote.set("ok")
		env.clock.Advance(10 * time.Minute)
		wantSent(t, "refused.test", 503)
		wantNotReady(t, "refused.test")
		wantSent(t, "remote.test", 200) // other destinations are not affected
	})
	t.Run("timeouts back off", func(t *testing.T) {
		remote.set("hang")
		env.clock.Advance(10 * time.Minute)
		c, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		if out := env.client.ClaimKeys(c, "remote.test", claimBody); out.Failure == nil || out.Failure.Status != 504 {
			t.Fatalf("got %+v", out)
		}
		wantNotReady(t, "remote.test")
	})
	t.Run("timeouts shorter than MinTimeout do not", func(t *testing.T) {
		env.clock.Advance(10 * time.Minute)
		c, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer cancel()
		if out := env.client.ClaimKeys(c, "remote.test", claimBody); out.Failure == nil || out.Failure.Status != 504 {
			t.Fatalf("got %+v", out)
		}
		remote.set("ok")
		wantSent(t, "remote.test", 200)
	})
}

func TestFanOut(t *testing.T) {
	routes := StaticRoutes{}
	for _, mode := range []string{"ok", "hang", "500"} {
		mustRoute(t, routes, core.ServerName(mode+".test"), startMisbehaving(t, mode).srv.URL)
	}
	mustRoute(t, routes, "refused.test", "http://"+refusedAddr(t))
	env := newClientEnv(t, routes, BackoffPolicy{Disabled: true})
	reqs := []Request{
		{"ok.test", claimBody}, {"hang.test", claimBody}, {"500.test", claimBody}, {"refused.test", claimBody},
		{"ok.test", []byte(`{"one_time_keys":{"@dup:ok.test":{"X":"y"}}}`)}, // a duplicate is sent once
	}
	const timeout = 400 * time.Millisecond
	start := time.Now()
	out := FanOut(context.Background(), env.client.ClaimKeys, reqs, timeout)
	took := time.Since(start)
	if took < timeout-50*time.Millisecond || took > timeout+margin {
		t.Errorf("took %s, want about %s", took, timeout)
	}
	if len(out) != 4 {
		t.Fatalf("got %d outcomes: %+v", len(out), out)
	}
	if o := out["ok.test"]; o.Failure != nil || o.Status != 200 {
		t.Errorf("ok.test: %+v", o)
	}
	if o := out["500.test"]; o.Failure != nil || o.Status != 500 {
		t.Errorf("500.test: %+v", o)
	}
	if o := out["refused.test"]; o.Failure == nil || o.Failure.Status != 503 {
		t.Errorf("refused.test: %+v", o)
	}
	if o := out["hang.test"]; o.Failure == nil || o.Failure.Status != 504 || o.Failure.Message != "no answer from hang.test within the timeout of 400 ms" {
		t.Errorf("hang.test: %+v", o.Failure)
	}

	t.Run("returns as soon as all answered", func(t *testing.T) {
		start := time.Now()
		out := FanOut(context.Background(), env.client.ClaimKeys, []Request{{"ok.test", claimBody}}, 10*time.Second)
		if time.Since(start) > margin || out["ok.test"].Status != 200 {
			t.Fatalf("got %+v after %s", out, time.Since(start))
		}
	})
	t.Run("a call that ignores its context does not delay the fan-out", func(t *testing.T) {
		stuck := make(chan struct{})
		defer close(stuck)
		call := func(ctx context.Context, dest core.ServerName, body []byte) core.RemoteOutcome {
			if dest == "stuck.test" {
				<-stuck
			}
			return core.RemoteOutcome{Status: 200, Body: []byte(`{}`)}
		}
		start := time.Now()
		out := FanOut(context.Background(), call, []Request{{"stuck.test", nil}, {"fine.test", nil}}, 200*time.Millisecond)
		if time.Since(start) > 200*time.Millisecond+margin {
			t.Fatalf("took %s", time.Since(start))
		}
		if out["stuck.test"].Failure == nil || out["stuck.test"].Failure.Status != 504 || out["fine.test"].Status != 200 {
			t.Fatalf("got %+v", out)
		}
	})
	t.Run("empty", func(t *testing.T) {
		if out := FanOut(context.Background(), env.client.ClaimKeys, nil, time.Second); out == nil || len(out) != 0 {
			t.Fatalf("got %+v", out)
		}
	})
	t.Run("claim requests of a plan", func(t *testing.T) {
		req, err := core.ParseClaimRequest([]byte(`{"one_time_keys":{"@a:ok.test":{"D":"signed_curve25519"},"@b:hs1.test":{"E":"signed_curve25519"}}}`), core.ParseOptions{ServerName: "hs1.test"})
		if err != nil {
			t.Fatal(err)
		}
		plan := core.PlanFanout(req, "hs1.test")
		reqs := ClaimRequests(plan.Remote)
		if len(reqs) != 1 || reqs[0].Destination != "ok.test" || string(reqs[0].Body) != `{"one_time_keys":{"@a:ok.test":{"D":"signed_curve25519"}}}` {
			t.Fatalf("got %+v", reqs)
		}
	})
}

func TestFanOutCallerCancelled(t *testing.T) {
	// The caller's context is cancelled after ~50 ms while calls still hang: every pending
	// destination gets 503 "the request to <dest> was cancelled", an answer that came in before
	// stays, the hanging calls' contexts are cancelled, and FanOut returns at once instead of
	// waiting for its 10 s timeout (the 2 s below is a bound, not a speed target).
	stuck := make(chan struct{})
	defer close(stuck)
	sawCancel := make(chan error, 1)
	call := func(ctx context.Context, dest core.ServerName, body []byte) core.RemoteOutcome {
		switch dest {
		case "hang.test": // ignores its context
			<-stuck
		case "watch.test": // notices its context, then hangs anyway
			<-ctx.Done()
			sawCancel <- ctx.Err()
			<-stuck
		}
		return core.RemoteOutcome{Status: 200, Body: []byte(`{"one_time_keys":{}}`)}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	timer := time.AfterFunc(50*time.Millisecond, cancel)
	defer timer.Stop()

	start := time.Now()
	out := FanOut(ctx, call, []Request{{"hang.test", claimBody}, {"watch.test", claimBody}, {"fine.test", claimBody}}, 10*time.Second)
	took := time.Since(start)
	if took > 2*time.Second {
		t.Errorf("FanOut returned after %s; the caller cancelled after 50 ms", took)
	}
	if took < 40*time.Millisecond {
		t.Errorf("FanOut returned after %s, before the caller cancelled", took)
	}
	if len(out) != 3 {
		t.Fatalf("got %d outcomes: %+v", len(out), out)
	}
	for _, dest := range []core.ServerName{"hang.test", "watch.test"} {
		o := out[dest]
		want := "the request to " + string(dest) + " was cancelled"
		if o.Failure == nil || o.Failure.Status != 503 || o.Failure.Message != want || o.Failure.Errcode != "" || o.Status != 0 || o.Body != nil {
			t.Errorf("%s: got %+v (failure %+v), want failure 503 %q", dest, o, o.Failure, want)
		}
	}
	if o := out["fine.test"]; o.Failure != nil || o.Status != 200 {
		t.Errorf("fine.test: got %+v, want its 200 answer", o)
	}
	select {
	case err := <-sawCancel:
		if err == nil {
			t.Errorf("the call's context is done without an error")
		}
	case <-time.After(time.Second):
		t.Errorf("the pending call's context was not cancelled")
	}
}
