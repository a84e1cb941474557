package keyclaimwasm

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
)

// Tracker is a client-side retry tracker (core.Tracker: backoff of devices without keys and of
// failing servers, planning of the next claim) living in one instance of the module, addressed by
// the handle keyclaim_tracker_new gave.
//
// A Tracker holds its instance until Close, outside the pool: NewTracker takes an idle instance
// out of the pool or creates one (about 6 ms), and Close gives it back to the pool if the pool has
// room. So open Trackers never make other calls wait, but each costs an instance's memory (4 to
// 8 MiB) on top of the pool's: always Close a Tracker. If its instance traps, the tracker's state
// is gone and every later call returns ErrTrackerLost. The methods are safe for concurrent use;
// they run one at a time.
type Tracker struct {
	m      *Module
	mu     sync.Mutex
	in     *instance // nil once closed or lost
	handle int32
	lost   bool
}

// NewTracker creates a tracker configured by config, {"server_name", "max_entries",
// "base_backoff_ms", "max_backoff_ms"} (all optional; empty config is the default one). A bad
// config is an *Error.
func (m *Module) NewTracker(ctx context.Context, config []byte) (*Tracker, error) {
	if len(config) > MaxInputBytes {
		return nil, tooLarge(len(config))
	}
	in, err := m.pin(ctx)
	if err != nil {
		return nil, err
	}
	env, err := in.call(ctx, in.trackerNew, 0, false, config)
	if err == nil {
		var res []byte
		if res, err = Unwrap(env); err == nil {
			var h struct{ Handle int32 }
			if err = json.Unmarshal(res, &h); err == nil && h.Handle <= 0 {
				err = fmt.Errorf("no handle in %s", env)
			}
			if err != nil {
				err = fmt.Errorf("keyclaimwasm: keyclaim_tracker_new: %w", err)
			} else {
				m.trackers.Add(1)
				return &Tracker{m: m, in: in, handle: h.Handle}, nil
			}
		}
	}
	m.release(in)
	return nil, err
}

// Invoke runs the tracker operation op, "plan" or "observe", on input and returns the module's
// envelope, byte for byte what (*core.Tracker).Invoke answers natively. The error is non-nil only
// when no envelope was obtained (see Module.Invoke), or ErrClosed, or ErrTrackerLost.
func (t *Tracker) Invoke(ctx context.Context, op string, input []byte) ([]byte, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case t.lost:
		return nil, ErrTrackerLost
	case t.in == nil:
		return nil, ErrClosed
	}
	select {
	case <-t.m.done:
		return nil, ErrClosed
	default:
	}
	fn := t.in.trackerPlan
	switch op {
	case "plan":
	case "observe":
		fn = t.in.trackerObserve
	default:
		return nil, &Error{Code: CodeUnknown, Message: fmt.Sprintf("unknown tracker operation %q", op)}
	}
	if len(input) > MaxInputBytes {
		return nil, tooLarge(len(input))
	}
	env, err := t.in.call(ctx, fn, t.handle, true, input)
	if err != nil && t.in.broken {
		t.m.trackers.Add(-1)
		t.m.release(t.in)
		t.in, t.lost = nil, true
		return nil, fmt.Errorf("%w: %w", ErrTrackerLost, err)
	}
	return env, err
}

// Plan returns the next claim request for the devices of the request in input that are not
// backed off, and those deferred with their retry times: input {"now_ms": N, "request": {...}},
// result {"deferred": {...}, "one_time_keys": {...}}.
func (t *Tracker) Plan(ctx context.Context, input []byte) ([]byte, error) {
	env, err := t.Invoke(ctx, "plan", input)
	if err != nil {
		return nil, err
	}
	return Unwrap(env)
}

// Observe records the claim response in input, {"now_ms": N, "request": {...}, "body": "..."},
// and returns its classification with the number of entries tracked, {"outcomes": {...},
// "tracked": N}.
func (t *Tracker) Observe(ctx context.Context, input []byte) ([]byte, error) {
	env, err := t.Invoke(ctx, "observe", input)
	if err != nil {
		return nil, err
	}
	return Unwrap(env)
}

// Close frees the tracker and gives its instance back to the pool. Closing twice, or closing a
// lost tracker, does nothing.
func (t *Tracker) Close(ctx context.Context) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	in := t.in
	if in == nil {
		return nil
	}
	t.in = nil
	t.m.trackers.Add(-1)
	defer t.m.release(in)
	select {
	case <-t.m.done:
		return nil
	default:
	}
	in.stack[0] = uint64(uint32(t.handle))
	if err := in.invoke(ctx, in.trackerFree); err != nil {
		return err
	}
	if rc := int32(in.stack[0]); rc != 0 {
		return fmt.Errorf("keyclaimwasm: keyclaim_tracker_free(%d) = %d: unknown handle", t.handle, rc)
	}
	return nil
}
