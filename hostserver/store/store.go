// Package store implements the persistent key store of a keyclaim deployment: the device keys,
// one-time keys and fallback keys that /keys/upload stores, /keys/query reads and /keys/claim
// (client and federation) hands out.
//
// It implements BRIEF section 3 (claim selection: the oldest one-time key by upload batch, ties
// broken by key ID in byte order, removed atomically so that no key is ever handed out twice; else
// the fallback key, returned even if used and marked used; else nothing; a claimed one-time key ID
// is never stored again) and the storage half of BRIEF section 6 (uploads in one transaction,
// device keys byte for byte, an empty field means "nothing new", one fallback key per algorithm,
// counts of unclaimed one-time keys that always include signed_curve25519).
//
// Two backends implement [Store]: SQLite (pure Go, modernc.org/sqlite) for a single server, and
// PostgreSQL (pgx) for one or several server processes sharing a database. [Open] chooses by DSN
// and runs the versioned schema migrations of the backend.
package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// Store is the key store of one keyclaim deployment.
//
// All methods are safe for concurrent use, also by several processes sharing one database.
type Store interface {
	// Upload applies one /keys/upload for an authenticated (user, device) in ONE transaction and
	// returns the device's one-time key counts after it.
	Upload(ctx context.Context, user, device string, up Upload) (Counts, error)
	// Counts returns one_time_key_counts for the device: unclaimed one-time keys per algorithm,
	// always including "signed_curve25519" (0 if none).
	Counts(ctx context.Context, user, device string) (Counts, error)
	// QueryDevices returns device keys exactly as uploaded (raw bytes). For each requested user:
	// nil/empty device list = all devices of that user; otherwise only those listed (unknown ones
	// omitted). Every requested user appears in the result (an empty map if it has no devices).
	QueryDevices(ctx context.Context, req map[string][]string) (map[string]map[string]json.RawMessage, error)
	// Claim claims one key per requested (user, device, algorithm) in ONE transaction and returns
	// what each device gave up, in the order of wants. A device with nothing to give is absent from
	// the result. A (user, device, algorithm) listed more than once is claimed once.
	Claim(ctx context.Context, wants []Want) ([]Claimed, error)
	// Close releases the database connections.
	Close() error
}

// Upload is the storage half of one /keys/upload request body.
type Upload struct {
	// DeviceKeys is the device_keys object; nil, empty or JSON null means nothing new. It is
	// stored byte for byte (clients verify signatures over it).
	DeviceKeys json.RawMessage
	// OneTimeKeys maps a key ID "alg:name" to its value (raw JSON: a string or an object).
	OneTimeKeys map[string]json.RawMessage
	// FallbackKeys maps a key ID "alg:name" to its value; at most one per algorithm.
	FallbackKeys map[string]json.RawMessage
	// Checked says that the caller has validated the upload already (hostserver.ParseUpload:
	// device_keys a JSON object, key IDs "alg:name" in UTF-8, key values canonical JSON, one
	// fallback key per algorithm), so that the store stores it without reading it again. Only
	// the order of the keys is still the store's to decide.
	Checked bool
}

// Counts is one_time_key_counts: the number of unclaimed one-time keys per algorithm.
type Counts map[string]int

// Want asks for one key of Algorithm from the device Device of User.
type Want struct{ User, Device, Algorithm string }

// Claimed is one key a device gave up in a claim.
type Claimed struct {
	User, Device, KeyID string
	// Key is the key value as stored (compacted JSON: a string or an object).
	Key json.RawMessage
	// Fallback is true when Key is the device's fallback key (no one-time key was left).
	Fallback bool
}

// SignedCurve25519 is the algorithm that Counts always report, 0 if the device has none.
const SignedCurve25519 = "signed_curve25519"

// ErrKeyConflict (use errors.Is) is returned by Upload when a different key is uploaded under an
// existing unclaimed one-time key ID; the whole upload is then rolled back. The returned error
// wraps it with a message naming the key ID. The HTTP layer answers it with 400.
var ErrKeyConflict = errors.New("store: a different key already exists under this one-time key ID")

// ErrInvalidKey (use errors.Is) is returned by Upload when a key ID is not of the form "alg:name"
// with a non-empty algorithm, a key value is not valid JSON, or two fallback keys of one algorithm
// are uploaded at once; nothing is stored then. The HTTP layer should have rejected such input
// already; it answers this error with 400.
var ErrInvalidKey = errors.New("store: invalid key")

// Open opens the store named by dsn and runs its schema migrations:
//
//   - "sqlite:PATH" opens (creating it and its parent directory if needed) the SQLite database
//     file PATH;
//   - "postgres://..." or "postgresql://..." connects to PostgreSQL with pgxpool (pool settings
//     such as pool_max_conns and runtime parameters such as search_path may be given in the URL).
func Open(ctx context.Context, dsn string) (Store, error) {
	switch {
	case strings.HasPrefix(dsn, "sqlite:"):
		return openSQLite(ctx, strings.TrimPrefix(dsn, "sqlite:"))
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"):
		return openPostgres(ctx, dsn)
	default:
		return nil, fmt.Errorf("store: unsupported DSN %q: want sqlite:PATH, postgres://... or postgresql://...", redactDSN(dsn))
	}
}

// redactDSN hides a password in a DSN that is quoted in an error message.
func redactDSN(dsn string) string {
	scheme, rest, ok := strings.Cut(dsn, "://")
	if !ok {
		return dsn
	}
	at := strings.LastIndex(rest, "@")
	if at < 0 {
		return dsn
	}
	if user, _, hasPass := strings.Cut(rest[:at], ":"); hasPass {
		return scheme + "://" + user + ":xxxxx" + rest[at:]
	}
	return dsn
}
