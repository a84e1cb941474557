// Package specconform checks HTTP answers against the Matrix specification's own OpenAPI files
// (spec v1.19, ../shared/matrix-spec/data/api beside the repository), with kin-openapi's
// OpenAPI 3.1 / JSON Schema 2020-12 validator. Tests only: nothing outside _test.go files
// imports it, so no binary carries kin-openapi.
//
// A [Validator] knows the operations keyclaim serves: the client endpoints /keys/upload,
// /keys/query, /keys/claim (v3 and r0) and /versions, the federation endpoints /user/keys/claim
// and /user/keys/query, and the key server's /_matrix/key/v2/server. [Validator.Check] requires
// of an answer:
//
//   - a status the operation declares, validated with its schema (status, Content-Type and
//     body), or
//   - an error status (4xx, 5xx) that the operation does not declare (each of these declares only
//     200), with a JSON body that satisfies the spec's standard error schema
//     (client-server/definitions/errors/error.yaml; rate_limited.yaml for 429).
package specconform

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
)

// SpecEnv names the directory of the spec (the one holding data/api) when set; otherwise it is
// ../shared/matrix-spec relative to the repository root, as in CI (a fresh clone with shared/
// beside it).
const SpecEnv = "KEYCLAIM_MATRIX_SPEC"

// files are the OpenAPI files of the operations keyclaim serves, with the path prefix (the
// file's basePath) under which keyclaim serves them.
var files = []struct{ file, prefix string }{
	{"client-server/keys.yaml", "/_matrix/client/v3"},
	{"client-server/keys.yaml", "/_matrix/client/r0"}, // the same operations, the older prefix
	{"client-server/versions.yaml", "/_matrix/client"},
	{"server-server/user_keys.yaml", "/_matrix/federation/v1"},
	{"server-server/keys_server.yaml", "/_matrix/key/v2"},
}

// Validator holds the loaded OpenAPI documents.
type Validator struct {
	Dir   string // the data/api directory
	docs  map[string]*openapi3.T
	ops   []route
	err   *openapi3.Schema // the standard error
	limit *openapi3.Schema // the 429 error

	mu      sync.Mutex
	checked map[string]int // "METHOD path status" -> answers checked
}

type route struct {
	prefix, path string
	doc          *openapi3.T
	item         *openapi3.PathItem
}

// Dir returns the spec's data/api directory and whether it exists.
func Dir() (string, bool) {
	base := os.Getenv(SpecEnv)
	if base == "" {
		root, err := repoRoot()
		if err != nil {
			return "", false
		}
		base = filepath.Join(root, "..", "shared", "matrix-spec")
	}
	dir := filepath.Join(base, "data", "api")
	_, err := os.Stat(filepath.Join(dir, "client-server", "keys.yaml"))
	return dir, err == nil
}

// repoRoot walks up from the working directory to the directory holding go.mod.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above the working directory")
		}
		dir = parent
	}
}

var (
	loadOnce sync.Once
	loaded   *Validator
	loadErr  error
)

// Load returns the validator, loading the spec once per test binary. Where the spec files are
// missing it skips t, except in CI (CI set), where that fails t: the conformance suite may not
// silently vanish there.
func Load(t testing.TB) *Validator {
	t.Helper()
	dir, ok := Dir()
	if !ok {
		msg := fmt.Sprintf("the Matrix spec's OpenAPI files are missing: %s/client-server/keys.yaml "+
			"(put the spec v1.19 data/api tree at ../shared/matrix-spec beside the repository, or set %s)", dir, SpecEnv)
		if os.Getenv("CI") != "" {
			t.Fatal("FAIL (CI): " + msg)
		}
		t.Skip(msg)
	}
	loadOnce.Do(func() { loaded, loadErr = load(dir) })
	if loadErr != nil {
		t.Fatalf("loading the spec's OpenAPI files from %s: %v", dir, loadErr)
	}
	return loaded
}

// LoadIfPresent is Load for suites that run whether or not the spec is there: where the spec
// files are missing it returns nil (in CI it fails t, as Load does).
func LoadIfPresent(t testing.TB) *Validator {
	t.Helper()
	if _, ok := Dir(); !ok && os.Getenv("CI") == "" {
		return nil
	}
	return Load(t)
}

