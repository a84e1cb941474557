// Package keyclaimwasm runs the keyclaim WebAssembly module (built from ./wasm, the claim engine
// of package core compiled for GOOS=wasip1) on wazero, the pure-Go WebAssembly runtime. It is the
// Go host of the contract in bindings/ABI.md: Go programs that can import core should call it
// directly; this package exists for hosts that want the plugin (hostserver's wasm switch, tools
// checking that the module and the native engine agree).
//
// A [Module] compiles the module once per process, keeps a pool of instances and hands each to
// one caller at a time (a wazero instance is not goroutine-safe, and the Go runtime inside is
// single-threaded). [Module.Invoke] returns the raw JSON envelope of an operation; the typed
// helpers ([Module.ParseClaim], ...) return the "result" bytes or an [*Error]. A [Tracker] is a
// retry tracker living in one instance.
//
//	m, err := keyclaimwasm.New(ctx, keyclaimwasm.Config{})
//	...
//	defer m.Close(ctx)
//	result, err := m.ParseClaim(ctx, []byte(`{"body":"{\"one_time_keys\":{}}"}`))
package keyclaimwasm

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"

	"github.com/keyclaim/keyclaim/bindings/go/internal/embedded"
)

// ABIVersion is the version of bindings/ABI.md this package speaks; New refuses a module that
// reports another.
const ABIVersion = 1

// MaxInputBytes is the largest input the module accepts (keyclaim_alloc returns 0 above it).
const MaxInputBytes = 64 << 20

// Config configures a Module. The zero value loads the embedded module with the defaults below.
type Config struct {
	// Wasm is the module binary. When nil, WasmPath is read; when both are empty, the module
	// embedded at build time is used (ErrNotEmbedded if there is none).
	Wasm []byte
	// WasmPath is a file holding the module binary, such as dist/keyclaim.wasm.
	WasmPath string

	// PoolSize is the most instances alive at once, each serving one call at a time. Instances
	// are created on first need. Default runtime.GOMAXPROCS(0).
	PoolSize int
	// MaxMemoryMiB caps the linear memory of every instance (WebAssembly memory never shrinks;
	// a call that needs more traps and its instance is discarded). Default 256.
	MaxMemoryMiB int
	// RecycleMemoryMiB: an instance whose memory has grown past this is discarded after its call,
	// and a fresh one takes its place when next needed. Default 64.
	RecycleMemoryMiB int

	// CacheDir holds wazero's compilation cache, so that a new process skips the compilation
	// (about 1 s) of an unchanged module. Default os.UserCacheDir()/keyclaim/wazero; when that
	// cannot be determined, or with NoDiskCache, the cache lives in memory only.
	CacheDir string
	// NoDiskCache disables the on-disk compilation cache.
	NoDiskCache bool

	// Stderr receives what the module writes to file descriptors 1 and 2: nothing, unless the Go
	// runtime inside dies (its panic text). Default os.Stderr.
	Stderr io.Writer
}

// Module is the compiled module and its pool of instances. It is safe for concurrent use.
type Module struct {
	rt       wazero.Runtime
	compiled wazero.CompiledModule
	modCfg   wazero.ModuleConfig

	idle         chan *instance // pooled instances ready for a call
	slots        chan struct{}  // one token per pooled instance, idle or serving a call
	recycleBytes uint32
	trackers     atomic.Int64 // instances held by open Trackers, outside the pool

	done      chan struct{} // closed by Close
	closeOnce sync.Once
	created   atomic.Uint64
	recycled  atomic.Uint64
}

// processCaches holds one compilation cache per cache directory ("" for memory only) for the life
// of the process: every Runtime sharing one reuses the code compiled by the first, so the module
// is compiled once per process however many Modules are created.
var processCaches struct {
	sync.Mutex
	byDir map[string]wazero.CompilationCache
}

func compilationCache(dir string) (wazero.CompilationCache, error) {
	processCaches.Lock()
	defer processCaches.Unlock()
	if c, ok := processCaches.byDir[dir]; ok {
		return c, nil
	}
	var c wazero.CompilationCache
	if dir == "" {
		c = wazero.NewCompilationCache()
	} else {
		var err error
		if c, err = wazero.NewCompilationCacheWithDir(dir); err != nil {
			return nil, fmt.Errorf("keyclaimwasm: compilation cache %s: %w", dir, err)
		}
	}
	if processCaches.byDir == nil {
		processCaches.byDir = map[string]wazero.CompilationCache{}
	}
	processCaches.byDir[dir] = c
	return c, nil
}

