package hostserver_test

import (
	"net/http"
	"strings"
	"testing"
)

// Issue 14, fixes 1 and 2 (BRIEF 6): a one-time or fallback key is a string or a KeyObject (key a
// string, signatures a map of user ID to a map of key ID to string); anything else is 400
// M_BAD_JSON naming the path, and nothing of the request is stored. A re-upload of an unclaimed
// one-time key that differs only in its signatures is the same key (Synapse compares the key).

func TestUploadKeyObjectsStrict(t *testing.T) {
	sig := `"signatures":{"` + bob + `":{"ed25519:BOBDEV":"s"}}`
	cases := []struct {
		name, field, value, path string
	}{
		{"no signatures", "one_time_keys", `{"key":"k-E2"}`, `one_time_keys["signed_curve25519:E2"].signatures is missing`},
		{"signatures a string", "one_time_keys", `{"key":"k","signatures":"x"}`, `one_time_keys["signed_curve25519:E2"].signatures must be`},
		{"signatures an array", "one_time_keys", `{"key":"k","signatures":[]}`, `one_time_keys["signed_curve25519:E2"].signatures must be`},
		{"signatures null", "one_time_keys", `{"key":"k","signatures":null}`, `one_time_keys["signed_curve25519:E2"].signatures must be`},
		{"signatures of a user a string", "one_time_keys", `{"key":"k","signatures":{"` + bob + `":"s"}}`, `one_time_keys["signed_curve25519:E2"].signatures["` + bob + `"] must be an object`},
		{"a signature a number", "one_time_keys", `{"key":"k","signatures":{"` + bob + `":{"ed25519:BOBDEV":5}}}`, `one_time_keys["signed_curve25519:E2"].signatures["` + bob + `"]["ed25519:BOBDEV"] must be a string`},
		{"a signature null", "one_time_keys", `{"key":"k","signatures":{"` + bob + `":{"ed25519:BOBDEV":null}}}`, `["ed25519:BOBDEV"] must be a string`},
		{"signatures keyed by a non-user", "one_time_keys", `{"key":"k","signatures":{"bob":{"ed25519:BOBDEV":"s"}}}`, `one_time_keys["signed_curve25519:E2"].signatures: "bob" is not a user ID`},
		{"no key", "one_time_keys", `{` + sig + `}`, `one_time_keys["signed_curve25519:E2"].key is missing`},
		{"key a number", "one_time_keys", `{"key":1,` + sig + `}`, `one_time_keys["signed_curve25519:E2"].key must be a string`},
		{"a number", "one_time_keys", `5`, `one_time_keys["signed_curve25519:E2"] must be a string or a key object`},
		{"an array", "one_time_keys", `["k"]`, `one_time_keys["signed_curve25519:E2"] must be a string or a key object`},
		{"null", "one_time_keys", `null`, `one_time_keys["signed_curve25519:E2"] must be a string or a key object`},
		{"a null elsewhere", "one_time_keys", `{"key":"k",` + sig + `,"x":null}`, `one_time_keys["signed_curve25519:E2"] holds a null`},
		{"fallback not a boolean", "fallback_keys", `{"key":"k","fallback":"yes",` + sig + `}`, `fallback_keys["signed_curve25519:E2"].fallback must be true or false`},
		{"fallback key without signatures", "fallback_keys", `{"key":"k","fallback":true}`, `fallback_keys["signed_curve25519:E2"].signatures is missing`},
	}
	forEachStore(t, func(t *testing.T, b backend) {
		ts := startServer(t, b, nil)
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				// Beside a valid key, device keys and a valid fallback key: none of them is stored.
				other := `"fallback_keys":{"signed_curve25519:FB":` + key("FB") + `}`
				if c.field == "fallback_keys" {
					other = `"one_time_keys":{"signed_curve25519:OK":` + key("OK") + `}`
				}
				body := `{"device_keys":` + deviceKeys(bob, "BOBDEV") + `,` + other + `,"` + c.field + `":{"signed_curve25519:OK2":` + key("OK2") + `,"signed_curve25519:E2":` + c.value + `}}`
				msg := wantError(t, c.name, ts.post(uploadPath, bobToken, body), http.StatusBadRequest, "M_BAD_JSON")
				if !strings.Contains(msg, c.path) {
					t.Errorf("message %q does not contain %q", msg, c.path)
				}
			})
		}
		wantBody(t, "counts", ts.ok(uploadPath, bobToken, `{}`), zeroCountsBody)
		wantBody(t, "claim", ts.ok(claimPath, aliceToken, claimBody(bob, "BOBDEV")), `{"failures":{},"one_time_keys":{"`+bob+`":{"BOBDEV":{}}}}`)
		wantBody(t, "query", ts.ok(queryPath, aliceToken, `{"device_keys":{"`+bob+`":[]}}`), `{"device_keys":{"`+bob+`":{}},"failures":{}}`)

		// What the schema allows is accepted: a string key, a KeyObject with extra members, an
		// empty signatures map, several signers, a fallback flag.
		ok := `{"one_time_keys":{"curve25519:S":"plain","signed_curve25519:X":{"key":"x","signatures":{},"extra":{"a":[1,2]}},` +
			`"signed_curve25519:Y":{"key":"y","signatures":{"` + bob + `":{"ed25519:BOBDEV":"s1"},"@other:elsewhere.test":{"ed25519:Z":"s2","curve25519:Z":"s3"}}}},` +
			`"fallback_keys":{"signed_curve25519:F":{"fallback":true,"key":"f",` + sig + `}}}`
		wantBody(t, "valid", ts.ok(uploadPath, bobToken, ok), `{"one_time_key_counts":{"curve25519":1,"signed_curve25519":2}}`)
	})
}

