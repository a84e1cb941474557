package hostserver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/keyclaim/keyclaim/core"
	"github.com/keyclaim/keyclaim/hostserver/federation"
	"github.com/labstack/echo/v4"
)

func TestToHTTP(t *testing.T) {
	cases := []struct {
		name    string
		err     error
		status  int
		errcode core.Code
	}{
		{"not JSON", &core.Error{Code: core.CodeNotJSON}, 400, core.CodeNotJSON},
		{"bad JSON", &core.Error{Code: core.CodeBadJSON}, 400, core.CodeBadJSON},
		{"invalid param", &core.Error{Code: core.CodeInvalidParam}, 400, core.CodeInvalidParam},
		{"too large", &core.Error{Code: core.CodeTooLarge}, 413, core.CodeTooLarge},
		{"missing token", matrixErr(CodeMissingToken, ""), 401, CodeMissingToken},
		{"unknown token", matrixErr(CodeUnknownToken, ""), 401, CodeUnknownToken},
		{"X-Matrix refused", &federation.AuthError{Cause: federation.CauseBadSignature, Matrix: &core.Error{Code: federation.CodeUnauthorized, Message: "bad"}}, 401, CodeUnauthorized},
		{"X-Matrix over a body that is not JSON", &federation.AuthError{Cause: federation.CauseBodyNotJSON, Matrix: &core.Error{Code: core.CodeNotJSON}}, 400, core.CodeNotJSON},
		{"forbidden", matrixErr(CodeForbidden, ""), 403, CodeForbidden},
		{"core unknown", &core.Error{Code: core.CodeUnknown}, 500, core.CodeUnknown},
		{"wrapped core error", fmt.Errorf("context: %w", &core.Error{Code: core.CodeBadJSON}), 400, core.CodeBadJSON},
		{"no route", echo.ErrNotFound, 404, CodeUnrecognized},
		{"bad method", echo.ErrMethodNotAllowed, 405, CodeUnrecognized},
		{"echo too large", echo.ErrStatusRequestEntityTooLarge, 413, core.CodeTooLarge},
		{"upstream", upstreamErr("hs broke", nil), 502, core.CodeUnknown},
		{"unavailable", unavailableErr("hs down", nil), 503, core.CodeUnknown},
		{"internal", internalErr("x", errors.New("secret")), 500, core.CodeUnknown},
		{"plain error", errors.New("secret"), 500, core.CodeUnknown},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, merr := toHTTP(c.err)
			if status != c.status || merr.Code != c.errcode {
				t.Errorf("toHTTP = %d %s, want %d %s", status, merr.Code, c.status, c.errcode)
			}
			if strings.Contains(merr.Message, "secret") {
				t.Errorf("message leaks the cause: %q", merr.Message)
			}
		})
	}
}

func TestWhoamiCache(t *testing.T) {
	calls := 0
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls++
		token := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		fmt.Fprintf(w, `{"user_id":"@%s:hs.test","device_id":"D"}`, token)
	}))
	defer hs.Close()
	a, err := NewWhoamiAuth(hs.URL+"/", "hs.test", nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1000, 0)
	a.now = func() time.Time { return now }
	a.maxSize = 3
	ctx := context.Background()

	id, err := a.Authenticate(ctx, "u1")
	if err != nil || id.User != "@u1:hs.test" || id.Device != "D" {
		t.Fatalf("Authenticate = %+v, %v", id, err)
	}
	_, _ = a.Authenticate(ctx, "u1")
	if calls != 1 {
		t.Errorf("calls = %d, want 1 (cached)", calls)
	}
	now = now.Add(WhoamiCacheTTL)
	_, _ = a.Authenticate(ctx, "u1")
	if calls != 2 {
		t.Errorf("calls = %d, want 2 (expired)", calls)
	}
	for i := range 10 {
		if _, err := a.Authenticate(ctx, fmt.Sprintf("v%d", i)); err != nil {
			t.Fatal(err)
		}
		if len(a.cache) > a.maxSize {
			t.Fatalf("cache holds %d entries, more than %d", len(a.cache), a.maxSize)
		}
	}
	for k := range a.cache {
		if bytes.Contains(k[:], []byte("v1")) {
			t.Errorf("the cache key holds the token")
		}
	}
}

