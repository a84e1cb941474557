package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

// backend names a Store implementation for the shared tests. freshDSN returns the DSN of a new,
// empty store that is removed when the test ends.
type backend struct {
	name     string
	freshDSN func(t testing.TB) string
}

const (
	sc    = SignedCurve25519
	alice = "@alice:example.org"
	bob   = "@bob:example.org"
)

// openStore opens dsn and closes the store when the test ends.
func openStore(t testing.TB, dsn string) Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := Open(ctx, dsn)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// testCtx is the context of one test step: bounded, so that a hung database fails the test.
func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// otks builds a key map from "keyID=value" pairs, the value being raw JSON.
func otks(pairs ...string) map[string]json.RawMessage {
	m := make(map[string]json.RawMessage, len(pairs))
	for _, p := range pairs {
		id, v, ok := strings.Cut(p, "=")
		if !ok {
			panic("otks: want keyID=value, got " + p)
		}
		m[id] = json.RawMessage(v)
	}
	return m
}

// signed returns a signed key object as raw JSON, with some whitespace that compaction removes.
func signed(key string) string {
	return fmt.Sprintf(`{ "key": %q, "signatures": {"@alice:example.org": {"ed25519:DEV": "sig-%s"}} }`, key, key)
}

// compact is what the store keeps and returns for a key value.
func compact(t testing.TB, raw string) string {
	t.Helper()
	var buf bytes.Buffer
	if err := json.Compact(&buf, []byte(raw)); err != nil {
		t.Fatalf("compact %s: %v", raw, err)
	}
	return buf.String()
}

func mustUpload(t testing.TB, s Store, user, device string, up Upload) Counts {
	t.Helper()
	c, err := s.Upload(testCtx(t), user, device, up)
	if err != nil {
		t.Fatalf("Upload(%s, %s): %v", user, device, err)
	}
	return c
}

func mustClaim(t testing.TB, s Store, wants ...Want) []Claimed {
	t.Helper()
	c, err := s.Claim(testCtx(t), wants)
	if err != nil {
		t.Fatalf("Claim(%v): %v", wants, err)
	}
	if c == nil {
		t.Fatalf("Claim(%v) returned a nil slice", wants)
	}
	return c
}

// claimOne claims one key of alg from (user, device) and returns "keyID" or "fallback:keyID",
// or "" when the device gave nothing.
func claimOne(t testing.TB, s Store, user, device, alg string) string {
	t.Helper()
	got := mustClaim(t, s, Want{user, device, alg})
	switch len(got) {
	case 0:
		return ""
	case 1:
		c := got[0]
		if c.User != user || c.Device != device {
			t.Fatalf("claimed from %s/%s, want %s/%s", c.User, c.Device, user, device)
		}
		if c.Fallback {
			return "fallback:" + c.KeyID
		}
		return c.KeyID
	default:
		t.Fatalf("one want gave %d keys: %+v", len(got), got)
		return ""
	}
}

// claimAll claims from (user, device) until it gives a fallback key or nothing, and returns the
// one-time key IDs in the order they came.
func claimAll(t testing.TB, s Store, user, device, alg string) []string {
	t.Helper()
	var ids []string
	for i := 0; i < 10000; i++ {
		got := claimOne(t, s, user, device, alg)
		if got == "" || strings.HasPrefix(got, "fallback:") {
			return ids
		}
		ids = append(ids, got)
	}
	t.Fatalf("device %s/%s never ran out of keys", user, device)
	return nil
}

func mustCounts(t testing.TB, s Store, user, device string) Counts {
	t.Helper()
	c, err := s.Counts(testCtx(t), user, device)
	if err != nil {
		t.Fatalf("Counts(%s, %s): %v", user, device, err)
	}
	return c
}

func equal[T any](t testing.TB, what string, got, want T) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s:\n got  %#v\n want %#v", what, got, want)
	}
}

// fallbackUsed reads the "used" flag of a device's fallback key straight from the database: the
// Store interface does not show it.
func fallbackUsed(t testing.TB, s Store, user, device, alg string) bool {
	t.Helper()
	var used bool
	var err error
	switch s := s.(type) {
	case *sqliteStore:
		err = s.reader.QueryRowContext(testCtx(t),
			`SELECT used FROM fallback_keys WHERE user_id = ? AND device_id = ? AND algorithm = ?`,
			user, device, alg).Scan(&used)
	case *postgresStore:
		err = s.pool.QueryRow(testCtx(t),
			`SELECT used FROM fallback_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3`,
			user, device, alg).Scan(&used)
	default:
		t.Fatalf("fallbackUsed: unknown store %T", s)
	}
	if err != nil {
		t.Fatalf("fallbackUsed: %v", err)
	}
	return used
}

// conformanceCase is one rule of BRIEF sections 3 and 6, checked on a fresh store.
type conformanceCase struct {
	name string
	run  func(t *testing.T, s Store)
}

