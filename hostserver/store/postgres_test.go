package store

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// postgresEnv names the environment variable with the DSN of a PostgreSQL database the tests may
// use, e.g. postgres://keyclaim:keyclaim@127.0.0.1:5432/keyclaim_test?sslmode=disable
// (testdata/start-postgres.sh prepares one and prints it).
const postgresEnv = "KEYCLAIM_TEST_POSTGRES"

// postgresBaseDSN returns the test database's DSN, or skips the test when none is configured.
func postgresBaseDSN(t testing.TB) string {
	t.Helper()
	dsn := os.Getenv(postgresEnv)
	if dsn == "" {
		t.Skipf("PostgreSQL tests skipped: set %s to a postgres:// DSN (hostserver/store/testdata/start-postgres.sh prints one)", postgresEnv)
	}
	return dsn
}

// postgresBackend gives each store a new schema of the test database, dropped when the test
// ends: runs and tests never see each other's data.
var postgresBackend = backend{
	name: "postgres",
	freshDSN: func(t testing.TB) string {
		base := postgresBaseDSN(t)
		u, err := url.Parse(base)
		if err != nil {
			t.Fatalf("%s: %v", postgresEnv, err)
		}
		var suffix [6]byte
		if _, err := rand.Read(suffix[:]); err != nil {
			t.Fatal(err)
		}
		schema := "keyclaim_test_" + hex.EncodeToString(suffix[:])

		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, base)
		if err != nil {
			t.Fatalf("connect to %s: %v", postgresEnv, err)
		}
		defer func() { _ = conn.Close(context.Background()) }()
		if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
			t.Fatalf("create schema: %v", err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			conn, err := pgx.Connect(ctx, base)
			if err != nil {
				t.Errorf("drop schema %s: %v", schema, err)
				return
			}
			defer func() { _ = conn.Close(context.Background()) }()
			if _, err := conn.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
				t.Errorf("drop schema %s: %v", schema, err)
			}
		})

		q := u.Query()
		q.Set("search_path", schema)
		u.RawQuery = q.Encode()
		return u.String()
	},
}

func TestPostgresConformance(t *testing.T) {
	postgresBaseDSN(t)
	runConformance(t, postgresBackend)
}

func TestPostgresHammer(t *testing.T) {
	postgresBaseDSN(t)
	if testing.Short() {
		t.Skip("hammer test skipped in -short mode")
	}
	t.Run("one store", func(t *testing.T) {
		runHammer(t, []Store{openStore(t, postgresBackend.freshDSN(t))}, defaultHammer)
	})
	// Three stores (three connection pools) on one database stand for three server processes.
	t.Run("three stores on one database", func(t *testing.T) {
		dsn := postgresBackend.freshDSN(t)
		runHammer(t, []Store{openStore(t, dsn), openStore(t, dsn), openStore(t, dsn)}, defaultHammer)
	})
}

// TestPostgresBatchNumbersAcrossProcesses checks that uploads through different stores (server
// processes) on one database draw strictly increasing batch numbers from one sequence.
func TestPostgresBatchNumbersAcrossProcesses(t *testing.T) {
	dsn := postgresBackend.freshDSN(t)
	a, b := openStore(t, dsn), openStore(t, dsn)
	mustUpload(t, a, alice, "DEV", Upload{OneTimeKeys: otks(`curve25519:z="1"`)})
	mustUpload(t, b, alice, "DEV", Upload{OneTimeKeys: otks(`curve25519:y="2"`)})
	mustUpload(t, a, alice, "DEV", Upload{OneTimeKeys: otks(`curve25519:x="3"`)})
	equal(t, "claims", claimAll(t, b, alice, "DEV", "curve25519"), []string{"curve25519:z", "curve25519:y", "curve25519:x"})
}

// TestPostgresKeyIDOrderIsByteOrder checks COLLATE "C" against the database's own collation:
// 'B' < 'a' in byte order, but not in most locales.
func TestPostgresKeyIDOrderIsByteOrder(t *testing.T) {
	s := openStore(t, postgresBackend.freshDSN(t))
	mustUpload(t, s, alice, "DEV", Upload{OneTimeKeys: otks(`curve25519:a="1"`, `curve25519:B="2"`, `curve25519:á="3"`, `curve25519:b="4"`)})
	equal(t, "claims", claimAll(t, s, alice, "DEV", "curve25519"), []string{"curve25519:B", "curve25519:a", "curve25519:b", "curve25519:á"})
}

