package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"modernc.org/sqlite" // registers the pure-Go "sqlite" database/sql driver
	sqlite3 "modernc.org/sqlite/lib"
)

// sqliteMigrations is the SQLite schema, one entry per version (index 0 is version 1). A
// released entry is never edited: a change is a new entry.
var sqliteMigrations = []migration{
	{version: 1, statements: []string{
		// A device is created by its first upload. device_keys stays NULL until the device uploads
		// them and holds them byte for byte (BLOB, never re-encoded).
		`CREATE TABLE devices (
			user_id     TEXT NOT NULL,
			device_id   TEXT NOT NULL,
			device_keys BLOB,
			PRIMARY KEY (user_id, device_id)
		)`,
		// Upload batch numbers: a row is inserted to draw the next number and deleted at once.
		// AUTOINCREMENT never hands out a number twice, even after the row is gone.
		`CREATE TABLE upload_batches (
			batch INTEGER PRIMARY KEY AUTOINCREMENT
		)`,
		// Unclaimed one-time keys, stored in claim order: the primary key is the order in which
		// keys are handed out (oldest batch first, then key ID; TEXT compares with the BINARY
		// collation, which is byte order), so a claim reads and deletes one row of one b-tree and
		// dirties a single page of it. There is deliberately no second index: the key ID is unique
		// per device because Upload, inside the one write transaction, reads the device's keys
		// first and never inserts a key ID it has (an extra unique index would double the pages
		// every claim writes).
		`CREATE TABLE one_time_keys (
			user_id   TEXT NOT NULL,
			device_id TEXT NOT NULL,
			algorithm TEXT NOT NULL,
			batch     INTEGER NOT NULL,
			key_id    TEXT NOT NULL,
			key_json  BLOB NOT NULL,
			PRIMARY KEY (user_id, device_id, algorithm, batch, key_id),
			FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
		) WITHOUT ROWID`,
		`CREATE TABLE fallback_keys (
			user_id   TEXT NOT NULL,
			device_id TEXT NOT NULL,
			algorithm TEXT NOT NULL,
			key_id    TEXT NOT NULL,
			key_json  BLOB NOT NULL,
			used      INTEGER NOT NULL DEFAULT 0,
			PRIMARY KEY (user_id, device_id, algorithm),
			FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
		)`,
		// One-time key IDs already handed out, so that a re-upload is not stored again.
		`CREATE TABLE claimed_keys (
			user_id   TEXT NOT NULL,
			device_id TEXT NOT NULL,
			key_id    TEXT NOT NULL,
			PRIMARY KEY (user_id, device_id, key_id),
			FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
		) WITHOUT ROWID`,
	}},
	{version: 2, statements: []string{
		// Claim cursors. A claim no longer deletes the key it hands out (and no longer inserts its
		// ID into claimed_keys): it moves the cursor of the (device, algorithm) to that key.
		//
		// This is exact because the claimed keys of a (device, algorithm) are always a prefix of
		// its keys in claim order (batch, then key ID): a claim takes the first key after the
		// cursor, and an upload's keys come after every key stored before (its batch number is
		// new and larger: it is drawn inside the write transaction, so batch order is commit
		// order). So a one-time key is claimed exactly when (batch, key_id) <= (last_batch,
		// last_key_id) of its cursor.
		//
		// What it saves: a claim rewrites one small row per device in this table instead of
		// deleting a row from one b-tree and inserting one into another, so it dirties one page
		// per device instead of two (fewer when the devices of a request are neighbours here),
		// and every dirty page is a 4 KiB frame that the commit writes to the WAL. The cursor
		// also keeps the value of the key it last handed out (last_key_json), which is what the
		// claim statement returns: one b-tree seek less per device than reading it back.
		//
		// Every (device, algorithm) with rows in one_time_keys has a cursor: uploads create it
		// (last_batch -1, before every batch) and this migration creates the existing ones. The
		// claimed rows stay in one_time_keys until the device's next upload of one-time keys,
		// which moves their IDs to claimed_keys and deletes them (sqlitePruneClaimed*), all at
		// once and on pages the upload writes anyway. claimed_keys stays what it was: the IDs of
		// claimed keys that are no longer in one_time_keys.
		//
		// Version 1 deleted a key when it was claimed, so every key it left is unclaimed: the
		// cursors start before all of them.
		`CREATE TABLE claim_cursors (
			user_id       TEXT NOT NULL,
			device_id     TEXT NOT NULL,
			algorithm     TEXT NOT NULL,
			last_batch    INTEGER NOT NULL, -- the last one-time key handed out, -1 and '' if none
			last_key_id   TEXT NOT NULL,
			last_key_json BLOB NOT NULL,    -- its value (x'' if none)
			PRIMARY KEY (user_id, device_id, algorithm),
			FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
		) WITHOUT ROWID`,
		`INSERT INTO claim_cursors (user_id, device_id, algorithm, last_batch, last_key_id, last_key_json)
		SELECT DISTINCT user_id, device_id, algorithm, -1, '', x'' FROM one_time_keys`,
	}},
	{version: 3, statements: []string{
		// Claim cursors get an integer ID: the table becomes a rowid table (id, AUTOINCREMENT)
		// with the (user, device, algorithm) key as a unique index beside it. Nothing else
		// changes: same columns, same meaning, same rows.
		//
		// Why: the claim statement then finds and rewrites each cursor by its integer rowid
		// instead of by three TEXT columns (a WITHOUT ROWID b-tree seeked twice per device and
		// rewritten with a delete and an insert), and binds one integer per device instead of
		// three strings. The IDs are what the store caches in memory (sqliteStore.cursorIDs), so
		// the unique index is only read for cursors the process has not seen yet. AUTOINCREMENT
		// makes that cache safe: an ID, once given, never names another cursor, even after rows
		// are deleted (by the cascade of a device) and in any process sharing the file.
		`CREATE TABLE claim_cursors_v3 (
			id            INTEGER PRIMARY KEY AUTOINCREMENT,
			user_id       TEXT NOT NULL,
			device_id     TEXT NOT NULL,
			algorithm     TEXT NOT NULL,
			last_batch    INTEGER NOT NULL, -- the last one-time key handed out, -1 and '' if none
			last_key_id   TEXT NOT NULL,
			last_key_json BLOB NOT NULL,    -- its value (x'' if none)
			FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
		)`,
		// In key order, so that the cursors of neighbouring devices share pages as before.
		`INSERT INTO claim_cursors_v3 (user_id, device_id, algorithm, last_batch, last_key_id, last_key_json)
		SELECT user_id, device_id, algorithm, last_batch, last_key_id, last_key_json FROM claim_cursors
		ORDER BY user_id, device_id, algorithm`,
		`DROP TABLE claim_cursors`,
		`ALTER TABLE claim_cursors_v3 RENAME TO claim_cursors`,
		`CREATE UNIQUE INDEX claim_cursors_by_device ON claim_cursors (user_id, device_id, algorithm)`,
	}},
	{version: 4, statements: []string{
		// One-time keys are filed under their claim cursor, in claim order, in a rowid table:
		// the rowid of a key (pos) is (cursor ID << 32) + its sequence number within the
		// cursor (1, 2, 3, ... in claim order), and the cursor keeps the sequence number of the
		// last key it handed out (last_seq, 0 if none) instead of (last_batch, last_key_id).
		// Claim order does not change: an upload's keys come after every key stored before
		// under the same cursor (the upload is serialised with every other write, draws the
		// next numbers, and inserts its keys in key ID order), so sequence order is (batch,
		// key ID) order. A key is claimed exactly when its sequence number is at most last_seq.
		//
		// Why: the claim's seek of the next key was the largest single cost of the keys server
		// (a quarter of its CPU under 100-device claims): one_time_keys was a WITHOUT ROWID
		// table keyed by (user, device, algorithm, batch, key ID), an index b-tree whose
		// interior pages hold whole rows (values included: a dozen per page, so five levels
		// for a few hundred thousand keys), compared field by field as records. A rowid table
		// is seeked by one integer, with interior pages of hundreds of (rowid, child) cells.
		// Counts, the prune and the re-upload check are ranges of pos too.
		//
		// Deleting a cursor deletes its keys (a trigger, as the foreign key cascade did).
		//
		// Every (device, algorithm) with one-time keys has had a cursor since version 2
		// (uploads create it); the first statement only makes sure of it, so that the copy
		// below, a join on the cursor, cannot leave a key behind.
		`INSERT INTO claim_cursors (user_id, device_id, algorithm, last_batch, last_key_id, last_key_json)
		SELECT DISTINCT user_id, device_id, algorithm, -1, '', x'' FROM one_time_keys WHERE true
		ON CONFLICT DO NOTHING`,
		`CREATE TABLE one_time_keys_v4 (
			pos      INTEGER PRIMARY KEY, -- (claim_cursors.id << 32) + sequence number (from 1)
			key_id   TEXT NOT NULL,
			key_json BLOB NOT NULL
		)`,
		`INSERT INTO one_time_keys_v4 (pos, key_id, key_json)
		SELECT (c.id << 32) + row_number() OVER (PARTITION BY c.id ORDER BY k.batch, k.key_id), k.key_id, k.key_json
		FROM one_time_keys AS k
		JOIN claim_cursors AS c ON c.user_id = k.user_id AND c.device_id = k.device_id AND c.algorithm = k.algorithm`,
		// The cursor's position: the number of its keys still stored at or before it (keys
		// pruned before are gone, and the sequence numbers above count the remaining ones).
		`ALTER TABLE claim_cursors ADD COLUMN last_seq INTEGER NOT NULL DEFAULT 0`,
		`UPDATE claim_cursors SET last_seq = (
			SELECT count(*) FROM one_time_keys AS k
			WHERE k.user_id = claim_cursors.user_id AND k.device_id = claim_cursors.device_id
			  AND k.algorithm = claim_cursors.algorithm
			  AND (k.batch, k.key_id) <= (claim_cursors.last_batch, claim_cursors.last_key_id))
		WHERE last_batch >= 0`,
		`ALTER TABLE claim_cursors DROP COLUMN last_batch`,
		`DROP TABLE one_time_keys`,
		`ALTER TABLE one_time_keys_v4 RENAME TO one_time_keys`,
		`CREATE TRIGGER claim_cursors_delete_keys AFTER DELETE ON claim_cursors BEGIN
			DELETE FROM one_time_keys WHERE pos > old.id << 32 AND pos < (old.id + 1) << 32;
		END`,
	}},
	{version: 5, statements: []string{
		// Batch numbers have not been drawn since version 4 (keys are numbered under their
		// cursor): the table of version 1 that drew them is dropped (with its sqlite_sequence
		// row). The PostgreSQL schema never had it (its upload_batch_seq is still used).
		`DROP TABLE upload_batches`,
	}},
}