// conformanceCases are run against every backend by runConformance.
var conformanceCases = []conformanceCase{
	{"counts/unknown device has signed_curve25519 0", func(t *testing.T, s Store) {
		equal(t, "counts", mustCounts(t, s, alice, "NOPE"), Counts{sc: 0})
	}},
	{"counts/per algorithm, unclaimed one-time keys only, never fallback keys", func(t *testing.T, s Store) {
		got := mustUpload(t, s, alice, "DEV", Upload{
			OneTimeKeys:  otks(`curve25519:A="a"`, `curve25519:B="b"`, `x_alg:C={"key":"c"}`),
			FallbackKeys: otks(`signed_curve25519:F=` + signed("f")),
		})
		want := Counts{sc: 0, "curve25519": 2, "x_alg": 1}
		equal(t, "counts from Upload", got, want)
		equal(t, "counts", mustCounts(t, s, alice, "DEV"), want)
		equal(t, "claim", claimOne(t, s, alice, "DEV", "curve25519"), "curve25519:A")
		equal(t, "counts after claim", mustCounts(t, s, alice, "DEV"), Counts{sc: 0, "curve25519": 1, "x_alg": 1})
	}},
	{"counts/of one device only", func(t *testing.T, s Store) {
		mustUpload(t, s, alice, "A", Upload{OneTimeKeys: otks(`signed_curve25519:1=` + signed("1"))})
		mustUpload(t, s, bob, "A", Upload{OneTimeKeys: otks(`signed_curve25519:1=`+signed("1"), `signed_curve25519:2=`+signed("2"))})
		equal(t, "alice", mustCounts(t, s, alice, "A"), Counts{sc: 1})
		equal(t, "bob", mustCounts(t, s, bob, "A"), Counts{sc: 2})
		equal(t, "alice's other device", mustCounts(t, s, alice, "B"), Counts{sc: 0})
	}},
	{"upload/empty upload answers the counts and creates nothing", func(t *testing.T, s Store) {
		equal(t, "counts", mustUpload(t, s, alice, "DEV", Upload{}), Counts{sc: 0})
		equal(t, "counts with empty maps", mustUpload(t, s, alice, "DEV", Upload{
			DeviceKeys: json.RawMessage(" null "), OneTimeKeys: map[string]json.RawMessage{}, FallbackKeys: map[string]json.RawMessage{},
		}), Counts{sc: 0})
		got, err := s.QueryDevices(testCtx(t), map[string][]string{alice: nil})
		if err != nil {
			t.Fatal(err)
		}
		equal(t, "query", got, map[string]map[string]json.RawMessage{alice: {}})
	}},
	{"upload/empty or missing fields never delete", func(t *testing.T, s Store) {
		dk := json.RawMessage(`{"device_id":"DEV","user_id":"@alice:example.org"}`)
		mustUpload(t, s, alice, "DEV", Upload{
			DeviceKeys:   dk,
			OneTimeKeys:  otks(`signed_curve25519:1=` + signed("1")),
			FallbackKeys: otks(`signed_curve25519:F=` + signed("f")),
		})
		for _, up := range []Upload{
			{},
			{DeviceKeys: json.RawMessage{}, OneTimeKeys: map[string]json.RawMessage{}, FallbackKeys: map[string]json.RawMessage{}},
			{DeviceKeys: json.RawMessage("null")},
			{OneTimeKeys: otks(`signed_curve25519:2=` + signed("2"))}, // only adds
		} {
			mustUpload(t, s, alice, "DEV", up)
		}
		got, err := s.QueryDevices(testCtx(t), map[string][]string{alice: nil})
		if err != nil {
			t.Fatal(err)
		}
		equal(t, "device keys", string(got[alice]["DEV"]), string(dk))
		equal(t, "counts", mustCounts(t, s, alice, "DEV"), Counts{sc: 2})
		equal(t, "claims", claimAll(t, s, alice, "DEV", sc), []string{"signed_curve25519:1", "signed_curve25519:2"})
		equal(t, "fallback kept", claimOne(t, s, alice, "DEV", sc), "fallback:signed_curve25519:F")
	}},
	{"upload/identical re-upload is a no-op, whitespace aside", func(t *testing.T, s Store) {
		up := Upload{OneTimeKeys: otks(`signed_curve25519:1=`+signed("1"), `signed_curve25519:2="plain"`)}
		equal(t, "first", mustUpload(t, s, alice, "DEV", up), Counts{sc: 2})
		equal(t, "again", mustUpload(t, s, alice, "DEV", up), Counts{sc: 2})
		respaced := Upload{OneTimeKeys: otks(`signed_curve25519:1=`+compact(t, signed("1")), `signed_curve25519:2=  "plain"  `)}
		equal(t, "respaced", mustUpload(t, s, alice, "DEV", respaced), Counts{sc: 2})
	}},
	{"upload/re-signed re-upload of an unclaimed key is the same key: accepted, the stored one kept", func(t *testing.T, s Store) {
		// Synapse compares the key, not its signatures (_one_time_keys_match); so do we (BRIEF 6).
		mustUpload(t, s, alice, "DEV", Upload{OneTimeKeys: otks(`signed_curve25519:1=` + signed("1"))})
		resigned := `{"key":"1","signatures":{"@alice:example.org":{"ed25519:DEV":"another-sig","ed25519:NEW":"x"}}}`
		unsigned := `{"key":"1","signatures":{}}`
		for _, v := range []string{resigned, unsigned} {
			equal(t, "re-upload "+v, mustUpload(t, s, alice, "DEV", Upload{OneTimeKeys: otks(`signed_curve25519:1=`+v, `signed_curve25519:2=`+signed("2"))}), Counts{sc: 2})
		}
		got := mustClaim(t, s, Want{alice, "DEV", sc})
		equal(t, "the first upload's key, with its signatures", string(got[0].Key), compact(t, signed("1")))
		// A member other than signatures still makes another key.
		_, err := s.Upload(testCtx(t), alice, "DEV", Upload{OneTimeKeys: otks(`signed_curve25519:2={"key":"2","fallback":true,"signatures":{}}`)})
		if !errors.Is(err, ErrKeyConflict) {
			t.Fatalf("another member: err = %v, want ErrKeyConflict", err)
		}
		equal(t, "counts", mustCounts(t, s, alice, "DEV"), Counts{sc: 1})
	}},
	{"upload/a Checked upload is stored as given, without reading it again", func(t *testing.T, s Store) {
		// hostserver.ParseUpload has validated and canonicalised everything: the store keeps the
		// bytes (here deliberately not compact, which an unchecked upload would compact).
		dk := json.RawMessage(`{ "user_id" : "x" }`)
		v := ` {"key":"1","signatures":{}} `
		mustUpload(t, s, alice, "DEV", Upload{DeviceKeys: dk, OneTimeKeys: otks(`signed_curve25519:1=` + v), Checked: true})
		got := mustClaim(t, s, Want{alice, "DEV", sc})
		equal(t, "key bytes", string(got[0].Key), v)
		q, err := s.QueryDevices(testCtx(t), map[string][]string{alice: {"DEV"}})
		if err != nil {
			t.Fatal(err)
		}
		equal(t, "device keys", string(q[alice]["DEV"]), string(dk))
	}},
	{"upload/key values are stored compacted", func(t *testing.T, s Store) {
		mustUpload(t, s, alice, "DEV", Upload{OneTimeKeys: otks("signed_curve25519:1=\n\t" + signed("1") + "\n")})
		got := mustClaim(t, s, Want{alice, "DEV", sc})
		equal(t, "claimed", len(got), 1)
		equal(t, "key bytes", string(got[0].Key), compact(t, signed("1")))
	}},
	{"upload/conflict is ErrKeyConflict naming the key ID and rolls back the whole upload", func(t *testing.T, s Store) {
		dk := json.RawMessage(`{"v":1}`)
		mustUpload(t, s, alice, "DEV", Upload{
			DeviceKeys:   dk,
			OneTimeKeys:  otks(`signed_curve25519:1=` + signed("1")),
			FallbackKeys: otks(`signed_curve25519:F=` + signed("f")),
		})
		_, err := s.Upload(testCtx(t), alice, "DEV", Upload{
			DeviceKeys:   json.RawMessage(`{"v":2}`),
			OneTimeKeys:  otks(`signed_curve25519:0=`+signed("0"), `signed_curve25519:1=`+signed("other"), `signed_curve25519:2=`+signed("2")),
			FallbackKeys: otks(`signed_curve25519:G=` + signed("g")),
		})
		if !errors.Is(err, ErrKeyConflict) {
			t.Fatalf("err = %v, want ErrKeyConflict", err)
		}
		if !strings.Contains(err.Error(), `"signed_curve25519:1"`) {
			t.Errorf("error %q does not name the key ID", err)
		}
		got, qerr := s.QueryDevices(testCtx(t), map[string][]string{alice: {"DEV"}})
		if qerr != nil {
			t.Fatal(qerr)
		}
		equal(t, "device keys unchanged", string(got[alice]["DEV"]), string(dk))
		equal(t, "counts unchanged", mustCounts(t, s, alice, "DEV"), Counts{sc: 1})
		equal(t, "claims", claimAll(t, s, alice, "DEV", sc), []string{"signed_curve25519:1"})
		equal(t, "old fallback", claimOne(t, s, alice, "DEV", sc), "fallback:signed_curve25519:F")
	}},
	{"upload/conflict also between a string and an object value", func(t *testing.T, s Store) {
		mustUpload(t, s, alice, "DEV", Upload{OneTimeKeys: otks(`curve25519:1="abc"`)})
		_, err := s.Upload(testCtx(t), alice, "DEV", Upload{OneTimeKeys: otks(`curve25519:1={"key":"abc"}`)})
		if !errors.Is(err, ErrKeyConflict) {
			t.Fatalf("err = %v, want ErrKeyConflict", err)
		}
	}},
	{"upload/invalid input is ErrInvalidKey and stores nothing", func(t *testing.T, s Store) {
		for _, tc := range []struct {
			name string
			up   Upload
		}{
			{"key ID without algorithm", Upload{OneTimeKeys: otks(`nocolon="a"`)}},
			{"key ID with empty algorithm", Upload{OneTimeKeys: otks(`:name="a"`)}},
			{"key ID with empty name", Upload{FallbackKeys: otks(`curve25519:="a"`)}},
			{"key ID not UTF-8", Upload{OneTimeKeys: otks("curve25519:\xff=\"a\"")}},
			{"value not JSON", Upload{OneTimeKeys: otks(`curve25519:1={`)}},
			{"value a number", Upload{OneTimeKeys: otks(`curve25519:1=12`)}},
			{"two fallback keys of one algorithm", Upload{FallbackKeys: otks(`curve25519:1="a"`, `curve25519:2="b"`)}},
			{"device keys not an object", Upload{DeviceKeys: json.RawMessage(`[1]`)}},
			{"device keys not JSON", Upload{DeviceKeys: json.RawMessage(`{"a":`)}},
		} {
			if tc.up.OneTimeKeys == nil {
				tc.up.OneTimeKeys = otks(`curve25519:ok="fine"`)
			}
			_, err := s.Upload(testCtx(t), alice, "DEV", tc.up)
			if !errors.Is(err, ErrInvalidKey) {
				t.Errorf("%s: err = %v, want ErrInvalidKey", tc.name, err)
			}
		}
		equal(t, "counts", mustCounts(t, s, alice, "DEV"), Counts{sc: 0})
	}},
	{"device keys/stored and returned byte for byte", func(t *testing.T, s Store) {
		odd := json.RawMessage("{ \"user_id\" :\"@alice:example.org\",\n\t\"device_id\":\"DEV\" ,\"keys\":{\"ed25519:DEV\":\"b\",\"curve25519:DEV\":\"a\"},\r\n" +
			"  \"algorithms\" : [ \"m.olm.v1.curve25519-aes-sha2\" ], \"unsigned\":{\"x\":\"\\u00e9\u00e9\\/\"}, \"signatures\":{} }  ")
		mustUpload(t, s, alice, "DEV", Upload{DeviceKeys: odd})
		got, err := s.QueryDevices(testCtx(t), map[string][]string{alice: {"DEV"}})
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got[alice]["DEV"], odd) {
			t.Fatalf("device keys changed:\n got  %q\n want %q", got[alice]["DEV"], odd)
		}
		replaced := json.RawMessage(`{"b":1,"a":2}`)
		mustUpload(t, s, alice, "DEV", Upload{DeviceKeys: replaced})
		got, err = s.QueryDevices(testCtx(t), map[string][]string{alice: nil})
		if err != nil {
			t.Fatal(err)
		}
		equal(t, "replaced", string(got[alice]["DEV"]), string(replaced))
	}},
	{"query/semantics", func(t *testing.T, s Store) {
		dk := func(d string) json.RawMessage { return json.RawMessage(`{"device_id":"` + d + `"}`) }
		mustUpload(t, s, alice, "A1", Upload{DeviceKeys: dk("A1")})
		mustUpload(t, s, alice, "A2", Upload{DeviceKeys: dk("A2")})
		mustUpload(t, s, alice, "KEYLESS", Upload{OneTimeKeys: otks(`curve25519:1="a"`)}) // no device keys
		mustUpload(t, s, bob, "B1", Upload{DeviceKeys: dk("B1")})
		for _, tc := range []struct {
			name string
			req  map[string][]string
			want map[string]map[string]json.RawMessage
		}{
			{"nil list is all devices", map[string][]string{alice: nil},
				map[string]map[string]json.RawMessage{alice: {"A1": dk("A1"), "A2": dk("A2")}}},
			{"empty list is all devices", map[string][]string{alice: {}, bob: {}},
				map[string]map[string]json.RawMessage{alice: {"A1": dk("A1"), "A2": dk("A2")}, bob: {"B1": dk("B1")}}},
			{"listed devices only, unknown omitted", map[string][]string{alice: {"A2", "NOPE", "KEYLESS", "A2"}},
				map[string]map[string]json.RawMessage{alice: {"A2": dk("A2")}}},
			{"unknown user is an empty map", map[string][]string{"@carol:example.org": nil, bob: {"NOPE"}},
				map[string]map[string]json.RawMessage{"@carol:example.org": {}, bob: {}}},
			{"no users", map[string][]string{}, map[string]map[string]json.RawMessage{}},
			{"device IDs are exact", map[string][]string{alice: {"a1", "A1 "}},
				map[string]map[string]json.RawMessage{alice: {}}},
		} {
			got, err := s.QueryDevices(testCtx(t), tc.req)
			if err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("%s:\n got  %s\n want %s", tc.name, show(got), show(tc.want))
			}
		}
	}},
	{"claim/oldest batch first, ties by key ID in byte order", func(t *testing.T, s Store) {
		mustUpload(t, s, alice, "DEV", Upload{OneTimeKeys: otks(
			`signed_curve25519:a=`+signed("a"), `signed_curve25519:BBB=`+signed("B"),
			`signed_curve25519:AAA=`+signed("A"), `signed_curve25519:é=`+signed("e"),
			`signed_curve25519:z=`+signed("z"), `signed_curve25519:_=`+signed("_"))})
		mustUpload(t, s, alice, "DEV", Upload{OneTimeKeys: otks(`signed_curve25519:0000=` + signed("0"))})
		mustUpload(t, s, alice, "DEV", Upload{OneTimeKeys: otks(`signed_curve25519:!=`+signed("!"), `signed_curve25519:ZZZ=`+signed("Z"))})
		equal(t, "claim order", claimAll(t, s, alice, "DEV", sc), []string{
			// batch 1 in byte order: 'A' < 'B' < '_' < 'a' < 'z' < 0xC3 (é)
			"signed_curve25519:AAA", "signed_curve25519:BBB", "signed_curve25519:_", "signed_curve25519:a",
			"signed_curve25519:z", "signed_curve25519:é",
			"signed_curve25519:0000",                       // batch 2
			"signed_curve25519:!", "signed_curve25519:ZZZ", // batch 3
		})
	}},
	{"claim/batches are per upload, across devices, and a re-upload does not move a key", func(t *testing.T, s Store) {
		mustUpload(t, s, alice, "A", Upload{OneTimeKeys: otks(`curve25519:5="a5"`)})
		mustUpload(t, s, bob, "B", Upload{OneTimeKeys: otks(`curve25519:1="b1"`)})
		mustUpload(t, s, alice, "A", Upload{OneTimeKeys: otks(`curve25519:3="a3"`)})
		// Re-uploads curve25519:5 (already in batch 1) together with a new key.
		mustUpload(t, s, alice, "A", Upload{OneTimeKeys: otks(`curve25519:5="a5"`, `curve25519:1="a1"`)})
		equal(t, "alice", claimAll(t, s, alice, "A", "curve25519"), []string{"curve25519:5", "curve25519:3", "curve25519:1"})
		equal(t, "bob", claimAll(t, s, bob, "B", "curve25519"), []string{"curve25519:1"})
	}},
	{"claim/exhausted device gives the fallback key, again and again, marked used", func(t *testing.T, s Store) {
		mustUpload(t, s, alice, "DEV", Upload{
			OneTimeKeys:  otks(`signed_curve25519:1=` + signed("1")),
			FallbackKeys: otks(`signed_curve25519:F=` + signed("f")),
		})
		if fallbackUsed(t, s, alice, "DEV", sc) {
			t.Fatal("new fallback key is used")
		}
		equal(t, "first", claimOne(t, s, alice, "DEV", sc), "signed_curve25519:1")
		if fallbackUsed(t, s, alice, "DEV", sc) {
			t.Fatal("fallback key used by a one-time key claim")
		}
		for i := 0; i < 2; i++ {
			got := mustClaim(t, s, Want{alice, "DEV", sc})
			equal(t, "fallback claim", got, []Claimed{{User: alice, Device: "DEV", KeyID: "signed_curve25519:F",
				Key: json.RawMessage(compact(t, signed("f"))), Fallback: true}})
			if !fallbackUsed(t, s, alice, "DEV", sc) {
				t.Fatal("fallback key not marked used")
			}
		}
		equal(t, "counts", mustCounts(t, s, alice, "DEV"), Counts{sc: 0})
	}},
	{"claim/nothing to give", func(t *testing.T, s Store) {
		mustUpload(t, s, alice, "DEV", Upload{
			OneTimeKeys:  otks(`curve25519:1="a"`),
			FallbackKeys: otks(`curve25519:F="f"`),
		})
		equal(t, "unknown user", mustClaim(t, s, Want{"@nobody:example.org", "DEV", sc}), []Claimed{})
		equal(t, "unknown device", mustClaim(t, s, Want{alice, "NOPE", sc}), []Claimed{})
		equal(t, "other algorithm", mustClaim(t, s, Want{alice, "DEV", sc}), []Claimed{})
		equal(t, "no wants", mustClaim(t, s), []Claimed{})
		equal(t, "counts", mustCounts(t, s, alice, "DEV"), Counts{sc: 0, "curve25519": 1})
	}},
	{"claim/algorithms are separate", func(t *testing.T, s Store) {
		mustUpload(t, s, alice, "DEV", Upload{
			OneTimeKeys:  otks(`curve25519:1="a"`, `signed_curve25519:2=`+signed("2")),
			FallbackKeys: otks(`curve25519:F="f"`),
		})
		equal(t, "signed", claimOne(t, s, alice, "DEV", sc), "signed_curve25519:2")
		equal(t, "signed exhausted, no signed fallback", claimOne(t, s, alice, "DEV", sc), "")
		equal(t, "curve", claimOne(t, s, alice, "DEV", "curve25519"), "curve25519:1")
		equal(t, "curve fallback", claimOne(t, s, alice, "DEV", "curve25519"), "fallback:curve25519:F")
	}},
	{"claim/many devices in one request, in the order asked, duplicates once", func(t *testing.T, s Store) {
		mustUpload(t, s, alice, "A1", Upload{OneTimeKeys: otks(`signed_curve25519:1="a1"`, `signed_curve25519:2="a2"`)})
		mustUpload(t, s, alice, "A2", Upload{FallbackKeys: otks(`signed_curve25519:F="af"`)})
		mustUpload(t, s, bob, "B1", Upload{OneTimeKeys: otks(`signed_curve25519:1="b1"`, `curve25519:1="bc"`)})
		got := mustClaim(t, s,
			Want{bob, "B1", sc}, Want{alice, "A2", sc}, Want{alice, "GONE", sc},
			Want{alice, "A1", sc}, Want{alice, "A1", sc}, Want{bob, "B1", "curve25519"})
		equal(t, "claimed", got, []Claimed{
			{User: bob, Device: "B1", KeyID: "signed_curve25519:1", Key: json.RawMessage(`"b1"`)},
			{User: alice, Device: "A2", KeyID: "signed_curve25519:F", Key: json.RawMessage(`"af"`), Fallback: true},
			{User: alice, Device: "A1", KeyID: "signed_curve25519:1", Key: json.RawMessage(`"a1"`)},
			{User: bob, Device: "B1", KeyID: "curve25519:1", Key: json.RawMessage(`"bc"`)},
		})
		equal(t, "alice A1 counts", mustCounts(t, s, alice, "A1"), Counts{sc: 1})
	}},
	{"claim/a claimed key ID that is uploaded again is skipped and the counts stay true", func(t *testing.T, s Store) {
		mustUpload(t, s, alice, "DEV", Upload{OneTimeKeys: otks(`signed_curve25519:1=`+signed("1"), `signed_curve25519:2=`+signed("2"))})
		equal(t, "claim", claimOne(t, s, alice, "DEV", sc), "signed_curve25519:1")
		// The client had not seen the claim yet and uploads the same keys again, plus one; and
		// once more with a different value under the claimed ID (not a conflict: it is gone).
		equal(t, "re-upload", mustUpload(t, s, alice, "DEV", Upload{OneTimeKeys: otks(
			`signed_curve25519:1=`+signed("1"), `signed_curve25519:2=`+signed("2"), `signed_curve25519:3=`+signed("3"))}),
			Counts{sc: 2})
		equal(t, "different value under the claimed ID", mustUpload(t, s, alice, "DEV", Upload{OneTimeKeys: otks(
			`signed_curve25519:1=` + signed("new"))}), Counts{sc: 2})
		equal(t, "claims", claimAll(t, s, alice, "DEV", sc), []string{"signed_curve25519:2", "signed_curve25519:3"})
		equal(t, "counts", mustCounts(t, s, alice, "DEV"), Counts{sc: 0})
	}},
	{"claim/claimed key IDs are remembered per device", func(t *testing.T, s Store) {
		mustUpload(t, s, alice, "A", Upload{OneTimeKeys: otks(`curve25519:1="a"`)})
		equal(t, "claim", claimOne(t, s, alice, "A", "curve25519"), "curve25519:1")
		equal(t, "same ID on another device", mustUpload(t, s, alice, "B", Upload{OneTimeKeys: otks(`curve25519:1="b"`)}),
			Counts{sc: 0, "curve25519": 1})
		equal(t, "same ID of another user", mustUpload(t, s, bob, "A", Upload{OneTimeKeys: otks(`curve25519:1="c"`)}),
			Counts{sc: 0, "curve25519": 1})
	}},
	{"claim/claimed key IDs stay refused over rounds of uploads and claims", func(t *testing.T, s Store) {
		k := func(ids ...string) map[string]json.RawMessage {
			m := make(map[string]json.RawMessage, len(ids))
			for _, id := range ids {
				m["curve25519:"+id] = json.RawMessage(`"v` + id + `"`)
			}
			return m
		}
		equal(t, "upload 1", mustUpload(t, s, alice, "DEV", Upload{OneTimeKeys: k("1", "2", "3")}), Counts{sc: 0, "curve25519": 3})
		equal(t, "claim 1", claimOne(t, s, alice, "DEV", "curve25519"), "curve25519:1")
		equal(t, "claim 2", claimOne(t, s, alice, "DEV", "curve25519"), "curve25519:2")
		// A different value under the unclaimed ID 3 is a conflict, and changes nothing.
		if _, err := s.Upload(testCtx(t), alice, "DEV", Upload{OneTimeKeys: otks(`curve25519:3="other"`, `curve25519:9="v9"`)}); !errors.Is(err, ErrKeyConflict) {
			t.Fatalf("err = %v, want ErrKeyConflict", err)
		}
		equal(t, "counts after conflict", mustCounts(t, s, alice, "DEV"), Counts{sc: 0, "curve25519": 1})
		equal(t, "upload 2", mustUpload(t, s, alice, "DEV", Upload{OneTimeKeys: k("2", "3", "4")}), Counts{sc: 0, "curve25519": 2})
		equal(t, "claim 3", claimOne(t, s, alice, "DEV", "curve25519"), "curve25519:3")
		equal(t, "upload 3", mustUpload(t, s, alice, "DEV", Upload{OneTimeKeys: k("1", "2", "3", "4", "5")}), Counts{sc: 0, "curve25519": 2})
		equal(t, "upload 3 again", mustUpload(t, s, alice, "DEV", Upload{OneTimeKeys: k("1", "2", "3", "4", "5")}), Counts{sc: 0, "curve25519": 2})
		equal(t, "claims", claimAll(t, s, alice, "DEV", "curve25519"), []string{"curve25519:4", "curve25519:5"})
		equal(t, "upload 4", mustUpload(t, s, alice, "DEV", Upload{OneTimeKeys: k("1", "2", "3", "4", "5", "6")}), Counts{sc: 0, "curve25519": 1})
		equal(t, "last", claimAll(t, s, alice, "DEV", "curve25519"), []string{"curve25519:6"})
	}},
	{"claim/a request with more devices than one statement takes", func(t *testing.T, s Store) {
		// 300 devices, 2 algorithms each: 600 wants and more, in several chunks (SQLite) with
		// fallback keys, devices without anything, unknown devices and duplicates among them.
		const devices = 300
		dev := func(d int) string { return fmt.Sprintf("D%03d", d) }
		var wants []Want
		var want []Claimed
		for d := 0; d < devices; d++ {
			up := Upload{FallbackKeys: otks(`curve25519:F="f` + dev(d) + `"`)}
			switch {
			case d%7 == 0: // only a fallback key
			case d%11 == 0: // nothing at all
				up = Upload{DeviceKeys: json.RawMessage(`{}`)}
			default:
				up.OneTimeKeys = otks(`curve25519:2="two`+dev(d)+`"`, `curve25519:1="one`+dev(d)+`"`, `signed_curve25519:1="s`+dev(d)+`"`)
			}
			mustUpload(t, s, alice, dev(d), up)
			wants = append(wants, Want{alice, dev(d), "curve25519"}, Want{alice, dev(d), sc}, Want{bob, dev(d), sc})
			switch {
			case d%7 == 0:
				want = append(want, Claimed{User: alice, Device: dev(d), KeyID: "curve25519:F", Key: json.RawMessage(`"f` + dev(d) + `"`), Fallback: true})
			case d%11 == 0:
			default:
				want = append(want,
					Claimed{User: alice, Device: dev(d), KeyID: "curve25519:1", Key: json.RawMessage(`"one` + dev(d) + `"`)},
					Claimed{User: alice, Device: dev(d), KeyID: "signed_curve25519:1", Key: json.RawMessage(`"s` + dev(d) + `"`)})
			}
			if d%5 == 0 {
				wants = append(wants, Want{alice, dev(d), "curve25519"}) // a duplicate
			}
		}
		equal(t, "claimed", mustClaim(t, s, wants...), want)
		equal(t, "counts", mustCounts(t, s, alice, dev(1)), Counts{sc: 0, "curve25519": 1})
	}},
	{"namespaces/one-time and fallback keys may share a key ID", func(t *testing.T, s Store) {
		mustUpload(t, s, alice, "DEV", Upload{
			OneTimeKeys:  otks(`signed_curve25519:AAAAAQ=` + signed("otk")),
			FallbackKeys: otks(`signed_curve25519:AAAAAQ=` + signed("fallback")),
		})
		equal(t, "counts", mustCounts(t, s, alice, "DEV"), Counts{sc: 1})
		got := mustClaim(t, s, Want{alice, "DEV", sc})
		equal(t, "one-time key", got, []Claimed{{User: alice, Device: "DEV", KeyID: "signed_curve25519:AAAAAQ",
			Key: json.RawMessage(compact(t, signed("otk")))}})
		got = mustClaim(t, s, Want{alice, "DEV", sc})
		equal(t, "fallback key", got, []Claimed{{User: alice, Device: "DEV", KeyID: "signed_curve25519:AAAAAQ",
			Key: json.RawMessage(compact(t, signed("fallback"))), Fallback: true}})
		// The fallback key with that ID is re-uploaded: not a claimed one-time key, not skipped,
		// and identical, so it stays used.
		mustUpload(t, s, alice, "DEV", Upload{FallbackKeys: otks(`signed_curve25519:AAAAAQ=` + signed("fallback"))})
		if !fallbackUsed(t, s, alice, "DEV", sc) {
			t.Fatal("identical fallback re-upload reset used")
		}
	}},
	{"fallback/a new fallback key replaces the old one and resets used", func(t *testing.T, s Store) {
		mustUpload(t, s, alice, "DEV", Upload{FallbackKeys: otks(`signed_curve25519:F1=` + signed("f1"))})
		equal(t, "claim", claimOne(t, s, alice, "DEV", sc), "fallback:signed_curve25519:F1")
		if !fallbackUsed(t, s, alice, "DEV", sc) {
			t.Fatal("not used after claim")
		}
		mustUpload(t, s, alice, "DEV", Upload{FallbackKeys: otks(`signed_curve25519:F2=` + signed("f2"))})
		if fallbackUsed(t, s, alice, "DEV", sc) {
			t.Fatal("replacement did not reset used")
		}
		equal(t, "claim", claimOne(t, s, alice, "DEV", sc), "fallback:signed_curve25519:F2")
		// Same key ID, different value: also a new key.
		mustUpload(t, s, alice, "DEV", Upload{FallbackKeys: otks(`signed_curve25519:F2=` + signed("f2-new"))})
		if fallbackUsed(t, s, alice, "DEV", sc) {
			t.Fatal("new value under the same ID did not reset used")
		}
		got := mustClaim(t, s, Want{alice, "DEV", sc})
		equal(t, "new value", string(got[0].Key), compact(t, signed("f2-new")))
	}},
	{"fallback/an identical re-upload keeps used", func(t *testing.T, s Store) {
		mustUpload(t, s, alice, "DEV", Upload{FallbackKeys: otks(`signed_curve25519:F=` + signed("f"))})
		equal(t, "claim", claimOne(t, s, alice, "DEV", sc), "fallback:signed_curve25519:F")
		mustUpload(t, s, alice, "DEV", Upload{FallbackKeys: otks(`signed_curve25519:F=` + signed("f"))})
		if !fallbackUsed(t, s, alice, "DEV", sc) {
			t.Fatal("identical re-upload reset used")
		}
		mustUpload(t, s, alice, "DEV", Upload{FallbackKeys: otks("signed_curve25519:F=\n" + compact(t, signed("f")) + " ")})
		if !fallbackUsed(t, s, alice, "DEV", sc) {
			t.Fatal("re-upload differing only in whitespace reset used")
		}
	}},
	{"fallback/one per algorithm", func(t *testing.T, s Store) {
		mustUpload(t, s, alice, "DEV", Upload{FallbackKeys: otks(`signed_curve25519:F=`+signed("f"), `curve25519:G="g"`)})
		equal(t, "signed", claimOne(t, s, alice, "DEV", sc), "fallback:signed_curve25519:F")
		equal(t, "curve", claimOne(t, s, alice, "DEV", "curve25519"), "fallback:curve25519:G")
		if fallbackUsed(t, s, alice, "DEV", sc) != true || fallbackUsed(t, s, alice, "DEV", "curve25519") != true {
			t.Fatal("not both used")
		}
		mustUpload(t, s, alice, "DEV", Upload{FallbackKeys: otks(`curve25519:H="h"`)})
		if !fallbackUsed(t, s, alice, "DEV", sc) {
			t.Fatal("replacing the curve25519 fallback key reset the signed_curve25519 one")
		}
		equal(t, "curve replaced", claimOne(t, s, alice, "DEV", "curve25519"), "fallback:curve25519:H")
	}},
}

