package federation

import (
	"sync"
	"time"

	"github.com/keyclaim/keyclaim/core"
)

// NotReadyForRetry is the failure message of a destination that is backed off, Synapse's
// wording, which clients and operators already know.
const NotReadyForRetry = "Not ready for retry"

// BackoffPolicy says how a destination that keeps failing is backed off. The zero value means
// the defaults: 30 s after the first failure, doubling with each further one, up to 1 hour.
type BackoffPolicy struct {
	// Initial is the backoff after the first failure (0 means 30 s).
	Initial time.Duration
	// Max caps the backoff (0 means 1 hour).
	Max time.Duration
	// MinTimeout is the least time a request must have been given for its timeout to count as
	// a failure (0 means 5 s): the claim timeout is the client's choice, and a client asking
	// for a tiny one must not back healthy servers off for everyone.
	MinTimeout time.Duration
	// Disabled turns backoff off: every call is sent.
	Disabled bool
}

// backoffs tracks the failing destinations. A failure (transport error, timeout, 5xx, 429)
// backs a destination off until Initial·2^(failures-1) (at most Max) has passed; calls before
// then fail fast; any answer that shows the server up (2xx, or 4xx other than 429) forgets it.
type backoffs struct {
	policy BackoffPolicy
	now    func() time.Time

	mu    sync.Mutex
	state map[core.ServerName]*backoffState
}

type backoffState struct {
	failures int
	until    time.Time
}

// maxBackoffEntries bounds the destinations tracked; long-expired ones are dropped beyond it.
const maxBackoffEntries = 10000

func newBackoffs(p BackoffPolicy, now func() time.Time) *backoffs {
	if p.Initial <= 0 {
		p.Initial = 30 * time.Second
	}
	if p.Max <= 0 {
		p.Max = time.Hour
	}
	p.Max = max(p.Max, p.Initial)
	if p.MinTimeout <= 0 {
		p.MinTimeout = 5 * time.Second
	}
	return &backoffs{policy: p, now: now, state: map[core.ServerName]*backoffState{}}
}

// ready reports whether a call to dest may be sent now; if not, until is when it may.
func (b *backoffs) ready(dest core.ServerName) (ok bool, until time.Time) {
	if b.policy.Disabled {
		return true, time.Time{}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.state[dest]
	if s == nil || !b.now().Before(s.until) {
		return true, time.Time{}
	}
	return false, s.until
}

// fail records a failure of dest and returns how long it is now backed off.
func (b *backoffs) fail(dest core.ServerName) time.Duration {
	if b.policy.Disabled {
		return 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	s := b.state[dest]
	if s == nil {
		if len(b.state) >= maxBackoffEntries {
			for d, old := range b.state {
				if now.Sub(old.until) > b.policy.Max {
					delete(b.state, d)
				}
			}
		}
		s = &backoffState{}
		b.state[dest] = s
	}
	s.failures++
	d := b.policy.Initial
	for i := 1; i < s.failures && d < b.policy.Max; i++ {
		d *= 2
	}
	d = min(d, b.policy.Max)
	s.until = now.Add(d)
	return d
}

// succeed forgets the failures of dest.
func (b *backoffs) succeed(dest core.ServerName) {
	if b.policy.Disabled {
		return
	}
	b.mu.Lock()
	delete(b.state, dest)
	b.mu.Unlock()
}