// migration is one schema version: statements run in one transaction with its record in
// schema_migrations.
type migration struct {
	version    int
	statements []string
}

// sqliteCheckpointEvery is how often a background goroutine copies the WAL into the database
// file (a PASSIVE checkpoint, which makes neither the writer nor readers wait). Claims then do not
// pay for checkpoints: with SQLite's default, the commit that crosses 1,000 WAL pages copies them
// and syncs the file itself.
const sqliteCheckpointEvery = time.Second

// sqliteAutoCheckpointPages is the WAL size (in pages) at which a commit checkpoints by itself,
// the safety net should the background checkpoints fall behind.
const sqliteAutoCheckpointPages = 20000

// sqliteWriterCacheKiB is the page cache of the writer connection: a claim for many devices
// touches a few pages of each, and re-reading them from the file costs more than the memory.
const sqliteWriterCacheKiB = 32 * 1024

// sqliteBusyTimeoutMS is how long a connection waits for another process's write lock before
// SQLITE_BUSY. Inside one process there is a single writer connection, so it never waits there.
const sqliteBusyTimeoutMS = 10000

// sqliteClaimChunks are the numbers of wants one claim statement takes: a request's wants are
// bound as parameters of a VALUES list, (?, ?, ?) per want (the claim of one-time keys: an IN
// list of cursor IDs, one per want), padded with NULLs (which match nothing) up to the next of
// these sizes; a request of more than the largest size runs the
// statement once per chunk, all in the one transaction. A few fixed sizes keep the number of
// prepared statements small (and the padding costs less than a second statement would).
//
// Why bound parameters and not one JSON parameter taken apart by json_each(): measured with
// modernc.org/sqlite, decoding [user, device, algorithm] from JSON in SQL costs about 5 µs per
// want, binding three text parameters about 1.3 µs. Why not one statement per want (as version
// 1 did): each statement costs far more in database/sql and the driver (context, binding,
// stepping, resetting, allocating) than SQLite's own work for one device.
var sqliteClaimChunks = [...]int{1, 2, 4, 8, 16, 32, 64, 128, 256}