func TestFanoutDropsLateAnswers(t *testing.T) {
	reqs := []federation.Request{{Destination: "fast.test"}, {Destination: "slow.test"}, {Destination: "failing.test"}}
	release := make(chan struct{})
	out := federation.FanOut(context.Background(),
		func(ctx context.Context, s core.ServerName, _ []byte) core.RemoteOutcome {
			switch s {
			case "fast.test":
				return core.RemoteOutcome{Status: 200, Body: []byte(`{}`)}
			case "failing.test":
				return core.RemoteOutcome{Failure: &core.Failure{Status: 502, Message: "refused"}}
			}
			<-release // ignores ctx: answers after the fan-out gave up
			return core.RemoteOutcome{Status: 200}
		}, reqs, 100*time.Millisecond)
	close(release)
	if o := out["fast.test"]; o.Status != 200 {
		t.Errorf("fast: %+v", o)
	}
	if o := out["failing.test"]; o.Failure == nil || o.Failure.Status != 502 {
		t.Errorf("failing: %+v", o)
	}
	if o := out["slow.test"]; o.Failure == nil || o.Failure.Status != StatusRemoteTimeout {
		t.Errorf("slow: %+v", o)
	}
	time.Sleep(20 * time.Millisecond)
	if len(out) != 3 {
		t.Errorf("a late answer changed the result: %v", out)
	}
}

func TestDestinationLabelsAreCapped(t *testing.T) {
	m := newMetrics()
	for i := range MaxDestinationLabels + 50 {
		for range 2 {
			m.ObserveRequest(federation.RequestEvent{Destination: core.ServerName(fmt.Sprintf("hs%d.test", i)), Endpoint: federation.EndpointClaim, Outcome: federation.OutcomeOK, Status: 200, Latency: time.Millisecond})
		}
	}
	m.ObserveRequest(federation.RequestEvent{Destination: "hs0.test", Endpoint: federation.EndpointClaim, Outcome: federation.OutcomeBackoff, Status: 503})
	families, err := m.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]int{}
	for _, f := range families {
		switch f.GetName() {
		case "keyclaim_federation_requests_total", "keyclaim_federation_request_duration_seconds":
			counts[f.GetName()] = len(f.GetMetric())
			for _, metric := range f.GetMetric() {
				for _, l := range metric.GetLabel() {
					if l.GetName() == "destination" && l.GetValue() == OtherDestinations {
						want := 100.0 // 50 destinations, twice each
						if c := metric.GetCounter(); c != nil && c.GetValue() != want {
							t.Errorf("%s = %v, want %v", OtherDestinations, c.GetValue(), want)
						}
						if h := metric.GetHistogram(); h != nil && float64(h.GetSampleCount()) != want {
							t.Errorf("%s latency count = %v, want %v", OtherDestinations, h.GetSampleCount(), want)
						}
					}
				}
			}
		}
	}
	// 100 named destinations and "(other)"; the backed-off request adds a counter series only.
	if counts["keyclaim_federation_requests_total"] != MaxDestinationLabels+2 || counts["keyclaim_federation_request_duration_seconds"] != MaxDestinationLabels+1 {
		t.Errorf("series: %v", counts)
	}
}

