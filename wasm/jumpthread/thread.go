package main

import (
	"errors"
	"fmt"
	"math"
)

// Go's WebAssembly backend compiles every function with resume points (any function that calls
// or branches) into one shape:
//
//	loop $dispatch
//	  block $b[D-1] ... block $b[0]          ;; D blocks
//	    local.get $PC_B
//	    br_table <table>                     ;; PC_B value -> block depth t
//	  end                                    ;; $b[0]
//	  S(0): code of the basic blocks resumed at depth 0
//	  end                                    ;; $b[1]
//	  S(1) ...
//	  end                                    ;; $b[D-1]
//	  S(D-1)
//	end
//
// and every jump between basic blocks, forward or backward, is
//
//	i32.const K   local.set $PC_B   br $dispatch
//
// so that it passes through the jump table. Two rewrites keep the meaning exactly and remove most
// of those trips:
//
//   - A forward jump, from S(d) to S(t) with t > d, becomes a direct br to the end of $b[t],
//     which encloses S(d): execution continues at S(t), as the table would have sent it. The
//     i32.const and local.set stay (PC_B is written as before); only the br's label changes.
//   - At the head of the table, PC_B 0 (how every call enters the function) branches straight to
//     the end of $b[0], that is S(table[0]) when table[0] is 0, with a br_if instead of an
//     indirect jump.
//
// Backward jumps (loops) and resumption after a goroutine switch still go through the table.

// Stats counts what Thread found and changed.
type Stats struct {
	Functions  int // function bodies
	Dispatched int // of which with a dispatch loop in Go's shape
	Jumps      int // jumps through the dispatch loop
	Forward    int // of which forward, now direct
	Entries    int // dispatch loops given the PC_B 0 shortcut
	Already    int // dispatch loops that already had it (an input already threaded)
}

// Thread returns module with the rewrites above applied to every function body in Go's shape;
// other bodies and every other section are copied unchanged. It fails on a malformed module.
func Thread(module []byte) ([]byte, Stats, error) {
	var st Stats
	if len(module) < 8 || string(module[:4]) != "\x00asm" || string(module[4:8]) != "\x01\x00\x00\x00" {
		return nil, st, errors.New("not a WebAssembly 1.0 binary module")
	}
	out := append(make([]byte, 0, len(module)+len(module)/64), module[:8]...)
	r := reader{b: module, i: 8}
	for r.i < len(r.b) && r.err == nil {
		id := r.byte()
		size := r.u32()
		payload := r.bytes(int(size))
		if r.err != nil {
			break
		}
		if id != 10 { // not the code section
			out = append(out, id)
			out = appendU32(out, size)
			out = append(out, payload...)
			continue
		}
		sec, err := threadCode(payload, &st)
		if err != nil {
			return nil, st, fmt.Errorf("code section: %w", err)
		}
		out = append(out, id)
		out = appendU32(out, uint32(len(sec)))
		out = append(out, sec...)
	}
	if r.err != nil {
		return nil, st, r.err
	}
	return out, st, nil
}

func threadCode(payload []byte, st *Stats) ([]byte, error) {
	r := reader{b: payload}
	n := r.u32()
	sec := appendU32(make([]byte, 0, len(payload)+len(payload)/64), n)
	for f := uint32(0); f < n && r.err == nil; f++ {
		body := r.bytes(int(r.u32()))
		if r.err != nil {
			break
		}
		nb, err := threadBody(body, st)
		if err != nil {
			return nil, fmt.Errorf("function %d: %w", f, err)
		}
		sec = appendU32(sec, uint32(len(nb)))
		sec = append(sec, nb...)
	}
	if r.err == nil && r.i != len(r.b) {
		r.err = errors.New("bytes after the last function body")
	}
	return sec, r.err
}

// dispatchLoop describes a function's dispatch loop once found.
type dispatchLoop struct {
	index  int      // its place in the stack of open constructs
	blocks int      // D
	pcb    uint32   // the local holding PC_B
	table  []uint32 // br_table labels, the default last
}

func (l *dispatchLoop) target(k int64) int {
	if k >= 0 && k < int64(len(l.table)-1) {
		return int(l.table[k])
	}
	return int(l.table[len(l.table)-1])
}

type instr struct {
	op         byte
	start, end int
}