// TestPostgresLargeClaim claims from 1,000 devices in one request and shows the time it takes:
// a fixed number of statements, not one per device.
func TestPostgresLargeClaim(t *testing.T) {
	s := openStore(t, postgresBackend.freshDSN(t))
	const devices = 1000
	wants := make([]Want, 0, devices)
	var wg sync.WaitGroup
	errs := make(chan error, devices)
	sem := make(chan struct{}, 8)
	for d := 0; d < devices; d++ {
		w := Want{fmt.Sprintf("@u%04d:example.org", d), "D", SignedCurve25519}
		wants = append(wants, w)
		up := Upload{FallbackKeys: otks(`signed_curve25519:F="f"`)}
		if d%10 != 0 { // every tenth device has only its fallback key
			up.OneTimeKeys = otks(`signed_curve25519:2="two"`, `signed_curve25519:1="one"`)
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			if _, err := s.Upload(context.Background(), w.User, w.Device, up); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	wants = append(wants, Want{"@nobody:example.org", "D", SignedCurve25519})

	start := time.Now()
	got := mustClaim(t, s, wants...)
	elapsed := time.Since(start)
	t.Logf("claim of %d devices: %v", len(wants), elapsed)
	equal(t, "claimed", len(got), devices)
	for i, c := range got {
		wantKey, wantFallback := `"one"`, false
		if i%10 == 0 {
			wantKey, wantFallback = `"f"`, true
		}
		if c.User != wants[i].User || string(c.Key) != wantKey || c.Fallback != wantFallback {
			t.Fatalf("claim %d: %+v", i, c)
		}
	}
}

// TestPostgresStoredBytes checks that device keys are stored as bytea, byte for byte, not as
// jsonb (which would reorder keys and drop whitespace).
func TestPostgresStoredBytes(t *testing.T) {
	s := openStore(t, postgresBackend.freshDSN(t))
	raw := json.RawMessage("{\"z\" : 1,  \"a\":\"\\u0041\"}\n")
	mustUpload(t, s, alice, "DEV", Upload{DeviceKeys: raw})
	var stored []byte
	if err := s.(*postgresStore).pool.QueryRow(testCtx(t), `SELECT device_keys FROM devices`).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	equal(t, "stored", string(stored), string(raw))
}

// TestPostgresClaimRetriesALostRace takes the device lock away from the picture: a transaction
// that does not lock the device row claims the oldest key (moves the device's cursor to it)
// while a claim is choosing that key. The claim's cursor update then waits for that transaction;
// if it commits, the claim must notice that it lost the key (the cursor is no longer where it
// read it), retry (logged) and hand out the next one, never the same key and never the
// fallback key; if it rolls back, the claim gets the oldest key after all.
func TestPostgresClaimRetriesALostRace(t *testing.T) {
	postgresBaseDSN(t)
	for _, tc := range []struct {
		name   string
		commit bool
		want   string
	}{
		{"other transaction commits", true, "curve25519:2"},
		{"other transaction rolls back", false, "curve25519:1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openStore(t, postgresBackend.freshDSN(t))
			mustUpload(t, s, alice, "DEV", Upload{
				OneTimeKeys:  otks(`curve25519:1="one"`, `curve25519:2="two"`),
				FallbackKeys: otks(`curve25519:F="fallback"`),
			})
			var logs bytes.Buffer
			old := slog.Default()
			slog.SetDefault(slog.New(slog.NewTextHandler(&logs, nil)))
			t.Cleanup(func() { slog.SetDefault(old) })

			pool := s.(*postgresStore).pool
			other, err := pool.Begin(testCtx(t))
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = other.Rollback(context.Background()) }()
			if _, err := other.Exec(testCtx(t), `
				UPDATE claim_cursors AS c
				SET last_batch = k.batch, last_key_id = k.key_id, last_key_json = k.key_json
				FROM one_time_keys AS k
				WHERE k.key_id = 'curve25519:1' AND c.algorithm = 'curve25519'`); err != nil {
				t.Fatal(err)
			}

			got := make(chan string, 1)
			go func() {
				c, err := s.Claim(testCtx(t), []Want{{alice, "DEV", "curve25519"}})
				switch {
				case err != nil:
					got <- "error: " + err.Error()
				case len(c) != 1:
					got <- fmt.Sprintf("%d keys", len(c))
				case c[0].Fallback:
					got <- "fallback:" + c[0].KeyID
				default:
					got <- c[0].KeyID
				}
			}()
			// Let the claim reach the DELETE and wait on the other transaction's row lock.
			waitForLockWait(t, pool)
			if tc.commit {
				err = other.Commit(testCtx(t))
			} else {
				err = other.Rollback(testCtx(t))
			}
			if err != nil {
				t.Fatal(err)
			}
			equal(t, "claimed", <-got, tc.want)
			if tc.commit && !strings.Contains(logs.String(), "retrying transaction") {
				t.Errorf("the retry was not logged; logs:\n%s", logs.String())
			}
		})
	}
}

