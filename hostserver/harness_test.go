package hostserver_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/keyclaim/keyclaim/core"
	"github.com/keyclaim/keyclaim/hostserver"
	"github.com/keyclaim/keyclaim/hostserver/federation"
)

// The tests start real servers on 127.0.0.1 with a random port and talk HTTP to them, against
// every store backend: SQLite in a temporary directory, and PostgreSQL when KEYCLAIM_TEST_POSTGRES
// names a database (each server then gets a fresh schema, dropped at the end).

const (
	serverName = "hs1.test"
	alice      = "@alice:" + serverName
	bob        = "@bob:" + serverName
	carol      = "@carol:" + serverName
	remoteUser = "@dave:remote.test"

	aliceToken  = "tok-alice"
	bobToken    = "tok-bob"
	bobPhoneTok = "tok-bob-phone"
	carolToken  = "tok-carol"

	postgresEnv = "KEYCLAIM_TEST_POSTGRES"
	// engineEnv chooses the engine of every test server: "native" (the default) or "wasm", so
	// that the whole suite runs again through the WebAssembly module.
	engineEnv = "KEYCLAIM_TEST_ENGINE"
)

// testTokens is the token file of every test server.
var testTokens = map[string]map[string]string{
	aliceToken:  {"user_id": alice, "device_id": "ALICEDEV"},
	bobToken:    {"user_id": bob, "device_id": "BOBDEV"},
	bobPhoneTok: {"user_id": bob, "device_id": "BOBPHONE"},
	carolToken:  {"user_id": carol, "device_id": "CAROLDEV"},
}

// backend is a store backend: freshDB returns the --db of a new, empty store.
type backend struct {
	name    string
	freshDB func(t *testing.T) string
}

var sqliteBackend = backend{name: "sqlite", freshDB: func(t *testing.T) string {
	return "sqlite:" + filepath.Join(t.TempDir(), "keys.db")
}}

var postgresBackend = backend{name: "postgres", freshDB: func(t *testing.T) string {
	base := os.Getenv(postgresEnv)
	if base == "" {
		t.Skipf("PostgreSQL skipped: set %s to a postgres:// DSN (hostserver/store/testdata/start-postgres.sh prints one)", postgresEnv)
	}
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("%s: %v", postgresEnv, err)
	}
	var suffix [6]byte
	_, _ = rand.Read(suffix[:])
	schema := "keyclaim_hs_test_" + hex.EncodeToString(suffix[:])
	exec := func(sql string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, base)
		if err != nil {
			return err
		}
		defer func() { _ = conn.Close(context.Background()) }()
		_, err = conn.Exec(ctx, sql)
		return err
	}
	if err := exec("CREATE SCHEMA " + schema); err != nil {
		t.Fatalf("create schema: %v", err)
	}
	t.Cleanup(func() {
		if err := exec("DROP SCHEMA " + schema + " CASCADE"); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}}

// forEachStore runs fn once per store backend, as subtests named after the backend.
func forEachStore(t *testing.T, fn func(t *testing.T, b backend)) {
	for _, b := range []backend{sqliteBackend, postgresBackend} {
		t.Run(b.name, func(t *testing.T) { fn(t, b) })
	}
}

// testServer is a running server and an HTTP client for it.
type testServer struct {
	t      *testing.T
	srv    *hostserver.Server
	name   string // its server name
	base   string
	dir    string
	client *http.Client
	origin *testOrigin // signs the federation requests sent without a token
}

// writeTokenFile writes tokens as a token file at path.
func writeTokenFile(t *testing.T, path string, tokens map[string]map[string]string) {
	t.Helper()
	data, err := json.Marshal(tokens)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// startServer starts a server on b with the test token file; edit may change the configuration
// before New.
//
// Federation is on, with a signing key in a temporary directory and a static route to the
// harness's origin server (originName), whose key server runs on 127.0.0.1: federation requests
// sent with [testServer.do] and no token are X-Matrix signed by it and verified for real. Remote
// users are answered by [hostserver.NoFederation] (no network traffic) unless edit sets
// cfg.Federation (nil: the real federation client).
func startServer(t *testing.T, b backend, edit func(cfg *hostserver.Config)) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return startServerOn(t, b, ln, edit)
}