// sqliteClaimOneTimeKeys returns the claim statement for n cursors, given by ID (see
// sqliteClaimChunks; NULL IDs are padding and match nothing).
//
// For every cursor with a one-time key after it, it moves the cursor to the first such key in
// claim order (its next sequence number, schema version 4) and returns that key. Per cursor that
// is a seek of the cursor by its integer rowid (twice: SQLite collects the rows of a multi-row
// UPDATE first, then updates them), one seek of the next key by rowid (a range of pos that starts
// right after the cursor and ends before the next cursor's keys, so claimed keys are never
// walked; TestSQLitePlans checks the plan), and the rewrite of the cursor row in place, which
// also holds the value returned.
//
// A cursor with no key after it gets no row: the subquery yields NULLs, which the NOT NULL
// columns refuse, and OR IGNORE skips that row (no change, no RETURNING row). OR IGNORE matters
// for speed too: no constraint of this statement can abort it, so SQLite needs no statement
// journal (otherwise every page it changes is first copied there). Rows come back in no
// particular order; the IDs must be distinct.
func sqliteClaimOneTimeKeys(n int) string {
	return `
		UPDATE OR IGNORE claim_cursors
		SET (last_seq, last_key_id, last_key_json) = (
			SELECT k.pos - (claim_cursors.id << 32), k.key_id, k.key_json FROM one_time_keys AS k
			WHERE k.pos > (claim_cursors.id << 32) + claim_cursors.last_seq
			  AND k.pos < (claim_cursors.id + 1) << 32
			ORDER BY k.pos
			LIMIT 1)
		WHERE id IN (` + strings.TrimSuffix(strings.Repeat("?, ", n), ", ") + `)
		RETURNING id, last_key_id, last_key_json`
}

// sqliteFindCursors returns the statement that finds the cursor IDs of n wants, given as rows of
// (user, device, algorithm, position of the want); it returns (ID, position) for each want that
// has a cursor. Only wants the process has not seen before need it (sqliteStore.cursorIDs).
func sqliteFindCursors(n int) string {
	return `
		SELECT c.id, want.column4
		FROM (VALUES ` + strings.TrimSuffix(strings.Repeat("(?, ?, ?, ?), ", n), ", ") + `) AS want
		JOIN claim_cursors AS c
		  ON c.user_id = want.column1 AND c.device_id = want.column2 AND c.algorithm = want.column3`
}

// sqliteClaimFallbackKeys returns the statement that claims the fallback keys of n wants (those
// that got no one-time key): returned even if used, and marked used. Rows come back in no
// particular order.
func sqliteClaimFallbackKeys(n int) string {
	return `
		UPDATE OR IGNORE fallback_keys SET used = 1
		FROM (VALUES ` + sqliteValues(n) + `) AS want
		WHERE fallback_keys.user_id = want.column1 AND fallback_keys.device_id = want.column2
		  AND fallback_keys.algorithm = want.column3
		RETURNING user_id, device_id, algorithm, key_id, key_json`
}

// sqliteInsertOneTimeKeys returns the statement that inserts n one-time keys (rows of pos, key
// ID, value; rows of NULLs are padding and skipped): one statement per upload instead of one
// per key (see sqliteClaimChunks).
func sqliteInsertOneTimeKeys(n int) string {
	return `
		INSERT INTO one_time_keys (pos, key_id, key_json)
		SELECT column1, column2, column3
		FROM (VALUES ` + sqliteValues(n) + `)
		WHERE column1 IS NOT NULL`
}

// sqliteValues returns n rows "(?, ?, ?)" for a VALUES list.
func sqliteValues(n int) string {
	return strings.TrimSuffix(strings.Repeat("(?, ?, ?), ", n), ", ")
}

// sqliteChunk returns the index in sqliteClaimChunks of the statement size for n rows: the
// smallest that holds them, or the largest.
func sqliteChunk(n int) int {
	i := 0
	for i < len(sqliteClaimChunks)-1 && sqliteClaimChunks[i] < n {
		i++
	}
	return i
}

// The statements of Upload and Counts (prepared once, like the claim statements: preparing
// costs modernc.org/sqlite about as much as running them).
const (
	sqliteUpsertDevice = `
		INSERT INTO devices (user_id, device_id, device_keys) VALUES (?, ?, ?)
		ON CONFLICT (user_id, device_id)
		DO UPDATE SET device_keys = coalesce(excluded.device_keys, devices.device_keys)`

	// The device's one-time keys among the key IDs of an upload (a JSON array): after the prune,
	// all of them are unclaimed. The keys of each cursor of the device are one range of pos;
	// key_id is not indexed on its own.
	sqliteUnclaimedAmong = `
		SELECT k.key_id, k.key_json FROM claim_cursors AS c
		JOIN one_time_keys AS k ON k.pos > c.id << 32 AND k.pos < (c.id + 1) << 32
		WHERE c.user_id = ? AND c.device_id = ?
		  AND k.key_id IN (SELECT value FROM json_each(?))`
	sqliteClaimedAmong = `
		SELECT key_id FROM claimed_keys
		WHERE user_id = ? AND device_id = ?
		  AND key_id IN (SELECT value FROM json_each(?))`

	// A new fallback key replaces the old one of its algorithm and is unused; an identical
	// re-upload (same key ID, same bytes) changes nothing and so keeps "used".
	sqliteUpsertFallbackKey = `
		INSERT INTO fallback_keys (user_id, device_id, algorithm, key_id, key_json, used)
		VALUES (?, ?, ?, ?, ?, 0)
		ON CONFLICT (user_id, device_id, algorithm) DO UPDATE
			SET key_id = excluded.key_id, key_json = excluded.key_json, used = 0
			WHERE fallback_keys.key_id IS NOT excluded.key_id
			   OR fallback_keys.key_json IS NOT excluded.key_json`

	// sqliteCounts counts the one-time keys after the cursor (the unclaimed ones) per algorithm:
	// a range of pos that starts right after the cursor, so claimed keys are not walked.
	sqliteCounts = `
		SELECT c.algorithm, count(*) FROM claim_cursors AS c
		JOIN one_time_keys AS k ON k.pos > (c.id << 32) + c.last_seq AND k.pos < (c.id + 1) << 32
		WHERE c.user_id = ?1 AND c.device_id = ?2
		GROUP BY c.algorithm`

	// sqliteCreateCursor gives a (device, algorithm) that receives one-time keys its cursor.
	sqliteCreateCursor = `
		INSERT INTO claim_cursors (user_id, device_id, algorithm, last_seq, last_key_id, last_key_json)
		VALUES (?, ?, ?, 0, '', x'')
		ON CONFLICT DO NOTHING`

	// sqliteNextSeq returns the ID of a (device, algorithm)'s cursor and the last sequence number
	// used under it: that of the newest key stored, or of the cursor when every key up to it has
	// been pruned (numbers are never reused, so a new key is never taken for a claimed one).
	sqliteNextSeq = `
		SELECT c.id, max(c.last_seq, coalesce((
			SELECT max(k.pos) FROM one_time_keys AS k
			WHERE k.pos > c.id << 32 AND k.pos < (c.id + 1) << 32) - (c.id << 32), 0))
		FROM claim_cursors AS c
		WHERE c.user_id = ? AND c.device_id = ? AND c.algorithm = ?`

	// sqliteClaimedCursors, sqlitePruneClaimedIDs and sqlitePruneClaimedKeys run in an upload of
	// one-time keys: for each cursor of the device that has handed out keys, the claimed keys (at
	// or before it) leave one_time_keys and their IDs go to claimed_keys, where the re-upload
	// check finds them. The bounds are parameters (no column affinity), so both statements are a
	// range of the primary key that holds exactly the claimed keys.
	sqliteClaimedCursors = `
		SELECT id, last_seq FROM claim_cursors
		WHERE user_id = ? AND device_id = ? AND last_seq > 0`
	sqlitePruneClaimedIDs = `
		INSERT INTO claimed_keys (user_id, device_id, key_id)
		SELECT ?1, ?2, key_id FROM one_time_keys
		WHERE pos > ?3 << 32 AND pos <= (?3 << 32) + ?4
		ON CONFLICT DO NOTHING`
	sqlitePruneClaimedKeys = `
		DELETE FROM one_time_keys
		WHERE pos > ?1 << 32 AND pos <= (?1 << 32) + ?2`
)