// withDefaults validates cfg and fills its zero fields.
func (cfg Config) withDefaults() (Config, error) {
	if cfg.PoolSize < 0 || cfg.MaxMemoryMiB < 0 || cfg.RecycleMemoryMiB < 0 {
		return cfg, errors.New("keyclaimwasm: PoolSize, MaxMemoryMiB and RecycleMemoryMiB must not be negative")
	}
	if cfg.PoolSize == 0 {
		cfg.PoolSize = runtime.GOMAXPROCS(0)
	}
	if cfg.MaxMemoryMiB == 0 {
		cfg.MaxMemoryMiB = 256
	}
	if cfg.MaxMemoryMiB > 4096 {
		return cfg, fmt.Errorf("keyclaimwasm: MaxMemoryMiB %d exceeds the 4096 MiB of a 32-bit memory", cfg.MaxMemoryMiB)
	}
	if cfg.RecycleMemoryMiB == 0 {
		cfg.RecycleMemoryMiB = 64
	}
	if cfg.Stderr == nil {
		cfg.Stderr = os.Stderr
	}
	if cfg.NoDiskCache {
		cfg.CacheDir = ""
	} else if cfg.CacheDir == "" {
		if dir, err := os.UserCacheDir(); err == nil {
			cfg.CacheDir = filepath.Join(dir, "keyclaim", "wazero")
		}
	}
	return cfg, nil
}

// binary returns the module binary cfg names.
func (cfg Config) binary() ([]byte, error) {
	switch {
	case cfg.Wasm != nil:
		return cfg.Wasm, nil
	case cfg.WasmPath != "":
		b, err := os.ReadFile(cfg.WasmPath)
		if err != nil {
			return nil, fmt.Errorf("keyclaimwasm: %w", err)
		}
		return b, nil
	}
	b, ok := embedded.Wasm()
	if !ok {
		return nil, ErrNotEmbedded
	}
	return b, nil
}

// New compiles the module, instantiates one instance to check its ABI version, and returns the
// Module. Compiled code is shared by every Module of the process with the same cache directory
// while any of them is open, and kept on disk across processes, so only the first New of an
// unchanged module pays the full compilation (about 1 s).
func New(ctx context.Context, cfg Config) (*Module, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	bin, err := cfg.binary()
	if err != nil {
		return nil, err
	}
	cache, err := compilationCache(cfg.CacheDir)
	if err != nil {
		return nil, err
	}
	// NewRuntimeConfig picks wazero's compiler where it has one (amd64, arm64), else the
	// interpreter. Memory is counted in pages of 64 KiB.
	rtCfg := wazero.NewRuntimeConfig().WithCompilationCache(cache).WithMemoryLimitPages(uint32(cfg.MaxMemoryMiB) * 16)
	rt := wazero.NewRuntimeWithConfig(ctx, rtCfg)
	m := &Module{
		rt:           rt,
		idle:         make(chan *instance, cfg.PoolSize),
		slots:        make(chan struct{}, cfg.PoolSize),
		recycleBytes: uint32(min(cfg.RecycleMemoryMiB, 4095)) << 20,
		done:         make(chan struct{}),
		// Real clocks are not optional: under wazero's default fake clock the Go runtime's garbage
		// collector stalls and the heap grows without bound (WASM-NOTES 5.1).
		modCfg: wazero.NewModuleConfig().WithName("").WithStartFunctions("_initialize").
			WithSysNanotime().WithSysWalltime().WithSysNanosleep().
			WithRandSource(rand.Reader).WithStdout(cfg.Stderr).WithStderr(cfg.Stderr),
	}
	if _, err := wasi_snapshot_preview1.Instantiate(ctx, rt); err != nil {
		rt.Close(ctx)
		return nil, fmt.Errorf("keyclaimwasm: WASI: %w", err)
	}
	if m.compiled, err = rt.CompileModule(ctx, bin); err != nil {
		rt.Close(ctx)
		return nil, fmt.Errorf("keyclaimwasm: compiling the module: %w", err)
	}
	in, err := m.acquire(ctx) // fails on a wrong ABI version or missing export
	if err != nil {
		rt.Close(ctx)
		return nil, err
	}
	m.release(in)
	return m, nil
}