// show renders a query answer for an error message.
func show(m map[string]map[string]json.RawMessage) string {
	b, err := json.Marshal(m)
	if err != nil {
		return err.Error()
	}
	return string(b)
}

// runConformance runs every conformance case against a fresh store of the backend, and the
// backend-independent checks of Open.
func runConformance(t *testing.T, b backend) {
	for _, tc := range conformanceCases {
		t.Run(tc.name, func(t *testing.T) {
			tc.run(t, openStore(t, b.freshDSN(t)))
		})
	}
	t.Run("open/reopen keeps the data and migrating again is a no-op", func(t *testing.T) {
		dsn := b.freshDSN(t)
		s := openStore(t, dsn)
		mustUpload(t, s, alice, "DEV", Upload{
			DeviceKeys:   json.RawMessage(`{"k": 1}`),
			OneTimeKeys:  otks(`curve25519:1="a"`, `curve25519:2="b"`),
			FallbackKeys: otks(`curve25519:F="f"`),
		})
		equal(t, "claim", claimOne(t, s, alice, "DEV", "curve25519"), "curve25519:1")
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		s = openStore(t, dsn)
		equal(t, "counts", mustCounts(t, s, alice, "DEV"), Counts{sc: 0, "curve25519": 1})
		equal(t, "claimed ID still remembered", mustUpload(t, s, alice, "DEV", Upload{OneTimeKeys: otks(`curve25519:1="a"`)}),
			Counts{sc: 0, "curve25519": 1})
		equal(t, "claims", claimAll(t, s, alice, "DEV", "curve25519"), []string{"curve25519:2"})
		got, err := s.QueryDevices(testCtx(t), map[string][]string{alice: nil})
		if err != nil {
			t.Fatal(err)
		}
		equal(t, "device keys", string(got[alice]["DEV"]), `{"k": 1}`)
		equal(t, "schema versions", schemaVersions(t, s), knownVersions(s))
	})
	t.Run("open/concurrent opens migrate once", func(t *testing.T) {
		dsn := b.freshDSN(t)
		const n = 4
		type opened struct {
			s   Store
			err error
		}
		results := make(chan opened, n)
		for i := 0; i < n; i++ {
			go func() {
				s, err := Open(testCtx(t), dsn)
				results <- opened{s, err}
			}()
		}
		for i := 0; i < n; i++ {
			r := <-results
			if r.err != nil {
				t.Errorf("Open: %v", r.err)
				continue
			}
			equal(t, "schema versions", schemaVersions(t, r.s), knownVersions(r.s))
			if err := r.s.Close(); err != nil {
				t.Error(err)
			}
		}
	})
}

