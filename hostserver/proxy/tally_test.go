package proxy

import (
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/keyclaim/keyclaim/core"
)

// bigClaim is a request for n devices of one user and an upstream answer with keys for half of
// them, as a homeserver in legacy mode gives it.
func bigClaim(b *testing.B, n int) (*core.ClaimRequest, []byte) {
	var req, ans strings.Builder
	req.WriteString(`{"one_time_keys":{"@bob:hs1.test":{`)
	ans.WriteString(`{"one_time_keys":{"@bob:hs1.test":{`)
	for i := range n {
		d := "DEV" + strconv.Itoa(i)
		if i > 0 {
			req.WriteByte(',')
		}
		req.WriteString(`"` + d + `":"signed_curve25519"`)
		if i%2 == 0 {
			if i > 0 {
				ans.WriteByte(',')
			}
			ans.WriteString(`"` + d + `":{"signed_curve25519:AAAAAQ":{"key":"` + strings.Repeat("k", 43) + `","signatures":{"@bob:hs1.test":{"ed25519:` + d + `":"` + strings.Repeat("s", 86) + `"}}}}`)
		}
	}
	req.WriteString(`}}}`)
	ans.WriteString(`}},"failures":{}}`)
	r, err := core.ParseClaimRequest([]byte(req.String()), core.ParseOptions{})
	if err != nil {
		b.Fatal(err)
	}
	return r, []byte(ans.String())
}

// BenchmarkComplete measures completion of a 10,000-device answer, with the tally the metrics
// read (core.ClaimResponse.Tally, counted during completion).
func BenchmarkComplete(b *testing.B) {
	req, ans := bigClaim(b, 10_000)
	b.SetBytes(int64(len(ans)))
	for b.Loop() {
		resp, err := core.CompleteUpstream(req, ans, core.CompleteOptions{ServerName: "hs1.test"})
		if err != nil {
			b.Fatal(err)
		}
		_ = resp.AppendJSON(nil)
		if t := resp.Tally(); t.Filled != 5_000 || t.Dropped != 0 {
			b.Fatalf("tally %+v", t)
		}
	}
}

// referenceTally counts what proxy metrics report, written plainly over core.ParseValue after
// completion: the fuzz target checks that the counts completion kept (core.ClaimResponse.Tally)
// agree with it.
func referenceTally(resp *core.ClaimResponse, answer []byte) (filled, dropped int) {
	v, err := core.ParseValue(answer)
	var otk, failures *core.Value
	if err == nil {
		otk, _ = v.Get("one_time_keys")
		failures, _ = v.Get("failures")
	}
	if resp.Mode != core.ModeLegacy {
		for i := range resp.Users {
			u := &resp.Users[i]
			if u.Failed {
				continue
			}
			var uv *core.Value
			if otk != nil {
				uv, _ = otk.Get(string(u.User))
			}
			for j := range u.Devices {
				d := &u.Devices[j]
				if d.Claimed {
					continue
				}
				if uv != nil {
					if dv, ok := uv.Get(string(d.Device)); ok && dv.Kind == core.KindObject && len(dv.Members) == 0 {
						continue // the upstream answered {} itself
					}
				}
				filled++
			}
		}
	}
	if err != nil {
		return filled, 0
	}
	if otk != nil && otk.Kind == core.KindObject {
		for _, um := range otk.Members {
			ui, ok := slices.BinarySearchFunc(resp.Users, um.Key, func(u core.UserResult, k string) int { return strings.Compare(string(u.User), k) })
			if !ok || resp.Users[ui].Failed || um.Value.Kind != core.KindObject {
				dropped++
				continue
			}
			u := &resp.Users[ui]
			for _, dm := range um.Value.Members {
				di, ok := slices.BinarySearchFunc(u.Devices, dm.Key, func(d core.DeviceResult, k string) int { return strings.Compare(string(d.Device), k) })
				if !ok || dm.Value.Kind != core.KindObject {
					dropped++
					continue
				}
				d := &u.Devices[di]
				for _, km := range dm.Value.Members {
					if !d.Claimed || km.Key != string(d.Key.KeyID) {
						dropped++
					}
				}
			}
		}
	}
	if failures != nil && failures.Kind == core.KindObject {
		for _, fm := range failures.Members {
			if !slices.ContainsFunc(resp.Failures, func(f core.ServerFailure) bool { return string(f.Server) == fm.Key }) {
				dropped++
			}
		}
	}
	return filled, dropped
}

// FuzzTally checks that on every answer completion accepts, the tally completion kept agrees
// with referenceTally.
func FuzzTally(f *testing.F) {
	for _, seed := range []string{
		`{"one_time_keys":{"@alice:hs1.test":{"A1":{"signed_curve25519:AAAA":{"key":"k"}}}}}`,
		`{"failures":{},"one_time_keys":{"@alice:hs1.test":{"A1":{},"A2":{}},"@bob:hs2.test":{"B1":{}}}}`,
		`{"one_time_keys":{"@eve:hs1.test":{"E1":{"signed_curve25519:E":"e"}},"@alice:hs1.test":{"A9":{"signed_curve25519:Z":"z"},"A1":{"curve25519:X":"x","signed_curve25519:BBBB":42,"signed_curve25519:CCCC":"second","signed_curve25519:AAAA":{"key":"k"}},"A2":"not an object"}},"failures":{"elsewhere.test":{"status":500,"message":"boom"}}}`,
		`{"one_time_keys":null,"failures":null}`,
		`{"one_time_keys":{"@alice:hs1.test":null,"@bob:hs2.test":{"B1":null}}}`,
		`{"one_time_keys":{"@bob:hs2.test":{"B1":{"signed_curve25519:Q":"q"}}},"failures":{"hs2.test":{"status":503,"message":"Not ready"},"hs1.test":{"status":500},"other.test":{}}}`,
		`{"one_time_keys":{"@al\u0069ce:hs1.test":{"A\u0031":{"signed_curve25519:\u0041":"k"}, "A2" : { } }}, "x":[1,{"y":"}"}]}`,
		`[]`, `"`, `{"one_time_keys":{"@alice:hs1.test":{"A1":{"signed_curve25519:AAAA":"k"}`,
	} {
		f.Add([]byte(seed), false)
	}
	req, err := core.ParseClaimRequest([]byte(`{"one_time_keys":{"@alice:hs1.test":{"A1":"signed_curve25519","A2":"signed_curve25519"},"@bob:hs2.test":{"B1":"signed_curve25519"},"@carol:hs3.test":{}}}`), core.ParseOptions{})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, answer []byte, legacy bool) {
		mode := core.ModeMSC4072
		if legacy {
			mode = core.ModeLegacy
		}
		resp, err := core.CompleteUpstream(req, answer, core.CompleteOptions{Mode: mode, ServerName: "hs1.test"})
		if err != nil {
			return // not a claim answer: 502, nothing counted
		}
		got := resp.Tally()
		filled, dropped := got.Filled, got.Dropped
		if _, perr := core.ParseValue(answer); perr != nil {
			return // the reference cannot read it (duplicates in a skipped part, depth)
		}
		wantFilled, wantDropped := referenceTally(resp, answer)
		if filled != wantFilled || dropped != wantDropped {
			t.Errorf("tally %d filled, %d dropped; reference %d, %d\nanswer %s", filled, dropped, wantFilled, wantDropped, answer)
		}
	})
}
