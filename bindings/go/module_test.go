package keyclaimwasm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tetratelabs/wazero/api"

	"github.com/keyclaim/keyclaim/bindings/go/internal/embedded"
	"github.com/keyclaim/keyclaim/core"
)

// TestEmbeddedIsCurrent guards against testing a stale module: the embedded copy must be the
// module the last build produced.
func TestEmbeddedIsCurrent(t *testing.T) {
	dist, err := os.ReadFile(filepath.Join("..", "..", "dist", "keyclaim.wasm"))
	if errors.Is(err, os.ErrNotExist) {
		t.Skip("no dist/keyclaim.wasm to compare with")
	} else if err != nil {
		t.Fatal(err)
	}
	if emb, _ := embedded.Wasm(); !bytes.Equal(emb, dist) {
		t.Fatal("bindings/go/internal/embedded/keyclaim.wasm differs from dist/keyclaim.wasm: run `make wasm`")
	}
}

// TestOperationsMatchCore fails when core gains an operation the module does not export.
func TestOperationsMatchCore(t *testing.T) {
	if !slices.Equal(Operations(), core.Operations) {
		t.Fatalf("Operations() = %q, core.Operations = %q: add the export to wasm/ and bindings", Operations(), core.Operations)
	}
}

type example struct {
	Op    string          `json:"op"`
	Input json.RawMessage `json:"input"`
}

func loadExamples(t testing.TB) []example {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "examples.json"))
	if err != nil {
		t.Fatal(err)
	}
	var file struct{ Examples []example }
	if err := json.Unmarshal(data, &file); err != nil {
		t.Fatal(err)
	}
	return file.Examples
}

// TestABIExamples runs the examples of bindings/ABI.md on a fresh instance, requires each answer
// to be what core answers natively, and requires ABI.md to show each input and output verbatim.
func TestABIExamples(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "ABI.md"))
	if err != nil {
		t.Fatal(err)
	}
	in := freshInstance(t, testModule)
	var (
		handle  int32
		tracker *core.Tracker
		succeed = map[string]bool{}
		missing strings.Builder
	)
	for i, ex := range loadExamples(t) {
		input := []byte(nil)
		if ex.Input != nil {
			input = compact(t, ex.Input)
		}
		name := fmt.Sprintf("%d %s", i, ex.Op)
		var got, want []byte
		var err error
		switch ex.Op {
		case "tracker_new":
			got, err = in.call(context.Background(), in.trackerNew, 0, false, input)
			var res []byte
			if res, _ = Unwrap(got); res != nil {
				var h struct{ Handle int32 }
				if err := json.Unmarshal(res, &h); err != nil {
					t.Fatal(err)
				}
				handle = h.Handle
			}
			tr, errEnv := nativeTracker(input)
			if tr != nil {
				tracker, want = tr, got // the handle has no native counterpart
			} else {
				want = errEnv
			}
		case "tracker_plan", "tracker_observe":
			fn, op := in.trackerPlan, "plan"
			if ex.Op == "tracker_observe" {
				fn, op = in.trackerObserve, "observe"
			}
			got, err = in.call(context.Background(), fn, handle, true, input)
			if tracker != nil {
				want = tracker.Invoke(op, input)
			} else {
				want = got // after tracker_free: checked against ABI.md only
			}
		case "tracker_free":
			in.stack[0] = uint64(handle)
			if err := in.invoke(context.Background(), in.trackerFree); err != nil {
				t.Fatal(err)
			}
			if rc := in.stack[0]; rc != 0 {
				t.Errorf("%s: keyclaim_tracker_free(%d) = %d", name, handle, rc)
			}
			tracker = nil
			continue
		default:
			idx, ok := opIndex(ex.Op)
			if !ok {
				t.Fatalf("%s: unknown op", name)
			}
			got, err = in.call(context.Background(), in.ops[idx], 0, false, input)
			want = native(ex.Op, input)
		}
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		mustEqual(t, name, got, want)
		if bytes.HasPrefix(got, []byte(resultPrefix)) {
			succeed[ex.Op] = true
		}
		for _, b := range [][]byte{input, got} {
			if !bytes.Contains(doc, b) {
				fmt.Fprintf(&missing, "%s:\n%s\n", name, b)
			}
		}
	}
	for _, op := range append(Operations(), "tracker_new", "tracker_plan", "tracker_observe") {
		if !succeed[op] {
			t.Errorf("no example of a successful %s", op)
		}
	}
	if missing.Len() > 0 {
		t.Errorf("bindings/ABI.md does not show these inputs and outputs verbatim:\n%s", missing.String())
	}
}

