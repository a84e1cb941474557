package core_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/keyclaim/keyclaim/core"
)

// This file is the native runner of the shared test-vector corpus in testdata/vectors (the schema
// is in testdata/vectors/README.md). Every runtime (wazero, Node, browsers, Python, Rust) runs
// the same files and must produce the same bytes.

const vectorDir = "testdata/vectors"

// pendingFile holds vectors that expect what BRIEF.md says where core does not (yet): they are
// checked for well-formedness but not run.
const pendingFile = "pending_bugs.json"

// vectorFile is one file of the corpus.
type vectorFile struct {
	Schema      int      `json:"schema"`
	Description string   `json:"description"`
	Vectors     []vector `json:"vectors"`
}

// vector is one test vector.
type vector struct {
	ID          string          `json:"id"`
	Description string          `json:"description"`
	Source      string          `json:"source"`
	Op          string          `json:"op"`
	Input       json.RawMessage `json:"input"`
	Expect      json.RawMessage `json:"expect"`
	ExpectError *string         `json:"expect_error"`
}

var (
	fileFields   = []string{"schema", "description", "vectors"}
	vectorFields = []string{"id", "description", "source", "op", "input", "expect", "expect_error"}
	idPattern    = regexp.MustCompile(`^[a-z0-9]+(-[a-z0-9]+)*$`)
	errcodeRe    = regexp.MustCompile(`^M_[A-Z_]+$`)
)

// loadedVector is a vector with the file it came from.
type loadedVector struct {
	vector
	file    string
	pending bool
}

// loadVectors reads and checks every file of the corpus, in sorted order.
func loadVectors(t *testing.T) []loadedVector {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(vectorDir, "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) == 0 {
		t.Fatalf("no vector files in %s", vectorDir)
	}
	slices.Sort(paths)
	var all []loadedVector
	seen := map[string]string{}
	for _, path := range paths {
		name := filepath.Base(path)
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		vf, err := decodeVectorFile(data)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		pending := name == pendingFile
		prefix := strings.ReplaceAll(strings.TrimSuffix(name, ".json"), "_", "-") + "-"
		for i, v := range vf.Vectors {
			if err := checkVector(v); err != nil {
				t.Fatalf("%s: vectors[%d] (%q): %v", name, i, v.ID, err)
			}
			if !pending && !strings.HasPrefix(v.ID, prefix) {
				t.Fatalf("%s: id %q does not start with the file's topic prefix %q", name, v.ID, prefix)
			}
			if other, dup := seen[v.ID]; dup {
				t.Fatalf("%s: id %q is also used in %s", name, v.ID, other)
			}
			seen[v.ID] = name
			all = append(all, loadedVector{v, name, pending})
		}
	}
	return all
}

// decodeVectorFile decodes one file strictly: no duplicate keys anywhere (checked with
// core.Canonical), no unknown or misspelt fields (encoding/json matches names case-insensitively,
// so the exact names are checked too), only integer numbers.
func decodeVectorFile(data []byte) (*vectorFile, error) {
	if _, err := core.Canonical(data); err != nil {
		return nil, fmt.Errorf("not strict JSON: %v", err)
	}
	if err := checkIntegers(data); err != nil {
		return nil, err
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, err
	}
	if err := exactFields("file", raw, fileFields, fileFields); err != nil {
		return nil, err
	}
	var rawVectors []map[string]json.RawMessage
	if err := json.Unmarshal(raw["vectors"], &rawVectors); err != nil {
		return nil, fmt.Errorf("vectors: %v", err)
	}
	for i, rv := range rawVectors {
		what := fmt.Sprintf("vectors[%d]", i)
		if err := exactFields(what, rv, vectorFields, []string{"id", "description", "source", "op", "input"}); err != nil {
			return nil, err
		}
		_, hasExpect := rv["expect"]
		_, hasError := rv["expect_error"]
		if hasExpect == hasError {
			return nil, fmt.Errorf("%s: exactly one of expect and expect_error must be present", what)
		}
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var vf vectorFile
	if err := dec.Decode(&vf); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, fmt.Errorf("data after the top-level object")
	}
	if vf.Schema != 1 {
		return nil, fmt.Errorf("schema is %d, want 1", vf.Schema)
	}
	if strings.TrimSpace(vf.Description) == "" {
		return nil, fmt.Errorf("empty description")
	}
	if len(vf.Vectors) == 0 {
		return nil, fmt.Errorf("no vectors")
	}
	return &vf, nil
}

