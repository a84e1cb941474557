package store

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// claimBenchDevices is the number of devices of one claim request in every claim benchmark: the
// claim of a client that opens sessions with the members of a room.
const claimBenchDevices = 100

// claimBenchConfig shapes one claim benchmark.
type claimBenchConfig struct {
	// pool is the number of devices that requests draw from. With pool == claimBenchDevices every
	// request claims from the same 100 devices, whose users sort next to each other (the rows a
	// claim writes then share a few pages). A large pool spreads the 100 devices of a request
	// over the whole key space, as the members of a room are among all users of a server.
	pool int
	// shared devices are in every request, whichever goroutine makes it: the same popular
	// devices claimed concurrently. They are part of the 100.
	shared int
	// clients is the number of goroutines claiming concurrently (1: sequential).
	clients int
}

// benchClaim runs b.N claim requests of claimBenchDevices devices each against s, which must be
// a fresh store, and reports:
//
//   - device-claims/s: devices claimed per second of wall time;
//   - cpu-µs/device: CPU time (user + system, all threads) of this process per device claimed,
//     what the store costs the server (with SQLite, the database runs inside the process);
//   - pg-cpu-µs/device (PostgreSQL only, when /proc shows its processes): CPU time of the
//     PostgreSQL server processes that serve the store's connections, per device claimed.
//
// Every device is filled beforehand with as many one-time keys as the run will claim from it
// (plus a fallback key, so that a miscount shows as a failure instead of a short answer), so
// nothing but claims runs inside the timed part. Request i claims the shared devices and the
// next (100 - shared) devices of a fixed random permutation of the pool, so that every pool
// device is claimed from equally often.
func benchClaim(b *testing.B, s Store, cfg claimBenchConfig, pgCPU func() time.Duration) {
	ctx := context.Background()
	perRequest := claimBenchDevices - cfg.shared
	user := func(kind string, d int) string { return fmt.Sprintf("@%s%05d:example.org", kind, d) }
	perm := rand.New(rand.NewPCG(1, 2)).Perm(cfg.pool)
	if cfg.pool == claimBenchDevices {
		for i := range perm {
			perm[i] = i // the same 100 devices in user ID order every time
		}
	}
	wantsFor := func(i int) []Want {
		wants := make([]Want, 0, claimBenchDevices)
		for d := 0; d < cfg.shared; d++ {
			wants = append(wants, Want{user("shared", d), "DEVICE", SignedCurve25519})
		}
		for j := 0; j < perRequest; j++ {
			d := perm[(i*perRequest+j)%cfg.pool]
			wants = append(wants, Want{user("user", d), "DEVICE", SignedCurve25519})
		}
		return wants
	}

	// Fill: every pool device gets the claims the run makes from it, each shared device b.N.
	fill := func(u string, n int) {
		const perUpload = 1000
		for batch := 0; n > 0; batch++ {
			k := min(n, perUpload)
			n -= k
			keys := make(map[string]json.RawMessage, k)
			for j := 0; j < k; j++ {
				id := fmt.Sprintf("signed_curve25519:%04d%06d", batch, j)
				keys[id] = json.RawMessage(`{"key":"` + id + `","signatures":{"` + u + `":{"ed25519:DEVICE":"c2lnbmF0dXJlIG9mIHRoZSBvbmUtdGltZSBrZXkgYnkgdGhlIGRldmljZQ"}}}`)
			}
			up := Upload{OneTimeKeys: keys}
			if batch == 0 {
				up.DeviceKeys = json.RawMessage(`{"user_id":"` + u + `","device_id":"DEVICE"}`)
				up.FallbackKeys = otks(`signed_curve25519:FB="fallback"`)
			}
			if _, err := s.Upload(ctx, u, "DEVICE", up); err != nil {
				b.Fatal(err)
			}
		}
	}
	perPool := (b.N*perRequest + cfg.pool - 1) / cfg.pool
	for d := 0; d < cfg.pool; d++ {
		fill(user("user", d), perPool)
	}
	for d := 0; d < cfg.shared; d++ {
		fill(user("shared", d), b.N)
	}
	requests := make([][]Want, b.N)
	for i := range requests {
		requests[i] = wantsFor(i)
	}

	claim := func(i int) error {
		got, err := s.Claim(ctx, requests[i])
		if err != nil {
			return err
		}
		if len(got) != claimBenchDevices {
			return fmt.Errorf("request %d: claimed %d keys, want %d", i, len(got), claimBenchDevices)
		}
		for _, c := range got {
			if c.Fallback {
				return fmt.Errorf("request %d: fallback key of %s: the fill was too small", i, c.User)
			}
		}
		return nil
	}

	runtime.GC()
	b.ReportAllocs()
	var pgStart time.Duration
	if pgCPU != nil {
		pgStart = pgCPU()
	}
	cpuStart := processCPU()
	b.ResetTimer()
	if cfg.clients <= 1 {
		for i := 0; i < b.N; i++ {
			if err := claim(i); err != nil {
				b.Fatal(err)
			}
		}
	} else {
		procs := runtime.GOMAXPROCS(0)
		b.SetParallelism((cfg.clients + procs - 1) / procs) // at least cfg.clients goroutines
		var next atomic.Int64
		var failed atomic.Pointer[error]
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := claim(int(next.Add(1) - 1)); err != nil {
					failed.CompareAndSwap(nil, &err)
				}
			}
		})
		if err := failed.Load(); err != nil {
			b.Fatal(*err)
		}
	}
	b.StopTimer()
	cpu := processCPU() - cpuStart
	devices := float64(b.N * claimBenchDevices)
	b.ReportMetric(devices/b.Elapsed().Seconds(), "device-claims/s")
	b.ReportMetric(float64(cpu.Microseconds())/devices, "cpu-µs/device")
	if pgCPU != nil {
		if pg := pgCPU() - pgStart; pg > 0 {
			b.ReportMetric(float64(pg.Microseconds())/devices, "pg-cpu-µs/device")
		}
	}
}