// TestTypedHelpers checks that each helper runs its operation and unwraps the envelope.
func TestTypedHelpers(t *testing.T) {
	ctx := context.Background()
	m := testModule
	helpers := map[string]func(context.Context, []byte) ([]byte, error){
		"parse_claim": m.ParseClaim, "plan_fanout": m.PlanFanout, "select_keys": m.SelectKeys,
		"complete_client": m.CompleteClient, "complete_federation": m.CompleteFederation,
		"classify_claim": m.ClassifyClaim, "tracker_run": m.TrackerRun, "complete_upstream": m.CompleteUpstream,
	}
	for _, ex := range loadExamples(t) {
		helper, ok := helpers[ex.Op]
		if !ok {
			continue
		}
		input := compact(t, ex.Input)
		res, err := helper(ctx, input)
		want, wantErr := Unwrap(native(ex.Op, input))
		if !bytes.Equal(res, want) || fmt.Sprint(err) != fmt.Sprint(wantErr) {
			t.Errorf("%s: got %s, %v; want %s, %v", ex.Op, res, err, want, wantErr)
		}
	}
	_, err := m.ParseClaim(ctx, []byte(`{"body":"{}"}`))
	var e *Error
	if !errors.As(err, &e) || e.Code != CodeBadJSON || !errors.Is(err, &Error{Code: CodeBadJSON}) || errors.Is(err, &Error{Code: CodeNotJSON}) {
		t.Errorf("ParseClaim of a body without one_time_keys: %v, want an M_BAD_JSON *Error", err)
	}
}

func TestUnwrap(t *testing.T) {
	tests := []struct {
		name, envelope, result string
		err                    error
	}{
		{"result", `{"result":{"a":1}}`, `{"a":1}`, nil},
		{"error", `{"errcode":"M_NOT_JSON","error":"bad"}`, "", &Error{Code: CodeNotJSON}},
		{"not an envelope", `{"x":1}`, "", nil},
		{"not JSON", `nope`, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := Unwrap([]byte(tt.envelope))
			switch {
			case string(res) != tt.result:
				t.Errorf("result %s, want %s", res, tt.result)
			case tt.err != nil && !errors.Is(err, tt.err):
				t.Errorf("error %v, want %v", err, tt.err)
			case tt.result == "" && tt.err == nil && (err == nil || errors.As(err, new(*Error))):
				t.Errorf("error %v, want a malformed-envelope error", err)
			}
		})
	}
}