// Close closes the Module and every instance, including those held by open Trackers. Calls in
// flight fail; later calls return ErrClosed.
func (m *Module) Close(ctx context.Context) error {
	var err error
	m.closeOnce.Do(func() {
		close(m.done)
		if err = m.rt.Close(ctx); err != nil {
			err = fmt.Errorf("keyclaimwasm: %w", err)
		}
	})
	return err
}

// Stats is a snapshot of a Module's instances.
type Stats struct {
	Instances int    // instances in the pool, idle or serving a call (at most PoolSize)
	Idle      int    // pooled instances waiting for a call
	Trackers  int    // instances held by open Trackers, outside the pool
	Created   uint64 // instances created since New
	Recycled  uint64 // instances discarded after a trap or for their memory size
}

// Stats returns a snapshot of the instances.
func (m *Module) Stats() Stats {
	return Stats{Instances: len(m.slots), Idle: len(m.idle), Trackers: int(m.trackers.Load()),
		Created: m.created.Load(), Recycled: m.recycled.Load()}
}

// acquire returns an idle instance, creates one if the pool has room, or waits for one.
func (m *Module) acquire(ctx context.Context) (*instance, error) {
	select {
	case <-m.done:
		return nil, ErrClosed
	case in := <-m.idle:
		return in, nil
	default:
	}
	select {
	case <-m.done:
		return nil, ErrClosed
	case in := <-m.idle:
		return in, nil
	case m.slots <- struct{}{}:
		in, err := m.instantiate(ctx)
		if err != nil {
			<-m.slots
			return nil, err
		}
		in.pooled = true
		return in, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("keyclaimwasm: waiting for an instance: %w", ctx.Err())
	}
}

// pin returns an instance outside the pool, for a Tracker: an idle one leaves the pool (which may
// then create another), or a new one is created. Trackers never wait for the pool and never
// starve it, so a goroutine holding a Tracker can always make other calls.
func (m *Module) pin(ctx context.Context) (*instance, error) {
	select {
	case <-m.done:
		return nil, ErrClosed
	case in := <-m.idle:
		<-m.slots
		in.pooled = false
		return in, nil
	default:
	}
	return m.instantiate(ctx)
}

// release returns in to the pool, or discards it if it trapped, grew past RecycleMemoryMiB, or
// the Module is closed. An instance a Tracker held joins the pool if the pool has room.
func (m *Module) release(in *instance) {
	discard := func() {
		in.close()
		if in.pooled {
			<-m.slots
		}
	}
	select {
	case <-m.done:
		discard()
		return
	default:
	}
	if in.broken || in.mem.Size() > m.recycleBytes {
		m.recycled.Add(1)
		discard()
		return
	}
	if !in.pooled {
		select {
		case m.slots <- struct{}{}:
			in.pooled = true
		default:
			in.close() // the pool is full
			return
		}
	}
	m.idle <- in // never blocks: there are at most cap(m.idle) pooled instances
}

// Invoke runs operation op (one of [Operations]) on input and returns the module's JSON envelope:
// {"result": ...} or {"errcode": ..., "error": ...}, byte for byte what core.Invoke answers
// natively. The error is non-nil only when no envelope was obtained: an unknown op, an input
// above MaxInputBytes (an *Error with CodeTooLarge), a closed Module, ctx done while waiting for
// an instance, or a trap (the instance is then discarded). ctx bounds the wait for an instance
// and is passed to wazero; a call in progress runs to its end.
func (m *Module) Invoke(ctx context.Context, op string, input []byte) ([]byte, error) {
	idx, ok := opIndex(op)
	if !ok {
		return nil, &Error{Code: CodeUnknown, Message: fmt.Sprintf("unknown operation %q", op)}
	}
	if len(input) > MaxInputBytes {
		return nil, tooLarge(len(input))
	}
	in, err := m.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer m.release(in)
	return in.call(ctx, in.ops[idx], 0, false, input)
}

func tooLarge(n int) error {
	return &Error{Code: CodeTooLarge, Message: fmt.Sprintf("input of %d bytes exceeds the module's limit of %d bytes", n, MaxInputBytes)}
}