// processCPU returns the CPU time (user + system) this process has used so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// postgresBackendCPU opens every connection of the store's pool and returns a function that
// reads the CPU time (user + system) used so far by the PostgreSQL server processes serving them
// (from /proc: the server must run on this machine), or nil when /proc does not show them. Other
// sessions on the same server, and its background processes, are not counted.
func postgresBackendCPU(b *testing.B, s Store) func() time.Duration {
	pool := s.(*postgresStore).pool
	ctx := context.Background()
	var pids []int
	var conns []interface{ Release() }
	for range pool.Config().MaxConns {
		c, err := pool.Acquire(ctx)
		if err != nil {
			b.Fatal(err)
		}
		conns = append(conns, c)
		var pid int
		if err := c.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
			b.Fatal(err)
		}
		pids = append(pids, pid)
	}
	for _, c := range conns {
		c.Release()
	}
	read := func() (time.Duration, bool) {
		ticks := 0
		for _, pid := range pids {
			stat, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
			if err != nil {
				return 0, false
			}
			// pid (comm) state ...: utime and stime are the 12th and 13th fields after ")".
			fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
			if len(fields) < 13 {
				return 0, false
			}
			utime, _ := strconv.Atoi(fields[11])
			stime, _ := strconv.Atoi(fields[12])
			ticks += utime + stime
		}
		const clockTicksPerSecond = 100 // USER_HZ on Linux
		return time.Duration(ticks) * (time.Second / clockTicksPerSecond), true
	}
	if _, ok := read(); !ok {
		return nil
	}
	return func() time.Duration { d, _ := read(); return d }
}

// BenchmarkClaim100 measures sequential 100-device claims on SQLite, always from the same 100
// devices (their rows share pages: the cheapest case).
func BenchmarkClaim100(b *testing.B) {
	benchClaim(b, openStore(b, sqliteBackend.freshDSN(b)), claimBenchConfig{pool: 100, clients: 1}, nil)
}