// waitForLockWait waits (bounded) until some session of the test database waits for a lock.
func waitForLockWait(t *testing.T, pool interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		var waiting int
		if err := pool.QueryRow(testCtx(t), `
			SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock'
			  AND query LIKE '%claim_cursors%'`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting > 0 {
			return
		}
	}
	t.Fatal("the claim never waited for the other transaction")
}

// TestPostgresMigratesVersion1 opens a database written by version 1 of the schema (claimed
// keys deleted, their IDs in claimed_keys) and checks that version 2 takes it over: the same
// keys in the same order, the claimed IDs still refused, the counts unchanged.
func TestPostgresMigratesVersion1(t *testing.T) {
	dsn := postgresBackend.freshDSN(t)
	conn, err := pgx.Connect(testCtx(t), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close(context.Background()) }()
	v1 := append([]string{
		`CREATE TABLE schema_migrations (
			version    integer PRIMARY KEY,
			applied_at timestamptz NOT NULL DEFAULT now()
		)`,
		`INSERT INTO schema_migrations (version) VALUES (1)`,
	}, postgresMigrations[0].statements...)
	v1 = append(v1,
		// What version 1 left after: alice/DEV uploaded batch 1 (curve25519:1, :2, :3 and
		// signed_curve25519:1) and batch 2 (curve25519:0); curve25519:1 was claimed (deleted,
		// remembered). bob/DEV uploaded batch 3 and has a fallback key.
		`SELECT setval('upload_batch_seq', 3)`,
		`INSERT INTO devices VALUES ('@alice:example.org', 'DEV', '{"a":1}'), ('@bob:example.org', 'DEV', NULL)`,
		`INSERT INTO one_time_keys (user_id, device_id, algorithm, batch, key_id, key_json) VALUES
			('@alice:example.org', 'DEV', 'curve25519', 1, 'curve25519:2', '"two"'),
			('@alice:example.org', 'DEV', 'curve25519', 1, 'curve25519:3', '"three"'),
			('@alice:example.org', 'DEV', 'signed_curve25519', 1, 'signed_curve25519:1', '"s1"'),
			('@alice:example.org', 'DEV', 'curve25519', 2, 'curve25519:0', '"zero"'),
			('@bob:example.org', 'DEV', 'curve25519', 3, 'curve25519:1', '"b1"')`,
		`INSERT INTO claimed_keys VALUES ('@alice:example.org', 'DEV', 'curve25519:1')`,
		`INSERT INTO fallback_keys VALUES ('@bob:example.org', 'DEV', 'curve25519', 'curve25519:F', '"bf"', true)`,
	)
	for _, stmt := range v1 {
		if _, err := conn.Exec(testCtx(t), stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}

	s := openStore(t, dsn)
	equal(t, "schema versions", schemaVersions(t, s), knownVersions(s))
	equal(t, "alice counts", mustCounts(t, s, alice, "DEV"), Counts{sc: 1, "curve25519": 3})
	equal(t, "bob counts", mustCounts(t, s, bob, "DEV"), Counts{sc: 0, "curve25519": 1})
	equal(t, "claim", claimOne(t, s, alice, "DEV", "curve25519"), "curve25519:2")
	// The claimed ID of version 1 and the one claimed just now are both refused.
	equal(t, "re-upload", mustUpload(t, s, alice, "DEV", Upload{OneTimeKeys: otks(
		`curve25519:1="one"`, `curve25519:2="two"`, `curve25519:4="four"`)}), Counts{sc: 1, "curve25519": 3})
	equal(t, "claims", claimAll(t, s, alice, "DEV", "curve25519"), []string{"curve25519:3", "curve25519:0", "curve25519:4"})
	equal(t, "signed", claimOne(t, s, alice, "DEV", sc), "signed_curve25519:1")
	equal(t, "bob", claimAll(t, s, bob, "DEV", "curve25519"), []string{"curve25519:1"})
	equal(t, "bob's fallback", claimOne(t, s, bob, "DEV", "curve25519"), "fallback:curve25519:F")
}
