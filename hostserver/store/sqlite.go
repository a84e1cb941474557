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

// The claim statements run once per (user, device, algorithm) inside one transaction: SQLite is
// in-process, so a loop of prepared statements costs no round trips.
const (
	// The oldest one-time key (by batch, then key ID), removed and returned in one statement.
	sqliteClaimOneTimeKey = `
		DELETE FROM one_time_keys
		WHERE user_id = ?1 AND device_id = ?2 AND algorithm = ?3
		  AND (batch, key_id) = (
			SELECT batch, key_id FROM one_time_keys
			WHERE user_id = ?1 AND device_id = ?2 AND algorithm = ?3
			ORDER BY batch, key_id
			LIMIT 1)
		RETURNING key_id, key_json`
	sqliteRememberClaimed = `
		INSERT INTO claimed_keys (user_id, device_id, key_id) VALUES (?, ?, ?)
		ON CONFLICT DO NOTHING`
	// The fallback key, returned even if used, and marked used.
	sqliteClaimFallbackKey = `
		UPDATE fallback_keys SET used = 1
		WHERE user_id = ? AND device_id = ? AND algorithm = ?
		RETURNING key_id, key_json`
	sqliteCounts = `
		SELECT algorithm, count(*) FROM one_time_keys
		WHERE user_id = ? AND device_id = ?
		GROUP BY algorithm`
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

	claimOneTimeKey  *sql.Stmt
	rememberClaimed  *sql.Stmt
	claimFallbackKey *sql.Stmt
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

	s := &sqliteStore{}
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

	for _, st := range []struct {
		dst   **sql.Stmt
		query string
	}{
		{&s.claimOneTimeKey, sqliteClaimOneTimeKey},
		{&s.rememberClaimed, sqliteRememberClaimed},
		{&s.claimFallbackKey, sqliteClaimFallbackKey},
	} {
		if *st.dst, err = s.writer.PrepareContext(ctx, st.query); err != nil {
			return nil, fmt.Errorf("store: sqlite: prepare: %w", err)
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
		for _, st := range []*sql.Stmt{s.claimOneTimeKey, s.rememberClaimed, s.claimFallbackKey} {
			if st != nil {
				errs = append(errs, st.Close())
			}
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

	tx, err := s.writer.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("store: sqlite: upload: %w", err)
	}
	defer func() { _ = tx.Rollback() }()

	if err := s.upload(ctx, tx, user, device, p); err != nil {
		if errors.Is(err, ErrKeyConflict) {
			return nil, err
		}
		return nil, fmt.Errorf("store: sqlite: upload: %w", err)
	}
	counts, err := countKeys(ctx, tx, user, device)
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
	if _, err := tx.ExecContext(ctx, `
		INSERT INTO devices (user_id, device_id, device_keys) VALUES (?, ?, ?)
		ON CONFLICT (user_id, device_id)
		DO UPDATE SET device_keys = coalesce(excluded.device_keys, devices.device_keys)`,
		user, device, deviceKeys); err != nil {
		return fmt.Errorf("device: %w", err)
	}

	if len(p.oneTimeKeys) > 0 {
		existing, claimed, err := sqliteKnownKeys(ctx, tx, user, device, p.oneTimeKeyIDs())
		if err != nil {
			return err
		}
		fresh, err := newOneTimeKeys(user, device, p.oneTimeKeys, existing, claimed)
		if err != nil {
			return err
		}
		if len(fresh) > 0 {
			// This upload is one batch: a number no earlier upload had.
			var batch int64
			if err := tx.QueryRowContext(ctx, `INSERT INTO upload_batches DEFAULT VALUES RETURNING batch`).Scan(&batch); err != nil {
				return fmt.Errorf("batch: %w", err)
			}
			if _, err := tx.ExecContext(ctx, `DELETE FROM upload_batches WHERE batch = ?`, batch); err != nil {
				return fmt.Errorf("batch: %w", err)
			}
			insert, err := tx.PrepareContext(ctx, `
				INSERT INTO one_time_keys (user_id, device_id, algorithm, batch, key_id, key_json)
				VALUES (?, ?, ?, ?, ?, ?)`)
			if err != nil {
				return fmt.Errorf("one-time keys: %w", err)
			}
			defer func() { _ = insert.Close() }()
			for _, k := range fresh {
				if _, err := insert.ExecContext(ctx, user, device, k.algorithm, batch, k.keyID, k.value); err != nil {
					return fmt.Errorf("one-time key %q: %w", k.keyID, err)
				}
			}
		}
	}

	for _, k := range p.fallbackKeys {
		// A new fallback key replaces the old one of its algorithm and is unused; an identical
		// re-upload (same key ID, same bytes) changes nothing and so keeps "used".
		if _, err := tx.ExecContext(ctx, `
			INSERT INTO fallback_keys (user_id, device_id, algorithm, key_id, key_json, used)
			VALUES (?, ?, ?, ?, ?, 0)
			ON CONFLICT (user_id, device_id, algorithm) DO UPDATE
				SET key_id = excluded.key_id, key_json = excluded.key_json, used = 0
				WHERE fallback_keys.key_id IS NOT excluded.key_id
				   OR fallback_keys.key_json IS NOT excluded.key_json`,
			user, device, k.algorithm, k.keyID, k.value); err != nil {
			return fmt.Errorf("fallback key %q: %w", k.keyID, err)
		}
	}
	return nil
}

// sqliteKnownKeys returns, among the given one-time key IDs of a device, those stored unclaimed
// (key ID -> value) and those already claimed.
func sqliteKnownKeys(ctx context.Context, tx *sql.Tx, user, device string, keyIDs []string) (existing map[string][]byte, claimed map[string]bool, err error) {
	ids, err := json.Marshal(keyIDs)
	if err != nil {
		return nil, nil, err
	}
	existing = make(map[string][]byte)
	claimed = make(map[string]bool)
	// The device's keys are one range of the primary key; key_id is not indexed on its own.
	err = sqliteEachRow(ctx, tx, func(rows *sql.Rows) error {
		var keyID string
		var value []byte
		if err := rows.Scan(&keyID, &value); err != nil {
			return err
		}
		existing[keyID] = value
		return nil
	}, `
		SELECT key_id, key_json FROM one_time_keys
		WHERE user_id = ? AND device_id = ?
		  AND key_id IN (SELECT value FROM json_each(?))`, user, device, ids)
	if err != nil {
		return nil, nil, fmt.Errorf("one-time keys: %w", err)
	}
	err = sqliteEachRow(ctx, tx, func(rows *sql.Rows) error {
		var keyID string
		if err := rows.Scan(&keyID); err != nil {
			return err
		}
		claimed[keyID] = true
		return nil
	}, `
		SELECT key_id FROM claimed_keys
		WHERE user_id = ? AND device_id = ?
		  AND key_id IN (SELECT value FROM json_each(?))`, user, device, ids)
	if err != nil {
		return nil, nil, fmt.Errorf("claimed keys: %w", err)
	}
	return existing, claimed, nil
}

// sqliteEachRow runs query and calls fn for each row.
func sqliteEachRow(ctx context.Context, q queryer, fn func(*sql.Rows) error, query string, args ...any) error {
	rows, err := q.QueryContext(ctx, query, args...)
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

// queryer is what countKeys needs: a *sql.DB or a *sql.Tx.
type queryer interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// countKeys returns the device's unclaimed one-time keys per algorithm.
func countKeys(ctx context.Context, q queryer, user, device string) (Counts, error) {
	counts := newCounts()
	err := sqliteEachRow(ctx, q, func(rows *sql.Rows) error {
		var alg string
		var n int
		if err := rows.Scan(&alg, &n); err != nil {
			return err
		}
		counts[alg] = n
		return nil
	}, sqliteCounts, user, device)
	if err != nil {
		return nil, fmt.Errorf("counts: %w", err)
	}
	return counts, nil
}

// Counts implements Store.
func (s *sqliteStore) Counts(ctx context.Context, user, device string) (Counts, error) {
	counts, err := countKeys(ctx, s.reader, user, device)
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
	return sqliteEachRow(ctx, tx, func(rows *sql.Rows) error {
		var device string
		var keys []byte
		if err := rows.Scan(&device, &keys); err != nil {
			return err
		}
		got[device] = keys
		return nil
	}, `
		SELECT device_id, device_keys FROM devices
		WHERE user_id = ? AND device_keys IS NOT NULL`, user)
}

// Claim implements Store: one IMMEDIATE transaction for the whole request, so no other writer
// (in this process or another) sees a key between its selection and its removal.
func (s *sqliteStore) Claim(ctx context.Context, wants []Want) ([]Claimed, error) {
	wants = dedupeWants(wants)
	out := make([]Claimed, 0, len(wants))
	if len(wants) == 0 {
		return out, nil
	}

	tx, err := s.writer.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("store: sqlite: claim: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	claimOneTimeKey := tx.StmtContext(ctx, s.claimOneTimeKey)
	rememberClaimed := tx.StmtContext(ctx, s.rememberClaimed)
	claimFallbackKey := tx.StmtContext(ctx, s.claimFallbackKey)

	for _, w := range wants {
		c := Claimed{User: w.User, Device: w.Device}
		var key []byte
		err := claimOneTimeKey.QueryRowContext(ctx, w.User, w.Device, w.Algorithm).Scan(&c.KeyID, &key)
		if errors.Is(err, sql.ErrNoRows) {
			c.Fallback = true
			err = claimFallbackKey.QueryRowContext(ctx, w.User, w.Device, w.Algorithm).Scan(&c.KeyID, &key)
			if errors.Is(err, sql.ErrNoRows) {
				continue // nothing to give
			}
		} else if err == nil {
			_, err = rememberClaimed.ExecContext(ctx, w.User, w.Device, c.KeyID)
		}
		if err != nil {
			return nil, fmt.Errorf("store: sqlite: claim %s of device %q of user %q: %w", w.Algorithm, w.Device, w.User, err)
		}
		c.Key = key
		out = append(out, c)
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("store: sqlite: claim: commit: %w", err)
	}
	return out, nil
}