// sqliteStore is the SQLite backend.
//
// Every write goes through one connection (writer, MaxOpenConns 1): transactions of this process
// queue in database/sql instead of meeting SQLITE_BUSY, and the next one starts the moment the
// previous one ends. Its transactions begin with BEGIN IMMEDIATE (_txlock=immediate), so that a
// second process on the same file waits (busy_timeout) for the write lock at BEGIN rather than
// failing when a read lock would have to be upgraded. Reads that are not part of a write use a
// pool of read-only connections, which WAL lets run beside the writer.
type sqliteStore struct {
	writer       *sql.DB
	reader       *sql.DB
	checkpointer *sql.DB // one connection, for the background checkpoints

	stopCheckpoints chan struct{}
	checkpointsDone chan struct{}
	closeOnce       sync.Once
	closeErr        error

	// writeTurn hands the writer connection to its callers in the order they asked for it (see
	// beginWrite): a buffered channel of one token; blocked senders are served first in, first out.
	writeTurn chan struct{}

	// cursorIDs caches the IDs of claim cursors (see sqliteCursorIDs).
	cursorIDs sqliteCursorIDs

	// group runs concurrent claims in one transaction (see groupCommit).
	group groupCommit

	// The statements of the writer that take a list of rows, one per size of sqliteClaimChunks.
	claimOneTimeKeys  [len(sqliteClaimChunks)]*sql.Stmt
	findCursors       [len(sqliteClaimChunks)]*sql.Stmt
	claimFallbackKeys [len(sqliteClaimChunks)]*sql.Stmt
	insertOneTimeKeys [len(sqliteClaimChunks)]*sql.Stmt
	// The statements of Upload (writer) and Counts (writer and readers).
	upsertDevice, claimedCursors, pruneClaimedIDs, pruneClaimedKeys *sql.Stmt
	unclaimedAmong, claimedAmong                                    *sql.Stmt
	nextSeq, createCursor, upsertFallbackKey                        *sql.Stmt
	writerCounts, readerCounts                                      *sql.Stmt
	statements                                                      []*sql.Stmt // all of them, for Close
}

