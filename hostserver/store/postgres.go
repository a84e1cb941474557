package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// postgresMigrations is the PostgreSQL schema, one entry per version. A released entry is never
// edited: a change is a new entry.
//
// Every text column that is compared or ordered uses COLLATE "C" (byte order): the tie-break by
// key ID must be the same on every server and every locale, and the index then serves the
// ORDER BY of the claim.
var postgresMigrations = []migration{
	{version: 1, statements: []string{
		// A device is created by its first upload; its row is also the lock that serialises
		// uploads and claims of the device (see Claim). device_keys holds the device keys byte
		// for byte (bytea, never re-encoded as jsonb would) and stays NULL until uploaded.
		`CREATE TABLE devices (
			user_id     text COLLATE "C" NOT NULL,
			device_id   text COLLATE "C" NOT NULL,
			device_keys bytea,
			PRIMARY KEY (user_id, device_id)
		)`,
		// Upload batch numbers: strictly increasing across the whole database, whatever the
		// number of server processes (never max()+1).
		`CREATE SEQUENCE upload_batch_seq AS bigint`,
		`CREATE TABLE one_time_keys (
			user_id   text COLLATE "C" NOT NULL,
			device_id text COLLATE "C" NOT NULL,
			key_id    text COLLATE "C" NOT NULL,
			algorithm text COLLATE "C" NOT NULL,
			batch     bigint NOT NULL,
			key_json  bytea NOT NULL,
			PRIMARY KEY (user_id, device_id, key_id),
			FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
		)`,
		// The claim order: oldest batch first, then key ID.
		`CREATE INDEX one_time_keys_claim_order
			ON one_time_keys (user_id, device_id, algorithm, batch, key_id)`,
		`CREATE TABLE fallback_keys (
			user_id   text COLLATE "C" NOT NULL,
			device_id text COLLATE "C" NOT NULL,
			algorithm text COLLATE "C" NOT NULL,
			key_id    text COLLATE "C" NOT NULL,
			key_json  bytea NOT NULL,
			used      boolean NOT NULL DEFAULT false,
			PRIMARY KEY (user_id, device_id, algorithm),
			FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
		)`,
		// One-time key IDs already handed out, so that a re-upload is not stored again.
		`CREATE TABLE claimed_keys (
			user_id   text COLLATE "C" NOT NULL,
			device_id text COLLATE "C" NOT NULL,
			key_id    text COLLATE "C" NOT NULL,
			PRIMARY KEY (user_id, device_id, key_id),
			FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
		)`,
	}},
	{version: 2, statements: []string{
		// Claim cursors, as in the SQLite schema (version 2 there explains them): a claim moves the
		// cursor of the (device, algorithm) to the key it hands out, instead of deleting the key
		// and inserting its ID into claimed_keys. The claimed keys of a (device, algorithm) are a
		// prefix of its keys in claim order, because uploads and claims of a device take turns on
		// its row lock and an upload draws its batch number after taking it. Here the cursor
		// update is a HOT update of one small row (no index changes), where the DELETE left a dead
		// tuple in the claim-order index that the next claims of the device had to step over
		// until VACUUM, and the INSERT added a heap tuple and an index entry. The claimed rows
		// leave one_time_keys at the device's next upload of one-time keys (their IDs go to
		// claimed_keys). Version 1 deleted claimed keys at once: every key it left is unclaimed.
		`CREATE TABLE claim_cursors (
			user_id       text COLLATE "C" NOT NULL,
			device_id     text COLLATE "C" NOT NULL,
			algorithm     text COLLATE "C" NOT NULL,
			last_batch    bigint NOT NULL,                -- the last key handed out, -1 and '' if none
			last_key_id   text COLLATE "C" NOT NULL,
			last_key_json bytea NOT NULL,                 -- its value ('' if none)
			PRIMARY KEY (user_id, device_id, algorithm),
			FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
		)`,
		`INSERT INTO claim_cursors (user_id, device_id, algorithm, last_batch, last_key_id, last_key_json)
		SELECT DISTINCT user_id, device_id, algorithm, -1, '', ''::bytea FROM one_time_keys`,
	}},
}

