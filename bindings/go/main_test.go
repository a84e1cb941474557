package keyclaimwasm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"testing"

	"github.com/keyclaim/keyclaim/bindings/go/internal/embedded"
	"github.com/keyclaim/keyclaim/core"
)

// testModule is shared by the tests that need no special configuration: compiling the module
// takes about a second even from the in-memory cache's first fill.
var testModule *Module

func TestMain(m *testing.M) {
	if _, ok := embedded.Wasm(); !ok {
		fmt.Fprintln(os.Stderr, "FAIL: bindings/go/internal/embedded/keyclaim.wasm is missing: run `make wasm` "+
			"(it builds dist/keyclaim.wasm and copies it there); these tests run the real module")
		os.Exit(1)
	}
	ctx := context.Background()
	var err error
	if testModule, err = New(ctx, Config{PoolSize: 4}); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: New:", err)
		os.Exit(1)
	}
	code := m.Run()
	if err := testModule.Close(ctx); err != nil && code == 0 {
		fmt.Fprintln(os.Stderr, "FAIL: Close:", err)
		code = 1
	}
	os.Exit(code)
}

// withInstance runs f on an instance of m taken from its pool.
func withInstance(t testing.TB, m *Module, f func(in *instance)) {
	t.Helper()
	in, err := m.acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer m.release(in)
	f(in)
}

// freshInstance returns a new instance of m outside its pool, closed at the end of the test.
func freshInstance(t testing.TB, m *Module) *instance {
	t.Helper()
	in, err := m.instantiate(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(in.close)
	return in
}

// raw calls an operation export with a pointer and length of the test's choosing (handle < 0:
// an export without handle) and returns the envelope, failing the test on a trap.
func raw(t testing.TB, in *instance, fn string, handle int32, ptr, size uint32) []byte {
	t.Helper()
	f := in.mod.ExportedFunction(fn)
	args := []uint64{uint64(ptr), uint64(size)}
	if handle >= 0 {
		args = append([]uint64{uint64(uint32(handle))}, args...)
	}
	res, err := f.Call(context.Background(), args...)
	if err != nil {
		t.Fatalf("%s trapped: %v", fn, err)
	}
	p, n := uint32(res[0]>>32), uint32(res[0])
	view, ok := in.mem.Read(p, n)
	if !ok {
		t.Fatalf("%s answered %d bytes at %d, outside memory", fn, n, p)
	}
	out := bytes.Clone(view)
	if _, err := in.free.Call(context.Background(), uint64(p)); err != nil {
		t.Fatal(err)
	}
	return out
}

// native returns what core answers for op natively.
func native(op string, input []byte) []byte { return core.Invoke(op, input) }

// nativeTracker returns core.NewTrackerJSON(config) and, on failure, the error envelope the
// module answers for it.
func nativeTracker(config []byte) (*core.Tracker, []byte) {
	tr, err := core.NewTrackerJSON(config)
	if err != nil {
		var ce *core.Error
		if !errors.As(err, &ce) {
			ce = &core.Error{Code: core.CodeBadJSON, Message: err.Error()}
		}
		return nil, ce.AppendJSON(nil)
	}
	return tr, nil
}

// compact returns raw without insignificant white space.
func compact(t testing.TB, raw []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// mustEqual fails the test if the module's answer got differs from the native want.
func mustEqual(t testing.TB, what string, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		t.Errorf("%s: module and native differ\nmodule: %s\nnative: %s", what, got, want)
	}
}

// newTestModule is a Module with one instance, closed when the test or benchmark ends.
func newTestModule(tb testing.TB) *Module {
	tb.Helper()
	ctx := context.Background()
	m, err := New(ctx, Config{PoolSize: 1})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { m.Close(ctx) })
	return m
}