// openSQLite opens (creating if needed) the SQLite database file at path.
func openSQLite(ctx context.Context, path string) (_ Store, err error) {
	if path == "" || path == ":memory:" || strings.HasPrefix(path, "file:") {
		return nil, fmt.Errorf("store: sqlite: want sqlite:PATH with PATH a file name, got %q", path)
	}
	if strings.ContainsAny(path, "?#") {
		return nil, fmt.Errorf("store: sqlite: file name %q must not contain '?' or '#'", path)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("store: sqlite: create directory of %q: %w", path, err)
	}

	// Pragmas applied by the driver to every new connection:
	//   - busy_timeout first, so that the others wait for another process instead of failing;
	//   - foreign_keys on (it is per connection and off by default);
	//   - journal_mode WAL: readers never block the writer nor the writer them;
	//   - synchronous NORMAL: in WAL mode a commit is written to the WAL without an fsync, the WAL
	//     is synced at checkpoints. A committed transaction survives a crash of the process (the
	//     data is in the operating system's page cache and the WAL is replayed on the next open);
	//     only a power loss or kernel crash can lose the last transactions, and even then the
	//     database stays consistent (never half a transaction, so never a key both claimed and
	//     left). Losing the last claims on power loss can hand those keys out again after the
	//     reboot; that is the accepted cost for a single-node deployment. Use FULL (or PostgreSQL)
	//     where that matters.
	pragmas := fmt.Sprintf("_pragma=busy_timeout(%d)&_pragma=foreign_keys(1)", sqliteBusyTimeoutMS)
	writerDSN := path + "?" + pragmas + "&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_txlock=immediate" +
		fmt.Sprintf("&_pragma=cache_size(-%d)&_pragma=wal_autocheckpoint(%d)", sqliteWriterCacheKiB, sqliteAutoCheckpointPages)
	readerDSN := path + "?" + pragmas + "&_pragma=query_only(1)"
	checkpointerDSN := path + "?" + pragmas

	s := &sqliteStore{writeTurn: make(chan struct{}, 1)}
	s.group = groupCommit{claim: s.claimRounds, maxWants: groupMaxWants, maxInFlight: 1, yield: true}
	defer func() {
		if err != nil {
			_ = s.Close()
		}
	}()

	if s.writer, err = sql.Open("sqlite", writerDSN); err != nil {
		return nil, fmt.Errorf("store: sqlite: open %q: %w", path, err)
	}
	s.writer.SetMaxOpenConns(1)
	s.writer.SetMaxIdleConns(1)
	s.writer.SetConnMaxLifetime(0)
	s.writer.SetConnMaxIdleTime(0)

	// The first connection switches a new file to WAL. SQLite answers a journal mode change that
	// meets another process's connection with SQLITE_BUSY at once, without the busy handler, so
	// that step alone is retried (bounded by the busy timeout).
	var mode string
	for wait := time.Now().Add(sqliteBusyTimeoutMS * time.Millisecond); ; {
		err := s.writer.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode)
		if err == nil {
			break
		}
		if !isSQLiteBusy(err) || time.Now().After(wait) {
			return nil, fmt.Errorf("store: sqlite: open %q: %w", path, err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("store: sqlite: open %q: %w", path, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
	if !strings.EqualFold(mode, "wal") {
		return nil, fmt.Errorf("store: sqlite: %q: journal_mode is %q, want wal", path, mode)
	}
	if err := s.migrate(ctx); err != nil {
		return nil, fmt.Errorf("store: sqlite: migrate %q: %w", path, err)
	}

	if s.reader, err = sql.Open("sqlite", readerDSN); err != nil {
		return nil, fmt.Errorf("store: sqlite: open %q: %w", path, err)
	}
	s.reader.SetMaxOpenConns(max(4, runtime.GOMAXPROCS(0)))
	s.reader.SetMaxIdleConns(max(4, runtime.GOMAXPROCS(0)))

	if s.checkpointer, err = sql.Open("sqlite", checkpointerDSN); err != nil {
		return nil, fmt.Errorf("store: sqlite: open %q: %w", path, err)
	}
	s.checkpointer.SetMaxOpenConns(1)

	prepare := func(dst **sql.Stmt, db *sql.DB, query string) error {
		st, err := db.PrepareContext(ctx, query)
		if err != nil {
			return fmt.Errorf("store: sqlite: prepare: %w", err)
		}
		*dst = st
		s.statements = append(s.statements, st)
		return nil
	}
	for i, n := range sqliteClaimChunks {
		if err := prepare(&s.claimOneTimeKeys[i], s.writer, sqliteClaimOneTimeKeys(n)); err != nil {
			return nil, err
		}
		if err := prepare(&s.claimFallbackKeys[i], s.writer, sqliteClaimFallbackKeys(n)); err != nil {
			return nil, err
		}
		if err := prepare(&s.findCursors[i], s.writer, sqliteFindCursors(n)); err != nil {
			return nil, err
		}
		if err := prepare(&s.insertOneTimeKeys[i], s.writer, sqliteInsertOneTimeKeys(n)); err != nil {
			return nil, err
		}
	}
	for _, st := range []struct {
		dst   **sql.Stmt
		db    *sql.DB
		query string
	}{
		{&s.upsertDevice, s.writer, sqliteUpsertDevice},
		{&s.claimedCursors, s.writer, sqliteClaimedCursors},
		{&s.pruneClaimedIDs, s.writer, sqlitePruneClaimedIDs},
		{&s.pruneClaimedKeys, s.writer, sqlitePruneClaimedKeys},
		{&s.unclaimedAmong, s.writer, sqliteUnclaimedAmong},
		{&s.claimedAmong, s.writer, sqliteClaimedAmong},
		{&s.nextSeq, s.writer, sqliteNextSeq},
		{&s.createCursor, s.writer, sqliteCreateCursor},
		{&s.upsertFallbackKey, s.writer, sqliteUpsertFallbackKey},
		{&s.writerCounts, s.writer, sqliteCounts},
		{&s.readerCounts, s.reader, sqliteCounts},
	} {
		if err := prepare(st.dst, st.db, st.query); err != nil {
			return nil, err
		}
	}
	s.stopCheckpoints, s.checkpointsDone = make(chan struct{}), make(chan struct{})
	go s.checkpoints(path)
	return s, nil
}

// checkpoints runs a PASSIVE checkpoint every sqliteCheckpointEvery until Close. A failure is
// logged and tried again at the next tick: the WAL then only grows until it succeeds (or the
// writer's own auto-checkpoint steps in).
func (s *sqliteStore) checkpoints(path string) {
	defer close(s.checkpointsDone)
	tick := time.NewTicker(sqliteCheckpointEvery)
	defer tick.Stop()
	for {
		select {
		case <-s.stopCheckpoints:
			return
		case <-tick.C:
			var busy, walPages, copied int
			if err := s.checkpointer.QueryRow(`PRAGMA wal_checkpoint(PASSIVE)`).Scan(&busy, &walPages, &copied); err != nil {
				slog.Warn("store: sqlite: background checkpoint failed", "path", path, "err", err)
			}
		}
	}
}

// isSQLiteBusy reports whether err is SQLITE_BUSY (or one of its extended codes).
func isSQLiteBusy(err error) bool {
	var e *sqlite.Error
	return errors.As(err, &e) && e.Code()&0xff == sqlite3.SQLITE_BUSY
}

// beginWrite waits for the writer's turn, first come first served, and begins a transaction on
// it (BEGIN IMMEDIATE). The returned function ends the turn; call it once the transaction is
// committed or rolled back.
//
// Why a queue of our own: database/sql gives a connection that comes free to a random one of the
// callers waiting for it, not to the one that waited longest. With one writer connection and
// several concurrent claims that random choice is the whole latency tail: measured with 8
// clients of 100-device claims, p50 15 ms, p99 75-80 ms, as some requests lost the draw many
// times in a row. In the order of arrival nobody waits for more than the requests ahead of it.
func (s *sqliteStore) beginWrite(ctx context.Context) (*sql.Tx, func(), error) {
	select {
	case s.writeTurn <- struct{}{}:
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	}
	done := func() { <-s.writeTurn }
	tx, err := s.writer.BeginTx(ctx, nil)
	if err != nil {
		done()
		return nil, nil, err
	}
	return tx, done, nil
}

// migrate brings the schema to the newest version in one IMMEDIATE transaction, which also
// keeps a second process that opens the same file at the same moment waiting until it is done.
func (s *sqliteStore) migrate(ctx context.Context) error {
	tx, err := s.writer.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()

	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    INTEGER PRIMARY KEY,
		applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
	)`); err != nil {
		return err
	}
	var current int
	if err := tx.QueryRowContext(ctx, `SELECT coalesce(max(version), 0) FROM schema_migrations`).Scan(&current); err != nil {
		return err
	}
	if newest := sqliteMigrations[len(sqliteMigrations)-1].version; current > newest {
		return fmt.Errorf("database schema version %d is newer than this program knows (%d)", current, newest)
	}
	for _, m := range sqliteMigrations {
		if m.version <= current {
			continue
		}
		for _, stmt := range m.statements {
			if _, err := tx.ExecContext(ctx, stmt); err != nil {
				return fmt.Errorf("version %d: %w", m.version, err)
			}
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version) VALUES (?)`, m.version); err != nil {
			return fmt.Errorf("version %d: %w", m.version, err)
		}
	}
	return tx.Commit()
}

// Close stops the background checkpoints and closes the statements and connection pools. The
// last connection to close checkpoints the WAL into the database file. Closing again is a no-op.
func (s *sqliteStore) Close() error {
	s.closeOnce.Do(func() {
		if s.stopCheckpoints != nil { // the background checkpoints were started
			close(s.stopCheckpoints)
			<-s.checkpointsDone
		}
		var errs []error
		for _, st := range s.statements {
			errs = append(errs, st.Close())
		}
		for _, db := range []*sql.DB{s.checkpointer, s.reader, s.writer} {
			if db != nil {
				errs = append(errs, db.Close())
			}
		}
		if err := errors.Join(errs...); err != nil {
			s.closeErr = fmt.Errorf("store: sqlite: close: %w", err)
		}
	})
	return s.closeErr
}