// LoadShared returns the validator for a package-level client, or nil where the spec files
// are missing (the hostserver suite fails in CI then; see LoadIfPresent) or do not load.
func LoadShared() *Validator {
	dir, ok := Dir()
	if !ok {
		return nil
	}
	loadOnce.Do(func() { loaded, loadErr = load(dir) })
	return loaded
}

func load(dir string) (*Validator, error) {
	v := &Validator{Dir: dir, docs: map[string]*openapi3.T{}, checked: map[string]int{}}
	newLoader := func() *openapi3.Loader {
		l := openapi3.NewLoader()
		l.IsExternalRefsAllowed = true
		return l
	}
	for _, f := range files {
		doc := v.docs[f.file]
		if doc == nil {
			var err error
			if doc, err = newLoader().LoadFromFile(filepath.Join(dir, f.file)); err != nil {
				return nil, fmt.Errorf("%s: %w", f.file, err)
			}
			// Examples are not validated as part of the document: the spec writes some as
			// {"$ref": "../examples/server_key.json"}, which its own site generator resolves
			// and OpenAPI does not. The examples this package hands out are validated where
			// they are used (ValidateRequest, and the servers' answers).
			if err := doc.Validate(context.Background(), openapi3.DisableExamplesValidation()); err != nil {
				return nil, fmt.Errorf("%s is not a valid OpenAPI document: %w", f.file, err)
			}
			// The JSON Schema 2020-12 validator sees one schema at a time and cannot follow a
			// $ref to another file (definitions/one_time_keys.yaml): it would let anything
			// through there. Internalised, the references become #/components/schemas/...,
			// which it follows.
			doc.InternalizeRefs(context.Background(), nil)
			v.docs[f.file] = doc
		}
		for path, item := range doc.Paths.Map() {
			v.ops = append(v.ops, route{prefix: f.prefix, path: path, doc: doc, item: item})
		}
	}
	// The error schemas are bare schema files: load them through a small document beside them,
	// so that they are read by the same loader and validated by the same JSON Schema 2020-12 code.
	wrapper := []byte(`{"openapi":"3.1.0","info":{"title":"errors","version":"1"},"paths":{},
		"components":{"schemas":{"Error":{"$ref":"definitions/errors/error.yaml"},
		"RateLimited":{"$ref":"definitions/errors/rate_limited.yaml"}}}}`)
	doc, err := newLoader().LoadFromDataWithPath(wrapper, &url.URL{Path: filepath.Join(dir, "client-server", "errors.json")})
	if err != nil {
		return nil, fmt.Errorf("the error schemas: %w", err)
	}
	doc.InternalizeRefs(context.Background(), nil)
	v.err = doc.Components.Schemas["Error"].Value
	v.limit = doc.Components.Schemas["RateLimited"].Value
	if v.err == nil || v.limit == nil {
		return nil, errors.New("the error schemas did not resolve")
	}
	v.docs["errors"] = doc
	return v, nil
}

// Covers reports whether path is one of the spec endpoints the validator knows.
func (v *Validator) Covers(path string) bool {
	_, ok := v.find(path)
	return ok
}

func (v *Validator) find(path string) (route, bool) {
	for _, r := range v.ops {
		if path == r.prefix+r.path {
			return r, true
		}
	}
	return route{}, false
}

// Check validates one answer to req (whose body was reqBody) against the spec: see the package
// documentation. It returns a readable error naming the operation and what is wrong.
func (v *Validator) Check(req *http.Request, status int, header http.Header, body []byte) error {
	r, ok := v.find(req.URL.Path)
	if !ok {
		return fmt.Errorf("%s %s is not an operation of the spec files loaded", req.Method, req.URL.Path)
	}
	v.mu.Lock()
	v.checked[fmt.Sprintf("%s %s %d", req.Method, r.path, status)]++
	v.mu.Unlock()
	what := fmt.Sprintf("%s %s -> %d %s", req.Method, req.URL.Path, status, clip(body))
	op := r.item.GetOperation(req.Method)
	if op == nil || op.Responses.Status(status) == nil {
		// Not declared: only an error may answer, with the standard error body.
		if status < 400 {
			return fmt.Errorf("%s: status %d is neither declared by the spec nor an error status", what, status)
		}
		return v.checkError(what, status, header, body)
	}
	input := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{
			Request: req,
			Route: &routers.Route{Spec: r.doc, Path: r.path, PathItem: r.item, Method: req.Method,
				Operation: op},
		},
		Status: status,
		Header: header,
		Body:   io.NopCloser(bytes.NewReader(body)),
		Options: &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true,
			AuthenticationFunc: openapi3filter.NoopAuthenticationFunc},
	}
	if err := openapi3filter.ValidateResponse(context.Background(), input); err != nil {
		return fmt.Errorf("%s: does not satisfy the spec's schema of %s %s %d: %w", what, req.Method, r.path, status, err)
	}
	return nil
}

