package federation

import (
	"errors"
	"strings"
	"testing"
)

func TestParseXMatrix(t *testing.T) {
	want := XMatrix{Origin: "origin.hs.example.com", Destination: "destination.hs.example.com", Key: "ed25519:key1", Signature: "ABCDEF/+"}
	valid := []struct {
		name, header string
		want         XMatrix
	}{
		{"spec example", `X-Matrix origin="origin.hs.example.com",destination="destination.hs.example.com",key="ed25519:key1",sig="ABCDEF/+"`, want},
		{"scheme case", `x-matrix origin="origin.hs.example.com",destination="destination.hs.example.com",key="ed25519:key1",sig="ABCDEF/+"`, want},
		{"several spaces after scheme", `X-Matrix   origin="origin.hs.example.com",destination="destination.hs.example.com",key="ed25519:key1",sig="ABCDEF/+"`, want},
		{"spaces and tabs around commas", "X-Matrix origin=\"origin.hs.example.com\" ,\tdestination=\"destination.hs.example.com\"\t, key=\"ed25519:key1\" , sig=\"ABCDEF/+\"", want},
		{"name case", `X-Matrix Origin="origin.hs.example.com",DESTINATION="destination.hs.example.com",Key="ed25519:key1",SIG="ABCDEF/+"`, want},
		{"order", `X-Matrix sig="ABCDEF/+",key="ed25519:key1",destination="destination.hs.example.com",origin="origin.hs.example.com"`, want},
		{"unquoted tokens and colon", `X-Matrix origin=origin.hs.example.com,destination=destination.hs.example.com,key=ed25519:key1,sig=ABCDEF/+`, want},
		{"escapes", `X-Matrix origin="origin.hs.ex\ample.com",destination="destination.hs.example.com",key="ed25519:key1",sig="ABC\DEF/+"`, want},
		{"unknown parameters", `X-Matrix origin="origin.hs.example.com",future="a,b=\"c\"",destination="destination.hs.example.com",key="ed25519:key1",x=y,sig="ABCDEF/+"`, want},
		{"empty list elements", `X-Matrix ,origin="origin.hs.example.com",,destination="destination.hs.example.com",key="ed25519:key1",sig="ABCDEF/+",`, want},
		{"no destination", `X-Matrix origin="o.example",key="ed25519:k",sig="s"`, XMatrix{Origin: "o.example", Key: "ed25519:k", Signature: "s"}},
		{"origin with port", `X-Matrix origin="o.example:8448",key="ed25519:k",sig="s"`, XMatrix{Origin: "o.example:8448", Key: "ed25519:k", Signature: "s"}},
		{"ipv6 origin", `X-Matrix origin="[::1]:8448",key="ed25519:k",sig="s"`, XMatrix{Origin: "[::1]:8448", Key: "ed25519:k", Signature: "s"}},
		{"signature as the prose names it", `X-Matrix origin="o.example",key="ed25519:k",signature="s"`, XMatrix{Origin: "o.example", Key: "ed25519:k", Signature: "s"}},
		{"spaces around =", `X-Matrix origin = "o.example" , key= "ed25519:k",sig ="s"`, XMatrix{Origin: "o.example", Key: "ed25519:k", Signature: "s"}},
	}
	for _, c := range valid {
		t.Run(c.name, func(t *testing.T) {
			got, err := ParseXMatrix(c.header)
			if err != nil {
				t.Fatal(err)
			}
			if got != c.want {
				t.Fatalf("got %+v, want %+v", got, c.want)
			}
			again, err := ParseXMatrix(got.String())
			if err != nil || again != got {
				t.Fatalf("String round trip: %q -> %+v, %v", got.String(), again, err)
			}
		})
	}
	invalid := []struct {
		name, header, why string
	}{
		{"other scheme", `Bearer abc`, "not an X-Matrix"},
		{"scheme only", `X-Matrix`, "origin is missing"},
		{"no origin", `X-Matrix key="ed25519:k",sig="s"`, "origin is missing"},
		{"no key", `X-Matrix origin="o.example",sig="s"`, "key is missing"},
		{"no sig", `X-Matrix origin="o.example",key="ed25519:k"`, "sig is missing"},
		{"empty sig", `X-Matrix origin="o.example",key="ed25519:k",sig=""`, "sig is empty"},
		{"bad origin", `X-Matrix origin="o_example!",key="ed25519:k",sig="s"`, "origin"},
		{"bad destination", `X-Matrix origin="o.example",destination="a b",key="ed25519:k",sig="s"`, "destination"},
		{"bad key", `X-Matrix origin="o.example",key="ed25519",sig="s"`, "key"},
		{"twice", `X-Matrix origin="o.example",origin="p.example",key="ed25519:k",sig="s"`, "twice"},
		{"sig and signature", `X-Matrix origin="o.example",key="ed25519:k",sig="s",signature="t"`, "twice"},
		{"unterminated", `X-Matrix key="ed25519:k",sig="s",origin="o.example`, "unterminated"},
		{"no value", `X-Matrix origin,key="ed25519:k",sig="s"`, "no value"},
		{"junk after value", `X-Matrix origin="o.example"x,key="ed25519:k",sig="s"`, "after the value"},
		{"control character", "X-Matrix origin=\"o.\x01example\",key=\"ed25519:k\",sig=\"s\"", "control"},
		{"garbage", `X-Matrix ===`, "parameter name"},
	}
	for _, c := range invalid {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseXMatrix(c.header)
			if err == nil || !strings.Contains(err.Error(), c.why) {
				t.Fatalf("got %v, want an error about %q", err, c.why)
			}
			if c.name == "other scheme" && !errors.Is(err, ErrNotXMatrix) {
				t.Fatalf("got %v, want ErrNotXMatrix", err)
			}
		})
	}
}

func FuzzParseXMatrix(f *testing.F) {
	f.Add(`X-Matrix origin="origin.hs.example.com",destination="destination.hs.example.com",key="ed25519:key1",sig="ABCDEF"`)
	f.Add(`X-Matrix origin=o.example,key=ed25519:k,sig=s`)
	f.Add(`X-Matrix origin="a\"b",key="k:1",sig="s"`)
	f.Fuzz(func(t *testing.T, header string) {
		x, err := ParseXMatrix(header)
		if err != nil {
			return
		}
		again, err := ParseXMatrix(x.String())
		if err != nil {
			t.Fatalf("String() of a parsed header does not parse: %q: %v", x.String(), err)
		}
		if again != x {
			t.Fatalf("round trip: %+v != %+v", again, x)
		}
	})
}
