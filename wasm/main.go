//go:build wasip1

// Command wasm is the keyclaim engine ([github.com/keyclaim/keyclaim/core]) as one WebAssembly
// module: a WASI preview 1 reactor whose exports take JSON bytes and return the JSON envelope of
// core.Invoke, so that every host (wazero in Go, wasmtime in Python and Rust, Node.js, browsers)
// runs the very code the native engine runs and gets byte-identical answers.
//
// Build it (the Makefile's wasm target runs exactly this):
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -trimpath -ldflags='-s -w' -o dist/keyclaim.wasm ./wasm
//
// The contract for hosts, the call sequence, every operation's input and output, errors,
// limits and the WASI imports a host must provide, is bindings/ABI.md. In short:
//
//	_initialize()                                  once, before anything else (from -buildmode=c-shared)
//	keyclaim_abi_version() i32                     1
//	keyclaim_alloc(len i32) ptr i32                an input buffer; 0 if len > 64 MiB
//	keyclaim_free(ptr i32)                         releases a buffer from alloc or from an operation
//	keyclaim_<operation>(ptr i32, len i32) i64     out_ptr<<32 | out_len of the JSON envelope
//	keyclaim_tracker_new(ptr i32, len i32) i64     {"result":{"handle":N}}
//	keyclaim_tracker_plan(h i32, ptr i32, len i32) i64
//	keyclaim_tracker_observe(h i32, ptr i32, len i32) i64
//	keyclaim_tracker_free(h i32) i32               0 ok, 1 unknown handle
//
// The module never traps on bad input: unknown pointers, lengths beyond a buffer and unknown
// tracker handles are answered with an M_UNKNOWN error envelope, and a panic inside any export
// is recovered into one.
package main

import (
	"errors"
	"fmt"
	"runtime"
	"unsafe"

	"github.com/keyclaim/keyclaim/core"
)

// abiVersion is the version of the contract in bindings/ABI.md. It changes on any incompatible
// change of the exports or of the envelope; adding an operation does not change it.
const abiVersion = 1

// maxInput is the largest buffer keyclaim_alloc hands out (64 MiB). Claim bodies are limited to
// 4 MiB by default (core.DefaultLimits), so this leaves room for large select_keys inventories
// and remote answers while keeping one call from exhausting the instance's memory.
const maxInput = 64 << 20

// live holds every buffer the host may currently use, keyed by the address of its first byte:
// being in the map keeps a buffer reachable (Go's garbage collector does not move objects, so the
// address stays valid), and looking an address up validates what the host passes back, without
// ever converting a host integer into a pointer.
var live = map[uint32][]byte{}

// trackers holds the retry trackers created by keyclaim_tracker_new, by handle.
var trackers = map[int32]*core.Tracker{}

// lastHandle is the last tracker handle given out. Handles count up from 1 and are not reused
// until the counter wraps, so a stale handle is reported rather than reaching a new tracker.
var lastHandle int32

// address returns the linear-memory address of b's first byte. b must have capacity >= 1.
func address(b []byte) uint32 {
	return uint32(uintptr(unsafe.Pointer(unsafe.SliceData(b[:cap(b)]))))
}

// keep registers b in live and returns its address. A buffer whose address is already taken (an
// output that shares memory with its input, or an empty slice) is copied first, so that every
// address in live names exactly one buffer.
func keep(b []byte) uint32 {
	if cap(b) > 0 {
		if _, taken := live[address(b)]; !taken {
			p := address(b)
			live[p] = b
			return p
		}
	}
	c := make([]byte, len(b), max(len(b), 1))
	copy(c, b)
	p := address(c)
	live[p] = c
	return p
}

// pack registers out and returns the export result out_ptr<<32 | out_len.
func pack(out []byte) uint64 { return uint64(keep(out))<<32 | uint64(len(out)) }

// fail returns an error envelope with code and message, packed.
func fail(code core.Code, format string, args ...any) uint64 {
	return pack((&core.Error{Code: code, Message: fmt.Sprintf(format, args...)}).AppendJSON(nil))
}

