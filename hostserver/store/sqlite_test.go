package store

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// sqliteBackend opens each store in a new file under the test's temporary directory.
var sqliteBackend = backend{
	name: "sqlite",
	freshDSN: func(t testing.TB) string {
		return "sqlite:" + filepath.Join(t.TempDir(), "keys.db")
	},
}

func TestSQLiteConformance(t *testing.T) {
	runConformance(t, sqliteBackend)
}

func TestSQLiteHammer(t *testing.T) {
	if testing.Short() {
		t.Skip("hammer test skipped in -short mode")
	}
	dsn := sqliteBackend.freshDSN(t)
	t.Run("one store", func(t *testing.T) {
		runHammer(t, []Store{openStore(t, dsn)}, defaultHammer)
	})
	// Two stores on one file stand for two server processes: two writer connections that take
	// turns through SQLite's file locks (BEGIN IMMEDIATE + busy_timeout), never SQLITE_BUSY.
	t.Run("two stores on one file", func(t *testing.T) {
		dsn := sqliteBackend.freshDSN(t)
		runHammer(t, []Store{openStore(t, dsn), openStore(t, dsn)}, defaultHammer)
	})
}

func TestSQLiteOpenCreatesFileAndSetsPragmas(t *testing.T) {
	path := filepath.Join(t.TempDir(), "new", "nested", "keys.db")
	s := openStore(t, "sqlite:"+path)
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("database file not created: %v", err)
	}
	ss := s.(*sqliteStore)
	for _, tc := range []struct {
		db     string
		pragma string
		want   string
	}{
		{"writer", "journal_mode", "wal"},
		{"writer", "synchronous", "1"}, // NORMAL
		{"writer", "foreign_keys", "1"},
		{"writer", "busy_timeout", fmt.Sprint(sqliteBusyTimeoutMS)},
		{"reader", "journal_mode", "wal"},
		{"reader", "foreign_keys", "1"},
		{"reader", "query_only", "1"},
		{"reader", "busy_timeout", fmt.Sprint(sqliteBusyTimeoutMS)},
	} {
		t.Run(tc.db+"/"+tc.pragma, func(t *testing.T) {
			db := ss.writer
			if tc.db == "reader" {
				db = ss.reader
			}
			var got string
			if err := db.QueryRowContext(testCtx(t), "PRAGMA "+tc.pragma).Scan(&got); err != nil {
				t.Fatal(err)
			}
			if !strings.EqualFold(got, tc.want) {
				t.Errorf("PRAGMA %s = %q, want %q", tc.pragma, got, tc.want)
			}
		})
	}
}

