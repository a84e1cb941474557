package keyclaimwasm

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tetratelabs/wazero"

	"github.com/keyclaim/keyclaim/bindings/go/internal/embedded"
)

// The benchmarks put native core and the module side by side on the same inputs, and measure
// what a host pays besides: compilation, instantiation, size, memory. BENCHMARKS.md at the
// repository root records a run and the commands.

const (
	local  = "example.org"
	remote = "remote.example"
)

// Realistic key material: a signed_curve25519 key object as clients upload it.
const (
	keyB64 = "zKbLg+NrIjpnagy+pIY6uPL4ZwEG2v+8F9lmgsnlZzs"
	sigB64 = "FLWxXqGbwrb8SM3Y795eB6OA8bwBcoMZFXBqnTn58AYWZSqiD45tlBVcDa2L7RwdKXebW/VzDlnfVJ+9jok1Bw"
)

// device names device d of the benchmark: 10 devices per user.
func device(server string, d int) (user, dev string) {
	return fmt.Sprintf("@user%05d:%s", d/10, server), fmt.Sprintf("DEVICE%02d", d%10)
}

// claimRequest returns a claim request object for n devices on server.
func claimRequest(n int, servers ...string) string {
	var b strings.Builder
	b.WriteString(`{"one_time_keys":{`)
	for d := 0; d < n; d++ {
		user, dev := device(servers[d/10%len(servers)], d)
		if d%10 == 0 {
			if d > 0 {
				b.WriteString("},")
			}
			fmt.Fprintf(&b, "%q:{", user)
		} else {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `%q:"signed_curve25519"`, dev)
	}
	if n > 0 {
		b.WriteByte('}')
	}
	b.WriteString(`},"timeout":10000}`)
	return b.String()
}

// claimedKeys returns {user: {device: {key_id: signed key}}} for n devices on server.
func claimedKeys(n int, server string) string {
	var b strings.Builder
	b.WriteByte('{')
	for d := 0; d < n; d++ {
		user, dev := device(server, d)
		if d%10 == 0 {
			if d > 0 {
				b.WriteString("},")
			}
			fmt.Fprintf(&b, "%q:{", user)
		} else {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `%q:{"signed_curve25519:AAAA%04d":{"key":%q,"signatures":{%q:{"ed25519:%s":%q}}}}`,
			dev, d, keyB64, user, dev, sigB64)
	}
	if n > 0 {
		b.WriteByte('}')
	}
	b.WriteByte('}')
	return b.String()
}

func inventory(n int) string {
	var b strings.Builder
	b.WriteByte('{')
	for d := 0; d < n; d++ {
		user, dev := device(local, d)
		if d%10 == 0 {
			if d > 0 {
				b.WriteString("},")
			}
			fmt.Fprintf(&b, "%q:{", user)
		} else {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `%q:{"one_time_keys":[{"key_id":"signed_curve25519:A%d","batch":2,"key":%q},{"key_id":"signed_curve25519:B%d","batch":1,"key":%q}],"fallback_keys":[{"key_id":"signed_curve25519:F%d","key":%q,"used":false}]}`,
			dev, d, keyB64, d, keyB64, d, keyB64)
	}
	if n > 0 {
		b.WriteByte('}')
	}
	b.WriteByte('}')
	return b.String()
}

// benchInput returns the input of op for n devices.
func benchInput(op string, n int) []byte {
	q := strconv.Quote
	var s string
	answer := `{"failures":{},"one_time_keys":` + claimedKeys(n, remote) + `}`
	switch op {
	case "parse_claim":
		s = `{"body":` + q(claimRequest(n, local, remote)) + `}`
	case "plan_fanout":
		s = `{"server_name":"example.org","request":` + claimRequest(n, local, "a.example", "b.example", "c.example") + `}`
	case "select_keys":
		s = `{"inventory":` + inventory(n) + `,"requests":[` + claimRequest(n, local) + `]}`
	case "complete_client": // every device remote, answered by its server
		s = `{"server_name":"example.org","request":` + claimRequest(n, remote) +
			`,"remote":{"remote.example":{"status":200,"body":` + q(answer) + `}}}`
	case "complete_federation":
		s = `{"server_name":"example.org","request":` + claimRequest(n, local) + `,"local":` + claimedKeys(n, local) + `}`
	case "classify_claim":
		s = `{"request":` + claimRequest(n, remote) + `,"body":` + q(answer) + `}`
	case "complete_upstream":
		s = `{"server_name":"example.org","request":` + claimRequest(n, remote) + `,"body":` + q(answer) + `}`
	case "tracker_run":
		req := claimRequest(n, remote)
		s = `{"steps":[{"op":"observe","input":{"now_ms":0,"request":` + req + `,"body":"{}"}},` +
			`{"op":"plan","input":{"now_ms":1000,"request":` + req + `}}]}`
	default:
		panic(op)
	}
	return []byte(s)
}

