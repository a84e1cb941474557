package core

import "testing"

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
