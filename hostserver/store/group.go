package store

import (
	"context"
	"errors"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// groupCommit claims concurrent requests together (group commit, issue 13): a claim that
// arrives while a claim transaction is in flight waits, and when that transaction has ended,
// the oldest waiting claim runs ONE transaction for itself and every claim that queued behind it
// (up to maxWants wants), so that a burst of small claims pays for one BEGIN, one COMMIT (one
// WAL write, one WAL flush on PostgreSQL) and one statement per round instead of one each.
//
// The guarantees are those of one transaction per request, in arrival order:
//
//   - each request gets exactly the keys it would have got had the requests of its group run
//     one after the other in arrival order: the group's wants are split into rounds, round k
//     holding the k-th request (in arrival order) that wants a given (user, device, algorithm),
//     and the rounds run one after the other inside the transaction, each one statement over
//     distinct wants (see groupRounds);
//   - a request is answered only after the transaction that holds its claims has committed;
//   - a group whose transaction fails is not failed as a whole: each of its requests is run
//     again alone, in arrival order, in a transaction of its own, and only a request that fails
//     alone is failed (isolate and retry); except when the database stayed unreachable
//     (ErrUnavailable, after the store's own retries): that fails the group at once;
//   - the claim that arrived first leads the next group (first come, first served); there is no
//     waiting for a group to fill: a lone claim runs at once, and a group is whatever queued
//     while the previous transaction ran;
//   - up to maxInFlight groups run at once (SQLite 1, PostgreSQL postgresGroupsInFlight): groups
//     in flight together are ordered by the database like any concurrent transactions (the
//     device locks on PostgreSQL), as concurrent requests were before.
//
// A request whose context ends while it waits leaves the queue and gets the context's error;
// one whose context ends while its group runs gets the error too (its claims may commit: as
// with a client that goes away after the commit, those keys are then spent, never handed out
// twice). The group's transaction runs until every member's context has ended.
type groupCommit struct {
	// claim claims the wants of every round in ONE transaction, the rounds in order (round k+1
	// sees the claims of round k), and returns per round the key of each want by position
	// (KeyID "" for a want that got nothing). The wants of one round are distinct.
	claim func(ctx context.Context, rounds [][]Want) ([][]Claimed, error)
	// maxWants bounds the wants of a group; a request of more wants is a group of its own.
	maxWants int
	// maxInFlight bounds the groups whose transactions run at once (at least 1). SQLite has one
	// writer: 1. PostgreSQL runs transactions side by side and flushes the WAL of commits that
	// wait together once, so a few groups in flight overlap their round trips and flushes.
	maxInFlight int
	// yield makes a claim that would run alone first let the goroutines that are runnable run
	// (runtime.Gosched), so that the claims they are about to make join its group.
	yield bool

	mu       sync.Mutex
	inFlight int          // groups being formed or run; at maxInFlight, new claims queue
	queue    []*claimCall // waiting claims, in arrival order

	// Counters for tests and benchmarks: groups run, requests claimed in them, groups whose
	// transaction failed and whose requests were run again alone.
	groups, requests, isolated atomic.Int64
}

// groupYieldMaxWants is the largest claim that yields before it runs alone (groupCommit.yield):
// a small claim's transaction is mostly the fixed cost of BEGIN and COMMIT, which a group
// shares; a large one's is mostly its own statements, and letting other requests run first
// (parsing large bodies) only delays it (measured: the p99 of 100-device claims doubled).
const groupYieldMaxWants = 16

// postgresGroupsInFlight is maxInFlight of the PostgreSQL store.
const postgresGroupsInFlight = 4

// groupMaxWants is the default bound on the wants of one group: large enough for a burst of 8
// claims of 1,000 devices, small enough that a group's transaction holds the writer (SQLite) or
// the device locks (PostgreSQL) for a few milliseconds at most.
const groupMaxWants = 8192

// The states of a claimCall.
const (
	callQueued  = iota // waiting in groupCommit.queue
	callLeading        // woken to form and run the next group
	callTaken          // in a group that is running
	callDone           // answered: got and err are set
)

// claimCall is one Claim request.
type claimCall struct {
	ctx   context.Context
	wants []Want // deduplicated
	state uint8  // guarded by groupCommit.mu
	wake  chan struct{}
	got   []Claimed // the answer, in the order of wants, without wants that got nothing
	err   error
}

// Claim implements Store.Claim through the group commit.
func (g *groupCommit) Claim(ctx context.Context, wants []Want) ([]Claimed, error) {
	wants = dedupeWants(wants)
	if len(wants) == 0 {
		return []Claimed{}, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c := &claimCall{ctx: ctx, wants: wants}
	g.mu.Lock()
	if g.inFlight >= max(1, g.maxInFlight) {
		c.wake = make(chan struct{}, 1)
		g.queue = append(g.queue, c)
		g.mu.Unlock()
		select {
		case <-c.wake:
		case <-ctx.Done():
			g.mu.Lock()
			switch c.state {
			case callQueued:
				for i, q := range g.queue {
					if q == c {
						g.queue = append(g.queue[:i], g.queue[i+1:]...)
						break
					}
				}
				g.mu.Unlock()
				return nil, ctx.Err()
			case callTaken:
				g.mu.Unlock()
				return nil, ctx.Err()
			}
			g.mu.Unlock() // done, or leading: go on below
		}
		if c.state == callDone { // set before the wake-up, under the lock
			return c.got, c.err
		}
	} else {
		g.inFlight++
		g.mu.Unlock()
		if g.yield && len(wants) <= groupYieldMaxWants {
			// Let goroutines that are runnable now (other requests, a step away from their
			// claim) run first: those that reach Claim meanwhile queue and join this group.
			// Without other runnable goroutines this returns at once.
			runtime.Gosched()
		}
	}
	g.lead(c)
	return c.got, c.err
}

// lead forms a group of c and the claims queued behind it, runs it, answers its members and
// hands the lead to the next claim in the queue.
func (g *groupCommit) lead(c *claimCall) {
	g.mu.Lock()
	c.state = callTaken
	calls := []*claimCall{c}
	n, taken := len(c.wants), 0
	for _, q := range g.queue {
		if n+len(q.wants) > g.maxWants {
			break
		}
		n += len(q.wants)
		q.state = callTaken
		calls = append(calls, q)
		taken++
	}
	g.queue = append(g.queue[:0], g.queue[taken:]...)
	g.mu.Unlock()

	g.run(calls)

	g.mu.Lock()
	for _, m := range calls {
		m.state = callDone
		if m.wake != nil && m != c {
			m.wake <- struct{}{}
		}
	}
	if len(g.queue) > 0 {
		next := g.queue[0]
		g.queue = append(g.queue[:0], g.queue[1:]...)
		next.state = callLeading
		next.wake <- struct{}{}
	} else {
		g.inFlight--
	}
	g.mu.Unlock()
}

// run claims for the calls of one group and sets their answers.
func (g *groupCommit) run(calls []*claimCall) {
	live := calls[:0:0]
	for _, m := range calls {
		if err := m.ctx.Err(); err != nil {
			m.err = err
			continue
		}
		live = append(live, m)
	}
	if len(live) == 0 {
		return
	}
	g.groups.Add(1)
	g.requests.Add(int64(len(live)))
	if len(live) == 1 {
		m := live[0]
		got, err := g.claim(m.ctx, [][]Want{m.wants})
		m.setAnswer(got, err)
		return
	}

	ctx, stop := groupContext(live)
	rounds, slots := groupRounds(live)
	got, err := g.claim(ctx, rounds)
	stop()
	if err == nil {
		per := make([][]Claimed, len(live))
		for i, m := range live {
			per[i] = make([]Claimed, len(m.wants))
		}
		for r, round := range slots {
			for j, sl := range round {
				per[sl.call][sl.want] = got[r][j]
			}
		}
		for i, m := range live {
			m.setAnswer([][]Claimed{per[i]}, nil)
		}
		return
	}

	if errors.Is(err, ErrUnavailable) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		// Not a failure of one request: the database stayed unreachable for the whole budget,
		// or every member went away. Running each alone would only wait that long again.
		for _, m := range live {
			m.err = err
		}
		return
	}

	// Isolate: every request again, alone, in arrival order.
	g.isolated.Add(1)
	slog.Warn("store: a group of claims failed; claiming each request alone",
		"requests", len(live), "err", err)
	for _, m := range live {
		if cerr := m.ctx.Err(); cerr != nil {
			m.err = cerr
			continue
		}
		got, err := g.claim(m.ctx, [][]Want{m.wants})
		m.setAnswer(got, err)
	}
}

// setAnswer sets the answer of a call from the positional result of its one round.
func (m *claimCall) setAnswer(got [][]Claimed, err error) {
	if err != nil {
		m.err = err
		return
	}
	keys := got[0]
	n := 0
	for i := range keys {
		if keys[i].KeyID != "" {
			n++
		}
	}
	if n == len(keys) { // every want got a key (the usual case)
		m.got = keys
		return
	}
	out := make([]Claimed, 0, n)
	for _, k := range keys {
		if k.KeyID != "" {
			out = append(out, k)
		}
	}
	m.got = out
}

// groupSlot is where the answer to a want of a round goes: the call (index in the group) and
// the position of the want in it.
type groupSlot struct{ call, want int }

// groupRounds splits the wants of a group into rounds of distinct wants: round k holds, for
// every (user, device, algorithm), the want of the k-th call (in arrival order) that asks for
// it. Running the rounds in order gives every call exactly what it would have got had the calls
// run one after the other: calls that want different things do not affect each other, and the
// calls that want the same thing take turns in arrival order.
func groupRounds(calls []*claimCall) ([][]Want, [][]groupSlot) {
	n := 0
	for _, m := range calls {
		n += len(m.wants)
	}
	seen := make(map[Want]int, n)
	rounds := [][]Want{make([]Want, 0, n)}
	slots := [][]groupSlot{make([]groupSlot, 0, n)}
	for ci, m := range calls {
		for wi, w := range m.wants {
			k := seen[w]
			seen[w] = k + 1
			if k == len(rounds) {
				rounds = append(rounds, nil)
				slots = append(slots, nil)
			}
			rounds[k] = append(rounds[k], w)
			slots[k] = append(slots[k], groupSlot{ci, wi})
		}
	}
	return rounds, slots
}

// groupContext returns the context of a group's transaction: it keeps the values of the first
// call's context, ends when every call's context has ended, and has the latest of their
// deadlines when every one has a deadline (the time budget within which a store may retry).
// stop releases it.
func groupContext(calls []*claimCall) (context.Context, func()) {
	base := context.WithoutCancel(calls[0].ctx)
	var latest time.Time
	for _, m := range calls {
		d, ok := m.ctx.Deadline()
		if !ok {
			latest = time.Time{}
			break
		}
		if d.After(latest) {
			latest = d
		}
	}
	var cancelDeadline context.CancelFunc = func() {}
	if !latest.IsZero() {
		base, cancelDeadline = context.WithDeadline(base, latest)
	}
	ctx, cancel := context.WithCancel(base)
	var live atomic.Int32
	live.Store(int32(len(calls)))
	stops := make([]func() bool, len(calls))
	for i, m := range calls {
		stops[i] = context.AfterFunc(m.ctx, func() {
			if live.Add(-1) == 0 {
				cancel()
			}
		})
	}
	return ctx, func() {
		for _, s := range stops {
			s()
		}
		cancel()
		cancelDeadline()
	}
}
