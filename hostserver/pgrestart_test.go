package hostserver_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/keyclaim/keyclaim/hostserver"
	"github.com/keyclaim/keyclaim/internal/pgtest"
)

// ownPostgres is a store backend on a PostgreSQL instance of the test's own (pgtest), which the
// test may restart; the shared cluster of KEYCLAIM_TEST_POSTGRES is never restarted.
func ownPostgres(pg *pgtest.Instance) backend {
	return backend{name: "own-postgres", freshDB: func(t *testing.T) string { return pg.DSN }}
}

// receivedKeys returns the number of one-time keys received so far.
func (l *ledger) receivedKeys() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, r := range l.received {
		n += len(r)
	}
	return n
}

// TestPostgresRestartUnderLoad restarts PostgreSQL (fast shutdown: every session is ended,
// open transactions roll back) while claimers and an uploader work the server, and keeps it down
// for a second. Every claim and upload must still be answered 200 (the store runs again what
// the restart interrupted, within the request's time budget), no key handed out twice, none lost,
// every answer complete (runHTTPHammer's checks).
func TestPostgresRestartUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("PostgreSQL restart skipped in -short mode")
	}
	pg := pgtest.Start(t)
	size := hammerSize{
		devices: 20, perUser: 4, batches: 4, keysPerBatch: 60,
		claimers: 8, maxDevices: 4,
		uploads: 40, uploadKeys: 10, uploadDevices: 10, uploadPause: 20 * time.Millisecond,
		timeout: 90 * time.Second, maxRequestsPerClaimer: 100000,
	}
	var before, after int
	var downFor time.Duration
	size.disturb = func(l *ledger) {
		// Restart once the claims are under way.
		for start := time.Now(); l.receivedKeys() < 300 && time.Since(start) < 30*time.Second; {
			time.Sleep(5 * time.Millisecond)
		}
		before = l.receivedKeys()
		downFor = pg.Restart(time.Second)
		after = l.receivedKeys()
	}
	fl := newFleet(size.devices, size.perUser)
	tokens := fl.writeTokens(t, t.TempDir())
	ts := startServer(t, ownPostgres(pg), func(cfg *hostserver.Config) { cfg.Tokens = tokens })
	runHTTPHammer(t, []string{ts.base}, fl, size)
	t.Logf("PostgreSQL restarted after %d keys were received, unreachable for %v (%d keys were received during that time)",
		before, downFor.Round(time.Millisecond), after-before)
	if before == 0 || before >= size.devices*size.batches*size.keysPerBatch {
		t.Errorf("the restart did not happen under load (%d keys received before it)", before)
	}
}

// TestPostgresUnreachableIs503: a claim while PostgreSQL stays down for longer than the store's
// time budget is answered 503 M_UNKNOWN with Retry-After; once the database is back, the same
// claim succeeds, and the keys of the failed attempt were not spent.
func TestPostgresUnreachableIs503(t *testing.T) {
	if testing.Short() {
		t.Skip("PostgreSQL outage skipped in -short mode")
	}
	pg := pgtest.Start(t)
	ts := startServer(t, ownPostgres(pg), nil)
	ts.ok(uploadPath, aliceToken, `{"one_time_keys":{"signed_curve25519:AAAA":"k1","signed_curve25519:BBBB":"k2"}}`)
	claim := `{"one_time_keys":{"` + alice + `":{"ALICEDEV":"signed_curve25519"}}}`

	pg.StopServer()
	start := time.Now()
	r := ts.post(claimPath, bobToken, claim)
	waited := time.Since(start)
	pg.StartServer()
	if r.status != http.StatusServiceUnavailable {
		t.Fatalf("claim while the database is down: %d %s, want 503", r.status, r.body)
	}
	if !strings.Contains(r.body, `"errcode":"M_UNKNOWN"`) {
		t.Errorf("503 body %s, want errcode M_UNKNOWN", r.body)
	}
	if ra := r.header.Get("Retry-After"); ra == "" {
		t.Errorf("503 without Retry-After")
	}
	t.Logf("answered 503 after %v of retrying", waited.Round(time.Millisecond))

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := pg.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	r = ts.post(claimPath, bobToken, claim)
	if r.status != http.StatusOK || !strings.Contains(r.body, "signed_curve25519:AAAA") {
		t.Fatalf("claim after the database came back: %d %s, want the first key AAAA", r.status, r.body)
	}
}