// checkError validates an error answer against the standard error schema.
func (v *Validator) checkError(what string, status int, header http.Header, body []byte) error {
	if err := jsonContentType(header); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	var value any
	if err := json.Unmarshal(body, &value); err != nil {
		return fmt.Errorf("%s: the error body is not JSON: %w", what, err)
	}
	schema, name := v.err, "errors/error.yaml"
	if status == http.StatusTooManyRequests {
		schema, name = v.limit, "errors/rate_limited.yaml"
	}
	if err := schema.VisitJSON(value, openapi3.EnableJSONSchema2020(), openapi3.MultiErrors()); err != nil {
		return fmt.Errorf("%s: the error body does not satisfy the spec's %s: %w", what, name, err)
	}
	return nil
}

func jsonContentType(header http.Header) error {
	mt, _, err := mime.ParseMediaType(header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		return fmt.Errorf("Content-Type %q, want application/json", header.Get("Content-Type"))
	}
	return nil
}

// ValidateRequest validates a request body against the operation's request schema (used to
// make sure the spec's own examples, sent verbatim, are valid requests by the spec).
func (v *Validator) ValidateRequest(req *http.Request, body []byte) error {
	r, ok := v.find(req.URL.Path)
	if !ok {
		return fmt.Errorf("%s %s is not an operation of the spec files loaded", req.Method, req.URL.Path)
	}
	op := r.item.GetOperation(req.Method)
	if op == nil {
		return fmt.Errorf("%s %s: no such operation", req.Method, r.path)
	}
	clone := req.Clone(context.Background())
	clone.Body = io.NopCloser(bytes.NewReader(body))
	clone.Header.Set("Content-Type", "application/json")
	input := &openapi3filter.RequestValidationInput{
		Request: clone,
		Route:   &routers.Route{Spec: r.doc, Path: r.path, PathItem: r.item, Method: req.Method, Operation: op},
		Options: &openapi3filter.Options{MultiError: true, AuthenticationFunc: openapi3filter.NoopAuthenticationFunc},
	}
	return openapi3filter.ValidateRequest(context.Background(), input)
}

// RequestExample builds the request body of an operation from the spec's examples: each
// top-level property of the request schema that has an example (or whose schema's properties
// all have one, as device_keys does) takes it verbatim. It returns nil if there is none.
func (v *Validator) RequestExample(prefix, path, method string) map[string]any {
	for _, r := range v.ops {
		if r.prefix != prefix || r.path != path {
			continue
		}
		op := r.item.GetOperation(method)
		if op == nil || op.RequestBody == nil || op.RequestBody.Value == nil {
			return nil
		}
		mt := op.RequestBody.Value.Content.Get("application/json")
		if mt == nil || mt.Schema == nil {
			return nil
		}
		out := map[string]any{}
		for name, p := range mt.Schema.Value.Properties {
			if ex, ok := example(p.Value); ok {
				out[name] = ex
			}
		}
		if len(out) == 0 {
			return nil
		}
		return out
	}
	return nil
}

// example returns a schema's example: its own, or one of the schemas it is allOf, or an object
// built from its properties' examples when every property has one.
func example(s *openapi3.Schema) (any, bool) {
	if s == nil {
		return nil, false
	}
	if s.Example != nil {
		return s.Example, true
	}
	for _, a := range s.AllOf {
		if ex, ok := example(a.Value); ok {
			return ex, true
		}
	}
	if len(s.Properties) == 0 {
		return nil, false
	}
	out := map[string]any{}
	for name, p := range s.Properties {
		ex, ok := example(p.Value)
		if !ok {
			return nil, false
		}
		out[name] = ex
	}
	return out, true
}

