package core_test

import (
	"bytes"
	"encoding/json"
	"math/big"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/keyclaim/keyclaim/core"
)

// Fuzz targets for every parser: nothing panics, and what parses re-encodes to the same meaning.
// Seeds come from the unit tests; `make fuzz` runs each for a while.

func FuzzParseValue(f *testing.F) {
	for _, s := range []string{`{"a":[1,2,{"b":null}]}`, `"\u00e9\ud83d\ude00"`, `[true,false,-0.5e10]`, `{"a":1,"a":2}`, "\"\xff\""} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := core.ParseValue(data)
		if err != nil {
			return
		}
		out := v.AppendJSON(nil)
		again, err := core.Canonical(out)
		if err != nil {
			t.Fatalf("canonical output %q does not parse: %v", out, err)
		}
		if !bytes.Equal(again, out) {
			t.Fatalf("canonical form is not stable:\n%s\n%s", out, again)
		}
		// Whatever we accept, encoding/json accepts with the same meaning.
		var a, b any
		da := json.NewDecoder(bytes.NewReader(data))
		da.UseNumber()
		if err := da.Decode(&a); err != nil {
			t.Fatalf("accepted %q, which encoding/json rejects: %v", data, err)
		}
		db := json.NewDecoder(bytes.NewReader(out))
		db.UseNumber()
		if err := db.Decode(&b); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("meaning changed: %#v vs %#v", a, b)
		}
	})
}

// serverNameGrammar is the grammar of the spec appendices' "Server Name" as a regular expression.
// IPv4address (1*3DIGIT "." ...) is left out: it is a subset of dns-name. IPv6address is
// 2*45IPv6char; core also checks such a literal against RFC 3513, as the appendix's prose
// requires, so it accepts a subset of that branch.
var serverNameGrammar = regexp.MustCompile(`^(?:\[[0-9A-Fa-f:.]{2,45}\]|[0-9A-Za-z.-]{1,255})(?::[0-9]{1,5})?$`)

// FuzzParseUserID checks ParseUserID against the spec grammar: what it accepts matches the grammar,
// and a user ID whose server name matches the grammar without a bracketed IPv6 literal (and
// whose localpart and length are fine) is accepted.
func FuzzParseUserID(f *testing.F) {
	for _, s := range []string{"@a:hs", "@:hs", "@a:[::1]:80", "@a:1.2.3.4", "a", "@a:hs:99999", "@a:[1::2::3]",
		"@a:999.1.1.1", "@a:hs:65536", "@a:hs:0", "@a:hs:123456", "@a:[::ffff:1.2.3.4]:99999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := core.ParseUserID(s)
		if err != nil {
			if local, server, ok := strings.Cut(strings.TrimPrefix(s, "@"), ":"); ok && s[0] == '@' &&
				len(s) <= core.MaxUserIDBytes && utf8.ValidString(local) && !strings.Contains(local, "\x00") &&
				!strings.HasPrefix(server, "[") && serverNameGrammar.MatchString(server) {
				t.Fatalf("rejected %q, whose server name matches the grammar: %v", s, err)
			}
			return
		}
		if !serverNameGrammar.MatchString(string(u.Server())) {
			t.Fatalf("accepted %q, whose server name does not match the grammar", s)
		}
		if len(u) > core.MaxUserIDBytes {
			t.Fatalf("accepted a %d-byte user ID", len(u))
		}
		if _, err := core.ParseServerName(string(u.Server())); err != nil {
			t.Fatalf("accepted %q whose server name is invalid: %v", s, err)
		}
		if "@"+u.Localpart()+":"+string(u.Server()) != s {
			t.Fatalf("%q does not split back into itself", s)
		}
	})
}

