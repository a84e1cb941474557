package hostserver_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyclaim/keyclaim/internal/serverproc"
)

// Robustness tests against keyclaim-server processes (issue 4, item 6): the binary is built once
// per test run, then started as real processes on free loopback ports. Two processes share one
// PostgreSQL database; one process is killed with SIGKILL in the middle of claims and uploads
// and restarted on the same database.

const (
	// procReadyTimeout bounds the start of a server process (migrations; the wasm engine
	// compiles its module at start).
	procReadyTimeout = 60 * time.Second
	// procStopTimeout bounds a graceful stop before the process is killed.
	procStopTimeout = 15 * time.Second
)

// buildServer builds cmd/keyclaim-server into dir and returns the binary's path.
func buildServer(dir string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	return serverproc.Build(ctx, dir)
}

// serverProc is a running keyclaim-server process of a test (internal/serverproc); its output
// goes to a log file.
type serverProc struct {
	*serverproc.Proc
	t    *testing.T
	name string
	base string
}

// startProc starts the binary with args and --listen on a free loopback port, without waiting
// for it to be ready (see ready). The process is stopped at the end of the test, gracefully if
// it still runs; its log is shown when the test failed.
func startProc(t *testing.T, bin, name string, args ...string) *serverProc {
	t.Helper()
	proc, err := serverproc.Start(bin, args, filepath.Join(t.TempDir(), name+".log"))
	if err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	p := &serverProc{Proc: proc, t: t, name: name, base: proc.Base}
	t.Cleanup(func() {
		// Only a process that had to be killed is an error here (as before the shared launcher).
		if err := proc.Stop(procStopTimeout); err != nil && strings.Contains(err.Error(), "did not stop") {
			t.Errorf("%s: %v", name, err)
		}
		if t.Failed() {
			p.showLog()
		}
	})
	return p
}

// showLog writes the tail of the process's log to the test log.
func (p *serverProc) showLog() {
	p.t.Logf("%s (%s) log, last bytes:\n%s", p.name, p.base, p.LogTail(6000))
}

// ready waits until the process answers GET /readyz with 200; it fails the test if the process
// exits or is not ready within procReadyTimeout.
func (p *serverProc) ready() {
	p.t.Helper()
	if err := p.Ready(context.Background(), procReadyTimeout); err != nil {
		p.t.Fatalf("%s: %v", p.name, err)
	}
}

// kill ends the process with SIGKILL and waits for it.
func (p *serverProc) kill() {
	p.t.Helper()
	if err := p.Kill(); err != nil {
		p.t.Fatalf("SIGKILL %s: %v", p.name, err)
	}
}

// serverArgs are the flags of every test server process on db with the token file tokens; the
// engine follows KEYCLAIM_TEST_ENGINE like the in-process tests.
func serverArgs(db, tokens string) []string {
	args := []string{"--db", db, "--tokens", tokens, "--server-name", serverName, "--log-level", "warn"}
	if e := os.Getenv(engineEnv); e != "" {
		args = append(args, "--engine", e)
	}
	return args
}

// TestRobustProcesses runs keyclaim-server processes, built once for all subtests:
//
//   - "two processes on one PostgreSQL": the hammer of TestRobustHammer with the claims and the
//     uploads spread over two processes that share one database (skipped without
//     KEYCLAIM_TEST_POSTGRES);
//   - "crash/<store>": SIGKILL during claims and uploads, restart on the same database, then the
//     conservation of every key (see runCrash);
//   - "replica killed": two processes on one PostgreSQL share the requests (as behind a load
//     balancer); one is killed with SIGKILL under load, the other keeps serving until every
//     device is drained; the same conservation checks (runCrash with replica).
func TestRobustProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("server processes skipped in -short mode")
	}
	binDir := t.TempDir()
	var once sync.Once
	var bin string
	var buildErr error
	binary := func(t *testing.T) string {
		t.Helper()
		once.Do(func() {
			start := time.Now()
			bin, buildErr = buildServer(binDir)
			t.Logf("built %s in %v", bin, time.Since(start).Round(time.Millisecond))
		})
		if buildErr != nil {
			t.Fatal(buildErr)
		}
		return bin
	}

	t.Run("two processes on one PostgreSQL", func(t *testing.T) {
		if os.Getenv(postgresEnv) == "" {
			t.Skipf("two server processes on one PostgreSQL skipped: set %s to a postgres:// DSN (hostserver/store/testdata/start-postgres.sh prints one)", postgresEnv)
		}
		db := postgresBackend.freshDB(t)
		fl := newFleet(defaultHammerSize.devices, defaultHammerSize.perUser)
		tokens := fl.writeTokens(t, t.TempDir())
		bin := binary(t)
		// Both start at once: their migrations meet on the advisory lock.
		a := startProc(t, bin, "server-a", serverArgs(db, tokens)...)
		b := startProc(t, bin, "server-b", serverArgs(db, tokens)...)
		a.ready()
		b.ready()
		runHTTPHammer(t, []string{a.base, b.base}, fl, defaultHammerSize)
	})

	t.Run("crash", func(t *testing.T) {
		forEachStore(t, func(t *testing.T, b backend) {
			db := b.freshDB(t) // skips PostgreSQL first when it is not configured
			runCrash(t, binary(t), db, false)
		})
	})

	// Two replicas behind a load balancer: one is killed under load, the other keeps serving.
	t.Run("replica killed", func(t *testing.T) {
		db := postgresBackend.freshDB(t)
		runCrash(t, binary(t), db, true)
	})
}

