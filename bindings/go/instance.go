package keyclaimwasm

import (
	"bytes"
	"context"
	"fmt"
	"slices"

	"github.com/tetratelabs/wazero/api"
)

// operations are the names of the operations, in the order of bindings/ABI.md; each is exported
// by the module as "keyclaim_" + name.
var operations = []string{
	"parse_claim", "plan_fanout", "select_keys", "complete_client", "complete_federation",
	"classify_claim", "tracker_run", "complete_upstream",
}

// Operations returns the names [Module.Invoke] accepts.
func Operations() []string { return slices.Clone(operations) }

func opIndex(op string) (int, bool) {
	i := slices.Index(operations, op)
	return i, i >= 0
}

// instance is one instantiated module. It serves one call at a time: whoever took it from the
// pool owns it until release.
type instance struct {
	mod api.Module
	mem api.Memory

	alloc, free                                          api.Function
	ops                                                  []api.Function // by index in operations
	trackerNew, trackerPlan, trackerObserve, trackerFree api.Function

	stack  []uint64 // reused by every CallWithStack: 3 slots, the most parameters of any export
	broken bool     // a call failed inside wazero: the instance must not be used again
	// inPtr, inCap: an input buffer kept from call to call (ABI section 5 lets a host reuse
	// one), so that an ordinary call costs two calls into the module (the operation and the
	// free of its output) rather than four. Inputs above keptInputMax get a buffer of their own.
	inPtr  uint32
	inCap  int
	pooled bool // the instance holds one of the pool's slots (false while a Tracker holds it)
}

// instantiate creates an instance, runs _initialize, and checks the ABI version and exports.
func (m *Module) instantiate(ctx context.Context) (*instance, error) {
	mod, err := m.rt.InstantiateModule(ctx, m.compiled, m.modCfg)
	if err != nil {
		return nil, fmt.Errorf("keyclaimwasm: instantiating the module: %w", err)
	}
	in := &instance{mod: mod, mem: mod.Memory(), stack: make([]uint64, 3)}
	fn := func(name string) api.Function {
		f := mod.ExportedFunction(name)
		if f == nil && err == nil {
			err = fmt.Errorf("keyclaimwasm: the module does not export %s", name)
		}
		return f
	}
	version := fn("keyclaim_abi_version")
	in.alloc, in.free = fn("keyclaim_alloc"), fn("keyclaim_free")
	for _, op := range operations {
		in.ops = append(in.ops, fn("keyclaim_"+op))
	}
	in.trackerNew, in.trackerPlan = fn("keyclaim_tracker_new"), fn("keyclaim_tracker_plan")
	in.trackerObserve, in.trackerFree = fn("keyclaim_tracker_observe"), fn("keyclaim_tracker_free")
	if err == nil && in.mem == nil {
		err = fmt.Errorf("keyclaimwasm: the module does not export its memory")
	}
	if err == nil {
		if err = version.CallWithStack(ctx, in.stack); err != nil {
			err = fmt.Errorf("keyclaimwasm: keyclaim_abi_version: %w", err)
		} else if v := int32(in.stack[0]); v != ABIVersion {
			err = fmt.Errorf("keyclaimwasm: the module speaks ABI version %d, this package speaks %d", v, ABIVersion)
		}
	}
	if err != nil {
		in.close()
		return nil, err
	}
	m.created.Add(1)
	return in, nil
}

func (in *instance) close() { _ = in.mod.Close(context.Background()) }

// invoke calls fn with the stack as set up, marking the instance broken if wazero fails.
func (in *instance) invoke(ctx context.Context, fn api.Function) error {
	if err := fn.CallWithStack(ctx, in.stack); err != nil {
		in.broken = true
		return fmt.Errorf("keyclaimwasm: %s trapped (instance discarded): %w", exportName(fn), err)
	}
	return nil
}

// exportName returns the name fn is exported as (the module carries no name section).
func exportName(fn api.Function) string {
	if names := fn.Definition().ExportNames(); len(names) > 0 {
		return names[0]
	}
	return fn.Definition().Name()
}

// call copies input into the instance, calls fn(ptr, len), or fn(handle, ptr, len) when
// withHandle, and returns a copy of the envelope it answers. Both buffers are freed.
func (in *instance) call(ctx context.Context, fn api.Function, handle int32, withHandle bool, input []byte) ([]byte, error) {
	var ptr uint32 // ptr 0 with length 0 is the empty input: no buffer needed
	var own bool   // ptr is a buffer for this call alone, freed at its end
	if len(input) > 0 {
		if len(input) <= in.inCap {
			ptr = in.inPtr
		} else {
			size := len(input)
			keep := size <= keptInputMax
			if keep {
				size = max(size, keptInputMin)
				if err := in.freeBuffer(ctx, in.inPtr); err != nil { // the kept buffer is too small
					return nil, err
				}
				in.inPtr, in.inCap = 0, 0
			}
			in.stack[0] = uint64(size)
			if err := in.invoke(ctx, in.alloc); err != nil {
				return nil, err
			}
			if ptr = uint32(in.stack[0]); ptr == 0 {
				return nil, tooLarge(len(input))
			}
			if keep {
				in.inPtr, in.inCap = ptr, size
			} else {
				own = true
			}
		}
		if !in.mem.Write(ptr, input) {
			in.broken = true
			return nil, fmt.Errorf("keyclaimwasm: keyclaim_alloc returned %d, outside memory", ptr)
		}
	}
	args := in.stack[:0]
	if withHandle {
		args = append(args, uint64(uint32(handle)))
	}
	_ = append(args, uint64(ptr), uint64(len(input)))
	if err := in.invoke(ctx, fn); err != nil {
		return nil, err
	}
	// The result is an i64 read as unsigned: out_ptr in the high 32 bits, out_len in the low.
	res := in.stack[0]
	outPtr, outLen := uint32(res>>32), uint32(res)
	// Read through the memory as it is now: the call may have grown it.
	view, ok := in.mem.Read(outPtr, outLen)
	if !ok {
		in.broken = true
		return nil, fmt.Errorf("keyclaimwasm: %s answered %d bytes at %d, outside memory", exportName(fn), outLen, outPtr)
	}
	out := bytes.Clone(view) // the view aliases guest memory, which the next call reuses
	if err := in.freeBuffer(ctx, outPtr); err != nil {
		return nil, err
	}
	if own {
		if err := in.freeBuffer(ctx, ptr); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// The input buffer an instance keeps: at least keptInputMin bytes, and none for inputs above
// keptInputMax (a large input's buffer is freed after its call, so that one large call does not
// pin its size in every instance).
const (
	keptInputMin = 4 << 10
	keptInputMax = 256 << 10
)

// freeBuffer passes p to keyclaim_free; 0 is no buffer.
func (in *instance) freeBuffer(ctx context.Context, p uint32) error {
	if p == 0 {
		return nil
	}
	in.stack[0] = uint64(p)
	return in.invoke(ctx, in.free)
}
