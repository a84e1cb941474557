package keyclaimwasm

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// The parity tests are differential: they run the same input through the module and through
// core natively and require the same bytes. Whether those bytes are right is the business of the
// native vector runner in core, which checks each vector's expect.

// vectorDir holds the shared vector corpus; pending_bugs.json there documents known bugs and is
// not run.
var vectorDir = filepath.Join("..", "..", "core", "testdata", "vectors")

type vector struct {
	ID    string          `json:"id"`
	Op    string          `json:"op"`
	Input json.RawMessage `json:"input"`
}

type vectorFile struct {
	Schema  int      `json:"schema"`
	Vectors []vector `json:"vectors"`
}

func loadVectors(t testing.TB) map[string][]vector {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(vectorDir, "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]vector{}
	for _, file := range files {
		if filepath.Base(file) == "pending_bugs.json" {
			continue
		}
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		var vf vectorFile
		if err := json.Unmarshal(data, &vf); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if vf.Schema != 1 {
			t.Fatalf("%s: schema %d, this test knows schema 1", file, vf.Schema)
		}
		out[filepath.Base(file)] = vf.Vectors
	}
	return out
}

// TestParity runs every vector through the module and natively; tracker_run vectors also go
// step by step through the handle API (keyclaim_tracker_new, _plan, _observe, _free).
func TestParity(t *testing.T) {
	files := loadVectors(t)
	if len(files) == 0 {
		t.Fatalf("no vectors in %s", vectorDir)
	}
	for name, vectors := range files {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			for _, v := range vectors {
				t.Run(v.ID, func(t *testing.T) {
					if _, ok := opIndex(v.Op); !ok {
						t.Fatalf("unknown op %q", v.Op)
					}
					got, err := testModule.Invoke(context.Background(), v.Op, v.Input)
					if err != nil {
						t.Fatal(err)
					}
					mustEqual(t, v.Op, got, native(v.Op, v.Input))
					if v.Op == "tracker_run" {
						trackerSteps(t, v.Input)
					}
				})
			}
		})
	}
}

// trackerSteps runs the steps of a tracker_run input through the handle API of one instance and
// compares each step's envelope with a native tracker's.
func trackerSteps(t *testing.T, input []byte) {
	var run struct {
		Config json.RawMessage
		Steps  []struct {
			Op    string
			Input json.RawMessage
		}
	}
	if json.Unmarshal(input, &run) != nil {
		return // not even JSON of that shape: the whole-run comparison covers it
	}
	ctx := context.Background()
	withInstance(t, testModule, func(in *instance) {
		env, err := in.call(ctx, in.trackerNew, 0, false, run.Config)
		if err != nil {
			t.Fatal(err)
		}
		tr, errEnv := nativeTracker(run.Config)
		if tr == nil {
			mustEqual(t, "tracker_new", env, errEnv)
			return
		}
		res, err := Unwrap(env)
		var h struct{ Handle int32 }
		if err != nil || json.Unmarshal(res, &h) != nil || h.Handle <= 0 {
			t.Fatalf("tracker_new: %s", env)
		}
		defer func() {
			in.stack[0] = uint64(h.Handle)
			if err := in.invoke(ctx, in.trackerFree); err != nil || in.stack[0] != 0 {
				t.Errorf("tracker_free(%d) = %d, %v", h.Handle, in.stack[0], err)
			}
		}()
		for i, step := range run.Steps {
			fn := in.trackerPlan
			switch step.Op {
			case "plan":
			case "observe":
				fn = in.trackerObserve
			default:
				return // the native run fails here too
			}
			if step.Input == nil {
				return
			}
			got, err := in.call(ctx, fn, h.Handle, true, step.Input)
			if err != nil {
				t.Fatal(err)
			}
			mustEqual(t, fmt.Sprintf("step %d %s", i, step.Op), got, tr.Invoke(step.Op, step.Input))
		}
	})
}

// FuzzParity feeds the same input to core natively and to the module; the first byte picks the
// operation (7: keyclaim_tracker_new). Seeded with the inputs of the vectors and the ABI.md
// examples.
func FuzzParity(f *testing.F) {
	for _, vectors := range loadVectors(f) {
		for _, v := range vectors {
			if i, ok := opIndex(v.Op); ok {
				f.Add(uint8(i), []byte(v.Input))
			}
		}
	}
	for _, ex := range loadExamples(f) {
		if i, ok := opIndex(ex.Op); ok {
			f.Add(uint8(i), []byte(ex.Input))
		} else if ex.Op == "tracker_new" {
			f.Add(uint8(len(operations)), []byte(ex.Input))
		}
	}
	f.Fuzz(func(t *testing.T, pick uint8, input []byte) {
		i := int(pick) % (len(operations) + 1)
		if i == len(operations) {
			withInstance(t, testModule, func(in *instance) {
				env, err := in.call(context.Background(), in.trackerNew, 0, false, input)
				if err != nil {
					t.Fatal(err)
				}
				tr, errEnv := nativeTracker(input)
				if tr == nil {
					mustEqual(t, "tracker_new", env, errEnv)
					return
				}
				res, err := Unwrap(env)
				var h struct{ Handle int32 }
				if err != nil || json.Unmarshal(res, &h) != nil || h.Handle <= 0 {
					t.Fatalf("tracker_new answered %s, natively the config is valid", env)
				}
				in.stack[0] = uint64(h.Handle)
				if err := in.invoke(context.Background(), in.trackerFree); err != nil || in.stack[0] != 0 {
					t.Errorf("tracker_free(%d) = %d, %v", h.Handle, in.stack[0], err)
				}
			})
			return
		}
		op := operations[i]
		got, err := testModule.Invoke(context.Background(), op, input)
		if err != nil {
			t.Fatalf("%s(%q): %v", op, input, err)
		}
		mustEqual(t, fmt.Sprintf("%s(%q)", op, input), got, native(op, input))
	})
}
