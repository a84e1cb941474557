package core_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/keyclaim/keyclaim/core"
)

func TestParseUserID(t *testing.T) {
	long := "@" + strings.Repeat("a", 255-len("@:hs.test")) + ":hs.test" // exactly 255 bytes
	valid := []struct{ name, id, server, local string }{
		{"simple", "@alice:example.org", "example.org", "alice"},
		{"all grammar characters", "@a.b_c=d-e/f+0:example.org", "example.org", "a.b_c=d-e/f+0"},
		{"historical upper case", "@Alice:example.org", "example.org", "Alice"},
		{"historical unicode", "@ålice☃:example.org", "example.org", "ålice☃"},
		{"historical space and control", "@a b\x01:example.org", "example.org", "a b\x01"},
		{"historical empty localpart", "@:example.org", "example.org", ""},
		{"port", "@a:example.org:8448", "example.org:8448", "a"},
		{"ipv4", "@a:1.2.3.4", "1.2.3.4", "a"},
		{"ipv4 port", "@a:1.2.3.4:1234", "1.2.3.4:1234", "a"},
		{"ipv6", "@a:[1234:5678::abcd]", "[1234:5678::abcd]", "a"},
		{"ipv6 port", "@a:[1234:5678::abcd]:5678", "[1234:5678::abcd]:5678", "a"},
		{"ipv6 full", "@a:[2001:db8:0:0:0:0:2:1]", "[2001:db8:0:0:0:0:2:1]", "a"},
		{"ipv6 embedded ipv4", "@a:[::ffff:1.2.3.4]", "[::ffff:1.2.3.4]", "a"},
		{"ipv6 loopback", "@a:[::1]", "[::1]", "a"},
		{"upper-case server kept as is", "@a:EXAMPLE.org", "EXAMPLE.org", "a"},
		{"exactly 255 bytes", long, "hs.test", strings.Repeat("a", 255-len("@:hs.test"))},
		{"four digit groups that are not an IPv4 shape", "@a:1.2.3.4.5", "1.2.3.4.5", "a"},
		{"dotted digits over 255 are a DNS name", "@alice:999.1.1.1", "999.1.1.1", "alice"},
		{"dotted digits over 255 with a port", "@b:256.0.0.1:8448", "256.0.0.1:8448", "b"},
		{"port over 65535", "@alice:example.org:70000", "example.org:70000", "alice"},
		{"port 65536", "@b:x.test:65536", "x.test:65536", "b"},
		{"port 99999", "@bob:hs1.test:99999", "hs1.test:99999", "bob"},
		{"port zero", "@a:hs1.test:0", "hs1.test:0", "a"},
		{"port with leading zeros kept", "@a:hs1.test:08448", "hs1.test:08448", "a"},
		{"ipv6 port 99999", "@a:[::1]:99999", "[::1]:99999", "a"},
	}
	for _, tc := range valid {
		t.Run("valid/"+tc.name, func(t *testing.T) {
			u, err := core.ParseUserID(tc.id)
			if err != nil {
				t.Fatalf("ParseUserID(%q) = %v, want valid", tc.id, err)
			}
			if got := u.Server(); string(got) != tc.server {
				t.Errorf("Server() = %q, want %q", got, tc.server)
			}
			if got := u.Localpart(); got != tc.local {
				t.Errorf("Localpart() = %q, want %q", got, tc.local)
			}
		})
	}
	invalid := []struct {
		name, id string
		cause    core.IDCause
	}{
		{"empty", "", core.CauseEmpty},
		{"no sigil", "alice:example.org", core.CauseMissingSigil},
		{"room sigil", "!room:example.org", core.CauseMissingSigil},
		{"no colon", "@alice", core.CauseMissingColon},
		{"too long", long + "x", core.CauseTooLong},
		{"NUL in localpart", "@a\x00b:example.org", core.CauseInvalidLocalpart},
		{"invalid UTF-8 in localpart", "@a\xffb:example.org", core.CauseInvalidLocalpart},
		{"UTF-8 encoded surrogate", "@a\xed\xa0\x80:example.org", core.CauseInvalidLocalpart},
		{"empty server", "@alice:", core.CauseEmptyHost},
		{"port only", "@alice::8448", core.CauseEmptyHost},
		{"underscore in host", "@alice:ex_ample.org", core.CauseInvalidHost},
		{"space in host", "@alice:exa mple.org", core.CauseInvalidHost},
		{"port empty", "@alice:example.org:", core.CauseInvalidPort},
		{"port six digits", "@alice:example.org:123456", core.CauseInvalidPort},
		{"port not digits", "@alice:example.org:80a", core.CauseInvalidPort},
		{"second colon in host", "@alice:example.org:80:90", core.CauseInvalidPort},
		{"ipv6 bad digit", "@alice:[::g]", core.CauseInvalidIPv6},
		{"ipv6 unclosed", "@alice:[::1", core.CauseInvalidIPv6},
		{"ipv6 two double colons", "@alice:[1::2::3]", core.CauseInvalidIPv6},
		{"ipv6 too many groups", "@alice:[1:2:3:4:5:6:7:8:9]", core.CauseInvalidIPv6},
		{"ipv6 too few groups", "@alice:[1:2:3]", core.CauseInvalidIPv6},
		{"ipv6 group too long", "@alice:[12345::1]", core.CauseInvalidIPv6},
		{"ipv6 junk after bracket", "@alice:[::1]x", core.CauseInvalidIPv6},
		{"ipv6 empty", "@alice:[]", core.CauseInvalidIPv6},
	}
	for _, tc := range invalid {
		t.Run("invalid/"+tc.name, func(t *testing.T) {
			_, err := core.ParseUserID(tc.id)
			var idErr *core.IDError
			if !errors.As(err, &idErr) {
				t.Fatalf("ParseUserID(%q) = %v, want an *IDError", tc.id, err)
			}
			if idErr.Cause != tc.cause {
				t.Errorf("cause = %v (%d), want %v (%d)", idErr.Cause, idErr.Cause, tc.cause, tc.cause)
			}
			if !strings.Contains(err.Error(), "user ID") {
				t.Errorf("message %q does not say what was invalid", err)
			}
		})
	}
}

