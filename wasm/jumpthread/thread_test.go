package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
)

// buildProg compiles testdata/prog with Go's wasm backend (wasip1, a command).
func buildProg(t testing.TB) []byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), "prog.wasm")
	cmd := exec.Command("go", "build", "-o", out, "./testdata/prog")
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	wasm, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return wasm
}

// run runs a wasip1 command on wazero (real clocks: the Go runtime inside needs them) and
// returns what it printed.
func run(t *testing.T, wasm []byte) string {
	t.Helper()
	ctx := context.Background()
	rt := wazero.NewRuntime(ctx)
	defer rt.Close(ctx)
	wasi_snapshot_preview1.MustInstantiate(ctx, rt)
	var stdout, stderr bytes.Buffer
	cfg := wazero.NewModuleConfig().WithStdout(&stdout).WithStderr(&stderr).
		WithSysNanotime().WithSysWalltime().WithSysNanosleep().WithArgs("prog")
	if _, err := rt.InstantiateWithConfig(ctx, wasm, cfg); err != nil {
		t.Fatalf("run: %v\n%s", err, stderr.String())
	}
	return stdout.String()
}

func TestThreadKeepsBehaviour(t *testing.T) {
	orig := buildProg(t)
	threaded, st, err := Thread(orig)
	if err != nil {
		t.Fatal(err)
	}
	// Go's runtime alone has hundreds of functions in the dispatch shape; if none is found, Go
	// changed its code generation and the pass has silently become a no-op.
	if st.Dispatched < 100 || st.Forward < 1000 || st.Entries < 100 || st.Already != 0 {
		t.Fatalf("found too little to rewrite: %+v", st)
	}
	if st.Forward > st.Jumps || st.Entries > st.Dispatched || st.Dispatched > st.Functions {
		t.Fatalf("inconsistent counts: %+v", st)
	}
	want, got := run(t, orig), run(t, threaded)
	if got != want {
		t.Fatalf("the threaded module prints\n%s\nthe original\n%s", got, want)
	}
	if len(want) < 500 {
		t.Fatalf("the program printed too little to compare:\n%s", want)
	}
}

func TestThreadIsIdempotent(t *testing.T) {
	once, _, err := Thread(buildProg(t))
	if err != nil {
		t.Fatal(err)
	}
	twice, st, err := Thread(once)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(once, twice) {
		t.Fatalf("a second run changed the module: %+v", st)
	}
	if st.Forward != 0 || st.Entries != 0 || st.Already == 0 {
		t.Fatalf("a second run found work: %+v", st)
	}
}

func TestThreadRejectsMalformed(t *testing.T) {
	orig := buildProg(t)
	for _, tc := range []struct {
		name string
		in   []byte
	}{
		{"empty", nil},
		{"not wasm", []byte("hello, world")},
		{"truncated header", orig[:6]},
		{"truncated section", orig[:len(orig)/2]},
		{"wrong version", append([]byte("\x00asm\x02\x00\x00\x00"), orig[8:]...)},
	} {
		if _, _, err := Thread(tc.in); err == nil {
			t.Errorf("%s: no error", tc.name)
		}
	}
}

// FuzzThread: on any input Thread returns an error or a module that a second run leaves as it is;
// it never panics.
func FuzzThread(f *testing.F) {
	f.Add([]byte("\x00asm\x01\x00\x00\x00"))
	// a code section with one function: loop, 2 blocks, local.get 0, br_table [0 1] 1, end,
	// S(0): i32.const 1, local.set 0, br 1 (to the loop: a forward jump), end, S(1): end end
	f.Add([]byte("\x00asm\x01\x00\x00\x00\x0a\x16\x01\x14\x00\x03\x40\x02\x40\x02\x40\x20\x00\x0e\x02\x00\x01\x01\x0b\x41\x01\x21\x00\x0c\x01\x0b\x0b\x0b"))
	f.Fuzz(func(t *testing.T, in []byte) {
		out, _, err := Thread(in)
		if err != nil {
			return
		}
		again, _, err := Thread(out)
		if err != nil {
			t.Fatalf("the output of a successful run fails: %v", err)
		}
		if !bytes.Equal(out, again) {
			t.Fatalf("not idempotent on %x", in)
		}
	})
}