// input returns the first size bytes of the buffer at ptr. ptr 0 with size 0 is the empty input.
func input(ptr, size uint32) ([]byte, error) {
	if ptr == 0 && size == 0 {
		return nil, nil
	}
	b, ok := live[ptr]
	switch {
	case !ok:
		return nil, fmt.Errorf("invalid input buffer: pointer %d was not returned by keyclaim_alloc or was already freed", ptr)
	case uint32(len(b)) < size:
		return nil, fmt.Errorf("invalid input length: %d bytes exceed the %d-byte buffer at pointer %d", size, len(b), ptr)
	}
	return b[:size], nil
}

// guard recovers a panic in an export into an M_UNKNOWN envelope stored in *res, then yields to
// the Go scheduler, so that the runtime's background work (GC workers) gets to run between calls
// even where a host's clocks are poor (WASM-NOTES 5.1). Only the operations yield: a yield costs
// about 3 µs on wazero, and alloc, free and the other small exports run next to an operation
// anyway (four yields per operation were 12 µs of a small call's ~40 µs). Use it as:
// defer guard(name, &res).
func guard(export string, res *uint64) {
	if r := recover(); r != nil {
		*res = fail(core.CodeUnknown, "internal error in %s: %v", export, r)
	}
	runtime.Gosched()
}

// invoke runs core.Invoke(op) on the input buffer and returns its envelope, unchanged, packed.
func invoke(op string, ptr, size uint32) (res uint64) {
	defer guard("keyclaim_"+op, &res)
	in, err := input(ptr, size)
	if err != nil {
		return fail(core.CodeUnknown, "%v", err)
	}
	return pack(core.Invoke(op, in))
}

// tracker returns the tracker of handle h.
func tracker(h int32) (*core.Tracker, error) {
	t, ok := trackers[h]
	if !ok {
		return nil, fmt.Errorf("unknown tracker handle %d: not returned by keyclaim_tracker_new or already freed", h)
	}
	return t, nil
}

// trackerStep runs the tracker operation op ("plan" or "observe") of handle h on the input buffer.
func trackerStep(op string, h int32, ptr, size uint32) (res uint64) {
	defer guard("keyclaim_tracker_"+op, &res)
	t, err := tracker(h)
	if err != nil {
		return fail(core.CodeUnknown, "%v", err)
	}
	in, err := input(ptr, size)
	if err != nil {
		return fail(core.CodeUnknown, "%v", err)
	}
	return pack(t.Invoke(op, in))
}

// keyclaimABIVersion returns the ABI version, 1. Hosts refuse a module whose version they do not
// know.
//
//go:wasmexport keyclaim_abi_version
func keyclaimABIVersion() int32 {
	return abiVersion
}

// keyclaimAlloc returns the address of a new buffer of size bytes, owned by the host until it
// passes the address to keyclaim_free. It returns 0 when size exceeds 64 MiB (maxInput); as an
// i32, a "negative" size is a size above 2 GiB and is refused the same way.
//
//go:wasmexport keyclaim_alloc
func keyclaimAlloc(size uint32) (ptr uint32) {
	defer func() {
		if recover() != nil {
			ptr = 0
		}
	}()
	if size > maxInput {
		return 0
	}
	return keep(make([]byte, size))
}

// keyclaimFree releases a buffer returned by keyclaim_alloc or by an operation (out_ptr). Freeing
// an address that is not live (already freed, or never handed out) does nothing.
//
//go:wasmexport keyclaim_free
func keyclaimFree(ptr uint32) {
	delete(live, ptr)
}

// keyclaimParseClaim is core.Invoke("parse_claim").
//
//go:wasmexport keyclaim_parse_claim
func keyclaimParseClaim(ptr, size uint32) uint64 { return invoke("parse_claim", ptr, size) }

