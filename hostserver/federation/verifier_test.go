package federation

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyclaim/keyclaim/core"
)

// keyHost is a test key server of one origin on 127.0.0.1, serving over plain HTTP through a
// static route. It counts the fetches.
type keyHost struct {
	srv     *httptest.Server
	fetches atomic.Int32
	mu      sync.Mutex
	handler http.HandlerFunc
}

func startKeyHost(t *testing.T, h http.HandlerFunc) *keyHost {
	kh := &keyHost{handler: h}
	kh.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != KeyServerPath || r.Method != http.MethodGet {
			http.NotFound(w, r)
			return
		}
		kh.fetches.Add(1)
		kh.mu.Lock()
		h := kh.handler
		kh.mu.Unlock()
		h(w, r)
	}))
	t.Cleanup(kh.srv.Close)
	return kh
}

func (kh *keyHost) set(h http.HandlerFunc) {
	kh.mu.Lock()
	kh.handler = h
	kh.mu.Unlock()
}

func serveBody(body []byte) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, http.StatusOK, body) }
}

// verifierEnv is hs2.test verifying requests from several origins whose key servers are
// test servers reached through static routes.
type verifierEnv struct {
	clock    *fakeClock
	hs1      *SigningKey // the well-behaved origin
	hs3      *SigningKey // another server, same key version as hs1
	hs3other *SigningKey // another server, another key version
	hosts    map[core.ServerName]*keyHost
	verifier *Verifier
	routes   StaticRoutes
}

func newVerifierEnv(t *testing.T) *verifierEnv {
	env := &verifierEnv{
		clock:    newFakeClock(),
		hs1:      testKey(t, "hs1.test", "a_1"),
		hs3:      testKey(t, "hs3.test", "a_1"),
		hs3other: testKey(t, "hs3.test", "a_3"),
		hosts:    map[core.ServerName]*keyHost{},
		routes:   StaticRoutes{},
	}
	expiredKey := testKey(t, "expired.test", "a_1")
	badsigKey := testKey(t, "badsig.test", "a_1")
	now := env.clock.Now()
	expired, _ := expiredKey.KeyServerResponse(now.Add(-2*time.Hour), time.Hour)
	badsig, _ := badsigKey.KeyServerResponse(now, time.Hour)
	badsig = bytes.Replace(badsig, []byte(`"valid_until_ts":`), []byte(`"valid_until_ts":1`), 1)
	hs1Response, _ := env.hs1.KeyServerResponse(now, time.Hour)
	origins := map[core.ServerName]http.HandlerFunc{
		"hs1.test":       KeyServerHandler(env.hs1, time.Hour, env.clock.Now).ServeHTTP,
		"expired.test":   serveBody(expired),
		"badsig.test":    serveBody(badsig),
		"wrongname.test": serveBody(hs1Response),
		"big.test":       serveBody(bytes.Repeat([]byte(" "), 300<<10)),
		"down.test":      func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "down", http.StatusInternalServerError) },
	}
	for name, h := range origins {
		env.hosts[name] = startKeyHost(t, h)
		mustRoute(t, env.routes, name, env.hosts[name].srv.URL)
	}
	hs2Key := testKey(t, "hs2.test", "a_2")
	client, err := NewClient(ClientOptions{
		SigningKey: hs2Key,
		Resolver:   NewResolver(ResolverOptions{Static: env.routes, DNS: newFakeDNS(), Clock: env.clock.Now, Logger: quietLog()}),
		Clock:      env.clock.Now,
		Logger:     quietLog(),
	})
	if err != nil {
		t.Fatal(err)
	}
	if env.verifier, err = NewVerifier(VerifierOptions{ServerName: "hs2.test", Keys: client, Clock: env.clock.Now, Logger: quietLog()}); err != nil {
		t.Fatal(err)
	}
	return env
}