// TestBadPointers calls the exports with pointers, lengths and handles a correct host never
// passes: each must answer an M_UNKNOWN envelope that says what is wrong, never trap, and leave
// the instance working.
func TestBadPointers(t *testing.T) {
	in := freshInstance(t, testModule)
	ctx := context.Background()
	alloc := func(n uint32) uint32 {
		res, err := in.alloc.Call(ctx, uint64(n))
		if err != nil {
			t.Fatal(err)
		}
		return uint32(res[0])
	}
	buf := alloc(16)
	freed := alloc(16)
	if _, err := in.free.Call(ctx, uint64(freed)); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		fn       string
		handle   int32
		ptr, len uint32
		want     string
	}{
		{"never allocated", "keyclaim_parse_claim", -1, 12345, 2, "pointer 12345 was not returned by keyclaim_alloc"},
		{"freed", "keyclaim_plan_fanout", -1, freed, 2, fmt.Sprintf("pointer %d was not returned by keyclaim_alloc or was already freed", freed)},
		{"length beyond buffer", "keyclaim_select_keys", -1, buf, 17, fmt.Sprintf("17 bytes exceed the 16-byte buffer at pointer %d", buf)},
		{"huge length", "keyclaim_complete_client", -1, buf, 0xffffffff, "4294967295 bytes exceed"},
		{"zero pointer with length", "keyclaim_classify_claim", -1, 0, 1, "pointer 0 was not returned"},
		{"unknown handle", "keyclaim_tracker_plan", 7, buf, 2, "unknown tracker handle 7"},
		{"largest handle", "keyclaim_tracker_observe", 0x7fffffff, buf, 2, "unknown tracker handle 2147483647"},
		{"tracker_new bad pointer", "keyclaim_tracker_new", -1, 99, 1, "pointer 99 was not returned"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := raw(t, in, tt.fn, tt.handle, tt.ptr, tt.len)
			_, err := Unwrap(out)
			if !errors.Is(err, &Error{Code: CodeUnknown}) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("%s: %s, want M_UNKNOWN containing %q", tt.fn, out, tt.want)
			}
		})
	}
	t.Run("handle -1", func(t *testing.T) {
		res, err := in.trackerPlan.Call(ctx, uint64(0xffffffff), uint64(buf), 2)
		if err != nil {
			t.Fatal(err)
		}
		view, _ := in.mem.Read(uint32(res[0]>>32), uint32(res[0]))
		if !bytes.Contains(view, []byte("unknown tracker handle -1")) {
			t.Errorf("got %s", view)
		}
	})
	t.Run("alloc limits", func(t *testing.T) {
		for _, n := range []uint32{MaxInputBytes + 1, 0x80000000, 0xffffffff} {
			if p := alloc(n); p != 0 {
				t.Errorf("keyclaim_alloc(%d) = %d, want 0", n, p)
			}
		}
		if p := alloc(0); p == 0 {
			t.Error("keyclaim_alloc(0) = 0, want a buffer")
		}
	})
	t.Run("free unknown and twice", func(t *testing.T) {
		for _, p := range []uint32{0, 1, 12345, freed, freed} {
			if _, err := in.free.Call(ctx, uint64(p)); err != nil {
				t.Fatalf("keyclaim_free(%d): %v", p, err)
			}
		}
	})
	t.Run("tracker_free unknown", func(t *testing.T) {
		for _, h := range []uint64{0, 1, 0xffffffff} {
			res, err := in.trackerFree.Call(ctx, h)
			if err != nil || res[0] != 1 {
				t.Errorf("keyclaim_tracker_free(%d) = %v, %v; want 1", int32(h), res, err)
			}
		}
	})
	t.Run("empty input", func(t *testing.T) {
		out := raw(t, in, "keyclaim_parse_claim", -1, 0, 0)
		mustEqual(t, "parse_claim of nothing", out, native("parse_claim", nil))
	})
	t.Run("still works", func(t *testing.T) {
		input := []byte(`{"body":"{\"one_time_keys\":{}}"}`)
		out, err := in.call(ctx, in.ops[0], 0, false, input)
		if err != nil {
			t.Fatal(err)
		}
		mustEqual(t, "parse_claim", out, native("parse_claim", input))
	})
}

// TestBadInputNeverTraps sends garbage to every operation through Invoke: every answer must be an
// envelope equal to the native one, and no instance may be discarded.
func TestBadInputNeverTraps(t *testing.T) {
	ctx := context.Background()
	m := newTestModule(t)
	inputs := []string{
		"", " ", "null", "nope", "\xff\xfe", "{", "}", "[]", `{"body":1}`, `{"body":"\u0000"}`,
		`{"body":"\ud800"}`, `{"request":{"one_time_keys":{"@a:b":{"D":"x"}}},"body":"\xff"}`,
		strings.Repeat("[", 100_000), `{"body":"` + strings.Repeat("[", 10_000) + `"}`,
		`{"a":1,"a":2}`, `{"steps":[{"op":"boom","input":{}}]}`, `{"requests":[1]}`,
		`{"server_name":"example.org:123456","request":{"one_time_keys":{}}}`,
	}
	for _, op := range Operations() {
		for _, s := range inputs {
			got, err := m.Invoke(ctx, op, []byte(s))
			if err != nil {
				t.Fatalf("%s(%.40q): %v", op, s, err)
			}
			mustEqual(t, fmt.Sprintf("%s(%.40q)", op, s), got, native(op, []byte(s)))
		}
	}
	if st := m.Stats(); st.Recycled != 0 || st.Created != 1 {
		t.Errorf("stats %+v: an instance was discarded", st)
	}
	if _, err := m.Invoke(ctx, "no_such_op", nil); !errors.Is(err, &Error{Code: CodeUnknown}) {
		t.Errorf("unknown op: %v", err)
	}
	if _, err := m.Invoke(ctx, "parse_claim", make([]byte, MaxInputBytes+1)); !errors.Is(err, &Error{Code: CodeTooLarge}) {
		t.Errorf("input above the limit: %v", err)
	}
}