// keyclaimPlanFanout is core.Invoke("plan_fanout").
//
//go:wasmexport keyclaim_plan_fanout
func keyclaimPlanFanout(ptr, size uint32) uint64 { return invoke("plan_fanout", ptr, size) }

// keyclaimSelectKeys is core.Invoke("select_keys").
//
//go:wasmexport keyclaim_select_keys
func keyclaimSelectKeys(ptr, size uint32) uint64 { return invoke("select_keys", ptr, size) }

// keyclaimCompleteClient is core.Invoke("complete_client").
//
//go:wasmexport keyclaim_complete_client
func keyclaimCompleteClient(ptr, size uint32) uint64 { return invoke("complete_client", ptr, size) }

// keyclaimCompleteFederation is core.Invoke("complete_federation").
//
//go:wasmexport keyclaim_complete_federation
func keyclaimCompleteFederation(ptr, size uint32) uint64 {
	return invoke("complete_federation", ptr, size)
}

// keyclaimClassifyClaim is core.Invoke("classify_claim").
//
//go:wasmexport keyclaim_classify_claim
func keyclaimClassifyClaim(ptr, size uint32) uint64 { return invoke("classify_claim", ptr, size) }

// keyclaimCompleteUpstream is core.Invoke("complete_upstream"): proxy mode, completing an
// existing homeserver's answer to a client claim.
//
//go:wasmexport keyclaim_complete_upstream
func keyclaimCompleteUpstream(ptr, size uint32) uint64 { return invoke("complete_upstream", ptr, size) }

// keyclaimTrackerRun is core.Invoke("tracker_run"): a fresh tracker driven through a list of
// steps in one call.
//
//go:wasmexport keyclaim_tracker_run
func keyclaimTrackerRun(ptr, size uint32) uint64 { return invoke("tracker_run", ptr, size) }

// keyclaimTrackerNew creates a retry tracker configured by the input (core.NewTrackerJSON; an
// empty input is the default configuration) and answers {"result":{"handle":N}}, N >= 1. The
// tracker lives until keyclaim_tracker_free.
//
//go:wasmexport keyclaim_tracker_new
func keyclaimTrackerNew(ptr, size uint32) (res uint64) {
	defer guard("keyclaim_tracker_new", &res)
	in, err := input(ptr, size)
	if err != nil {
		return fail(core.CodeUnknown, "%v", err)
	}
	t, err := core.NewTrackerJSON(in)
	if err != nil {
		var ce *core.Error
		if !errors.As(err, &ce) {
			ce = &core.Error{Code: core.CodeBadJSON, Message: err.Error()}
		}
		return pack(ce.AppendJSON(nil))
	}
	h := lastHandle
	for {
		h++
		if h <= 0 {
			h = 1
		}
		if _, used := trackers[h]; !used {
			break
		}
	}
	lastHandle = h
	trackers[h] = t
	out := fmt.Appendf(nil, `{"result":{"handle":%d}}`, h)
	return pack(out)
}

// keyclaimTrackerPlan is (*core.Tracker).Invoke("plan") on the tracker of handle h.
//
//go:wasmexport keyclaim_tracker_plan
func keyclaimTrackerPlan(h int32, ptr, size uint32) uint64 { return trackerStep("plan", h, ptr, size) }

// keyclaimTrackerObserve is (*core.Tracker).Invoke("observe") on the tracker of handle h.
//
//go:wasmexport keyclaim_tracker_observe
func keyclaimTrackerObserve(h int32, ptr, size uint32) uint64 {
	return trackerStep("observe", h, ptr, size)
}

// keyclaimTrackerFree forgets the tracker of handle h: it returns 0, or 1 if h is not a live
// handle.
//
//go:wasmexport keyclaim_tracker_free
func keyclaimTrackerFree(h int32) int32 {
	if _, ok := trackers[h]; !ok {
		return 1
	}
	delete(trackers, h)
	return 0
}

// main is required of a main package but never runs: a c-shared (reactor) module has no _start.
func main() {}