func threadBody(body []byte, st *Stats) ([]byte, error) {
	st.Functions++
	r := reader{b: body}
	for groups := r.u32(); groups > 0 && r.err == nil; groups-- { // local declarations
		r.u32()
		r.byte()
	}
	if r.err != nil {
		return nil, r.err
	}
	out := append(make([]byte, 0, len(body)+16), body[:r.i]...)
	var (
		open    []bool // the open constructs: whether each is one of the dispatch blocks
		loop    *dispatchLoop
		pending int  // dispatch blocks not yet opened
		section = -1 // S(section) is being read; -1 before the table
		prev    [3]instr
	)
	for r.i < len(body) {
		in := instr{op: body[r.i], start: r.i}
		r.i++
		r.immediates(in.op)
		if r.err != nil {
			return nil, r.err
		}
		in.end = r.i
		emitted := false
		switch in.op {
		case 0x02, 0x03, 0x04: // block, loop, if
			// Go's dispatch loop has the empty block type: a br to its head passes no values, as
			// a br to the end of a table block does not.
			if in.op == 0x03 && loop == nil && body[in.start+1] == 0x40 {
				if l := findDispatch(body, in.end); l != nil {
					l.index = len(open)
					loop, pending = l, l.blocks
					st.Dispatched++
				}
			}
			isDispatch := in.op == 0x02 && pending > 0 && loop != nil && len(open) > loop.index
			if isDispatch {
				pending--
			}
			open = append(open, isDispatch)
		case 0x0b: // end
			if len(open) == 0 {
				if r.i != len(body) {
					return nil, errors.New("end of the body before its last byte")
				}
				break
			}
			top := len(open) - 1
			if open[top] {
				section = loop.index + loop.blocks - top
			}
			if loop != nil && top == loop.index {
				loop, section = nil, -1 // out of the dispatch loop (Go emits one per function)
			}
			open = open[:top]
		case 0x20: // local.get: the table's index, or the shortcut already there
			if loop == nil || section >= 0 || len(open) != loop.index+loop.blocks+1 || in.end >= len(body) || body[in.end] != 0x0e {
				break
			}
			if prev[0].op == 0x20 && prev[1].op == 0x45 && prev[2].op == 0x0d && string(body[prev[2].start:prev[2].end]) == "\x0d\x00" {
				st.Already++ // local.get; i32.eqz; br_if 0 just before: already threaded
				break
			}
			if loop.target(0) == 0 {
				out = append(out, body[in.start:in.end]...)
				out = append(out, 0x45, 0x0d, 0x00) // i32.eqz; br_if 0
				st.Entries++
			}
		case 0x0c: // br
			if loop == nil || section < 0 || prev[2].op != 0x21 || prev[1].op != 0x41 {
				break
			}
			label, _ := (&reader{b: body, i: in.start + 1}).u32v()
			if len(open)-1-int(label) != loop.index {
				break
			}
			local, _ := (&reader{b: body, i: prev[2].start + 1}).u32v()
			if local != loop.pcb {
				break
			}
			k, _ := (&reader{b: body, i: prev[1].start + 1}).s64v()
			st.Jumps++
			if t := loop.target(k); t > section && t < loop.blocks {
				// $b[t], open at index loop.index+blocks-t, encloses S(section); S(t) follows its end
				out = append(out, 0x0c)
				out = appendU32(out, uint32(len(open)-1-(loop.index+loop.blocks-t)))
				emitted = true
				st.Forward++
			}
		}
		if !emitted {
			out = append(out, body[in.start:in.end]...)
		}
		prev[0], prev[1], prev[2] = prev[1], prev[2], in
	}
	if len(open) != 0 || len(body) == 0 || body[len(body)-1] != 0x0b {
		return nil, errors.New("unbalanced structure")
	}
	return out, nil
}

// findDispatch reports the dispatch loop whose body starts at b[i] (just after the loop opcode
// and its block type): D empty blocks, local.get, br_table; or one with the PC_B 0 shortcut.
func findDispatch(b []byte, i int) *dispatchLoop {
	r := reader{b: b, i: i}
	d := 0
	for r.i+1 < len(b) && b[r.i] == 0x02 && b[r.i+1] == 0x40 {
		d++
		r.i += 2
	}
	if d == 0 || r.i >= len(b) || b[r.i] != 0x20 {
		return nil
	}
	r.i++
	pcb := r.u32()
	if r.i+3 < len(b) && b[r.i] == 0x45 && b[r.i+1] == 0x0d && b[r.i+2] == 0x00 && b[r.i+3] == 0x20 {
		r.i += 4 // the shortcut of an earlier run: local.get; i32.eqz; br_if 0; local.get
		if r.u32() != pcb {
			return nil
		}
	}
	if r.err != nil || r.i >= len(b) || b[r.i] != 0x0e {
		return nil
	}
	r.i++
	n := r.u32()
	if r.err != nil || int(n) > len(b)-r.i {
		return nil
	}
	table := make([]uint32, n+1)
	for k := range table {
		table[k] = r.u32()
		if r.err != nil || int(table[k]) >= d {
			return nil // every label of Go's table is one of the blocks
		}
	}
	return &dispatchLoop{blocks: d, pcb: pcb, table: table}
}