// postgresMigrationLock is the pg_advisory_lock key held while migrating, so that server
// processes starting at once against one database migrate one after the other. It is
// 0x6b6579636c61696d, "keyclaim" in ASCII.
const postgresMigrationLock int64 = 0x6b6579636c61696d

// postgresMaxAttempts bounds the attempts of one transaction that fails with a serialization
// failure, a deadlock or a lost race (none is expected with the locking below; see Claim).
const postgresMaxAttempts = 5

// errLostRace is a retryable internal error: a one-time key chosen for a claim was claimed by
// another transaction (which moved the device's cursor first) before this one could claim it.
var errLostRace = errors.New("a chosen one-time key was claimed concurrently")

// Statements of the PostgreSQL backend. Arrays are passed whole ($n::text[]) so that a request
// costs the same few round trips whatever the number of devices.
const (
	// Upsert the device (creating it on its first upload). ON CONFLICT DO UPDATE takes the row
	// lock of the device even when nothing changes: from here on, claims of this device wait.
	pgUpsertDevice = `
		INSERT INTO devices (user_id, device_id, device_keys) VALUES ($1, $2, $3)
		ON CONFLICT (user_id, device_id)
		DO UPDATE SET device_keys = coalesce(EXCLUDED.device_keys, devices.device_keys)`

	// The device's one-time keys among the key IDs of an upload ($3), each with whether it is
	// claimed: at or before its cursor, or in claimed_keys. On the way, the device's claimed keys
	// leave one_time_keys and their IDs go to claimed_keys (pruned, remembered: the main query
	// still sees the rows as they were when the statement started, and reports them claimed).
	// Runs in an upload, under the device's row lock.
	pgKnownOneTimeKeys = `
		WITH cursor AS (
			SELECT algorithm, last_batch, last_key_id FROM claim_cursors
			WHERE user_id = $1 AND device_id = $2
		),
		pruned AS (
			DELETE FROM one_time_keys AS k
			USING cursor AS c
			WHERE k.user_id = $1 AND k.device_id = $2 AND k.algorithm = c.algorithm
			  AND (k.batch, k.key_id) <= (c.last_batch, c.last_key_id)
			RETURNING k.key_id
		),
		remembered AS (
			INSERT INTO claimed_keys (user_id, device_id, key_id)
			SELECT $1, $2, key_id FROM pruned
			ON CONFLICT DO NOTHING
		)
		SELECT k.key_id, k.key_json,
			coalesce((k.batch, k.key_id) <= (c.last_batch, c.last_key_id), false) AS claimed
		FROM one_time_keys AS k
		LEFT JOIN cursor AS c ON c.algorithm = k.algorithm
		WHERE k.user_id = $1 AND k.device_id = $2 AND k.key_id = ANY ($3::text[])
		UNION ALL
		SELECT key_id, NULL, true FROM claimed_keys
		WHERE user_id = $1 AND device_id = $2 AND key_id = ANY ($3::text[])`

	// One batch number for the whole upload (the CTE is evaluated once); every algorithm of the
	// new keys gets its cursor (before every key) if it has none.
	pgInsertOneTimeKeys = `
		WITH batch AS (SELECT nextval('upload_batch_seq') AS batch),
		inserted AS (
			INSERT INTO one_time_keys (user_id, device_id, key_id, algorithm, batch, key_json)
			SELECT $1, $2, k.key_id, k.algorithm, batch.batch, k.key_json
			FROM unnest($3::text[], $4::text[], $5::bytea[]) AS k (key_id, algorithm, key_json)
			CROSS JOIN batch
			RETURNING algorithm
		)
		INSERT INTO claim_cursors (user_id, device_id, algorithm, last_batch, last_key_id, last_key_json)
		SELECT DISTINCT $1, $2, algorithm, -1, '', ''::bytea FROM inserted
		ON CONFLICT DO NOTHING`

	// A new fallback key replaces the old one of its algorithm and is unused; an identical
	// re-upload (same key ID, same bytes) changes nothing and so keeps "used".
	pgUpsertFallbackKeys = `
		INSERT INTO fallback_keys (user_id, device_id, algorithm, key_id, key_json, used)
		SELECT $1, $2, f.algorithm, f.key_id, f.key_json, false
		FROM unnest($3::text[], $4::text[], $5::bytea[]) AS f (algorithm, key_id, key_json)
		ON CONFLICT (user_id, device_id, algorithm) DO UPDATE
			SET key_id = EXCLUDED.key_id, key_json = EXCLUDED.key_json, used = false
			WHERE fallback_keys.key_id <> EXCLUDED.key_id
			   OR fallback_keys.key_json <> EXCLUDED.key_json`

	// The one-time keys after the cursor (unclaimed) per algorithm.
	pgCounts = `
		SELECT k.algorithm, count(*) FROM one_time_keys AS k
		LEFT JOIN claim_cursors AS c USING (user_id, device_id, algorithm)
		WHERE k.user_id = $1 AND k.device_id = $2
		  AND (c.user_id IS NULL OR (k.batch, k.key_id) > (c.last_batch, c.last_key_id))
		GROUP BY k.algorithm`

	pgQueryDevices = `
		SELECT user_id, device_id, device_keys FROM devices
		WHERE user_id = ANY ($1::text[]) AND device_keys IS NOT NULL
		UNION ALL
		SELECT d.user_id, d.device_id, d.device_keys
		FROM devices AS d
		JOIN (SELECT DISTINCT * FROM unnest($2::text[], $3::text[]) AS w (user_id, device_id)) AS w
			USING (user_id, device_id)
		WHERE d.device_keys IS NOT NULL`

	// Lock the wanted devices that exist, in one global order (user, device) so that two claims
	// never deadlock on each other: the ORDER BY runs below the locking, so rows are locked in
	// this order. NO KEY UPDATE is the mode of the upload's upsert; it does not block the key
	// share locks that foreign key checks take.
	pgLockDevices = `
		SELECT d.user_id, d.device_id
		FROM devices AS d
		JOIN unnest($1::text[], $2::text[]) AS w (user_id, device_id) USING (user_id, device_id)
		ORDER BY d.user_id, d.device_id
		FOR NO KEY UPDATE OF d`

	// The whole claim of the locked devices in one statement:
	//   chosen:   per want (in request order, ord), its cursor and the first one-time key after
	//             it in claim order (batch, then key ID): one index probe each, a range that
	//             starts right after the cursor; key_id is NULL when the device has none left;
	//   moved:    the cursors moved to those keys. The UPDATE is what hands a key out: a key is
	//             only ever returned by the transaction whose UPDATE moved the cursor from the
	//             position chosen read (a compare-and-set on last_batch, last_key_id);
	//   fallback: for the wants without a one-time key, the fallback key, marked used;
	//   the result: per want, the key it got, or "lost" for a cursor that another transaction
	//             moved first (not expected while the device rows are locked; the transaction
	//             is then retried, so that a claimer never settles for the fallback key or
	//             nothing while one-time keys remain).
	pgClaim = `
		WITH want AS (
			SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
				WITH ORDINALITY AS w (user_id, device_id, algorithm, ord)
		),
		chosen AS MATERIALIZED (
			SELECT w.ord, w.user_id, w.device_id, w.algorithm,
				c.last_batch AS old_batch, c.last_key_id AS old_key_id, k.batch, k.key_id, k.key_json
			FROM want AS w
			LEFT JOIN claim_cursors AS c USING (user_id, device_id, algorithm)
			LEFT JOIN LATERAL (
				SELECT k.batch, k.key_id, k.key_json
				FROM one_time_keys AS k
				WHERE k.user_id = c.user_id AND k.device_id = c.device_id AND k.algorithm = c.algorithm
				  AND (k.batch, k.key_id) > (c.last_batch, c.last_key_id)
				ORDER BY k.batch, k.key_id
				LIMIT 1
			) AS k ON true
		),
		moved AS (
			UPDATE claim_cursors AS c
			SET last_batch = ch.batch, last_key_id = ch.key_id, last_key_json = ch.key_json
			FROM chosen AS ch
			WHERE ch.key_id IS NOT NULL
			  AND c.user_id = ch.user_id AND c.device_id = ch.device_id AND c.algorithm = ch.algorithm
			  AND c.last_batch = ch.old_batch AND c.last_key_id = ch.old_key_id
			RETURNING ch.ord
		),
		fallback AS (
			UPDATE fallback_keys AS f SET used = true
			FROM chosen AS ch
			WHERE ch.key_id IS NULL
			  AND f.user_id = ch.user_id AND f.device_id = ch.device_id AND f.algorithm = ch.algorithm
			RETURNING ch.ord, f.key_id, f.key_json
		)
		SELECT ch.ord, ch.key_id, ch.key_json,
			CASE WHEN m.ord IS NULL THEN 'lost' ELSE 'one_time' END AS kind
		FROM chosen AS ch
		LEFT JOIN moved AS m ON m.ord = ch.ord
		WHERE ch.key_id IS NOT NULL
		UNION ALL
		SELECT ord, key_id, key_json, 'fallback' FROM fallback
		ORDER BY 1`
)