func TestParseServerName(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		cause    core.IDCause
	}{
		{"dns", "matrix.org", 0},
		{"dns port", "matrix.org:8888", 0},
		{"localhost", "localhost", 0},
		{"ipv4", "1.2.3.4", 0},
		{"ipv4 port", "1.2.3.4:1234", 0},
		{"ipv6", "[1234:5678::abcd]", 0},
		{"ipv6 port", "[1234:5678::abcd]:5678", 0},
		{"empty", "", core.CauseEmptyHost},
		{"slash", "matrix.org/x", core.CauseInvalidHost},
		{"dotted digits over 255 are a DNS name", "256.0.0.1", 0},
		{"dotted digits over 255 with a port", "999.1.1.1:8448", 0},
		{"port zero digits", "matrix.org:", core.CauseInvalidPort},
		{"port 65535", "matrix.org:65535", 0},
		{"port 65536", "matrix.org:65536", 0},
		{"port 99999", "matrix.org:99999", 0},
		{"port 0", "matrix.org:0", 0},
		{"port six digits", "matrix.org:100000", core.CauseInvalidPort},
		{"ipv6 port six digits", "[::1]:100000", core.CauseInvalidPort},
		{"ipv6 embedded ipv4 over 255", "[::ffff:999.1.1.1]", core.CauseInvalidIPv6},
		{"dns name of 255", strings.Repeat("a", 255), 0},
		{"dns name too long", strings.Repeat("a", 256), core.CauseHostTooLong},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := core.ParseServerName(tc.in)
			if tc.cause == 0 {
				if err != nil {
					t.Fatalf("ParseServerName(%q) = %v, want valid", tc.in, err)
				}
				return
			}
			var idErr *core.IDError
			if !errors.As(err, &idErr) || idErr.Cause != tc.cause {
				t.Fatalf("ParseServerName(%q) = %v, want cause %v", tc.in, err, tc.cause)
			}
		})
	}
}

func TestParseKeyID(t *testing.T) {
	for _, tc := range []struct {
		name, in   string
		cause      core.IDCause
		alg, name2 string
	}{
		{"signed", "signed_curve25519:AAAAHQ", 0, "signed_curve25519", "AAAAHQ"},
		{"colon in name", "alg:a:b", 0, "alg", "a:b"},
		{"empty", "", core.CauseEmpty, "", ""},
		{"no colon", "signed_curve25519", core.CauseMissingColon, "", ""},
		{"empty algorithm", ":AAAA", core.CauseEmptyAlgorithm, "", ""},
		{"empty name", "signed_curve25519:", core.CauseEmptyKeyName, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, err := core.ParseKeyID(tc.in)
			if tc.cause != 0 {
				var idErr *core.IDError
				if !errors.As(err, &idErr) || idErr.Cause != tc.cause {
					t.Fatalf("ParseKeyID(%q) = %v, want cause %v", tc.in, err, tc.cause)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(k.Algorithm()) != tc.alg || k.Name() != tc.name2 {
				t.Errorf("got (%q, %q), want (%q, %q)", k.Algorithm(), k.Name(), tc.alg, tc.name2)
			}
		})
	}
}

func TestErrorComparesByCode(t *testing.T) {
	err := error(&core.Error{Code: core.CodeBadJSON, Message: "one thing"})
	if !errors.Is(err, &core.Error{Code: core.CodeBadJSON}) {
		t.Error("errors.Is does not match the same code")
	}
	if errors.Is(err, &core.Error{Code: core.CodeNotJSON}) {
		t.Error("errors.Is matches another code")
	}
	b, _ := (&core.Error{Code: core.CodeBadJSON, Message: `say "hi" <b>`}).MarshalJSON()
	if want := `{"errcode":"M_BAD_JSON","error":"say \"hi\" <b>"}`; string(b) != want {
		t.Errorf("MarshalJSON = %s, want %s", b, want)
	}
}
