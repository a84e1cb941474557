package core

import (
	"cmp"
	"slices"
	"strings"
)

// TrackerConfig configures a [Tracker]. Zero fields take the defaults.
type TrackerConfig struct {
	// ServerName is the client's own homeserver: a failures entry naming it never backs it off.
	ServerName ServerName
	// MaxEntries bounds the devices and servers remembered at once (default 10,000).
	MaxEntries int
	// BaseBackoffMS is the first backoff (default 15 s); each further failure doubles it...
	BaseBackoffMS int64
	// MaxBackoffMS ...up to this cap (default 15 min), as matrix-rust-sdk does.
	MaxBackoffMS int64
}

// DefaultTrackerConfig returns the defaults of BRIEF section 7.
func DefaultTrackerConfig() TrackerConfig {
	return TrackerConfig{MaxEntries: 10_000, BaseBackoffMS: 15_000, MaxBackoffMS: 15 * 60_000}
}

// Tracker remembers which devices had no keys and which servers failed, backs each off
// exponentially, and plans the next claim request from the devices that need sessions
// (BRIEF section 7). Time comes in as milliseconds; the tracker never reads a clock.
//
// An entry is forgotten once it has been quiet for MaxBackoffMS past its retry time, and when
// the tracker is full the entries due soonest are evicted first, so memory stays bounded and
// forgetting only ever makes a retry come sooner. A Tracker is not safe for concurrent use.
type Tracker struct {
	cfg     TrackerConfig
	devices map[deviceRef]*backoff
	servers map[ServerName]*backoff
}

type deviceRef struct {
	user   UserID
	device DeviceID
}

type backoff struct {
	failures int
	retryAt  int64
}

// NewTracker returns an empty tracker.
func NewTracker(cfg TrackerConfig) *Tracker {
	d := DefaultTrackerConfig()
	if cfg.MaxEntries <= 0 {
		cfg.MaxEntries = d.MaxEntries
	}
	if cfg.BaseBackoffMS <= 0 {
		cfg.BaseBackoffMS = d.BaseBackoffMS
	}
	if cfg.MaxBackoffMS <= 0 {
		cfg.MaxBackoffMS = d.MaxBackoffMS
	}
	if cfg.MaxBackoffMS < cfg.BaseBackoffMS {
		cfg.MaxBackoffMS = cfg.BaseBackoffMS
	}
	return &Tracker{cfg: cfg, devices: map[deviceRef]*backoff{}, servers: map[ServerName]*backoff{}}
}

// Len returns the number of devices and servers remembered.
func (t *Tracker) Len() int { return len(t.devices) + len(t.servers) }

// delay returns the backoff after n consecutive failures: base doubling up to the cap.
func (t *Tracker) delay(n int) int64 {
	d := t.cfg.BaseBackoffMS
	for i := 1; i < n && d < t.cfg.MaxBackoffMS; i++ {
		d *= 2
	}
	return min(d, t.cfg.MaxBackoffMS)
}

func (t *Tracker) forgettable(b *backoff, now int64) bool {
	return now >= b.retryAt+t.cfg.MaxBackoffMS
}

func (t *Tracker) fail(b *backoff, now int64) *backoff {
	if b == nil || t.forgettable(b, now) {
		b = &backoff{}
	}
	b.failures++
	b.retryAt = now + t.delay(b.failures)
	return b
}

// Observe records what a claim response meant (see [ClassifyClaim]) at time now: a claimed
// device is cleared; a device with no keys backs off; a failed server backs off once per
// response, unless it is the tracker's own server; a server leaves backoff as soon as one of its
// users answers (claimed or no_keys).
func (t *Tracker) Observe(now int64, c *Classification) {
	// Servers in the order first seen (which decides evictions when the tracker is full), with
	// sets beside them: a response may name thousands of servers.
	var answered, failed []ServerName
	answeredSet, failedSet := map[ServerName]bool{}, map[ServerName]bool{}
	for i := range c.Devices {
		o := &c.Devices[i]
		server := o.User.Server()
		switch o.Outcome {
		case OutcomeClaimed:
			delete(t.devices, deviceRef{o.User, o.Device})
		case OutcomeNoKeys:
			ref := deviceRef{o.User, o.Device}
			b := t.fail(t.devices[ref], now)
			if t.devices[ref] == nil {
				t.makeRoom(now)
			}
			t.devices[ref] = b
		case OutcomeServerFailed:
			if server != t.cfg.ServerName && !failedSet[server] {
				failedSet[server] = true
				failed = append(failed, server)
			}
			continue
		}
		if !answeredSet[server] {
			answeredSet[server] = true
			answered = append(answered, server)
		}
	}
	for _, s := range answered {
		delete(t.servers, s)
	}
	for _, s := range failed {
		if answeredSet[s] {
			continue
		}
		b := t.fail(t.servers[s], now)
		if t.servers[s] == nil {
			t.makeRoom(now)
		}
		t.servers[s] = b
	}
}