// signed returns the Authorization headers of a request signed by key as origin.
func signed(t *testing.T, method, uri string, body []byte, origin, dest core.ServerName, key *SigningKey) []string {
	t.Helper()
	req, err := http.NewRequest(method, "http://ignored"+uri, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := SignRequest(req, body, origin, dest, key); err != nil {
		t.Fatal(err)
	}
	return req.Header.Values("Authorization")
}

func wantCause(t *testing.T, err error, cause AuthCause) {
	t.Helper()
	if !errors.Is(err, &AuthError{Cause: cause}) {
		t.Fatalf("got %v, want cause %s", err, cause)
	}
	var ce *core.Error
	if !errors.As(err, &ce) {
		t.Fatalf("%v has no *core.Error", err)
	}
	wantCode := CodeUnauthorized
	if cause == CauseBodyNotJSON {
		wantCode = core.CodeNotJSON
	}
	if ce.Code != wantCode || ce.Message == "" {
		t.Fatalf("Matrix error %+v, want code %s and a message", ce, wantCode)
	}
}

// TestXMatrixRoundTrip signs requests with the client of hs1.test and verifies them in a real
// HTTP server of hs2.test, which fetches hs1's keys through the static resolver.
func TestXMatrixRoundTrip(t *testing.T) {
	env := newVerifierEnv(t)
	var mu sync.Mutex
	var lastErr error
	hs2 := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		origin, err := env.verifier.AuthenticateFederation(r, body)
		mu.Lock()
		lastErr = err
		mu.Unlock()
		if err != nil {
			var ce *core.Error
			errors.As(err, &ce)
			status := http.StatusUnauthorized
			if ce.Code == core.CodeNotJSON {
				status = http.StatusBadRequest
			}
			writeJSON(w, status, ce.AppendJSON(nil))
			return
		}
		writeJSON(w, http.StatusOK, []byte(`{"origin":"`+string(origin)+`","uri":"`+r.RequestURI+`"}`))
	}))
	defer hs2.Close()
	routes := StaticRoutes{}
	mustRoute(t, routes, "hs2.test", hs2.URL)
	hs1Client, err := NewClient(ClientOptions{
		SigningKey: env.hs1,
		Resolver:   NewResolver(ResolverOptions{Static: routes, DNS: newFakeDNS(), Logger: quietLog()}),
		Logger:     quietLog(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	t.Run("claim and query verify", func(t *testing.T) {
		for _, call := range []CallFunc{hs1Client.ClaimKeys, hs1Client.QueryKeys} {
			out := call(ctx, "hs2.test", []byte(`{"one_time_keys":{"@bob:hs2.test":{"D":"signed_curve25519"}}}`))
			if out.Failure != nil || out.Status != 200 || !strings.Contains(string(out.Body), `"origin":"hs1.test"`) {
				t.Fatalf("got %d %s %+v", out.Status, out.Body, out.Failure)
			}
		}
		if n := env.hosts["hs1.test"].fetches.Load(); n != 1 {
			t.Errorf("hs1's keys fetched %d times, want once (cached)", n)
		}
	})

	send := func(t *testing.T, method, path string, body []byte, auth []string) (int, string) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, method, hs2.URL+path, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range auth {
			req.Header.Add("Authorization", a)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	body := []byte(`{"one_time_keys":{}}`)
	cases := []struct {
		name   string
		path   string
		body   []byte
		auth   []string
		status int
		cause  AuthCause
	}{
		{"query string is signed", ClaimPath + "?a=1&b=%20", body, signed(t, "POST", ClaimPath+"?a=1&b=%20", body, "hs1.test", "hs2.test", env.hs1), 200, 0},
		{"wrong signature: body changed", ClaimPath, []byte(`{"one_time_keys":{"@x:hs2.test":{}}}`), signed(t, "POST", ClaimPath, body, "hs1.test", "hs2.test", env.hs1), 401, CauseBadSignature},
		{"wrong signature: uri changed", ClaimPath + "?a=2", body, signed(t, "POST", ClaimPath+"?a=1", body, "hs1.test", "hs2.test", env.hs1), 401, CauseBadSignature},
		{"wrong signature: method changed", ClaimPath, body, signed(t, "PUT", ClaimPath, body, "hs1.test", "hs2.test", env.hs1), 401, CauseBadSignature},
		{"wrong origin: another server's key", ClaimPath, body, signed(t, "POST", ClaimPath, body, "hs1.test", "hs2.test", env.hs3), 401, CauseBadSignature},
		{"wrong origin: another server's key ID", ClaimPath, body, signed(t, "POST", ClaimPath, body, "hs1.test", "hs2.test", env.hs3other), 401, CauseUnknownKey},
		{"wrong destination", ClaimPath, body, signed(t, "POST", ClaimPath, body, "hs1.test", "hs9.test", env.hs1), 401, CauseWrongDestination},
		{"expired valid_until_ts", ClaimPath, body, signed(t, "POST", ClaimPath, body, "expired.test", "hs2.test", testKey(t, "expired.test", "a_1")), 401, CauseKeyExpired},
		{"missing header", ClaimPath, body, nil, 401, CauseMissingHeader},
		{"other scheme only", ClaimPath, body, []string{"Bearer abc"}, 401, CauseMissingHeader},
		{"malformed header", ClaimPath, body, []string{`X-Matrix origin="hs1.test",key="ed25519:a_1"`}, 401, CauseMalformedHeader},
		{"body not JSON", ClaimPath, []byte("<html>"), signed(t, "POST", ClaimPath, nil, "hs1.test", "hs2.test", env.hs1), 400, CauseBodyNotJSON},
		{"key response badly self-signed", ClaimPath, body, signed(t, "POST", ClaimPath, body, "badsig.test", "hs2.test", testKey(t, "badsig.test", "a_1")), 401, CauseKeyFetchFailed},
		{"key response of another server", ClaimPath, body, signed(t, "POST", ClaimPath, body, "wrongname.test", "hs2.test", env.hs1), 401, CauseKeyFetchFailed},
		{"key response too large", ClaimPath, body, signed(t, "POST", ClaimPath, body, "big.test", "hs2.test", env.hs1), 401, CauseKeyFetchFailed},
		{"key server down", ClaimPath, body, signed(t, "POST", ClaimPath, body, "down.test", "hs2.test", env.hs1), 401, CauseKeyFetchFailed},
		{"origin unreachable", ClaimPath, body, signed(t, "POST", ClaimPath, body, "nowhere.test", "hs2.test", env.hs1), 401, CauseKeyFetchFailed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, answer := send(t, http.MethodPost, c.path, c.body, c.auth)
			if status != c.status {
				t.Fatalf("status %d (%s), want %d", status, answer, c.status)
			}
			mu.Lock()
			err := lastErr
			mu.Unlock()
			if c.cause == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			wantCause(t, err, c.cause)
			t.Logf("%s: %s", c.cause, answer)
		})
	}
}

func TestVerifierHonoursValidUntil(t *testing.T) {
	env := newVerifierEnv(t)
	ctx := context.Background()
	body := []byte(`{}`)
	verify := func() error {
		_, err := env.verifier.Verify(ctx, "POST", ClaimPath, signed(t, "POST", ClaimPath, body, "hs1.test", "hs2.test", env.hs1), body)
		return err
	}
	host := env.hosts["hs1.test"]
	if err := verify(); err != nil {
		t.Fatal(err)
	}
	env.clock.Advance(59 * time.Minute)
	if err := verify(); err != nil || host.fetches.Load() != 1 {
		t.Fatalf("within valid_until_ts: %v, %d fetches", err, host.fetches.Load())
	}
	// Past valid_until_ts (an hour), the keys are fetched again.
	env.clock.Advance(2 * time.Minute)
	if err := verify(); err != nil || host.fetches.Load() != 2 {
		t.Fatalf("past valid_until_ts: %v, %d fetches, want 2", err, host.fetches.Load())
	}
	// Past valid_until_ts again with the key server failing: the old key is not used.
	host.set(func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "down", 500) })
	env.clock.Advance(61 * time.Minute)
	wantCause(t, verify(), CauseKeyFetchFailed)
	// Within MinRefetchInterval the failure is answered from the cache.
	wantCause(t, verify(), CauseKeyFetchFailed)
	if n := host.fetches.Load(); n != 3 {
		t.Fatalf("%d fetches, want 3", n)
	}
	// The key server now publishes keys that are already expired.
	host.set(serveBody(must(env.hs1.KeyServerResponse(env.clock.Now().Add(-2*time.Hour), time.Hour))))
	env.clock.Advance(2 * time.Minute)
	wantCause(t, verify(), CauseKeyExpired)
	// And then good keys again.
	host.set(KeyServerHandler(env.hs1, time.Hour, env.clock.Now).ServeHTTP)
	env.clock.Advance(2 * time.Minute)
	if err := verify(); err != nil {
		t.Fatal(err)
	}
}