// answer200 returns the application/json media type of an operation's 200 answer, or nil.
func (v *Validator) answer200(prefix, path, method string) *openapi3.MediaType {
	r, ok := v.find(prefix + path)
	if !ok {
		return nil
	}
	op := r.item.GetOperation(method)
	if op == nil || op.Responses.Status(200) == nil {
		return nil
	}
	return op.Responses.Status(200).Value.Content.Get("application/json")
}

// ResponseExample returns the example of an operation's 200 answer (the media type's named
// example "response", or the schema's own example), and whether there is one.
func (v *Validator) ResponseExample(prefix, path, method string) (any, bool) {
	mt := v.answer200(prefix, path, method)
	if mt == nil {
		return nil, false
	}
	if ex, ok := mt.Examples["response"]; ok && ex.Value != nil {
		return ex.Value.Value, true
	}
	if mt.Example != nil {
		return mt.Example, true
	}
	return nil, false
}

// PropertyExample returns the example of one property of an operation's 200 answer schema.
func (v *Validator) PropertyExample(prefix, path, method, property string) (any, bool) {
	mt := v.answer200(prefix, path, method)
	if mt == nil || mt.Schema == nil || mt.Schema.Value.Properties[property] == nil {
		return nil, false
	}
	return example(mt.Schema.Value.Properties[property].Value)
}

// Fresh returns a validator of the same documents that counts its own checked answers (see
// [Validator.Checked]), so that a test's coverage is its own.
func (v *Validator) Fresh() *Validator {
	return &Validator{Dir: v.Dir, docs: v.docs, ops: v.ops, err: v.err, limit: v.limit, checked: map[string]int{}}
}

// Checked lists the answers checked so far: "METHOD path status: count", sorted.
func (v *Validator) Checked() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := make([]string, 0, len(v.checked))
	for k, n := range v.checked {
		out = append(out, fmt.Sprintf("%s: %d", k, n))
	}
	slices.Sort(out)
	return out
}

// Transport is an http.RoundTripper that checks every answer to a spec endpoint with v and
// reports a failure to t (the answer still reaches the caller unchanged). Requests to other
// paths (/metrics, /healthz, ...) pass unchecked.
type Transport struct {
	V    *Validator
	T    testing.TB
	Base http.RoundTripper // nil: http.DefaultTransport
	// Lenient, when not empty, is why the test may see answers that break the spec's schemas:
	// they are then logged with this reason instead of failing the test.
	Lenient string
}

type testKey struct{}

// WithTest returns ctx carrying t and why its answers may break the schemas ("" if they may
// not): a [Transport] without T of its own reports to the test of each request's context, so
// that one package-level client can serve every test.
func WithTest(ctx context.Context, t testing.TB, lenient string) context.Context {
	return context.WithValue(ctx, testKey{}, testOf{t, lenient})
}

type testOf struct {
	t       testing.TB
	lenient string
}

// RoundTrip implements http.RoundTripper.
func (tr *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	base := tr.Base
	if base == nil {
		base = http.DefaultTransport
	}
	resp, err := base.RoundTrip(req)
	t, lenient := tr.T, tr.Lenient
	if t == nil {
		of, _ := req.Context().Value(testKey{}).(testOf)
		t, lenient = of.t, of.lenient
	}
	// OPTIONS is a CORS preflight, which the spec's client-server API asks servers to answer
	// (with the CORS headers) but which no operation of the OpenAPI files describes.
	if err != nil || t == nil || req.Method == http.MethodOptions || !tr.V.Covers(req.URL.Path) {
		return resp, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	if err := tr.V.Check(req, resp.StatusCode, resp.Header, body); err != nil {
		if lenient != "" {
			t.Logf("OpenAPI conformance (not failed: %s): %v", lenient, err)
		} else {
			t.Errorf("OpenAPI conformance: %v", err)
		}
	}
	return resp, nil
}

func clip(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return s
}
