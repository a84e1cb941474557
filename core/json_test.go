package core_test

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/keyclaim/keyclaim/core"
)

func TestCanonical(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"sorted keys", `{"b":1,"a":{"d":2,"c":3}}`, `{"a":{"c":3,"d":2},"b":1}`},
		{"whitespace removed", " [ 1 , true , false , null , \"x\" ] ", `[1,true,false,null,"x"]`},
		{"no HTML escaping", `"<a>&\u2028"`, "\"<a>&\u2028\""},
		{"short escapes", `"\b\f\n\r\t\"\\\/"`, `"\b\f\n\r\t\"\\/"`},
		{"other controls lower-case hex", `"\u0001\u001F"`, `"\u0001\u001f"`},
		{"unicode raw", `"\u00e9\ud83d\ude00"`, `"é😀"`},
		{"number literal kept", `[-0,1.50,1e3]`, `[-0,1.50,1e3]`},
		{"keys sorted by code point", `{"é":1,"z":2,"A":3}`, `{"A":3,"z":2,"é":1}`},
		{"empty containers", `{"a":{},"b":[]}`, `{"a":{},"b":[]}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := core.Canonical([]byte(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Errorf("Canonical(%s) = %s, want %s", tc.in, got, tc.want)
			}
		})
	}
}

func TestParseValueErrors(t *testing.T) {
	deep := ""
	for range 65 {
		deep += "["
	}
	for range 65 {
		deep += "]"
	}
	for _, tc := range []struct {
		name, in string
		code     core.Code
	}{
		{"empty", ``, core.CodeNotJSON},
		{"truncated", `{"a":`, core.CodeNotJSON},
		{"trailing data", `{} {}`, core.CodeNotJSON},
		{"single quotes", `{'a':1}`, core.CodeNotJSON},
		{"trailing comma", `[1,]`, core.CodeNotJSON},
		{"leading zero", `01`, core.CodeNotJSON},
		{"bare minus", `-`, core.CodeNotJSON},
		{"invalid utf-8", "\"\xff\"", core.CodeNotJSON},
		{"lone high surrogate", `"\ud800"`, core.CodeNotJSON},
		{"lone low surrogate", `"\udc00"`, core.CodeNotJSON},
		{"raw newline in string", "\"a\nb\"", core.CodeNotJSON},
		{"bad escape", `"\x"`, core.CodeNotJSON},
		{"NaN", `NaN`, core.CodeNotJSON},
		{"duplicate key", `{"a":1,"a":2}`, core.CodeBadJSON},
		{"duplicate after unescaping", `{"a":1,"\u0061":2}`, core.CodeBadJSON},
		{"too deep", deep, core.CodeBadJSON},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := core.ParseValue([]byte(tc.in))
			if !errors.Is(err, &core.Error{Code: tc.code}) {
				t.Fatalf("ParseValue(%q) = %v, want %s", tc.in, err, tc.code)
			}
		})
	}
}

// TestCanonicalAgreesWithEncodingJSON checks the writer against the standard library on the
// meaning of the output.
func TestCanonicalAgreesWithEncodingJSON(t *testing.T) {
	in := `{"z":[1,{"y":"\u00e9\n","x":null}],"a":"<tag> & \"q\"","m":{"k":true}}`
	got, err := core.Canonical([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	var a, b any
	if err := json.Unmarshal([]byte(in), &a); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(got, &b); err != nil {
		t.Fatalf("canonical output is not JSON: %v", err)
	}
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	if string(ja) != string(jb) {
		t.Errorf("meaning changed:\n in  %s\n out %s", ja, jb)
	}
}

// TestParseObjectRaw: the tree is ParseValue's, and each member's text is the exact bytes of the
// input, white space around it excluded; errors are ParseValue's.
func TestParseObjectRaw(t *testing.T) {
	in := []byte(" {\"b\" : { \"x\" :1.50 , \"y\":[ ] } ,\n\"a\":\"\\u00e9\"\t, \"c\": null} ")
	v, raw, err := core.ParseObjectRaw(in)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := core.ParseValue(in)
	if string(v.AppendJSON(nil)) != string(want.AppendJSON(nil)) {
		t.Errorf("tree %s, want %s", v.AppendJSON(nil), want.AppendJSON(nil))
	}
	for k, w := range map[string]string{"a": `"\u00e9"`, "b": `{ "x" :1.50 , "y":[ ] }`, "c": "null"} {
		if string(raw[k]) != w {
			t.Errorf("raw[%q] = %q, want %q", k, raw[k], w)
		}
	}
	if len(raw) != 3 {
		t.Errorf("raw has %d members", len(raw))
	}
	for _, bad := range []string{`{"a":1,"a":2}`, `{"a":1} x`, `{"a":}`, `{`} {
		_, _, err := core.ParseObjectRaw([]byte(bad))
		_, werr := core.ParseValue([]byte(bad))
		if err == nil || werr == nil || err.Error() != werr.Error() {
			t.Errorf("%s: %v, ParseValue %v", bad, err, werr)
		}
	}
	if v, raw, err := core.ParseObjectRaw([]byte(` [1] `)); err != nil || raw != nil || v.Kind != core.KindArray {
		t.Errorf("array: %v %v %v", v, raw, err)
	}
}