// Upload implements Store.
func (s *sqliteStore) Upload(ctx context.Context, user, device string, up Upload) (Counts, error) {
	p, err := prepareUpload(up)
	if err != nil {
		return nil, err
	}
	if p.empty() {
		return s.Counts(ctx, user, device)
	}

	tx, done, err := s.beginWrite(ctx)
	if err != nil {
		return nil, fmt.Errorf("store: sqlite: upload: %w", err)
	}
	defer done()
	defer func() { _ = tx.Rollback() }()

	if err := s.upload(ctx, tx, user, device, p); err != nil {
		if errors.Is(err, ErrKeyConflict) {
			return nil, err
		}
		return nil, fmt.Errorf("store: sqlite: upload: %w", err)
	}
	counts, err := countKeys(ctx, tx.StmtContext(ctx, s.writerCounts), user, device)
	if err != nil {
		return nil, fmt.Errorf("store: sqlite: upload: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("store: sqlite: upload: commit: %w", err)
	}
	return counts, nil
}

// upload writes one prepared upload inside tx.
func (s *sqliteStore) upload(ctx context.Context, tx *sql.Tx, user, device string, p preparedUpload) error {
	var deviceKeys any // untyped nil binds NULL: keep the stored device keys
	if p.deviceKeys != nil {
		deviceKeys = p.deviceKeys
	}
	if _, err := tx.StmtContext(ctx, s.upsertDevice).ExecContext(ctx, user, device, deviceKeys); err != nil {
		return fmt.Errorf("device: %w", err)
	}

	if len(p.oneTimeKeys) > 0 {
		if err := s.pruneClaimed(ctx, tx, user, device); err != nil {
			return fmt.Errorf("claimed keys: %w", err)
		}
		existing, claimed, err := s.knownKeys(ctx, tx, user, device, p.oneTimeKeyIDs())
		if err != nil {
			return err
		}
		fresh, err := newOneTimeKeys(user, device, p.oneTimeKeys, existing, claimed)
		if err != nil {
			return err
		}
		if len(fresh) > 0 {
			if err := s.storeOneTimeKeys(ctx, tx, user, device, fresh); err != nil {
				return err
			}
		}
	}

	for _, k := range p.fallbackKeys {
		if _, err := tx.StmtContext(ctx, s.upsertFallbackKey).ExecContext(ctx, user, device, k.algorithm, k.keyID, k.value); err != nil {
			return fmt.Errorf("fallback key %q: %w", k.keyID, err)
		}
	}
	return nil
}

// sqliteMaxCursorID and sqliteMaxSeq bound the two halves of a one-time key's pos (schema
// version 4): (cursor ID << 32) + sequence number must stay below 2^63.
const (
	sqliteMaxCursorID = 1<<31 - 1
	sqliteMaxSeq      = 1<<32 - 1
)

// storeOneTimeKeys stores fresh one-time keys (in key ID order) under the cursors of their
// algorithms, creating the cursors that do not exist yet, with the sequence numbers that follow
// the last ones used: after every key stored before, so claim order is upload order, then key
// ID order.
func (s *sqliteStore) storeOneTimeKeys(ctx context.Context, tx *sql.Tx, user, device string, fresh []keyEntry) error {
	type cursor struct {
		id, seq int64
	}
	cursors := map[string]*cursor{}
	for _, k := range fresh {
		if cursors[k.algorithm] != nil {
			continue
		}
		if _, err := tx.StmtContext(ctx, s.createCursor).ExecContext(ctx, user, device, k.algorithm); err != nil {
			return fmt.Errorf("claim cursor: %w", err)
		}
		c := &cursor{}
		if err := tx.StmtContext(ctx, s.nextSeq).QueryRowContext(ctx, user, device, k.algorithm).Scan(&c.id, &c.seq); err != nil {
			return fmt.Errorf("claim cursor: %w", err)
		}
		if c.id <= 0 || c.id > sqliteMaxCursorID {
			return fmt.Errorf("claim cursor ID %d out of range", c.id)
		}
		cursors[k.algorithm] = c
	}
	largest := sqliteClaimChunks[len(sqliteClaimChunks)-1]
	for from := 0; from < len(fresh); from += largest {
		chunk := fresh[from:min(from+largest, len(fresh))]
		size := sqliteChunk(len(chunk))
		args := make([]any, 0, 3*sqliteClaimChunks[size])
		for _, k := range chunk {
			c := cursors[k.algorithm]
			if c.seq++; c.seq > sqliteMaxSeq {
				return fmt.Errorf("one-time keys: device %q of %q has used up the sequence numbers of %q", device, user, k.algorithm)
			}
			args = append(args, c.id<<32+c.seq, k.keyID, k.value)
		}
		for len(args) < cap(args) {
			args = append(args, nil) // padding: skipped
		}
		if _, err := tx.StmtContext(ctx, s.insertOneTimeKeys[size]).ExecContext(ctx, args...); err != nil {
			return fmt.Errorf("one-time keys: %w", err)
		}
	}
	return nil
}

// pruneClaimed moves the device's claimed one-time keys out of one_time_keys: their IDs go to
// claimed_keys. Afterwards every key of the device in one_time_keys is unclaimed.
func (s *sqliteStore) pruneClaimed(ctx context.Context, tx *sql.Tx, user, device string) error {
	type cursor struct {
		id, seq int64
	}
	var cursors []cursor
	err := sqliteEachRow(ctx, tx.StmtContext(ctx, s.claimedCursors), func(rows *sql.Rows) error {
		var c cursor
		if err := rows.Scan(&c.id, &c.seq); err != nil {
			return err
		}
		cursors = append(cursors, c)
		return nil
	}, user, device)
	if err != nil {
		return err
	}
	for _, c := range cursors {
		if _, err := tx.StmtContext(ctx, s.pruneClaimedIDs).ExecContext(ctx, user, device, c.id, c.seq); err != nil {
			return err
		}
		if _, err := tx.StmtContext(ctx, s.pruneClaimedKeys).ExecContext(ctx, c.id, c.seq); err != nil {
			return err
		}
	}
	return nil
}

// knownKeys returns, among the given one-time key IDs of a device, those stored unclaimed (key
// ID -> value) and those already claimed. The device's claimed keys must have been pruned from
// one_time_keys in this transaction.
func (s *sqliteStore) knownKeys(ctx context.Context, tx *sql.Tx, user, device string, keyIDs []string) (existing map[string][]byte, claimed map[string]bool, err error) {
	ids, err := json.Marshal(keyIDs) // valid UTF-8 (prepareUpload checks), so JSON keeps them exact
	if err != nil {
		return nil, nil, err
	}
	existing = make(map[string][]byte)
	claimed = make(map[string]bool)
	err = sqliteEachRow(ctx, tx.StmtContext(ctx, s.unclaimedAmong), func(rows *sql.Rows) error {
		var keyID string
		var value []byte
		if err := rows.Scan(&keyID, &value); err != nil {
			return err
		}
		existing[keyID] = value
		return nil
	}, user, device, ids)
	if err != nil {
		return nil, nil, fmt.Errorf("one-time keys: %w", err)
	}
	err = sqliteEachRow(ctx, tx.StmtContext(ctx, s.claimedAmong), func(rows *sql.Rows) error {
		var keyID string
		if err := rows.Scan(&keyID); err != nil {
			return err
		}
		claimed[keyID] = true
		return nil
	}, user, device, ids)
	if err != nil {
		return nil, nil, fmt.Errorf("claimed keys: %w", err)
	}
	return existing, claimed, nil
}

// sqliteEachRow runs a prepared query and calls fn for each row.
func sqliteEachRow(ctx context.Context, stmt *sql.Stmt, fn func(*sql.Rows) error, args ...any) error {
	rows, err := stmt.QueryContext(ctx, args...)
	if err != nil {
		return err
	}
	defer func() { _ = rows.Close() }()
	for rows.Next() {
		if err := fn(rows); err != nil {
			return err
		}
	}
	return rows.Err()
}

// countKeys returns the device's unclaimed one-time keys per algorithm (stmt: sqliteCounts).
func countKeys(ctx context.Context, stmt *sql.Stmt, user, device string) (Counts, error) {
	counts := newCounts()
	err := sqliteEachRow(ctx, stmt, func(rows *sql.Rows) error {
		var alg string
		var n int
		if err := rows.Scan(&alg, &n); err != nil {
			return err
		}
		counts[alg] = n
		return nil
	}, user, device)
	if err != nil {
		return nil, fmt.Errorf("counts: %w", err)
	}
	return counts, nil
}

// Counts implements Store.
func (s *sqliteStore) Counts(ctx context.Context, user, device string) (Counts, error) {
	counts, err := countKeys(ctx, s.readerCounts, user, device)
	if err != nil {
		return nil, fmt.Errorf("store: sqlite: %w", err)
	}
	return counts, nil
}

// QueryDevices implements Store. All users are read in one transaction, so the answer is one
// consistent snapshot.
func (s *sqliteStore) QueryDevices(ctx context.Context, req map[string][]string) (map[string]map[string]json.RawMessage, error) {
	out := make(map[string]map[string]json.RawMessage, len(req))
	if len(req) == 0 {
		return out, nil
	}
	tx, err := s.reader.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("store: sqlite: query devices: %w", err)
	}
	defer func() { _ = tx.Rollback() }()

	for user, devices := range req {
		got := make(map[string]json.RawMessage)
		out[user] = got
		if len(devices) == 0 {
			if err := queryAllDevices(ctx, tx, user, got); err != nil {
				return nil, fmt.Errorf("store: sqlite: query devices of %q: %w", user, err)
			}
			continue
		}
		for _, device := range devices {
			var keys []byte
			err := tx.QueryRowContext(ctx, `
				SELECT device_keys FROM devices
				WHERE user_id = ? AND device_id = ? AND device_keys IS NOT NULL`,
				user, device).Scan(&keys)
			switch {
			case err == nil:
				got[device] = keys
			case !errors.Is(err, sql.ErrNoRows):
				return nil, fmt.Errorf("store: sqlite: query device %q of %q: %w", device, user, err)
			}
		}
	}
	return out, nil
}

