package store

import (
	"context"
	"encoding/json"
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

// BenchmarkClaim100 measures 100-device claims on SQLite, the shape of a claim for a room: one
// signed_curve25519 key from each of 100 devices per request. Devices are refilled outside the
// timer when they run low.
func BenchmarkClaim100(b *testing.B) {
	const devices, fill = 100, 1000
	s := openStore(b, sqliteBackend.freshDSN(b))
	ctx := context.Background()
	wants := make([]Want, devices)
	for d := range wants {
		wants[d] = Want{fmt.Sprintf("@user%03d:example.org", d), "DEVICE", SignedCurve25519}
	}
	batch := 0
	refill := func() {
		batch++
		for _, w := range wants {
			keys := make(map[string]json.RawMessage, fill)
			for k := 0; k < fill; k++ {
				id := fmt.Sprintf("signed_curve25519:%06d%04d", batch, k)
				keys[id] = json.RawMessage(`{"key":"` + id + `","signatures":{"@u:example.org":{"ed25519:DEVICE":"c2lnbmF0dXJl"}}}`)
			}
			if _, err := s.Upload(ctx, w.User, w.Device, Upload{OneTimeKeys: keys, FallbackKeys: otks(`signed_curve25519:FB="fb"`)}); err != nil {
				b.Fatal(err)
			}
		}
	}
	refill()
	left := fill
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if left == 0 {
			b.StopTimer()
			refill()
			left = fill
			b.StartTimer()
		}
		got, err := s.Claim(ctx, wants)
		if err != nil {
			b.Fatal(err)
		}
		if len(got) != devices || got[0].Fallback {
			b.Fatalf("claimed %d keys (fallback %v), want %d one-time keys", len(got), got[0].Fallback, devices)
		}
		left--
	}
	b.ReportMetric(float64(b.N*devices)/b.Elapsed().Seconds(), "device-claims/s")
}