func TestVerifierCapsValidityAtSevenDays(t *testing.T) {
	env := newVerifierEnv(t)
	host := env.hosts["hs1.test"]
	host.set(KeyServerHandler(env.hs1, 30*24*time.Hour, env.clock.Now).ServeHTTP)
	body := []byte(`{}`)
	verify := func() error {
		_, err := env.verifier.Verify(context.Background(), "POST", ClaimPath, signed(t, "POST", ClaimPath, body, "hs1.test", "hs2.test", env.hs1), body)
		return err
	}
	if err := verify(); err != nil {
		t.Fatal(err)
	}
	env.clock.Advance(MaxKeyValidity - time.Minute)
	if err := verify(); err != nil || host.fetches.Load() != 1 {
		t.Fatalf("%v, %d fetches", err, host.fetches.Load())
	}
	env.clock.Advance(2 * time.Minute)
	if err := verify(); err != nil || host.fetches.Load() != 2 {
		t.Fatalf("past 7 days: %v, %d fetches, want 2", err, host.fetches.Load())
	}
}

func TestVerifierRateLimitsUnknownKeys(t *testing.T) {
	env := newVerifierEnv(t)
	host := env.hosts["hs1.test"]
	body := []byte(`{}`)
	rogue := testKey(t, "hs1.test", "a_rogue")
	for range 5 {
		_, err := env.verifier.Verify(context.Background(), "POST", ClaimPath, signed(t, "POST", ClaimPath, body, "hs1.test", "hs2.test", rogue), body)
		wantCause(t, err, CauseUnknownKey)
	}
	if n := host.fetches.Load(); n != 1 {
		t.Fatalf("%d fetches for unknown key IDs within a minute, want 1", n)
	}
	env.clock.Advance(2 * time.Minute)
	_, err := env.verifier.Verify(context.Background(), "POST", ClaimPath, signed(t, "POST", ClaimPath, body, "hs1.test", "hs2.test", rogue), body)
	wantCause(t, err, CauseUnknownKey)
	if n := host.fetches.Load(); n != 2 {
		t.Fatalf("%d fetches, want 2 (a new key may have been published)", n)
	}
}

func TestVerifierConcurrentFetchesOnce(t *testing.T) {
	env := newVerifierEnv(t)
	release := make(chan struct{})
	inner := KeyServerHandler(env.hs1, time.Hour, env.clock.Now)
	env.hosts["hs1.test"].set(func(w http.ResponseWriter, r *http.Request) {
		<-release
		inner.ServeHTTP(w, r)
	})
	body := []byte(`{}`)
	var wg sync.WaitGroup
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := env.verifier.Verify(context.Background(), "POST", ClaimPath, signed(t, "POST", ClaimPath, body, "hs1.test", "hs2.test", env.hs1), body)
			if err != nil {
				t.Error(err)
			}
		}()
	}
	time.Sleep(50 * time.Millisecond)
	close(release)
	wg.Wait()
	if n := env.hosts["hs1.test"].fetches.Load(); n != 1 {
		t.Fatalf("%d fetches, want 1", n)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