// knownVersions returns the versions of the migrations of the store's backend, in order.
func knownVersions(s Store) []int {
	var migrations []migration
	switch s.(type) {
	case *sqliteStore:
		migrations = sqliteMigrations
	case *postgresStore:
		migrations = postgresMigrations
	}
	versions := make([]int, len(migrations))
	for i, m := range migrations {
		versions[i] = m.version
	}
	return versions
}

// schemaVersions reads schema_migrations.
func schemaVersions(t testing.TB, s Store) []int {
	t.Helper()
	var versions []int
	switch s := s.(type) {
	case *sqliteStore:
		rows, err := s.reader.QueryContext(testCtx(t), `SELECT version FROM schema_migrations ORDER BY version`)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = rows.Close() }()
		for rows.Next() {
			var v int
			if err := rows.Scan(&v); err != nil {
				t.Fatal(err)
			}
			versions = append(versions, v)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
	case *postgresStore:
		rows, _ := s.pool.Query(testCtx(t), `SELECT version FROM schema_migrations ORDER BY version`)
		var v int
		for rows.Next() {
			if err := rows.Scan(&v); err != nil {
				t.Fatal(err)
			}
			versions = append(versions, v)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
	default:
		t.Fatalf("schemaVersions: unknown store %T", s)
	}
	return versions
}

func TestOpenRejectsUnknownDSN(t *testing.T) {
	for _, tc := range []struct{ name, dsn, want string }{
		{"mysql", "mysql://u:secret@h/db", "unsupported DSN"},
		{"empty", "", "unsupported DSN"},
		{"sqlite without path", "sqlite:", "PATH"},
		{"sqlite memory", "sqlite::memory:", "PATH"},
		{"sqlite with query", "sqlite:/tmp/x.db?mode=ro", "must not contain"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Open(context.Background(), tc.dsn)
			if err == nil {
				_ = s.Close()
				t.Fatalf("Open(%q) succeeded", tc.dsn)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("error %q shows the password", err)
			}
		})
	}
}