// exactFields checks that obj has only the allowed keys, spelt exactly, and all required ones.
func exactFields(what string, obj map[string]json.RawMessage, allowed, required []string) error {
	for k := range obj {
		if !slices.Contains(allowed, k) {
			return fmt.Errorf("%s: unknown field %q", what, k)
		}
	}
	for _, k := range required {
		if _, ok := obj[k]; !ok {
			return fmt.Errorf("%s: missing field %q", what, k)
		}
	}
	return nil
}

// checkIntegers rejects any number with a fraction or an exponent, or outside ±(2^53-1), so that
// every JSON library reads the files exactly.
func checkIntegers(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	for {
		tok, err := dec.Token()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if n, ok := tok.(json.Number); ok {
			i, err := strconv.ParseInt(string(n), 10, 64)
			if err != nil || i > 1<<53-1 || i < -(1<<53-1) {
				return fmt.Errorf("number %s is not an integer within ±(2^53-1)", n)
			}
		}
	}
}

func checkVector(v vector) error {
	if !idPattern.MatchString(v.ID) {
		return fmt.Errorf("id is not kebab-case")
	}
	if strings.TrimSpace(v.Description) == "" || strings.TrimSpace(v.Source) == "" {
		return fmt.Errorf("empty description or source")
	}
	if !slices.Contains(core.Operations, v.Op) {
		return fmt.Errorf("unknown op %q", v.Op)
	}
	if in := bytes.TrimSpace(v.Input); len(in) == 0 || in[0] != '{' {
		return fmt.Errorf("input must be a JSON object")
	}
	switch hasExpect, hasError := len(v.Expect) > 0, v.ExpectError != nil; {
	case hasExpect == hasError:
		return fmt.Errorf("exactly one of expect and expect_error must be present")
	case hasError && !errcodeRe.MatchString(*v.ExpectError):
		return fmt.Errorf("expect_error %q is not an errcode", *v.ExpectError)
	}
	return nil
}

// TestVectors runs every vector of the corpus through core.Invoke, one subtest per vector id.
func TestVectors(t *testing.T) {
	for _, v := range loadVectors(t) {
		t.Run(v.ID, func(t *testing.T) {
			if v.pending {
				t.Skipf("pending core fix: %s is in %s", v.ID, pendingFile)
			}
			out := core.Invoke(v.Op, v.Input)
			if v.ExpectError != nil {
				checkError(t, out, *v.ExpectError)
				if v.Op == "tracker_run" {
					runTrackerStepsError(t, v)
				}
				return
			}
			want := wantResult(t, v.Expect)
			if !bytes.Equal(out, want) {
				t.Errorf("%s (%s): %s\n%s", v.ID, v.file, v.Description, diff(out, want))
			}
			if v.Op == "tracker_run" {
				runTrackerSteps(t, v)
			}
		})
	}
}

// wantResult returns {"result":<canonical expect>}.
func wantResult(t *testing.T, expect []byte) []byte {
	t.Helper()
	c, err := core.Canonical(expect)
	if err != nil {
		t.Fatalf("expect is not valid JSON: %v", err)
	}
	return slices.Concat([]byte(`{"result":`), c, []byte(`}`))
}

// checkError requires out to be exactly {"errcode": code, "error": <non-empty string>}.
func checkError(t *testing.T, out []byte, code string) {
	t.Helper()
	var body map[string]any
	if err := json.Unmarshal(out, &body); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, out)
	}
	msg, ok := body["error"].(string)
	if body["errcode"] != code || !ok || msg == "" || len(body) != 2 {
		t.Errorf("want {\"errcode\":%q,\"error\":<message>}\n got %s", code, out)
	}
}