// makeRoom ensures there is room for one more entry.
func (t *Tracker) makeRoom(now int64) {
	if t.Len() < t.cfg.MaxEntries {
		return
	}
	t.prune(now)
	if t.Len() < t.cfg.MaxEntries {
		return
	}
	// Evict the entries due soonest, an eighth at a time so that a burst stays linear.
	type entry struct {
		retryAt int64
		server  bool
		key     string
		dev     deviceRef
	}
	all := make([]entry, 0, t.Len())
	for ref, b := range t.devices {
		all = append(all, entry{b.retryAt, false, string(ref.user) + "\x00" + string(ref.device), ref})
	}
	for s, b := range t.servers {
		all = append(all, entry{b.retryAt, true, string(s), deviceRef{}})
	}
	slices.SortFunc(all, func(a, b entry) int {
		if c := cmp.Compare(a.retryAt, b.retryAt); c != 0 {
			return c
		}
		if a.server != b.server {
			if a.server {
				return 1
			}
			return -1
		}
		return strings.Compare(a.key, b.key)
	})
	n := max(1, t.cfg.MaxEntries/8, len(all)-t.cfg.MaxEntries+1)
	for _, e := range all[:min(n, len(all))] {
		if e.server {
			delete(t.servers, ServerName(e.key))
		} else {
			delete(t.devices, e.dev)
		}
	}
}

// prune forgets entries that have been quiet long enough.
func (t *Tracker) prune(now int64) {
	for ref, b := range t.devices {
		if t.forgettable(b, now) {
			delete(t.devices, ref)
		}
	}
	for s, b := range t.servers {
		if t.forgettable(b, now) {
			delete(t.servers, s)
		}
	}
}

// Plan returns the claim request to send at time now for the devices that need sessions
// (wanted), leaving out devices in backoff and devices of servers in backoff; deferred holds
// those left out with the time at which each may be retried.
func (t *Tracker) Plan(now int64, wanted *ClaimRequest) (next *ClaimRequest, deferred *Deferred) {
	next = &ClaimRequest{Users: []UserClaim{}, TimeoutMS: wanted.TimeoutMS, Federation: true}
	deferred = &Deferred{}
	for _, u := range wanted.Users {
		var serverRetry int64
		serverBackedOff := false
		if s := u.User.Server(); s != t.cfg.ServerName {
			if b := t.servers[s]; b != nil && now < b.retryAt {
				serverRetry, serverBackedOff = b.retryAt, true
			}
		}
		var keep []DeviceClaim
		for _, d := range u.Devices {
			retry, backedOff := serverRetry, serverBackedOff
			if b := t.devices[deviceRef{u.User, d.Device}]; b != nil && now < b.retryAt {
				retry = b.retryAt
				if serverBackedOff {
					retry = max(serverRetry, b.retryAt)
				}
				backedOff = true
			}
			if backedOff {
				deferred.Devices = append(deferred.Devices, DeferredDevice{u.User, d.Device, retry})
				continue
			}
			keep = append(keep, d)
		}
		if len(keep) > 0 {
			next.Users = append(next.Users, UserClaim{u.User, keep})
		}
	}
	return next, deferred
}

// Deferred lists the devices a plan left out, in request order.
type Deferred struct {
	Devices []DeferredDevice
}

// DeferredDevice is a device left out of a plan and when it may be retried (milliseconds).
type DeferredDevice struct {
	User    UserID
	Device  DeviceID
	RetryAt int64
}

// AppendJSON appends {user: {device: retry_at_ms}}.
func (df *Deferred) AppendJSON(buf []byte) []byte {
	buf = append(buf, '{')
	for i, dd := range df.Devices {
		if i == 0 || df.Devices[i-1].User != dd.User {
			if i > 0 {
				buf = append(buf, "},"...)
			}
			buf = appendString(buf, string(dd.User))
			buf = append(buf, ":{"...)
		} else {
			buf = append(buf, ',')
		}
		buf = appendString(buf, string(dd.Device))
		buf = append(buf, ':')
		buf = appendInt(buf, dd.RetryAt)
	}
	if len(df.Devices) > 0 {
		buf = append(buf, '}')
	}
	return append(buf, '}')
}