// TestSQLiteClaimWaitsForTheWriter checks that a claim queues behind a long write transaction
// of the same process instead of failing with SQLITE_BUSY.
func TestSQLiteClaimWaitsForTheWriter(t *testing.T) {
	s := openStore(t, sqliteBackend.freshDSN(t)).(*sqliteStore)
	mustUpload(t, s, alice, "DEV", Upload{OneTimeKeys: otks(`curve25519:1="a"`)})

	tx, err := s.writer.BeginTx(testCtx(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := s.Claim(testCtx(t), []Want{{alice, "DEV", "curve25519"}})
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("claim finished while the writer was busy: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("claim after the writer was free: %v", err)
	}
}

func TestSQLiteClaimHonoursContext(t *testing.T) {
	s := openStore(t, sqliteBackend.freshDSN(t))
	mustUpload(t, s, alice, "DEV", Upload{OneTimeKeys: otks(`curve25519:1="a"`)})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Claim(ctx, []Want{{alice, "DEV", "curve25519"}}); err == nil {
		t.Fatal("claim with a cancelled context succeeded")
	}
	equal(t, "counts", mustCounts(t, s, alice, "DEV"), Counts{sc: 0, "curve25519": 1})
}

// TestSQLitePlans checks the query plans of the statements that must not read more than they
// need. The claim: the wants drive the search (each cursor found by its primary key), and the
// next key is found by a range seek that starts right after the cursor, on both columns of the
// claim order. Were the range on the batch alone (what SQLite does for a row-value comparison of
// two TEXT columns, see sqliteClaimOneTimeKeys), every claim would walk the claimed keys of the
// cursor's batch. The prune of an upload: a range holding exactly the claimed keys.
func TestSQLitePlans(t *testing.T) {
	s := openStore(t, sqliteBackend.freshDSN(t)).(*sqliteStore)
	type check struct {
		name  string
		query string
		args  []any
		steps []string // these steps in this order (others may come between); no table scan
	}
	checks := []check{
		{"prune claimed IDs", sqlitePruneClaimedIDs, []any{alice, "DEV", sc, 1, "k"}, []string{
			"SEARCH one_time_keys USING PRIMARY KEY (user_id=? AND device_id=? AND algorithm=? AND (batch,key_id)<(?,?))",
		}},
		{"prune claimed keys", sqlitePruneClaimedKeys, []any{alice, "DEV", sc, 1, "k"}, []string{
			"SEARCH one_time_keys USING PRIMARY KEY (user_id=? AND device_id=? AND algorithm=? AND (batch,key_id)<(?,?))",
		}},
	}
	for _, n := range sqliteClaimChunks {
		checks = append(checks, check{fmt.Sprintf("claim of %d", n), sqliteClaimOneTimeKeys(n), make([]any, 3*n), []string{
			"SEARCH claim_cursors USING PRIMARY KEY (user_id=? AND device_id=? AND algorithm=?)",
			"SEARCH k USING PRIMARY KEY (user_id=? AND device_id=? AND algorithm=? AND (batch,key_id)>(?,?))",
		}})
	}
	for _, c := range checks {
		rows, err := s.writer.QueryContext(testCtx(t), "EXPLAIN QUERY PLAN "+c.query, c.args...)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		var plan []string
		for rows.Next() {
			var id, parent, unused int
			var detail string
			if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, detail)
		}
		if err := rows.Close(); err != nil {
			t.Fatal(err)
		}
		next := 0
		for _, step := range plan {
			if strings.HasPrefix(step, "SCAN") && !strings.Contains(step, "VALUES") && !strings.Contains(step, "CONSTANT ROW") && step != "SCAN want" {
				next = -1
				break
			}
			if next < len(c.steps) && step == c.steps[next] {
				next++
			}
		}
		if next != len(c.steps) {
			t.Errorf("%s: plan\n  %s\nwant the steps\n  %s", c.name, strings.Join(plan, "\n  "), strings.Join(c.steps, "\n  "))
		}
	}
}

// TestSQLiteMigratesVersion1 opens a database written by version 1 of the schema (claimed keys
// deleted, their IDs in claimed_keys) and checks that version 2 takes it over: the same keys
// in the same order, the claimed IDs still refused, the counts unchanged.
func TestSQLiteMigratesVersion1(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.db")
	db, err := sql.Open("sqlite", path+"?_pragma=journal_mode(WAL)&_pragma=foreign_keys(1)")
	if err != nil {
		t.Fatal(err)
	}
	v1 := append([]string{
		`CREATE TABLE schema_migrations (
			version    INTEGER PRIMARY KEY,
			applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
		)`,
		`INSERT INTO schema_migrations (version) VALUES (1)`,
	}, sqliteMigrations[0].statements...)
	v1 = append(v1,
		// What version 1 left after: alice/DEV uploaded batch 1 (curve25519:1, :2, :3 and
		// signed_curve25519:1) and batch 2 (curve25519:0); curve25519:1 was claimed (deleted,
		// remembered). bob/DEV uploaded batch 3 and has a fallback key.
		`INSERT INTO upload_batches DEFAULT VALUES`, `INSERT INTO upload_batches DEFAULT VALUES`,
		`INSERT INTO upload_batches DEFAULT VALUES`, `DELETE FROM upload_batches`,
		`INSERT INTO devices VALUES ('@alice:example.org', 'DEV', CAST('{"a":1}' AS BLOB)), ('@bob:example.org', 'DEV', NULL)`,
		`INSERT INTO one_time_keys VALUES
			('@alice:example.org', 'DEV', 'curve25519', 1, 'curve25519:2', CAST('"two"' AS BLOB)),
			('@alice:example.org', 'DEV', 'curve25519', 1, 'curve25519:3', CAST('"three"' AS BLOB)),
			('@alice:example.org', 'DEV', 'signed_curve25519', 1, 'signed_curve25519:1', CAST('"s1"' AS BLOB)),
			('@alice:example.org', 'DEV', 'curve25519', 2, 'curve25519:0', CAST('"zero"' AS BLOB)),
			('@bob:example.org', 'DEV', 'curve25519', 3, 'curve25519:1', CAST('"b1"' AS BLOB))`,
		`INSERT INTO claimed_keys VALUES ('@alice:example.org', 'DEV', 'curve25519:1')`,
		`INSERT INTO fallback_keys VALUES ('@bob:example.org', 'DEV', 'curve25519', 'curve25519:F', CAST('"bf"' AS BLOB), 1)`,
	)
	for _, stmt := range v1 {
		if _, err := db.Exec(stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	s := openStore(t, "sqlite:"+path)
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
	got, err := s.QueryDevices(testCtx(t), map[string][]string{alice: nil})
	if err != nil {
		t.Fatal(err)
	}
	equal(t, "device keys", string(got[alice]["DEV"]), `{"a":1}`)
}