// runTrackerSteps replays a tracker_run vector the way bindings do, through a tracker handle:
// NewTrackerJSON(config), then Invoke for each step; each step's result must equal the
// corresponding item of expect.
func runTrackerSteps(t *testing.T, v loadedVector) {
	t.Helper()
	var in trackerInput
	if err := json.Unmarshal(v.Input, &in); err != nil {
		t.Fatal(err)
	}
	var expect []json.RawMessage
	if err := json.Unmarshal(v.Expect, &expect); err != nil {
		t.Fatal(err)
	}
	if len(expect) != len(in.Steps) {
		t.Fatalf("expect has %d items for %d steps", len(expect), len(in.Steps))
	}
	tr, err := core.NewTrackerJSON(in.Config)
	if err != nil {
		t.Fatalf("NewTrackerJSON: %v", err)
	}
	for i, s := range in.Steps {
		out := tr.Invoke(s.Op, s.Input)
		if want := wantResult(t, expect[i]); !bytes.Equal(out, want) {
			t.Errorf("step %d (%s) through the tracker handle:\n%s", i, s.Op, diff(out, want))
		}
	}
}

// trackerInput is the input of tracker_run.
type trackerInput struct {
	Config json.RawMessage `json:"config"`
	Steps  []struct {
		Op    string          `json:"op"`
		Input json.RawMessage `json:"input"`
	} `json:"steps"`
}

// runTrackerStepsError replays a tracker_run vector with expect_error through a tracker handle:
// either creating the tracker fails with that errcode (and there are no steps), or every step
// but the last succeeds and the last fails with it.
func runTrackerStepsError(t *testing.T, v loadedVector) {
	t.Helper()
	var in trackerInput
	if err := json.Unmarshal(v.Input, &in); err != nil {
		t.Fatal(err)
	}
	tr, err := core.NewTrackerJSON(in.Config)
	if err != nil {
		var ce *core.Error
		if !errors.As(err, &ce) || string(ce.Code) != *v.ExpectError || len(in.Steps) != 0 {
			t.Errorf("NewTrackerJSON: %v; want %s with no steps", err, *v.ExpectError)
		}
		return
	}
	if len(in.Steps) == 0 {
		t.Fatalf("the tracker was created and there is no step to fail with %s", *v.ExpectError)
	}
	for i, s := range in.Steps {
		out := tr.Invoke(s.Op, s.Input)
		if i == len(in.Steps)-1 {
			checkError(t, out, *v.ExpectError)
		} else if !bytes.HasPrefix(out, []byte(`{"result":`)) {
			t.Errorf("step %d (%s) through the tracker handle failed before the last step: %s", i, s.Op, out)
		}
	}
}

// diff shows got and want and where they first differ.
func diff(got, want []byte) string {
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	lo := max(0, i-60)
	ctx := func(b []byte) string {
		hi := min(len(b), i+60)
		if lo > len(b) {
			return ""
		}
		return string(b[lo:hi])
	}
	return fmt.Sprintf(" got: %s\nwant: %s\nfirst difference at byte %d:\n got: …%s…\nwant: …%s…", got, want, i, ctx(got), ctx(want))
}

// TestVectorCoverage requires a corpus of at least 80 runnable vectors with at least 5 for
// every operation.
func TestVectorCoverage(t *testing.T) {
	perOp := map[string]int{}
	total := 0
	for _, v := range loadVectors(t) {
		if v.pending {
			continue
		}
		perOp[v.Op]++
		total++
	}
	if total < 80 {
		t.Errorf("the corpus has %d vectors, want at least 80", total)
	}
	for _, op := range core.Operations {
		if perOp[op] < 5 {
			t.Errorf("operation %s has %d vectors, want at least 5", op, perOp[op])
		}
	}
	t.Logf("%d vectors: %v", total, perOp)
}
