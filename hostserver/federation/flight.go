package federation

import (
	"context"
	"sync"
	"time"
)

// flight runs at most one call per key at a time; concurrent callers of the same key share its
// result. The call runs detached from the caller's cancellation, bounded by its own timeout, so
// a caller that gives up early (a short claim timeout) neither aborts a lookup that others wait
// for nor caches a failure that was only its own impatience; the call stores its result where
// later callers find it (a cache) before it returns.
type flight[V any] struct {
	mu    sync.Mutex
	calls map[string]*flightCall[V]
}

type flightCall[V any] struct {
	done chan struct{}
	val  V
}

// do runs fn for key unless a call for key is running, and waits for the result or ctx.
func (f *flight[V]) do(ctx context.Context, key string, timeout time.Duration, fn func(context.Context) V) (V, error) {
	f.mu.Lock()
	if f.calls == nil {
		f.calls = map[string]*flightCall[V]{}
	}
	c, ok := f.calls[key]
	if !ok {
		c = &flightCall[V]{done: make(chan struct{})}
		f.calls[key] = c
		go func() {
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
			defer cancel()
			c.val = fn(fctx)
			f.mu.Lock()
			delete(f.calls, key)
			f.mu.Unlock()
			close(c.done)
		}()
	}
	f.mu.Unlock()
	select {
	case <-c.done:
		return c.val, nil
	case <-ctx.Done():
		var zero V
		return zero, ctx.Err()
	}
}
