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
