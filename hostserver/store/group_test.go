package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// groupOf returns the group commit of a store of either backend.
func groupOf(s Store) *groupCommit {
	switch s := s.(type) {
	case *sqliteStore:
		return &s.group
	case *postgresStore:
		return &s.group
	}
	panic(fmt.Sprintf("no group commit in %T", s))
}

// forEachBackend runs fn on each backend: SQLite always, PostgreSQL
// when KEYCLAIM_TEST_POSTGRES is set (the subtest says it is skipped otherwise).
func forEachBackend(t *testing.T, fn func(t *testing.T, b backend)) {
	for _, b := range []backend{sqliteBackend, postgresBackend} {
		t.Run(b.name, func(t *testing.T) {
			if b.name == "postgres" && os.Getenv(postgresEnv) == "" {
				t.Skipf("%s not set", postgresEnv)
			}
			fn(t, b)
		})
	}
}

// gatedGroup holds the next transaction of a store's group commit until open is called.
type gatedGroup struct {
	g       *groupCommit
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

// gate makes the next transaction of s's group commit wait (after it is entered) until
// gatedGroup.open; later transactions run freely. The original claim function is restored when
// the test ends.
//
// It also lets only one group run at a time (PostgreSQL runs several), so that the claims started
// after the held one queue behind it.
func gate(t *testing.T, s Store) *gatedGroup {
	g := groupOf(s)
	inFlight := g.maxInFlight
	g.maxInFlight = 1
	t.Cleanup(func() { g.maxInFlight = inFlight })
	gg := &gatedGroup{g: g, entered: make(chan struct{}), release: make(chan struct{})}
	orig := g.claim
	var first sync.Once
	g.claim = func(ctx context.Context, rounds [][]Want) ([][]Claimed, error) {
		held := false
		first.Do(func() { held = true })
		if held {
			close(gg.entered)
			<-gg.release
		}
		return orig(ctx, rounds)
	}
	t.Cleanup(func() { gg.open(); g.claim = orig })
	return gg
}

func (gg *gatedGroup) open() { gg.once.Do(func() { close(gg.release) }) }

// queued returns the number of claims waiting.
func (gg *gatedGroup) queued() int {
	gg.g.mu.Lock()
	defer gg.g.mu.Unlock()
	return len(gg.g.queue)
}

// waitQueued waits (bounded) until n claims wait in the queue.
func (gg *gatedGroup) waitQueued(t *testing.T, n int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); gg.queued() != n; {
		if time.Now().After(deadline) {
			t.Fatalf("%d claims queued, want %d", gg.queued(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// asyncClaim is a claim running in its own goroutine.
type asyncClaim struct {
	done chan struct{}
	got  []Claimed
	err  error
}

func startClaim(ctx context.Context, s Store, wants ...Want) *asyncClaim {
	a := &asyncClaim{done: make(chan struct{})}
	go func() {
		defer close(a.done)
		a.got, a.err = s.Claim(ctx, wants)
	}()
	return a
}

// keys waits (bounded) for the claim and returns what it got as "device=keyID" (fallback keys
// as "device=fallback:keyID").
func (a *asyncClaim) keys(t *testing.T) ([]string, error) {
	t.Helper()
	select {
	case <-a.done:
	case <-time.After(30 * time.Second):
		t.Fatal("claim did not return")
	}
	var out []string
	for _, c := range a.got {
		k := c.KeyID
		if c.Fallback {
			k = "fallback:" + k
		}
		out = append(out, strings.TrimPrefix(c.User, "@")+"/"+c.Device+"="+k)
	}
	return out, a.err
}

func (a *asyncClaim) mustKeys(t *testing.T) []string {
	t.Helper()
	keys, err := a.keys(t)
	if err != nil {
		t.Fatalf("claim: %v", err)
	}
	return keys
}

// TestGroupCommit shows on both backends what a group of claims gets: the claims that queue
// while a transaction is in flight run in ONE next transaction, and each gets exactly what it
// would have got had they run one after the other in arrival order.
func TestGroupCommit(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		a, bb := Want{alice, "A", sc}, Want{bob, "B", sc}
		seed := func(t *testing.T, s Store) {
			mustUpload(t, s, alice, "A", Upload{
				OneTimeKeys:  otks(`signed_curve25519:a1="1"`, `signed_curve25519:a2="2"`, `signed_curve25519:a3="3"`, `signed_curve25519:a4="4"`),
				FallbackKeys: otks(`signed_curve25519:afb="f"`),
			})
			mustUpload(t, s, bob, "B", Upload{
				OneTimeKeys:  otks(`signed_curve25519:b1="1"`),
				FallbackKeys: otks(`signed_curve25519:bfb="f"`),
			})
		}

		t.Run("arrival order", func(t *testing.T) {
			s := openStore(t, b.freshDSN(t))
			seed(t, s)
			g := groupOf(s)
			groups0, requests0 := g.groups.Load(), g.requests.Load()
			gg := gate(t, s)
			ctx := testCtx(t)
			first := startClaim(ctx, s, a)
			<-gg.entered
			// Queued one after the other, so that their arrival order is known.
			reqs := [][]Want{
				{a, bb},
				{a},
				{a, bb, {alice, "NO-SUCH-DEVICE", sc}, a},
				{{alice, "A", "curve25519"}},
				{a},
				{a, bb},
			}
			var queued []*asyncClaim
			for i, wants := range reqs {
				queued = append(queued, startClaim(ctx, s, wants...))
				gg.waitQueued(t, i+1)
			}
			gg.open()
			equal(t, "the held claim", first.mustKeys(t), []string{"alice:example.org/A=signed_curve25519:a1"})
			want := [][]string{
				{"alice:example.org/A=signed_curve25519:a2", "bob:example.org/B=signed_curve25519:b1"},
				{"alice:example.org/A=signed_curve25519:a3"},
				{"alice:example.org/A=signed_curve25519:a4", "bob:example.org/B=fallback:signed_curve25519:bfb"},
				nil,
				{"alice:example.org/A=fallback:signed_curve25519:afb"},
				{"alice:example.org/A=fallback:signed_curve25519:afb", "bob:example.org/B=fallback:signed_curve25519:bfb"},
			}
			for i, q := range queued {
				equal(t, fmt.Sprintf("claim %d of the group", i+1), q.mustKeys(t), want[i])
			}
			equal(t, "groups run", g.groups.Load()-groups0, int64(2))
			equal(t, "requests claimed", g.requests.Load()-requests0, int64(1+len(reqs)))
			equal(t, "counts of A", mustCounts(t, s, alice, "A")[sc], 0)
			equal(t, "counts of B", mustCounts(t, s, bob, "B")[sc], 0)
		})

		t.Run("a failing request fails alone", func(t *testing.T) {
			s := openStore(t, b.freshDSN(t))
			seed(t, s)
			g := groupOf(s)
			isolated0 := g.isolated.Load()
			gg := gate(t, s)
			// A request for the user "@poison:example.org" fails in any transaction it is part
			// of: a store failure that only some requests meet.
			poison := Want{"@poison:example.org", "P", sc}
			inner := g.claim
			g.claim = func(ctx context.Context, rounds [][]Want) ([][]Claimed, error) {
				for _, r := range rounds {
					for _, w := range r {
						if w == poison {
							return nil, errors.New("injected store failure")
						}
					}
				}
				return inner(ctx, rounds)
			}
			ctx := testCtx(t)
			first := startClaim(ctx, s, bb)
			<-gg.entered
			one := startClaim(ctx, s, a)
			gg.waitQueued(t, 1)
			bad := startClaim(ctx, s, a, poison)
			gg.waitQueued(t, 2)
			three := startClaim(ctx, s, a, bb)
			gg.waitQueued(t, 3)
			gg.open()
			equal(t, "the held claim", first.mustKeys(t), []string{"bob:example.org/B=signed_curve25519:b1"})
			equal(t, "claim 1", one.mustKeys(t), []string{"alice:example.org/A=signed_curve25519:a1"})
			if _, err := bad.keys(t); err == nil || !strings.Contains(err.Error(), "injected store failure") {
				t.Fatalf("the poisoned claim: error %v, want the injected failure", err)
			}
			// The poisoned request claimed nothing: a2 is still there for the next one.
			equal(t, "claim 3", three.mustKeys(t), []string{"alice:example.org/A=signed_curve25519:a2", "bob:example.org/B=fallback:signed_curve25519:bfb"})
			equal(t, "groups isolated", g.isolated.Load()-isolated0, int64(1))
			equal(t, "counts of A", mustCounts(t, s, alice, "A")[sc], 2)
		})

		t.Run("a claim whose context ends while it waits leaves the queue", func(t *testing.T) {
			s := openStore(t, b.freshDSN(t))
			seed(t, s)
			gg := gate(t, s)
			ctx := testCtx(t)
			first := startClaim(ctx, s, bb)
			<-gg.entered
			cctx, cancel := context.WithCancel(ctx)
			gone := startClaim(cctx, s, a)
			gg.waitQueued(t, 1)
			next := startClaim(ctx, s, a)
			gg.waitQueued(t, 2)
			cancel()
			if _, err := gone.keys(t); !errors.Is(err, context.Canceled) {
				t.Fatalf("canceled claim: error %v, want context.Canceled", err)
			}
			gg.waitQueued(t, 1)
			gg.open()
			first.mustKeys(t)
			equal(t, "the claim after it", next.mustKeys(t), []string{"alice:example.org/A=signed_curve25519:a1"})
		})
	})
}

// TestPostgresGroupIsolatesARealFailure: a request whose user ID is not valid UTF-8 makes
// PostgreSQL refuse every statement it is part of (the text arrays cannot be decoded); in a group
// it must fail alone, and the others get their keys.
func TestPostgresGroupIsolatesARealFailure(t *testing.T) {
	s := openStore(t, postgresBackend.freshDSN(t))
	mustUpload(t, s, alice, "A", Upload{OneTimeKeys: otks(`signed_curve25519:a1="1"`, `signed_curve25519:a2="2"`)})
	g := groupOf(s)
	isolated0 := g.isolated.Load()
	gg := gate(t, s)
	ctx := testCtx(t)
	a := Want{alice, "A", sc}
	first := startClaim(ctx, s, a)
	<-gg.entered
	bad := startClaim(ctx, s, Want{"@bad\xff:example.org", "X", sc})
	gg.waitQueued(t, 1)
	good := startClaim(ctx, s, a)
	gg.waitQueued(t, 2)
	gg.open()
	equal(t, "the held claim", first.mustKeys(t), []string{"alice:example.org/A=signed_curve25519:a1"})
	if _, err := bad.keys(t); err == nil {
		t.Fatal("a user ID that is not UTF-8 was accepted by PostgreSQL")
	}
	equal(t, "the good claim of the group", good.mustKeys(t), []string{"alice:example.org/A=signed_curve25519:a2"})
	equal(t, "groups isolated", g.isolated.Load()-isolated0, int64(1))
}

// TestGroupCommitHammer: many goroutines make small claims (one device, as clients mostly do)
// of the same few devices, so that groups form and hold several requests for one device (several
// rounds), while keys are uploaded; over one store and over several stores on one database
// (server processes). runHammer checks that no key is handed out twice, none is lost, and every
// claimer sees each device's keys oldest first.
func TestGroupCommitHammer(t *testing.T) {
	if testing.Short() {
		t.Skip("hammer test skipped in -short mode")
	}
	cfg := defaultHammer
	cfg.claimers = 48
	cfg.perClaim = 1
	cfg.initialKeys = 400
	forEachBackend(t, func(t *testing.T, b backend) {
		for _, n := range []int{1, 2} {
			t.Run(fmt.Sprintf("%d stores", n), func(t *testing.T) {
				dsn := b.freshDSN(t)
				var stores []Store
				for range n {
					stores = append(stores, openStore(t, dsn))
				}
				runHammer(t, stores, cfg)
				var groups, requests int64
				for _, s := range stores {
					groups += groupOf(s).groups.Load()
					requests += groupOf(s).requests.Load()
				}
				t.Logf("%d claim requests in %d transactions (%.2f per transaction)", requests, groups, float64(requests)/float64(groups))
			})
		}
	})
}