// reader decodes the binary format, recording the first error instead of panicking.
type reader struct {
	b   []byte
	i   int
	err error
}

var errTruncated = errors.New("truncated module")

func (r *reader) fail(err error) {
	if r.err == nil {
		r.err = err
	}
	r.i = len(r.b)
}

func (r *reader) byte() byte {
	if r.i >= len(r.b) {
		r.fail(errTruncated)
		return 0
	}
	r.i++
	return r.b[r.i-1]
}

func (r *reader) bytes(n int) []byte {
	if n < 0 || n > len(r.b)-r.i {
		r.fail(errTruncated)
		return nil
	}
	r.i += n
	return r.b[r.i-n : r.i]
}

func (r *reader) u32() uint32 {
	v, err := r.u32v()
	if err != nil {
		r.fail(err)
	}
	return v
}

// leb reads an LEB128 integer of at most maxBytes bytes: its bits, and how many bits were read.
func (r *reader) leb(maxBytes int) (v uint64, bits int, err error) {
	for n := 0; n < maxBytes; n++ {
		if r.i >= len(r.b) {
			return 0, 0, errTruncated
		}
		c := r.b[r.i]
		r.i++
		v |= uint64(c&0x7f) << (7 * n)
		if c < 0x80 {
			return v, 7 * (n + 1), nil
		}
	}
	return 0, 0, errors.New("integer too long")
}

func (r *reader) u32v() (uint32, error) {
	v, _, err := r.leb(5)
	if err == nil && v > math.MaxUint32 {
		return 0, errors.New("integer too large")
	}
	return uint32(v), err
}

func (r *reader) s64v() (int64, error) {
	v, bits, err := r.leb(10)
	if err == nil && bits < 64 && v>>(bits-1)&1 != 0 {
		v |= ^uint64(0) << bits // sign-extend from the last byte's 0x40
	}
	return int64(v), err
}

func (r *reader) s64() {
	if _, err := r.s64v(); err != nil {
		r.fail(err)
	}
}

// immediates moves past the immediates of the instruction op (already read). It knows the
// instructions of WebAssembly 2.0 without SIMD, which is what Go emits.
func (r *reader) immediates(op byte) {
	switch {
	case op == 0x02 || op == 0x03 || op == 0x04: // block type: empty, a value type, or a type index
		if c := r.peek(); c == 0x40 || c >= 0x6f && c <= 0x7f {
			r.i++
		} else {
			r.s64()
		}
	case op == 0x0c || op == 0x0d || op == 0x10 || op >= 0x20 && op <= 0x26 || op == 0xd0 || op == 0xd2:
		r.u32()
	case op == 0x0e: // br_table
		n := r.u32()
		for k := uint64(0); k <= uint64(n) && r.err == nil; k++ {
			r.u32()
		}
	case op == 0x11: // call_indirect
		r.u32()
		r.u32()
	case op == 0x1c: // select t*
		r.bytes(int(r.u32()))
	case op >= 0x28 && op <= 0x3e: // loads and stores: align, offset
		r.u32()
		r.u32()
	case op == 0x3f || op == 0x40: // memory.size, memory.grow
		r.byte()
	case op == 0x41 || op == 0x42:
		r.s64()
	case op == 0x43:
		r.bytes(4)
	case op == 0x44:
		r.bytes(8)
	case op == 0xfc:
		switch sub := r.u32(); {
		case sub <= 7: // saturating truncations
		case sub == 8: // memory.init
			r.u32()
			r.byte()
		case sub == 9 || sub == 13 || sub >= 15 && sub <= 17:
			r.u32()
		case sub == 10: // memory.copy
			r.bytes(2)
		case sub == 11: // memory.fill
			r.byte()
		case sub == 12 || sub == 14:
			r.u32()
			r.u32()
		default:
			r.fail(fmt.Errorf("unknown instruction 0xfc %d", sub))
		}
	case op <= 0x01 || op == 0x05 || op == 0x0b || op == 0x0f || op == 0x1a || op == 0x1b ||
		op >= 0x45 && op <= 0xc4 || op == 0xd1:
	default:
		r.fail(fmt.Errorf("unknown instruction %#x", op))
	}
}

func (r *reader) peek() byte {
	if r.i >= len(r.b) {
		return 0
	}
	return r.b[r.i]
}

func appendU32(out []byte, v uint32) []byte {
	for v >= 0x80 {
		out = append(out, byte(v)|0x80)
		v >>= 7
	}
	return append(out, byte(v))
}