func TestTrackerLifecycle(t *testing.T) {
	ctx := context.Background()
	m, err := New(ctx, Config{PoolSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close(ctx)
	request := `{"one_time_keys":{"@carol:down.example":{"CAROLDEV":"signed_curve25519"}}}`
	plan := []byte(`{"now_ms":0,"request":` + request + `}`)
	observe := []byte(`{"now_ms":0,"request":` + request + `,"body":"{\"failures\":{\"down.example\":{\"status\":504,\"message\":\"x\"}}}"}`)

	if _, err := m.NewTracker(ctx, []byte(`{"max_entries":"many"}`)); !errors.Is(err, &Error{Code: CodeBadJSON}) {
		t.Fatalf("bad config: %v, want M_BAD_JSON", err)
	}
	if st := m.Stats(); st.Trackers != 0 || st.Idle != st.Instances {
		t.Fatalf("a failed NewTracker kept its instance: %+v", st)
	}
	tr, err := m.NewTracker(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	native := core.NewTracker(core.TrackerConfig{})
	for i, step := range []struct {
		op    string
		input []byte
	}{{"plan", plan}, {"observe", observe}, {"plan", plan}} {
		got, err := tr.Invoke(ctx, step.op, step.input)
		if err != nil {
			t.Fatal(err)
		}
		mustEqual(t, fmt.Sprintf("step %d %s", i, step.op), got, native.Invoke(step.op, step.input))
	}
	res, err := tr.Plan(ctx, plan)
	if err != nil || !bytes.Contains(res, []byte(`"deferred":{"@carol:down.example":{"CAROLDEV":15000}}`)) {
		t.Errorf("Plan after a failure: %s, %v", res, err)
	}
	if _, err := tr.Observe(ctx, []byte(`{}`)); !errors.Is(err, &Error{Code: CodeBadJSON}) {
		t.Errorf("Observe({}): %v, want M_BAD_JSON", err)
	}
	if _, err := tr.Invoke(ctx, "forget", nil); !errors.Is(err, &Error{Code: CodeUnknown}) {
		t.Errorf("unknown tracker op: %v", err)
	}
	if st := m.Stats(); st.Trackers != 1 {
		t.Errorf("an open tracker should hold one instance: %+v", st)
	}
	if err := tr.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := tr.Close(ctx); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := tr.Plan(ctx, plan); !errors.Is(err, ErrClosed) {
		t.Errorf("Plan after Close: %v, want ErrClosed", err)
	}
	if st := m.Stats(); st.Trackers != 0 || st.Idle != st.Instances || st.Instances == 0 {
		t.Errorf("Close did not give the instance back: %+v", st)
	}

	// Trackers live outside the pool: three open trackers on a pool of two do not make a call wait.
	var open []*Tracker
	for range 3 {
		tr, err := m.NewTracker(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, tr)
	}
	short, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := m.ParseClaim(short, []byte(`{"body":"{\"one_time_keys\":{}}"}`)); err != nil {
		t.Errorf("call with three trackers open: %v", err)
	}
	if st := m.Stats(); st.Trackers != 3 || st.Instances > 2 {
		t.Errorf("three trackers open: %+v", st)
	}
	for _, tr := range open {
		tr.Close(ctx)
	}
	if st := m.Stats(); st.Trackers != 0 || st.Instances != 2 {
		t.Errorf("after closing three trackers on a pool of two: %+v, want a full pool", st)
	}

	// Handles of one instance are distinct and survive each other's Close.
	withInstance(t, m, func(in *instance) {
		var handles []int32
		for range 3 {
			out, err := in.call(ctx, in.trackerNew, 0, false, nil)
			if err != nil {
				t.Fatal(err)
			}
			res, _ := Unwrap(out)
			var h struct{ Handle int32 }
			json.Unmarshal(res, &h)
			handles = append(handles, h.Handle)
		}
		if handles[0] == handles[1] || handles[1] == handles[2] || handles[0] <= 0 {
			t.Errorf("handles %v", handles)
		}
		for _, h := range handles {
			in.stack[0] = uint64(h)
			in.invoke(ctx, in.trackerFree)
			if in.stack[0] != 0 {
				t.Errorf("tracker_free(%d) = %d", h, in.stack[0])
			}
		}
	})
}

// TestConcurrentCallers runs many goroutines through a small pool and every answer must equal
// the native one (run with -race).
func TestConcurrentCallers(t *testing.T) {
	ctx := context.Background()
	m, err := New(ctx, Config{PoolSize: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close(ctx)
	examples := loadExamples(t)
	goroutines, calls := 32, 40
	if testing.Short() {
		calls = 10
	}
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for g := range goroutines {
		wg.Go(func() {
			if g%8 == 0 { // some goroutines hold a tracker for a while
				tr, err := m.NewTracker(ctx, nil)
				if err != nil {
					errs <- err
					return
				}
				defer tr.Close(ctx)
			}
			for i := range calls {
				ex := examples[(g+i)%len(examples)]
				if _, ok := opIndex(ex.Op); !ok {
					continue
				}
				input := []byte(ex.Input)
				got, err := m.Invoke(ctx, ex.Op, input)
				if err != nil {
					errs <- err
					return
				}
				if want := native(ex.Op, input); !bytes.Equal(got, want) {
					errs <- fmt.Errorf("%s: module %s, native %s", ex.Op, got, want)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if st := m.Stats(); st.Instances > 3 || st.Trackers != 0 {
		t.Errorf("pool of 3 after the run: %+v", st)
	}
}

// bigClaimBody returns a claim request body for n devices spread over users of servers.
func bigClaimBody(n int, servers ...string) []byte {
	var b strings.Builder
	b.WriteString(`{"one_time_keys":{`)
	perUser := 10
	for u := 0; u*perUser < n; u++ {
		if u > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `"@user%06d:%s":{`, u, servers[u%len(servers)])
		for d := 0; d < perUser && u*perUser+d < n; d++ {
			if d > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `"DEVICE%02d":"signed_curve25519"`, d)
		}
		b.WriteByte('}')
	}
	b.WriteString(`},"timeout":10000}`)
	return []byte(b.String())
}

func parseInput(body []byte) []byte {
	return []byte(`{"limits":{"max_body_bytes":67108864,"max_pairs":10000000},"body":` + strconv.Quote(string(body)) + `}`)
}

// TestRecycle checks that an instance is replaced after its memory grows past RecycleMemoryMiB
// and after a trap (here: running out of its MaxMemoryMiB), and that the pool keeps serving.
func TestRecycle(t *testing.T) {
	ctx := context.Background()
	small := []byte(`{"body":"{\"one_time_keys\":{}}"}`)
	t.Run("memory growth", func(t *testing.T) {
		m, err := New(ctx, Config{PoolSize: 1, RecycleMemoryMiB: 8})
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close(ctx)
		input := parseInput(bigClaimBody(40_000, "example.org"))
		got, err := m.Invoke(ctx, "parse_claim", input)
		if err != nil {
			t.Fatal(err)
		}
		mustEqual(t, "big parse_claim", got, native("parse_claim", input))
		if st := m.Stats(); st.Recycled != 1 || st.Instances != 0 {
			t.Errorf("after growing past 8 MiB: %+v, want the instance recycled", st)
		}
		if _, err := m.Invoke(ctx, "parse_claim", small); err != nil {
			t.Fatal(err)
		}
		if st := m.Stats(); st.Created != 2 || st.Instances != 1 {
			t.Errorf("after the next call: %+v, want a second instance", st)
		}
	})
	t.Run("trap", func(t *testing.T) {
		var stderr bytes.Buffer
		m, err := New(ctx, Config{PoolSize: 1, MaxMemoryMiB: 24, Stderr: &stderr})
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close(ctx)
		_, err = m.Invoke(ctx, "parse_claim", parseInput(bigClaimBody(200_000, "example.org")))
		if err == nil || errors.As(err, new(*Error)) {
			t.Fatalf("a call needing more than 24 MiB: %v, want a trap", err)
		}
		t.Logf("trap: %v; stderr: %.200s", err, stderr.String())
		if st := m.Stats(); st.Recycled != 1 || st.Instances != 0 {
			t.Errorf("after a trap: %+v, want the instance discarded", st)
		}
		got, err := m.Invoke(ctx, "parse_claim", small)
		if err != nil {
			t.Fatal(err)
		}
		mustEqual(t, "parse_claim after a trap", got, native("parse_claim", small))
	})
	t.Run("trap loses tracker", func(t *testing.T) {
		m, err := New(ctx, Config{PoolSize: 1, MaxMemoryMiB: 24, Stderr: &bytes.Buffer{}})
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close(ctx)
		tr, err := m.NewTracker(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		big := `{"now_ms":0,"request":` + string(bigClaimBody(200_000, "example.org")) + `}`
		if _, err := tr.Plan(ctx, []byte(big)); !errors.Is(err, ErrTrackerLost) {
			t.Fatalf("Plan that traps: %v, want ErrTrackerLost", err)
		}
		if _, err := tr.Plan(ctx, []byte(`{}`)); !errors.Is(err, ErrTrackerLost) {
			t.Errorf("Plan after the trap: %v, want ErrTrackerLost", err)
		}
		if err := tr.Close(ctx); err != nil {
			t.Errorf("Close of a lost tracker: %v", err)
		}
		if _, err := m.ParseClaim(ctx, small); err != nil {
			t.Errorf("pool after a lost tracker: %v", err)
		}
	})
}

// TestSoak makes many calls on one instance and requires its memory to stay flat.
func TestSoak(t *testing.T) {
	ctx := context.Background()
	m := newTestModule(t)
	calls := 20_000
	if testing.Short() {
		calls = 2_000
	}
	var examples []example
	for _, ex := range loadExamples(t) {
		if _, ok := opIndex(ex.Op); ok {
			examples = append(examples, ex)
		}
	}
	const bound = 16 << 20
	var first, peak uint32
	for i := range calls {
		ex := examples[i%len(examples)]
		if _, err := m.Invoke(ctx, ex.Op, ex.Input); err != nil {
			t.Fatal(err)
		}
		if i%1000 == 999 {
			withInstance(t, m, func(in *instance) {
				size := in.mem.Size()
				if first == 0 {
					first = size
				}
				peak = max(peak, size)
			})
		}
	}
	t.Logf("%d calls: memory %.1f MiB after 1,000, peak %.1f MiB", calls, float64(first)/(1<<20), float64(peak)/(1<<20))
	if peak > first+4<<20 {
		t.Errorf("instance memory grew from %.1f MiB to %.1f MiB over the soak", float64(first)/(1<<20), float64(peak)/(1<<20))
	}
	if peak > bound {
		t.Errorf("instance memory reached %.1f MiB, above the %d MiB bound", float64(peak)/(1<<20), bound>>20)
	}
	if st := m.Stats(); st.Created != 1 {
		t.Errorf("the soak needed %d instances", st.Created)
	}
}

func TestNewAndClose(t *testing.T) {
	ctx := context.Background()
	if _, err := New(ctx, Config{PoolSize: -1}); err == nil {
		t.Error("negative PoolSize accepted")
	}
	if _, err := New(ctx, Config{WasmPath: filepath.Join(t.TempDir(), "none.wasm")}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing WasmPath: %v", err)
	}
	if _, err := New(ctx, Config{Wasm: []byte("\x00asm garbage")}); err == nil {
		t.Error("garbage module accepted")
	}
	wasm, _ := embedded.Wasm()
	path := filepath.Join(t.TempDir(), "keyclaim.wasm")
	if err := os.WriteFile(path, wasm, 0o600); err != nil {
		t.Fatal(err)
	}
	m, err := New(ctx, Config{WasmPath: path, NoDiskCache: true})
	if err != nil {
		t.Fatal(err)
	}
	tr, err := m.NewTracker(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(ctx); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := m.Invoke(ctx, "parse_claim", nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Invoke after Close: %v, want ErrClosed", err)
	}
	if _, err := tr.Plan(ctx, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Tracker.Plan after Module.Close: %v, want ErrClosed", err)
	}
	if err := tr.Close(ctx); err != nil {
		t.Errorf("Tracker.Close after Module.Close: %v", err)
	}
}

// TestInterface pins the module's imports and exports to what bindings/ABI.md lists.
func TestInterface(t *testing.T) {
	sig := func(f api.FunctionDefinition) string {
		var p, r []string
		for _, v := range f.ParamTypes() {
			p = append(p, api.ValueTypeName(v))
		}
		for _, v := range f.ResultTypes() {
			r = append(r, api.ValueTypeName(v))
		}
		return "(" + strings.Join(p, ",") + ")->(" + strings.Join(r, ",") + ")"
	}
	var imports []string
	for _, f := range testModule.compiled.ImportedFunctions() {
		mod, name, _ := f.Import()
		imports = append(imports, mod+"."+name+sig(f))
	}
	slices.Sort(imports)
	imports = slices.Compact(imports) // fd_write is imported twice
	wantImports := []string{
		"wasi_snapshot_preview1.args_get(i32,i32)->(i32)",
		"wasi_snapshot_preview1.args_sizes_get(i32,i32)->(i32)",
		"wasi_snapshot_preview1.clock_time_get(i32,i64,i32)->(i32)",
		"wasi_snapshot_preview1.environ_get(i32,i32)->(i32)",
		"wasi_snapshot_preview1.environ_sizes_get(i32,i32)->(i32)",
		"wasi_snapshot_preview1.fd_close(i32)->(i32)",
		"wasi_snapshot_preview1.fd_fdstat_get(i32,i32)->(i32)",
		"wasi_snapshot_preview1.fd_fdstat_set_flags(i32,i32)->(i32)",
		"wasi_snapshot_preview1.fd_prestat_dir_name(i32,i32,i32)->(i32)",
		"wasi_snapshot_preview1.fd_prestat_get(i32,i32)->(i32)",
		"wasi_snapshot_preview1.fd_write(i32,i32,i32,i32)->(i32)",
		"wasi_snapshot_preview1.poll_oneoff(i32,i32,i32,i32)->(i32)",
		"wasi_snapshot_preview1.proc_exit(i32)->()",
		"wasi_snapshot_preview1.random_get(i32,i32)->(i32)",
		"wasi_snapshot_preview1.sched_yield()->(i32)",
	}
	if !slices.Equal(imports, wantImports) {
		t.Errorf("imports changed: update bindings/ABI.md (\"What a host provides\") and this test\ngot  %q\nwant %q", imports, wantImports)
	}
	var exports []string
	for name, f := range testModule.compiled.ExportedFunctions() {
		exports = append(exports, name+sig(f))
	}
	slices.Sort(exports)
	wantExports := []string{
		"_initialize()->()",
		"keyclaim_abi_version()->(i32)",
		"keyclaim_alloc(i32)->(i32)",
		"keyclaim_free(i32)->()",
		"keyclaim_tracker_free(i32)->(i32)",
		"keyclaim_tracker_new(i32,i32)->(i64)",
		"keyclaim_tracker_observe(i32,i32,i32)->(i64)",
		"keyclaim_tracker_plan(i32,i32,i32)->(i64)",
	}
	for _, op := range Operations() {
		wantExports = append(wantExports, "keyclaim_"+op+"(i32,i32)->(i64)")
	}
	slices.Sort(wantExports)
	if !slices.Equal(exports, wantExports) {
		t.Errorf("exports changed: update bindings/ABI.md and this test\ngot  %q\nwant %q", exports, wantExports)
	}
	if mems := testModule.compiled.ExportedMemories(); len(mems) != 1 || mems["memory"] == nil {
		t.Errorf("the module must export exactly one memory, \"memory\": %v", mems)
	}
}

// TestInputBufferReuse: an instance keeps one input buffer between calls (inputs up to
// keptInputMax) and gives larger inputs a buffer of their own; answers stay those of the native
// core whatever the order of sizes, and a kept buffer that is too small is replaced.
func TestInputBufferReuse(t *testing.T) {
	ctx := context.Background()
	m := newTestModule(t)
	small, medium, large := benchInput("complete_client", 1), benchInput("complete_client", 100), benchInput("complete_client", 1000)
	if len(small) > keptInputMin || len(medium) <= keptInputMin || len(medium) > keptInputMax || len(large) <= keptInputMax {
		t.Fatalf("sizes %d, %d, %d do not cover the cases", len(small), len(medium), len(large))
	}
	for i, input := range [][]byte{small, large, small, medium, large, medium, small, []byte(`{}`), nil, small} {
		got, err := m.Invoke(ctx, "complete_client", input)
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		if want := native("complete_client", input); !bytes.Equal(got, want) {
			t.Fatalf("call %d (%d bytes): module and native differ:\n%.300s\n%.300s", i, len(input), got, want)
		}
	}
}
