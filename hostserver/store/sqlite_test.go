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
// need. The claim: the cursor IDs drive the search (each cursor found by its rowid), and the
// next key is found by a rowid range of one_time_keys that starts right after the cursor (schema
// version 4), so claims never walk the claimed keys. The lookup of cursor IDs, the counts and
// the prune's cursors: the unique index of the cursors. The prune of an upload, the counts, the
// re-upload check and the next sequence number: rowid ranges of one cursor's keys.
func TestSQLitePlans(t *testing.T) {
	s := openStore(t, sqliteBackend.freshDSN(t)).(*sqliteStore)
	type check struct {
		name  string
		query string
		args  []any
		steps []string // these steps in this order (others may come between); no table scan
	}
	checks := []check{
		{"prune claimed IDs", sqlitePruneClaimedIDs, []any{alice, "DEV", 1, 1}, []string{
			"SEARCH one_time_keys USING INTEGER PRIMARY KEY (rowid>? AND rowid<?)",
		}},
		{"prune claimed keys", sqlitePruneClaimedKeys, []any{1, 1}, []string{
			"SEARCH one_time_keys USING INTEGER PRIMARY KEY (rowid>? AND rowid<?)",
		}},
		{"unclaimed among", sqliteUnclaimedAmong, []any{alice, "DEV", `["k"]`}, []string{
			"SEARCH c USING COVERING INDEX claim_cursors_by_device (user_id=? AND device_id=?)",
			"SEARCH k USING INTEGER PRIMARY KEY (rowid>? AND rowid<?)",
		}},
		{"next sequence number", sqliteNextSeq, []any{alice, "DEV", sc}, []string{
			"SEARCH c USING INDEX claim_cursors_by_device (user_id=? AND device_id=? AND algorithm=?)",
			"SEARCH k USING INTEGER PRIMARY KEY (rowid>? AND rowid<?)",
		}},
	}
	checks = append(checks,
		check{"counts", sqliteCounts, []any{alice, "DEV"}, []string{
			"SEARCH c USING INDEX claim_cursors_by_device (user_id=? AND device_id=?)",
			"SEARCH k USING INTEGER PRIMARY KEY (rowid>? AND rowid<?)",
		}},
		check{"claimed cursors", sqliteClaimedCursors, []any{alice, "DEV"}, []string{
			"SEARCH claim_cursors USING INDEX claim_cursors_by_device (user_id=? AND device_id=?)",
		}},
	)
	for _, n := range sqliteClaimChunks {
		checks = append(checks, check{fmt.Sprintf("claim of %d", n), sqliteClaimOneTimeKeys(n), make([]any, n), []string{
			"SEARCH claim_cursors USING INTEGER PRIMARY KEY (rowid=?)",
			"SEARCH k USING INTEGER PRIMARY KEY (rowid>? AND rowid<?)",
		}}, check{fmt.Sprintf("find cursors of %d", n), sqliteFindCursors(n), make([]any, 4*n), []string{
			"SEARCH c USING COVERING INDEX claim_cursors_by_device (user_id=? AND device_id=? AND algorithm=?)",
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
			if strings.HasPrefix(step, "SCAN") && !strings.Contains(step, "VALUES") && !strings.Contains(step, "CONSTANT ROW") && step != "SCAN want" &&
				!strings.HasPrefix(step, "SCAN json_each") {
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

// TestSQLiteMigratesVersion2 opens a database written by version 2 of the schema (claim cursors
// keyed by user, device and algorithm) and checks that version 3 (cursors with integer IDs)
// takes it over: every cursor where it was, with its last key; the claimed IDs still refused;
// the counts unchanged.
func TestSQLiteMigratesVersion2(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.db")
	db, err := sql.Open("sqlite", path+"?_pragma=journal_mode(WAL)&_pragma=foreign_keys(1)")
	if err != nil {
		t.Fatal(err)
	}
	v2 := []string{
		`CREATE TABLE schema_migrations (
			version    INTEGER PRIMARY KEY,
			applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
		)`,
		`INSERT INTO schema_migrations (version) VALUES (1), (2)`,
	}
	v2 = append(v2, sqliteMigrations[0].statements...)
	v2 = append(v2, sqliteMigrations[1].statements...)
	v2 = append(v2,
		// What version 2 left after: alice/DEV uploaded batch 1 (curve25519:1, :2, :3) and
		// batch 2 (curve25519:0, signed_curve25519:1); curve25519:1 and :2 were claimed (the
		// cursor is at :2, whose value it keeps). bob/DEV uploaded batch 3 and claimed nothing.
		`INSERT INTO upload_batches DEFAULT VALUES`, `INSERT INTO upload_batches DEFAULT VALUES`,
		`INSERT INTO upload_batches DEFAULT VALUES`, `DELETE FROM upload_batches`,
		`INSERT INTO devices VALUES ('@alice:example.org', 'DEV', CAST('{"a":1}' AS BLOB)), ('@bob:example.org', 'DEV', NULL)`,
		`INSERT INTO one_time_keys VALUES
			('@alice:example.org', 'DEV', 'curve25519', 1, 'curve25519:1', CAST('"one"' AS BLOB)),
			('@alice:example.org', 'DEV', 'curve25519', 1, 'curve25519:2', CAST('"two"' AS BLOB)),
			('@alice:example.org', 'DEV', 'curve25519', 1, 'curve25519:3', CAST('"three"' AS BLOB)),
			('@alice:example.org', 'DEV', 'curve25519', 2, 'curve25519:0', CAST('"zero"' AS BLOB)),
			('@alice:example.org', 'DEV', 'signed_curve25519', 2, 'signed_curve25519:1', CAST('"s1"' AS BLOB)),
			('@bob:example.org', 'DEV', 'curve25519', 3, 'curve25519:1', CAST('"b1"' AS BLOB))`,
		`INSERT INTO claim_cursors VALUES
			('@alice:example.org', 'DEV', 'curve25519', 1, 'curve25519:2', CAST('"two"' AS BLOB)),
			('@alice:example.org', 'DEV', 'signed_curve25519', -1, '', x''),
			('@bob:example.org', 'DEV', 'curve25519', -1, '', x'')`,
		`INSERT INTO fallback_keys VALUES ('@bob:example.org', 'DEV', 'curve25519', 'curve25519:F', CAST('"bf"' AS BLOB), 0)`,
	)
	for _, stmt := range v2 {
		if _, err := db.Exec(stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	s := openStore(t, "sqlite:"+path)
	equal(t, "schema versions", schemaVersions(t, s), knownVersions(s))
	var cursors []string
	err = sqliteEachRow(testCtx(t), mustPrepare(t, s.(*sqliteStore).reader, `
		SELECT id, user_id, device_id, algorithm, last_seq, last_key_id, CAST(last_key_json AS TEXT)
		FROM claim_cursors ORDER BY id`), func(rows *sql.Rows) error {
		var id, batch int
		var user, device, alg, keyID, value string
		if err := rows.Scan(&id, &user, &device, &alg, &batch, &keyID, &value); err != nil {
			return err
		}
		cursors = append(cursors, fmt.Sprintf("%d %s %s %s %d %s %s", id, user, device, alg, batch, keyID, value))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// (Since version 4 a cursor's position is the sequence number of its last key: curve25519:2
	// is alice's second curve25519 key; 0 is before every key.)
	equal(t, "cursors", cursors, []string{
		`1 @alice:example.org DEV curve25519 2 curve25519:2 "two"`,
		`2 @alice:example.org DEV signed_curve25519 0  `,
		`3 @bob:example.org DEV curve25519 0  `,
	})
	equal(t, "alice counts", mustCounts(t, s, alice, "DEV"), Counts{sc: 1, "curve25519": 2})
	equal(t, "bob counts", mustCounts(t, s, bob, "DEV"), Counts{sc: 0, "curve25519": 1})
	equal(t, "claim", claimOne(t, s, alice, "DEV", "curve25519"), "curve25519:3")
	// The IDs claimed by version 2 and the one claimed just now are all refused.
	equal(t, "re-upload", mustUpload(t, s, alice, "DEV", Upload{OneTimeKeys: otks(
		`curve25519:1="one"`, `curve25519:2="two"`, `curve25519:3="three"`, `curve25519:4="four"`)}), Counts{sc: 1, "curve25519": 2})
	equal(t, "claims", claimAll(t, s, alice, "DEV", "curve25519"), []string{"curve25519:0", "curve25519:4"})
	equal(t, "signed", claimOne(t, s, alice, "DEV", sc), "signed_curve25519:1")
	equal(t, "bob", claimAll(t, s, bob, "DEV", "curve25519"), []string{"curve25519:1"})
	equal(t, "bob's fallback", claimOne(t, s, bob, "DEV", "curve25519"), "fallback:curve25519:F")
	// A device that uploads after the migration gets a new cursor, with the next ID.
	mustUpload(t, s, "@carol:example.org", "DEV", Upload{OneTimeKeys: otks(`curve25519:1="c1"`)})
	equal(t, "carol", claimAll(t, s, "@carol:example.org", "DEV", "curve25519"), []string{"curve25519:1"})
}

// TestSQLiteMigratesVersion3 opens a database written by version 3 of the schema (one-time keys
// keyed by user, device and algorithm) and checks that version 4 (keys filed under the ID of
// their cursor) takes it over with nothing lost and nothing handed out again: every key row
// copied with its value, claimed keys (still in one_time_keys, at or before their cursor, or
// already moved to claimed_keys) never claimed again nor stored again on re-upload, unclaimed
// keys handed out in the same order, counts and fallback keys (used or not) unchanged.
func TestSQLiteMigratesVersion3(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.db")
	db, err := sql.Open("sqlite", path+"?_pragma=journal_mode(WAL)&_pragma=foreign_keys(1)")
	if err != nil {
		t.Fatal(err)
	}
	v3 := []string{
		`CREATE TABLE schema_migrations (
			version    INTEGER PRIMARY KEY,
			applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
		)`,
		`INSERT INTO schema_migrations (version) VALUES (1), (2), (3)`,
	}
	for _, m := range sqliteMigrations[:3] {
		v3 = append(v3, m.statements...)
	}
	v3 = append(v3,
		// What version 3 left after: alice/DEV uploaded batch 1 (curve25519:1, :2, :3,
		// signed_curve25519:1, :2) and batch 2 (curve25519:0, signed_curve25519:3); curve25519:1
		// and :2 were claimed (cursor at :2, value kept), signed_curve25519:1 too; an earlier
		// curve25519:9 was claimed and pruned (its ID in claimed_keys). alice/PHONE has keys and
		// a cursor that never moved, and a used fallback key. bob/DEV claimed every key of his
		// (cursor at the last one) and has an unused fallback key. carol/DEV has a key but no
		// cursor, which no version wrote (uploads create cursors): the migration must keep it
		// anyway.
		`INSERT INTO upload_batches DEFAULT VALUES`, `INSERT INTO upload_batches DEFAULT VALUES`,
		`INSERT INTO upload_batches DEFAULT VALUES`, `INSERT INTO upload_batches DEFAULT VALUES`,
		`DELETE FROM upload_batches`,
		`INSERT INTO devices VALUES ('@alice:example.org', 'DEV', CAST('{"a":1}' AS BLOB)),
			('@alice:example.org', 'PHONE', NULL), ('@bob:example.org', 'DEV', NULL),
			('@carol:example.org', 'DEV', NULL), ('@eve:example.org', 'DEV', NULL)`,
		`INSERT INTO one_time_keys VALUES
			('@alice:example.org', 'DEV', 'curve25519', 1, 'curve25519:1', CAST('"one"' AS BLOB)),
			('@alice:example.org', 'DEV', 'curve25519', 1, 'curve25519:2', CAST('"two"' AS BLOB)),
			('@alice:example.org', 'DEV', 'curve25519', 1, 'curve25519:3', CAST('"three"' AS BLOB)),
			('@alice:example.org', 'DEV', 'curve25519', 2, 'curve25519:0', CAST('"zero"' AS BLOB)),
			('@alice:example.org', 'DEV', 'signed_curve25519', 1, 'signed_curve25519:1', CAST('"s1"' AS BLOB)),
			('@alice:example.org', 'DEV', 'signed_curve25519', 1, 'signed_curve25519:2', CAST('"s2"' AS BLOB)),
			('@alice:example.org', 'DEV', 'signed_curve25519', 2, 'signed_curve25519:3', CAST('"s3"' AS BLOB)),
			('@alice:example.org', 'PHONE', 'signed_curve25519', 3, 'signed_curve25519:B', CAST('"pb"' AS BLOB)),
			('@alice:example.org', 'PHONE', 'signed_curve25519', 3, 'signed_curve25519:A', CAST('"pa"' AS BLOB)),
			('@bob:example.org', 'DEV', 'curve25519', 3, 'curve25519:1', CAST('"b1"' AS BLOB)),
			('@carol:example.org', 'DEV', 'curve25519', 4, 'curve25519:1', CAST('"c1"' AS BLOB)),
			('@eve:example.org', 'DEV', 'curve25519', 3, 'curve25519:1', CAST('"e1"' AS BLOB))`,
		`INSERT INTO claim_cursors (user_id, device_id, algorithm, last_batch, last_key_id, last_key_json) VALUES
			('@alice:example.org', 'DEV', 'curve25519', 1, 'curve25519:2', CAST('"two"' AS BLOB)),
			('@alice:example.org', 'DEV', 'signed_curve25519', 1, 'signed_curve25519:1', CAST('"s1"' AS BLOB)),
			('@bob:example.org', 'DEV', 'curve25519', 3, 'curve25519:1', CAST('"b1"' AS BLOB)),
			('@alice:example.org', 'PHONE', 'signed_curve25519', -1, '', x''),
			('@eve:example.org', 'DEV', 'curve25519', 2, 'curve25519:0', CAST('"e0"' AS BLOB))`,
		`INSERT INTO claimed_keys VALUES ('@alice:example.org', 'DEV', 'curve25519:9'), ('@eve:example.org', 'DEV', 'curve25519:0')`,
		`INSERT INTO fallback_keys VALUES
			('@alice:example.org', 'PHONE', 'signed_curve25519', 'signed_curve25519:F', CAST('"pf"' AS BLOB), 1),
			('@bob:example.org', 'DEV', 'curve25519', 'curve25519:F', CAST('"bf"' AS BLOB), 0)`,
	)
	for _, stmt := range v3 {
		if _, err := db.Exec(stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	s := openStore(t, "sqlite:"+path)
	equal(t, "schema versions", schemaVersions(t, s), knownVersions(s))
	// Every key row is there, with its value, under its cursor.
	var keys []string
	err = sqliteEachRow(testCtx(t), mustPrepare(t, s.(*sqliteStore).reader, `
		SELECT c.user_id, c.device_id, c.algorithm, k.pos - (c.id << 32), k.key_id, CAST(k.key_json AS TEXT)
		FROM one_time_keys AS k JOIN claim_cursors AS c ON c.id = k.pos >> 32
		ORDER BY c.user_id, c.device_id, c.algorithm, k.pos`), func(rows *sql.Rows) error {
		var batch int
		var user, device, alg, keyID, value string
		if err := rows.Scan(&user, &device, &alg, &batch, &keyID, &value); err != nil {
			return err
		}
		keys = append(keys, fmt.Sprintf("%s %s %s %d %s %s", user, device, alg, batch, keyID, value))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// (user, device, algorithm, sequence number, key ID, value): the sequence numbers follow
	// the claim order of version 3, (batch, key ID).
	equal(t, "keys", keys, []string{
		`@alice:example.org DEV curve25519 1 curve25519:1 "one"`,
		`@alice:example.org DEV curve25519 2 curve25519:2 "two"`,
		`@alice:example.org DEV curve25519 3 curve25519:3 "three"`,
		`@alice:example.org DEV curve25519 4 curve25519:0 "zero"`,
		`@alice:example.org DEV signed_curve25519 1 signed_curve25519:1 "s1"`,
		`@alice:example.org DEV signed_curve25519 2 signed_curve25519:2 "s2"`,
		`@alice:example.org DEV signed_curve25519 3 signed_curve25519:3 "s3"`,
		`@alice:example.org PHONE signed_curve25519 1 signed_curve25519:A "pa"`,
		`@alice:example.org PHONE signed_curve25519 2 signed_curve25519:B "pb"`,
		`@bob:example.org DEV curve25519 1 curve25519:1 "b1"`,
		`@carol:example.org DEV curve25519 1 curve25519:1 "c1"`,
		`@eve:example.org DEV curve25519 1 curve25519:1 "e1"`,
	})
	// Every cursor where it was (carol's added, before her key).
	var cursors []string
	err = sqliteEachRow(testCtx(t), mustPrepare(t, s.(*sqliteStore).reader, `
		SELECT user_id, device_id, algorithm, last_seq, last_key_id, CAST(last_key_json AS TEXT)
		FROM claim_cursors ORDER BY id`), func(rows *sql.Rows) error {
		var seq int
		var user, device, alg, keyID, value string
		if err := rows.Scan(&user, &device, &alg, &seq, &keyID, &value); err != nil {
			return err
		}
		cursors = append(cursors, fmt.Sprintf("%s %s %s %d %s %s", user, device, alg, seq, keyID, value))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	equal(t, "cursors", cursors, []string{
		`@alice:example.org DEV curve25519 2 curve25519:2 "two"`,
		`@alice:example.org DEV signed_curve25519 1 signed_curve25519:1 "s1"`,
		`@bob:example.org DEV curve25519 1 curve25519:1 "b1"`,
		`@alice:example.org PHONE signed_curve25519 0  `,
		`@eve:example.org DEV curve25519 0 curve25519:0 "e0"`,
		`@carol:example.org DEV curve25519 0  `,
	})

	equal(t, "alice counts", mustCounts(t, s, alice, "DEV"), Counts{sc: 2, "curve25519": 2})
	equal(t, "alice's phone counts", mustCounts(t, s, alice, "PHONE"), Counts{sc: 2})
	equal(t, "bob counts", mustCounts(t, s, bob, "DEV"), Counts{sc: 0})
	equal(t, "carol counts", mustCounts(t, s, "@carol:example.org", "DEV"), Counts{sc: 0, "curve25519": 1})

	// Claims go on after the cursors, in claim order; bob gets his fallback key.
	got := mustClaim(t, s, Want{alice, "DEV", "curve25519"}, Want{alice, "DEV", sc},
		Want{alice, "PHONE", sc}, Want{bob, "DEV", "curve25519"}, Want{"@carol:example.org", "DEV", "curve25519"})
	var claimed []string
	for _, c := range got {
		claimed = append(claimed, fmt.Sprintf("%s %s %s %s %v", c.User, c.Device, c.KeyID, c.Key, c.Fallback))
	}
	equal(t, "first claim", claimed, []string{
		`@alice:example.org DEV curve25519:3 "three" false`,
		`@alice:example.org DEV signed_curve25519:2 "s2" false`,
		`@alice:example.org PHONE signed_curve25519:A "pa" false`,
		`@bob:example.org DEV curve25519:F "bf" true`,
		`@carol:example.org DEV curve25519:1 "c1" false`,
	})
	// Every claimed ID (claimed by version 3, pruned by version 3, claimed just now) is refused
	// on re-upload; only the new ID is stored.
	equal(t, "re-upload", mustUpload(t, s, alice, "DEV", Upload{OneTimeKeys: otks(
		`curve25519:1="one"`, `curve25519:2="two"`, `curve25519:3="three"`, `curve25519:9="nine"`,
		`curve25519:4="four"`, `signed_curve25519:1="s1"`, `signed_curve25519:2="s2"`)}), Counts{sc: 1, "curve25519": 2})
	equal(t, "alice", claimAll(t, s, alice, "DEV", "curve25519"), []string{"curve25519:0", "curve25519:4"})
	equal(t, "alice signed", claimAll(t, s, alice, "DEV", sc), []string{"signed_curve25519:3"})
	equal(t, "alice's phone", claimAll(t, s, alice, "PHONE", sc), []string{"signed_curve25519:B"})
	equal(t, "alice's phone fallback", claimOne(t, s, alice, "PHONE", sc), "fallback:signed_curve25519:F")
	equal(t, "bob", claimAll(t, s, bob, "DEV", "curve25519"), []string(nil))
	equal(t, "carol", claimAll(t, s, "@carol:example.org", "DEV", "curve25519"), []string(nil))
	// eve: her pruned key stays refused, her stored one is next, a new one comes after it.
	eve := "@eve:example.org"
	equal(t, "eve counts", mustCounts(t, s, eve, "DEV"), Counts{sc: 0, "curve25519": 1})
	equal(t, "eve re-upload", mustUpload(t, s, eve, "DEV", Upload{OneTimeKeys: otks(
		`curve25519:0="e0"`, `curve25519:1="e1"`, `curve25519:2="e2"`)}), Counts{sc: 0, "curve25519": 2})
	equal(t, "eve", claimAll(t, s, eve, "DEV", "curve25519"), []string{"curve25519:1", "curve25519:2"})
	equal(t, "eve after an upload that prunes everything", mustUpload(t, s, eve, "DEV", Upload{OneTimeKeys: otks(
		`curve25519:1="e1"`, `curve25519:3="e3"`)}), Counts{sc: 0, "curve25519": 1})
	equal(t, "eve's last", claimAll(t, s, eve, "DEV", "curve25519"), []string{"curve25519:3"})
	got2, err := s.QueryDevices(testCtx(t), map[string][]string{alice: nil})
	if err != nil {
		t.Fatal(err)
	}
	equal(t, "device keys", string(got2[alice]["DEV"]), `{"a":1}`)
	// A device that uploads after the migration gets a cursor with a new ID, and its keys.
	mustUpload(t, s, "@dave:example.org", "DEV", Upload{OneTimeKeys: otks(`curve25519:1="d1"`, `curve25519:2="d2"`)})
	equal(t, "dave", claimAll(t, s, "@dave:example.org", "DEV", "curve25519"), []string{"curve25519:1", "curve25519:2"})
}

// TestSQLiteCursorIDsAcrossProcesses: a store caches the IDs of claim cursors; a cursor that
// another store (standing for another server process) creates after this store found none must
// still be found, and cached IDs must keep working across that store's writes.
func TestSQLiteCursorIDsAcrossProcesses(t *testing.T) {
	dsn := sqliteBackend.freshDSN(t)
	a, b := openStore(t, dsn), openStore(t, dsn)
	mustUpload(t, a, alice, "DEV", Upload{OneTimeKeys: otks(`curve25519:1="a1"`, `curve25519:2="a2"`)})
	equal(t, "bob before", len(mustClaim(t, a, Want{bob, "DEV", "curve25519"}, Want{alice, "DEV", "curve25519"})), 1)
	mustUpload(t, b, bob, "DEV", Upload{OneTimeKeys: otks(`curve25519:1="b1"`)})
	got := mustClaim(t, a, Want{bob, "DEV", "curve25519"}, Want{alice, "DEV", "curve25519"})
	equal(t, "claimed", len(got), 2)
	equal(t, "bob's key", got[0].KeyID+" "+string(got[0].Key), `curve25519:1 "b1"`)
	equal(t, "alice's key", got[1].KeyID+" "+string(got[1].Key), `curve25519:2 "a2"`)
	equal(t, "bob from b", claimOne(t, b, bob, "DEV", "curve25519"), "")
	mustUpload(t, b, alice, "DEV", Upload{OneTimeKeys: otks(`curve25519:3="a3"`)})
	equal(t, "alice from a", claimOne(t, a, alice, "DEV", "curve25519"), "curve25519:3")
}

func mustPrepare(t testing.TB, db *sql.DB, query string) *sql.Stmt {
	t.Helper()
	st, err := db.Prepare(query)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// TestSQLiteDeletingADeviceDeletesItsKeys: one-time keys are filed under their cursor by pos
// (schema version 4), not by a foreign key; a trigger deletes a cursor's keys with it, so the
// cascade from a deleted device still leaves none behind, and touches no other device's keys.
func TestSQLiteDeletingADeviceDeletesItsKeys(t *testing.T) {
	s := openStore(t, sqliteBackend.freshDSN(t)).(*sqliteStore)
	mustUpload(t, s, alice, "DEV", Upload{OneTimeKeys: otks(`curve25519:1="a1"`, `signed_curve25519:1="s1"`)})
	mustUpload(t, s, bob, "DEV", Upload{OneTimeKeys: otks(`curve25519:1="b1"`)})
	if _, err := s.writer.ExecContext(testCtx(t), `DELETE FROM devices WHERE user_id = ?`, alice); err != nil {
		t.Fatal(err)
	}
	var keys, cursors int
	if err := s.writer.QueryRowContext(testCtx(t), `SELECT count(*) FROM one_time_keys`).Scan(&keys); err != nil {
		t.Fatal(err)
	}
	if err := s.writer.QueryRowContext(testCtx(t), `SELECT count(*) FROM claim_cursors`).Scan(&cursors); err != nil {
		t.Fatal(err)
	}
	equal(t, "keys left", keys, 1)
	equal(t, "cursors left", cursors, 1)
	equal(t, "bob", claimAll(t, s, bob, "DEV", "curve25519"), []string{"curve25519:1"})
}

// TestSQLiteMigratesVersion4 upgrades a database of schema version 4, which had the table
// upload_batches (unused since version 4 numbers keys under their cursor), to version 5, which
// drops it: the version 4 schema is the version 5 schema plus that table, so the test writes
// keys with the current store, puts the table (with a drawn number, as version 1 left it) and the
// version record back, and opens the file again. Keys, their order, claimed IDs and fallback
// keys are unchanged; the table and its sqlite_sequence row are gone.
func TestSQLiteMigratesVersion4(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.db")
	ctx := testCtx(t)
	s, err := Open(ctx, "sqlite:"+path)
	if err != nil {
		t.Fatal(err)
	}
	mustUpload(t, s, alice, "DEV", Upload{
		OneTimeKeys:  otks(`signed_curve25519:b="2"`, `signed_curve25519:a="1"`, `signed_curve25519:c="3"`),
		FallbackKeys: otks(`signed_curve25519:fb="f"`),
	})
	equal(t, "first claim", claimOne(t, s, alice, "DEV", sc), "signed_curve25519:a")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	for _, stmt := range []string{
		`CREATE TABLE upload_batches (batch INTEGER PRIMARY KEY AUTOINCREMENT)`,
		`INSERT INTO upload_batches DEFAULT VALUES`,
		`DELETE FROM upload_batches`,
		`DELETE FROM schema_migrations WHERE version = 5`,
	} {
		if _, err := db.ExecContext(ctx, stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	s = openStore(t, "sqlite:"+path)
	equal(t, "schema versions", schemaVersions(t, s), knownVersions(s))
	var n int
	if err := s.(*sqliteStore).reader.QueryRowContext(ctx,
		`SELECT (SELECT count(*) FROM sqlite_master WHERE name = 'upload_batches') +
		        (SELECT count(*) FROM sqlite_sequence WHERE name = 'upload_batches')`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	equal(t, "upload_batches left behind", n, 0)
	equal(t, "counts", mustCounts(t, s, alice, "DEV")[sc], 2)
	// The claimed ID stays refused, a new key comes after the old ones.
	mustUpload(t, s, alice, "DEV", Upload{OneTimeKeys: otks(`signed_curve25519:a="1"`, `signed_curve25519:0="0"`)})
	equal(t, "claims after the upgrade", claimAll(t, s, alice, "DEV", sc),
		[]string{"signed_curve25519:b", "signed_curve25519:c", "signed_curve25519:0"})
	equal(t, "fallback", claimOne(t, s, alice, "DEV", sc), "fallback:signed_curve25519:fb")
}