func TestUploadReSignedKeyIsTheSameKey(t *testing.T) {
	forEachStore(t, func(t *testing.T, b backend) {
		ts := startServer(t, b, nil)
		ts.ok(uploadPath, bobToken, `{"one_time_keys":{"signed_curve25519:A":`+key("A")+`}}`)
		// The same key, signed again (another signature, another signer): 200, nothing new.
		resigned := `{"key":"A","signatures":{"` + bob + `":{"ed25519:BOBDEV":"another-sig"},"@bob:other.test":{"ed25519:X":"x"}}}`
		wantBody(t, "re-signed", ts.ok(uploadPath, bobToken, `{"one_time_keys":{"signed_curve25519:A":`+resigned+`,"signed_curve25519:B":`+key("B")+`}}`),
			`{"one_time_key_counts":{"signed_curve25519":2}}`)
		// The key handed out is the first upload's, signatures and all.
		wantBody(t, "claim", ts.ok(claimPath, aliceToken, claimBody(bob, "BOBDEV")),
			`{"failures":{},"one_time_keys":{"`+bob+`":{"BOBDEV":{"signed_curve25519:A":`+key("A")+`}}}}`)
		// A different key under the unclaimed ID B stays 400 M_INVALID_PARAM, and rolls back.
		r := ts.post(uploadPath, bobToken, `{"one_time_keys":{"signed_curve25519:C":`+key("C")+`,"signed_curve25519:B":{"key":"not-B","signatures":{"`+bob+`":{"ed25519:BOBDEV":"sig-B"}}}}}`)
		if msg := wantError(t, "different key", r, http.StatusBadRequest, "M_INVALID_PARAM"); !strings.Contains(msg, "signed_curve25519:B") {
			t.Errorf("the message does not name the key ID: %q", msg)
		}
		// A string and an object with the same key text are different keys (as Synapse).
		r = ts.post(uploadPath, bobToken, `{"one_time_keys":{"signed_curve25519:B":"B"}}`)
		wantError(t, "string for an object", r, http.StatusBadRequest, "M_INVALID_PARAM")
		wantBody(t, "counts", ts.ok(uploadPath, bobToken, `{}`), `{"one_time_key_counts":{"signed_curve25519":1}}`)
	})
}