func FuzzParseClaimRequest(f *testing.F) {
	for _, s := range []string{
		`{"one_time_keys":{"@a:hs1":{"D":"alg"},"@b:hs2":{}},"timeout":5}`,
		`{"one_time_keys":{"@a:hs1":{"D":"alg","D":"x"}}}`,
		`{"one_time_keys":null}`, `[]`, `{"one_time_keys":{"\u0040a:hs":{}}}`,
	} {
		f.Add([]byte(s), "", false)
	}
	f.Fuzz(func(t *testing.T, body []byte, query string, federation bool) {
		opts := core.ParseOptions{QueryTimeout: query, ServerName: "hs1", Limits: core.Limits{MaxPairs: 50}}
		if federation {
			opts.Flavour = core.FlavourFederation
		}
		req, err := core.ParseClaimRequest(body, opts)
		if err != nil {
			var e *core.Error
			if !asError(err, &e) {
				t.Fatalf("error of type %T, want *core.Error", err)
			}
			return
		}
		if req.Pairs() > 50 {
			t.Fatalf("accepted %d pairs over the limit", req.Pairs())
		}
		if !federation && (req.TimeoutMS < 0 || req.TimeoutMS > 60000) {
			t.Fatalf("timeout %d out of range", req.TimeoutMS)
		}
		out := req.AppendJSON(nil)
		again, err := core.ParseClaimRequest(out, opts)
		if err != nil {
			t.Fatalf("re-encoded request %s does not parse: %v", out, err)
		}
		if out2 := again.AppendJSON(nil); !bytes.Equal(out, out2) {
			t.Fatalf("round trip changed the request:\n%s\n%s", out, out2)
		}
	})
}

// FuzzCompleteClient feeds arbitrary remote answers to completion and checks the MSC4072
// invariant: every requested device is answered exactly once, in one_time_keys or through its
// server in failures, and nothing unrequested or null appears.
func FuzzCompleteClient(f *testing.F) {
	for _, s := range []string{
		`{"one_time_keys":{"@b:hs2":{"B1":{"alg:x":"k"},"EVIL":{}},"@z:hs9":{}}}`,
		`{"one_time_keys":{"@b:hs2":{"B1":{"alg:x":{"key":"k"},"alg:a":{"key":1}}}}}`,
		`{"one_time_keys":[]}`, `<html>`, `{"one_time_keys":{"@b:hs2":"x"}}`, `null`,
		`{"one_time_keys":{"@b:hs2":{"B1":{"alg:x":{"key":"k","signatures":null},"alg:y":{ "key":"y", "u":{"n":null} }}}}}`,
	} {
		f.Add([]byte(s), 200)
	}
	f.Add([]byte(`{"errcode":"M_X\n","error":"`+strings.Repeat("é", 700)+`"}`), 500)
	req, err := core.ParseClaimRequest([]byte(`{"one_time_keys":{"@a:hs1":{"A1":"alg"},"@b:hs2":{"B1":"alg","B2":"alg"},"@c:hs2":{},"@d:hs2":{"D1":"alg"}}}`), core.ParseOptions{})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body []byte, status int) {
		for _, mode := range []core.Mode{core.ModeMSC4072, core.ModeLegacy} {
			resp := core.CompleteClient(req, nil, map[core.ServerName]core.RemoteOutcome{"hs2": {Status: status, Body: body}}, core.CompleteOptions{Mode: mode, ServerName: "hs1"})
			out := resp.AppendJSON(nil)
			if mode == core.ModeMSC4072 {
				checkComplete(t, req, out, body)
			}
			checkTally(t, req, resp.Tally(), out)
		}
	})
}

// checkTally checks that the outcome counts of a tally are what a client classifying the answer
// finds (ClassifyClaim), and that the other counts are not negative.
func checkTally(t *testing.T, req *core.ClaimRequest, got core.Tally, out []byte) {
	t.Helper()
	cls, err := core.ClassifyClaim(req, out)
	if err != nil {
		t.Fatalf("the completed answer cannot be classified: %v\n%s", err, out)
	}
	var want core.Tally
	for _, d := range cls.Devices {
		switch d.Outcome {
		case core.OutcomeClaimed:
			want.Claimed++
		case core.OutcomeNoKeys:
			want.NoKeys++
		case core.OutcomeServerFailed:
			want.ServerFailed++
		}
	}
	if got.Claimed != want.Claimed || got.NoKeys != want.NoKeys || got.ServerFailed != want.ServerFailed || got.Filled < 0 || got.Dropped < 0 || got.Filled > got.NoKeys {
		t.Fatalf("tally %+v, classification %+v\n%s", got, want, out)
	}
}