func FuzzParseUpload(f *testing.F) {
	id := Identity{User: "@bob:hs.test", Device: "BOBDEV"}
	for _, seed := range []string{
		``, `{}`, `{"device_keys":{"user_id":"@bob:hs.test","device_id":"BOBDEV","keys":{}}}`,
		`{"device_keys":{"user_id":"@bob:hs.test","device_id":"BOBDEV","algorithms":["a"],"keys":{"ed25519:BOBDEV":"k"},"signatures":{"@bob:hs.test":{"ed25519:BOBDEV":"s"}},"unsigned":{}}}`,
		`{"one_time_keys":{"signed_curve25519:A":{"key":"a"}},"fallback_keys":{"a:b":"c"}}`,
		`{"one_time_keys":{"x":1}}`, `[`, "{\"a\":\"\xff\"}",
		`{"one_time_keys":{"a:b":{"key":"k","signatures":null}},"fallback_keys":{"a:c":{"key":"k","x":[null]}}}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		up, err := ParseUpload(body, id)
		if err != nil {
			var ce *core.Error
			if !errors.As(err, &ce) {
				t.Fatalf("error is not a *core.Error: %v", err)
			}
			if status, _ := toHTTP(err); status != 400 {
				t.Fatalf("status %d for %v", status, err)
			}
			return
		}
		if !up.Checked && (up.DeviceKeys != nil || len(up.OneTimeKeys) > 0 || len(up.FallbackKeys) > 0) {
			t.Fatalf("an upload with something to store is not marked Checked")
		}
		if up.DeviceKeys != nil && !bytes.Contains(body, up.DeviceKeys) {
			t.Fatalf("device keys %q are not bytes of the body", up.DeviceKeys)
		}
		if up.DeviceKeys != nil && !deviceKeysShapeOK(up.DeviceKeys) {
			t.Fatalf("device keys %q accepted without the shape of DeviceKeys", up.DeviceKeys)
		}
		for _, m := range []map[string][]byte{toBytes(up.OneTimeKeys), toBytes(up.FallbackKeys)} {
			for kid, v := range m {
				if _, err := core.ParseKeyID(kid); err != nil {
					t.Fatalf("invalid key ID accepted: %q", kid)
				}
				c, err := core.Canonical(v)
				if err != nil || !bytes.Equal(c, v) {
					t.Fatalf("key %q is not canonical JSON: %q", kid, v)
				}
				if pv, _ := core.ParseValue(v); !core.IsKeyValue(&pv) {
					t.Fatalf("key %q accepted, but it is not a key value (a null in it?): %q", kid, v)
				}
				if !keyObjectShapeOK(v) {
					t.Fatalf("key %q accepted without the shape of the spec's KeyObject: %q", kid, v)
				}
			}
		}
	})
}

// keyObjectShapeOK reports whether raw is a string or what the spec's KeyObject requires: key a
// string, signatures an object of "@..." to objects of strings. It reads with encoding/json.
func keyObjectShapeOK(raw []byte) bool {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return true
	}
	var o struct {
		Key        *string                       `json:"key"`
		Signatures map[string]map[string]*string `json:"signatures"`
	}
	if json.Unmarshal(raw, &o) != nil || o.Key == nil || o.Signatures == nil {
		return false
	}
	for user, sigs := range o.Signatures {
		if !strings.HasPrefix(user, "@") || sigs == nil {
			return false
		}
		for _, sig := range sigs {
			if sig == nil {
				return false
			}
		}
	}
	return true
}

// deviceKeysShapeOK reports whether raw has what the spec's DeviceKeys requires: user_id and
// device_id strings, algorithms an array of strings, keys an object of strings, signatures an
// object of "@..." to objects of strings. It reads with encoding/json, independently of core.
func deviceKeysShapeOK(raw []byte) bool {
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) != nil {
		return false
	}
	str := func(v json.RawMessage) bool {
		var s string
		return len(v) > 0 && v[0] == '"' && json.Unmarshal(v, &s) == nil
	}
	objectOfStrings := func(v json.RawMessage) bool {
		var o map[string]json.RawMessage
		if len(v) == 0 || v[0] != '{' || json.Unmarshal(v, &o) != nil {
			return false
		}
		for _, s := range o {
			if !str(s) {
				return false
			}
		}
		return true
	}
	var algs, sigs = m["algorithms"], m["signatures"]
	var items []json.RawMessage
	if !str(m["user_id"]) || !str(m["device_id"]) || !objectOfStrings(m["keys"]) ||
		len(algs) == 0 || algs[0] != '[' || json.Unmarshal(algs, &items) != nil ||
		len(sigs) == 0 || sigs[0] != '{' {
		return false
	}
	for _, a := range items {
		if !str(a) {
			return false
		}
	}
	var byUser map[string]json.RawMessage
	if json.Unmarshal(sigs, &byUser) != nil {
		return false
	}
	for user, s := range byUser {
		if !objectOfStrings(s) || len(user) == 0 || user[0] != '@' {
			return false
		}
	}
	return true
}

func toBytes[T ~[]byte](m map[string]T) map[string][]byte {
	out := make(map[string][]byte, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func FuzzParseKeyQuery(f *testing.F) {
	for _, seed := range []string{
		`{"device_keys":{"@a:hs.test":[]}}`, `{"device_keys":{"@a:hs.test":["A","A"],"@b:x.test":["B"]},"timeout":5}`,
		`{"device_keys":[]}`, `{}`, `{"device_keys":{"a":[]}}`,
	} {
		f.Add([]byte(seed), false)
	}
	f.Fuzz(func(t *testing.T, body []byte, federation bool) {
		q, err := ParseKeyQuery(body, federation, "hs.test", 100, time.Second, 2*time.Second)
		if err != nil {
			if status, _ := toHTTP(err); status != 400 {
				t.Fatalf("status %d for %v", status, err)
			}
			return
		}
		for i, u := range q.Users {
			if i > 0 && q.Users[i-1].User >= u.User {
				t.Fatalf("users not sorted: %v", q.Users)
			}
			if federation && u.User.Server() != "hs.test" {
				t.Fatalf("non-local user accepted: %s", u.User)
			}
		}
		if q.Timeout < 0 || q.Timeout > 2*time.Second {
			t.Fatalf("timeout %s out of bounds", q.Timeout)
		}
	})
}

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"sqlite:./var/keyclaim.db":                         "sqlite:./var/keyclaim.db",
		"postgres://kc:secret@db:5432/kc?sslmode=disable":  "postgres://kc:xxxxx@db:5432/kc?sslmode=disable",
		"postgres://db/kc?password=secret&sslmode=disable": "postgres://db/kc?password=xxxxx&sslmode=disable",
		"postgresql://kc@db/kc":                            "postgresql://kc@db/kc",
	} {
		if got := redact(in); got != want {
			t.Errorf("redact(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestWriteErrorAfterCommit: an error met while the answer was already being written (a client
// that went away) is logged as an undelivered answer with the status sent, not as a failure of
// the server, and nothing more is written; an error before the answer is still answered and, for
// a 5xx, logged as a failure.
func TestWriteErrorAfterCommit(t *testing.T) {
	var logs bytes.Buffer
	s := &Server{logger: slog.New(slog.NewTextHandler(&logs, nil))}
	e := echo.New()

	rec := httptest.NewRecorder()
	c := e.NewContext(httptest.NewRequest(http.MethodPost, "/_matrix/client/v3/keys/query", nil), rec)
	if err := c.Blob(http.StatusOK, echo.MIMEApplicationJSON, []byte(`{"device_keys":`)); err != nil {
		t.Fatal(err)
	}
	s.writeError(c, errors.New("write tcp: connection reset by peer"))
	if got := rec.Body.String(); got != `{"device_keys":` {
		t.Errorf("written after the commit: %q", got)
	}
	if out := logs.String(); !strings.Contains(out, "level=WARN") || !strings.Contains(out, `msg="answer not delivered"`) ||
		!strings.Contains(out, "status=200") || strings.Contains(out, "request failed") {
		t.Errorf("log: %s", out)
	}

	logs.Reset()
	rec = httptest.NewRecorder()
	c = e.NewContext(httptest.NewRequest(http.MethodPost, "/_matrix/client/v3/keys/query", nil), rec)
	s.writeError(c, errors.New("the store is down"))
	if rec.Code != http.StatusInternalServerError || !strings.Contains(rec.Body.String(), `"errcode":"M_UNKNOWN"`) {
		t.Errorf("answer: %d %s", rec.Code, rec.Body.String())
	}
	if out := logs.String(); !strings.Contains(out, "level=ERROR") || !strings.Contains(out, `msg="request failed"`) {
		t.Errorf("log: %s", out)
	}
}

// TestJudgeRemoteQueryKeepsText: a remote query answer is read once, and the device keys kept
// are the remote server's text byte for byte (white space and escapes included), for the
// requested devices only.
func TestJudgeRemoteQueryKeepsText(t *testing.T) {
	dev := "{ \"device_id\" : \"D\\u0031\",\n\"keys\":{\"ed25519:D1\":\"k\"}, \"user_id\":\"@a:r.test\" }"
	body := `{"failures":{"x":{"y":{"z":1}}},"device_keys":{"@a:r.test":{"D1": ` + dev + ` ,"D2":{"device_id":"D2","user_id":"@a:r.test"}},"@b:r.test":{"D":{}}}}`
	out, f := judgeRemoteQuery([]QueryUser{{User: "@a:r.test", Devices: []string{"D1"}}, {User: "@c:r.test"}}, core.RemoteOutcome{Status: 200, Body: []byte(body)})
	if f != nil {
		t.Fatal(f)
	}
	if len(out) != 2 || len(out["@a:r.test"]) != 1 || string(out["@a:r.test"]["D1"]) != dev || len(out["@c:r.test"]) != 0 {
		t.Fatalf("%q", out)
	}
	for _, bad := range []string{`{"device_keys":{"@a:r.test":{"D1":{},"D1":{}}}}`, `{"device_keys":[]}`, `{"device_keys":{}`} {
		if _, f := judgeRemoteQuery([]QueryUser{{User: "@a:r.test"}}, core.RemoteOutcome{Status: 200, Body: []byte(bad)}); f == nil || f.Status != core.StatusBadRemoteAnswer {
			t.Errorf("%s: %v", bad, f)
		}
	}
}
