package core_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/keyclaim/keyclaim/core"
)

func TestParseClaimRequest(t *testing.T) {
	small := core.Limits{MaxBodyBytes: 200, MaxPairs: 2, DefaultTimeoutMS: 5000, MaxTimeoutMS: 20000}
	for _, tc := range []struct {
		name string
		body string
		opts core.ParseOptions
		want string // canonical request, or "" when an error is expected
		code core.Code
	}{
		{name: "sorted and default timeout",
			body: `{"one_time_keys":{"@b:hs":{"Y":"alg","X":"alg"},"@a:hs":{}}}`,
			want: `{"one_time_keys":{"@a:hs":{},"@b:hs":{"X":"alg","Y":"alg"}},"timeout":10000}`},
		{name: "body timeout wins over query",
			body: `{"one_time_keys":{},"timeout":700}`, opts: core.ParseOptions{QueryTimeout: "900"},
			want: `{"one_time_keys":{},"timeout":700}`},
		{name: "query timeout when body has none",
			body: `{"one_time_keys":{}}`, opts: core.ParseOptions{QueryTimeout: "900"},
			want: `{"one_time_keys":{},"timeout":900}`},
		{name: "null timeout is absent",
			body: `{"one_time_keys":{},"timeout":null}`, opts: core.ParseOptions{QueryTimeout: "900"},
			want: `{"one_time_keys":{},"timeout":900}`},
		{name: "timeout clamped",
			body: `{"one_time_keys":{},"timeout":99999999999999999999999}`,
			want: `{"one_time_keys":{},"timeout":60000}`},
		{name: "custom limits default and clamp",
			body: `{"one_time_keys":{},"timeout":30000}`, opts: core.ParseOptions{Limits: small},
			want: `{"one_time_keys":{},"timeout":20000}`},
		{name: "federation has no timeout",
			body: `{"one_time_keys":{"@a:hs1":{"D":"alg"}},"timeout":5000}`,
			opts: core.ParseOptions{Flavour: core.FlavourFederation, ServerName: "hs1", QueryTimeout: "junk"},
			want: `{"one_time_keys":{"@a:hs1":{"D":"alg"}}}`},
		{name: "federation checks the body timeout",
			body: `{"one_time_keys":{"@a:hs1":{"D":"alg"}},"timeout":"junk"}`,
			opts: core.ParseOptions{Flavour: core.FlavourFederation, ServerName: "hs1"}, code: core.CodeInvalidParam},
		{name: "federation negative timeout",
			body: `{"one_time_keys":{},"timeout":-5}`,
			opts: core.ParseOptions{Flavour: core.FlavourFederation, ServerName: "hs1"}, code: core.CodeInvalidParam},
		{name: "federation rejects non-local user",
			body: `{"one_time_keys":{"@a:hs2":{"D":"alg"}}}`,
			opts: core.ParseOptions{Flavour: core.FlavourFederation, ServerName: "hs1"}, code: core.CodeInvalidParam},
		{name: "negative timeout", body: `{"one_time_keys":{},"timeout":-1}`, code: core.CodeInvalidParam},
		{name: "fractional timeout", body: `{"one_time_keys":{},"timeout":1.5}`, code: core.CodeInvalidParam},
		{name: "string timeout", body: `{"one_time_keys":{},"timeout":"10"}`, code: core.CodeInvalidParam},
		{name: "bad query timeout", body: `{"one_time_keys":{}}`, opts: core.ParseOptions{QueryTimeout: "-5"}, code: core.CodeInvalidParam},
		{name: "too large", body: `{"one_time_keys":{}}` + strings.Repeat(" ", 200), opts: core.ParseOptions{Limits: small}, code: core.CodeTooLarge},
		{name: "too many pairs", body: `{"one_time_keys":{"@a:hs":{"A":"x","B":"x","C":"x"}}}`, opts: core.ParseOptions{Limits: small}, code: core.CodeInvalidParam},
		{name: "pairs at the limit", body: `{"one_time_keys":{"@a:hs":{"A":"x","B":"x"}}}`, opts: core.ParseOptions{Limits: small},
			want: `{"one_time_keys":{"@a:hs":{"A":"x","B":"x"}},"timeout":5000}`},
		{name: "not an object", body: `[]`, code: core.CodeBadJSON},
		{name: "not JSON", body: `{"one_time_keys":`, code: core.CodeNotJSON},
		{name: "syntax error outranks earlier shape error", body: `{"one_time_keys":[],"x":}`, code: core.CodeNotJSON},
		{name: "missing one_time_keys", body: `{"timeout":5}`, code: core.CodeBadJSON},
		{name: "null one_time_keys", body: `{"one_time_keys":null}`, code: core.CodeBadJSON},
		{name: "device map not an object", body: `{"one_time_keys":{"@a:hs":["D"]}}`, code: core.CodeBadJSON},
		{name: "algorithm not a string", body: `{"one_time_keys":{"@a:hs":{"D":1}}}`, code: core.CodeBadJSON},
		{name: "empty device ID", body: `{"one_time_keys":{"@a:hs":{"":"alg"}}}`, code: core.CodeInvalidParam},
		{name: "empty algorithm", body: `{"one_time_keys":{"@a:hs":{"D":""}}}`, code: core.CodeInvalidParam},
		{name: "invalid user ID", body: `{"one_time_keys":{"alice":{}}}`, code: core.CodeInvalidParam},
		{name: "duplicate top-level key", body: `{"one_time_keys":{},"one_time_keys":{}}`, code: core.CodeBadJSON},
		{name: "duplicate user", body: `{"one_time_keys":{"@a:hs":{},"@a:hs":{}}}`, code: core.CodeBadJSON},
		{name: "duplicate device", body: `{"one_time_keys":{"@a:hs":{"D":"x","D":"y"}}}`, code: core.CodeBadJSON},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := core.ParseClaimRequest([]byte(tc.body), tc.opts)
			if tc.want == "" {
				if !errors.Is(err, &core.Error{Code: tc.code}) {
					t.Fatalf("err = %v, want %s", err, tc.code)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := string(req.AppendJSON(nil)); got != tc.want {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

// TestFederationTimeoutErrorAsClient: a bad body timeout is the same error, errcode and message,
// on both endpoints (BRIEF 2 covers both).
func TestFederationTimeoutErrorAsClient(t *testing.T) {
	for _, timeout := range []string{"-5", "1.5", "1e-3", "-1e3", `"10"`, "true", "{}"} {
		body := []byte(`{"one_time_keys":{"@a:hs1":{"D":"alg"}},"timeout":` + timeout + `}`)
		_, cerr := core.ParseClaimRequest(body, core.ParseOptions{})
		_, ferr := core.ParseClaimRequest(body, core.ParseOptions{Flavour: core.FlavourFederation, ServerName: "hs1"})
		if !errors.Is(ferr, &core.Error{Code: core.CodeInvalidParam}) || cerr == nil || ferr.Error() != cerr.Error() {
			t.Errorf("timeout %s: federation %v, client %v", timeout, ferr, cerr)
		}
	}
}

func TestInvalidUserIDErrorNamesTheID(t *testing.T) {
	_, err := core.ParseClaimRequest([]byte(`{"one_time_keys":{"@bob:bad host":{}}}`), core.ParseOptions{})
	if err == nil || !strings.Contains(err.Error(), `"@bob:bad host"`) {
		t.Fatalf("error %v does not name the user ID", err)
	}
}

func TestPlanFanout(t *testing.T) {
	req := mustParse(t, `{"one_time_keys":{"@a:hs1":{"A":"x"},"@e:hs1":{},"@b:hs2":{"B":"x"},"@c:hs3":{},"@d:hs2":{"D":"y"}}}`)
	plan := core.PlanFanout(req, "hs1")
	want := `{"local":{"one_time_keys":{"@a:hs1":{"A":"x"}}},"remote":{"hs2":{"one_time_keys":{"@b:hs2":{"B":"x"},"@d:hs2":{"D":"y"}}}}}`
	if got := string(plan.AppendJSON(nil)); got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

func mustParse(t testing.TB, body string) *core.ClaimRequest {
	t.Helper()
	req, err := core.ParseClaimRequest([]byte(body), core.ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// TestCompleteClientNative checks the Go API that hosts call directly (the JSON operations are
// covered by the vectors): local results, remote outcomes, modes.
func TestCompleteClientNative(t *testing.T) {
	req := mustParse(t, `{"one_time_keys":{"@a:hs1":{"A1":"signed_curve25519","A2":"signed_curve25519"},"@b:hs2":{"B1":"signed_curve25519"},"@c:hs3":{"C1":"signed_curve25519"}}}`)
	local := core.LocalResults{"@a:hs1": {
		"A1": {KeyID: "signed_curve25519:K", Key: []byte(`{"key":"k"}`)},
	}}
	remote := map[core.ServerName]core.RemoteOutcome{
		"hs1": {Failure: &core.Failure{Status: 500, Message: "our own server is never a failure"}},
		"hs2": {Status: 200, Body: []byte(`{"one_time_keys":{"@b:hs2":{"B1":{"signed_curve25519:R":"r"}},"@a:hs1":{"A2":{"signed_curve25519:EVIL":"e"}}}}`)},
		"hs3": {Status: 404, Body: []byte(`<html>nope</html>`)},
	}
	for _, tc := range []struct {
		mode core.Mode
		want string
	}{
		{core.ModeMSC4072, `{"failures":{"hs3":{"message":"the remote server answered HTTP 404","status":404}},"one_time_keys":{"@a:hs1":{"A1":{"signed_curve25519:K":{"key":"k"}},"A2":{}},"@b:hs2":{"B1":{"signed_curve25519:R":"r"}}}}`},
		{core.ModeLegacy, `{"failures":{"hs3":{"message":"the remote server answered HTTP 404","status":404}},"one_time_keys":{"@a:hs1":{"A1":{"signed_curve25519:K":{"key":"k"}}},"@b:hs2":{"B1":{"signed_curve25519:R":"r"}}}}`},
	} {
		t.Run(string(tc.mode), func(t *testing.T) {
			resp := core.CompleteClient(req, local, remote, core.CompleteOptions{Mode: tc.mode, ServerName: "hs1"})
			if got := string(resp.AppendJSON(nil)); got != tc.want {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

func TestInventoryClaimOrder(t *testing.T) {
	inv := &core.DeviceInventory{
		OneTimeKeys: []core.OneTimeKey{
			{KeyID: "alg:c", Batch: 2, Key: []byte(`"c"`)},
			{KeyID: "alg:b", Batch: 1, Key: []byte(`"b"`)},
			{KeyID: "other:a", Batch: 0, Key: []byte(`"o"`)},
			{KeyID: "alg:a", Batch: 1, Key: []byte(`"a"`)},
		},
		FallbackKeys: []core.FallbackKey{{KeyID: "alg:f", Key: []byte(`"f"`)}},
	}
	var got []string
	for range 5 {
		k, ok := inv.Claim("alg")
		if !ok {
			got = append(got, "-")
			continue
		}
		got = append(got, fmt.Sprintf("%s/%v", k.KeyID, k.Fallback))
	}
	want := "[alg:a/false alg:b/false alg:c/false alg:f/true alg:f/true]"
	if fmt.Sprint(got) != want {
		t.Errorf("claims = %v, want %s", got, want)
	}
	if !inv.FallbackKeys[0].Used {
		t.Error("fallback key not marked used")
	}
	if _, ok := inv.Claim("nothing"); ok {
		t.Error("claimed a key of an algorithm the device does not have")
	}
}

func TestTrackerBoundedMemory(t *testing.T) {
	tr := core.NewTracker(core.TrackerConfig{ServerName: "hs1", MaxEntries: 100})
	for round := range 50 {
		c := &core.Classification{}
		for i := range 1000 {
			c.Devices = append(c.Devices, core.DeviceOutcome{
				User: core.UserID(fmt.Sprintf("@u%d:hs%d", i, 2+i%7)), Device: core.DeviceID(fmt.Sprintf("D%d", round)), Outcome: core.OutcomeNoKeys,
			})
		}
		tr.Observe(int64(round)*1000, c)
		if tr.Len() > 100 {
			t.Fatalf("round %d: tracker holds %d entries, limit 100", round, tr.Len())
		}
	}
}

func TestTrackerBackoffDoubling(t *testing.T) {
	tr := core.NewTracker(core.TrackerConfig{})
	want := core.ClaimRequest{Users: []core.UserClaim{{User: "@b:hs2", Devices: []core.DeviceClaim{{Device: "D", Algorithm: "alg"}}}}}
	noKeys := &core.Classification{Devices: []core.DeviceOutcome{{User: "@b:hs2", Device: "D", Outcome: core.OutcomeNoKeys}}}
	now := int64(0)
	var delays []int64
	for range 9 {
		tr.Observe(now, noKeys)
		_, deferred := tr.Plan(now, &want)
		if len(deferred.Devices) != 1 {
			t.Fatalf("at %d the device is not deferred", now)
		}
		retry := deferred.Devices[0].RetryAt
		delays = append(delays, (retry-now)/1000)
		if next, _ := tr.Plan(retry-1, &want); len(next.Users) != 0 {
			t.Fatalf("planned 1 ms before the retry time")
		}
		if next, _ := tr.Plan(retry, &want); len(next.Users) != 1 {
			t.Fatalf("not planned at the retry time")
		}
		now = retry
	}
	if got, want := fmt.Sprint(delays), "[15 30 60 120 240 480 900 900 900]"; got != want {
		t.Errorf("delays (s) = %s, want %s", got, want)
	}
}

// TestParseMillis pins the integral-number rule of timeouts (issue 14, fix 6) beyond the
// vectors: what is an integer by value, what saturates, what is refused.
func TestParseMillis(t *testing.T) {
	ok := map[string]int64{
		"0": 0, "-0": 0, "0.0": 0, "-0.0e5": 0, "0e-400": 0, "007": 7, "1000": 1000, "1000.0": 1000, "1e3": 1000,
		"1E3": 1000, "1e+3": 1000, "1.5e3": 1500, "10000e-1": 1000, "1.000": 1, "123.4500e2": 12345,
		"99999999999999999999999": 1 << 50, "1e400": 1 << 50, "1e99999999999999999999": 1 << 50, "1125899906842624": 1 << 50,
		"9007199254740993": 1 << 50, "1125899906842623": 1<<50 - 1,
	}
	for s, want := range ok {
		if got, good := core.ParseMillis(s); !good || got != want {
			t.Errorf("ParseMillis(%q) = %d, %v; want %d", s, got, good, want)
		}
	}
	for _, s := range []string{"", "-", "-1", "-1e3", "-0.5", "1.5", "1e-3", "0.1", "1.", ".5", "1e", "1e+", "+5", " 5", "5 ", "0x10", "1_000", "NaN", "Infinity", "１", "1e-99999999999999999999"} {
		if got, good := core.ParseMillis(s); good {
			t.Errorf("ParseMillis(%q) = %d, accepted", s, got)
		}
	}
}