// checkComplete checks the MSC4072 invariant on a completed client answer out to req.
func checkComplete(t *testing.T, req *core.ClaimRequest, out, body []byte) {
	t.Helper()
	var got struct {
		Failures    map[string]json.RawMessage                       `json:"failures"`
		OneTimeKeys map[string]map[string]map[string]json.RawMessage `json:"one_time_keys"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("output %s is not the claim response shape: %v", out, err)
	}
	if got.Failures == nil || got.OneTimeKeys == nil || hasNull(t, out) {
		t.Fatalf("output %s has a null or missing map", out)
	}
	for server, raw := range got.Failures {
		var f struct {
			Errcode *string `json:"errcode"`
			Message string  `json:"message"`
		}
		if err := json.Unmarshal(raw, &f); err != nil || len(f.Message) > core.MaxFailureMessageBytes || f.Errcode != nil && !core.IsErrcode(*f.Errcode) {
			t.Fatalf("failure of %s is not bounded: %s", server, raw)
		}
	}
	_, hs2Failed := got.Failures["hs2"]
	if _, ok := got.Failures["hs1"]; ok {
		t.Fatalf("our own server in failures: %s", out)
	}
	for _, u := range req.Users {
		devs, present := got.OneTimeKeys[string(u.User)]
		if u.User.Server() == "hs2" && hs2Failed {
			if present {
				t.Fatalf("user %s of a failed server in one_time_keys: %s", u.User, out)
			}
			continue
		}
		if !present {
			t.Fatalf("user %s missing: %s", u.User, out)
		}
		if len(devs) != len(u.Devices) {
			t.Fatalf("user %s has %d devices, asked for %d: %s", u.User, len(devs), len(u.Devices), out)
		}
		for _, d := range u.Devices {
			keys, ok := devs[string(d.Device)]
			if !ok || len(keys) > 1 {
				t.Fatalf("device %s/%s answered %v: %s", u.User, d.Device, keys, out)
			}
		}
	}
	if len(got.OneTimeKeys)+countFailedUsers(req, got.Failures) != len(req.Users) {
		t.Fatalf("unrequested users in %s", out)
	}
}

// hasNull reports whether the JSON text out holds a null anywhere (BRIEF 4: nothing anywhere is
// null, keys included).
func hasNull(t *testing.T, out []byte) bool {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(out))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		t.Fatalf("output %s is not JSON: %v", out, err)
	}
	var walk func(any) bool
	walk = func(v any) bool {
		switch v := v.(type) {
		case nil:
			return true
		case []any:
			for _, x := range v {
				if walk(x) {
					return true
				}
			}
		case map[string]any:
			for _, x := range v {
				if walk(x) {
					return true
				}
			}
		}
		return false
	}
	return walk(v)
}

func countFailedUsers(req *core.ClaimRequest, failures map[string]json.RawMessage) int {
	n := 0
	for _, u := range req.Users {
		if _, ok := failures[string(u.User.Server())]; ok {
			n++
		}
	}
	return n
}

func FuzzClassifyClaim(f *testing.F) {
	for _, s := range []string{
		`{"failures":{"hs3":{}},"one_time_keys":{"@b:hs2":{"B1":{"alg:x":"k"}}}}`,
		`{"one_time_keys":null,"failures":null}`, `[]`, `{"one_time_keys":{"@b:hs2":{"B1":{"alg:x":"k","alg:x":"j"}}}}`,
		`{"one_time_keys":{"@b:hs2":{"B1":{"alg:x":{"key":"k","signatures":null}}}}}`,
	} {
		f.Add([]byte(s))
	}
	req, err := core.ParseClaimRequest([]byte(`{"one_time_keys":{"@b:hs2":{"B1":"alg","B2":"alg"},"@c:hs3":{"C1":"alg"}}}`), core.ParseOptions{})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		c, err := core.ClassifyClaim(req, body)
		if err != nil {
			return
		}
		if len(c.Devices) != req.Pairs() {
			t.Fatalf("classified %d devices, asked for %d", len(c.Devices), req.Pairs())
		}
		out := c.AppendJSON(nil)
		if !json.Valid(out) {
			t.Fatalf("invalid JSON output")
		}
		if hasNull(t, out) {
			t.Fatalf("output %s holds a null", out)
		}
	})
}

// FuzzInvoke drives every operation with arbitrary input: the envelope is always valid JSON,
// either {"result":...} or {"errcode":...,"error":...}, and never a panic.
func FuzzInvoke(f *testing.F) {
	for i := range core.Operations {
		f.Add(uint8(i), []byte(`{"server_name":"hs1","request":{"one_time_keys":{"@a:hs1":{"D":"alg"}}}}`))
		f.Add(uint8(i), []byte(`{"body":"{\"one_time_keys\":{}}"}`))
	}
	f.Fuzz(func(t *testing.T, op uint8, input []byte) {
		name := core.Operations[int(op)%len(core.Operations)]
		out := core.Invoke(name, input)
		var env map[string]json.RawMessage
		if err := json.Unmarshal(out, &env); err != nil {
			t.Fatalf("%s: envelope %q is not JSON: %v", name, out, err)
		}
		_, isResult := env["result"]
		_, isError := env["errcode"]
		if isResult == isError {
			t.Fatalf("%s: envelope %s is neither a result nor an error", name, out)
		}
		if isError && bytes.Contains(out, []byte("internal error")) {
			t.Fatalf("%s: panic on input %q: %s", name, input, out)
		}
	})
}

func asError(err error, target **core.Error) bool {
	e, ok := err.(*core.Error)
	*target = e
	return ok
}

// FuzzCompleteUpstream: whatever an upstream homeserver answers, the proxy's answer is complete
// or an error.
func FuzzCompleteUpstream(f *testing.F) {
	for _, s := range []string{
		`{"failures":{"hs2":{"status":503}},"one_time_keys":{"@b:hs2":{"B1":{"alg:x":"k"}},"@a:hs1":{"A1":{"alg:y":{"key":"y"}}}}}`,
		`{"one_time_keys":null}`, `[]`, `{"failures":{"hs1":{}},"one_time_keys":{"@z:hs9":{}}}`,
		`{"one_time_keys":{"@b:hs2":{"B1":{"alg:x":{"key":"k","signatures":null}}}}}`,
		`{"failures":{"hs2":{"status":500,"errcode":"M X","message":"` + strings.Repeat("m", 1500) + `"}},"one_time_keys":{}}`,
	} {
		f.Add([]byte(s))
	}
	req, err := core.ParseClaimRequest([]byte(`{"one_time_keys":{"@a:hs1":{"A1":"alg"},"@b:hs2":{"B1":"alg","B2":"alg"},"@c:hs2":{},"@d:hs2":{"D1":"alg"}}}`), core.ParseOptions{})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		resp, err := core.CompleteUpstream(req, body, core.CompleteOptions{ServerName: "hs1"})
		if err != nil {
			return
		}
		checkComplete(t, req, resp.AppendJSON(nil), body)
	})
}

// FuzzFailureBounded checks Failure.Bounded, which every failures entry goes through: the message
// is valid UTF-8 of at most MaxFailureMessageBytes, the original when it was valid and short
// enough, else a prefix of it marked with "…"; the errcode is kept exactly when IsErrcode accepts
// it; bounding twice changes nothing.
func FuzzFailureBounded(f *testing.F) {
	f.Add("M_FORBIDDEN", "denied")
	f.Add("M_X\n", strings.Repeat("é", 600))
	f.Add("1M", "a"+strings.Repeat("€", 400))
	f.Add("COM.EXAMPLE.MYAPP_MY_ERROR", strings.Repeat("y", 1025))
	f.Add("", "bad\xff\xfeutf8")
	f.Fuzz(func(t *testing.T, errcode, msg string) {
		b := core.Failure{Status: 500, Errcode: errcode, Message: msg}.Bounded()
		if len(b.Message) > core.MaxFailureMessageBytes || !utf8.ValidString(b.Message) {
			t.Fatalf("message of %d bytes (valid UTF-8: %v)", len(b.Message), utf8.ValidString(b.Message))
		}
		if utf8.ValidString(msg) {
			if len(msg) <= core.MaxFailureMessageBytes && b.Message != msg {
				t.Fatalf("a short message changed: %q -> %q", msg, b.Message)
			}
			if len(msg) > core.MaxFailureMessageBytes && (!strings.HasSuffix(b.Message, "…") || !strings.HasPrefix(msg, strings.TrimSuffix(b.Message, "…")) || len(b.Message) < core.MaxFailureMessageBytes-6) {
				t.Fatalf("a long message was not cut to a marked prefix: %q", b.Message)
			}
		}
		want := ""
		if core.IsErrcode(errcode) {
			want = errcode
		}
		if b.Errcode != want {
			t.Fatalf("errcode %q -> %q, want %q", errcode, b.Errcode, want)
		}
		if b.Bounded() != b {
			t.Fatalf("bounding twice changed %+v", b)
		}
	})
}

// FuzzParseMillis checks ParseMillis against math/big: it accepts exactly the number literals
// (JSON syntax, leading zeros allowed) whose value is a non-negative integer, and returns that
// value, or 2^50 when it is at least 2^50.
func FuzzParseMillis(f *testing.F) {
	for _, s := range []string{"0", "-0", "1000.0", "1e3", "1.5e3", "10000e-1", "1.5", "-1", "1e400", "007", "1e", "+5", "1e-3", "99999999999999999999"} {
		f.Add(s)
	}
	literal := regexp.MustCompile(`^-?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?$`)
	limit := new(big.Rat).SetInt64(1 << 50)
	f.Fuzz(func(t *testing.T, s string) {
		got, ok := core.ParseMillis(s)
		want, wantOK := int64(0), false
		if literal.MatchString(s) && len(s) < 40 { // big.Rat would take long over huge exponents
			r, good := new(big.Rat).SetString(s)
			if !good {
				return // an exponent math/big refuses (over about 10^6): covered by TestParseMillis
			}
			if r.Sign() >= 0 && r.IsInt() {
				wantOK = true
				if r.Cmp(limit) >= 0 {
					want = 1 << 50
				} else {
					want = r.Num().Int64()
				}
			}
		} else if literal.MatchString(s) {
			return // a long literal: covered by TestParseMillis
		}
		if ok != wantOK || got != want {
			t.Fatalf("ParseMillis(%q) = %d, %v; want %d, %v", s, got, ok, want, wantOK)
		}
	})
}

// FuzzParseObjectRaw checks ParseObjectRaw against ParseValue: the same tree or the same error,
// and each member's text parses to that member's value.
func FuzzParseObjectRaw(f *testing.F) {
	for _, s := range []string{`{"device_keys": {"a": 1}, "one_time_keys": {}}`, `{"a":1,"a":2}`, `[1]`, ` { } `, `{"a":"\u00e9"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		v, raw, err := core.ParseObjectRaw(data)
		if !sameAsParseValue(t, data, v, err) {
			return
		}
		for _, m := range v.Members {
			mv, err := core.ParseValue(raw[m.Key])
			if err != nil || !bytes.Equal(mv.AppendJSON(nil), m.Value.AppendJSON(nil)) {
				t.Fatalf("member %q: raw %q parses to %v, %v", m.Key, raw[m.Key], mv, err)
			}
		}
	})
}

