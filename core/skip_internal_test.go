package core

import (
	"strings"
	"testing"
)

// FuzzSkipAgreesWithRead: skipping a value (which validates strings in place) accepts and
// rejects exactly what reading it does, with the same error.
func FuzzSkipAgreesWithRead(f *testing.F) {
	for _, s := range []string{`"a\u00e9\ud83d\ude00"`, `"\ud800"`, "\"\xff\"", `["\n",{"a":"\\"}]`, `"\u12"`, `"abc`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := decoder{data: data}
		_, rerr := r.value()
		s := decoder{data: data}
		serr := s.skip()
		if (rerr == nil) != (serr == nil) {
			t.Fatalf("read: %v, skip: %v", rerr, serr)
		}
		if rerr != nil && rerr.Error() != serr.Error() {
			t.Fatalf("different errors: read %q, skip %q", rerr, serr)
		}
		if rerr == nil && r.pos != s.pos {
			t.Fatalf("read ended at %d, skip at %d", r.pos, s.pos)
		}
	})
}

// FuzzScanDecodeString: decoding a string into a buffer (how bodies sent as JSON strings are
// read) accepts and rejects what scanning it does, with the same error and end, and yields the
// string the tree reader yields. The escapes decoded inside its word loop (\" \\ \/) are seeded
// at every offset of a word.
func FuzzScanDecodeString(f *testing.F) {
	for _, s := range []string{`"a\"b\\c\/d"`, `"0123456\"89abcdef\\\\"`, `"\u00e9\ud83d\ude00\n"`, `"\ud800"`, "\"\xff\"", `"abc`, `"abcdefgh\`, `"\q"`, "\"\x01\""} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 || data[0] != '"' {
			return
		}
		dst := make([]byte, len(data)+8)
		d := decoder{data: data}
		n, derr := d.scanDecodeString(dst, 3)
		s := decoder{data: data}
		_, serr := s.scanString()
		if (derr == nil) != (serr == nil) || derr != nil && derr.Error() != serr.Error() {
			t.Fatalf("decode: %v, scan: %v", derr, serr)
		}
		if derr != nil {
			return
		}
		if d.pos != s.pos {
			t.Fatalf("decode ended at %d, scan at %d", d.pos, s.pos)
		}
		r := decoder{data: data[:d.pos]}
		want, err := r.str()
		if err != nil {
			t.Fatalf("scan accepted %q, read: %v", data[:d.pos], err)
		}
		if got := string(dst[3:n]); got != want {
			t.Fatalf("decoded %q, read %q", got, want)
		}
	})
}

// FuzzDeferredLocalCheck: the completion operations pass over their member "local" unchecked
// and check it when they read it (or before reporting any error); they must answer exactly as
// when it is checked first, in document order with the other members.
func FuzzDeferredLocalCheck(f *testing.F) {
	key := `{"key":"k","signatures":{"@a:hs1":{"ed25519:D":"s"}}}`
	req := `{"one_time_keys":{"@a:hs1":{"D":"signed_curve25519","E":"signed_curve25519"},"@b:hs2":{"F":"signed_curve25519"}}}`
	for _, local := range []string{
		`{"@a:hs1":{"D":{"signed_curve25519:A":` + key + `}}}`,
		`{"@a:hs1":{"D":{"signed_curve25519:A":` + key + `,"signed_curve25519:A":1}}}`,
		`{"@a:hs1":{"D":{"signed_curve25519:A":[}]}}}`,
		`{"@a:hs1":{"D":{"signed_curve25519:A":"\xff"}}}`,
		`{"@a:hs1":{"D":{"signed_curve25519:A":` + key + `}},"@z:hs1":{"x":[1,2,{"y":"\u00e9"}]}}`,
		`{"@a:hs1":1}`, `{"@a:hs1":{"D":{"signed_curve25519:A":"k"}}}}`, `{"@a:hs1":{"D":"x"}`, `{"a":"\"}"}`,
		`{"@a:hs1":{"D":{"signed_curve25519:A":tru}}}`, `{"@a:hs1":{"D":{"signed_curve25519:A":01}}}`,
	} {
		for _, tail := range []string{`}`, `,"mode":"legacy"}`, `,"mode":"bogus"}`, `,"zzz":1}`, `,"remote":{"hs2":{"status":200,"body":"{}"}}}`, `,"remote":[}`, `}x`, `,"local":{}}`} {
			f.Add([]byte(`{"server_name":"hs1","request":`+req+`,"local":`+local+tail), false)
			f.Add([]byte(`{"server_name":"hs1","local":`+local+`,"request":`+req+tail), true)
		}
	}
	for _, r := range []string{`{"one_time_keys":{"@a:hs1":{"D":[}]}}}`, `{"one_time_keys":{"@a:hs1":{"D":"x","D":"y"}}}`,
		`{"one_time_keys":{"bad":{}}}`, `{"one_time_keys":{"@a:hs1":{"D":"\xff"}},"timeout":1}`, `{"one_time_keys":{},"x":{"y":"z"}}`, `{"one_time_keys":{"@a:hs1":{"D":"x"}}`} {
		for _, tail := range []string{`}`, `,"local":{"@a:hs1":[}]}`, `,"local":{"@a:hs1":{}}}`, `,"zzz":1}`} {
			f.Add([]byte(`{"server_name":"hs1","request":`+r+tail), false)
			f.Add([]byte(`{"mode":"x","request":`+r+`,"server_name":"hs1"`+tail), true)
		}
	}
	for n := 58; n <= 64; n++ { // around the nesting limit, which counts from the input object
		deep := strings.Repeat("[", n) + strings.Repeat("]", n)
		f.Add([]byte(`{"server_name":"hs1","request":`+req+`,"local":{"@a:hs1":{"D":{"signed_curve25519:A":{"key":"k","x":`+deep+`}}}}}`), false)
		f.Add([]byte(`{"server_name":"hs1","request":`+req+`,"local":{"@z:hs1":`+deep+`}}`), true)
		f.Add([]byte(`{"server_name":"hs1","request":{"one_time_keys":{},"x":`+deep+`}}`), false)
	}
	f.Fuzz(func(t *testing.T, input []byte, federation bool) {
		run := func(first bool) ([]byte, error) {
			checkLocalFirst = first
			defer func() { checkLocalFirst = false }()
			return opComplete(nil, input, federation)
		}
		deferred, derr := run(false)
		upfront, uerr := run(true)
		if (derr == nil) != (uerr == nil) || derr != nil && derr.Error() != uerr.Error() || string(deferred) != string(upfront) {
			t.Fatalf("input %q (federation %v):\n deferred %s %v\n up front %s %v", input, federation, deferred, derr, upfront, uerr)
		}
	})
}