// startServerOn is startServer on a listener the caller opened (so that servers can name each
// other's addresses before they start).
func startServerOn(t *testing.T, b backend, ln net.Listener, edit func(cfg *hostserver.Config)) *testServer {
	t.Helper()
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens.json")
	writeTokenFile(t, tokens, testTokens)
	origin := startTestOrigin(t, originName)
	cfg := hostserver.DefaultConfig()
	cfg.ServerName = serverName
	cfg.Listen = "127.0.0.1:0"
	cfg.DB = b.freshDB(t)
	cfg.Tokens = tokens
	cfg.SigningKey = filepath.Join(dir, "signing.key")
	cfg.FederationResolve = federation.StaticRoutes{originName: origin.url}
	cfg.Federation = hostserver.NoFederation{}
	if e := os.Getenv(engineEnv); e != "" {
		cfg.Engine = e
	}
	cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	if edit != nil {
		edit(&cfg)
	}
	srv, err := hostserver.New(cfg)
	if err != nil {
		_ = ln.Close()
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := srv.Start(ctx, ln); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		if err := srv.Shutdown(sctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	ts := &testServer{
		t:      t,
		srv:    srv,
		name:   cfg.ServerName,
		base:   "http://" + ln.Addr().String(),
		dir:    dir,
		client: &http.Client{Timeout: 30 * time.Second},
		origin: origin,
	}
	checkAgainstSpec(t, ts) // every answer to a spec endpoint, in every test (openapi_conformance_test.go)
	return ts
}

// originName is the server name of the harness's origin server, the remote server that sends
// the federation requests of the tests.
const originName = "origin.test"

// testOrigin is a remote server that only publishes its signing key (GET
// /_matrix/key/v2/server on 127.0.0.1) and signs requests with it.
type testOrigin struct {
	key *federation.SigningKey
	url *url.URL
}

// startTestOrigin starts the key server of an origin named name, with a key derived from name.
func startTestOrigin(t *testing.T, name core.ServerName) *testOrigin {
	t.Helper()
	seed := sha256.Sum256([]byte("keyclaim test origin " + name))
	key, err := federation.NewSigningKey(name, "test", seed[:])
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(federation.KeyServerPath, federation.KeyServerHandler(key, 0, nil))
	hs := httptest.NewServer(mux)
	t.Cleanup(hs.Close)
	u, err := url.Parse(hs.URL)
	if err != nil {
		t.Fatal(err)
	}
	return &testOrigin{key: key, url: u}
}

// sign sets the X-Matrix authorization of req, a request to destination. A body that is not
// JSON cannot be signed: the header then signs no content (the server refuses the body first).
func (o *testOrigin) sign(t *testing.T, req *http.Request, destination core.ServerName) {
	t.Helper()
	var body []byte
	if req.GetBody != nil {
		rc, err := req.GetBody()
		if err != nil {
			t.Fatal(err)
		}
		if body, err = io.ReadAll(rc); err != nil {
			t.Fatal(err)
		}
	}
	if federation.SignRequest(req, body, o.key.ServerName(), destination, o.key) != nil {
		if err := federation.SignRequest(req, nil, o.key.ServerName(), destination, o.key); err != nil {
			t.Fatalf("signing %s %s: %v", req.Method, req.URL.Path, err)
		}
	}
}

// response is an HTTP answer.
type response struct {
	status int
	header http.Header
	body   string
}

// do sends a request with [testServer.send]; token "" sends none.
func (ts *testServer) do(method, path, token, body string) response {
	ts.t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, ts.base+path, r)
	if err != nil {
		ts.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	return ts.send(req)
}

// send sends req. A POST to a federation endpoint without an X-Matrix authorization is first
// signed by the harness's origin server (replacing any access token): the server verifies it
// for real. [testServer.sendRaw] sends a request as it is.
func (ts *testServer) send(req *http.Request) response {
	ts.t.Helper()
	if req.Method == http.MethodPost && strings.HasPrefix(req.URL.Path, "/_matrix/federation/") &&
		!strings.HasPrefix(req.Header.Get("Authorization"), "X-Matrix") {
		ts.origin.sign(ts.t, req, core.ServerName(ts.name))
	}
	return ts.sendRaw(req)
}

// sendRaw sends req as it is.
func (ts *testServer) sendRaw(req *http.Request) response {
	ts.t.Helper()
	resp, err := ts.client.Do(req)
	if err != nil {
		ts.t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		ts.t.Fatalf("%s %s: reading the body: %v", req.Method, req.URL.Path, err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: string(data)}
}

// post sends an authenticated POST.
func (ts *testServer) post(path, token, body string) response {
	ts.t.Helper()
	return ts.do(http.MethodPost, path, token, body)
}

// ok posts and requires 200 with a JSON content type; it returns the body.
func (ts *testServer) ok(path, token, body string) string {
	ts.t.Helper()
	r := ts.post(path, token, body)
	if r.status != http.StatusOK {
		ts.t.Fatalf("POST %s %s: status %d, body %s", path, body, r.status, r.body)
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		ts.t.Fatalf("POST %s: Content-Type %q", path, ct)
	}
	return r.body
}

const (
	uploadPath     = "/_matrix/client/v3/keys/upload"
	queryPath      = "/_matrix/client/v3/keys/query"
	claimPath      = "/_matrix/client/v3/keys/claim"
	fedClaimPath   = "/_matrix/federation/v1/user/keys/claim"
	fedQueryPath   = "/_matrix/federation/v1/user/keys/query"
	versionsPath   = "/_matrix/client/versions"
	zeroCountsBody = `{"one_time_key_counts":{"signed_curve25519":0}}`
)

// wantBody fails unless got equals want exactly.
func wantBody(t *testing.T, what, got, want string) {
	t.Helper()
	if got != want {
		t.Errorf("%s:\n got  %s\n want %s", what, got, want)
	}
}

// wantError fails unless r is a Matrix error with this status and errcode; it returns the
// error message.
func wantError(t *testing.T, what string, r response, status int, errcode string) string {
	t.Helper()
	var e map[string]any
	if err := json.Unmarshal([]byte(r.body), &e); err != nil {
		t.Errorf("%s: body is not JSON: %q", what, r.body)
		return ""
	}
	if r.status != status || e["errcode"] != errcode {
		t.Errorf("%s: got %d %s, want %d %s (body %s)", what, r.status, e["errcode"], status, errcode, r.body)
	}
	msg, ok := e["error"].(string)
	if !ok {
		t.Errorf("%s: no error message: %s", what, r.body)
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("%s: Content-Type %q", what, ct)
	}
	return msg
}

// key returns a signed one-time key object for the test keys, as uploaded.
func key(name string) string {
	return `{"key":"` + name + `","signatures":{"` + bob + `":{"ed25519:BOBDEV":"sig-` + name + `"}}}`
}

// claimBody builds a claim request for devices of one user.
func claimBody(user string, devices ...string) string {
	var b strings.Builder
	b.WriteString(`{"one_time_keys":{"` + user + `":{`)
	for i, d := range devices {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`"` + d + `":"signed_curve25519"`)
	}
	b.WriteString(`}}}`)
	return b.String()
}

// metrics scrapes /metrics into a map of "name{labels}" to value (histogram buckets left out).
func (ts *testServer) metrics() map[string]float64 {
	ts.t.Helper()
	r := ts.do(http.MethodGet, "/metrics", "", "")
	if r.status != http.StatusOK {
		ts.t.Fatalf("GET /metrics: %d %s", r.status, r.body)
	}
	out := map[string]float64{}
	for _, line := range strings.Split(r.body, "\n") {
		if line == "" || line[0] == '#' || strings.Contains(line, "_bucket{") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			ts.t.Fatalf("metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}