// queryAllDevices adds every device of user that has device keys to got.
func queryAllDevices(ctx context.Context, tx *sql.Tx, user string, got map[string]json.RawMessage) error {
	rows, err := tx.QueryContext(ctx, `
		SELECT device_id, device_keys FROM devices
		WHERE user_id = ? AND device_keys IS NOT NULL`, user)
	if err != nil {
		return err
	}
	defer func() { _ = rows.Close() }()
	for rows.Next() {
		var device string
		var keys []byte
		if err := rows.Scan(&device, &keys); err != nil {
			return err
		}
		got[device] = keys
	}
	return rows.Err()
}

// sqliteCursorIDs caches the IDs of claim cursors: (user, device, algorithm) -> claim_cursors.id.
// An ID never changes and is never given to another cursor (AUTOINCREMENT, schema version 3),
// so an entry stays true for as long as its cursor exists, whichever process wrote it; a cursor
// that is deleted (with its device) leaves an entry that matches no row, which the claim reads
// as "no one-time key". Only cursors that exist are cached: a want without one is looked up
// again by the next claim, since an upload may create it. The cache is bounded: when it is full
// it is emptied and fills again from the claims that follow.
type sqliteCursorIDs struct {
	mu  sync.Mutex
	ids map[Want]int64
}

// sqliteCursorCacheMax bounds sqliteCursorIDs (about 100 bytes per entry with Matrix-sized IDs).
const sqliteCursorCacheMax = 1 << 18

// lookup fills ids[i] with the cached ID of wants[i] (0 when not cached) and returns the number
// of wants not cached.
func (c *sqliteCursorIDs) lookup(wants []Want, ids []int64) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	missing := 0
	for i, w := range wants {
		if ids[i] = c.ids[w]; ids[i] == 0 {
			missing++
		}
	}
	return missing
}

// add caches the IDs found for wants (ids[i] != 0) that were missing.
func (c *sqliteCursorIDs) add(wants []Want, ids []int64, found []int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ids == nil || len(c.ids)+len(found) > sqliteCursorCacheMax {
		c.ids = make(map[Want]int64, min(sqliteCursorCacheMax, 1024+len(found)))
	}
	for _, i := range found {
		c.ids[wants[i]] = ids[i]
	}
}

// Claim implements Store through the group commit (groupCommit): concurrent claims share one
// transaction (claimRounds).
func (s *sqliteStore) Claim(ctx context.Context, wants []Want) ([]Claimed, error) {
	return s.group.Claim(ctx, wants)
}

// claimRounds claims the wants of every round (distinct wants within a round) in one IMMEDIATE
// transaction, so no other writer (in this process or another) sees a key between its selection
// and its claim. Per round, one statement (per chunk of sqliteClaimChunks) claims the one-time
// keys of its wants by the IDs of their cursors (looked up first, in the same transaction, for
// cursors not in s.cursorIDs), and a second one, only if some want got none, the fallback keys
// of those. A round sees the claims of the rounds before it. The writer is held for little more
// than the statements.
func (s *sqliteStore) claimRounds(ctx context.Context, rounds [][]Want) ([][]Claimed, error) {
	tx, done, err := s.beginWrite(ctx)
	if err != nil {
		return nil, fmt.Errorf("store: sqlite: claim: %w", err)
	}
	defer done()
	defer func() { _ = tx.Rollback() }()

	out := make([][]Claimed, len(rounds))
	for r, wants := range rounds {
		got := make([]Claimed, len(wants)) // by position in wants; KeyID "" = nothing (yet)
		ids := make([]int64, len(wants))   // the cursor of each want; 0 = none (known)
		if missing := s.cursorIDs.lookup(wants, ids); missing > 0 {
			if err := s.findCursorIDs(ctx, tx, wants, ids); err != nil {
				return nil, fmt.Errorf("store: sqlite: claim: find cursors: %w", err)
			}
		}
		n, err := s.claimByCursor(ctx, tx, wants, ids, got)
		if err != nil {
			return nil, fmt.Errorf("store: sqlite: claim one-time keys: %w", err)
		}
		if n < len(wants) {
			index := make(map[Want]int, len(wants)-n)
			for i, w := range wants {
				if got[i].KeyID == "" {
					index[w] = i
				}
			}
			if _, err := s.claimEach(ctx, tx, &s.claimFallbackKeys, wants, index, got, true); err != nil {
				return nil, fmt.Errorf("store: sqlite: claim fallback keys: %w", err)
			}
		}
		out[r] = got
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("store: sqlite: claim: commit: %w", err)
	}
	return out, nil
}