// postgresStore is the PostgreSQL backend. Several server processes may share one database.
type postgresStore struct {
	pool *pgxpool.Pool
	// group runs concurrent claims in one transaction (see groupCommit).
	group groupCommit
}

// openPostgres connects to PostgreSQL and migrates the schema.
func openPostgres(ctx context.Context, dsn string) (Store, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("store: postgres: parse DSN %q: %w", redactDSN(dsn), err)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("store: postgres: connect: %w", err)
	}
	s := &postgresStore{pool: pool}
	s.group = groupCommit{claim: s.claimRounds, maxWants: groupMaxWants, maxInFlight: postgresGroupsInFlight}
	if err := s.migrate(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("store: postgres: migrate: %w", err)
	}
	return s, nil
}

// migrate brings the schema to the newest version. It holds a session advisory lock for the
// whole run, so that processes starting at once against one database take turns: the second
// finds the work done. Each version is applied in its own transaction with its record.
func (s *postgresStore) migrate(ctx context.Context) (err error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()

	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, postgresMigrationLock); err != nil {
		return fmt.Errorf("take migration lock: %w", err)
	}
	defer func() {
		if _, unlockErr := conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, postgresMigrationLock); unlockErr != nil {
			// Ending the session releases the lock for sure; the pool drops the closed connection.
			_ = conn.Conn().Close(context.WithoutCancel(ctx))
			err = errors.Join(err, fmt.Errorf("release migration lock: %w", unlockErr))
		}
	}()

	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    integer PRIMARY KEY,
		applied_at timestamptz NOT NULL DEFAULT now()
	)`); err != nil {
		return err
	}
	var current int
	if err := conn.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM schema_migrations`).Scan(&current); err != nil {
		return err
	}
	if newest := postgresMigrations[len(postgresMigrations)-1].version; current > newest {
		return fmt.Errorf("database schema version %d is newer than this program knows (%d)", current, newest)
	}
	for _, m := range postgresMigrations {
		if m.version <= current {
			continue
		}
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			for _, stmt := range m.statements {
				if _, err := tx.Exec(ctx, stmt); err != nil {
					return err
				}
			}
			_, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version) VALUES ($1)`, m.version)
			return err
		})
		if err != nil {
			return fmt.Errorf("version %d: %w", m.version, err)
		}
	}
	return nil
}

// Close closes the connection pool.
func (s *postgresStore) Close() error {
	s.pool.Close()
	return nil
}

// inTx runs fn in a READ COMMITTED transaction: every statement sees what was committed before
// it started, which is what the locking of Upload and Claim relies on. A serialization failure, a
// deadlock or a lost race rolls back and runs fn again, at most postgresMaxAttempts times in
// all, each retry logged. A lost connection (the database restarting, a failover, a broken
// socket) is retried too, within the time budget of retryUnavailable. fn must not keep state
// between attempts.
func (s *postgresStore) inTx(ctx context.Context, op string, fn func(pgx.Tx) error) error {
	return s.retryUnavailable(ctx, op, func() error {
		backoff := 5 * time.Millisecond
		for attempt := 1; ; attempt++ {
			err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.ReadCommitted}, fn)
			if err == nil || !retryable(err) {
				return err
			}
			if attempt == postgresMaxAttempts {
				slog.ErrorContext(ctx, "store: postgres: transaction failed, giving up",
					"op", op, "attempts", attempt, "err", err)
				return fmt.Errorf("after %d attempts: %w", attempt, err)
			}
			slog.WarnContext(ctx, "store: postgres: retrying transaction",
				"op", op, "attempt", attempt, "err", err)
			select {
			case <-ctx.Done():
				return fmt.Errorf("%w (retrying after: %w)", ctx.Err(), err)
			case <-time.After(backoff):
			}
			backoff *= 2
		}
	})
}

// postgresRetryBudget bounds how long an operation retries while the database is unreachable,
// when its context has no deadline of its own (an earlier deadline wins). It is the default
// request timeout of a claim (BRIEF section 2): a restart of PostgreSQL (a few seconds) is
// ridden through; an outage longer than that is answered ErrUnavailable (HTTP 503).
const postgresRetryBudget = 10 * time.Second

// retryUnavailable runs op and, while it fails because the database cannot be reached, runs it
// again (backing off from 20 ms to 500 ms) until it succeeds, fails otherwise, or the time
// budget ends: the context's deadline, or postgresRetryBudget after the first failure. It then
// returns the last error wrapped in ErrUnavailable.
//
// Why running again is safe: a transaction that never started, or whose connection broke before
// COMMIT, was rolled back by PostgreSQL (a session that ends aborts its transaction), so running
// it again is running it for the first time. The one uncertain case is a connection that breaks
// after COMMIT was sent and before its answer came: the transaction may have committed. Running a
// claim again then claims the next keys, and the keys of the first run are spent without being
// answered, as when a client goes away after the commit: never handed out twice. Running an
// upload again stores nothing twice (an identical re-upload is a no-op).
func (s *postgresStore) retryUnavailable(ctx context.Context, op string, run func() error) error {
	var giveUp time.Time
	backoff := 20 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := run()
		if err == nil || !unreachable(ctx, err) {
			return err
		}
		now := time.Now()
		if giveUp.IsZero() {
			giveUp = now.Add(postgresRetryBudget)
			if d, ok := ctx.Deadline(); ok && d.Before(giveUp) {
				giveUp = d
			}
		}
		if now.Add(backoff).After(giveUp) {
			slog.ErrorContext(ctx, "store: postgres: database unreachable, giving up",
				"op", op, "attempts", attempt, "err", err)
			return fmt.Errorf("%w: %s after %d attempts: %w", ErrUnavailable, op, attempt, err)
		}
		level := slog.LevelDebug // one warning per operation is enough
		if attempt == 1 {
			level = slog.LevelWarn
		}
		slog.Log(ctx, level, "store: postgres: database unreachable, retrying",
			"op", op, "attempt", attempt, "err", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %s: %w (retrying after: %w)", ErrUnavailable, op, ctx.Err(), err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 500*time.Millisecond)
	}
}

// unreachable reports whether err means that the database could not be reached or dropped the
// connection, as opposed to an answer of the database to the statements (which running them
// again would not change) or the end of ctx.
func unreachable(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case strings.HasPrefix(pgErr.Code, "08"), // connection_exception and its subclasses
			pgErr.Code == "57P01", // admin_shutdown: the server is shutting down (restart)
			pgErr.Code == "57P02", // crash_shutdown
			pgErr.Code == "57P03", // cannot_connect_now: starting up, or shutting down
			pgErr.Code == "53300": // too_many_connections
			return true
		}
		return false
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var connectErr *pgconn.ConnectError
	var netErr net.Error
	return pgconn.SafeToRetry(err) || errors.As(err, &connectErr) || errors.As(err, &netErr) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EPIPE) || errors.Is(err, net.ErrClosed) ||
		strings.Contains(err.Error(), "conn closed")
}

// retryable reports whether a failed transaction may succeed when run again.
func retryable(err error) bool {
	if errors.Is(err, errLostRace) {
		return true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "40001", // serialization_failure
			"40P01": // deadlock_detected
			return true
		}
	}
	return false
}

// Upload implements Store.
//
// The device row is upserted first, which locks it until commit: uploads and claims of one
// device run one after the other. Every later statement of the transaction therefore sees all
// claims of the device that committed before, so a one-time key ID that was claimed while this
// upload waited is found claimed (at or before its cursor, or in claimed_keys) and not stored
// again (the double-issue race of matrix-spec#1124), and two uploads of one key ID cannot both
// insert it. The same lock keeps the claimed keys a prefix of the device's keys in claim order
// (what the cursors rely on): the batch number is drawn after the lock is taken, so a later
// upload's keys come after every key a claim could have seen.
func (s *postgresStore) Upload(ctx context.Context, user, device string, up Upload) (Counts, error) {
	p, err := prepareUpload(up)
	if err != nil {
		return nil, err
	}
	if p.empty() {
		return s.Counts(ctx, user, device)
	}

	var counts Counts
	err = s.inTx(ctx, "upload", func(tx pgx.Tx) error {
		var deviceKeys []byte // nil binds NULL: keep the stored device keys
		if p.deviceKeys != nil {
			deviceKeys = p.deviceKeys
		}
		if _, err := tx.Exec(ctx, pgUpsertDevice, user, device, deviceKeys); err != nil {
			return fmt.Errorf("device: %w", err)
		}

		if len(p.oneTimeKeys) > 0 {
			existing := make(map[string][]byte)
			claimed := make(map[string]bool)
			rows, _ := tx.Query(ctx, pgKnownOneTimeKeys, user, device, p.oneTimeKeyIDs())
			var keyID string
			var value []byte
			var isClaimed bool
			if _, err := pgx.ForEachRow(rows, []any{&keyID, &value, &isClaimed}, func() error {
				if isClaimed {
					claimed[keyID] = true
				} else {
					existing[keyID] = value
				}
				return nil
			}); err != nil {
				return fmt.Errorf("one-time keys: %w", err)
			}

			fresh, err := newOneTimeKeys(user, device, p.oneTimeKeys, existing, claimed)
			if err != nil {
				return err
			}
			if len(fresh) > 0 {
				keyIDs, algs, values := columns(fresh)
				if _, err := tx.Exec(ctx, pgInsertOneTimeKeys, user, device, keyIDs, algs, values); err != nil {
					return fmt.Errorf("one-time keys: %w", err)
				}
			}
		}

		if len(p.fallbackKeys) > 0 {
			keyIDs, algs, values := columns(p.fallbackKeys)
			if _, err := tx.Exec(ctx, pgUpsertFallbackKeys, user, device, algs, keyIDs, values); err != nil {
				return fmt.Errorf("fallback keys: %w", err)
			}
		}

		var err error
		counts, err = pgCountKeys(ctx, tx, user, device)
		return err
	})
	switch {
	case err == nil:
		return counts, nil
	case errors.Is(err, ErrKeyConflict):
		return nil, err
	default:
		return nil, fmt.Errorf("store: postgres: upload: %w", err)
	}
}

// columns splits keys into the arrays that unnest takes.
func columns(keys []keyEntry) (keyIDs, algs []string, values [][]byte) {
	keyIDs = make([]string, len(keys))
	algs = make([]string, len(keys))
	values = make([][]byte, len(keys))
	for i, k := range keys {
		keyIDs[i], algs[i], values[i] = k.keyID, k.algorithm, k.value
	}
	return keyIDs, algs, values
}

// pgCountKeys returns the device's unclaimed one-time keys per algorithm.
func pgCountKeys(ctx context.Context, q interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}, user, device string) (Counts, error) {
	counts := newCounts()
	rows, _ := q.Query(ctx, pgCounts, user, device)
	var alg string
	var n int
	if _, err := pgx.ForEachRow(rows, []any{&alg, &n}, func() error {
		counts[alg] = n
		return nil
	}); err != nil {
		return nil, fmt.Errorf("counts: %w", err)
	}
	return counts, nil
}

// Counts implements Store.
func (s *postgresStore) Counts(ctx context.Context, user, device string) (Counts, error) {
	var counts Counts
	err := s.retryUnavailable(ctx, "counts", func() (err error) {
		counts, err = pgCountKeys(ctx, s.pool, user, device)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("store: postgres: %w", err)
	}
	return counts, nil
}

// QueryDevices implements Store with one statement (one snapshot) for all users.
func (s *postgresStore) QueryDevices(ctx context.Context, req map[string][]string) (map[string]map[string]json.RawMessage, error) {
	out := make(map[string]map[string]json.RawMessage, len(req))
	var allUsers, pairUsers, pairDevices []string
	for user, devices := range req {
		out[user] = make(map[string]json.RawMessage)
		if len(devices) == 0 {
			allUsers = append(allUsers, user)
			continue
		}
		for _, device := range devices {
			pairUsers = append(pairUsers, user)
			pairDevices = append(pairDevices, device)
		}
	}
	if len(req) == 0 {
		return out, nil
	}

	err := s.retryUnavailable(ctx, "query devices", func() error {
		for _, devs := range out {
			clear(devs)
		}
		rows, _ := s.pool.Query(ctx, pgQueryDevices, allUsers, pairUsers, pairDevices)
		var user, device string
		var keys []byte
		_, err := pgx.ForEachRow(rows, []any{&user, &device, &keys}, func() error {
			out[user][device] = keys
			return nil
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("store: postgres: query devices: %w", err)
	}
	return out, nil
}

// Claim implements Store in one transaction of four round trips whatever the number of devices:
// begin, lock the devices, claim (one statement), commit.
//
// Why row locks on the devices and not FOR UPDATE SKIP LOCKED or SERIALIZABLE: SKIP LOCKED would
// make a claimer skip the oldest key while another transaction holds it and take a newer one, or
// report "nothing" or the fallback key although one-time keys remain, and a skipped key may yet
// come back if the holder rolls back. SERIALIZABLE is correct but turns every overlap of two
// claims into a serialization failure and a retry, exactly under the load (many claimers of the
// same popular devices) where it hurts. Instead a claim first locks the rows of the wanted devices
// in one global order (so claims never deadlock) and waits for any transaction holding one of
// them; uploads lock their device row the same way. In READ COMMITTED the next statement takes a
// fresh snapshot after the locks are held, so it sees every committed claim and upload of those
// devices and no uncommitted one can interfere: the oldest key it chooses (the first after the
// device's cursor) is the oldest unclaimed key there is, and it moves the cursor to it. The
// cursor update is the second guard, a compare-and-set: it applies only where the cursor is still
// where this statement read it (an UPDATE that waited for another transaction re-checks its
// WHERE clause on the row that transaction committed), and a key is returned only by the
// transaction whose update moved the cursor to it. So even without the locks no key could be
// handed out twice; a cursor moved by someone else is detected ("lost") and the transaction
// retried (TestPostgresClaimRetriesALostRace).
// A device that does not exist when the locks are taken is not claimed from: that claim is
// ordered before the device's first upload.
func (s *postgresStore) Claim(ctx context.Context, wants []Want) ([]Claimed, error) {
	return s.group.Claim(ctx, wants)
}

// claimRounds claims the wants of every round (distinct wants within a round; see groupCommit)
// in one transaction: lock the devices of all rounds (the first round names every device), then
// one claim statement per round, each with a fresh snapshot that sees the rounds before it.
func (s *postgresStore) claimRounds(ctx context.Context, rounds [][]Want) ([][]Claimed, error) {
	var devUsers, devIDs []string
	seen := make(map[[2]string]bool, len(rounds[0]))
	for _, w := range rounds[0] {
		if d := [2]string{w.User, w.Device}; !seen[d] {
			seen[d] = true
			devUsers = append(devUsers, w.User)
			devIDs = append(devIDs, w.Device)
		}
	}

	out := make([][]Claimed, len(rounds))
	err := s.inTx(ctx, "claim", func(tx pgx.Tx) error {
		locked := make(map[[2]string]bool, len(devUsers))
		rows, _ := tx.Query(ctx, pgLockDevices, devUsers, devIDs)
		var user, device string
		if _, err := pgx.ForEachRow(rows, []any{&user, &device}, func() error {
			locked[[2]string{user, device}] = true
			return nil
		}); err != nil {
			return fmt.Errorf("lock devices: %w", err)
		}
		for r, wants := range rounds {
			got := make([]Claimed, len(wants))
			out[r] = got
			if err := pgClaimRound(ctx, tx, wants, locked, got); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: postgres: claim: %w", err)
	}
	return out, nil
}

// pgClaimRound claims one key for each of wants (distinct) whose device is locked, with one
// statement, and stores each key in got at the position of its want.
func pgClaimRound(ctx context.Context, tx pgx.Tx, wants []Want, locked map[[2]string]bool, got []Claimed) error {
	var wUsers, wDevices, wAlgs []string
	var wIndex []int // position in wants of each want passed on (ord - 1)
	for i, w := range wants {
		if locked[[2]string{w.User, w.Device}] {
			wUsers = append(wUsers, w.User)
			wDevices = append(wDevices, w.Device)
			wAlgs = append(wAlgs, w.Algorithm)
			wIndex = append(wIndex, i)
		}
	}
	if len(wIndex) == 0 {
		return nil
	}
	rows, _ := tx.Query(ctx, pgClaim, wUsers, wDevices, wAlgs)
	var ord int64
	var keyID, kind string
	var key []byte
	lost := 0
	if _, err := pgx.ForEachRow(rows, []any{&ord, &keyID, &key, &kind}, func() error {
		if kind == "lost" {
			lost++
			return nil
		}
		if ord < 1 || int(ord) > len(wIndex) || got[wIndex[ord-1]].KeyID != "" {
			return fmt.Errorf("claim returned ordinal %d of %d", ord, len(wIndex))
		}
		i := wIndex[ord-1]
		w := wants[i]
		got[i] = Claimed{User: w.User, Device: w.Device, KeyID: keyID, Key: key, Fallback: kind == "fallback"}
		return nil
	}); err != nil {
		return fmt.Errorf("claim: %w", err)
	}
	if lost > 0 {
		return fmt.Errorf("%d of %d: %w", lost, len(wIndex), errLostRace)
	}
	return nil
}
