package core

import "testing"

// FuzzCanonicalText checks canonicalText, which lets a key already in canonical form be copied as
// it is: what it accepts must be exactly what value + AppendJSON would write, hold no null (a
// value with a null in it is never a key), and isKey must agree with IsKeyValue.
func FuzzCanonicalText(f *testing.F) {
	for _, s := range []string{
		`{"key":"abc","signatures":{"@u:x":{"ed25519:D":"sig"}}}`,
		`"abc"`, `{}`, `[]`, `[1,"a",{"b":null}]`, `{"a":1,"a":2}`, `{"b":1,"a":2}`, `{"":1,"a":[true,false]}`,
		`{"a":{"b":{"c":{"d":{"e":{"f":{"g":{"h":[[[["deep"]]]]}}}}}}}}`, `{"key":{"x":1}}`, `{"key":"\u00e9"}`,
		`{"k\"ey":1}`, `{"a" :1}`, `{"é":"ü","key":"x"}`, `{"ab":1,"a":2}`, `{"a":1,"ab":2}`, `[1.5e3,-0]`,
		`null`, `{"key":"k","signatures":null}`, `{"key":"k","unsigned":{"x":[null]}}`, `{"key":"nullable"}`,
	} {
		f.Add([]byte(s), 0, true)
	}
	f.Fuzz(func(t *testing.T, b []byte, depth int, top bool) {
		if depth < 0 || depth > maxDepth {
			return
		}
		end, isKey, ok := canonicalText(b, 0, depth, top)
		if !ok {
			return
		}
		d := decoder{data: b[:end], depth: depth}
		v, err := d.value()
		if err != nil {
			t.Fatalf("%q accepted as canonical, but value fails: %v", b[:end], err)
		}
		if got := v.AppendJSON(nil); string(got) != string(b[:end]) {
			t.Fatalf("%q accepted as canonical, but AppendJSON writes %q", b[:end], got)
		}
		if hasNull(&v) {
			t.Fatalf("%q accepted as canonical, but it holds a null", b[:end])
		}
		if top && isKey != IsKeyValue(&v) {
			t.Fatalf("%q: isKey %v, IsKeyValue %v", b[:end], isKey, IsKeyValue(&v))
		}
	})
}