// sameAsParseValue fails t unless a parse of data gave ParseValue's error or tree, and reports
// whether it succeeded.
func sameAsParseValue(t *testing.T, data []byte, v core.Value, err error) bool {
	t.Helper()
	want, werr := core.ParseValue(data)
	if (err == nil) != (werr == nil) || err != nil && err.Error() != werr.Error() {
		t.Fatalf("error %v, ParseValue %v", err, werr)
	}
	if err == nil && !bytes.Equal(v.AppendJSON(nil), want.AppendJSON(nil)) {
		t.Fatalf("tree %s, ParseValue %s", v.AppendJSON(nil), want.AppendJSON(nil))
	}
	return err == nil
}

// FuzzParseValueRaw: ParseValueRaw accepts and rejects what ParseValue does, with the same error
// and tree, and each text it gives at depth 1 to 3 parses to the tree's value at its path; every
// value that deep is given once.
func FuzzParseValueRaw(f *testing.F) {
	for _, s := range []string{`{"device_keys":{"@a:hs":{"D":{"user_id":"@a:hs"}, "E" : [1] }},"failures":{}}`, `{"a":{"b":1,"b":2}}`, `[{"a":1}]`, `{"a":{"b":{"c":{}}}}`, `{"a":"\u00e9"}`} {
		f.Add([]byte(s), uint8(3))
	}
	pathKey := func(path []string) string { // quoted keys: no two paths collide
		var b strings.Builder
		for _, k := range path {
			b.WriteString(strconv.Quote(k))
		}
		return b.String()
	}
	f.Fuzz(func(t *testing.T, data []byte, depth uint8) {
		depth = depth%3 + 1
		texts := map[string][]byte{}
		v, err := core.ParseValueRaw(data, int(depth), func(path []string, text []byte) {
			texts[pathKey(path)] = text
		})
		if !sameAsParseValue(t, data, v, err) {
			return
		}
		n := 0
		var walk func(v *core.Value, path []string)
		walk = func(v *core.Value, path []string) {
			if len(path) == int(depth) {
				n++
				text, ok := texts[pathKey(path)]
				mv, err := core.ParseValue(text)
				if !ok || err != nil || !bytes.Equal(mv.AppendJSON(nil), v.AppendJSON(nil)) {
					t.Fatalf("%q: text %q parses to %v, %v", path, text, mv, err)
				}
				return
			}
			for i := range v.Members {
				walk(&v.Members[i].Value, append(path[:len(path):len(path)], v.Members[i].Key))
			}
		}
		walk(&v, nil)
		if n != len(texts) {
			t.Fatalf("%d values %d deep, %d texts", n, depth, len(texts))
		}
	})
}