// BenchmarkClaim100Spread measures sequential 100-device claims on SQLite, each from 100 of
// 10,000 devices: every device claimed from sits on pages of its own, as in a real server.
func BenchmarkClaim100Spread(b *testing.B) {
	benchClaim(b, openStore(b, sqliteBackend.freshDSN(b)), claimBenchConfig{pool: 10000, clients: 1}, nil)
}

// BenchmarkClaim100Parallel measures 8 concurrent clients claiming on SQLite: each request
// claims from 10 devices shared by all requests and 90 of 10,000 other devices.
func BenchmarkClaim100Parallel(b *testing.B) {
	benchClaim(b, openStore(b, sqliteBackend.freshDSN(b)), claimBenchConfig{pool: 10000, shared: 10, clients: 8}, nil)
}

// BenchmarkClaim100Postgres is BenchmarkClaim100 on PostgreSQL (skipped without a database).
func BenchmarkClaim100Postgres(b *testing.B) {
	s := openStore(b, postgresBackend.freshDSN(b))
	benchClaim(b, s, claimBenchConfig{pool: 100, clients: 1}, postgresBackendCPU(b, s))
}

// BenchmarkClaim100SpreadPostgres is BenchmarkClaim100Spread on PostgreSQL.
func BenchmarkClaim100SpreadPostgres(b *testing.B) {
	s := openStore(b, postgresBackend.freshDSN(b))
	benchClaim(b, s, claimBenchConfig{pool: 10000, clients: 1}, postgresBackendCPU(b, s))
}

// BenchmarkClaim100ParallelPostgres is BenchmarkClaim100Parallel on PostgreSQL.
func BenchmarkClaim100ParallelPostgres(b *testing.B) {
	s := openStore(b, postgresBackend.freshDSN(b))
	benchClaim(b, s, claimBenchConfig{pool: 10000, shared: 10, clients: 8}, postgresBackendCPU(b, s))
}

// benchUpload measures the upload with which a device replenishes its one-time keys: 50 new keys
// after its 50 previous ones were claimed (the claims run outside the measurement). It reports
// the CPU time of this process per upload (cpu-µs/upload) besides the time per upload.
func benchUpload(b *testing.B, s Store) {
	ctx := context.Background()
	const devices, keys = 10, 50
	user := func(d int) string { return fmt.Sprintf("@upload%02d:example.org", d) }
	batch := make([]int, devices)
	upload := func(d int) {
		m := make(map[string]json.RawMessage, keys)
		for k := 0; k < keys; k++ {
			id := fmt.Sprintf("signed_curve25519:%05d%03d", batch[d], k)
			m[id] = json.RawMessage(`{"key":"` + id + `","signatures":{"` + user(d) + `":{"ed25519:DEVICE":"c2lnbmF0dXJl"}}}`)
		}
		batch[d]++
		if _, err := s.Upload(ctx, user(d), "DEVICE", Upload{OneTimeKeys: m}); err != nil {
			b.Fatal(err)
		}
	}
	for d := 0; d < devices; d++ {
		upload(d)
	}
	var cpu time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		d := i % devices
		b.StopTimer()
		for k := 0; k < keys; k++ {
			if _, err := s.Claim(ctx, []Want{{user(d), "DEVICE", SignedCurve25519}}); err != nil {
				b.Fatal(err)
			}
		}
		start := processCPU()
		b.StartTimer()
		upload(d)
		b.StopTimer()
		cpu += processCPU() - start
		b.StartTimer()
	}
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/upload")
}

// BenchmarkUpload50 measures a 50-key upload on SQLite (see benchUpload).
func BenchmarkUpload50(b *testing.B) {
	benchUpload(b, openStore(b, sqliteBackend.freshDSN(b)))
}

// BenchmarkUpload50Postgres measures a 50-key upload on PostgreSQL (see benchUpload).
func BenchmarkUpload50Postgres(b *testing.B) {
	benchUpload(b, openStore(b, postgresBackend.freshDSN(b)))
}