// crashSize sizes a crash run.
var crashSize = struct {
	devices, perUser      int
	batches, keysPerBatch int // initial one-time keys per device
	claimers, maxDevices  int
	uploaders             int // each owns devices/uploaders devices
	uploadKeys            int // new keys per upload
	phase1Uploads         int // per uploader, at most, before the kill
	phase2Uploads         int // per uploader after the restart
	uploadPause           time.Duration
	killMin, killSpread   time.Duration // SIGKILL after killMin + [0, killSpread)
	timeout               time.Duration // each phase ends by then
	maxRequestsPerClaimer int
}{
	devices: 16, perUser: 4, batches: 3, keysPerBatch: 50,
	claimers: 8, maxDevices: 8,
	uploaders: 2, uploadKeys: 20, phase1Uploads: 200, phase2Uploads: 10,
	uploadPause: 5 * time.Millisecond,
	killMin:     200 * time.Millisecond, killSpread: 500 * time.Millisecond,
	timeout:               30 * time.Second,
	maxRequestsPerClaimer: 20000,
}

// runCrash starts the server on db, uploads keys, runs claimers and uploaders against it and
// kills it with SIGKILL after a seeded random delay; then restarts it on the same database,
// sends again the uploads whose answers were lost, uploads a few more batches and claims until
// every device is drained. Checks, per device, across the whole run:
//
//   - no one-time key is ever received twice (so a key received in a 200 answer before the crash
//     is gone from the store after it: a committed claim survives a crash of the process);
//   - every received key was uploaded to that device, with that value;
//   - uploaded = received + remaining + lost, where lost are the keys claimed by transactions
//     that committed but whose answer never arrived: at most one per unanswered claim request
//     naming the device (uploads answered 200 are all there: they are received, remaining or
//     among those lost);
//   - answers are complete and each claimer sees a device's keys oldest batch first.
//
// With replica, a second process (the replica) runs on the same database from the start and
// gets every other request of phase 1, as behind a load balancer; after the SIGKILL of the
// first, phase 2 runs on the replica, which was never stopped.
func runCrash(t *testing.T, bin, db string, replica bool) {
	size := crashSize
	seed := robustSeed(t)
	rng := rand.New(rand.NewPCG(seed, 0x637261736800))
	killAfter := size.killMin + time.Duration(rng.Int64N(int64(size.killSpread)))

	fl := newFleet(size.devices, size.perUser)
	tokens := fl.writeTokens(t, t.TempDir())
	args := serverArgs(db, tokens)
	hc := newRobustClient()
	defer hc.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 3*size.timeout)
	defer cancel()
	l := newLedger(fl)

	first := startProc(t, bin, "first", args...)
	first.ready()
	bases := []string{first.base}
	var other *serverProc
	if replica {
		other = startProc(t, bin, "replica", args...)
		other.ready()
		bases = append(bases, other.base)
	}
	l.setup(t, ctx, hc, first.base, size.batches, size.keysPerBatch)

	uploaders := make([]*uploader, size.uploaders)
	for i := range uploaders {
		u := &uploader{next: map[int]int{}}
		for d := i; d < size.devices; d += size.uploaders {
			u.devs = append(u.devs, d)
			u.next[d] = size.batches
		}
		uploaders[i] = u
	}
	claimers := make([]*claimer, size.claimers)
	for g := range claimers {
		claimers[g] = newClaimer(g, seed, size.devices)
	}

	// Phase 1: claims and uploads until SIGKILL. Every worker stops at its first request without
	// an answer; an upload without an answer is kept to be sent again.
	var uploadsDone atomic.Bool // stays false: no device counts as drained in phase 1
	phase1, stop1 := context.WithTimeout(ctx, size.timeout)
	defer stop1()
	var wg sync.WaitGroup
	var unanswered atomic.Int64
	for _, u := range uploaders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := l.uploadLoop(phase1, hc, u, bases, size.phase1Uploads, size.uploadKeys, size.uploadPause); err != nil {
				unanswered.Add(1)
			}
		}()
	}
	for _, c := range claimers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := l.claimLoop(phase1, hc, c, bases, &uploadsDone, size.maxRequestsPerClaimer, size.maxDevices); err != nil {
				unanswered.Add(1)
			}
		}()
	}
	time.Sleep(killAfter)
	l.mu.Lock()
	receivedBefore := 0
	for d := range l.received {
		receivedBefore += len(l.received[d])
	}
	l.mu.Unlock()
	first.kill()
	wg.Wait()
	stop1()

	lostClaims, refusedClaims, pending := 0, 0, 0
	for _, c := range claimers {
		lostClaims += c.lost
		refusedClaims += c.refused
	}
	for _, u := range uploaders {
		if u.pending != nil {
			pending++
		}
	}
	l.mu.Lock()
	maxLost := 0
	for _, n := range l.inFlightLost {
		maxLost += n
	}
	l.mu.Unlock()
	t.Logf("phase 1: SIGKILL after %v (%d one-time keys received by then); %d claim requests in flight lost their answer (at most %d keys claimed without an answer), %d were refused; %d uploads lost their answer and will be sent again",
		killAfter, receivedBefore, lostClaims, maxLost, refusedClaims, pending)
	if receivedBefore == 0 {
		t.Errorf("no one-time key was received before the kill: the crash came too early to test anything")
	}
	if n := unanswered.Load(); int(n) != size.claimers+size.uploaders {
		// A worker that ended without losing an answer had run out of requests before the kill.
		t.Logf("phase 1: only %d of %d workers were still running at the kill", n, size.claimers+size.uploaders)
	}
	l.mu.Lock()
	problemsBefore := l.nproblems
	l.mu.Unlock()
	if problemsBefore > 0 {
		l.report(t)
		t.FailNow()
	}

	// Phase 2: the same database, a new process (or the replica, still running).
	second := other
	if !replica {
		second = startProc(t, bin, "second", args...)
		second.ready()
	}
	phase2, stop2 := context.WithTimeout(ctx, size.timeout)
	defer stop2()
	// The claimers start with the uploads; uploadsDone turns true when every uploader is done.
	var uploadWG, claimWG sync.WaitGroup
	for _, u := range uploaders {
		uploadWG.Add(1)
		go func() {
			defer uploadWG.Done()
			if p := u.pending; p != nil {
				// The same body again: stored once whether or not the first attempt committed.
				if err := l.uploadOnce(phase2, hc, second.base, p.device, p.body); err != nil {
					l.problem("sending again an upload whose answer was lost: %v", err)
				}
				u.pending = nil
			}
			if err := l.uploadLoop(phase2, hc, u, []string{second.base}, size.phase2Uploads, size.uploadKeys, size.uploadPause); err != nil {
				l.problem("uploader after the restart: %v", err)
			}
		}()
	}
	go func() {
		uploadWG.Wait()
		uploadsDone.Store(true)
	}()
	for _, c := range claimers {
		claimWG.Add(1)
		go func() {
			defer claimWG.Done()
			if err := l.claimLoop(phase2, hc, c, []string{second.base}, &uploadsDone, size.maxRequestsPerClaimer, size.maxDevices); err != nil {
				l.problem("claimer after the restart: %v", err)
			}
		}()
	}
	claimWG.Wait()
	uploadWG.Wait()
	if !l.allDrained() {
		t.Errorf("after the restart, not every device was drained within %v (%d of %d)", size.timeout, l.ndrained.Load(), size.devices)
	}
	l.report(t)
	uploaded, received, lost := l.conserve(t, ctx, hc, second.base, true)
	t.Logf("whole run: %d one-time keys uploaded, %d received exactly once, %d claimed by requests whose answer was lost (at most %d allowed), 0 remaining",
		uploaded, received, lost, maxLost)
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Errorf("the crash test ran out of time")
	}
}