// findCursorIDs looks up, inside tx, the cursor IDs of the wants whose ids[i] is 0, fills them
// in and caches them. A want without a cursor keeps 0.
func (s *sqliteStore) findCursorIDs(ctx context.Context, tx *sql.Tx, wants []Want, ids []int64) error {
	largest := sqliteClaimChunks[len(sqliteClaimChunks)-1]
	var found []int
	args := make([]any, 0, 4*largest)
	for from := 0; from < len(wants); {
		args = args[:0]
		for ; from < len(wants) && len(args) < 4*largest; from++ {
			if ids[from] == 0 {
				w := wants[from]
				args = append(args, w.User, w.Device, w.Algorithm, int64(from))
			}
		}
		if len(args) == 0 {
			break
		}
		size := sqliteChunk(len(args) / 4)
		for len(args) < 4*sqliteClaimChunks[size] {
			args = append(args, nil) // NULL matches no row
		}
		err := sqliteEachRow(ctx, tx.StmtContext(ctx, s.findCursors[size]), func(rows *sql.Rows) error {
			var id, i int64
			if err := rows.Scan(&id, &i); err != nil {
				return err
			}
			if i < 0 || i >= int64(len(wants)) || ids[i] != 0 || id <= 0 {
				return fmt.Errorf("unexpected cursor %d for want %d", id, i)
			}
			ids[i] = id
			found = append(found, int(i))
			return nil
		}, args...)
		if err != nil {
			return err
		}
	}
	if len(found) > 0 {
		s.cursorIDs.add(wants, ids, found)
	}
	return nil
}

// claimByCursor claims the one-time keys of the wants that have a cursor (ids[i] != 0), in
// chunks of sqliteClaimChunks, and stores each key in got at the position of its want. It
// returns the number of keys.
func (s *sqliteStore) claimByCursor(ctx context.Context, tx *sql.Tx, wants []Want, ids []int64, got []Claimed) (int, error) {
	largest := sqliteClaimChunks[len(sqliteClaimChunks)-1]
	args := make([]any, 0, min(len(wants), largest))
	at := make(map[int64]int, min(len(wants), largest)) // cursor ID -> position in wants
	total := 0
	for from := 0; from < len(wants); {
		args = args[:0]
		clear(at)
		for ; from < len(wants) && len(args) < largest; from++ {
			if ids[from] != 0 {
				args = append(args, ids[from])
				at[ids[from]] = from
			}
		}
		if len(args) == 0 {
			break
		}
		size := sqliteChunk(len(args))
		for len(args) < sqliteClaimChunks[size] {
			args = append(args, nil) // NULL matches no row
		}
		n, err := scanClaimedByCursor(ctx, tx.StmtContext(ctx, s.claimOneTimeKeys[size]), args, at, wants, got)
		if err != nil {
			return 0, err
		}
		total += n
	}
	return total, nil
}

// scanClaimedByCursor runs the claim statement of one-time keys and stores each returned key in
// got at the position of its want (at: cursor ID -> position). The key values of one statement
// share one allocation. It returns the number of keys.
func scanClaimedByCursor(ctx context.Context, stmt *sql.Stmt, args []any, at map[int64]int, wants []Want, got []Claimed) (int, error) {
	rows, err := stmt.QueryContext(ctx, args...)
	if err != nil {
		return 0, err
	}
	defer func() { _ = rows.Close() }()
	n := 0
	var arena []byte
	for rows.Next() {
		var id int64
		var keyID string
		var key sql.RawBytes
		if err := rows.Scan(&id, &keyID, &key); err != nil {
			return 0, err
		}
		i, ok := at[id]
		if !ok || got[i].KeyID != "" || keyID == "" || len(key) == 0 {
			return 0, fmt.Errorf("unexpected key %q for cursor %d", keyID, id)
		}
		if cap(arena)-len(arena) < len(key) {
			arena = make([]byte, 0, max(len(key), 256*len(at)))
		}
		start := len(arena)
		arena = append(arena, key...)
		w := wants[i]
		got[i] = Claimed{User: w.User, Device: w.Device, KeyID: keyID, Key: arena[start:len(arena):len(arena)]}
		n++
	}
	return n, rows.Err()
}

// claimEach runs one of the claim statements that take (user, device, algorithm) rows (stmts, by
// chunk size: the fallback keys) for every want that has no key in got yet, in chunks, and stores
// each key returned in got at the position of its want. It returns the number of keys.
func (s *sqliteStore) claimEach(ctx context.Context, tx *sql.Tx, stmts *[len(sqliteClaimChunks)]*sql.Stmt,
	wants []Want, index map[Want]int, got []Claimed, fallback bool) (int, error) {
	largest := sqliteClaimChunks[len(sqliteClaimChunks)-1]
	args := make([]any, 0, 3*min(len(wants), largest))
	total := 0
	for from := 0; from < len(wants); {
		args = args[:0]
		for ; from < len(wants) && len(args) < 3*largest; from++ {
			if got[from].KeyID == "" {
				w := wants[from]
				args = append(args, w.User, w.Device, w.Algorithm)
			}
		}
		if len(args) == 0 {
			break
		}
		size := sqliteChunk(len(args) / 3)
		for len(args) < 3*sqliteClaimChunks[size] {
			args = append(args, nil) // NULL matches no row
		}
		n, err := scanClaimed(ctx, tx.StmtContext(ctx, stmts[size]), args, index, got, fallback)
		if err != nil {
			return 0, err
		}
		total += n
	}
	return total, nil
}

// scanClaimed runs a claim statement and stores each returned key in got at the position of its
// want. It returns the number of keys.
func scanClaimed(ctx context.Context, stmt *sql.Stmt, args []any, index map[Want]int, got []Claimed, fallback bool) (int, error) {
	rows, err := stmt.QueryContext(ctx, args...)
	if err != nil {
		return 0, err
	}
	defer func() { _ = rows.Close() }()
	n := 0
	for rows.Next() {
		var w Want
		var keyID string
		var key []byte
		if err := rows.Scan(&w.User, &w.Device, &w.Algorithm, &keyID, &key); err != nil {
			return 0, err
		}
		i, ok := index[w]
		if !ok || got[i].KeyID != "" || keyID == "" || len(key) == 0 {
			return 0, fmt.Errorf("unexpected key %q for %v", keyID, w)
		}
		got[i] = Claimed{User: w.User, Device: w.Device, KeyID: keyID, Key: key, Fallback: fallback}
		n++
	}
	return n, rows.Err()
}