func TestBenchInputsSucceed(t *testing.T) {
	for _, op := range Operations() {
		for _, n := range []int{1, 100} {
			if _, err := Unwrap(native(op, benchInput(op, n))); err != nil {
				t.Errorf("%s with %d devices: %v", op, n, err)
			}
		}
	}
}

// BenchmarkOps runs each operation natively and through the module for 1, 100 and 1,000
// devices (sub-benchmarks .../native and .../wasm, adjacent).
func BenchmarkOps(b *testing.B) {
	ctx := context.Background()
	m := newTestModule(b)
	for _, op := range Operations() {
		for _, n := range []int{1, 100, 1000} {
			input := benchInput(op, n)
			if want, got := native(op, input), must(m.Invoke(ctx, op, input)); !bytes.Equal(got, want) {
				b.Fatalf("%s: module and native differ", op)
			}
			b.Run(fmt.Sprintf("%s/devices=%d/native", op, n), func(b *testing.B) {
				b.SetBytes(int64(len(input)))
				for b.Loop() {
					native(op, input)
				}
			})
			b.Run(fmt.Sprintf("%s/devices=%d/wasm", op, n), func(b *testing.B) {
				b.SetBytes(int64(len(input)))
				for b.Loop() {
					if _, err := m.Invoke(ctx, op, input); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkInterleaved alternates a native call and a wasm call of the same input in one loop
// and reports both times and their ratio: on a busy machine the ratio of adjacent calls is more
// trustworthy than the ratio of two benchmarks run at different moments.
func BenchmarkInterleaved(b *testing.B) {
	ctx := context.Background()
	m := newTestModule(b)
	for _, op := range Operations() {
		for _, n := range []int{1, 100, 1000} {
			input := benchInput(op, n)
			b.Run(fmt.Sprintf("%s/devices=%d", op, n), func(b *testing.B) {
				var nat, wasm, natCPU, wasmCPU time.Duration
				for b.Loop() {
					c0, _ := cpuTime()
					t0 := time.Now()
					native(op, input)
					t1 := time.Now()
					c1, _ := cpuTime()
					if _, err := m.Invoke(ctx, op, input); err != nil {
						b.Fatal(err)
					}
					c2, _ := cpuTime()
					nat, wasm = nat+t1.Sub(t0), wasm+time.Since(t1)
					natCPU, wasmCPU = natCPU+c1-c0, wasmCPU+c2-c1
				}
				b.ReportMetric(float64(nat.Microseconds())/float64(b.N), "native-µs/op")
				b.ReportMetric(float64(wasm.Microseconds())/float64(b.N), "wasm-µs/op")
				b.ReportMetric(float64(wasm)/float64(nat), "wasm/native")
				if natCPU > 0 {
					b.ReportMetric(float64(natCPU.Microseconds())/float64(b.N), "native-cpu-µs/op")
					b.ReportMetric(float64(wasmCPU.Microseconds())/float64(b.N), "wasm-cpu-µs/op")
					b.ReportMetric(float64(wasmCPU)/float64(natCPU), "cpu-wasm/native")
				}
			})
		}
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

// BenchmarkCompile measures compiling the module in a new Runtime: cold (no cache) and from a
// warm on-disk cache opened anew, as a new process would.
func BenchmarkCompile(b *testing.B) {
	ctx := context.Background()
	wasm, _ := embedded.Wasm()
	compile := func(b *testing.B, cache wazero.CompilationCache) {
		cfg := wazero.NewRuntimeConfig()
		if cache != nil {
			cfg = cfg.WithCompilationCache(cache)
		}
		rt := wazero.NewRuntimeWithConfig(ctx, cfg)
		defer rt.Close(ctx)
		if _, err := rt.CompileModule(ctx, wasm); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("cold", func(b *testing.B) {
		c0, _ := cpuTime()
		for b.Loop() {
			compile(b, nil)
		}
		if c1, ok := cpuTime(); ok {
			b.ReportMetric(float64((c1-c0).Milliseconds())/float64(b.N), "cpu-ms/op")
		}
	})
	b.Run("disk-cache", func(b *testing.B) {
		dir := b.TempDir()
		warm, err := wazero.NewCompilationCacheWithDir(dir)
		if err != nil {
			b.Fatal(err)
		}
		compile(b, warm)
		warm.Close(ctx)
		for b.Loop() {
			cache, err := wazero.NewCompilationCacheWithDir(dir)
			if err != nil {
				b.Fatal(err)
			}
			compile(b, cache)
			cache.Close(ctx)
		}
	})
	b.Run("New-after-first", func(b *testing.B) { // what New costs once the process compiled it
		for b.Loop() {
			m, err := New(ctx, Config{PoolSize: 1})
			if err != nil {
				b.Fatal(err)
			}
			m.Close(ctx)
		}
	})
}

// BenchmarkInstantiate measures creating an instance and running _initialize, and reports the
// memory of a fresh instance and of one after a call of every operation.
func BenchmarkInstantiate(b *testing.B) {
	ctx := context.Background()
	m := newTestModule(b)
	var fresh uint32
	c0, _ := cpuTime()
	for b.Loop() {
		in, err := m.instantiate(ctx)
		if err != nil {
			b.Fatal(err)
		}
		fresh = in.mem.Size()
		in.close()
	}
	if c1, ok := cpuTime(); ok {
		b.ReportMetric(float64((c1-c0).Microseconds())/1000/float64(b.N), "cpu-ms/op")
	}
	in, err := m.instantiate(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer in.close()
	for i, op := range operations {
		if _, err := in.call(ctx, in.ops[i], 0, false, benchInput(op, 100)); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(fresh)/(1<<20), "MiB-fresh")
	b.ReportMetric(float64(in.mem.Size())/(1<<20), "MiB-idle-after-calls")
}

// BenchmarkModuleSize reports the module's size raw, gzip -9 and brotli -q 11 (brotli through
// the brotli command or Node.js's zlib, when either is installed).
func BenchmarkModuleSize(b *testing.B) {
	wasm, _ := embedded.Wasm()
	var gz bytes.Buffer
	for b.Loop() {
		gz.Reset()
		w, _ := gzip.NewWriterLevel(&gz, gzip.BestCompression)
		w.Write(wasm)
		w.Close()
	}
	b.ReportMetric(float64(len(wasm)), "bytes-raw")
	b.ReportMetric(float64(gz.Len()), "bytes-gzip")
	if n, ok := brotliSize(b, wasm); ok {
		b.ReportMetric(float64(n), "bytes-brotli")
	} else {
		b.Log("no brotli command and no node: brotli size not measured")
	}
}

func brotliSize(b *testing.B, data []byte) (int, bool) {
	var cmd *exec.Cmd
	if path, err := exec.LookPath("brotli"); err == nil {
		cmd = exec.Command(path, "-q", "11", "-c")
	} else if path, err := exec.LookPath("node"); err == nil {
		cmd = exec.Command(path, "-e", `const z=require("zlib");const c=[];process.stdin.on("data",d=>c.push(d)).on("end",()=>`+
			`process.stdout.write(String(z.brotliCompressSync(Buffer.concat(c),{params:{[z.constants.BROTLI_PARAM_QUALITY]:11}}).length)))`)
		cmd.Stdin = bytes.NewReader(data)
		out, err := cmd.Output()
		if err != nil {
			b.Log(err)
			return 0, false
		}
		n, err := strconv.Atoi(string(out))
		return n, err == nil
	} else {
		return 0, false
	}
	cmd.Stdin = bytes.NewReader(data)
	out, err := cmd.Output()
	if err != nil {
		b.Log(err)
		return 0, false
	}
	return len(out), true
}

// BenchmarkPool runs complete_client for 100 devices from GOMAXPROCS goroutines, natively and
// through a pool of GOMAXPROCS instances.
func BenchmarkPool(b *testing.B) {
	ctx := context.Background()
	input := benchInput("complete_client", 100)
	b.Run("native", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				native("complete_client", input)
			}
		})
	})
	b.Run("wasm", func(b *testing.B) {
		m, err := New(ctx, Config{PoolSize: runtime.GOMAXPROCS(0)})
		if err != nil {
			b.Fatal(err)
		}
		defer m.Close(ctx)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := m.Invoke(ctx, "complete_client", input); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.StopTimer()
		b.ReportMetric(float64(m.Stats().Created), "instances")
	})
}

// BenchmarkSoak makes b.N small calls on one instance and reports its memory fresh, after a
// warm-up of 10,000 calls (before) and after the b.N calls (run with -benchtime=1000000x).
func BenchmarkSoak(b *testing.B) {
	ctx := context.Background()
	m, err := New(ctx, Config{PoolSize: 1, RecycleMemoryMiB: 4095})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close(ctx)
	input := benchInput("parse_claim", 1)
	size := func() float64 {
		var s uint32
		withInstance(b, m, func(in *instance) { s = in.mem.Size() })
		return float64(s) / (1 << 20)
	}
	fresh := size()
	for range 10_000 { // warm up: the heap settles at its working size
		if _, err := m.Invoke(ctx, "parse_claim", input); err != nil {
			b.Fatal(err)
		}
	}
	before := size()
	for b.Loop() {
		if _, err := m.Invoke(ctx, "parse_claim", input); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(fresh, "MiB-fresh")
	b.ReportMetric(before, "MiB-before")
	b.ReportMetric(size(), "MiB-after")
	if st := m.Stats(); st.Created != 1 {
		b.Errorf("the soak needed %d instances", st.Created)
	}
}
