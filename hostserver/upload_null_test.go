package hostserver_test

import (
	"net/http"
	"strings"
	"testing"
)

// BRIEF 4: "nothing anywhere is null (real clients reject null maps and the claimed keys are then
// lost)". A one-time or fallback key holding a null at any depth is not a key (core.IsKeyValue):
// its upload is 400 M_BAD_JSON naming the key ID, nothing of the upload is stored, and no claim
// can hand it out.
func TestUploadRejectsKeysWithNull(t *testing.T) {
	forEachStore(t, func(t *testing.T, b backend) {
		ts := startServer(t, b, nil)
		cases := []struct{ name, body, keyID string }{
			{"one-time key with null signatures and a nested null",
				`{"one_time_keys":{"signed_curve25519:OK":` + key("OK") + `,"signed_curve25519:NUL":{"key":"k","signatures":null,"x":{"y":null}}}}`,
				"signed_curve25519:NUL"},
			{"one-time key with a null in an array",
				`{"one_time_keys":{"signed_curve25519:ARR":{"key":"k","x":[1,[null]]}}}`, "signed_curve25519:ARR"},
			{"fallback key with a null member",
				`{"fallback_keys":{"signed_curve25519:F":{"key":"k","fallback":null}}}`, "signed_curve25519:F"},
			{"fallback key beside valid one-time keys",
				`{"one_time_keys":{"signed_curve25519:OK":` + key("OK") + `},"fallback_keys":{"signed_curve25519:F":{"fallback":true,"key":"k","signatures":{"` + bob + `":{"ed25519:BOBDEV":null}}}}}`,
				"signed_curve25519:F"},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				msg := wantError(t, c.name, ts.post(uploadPath, bobToken, c.body), http.StatusBadRequest, "M_BAD_JSON")
				if !strings.Contains(msg, c.keyID) {
					t.Errorf("the message does not name the key ID %s: %q", c.keyID, msg)
				}
			})
		}
		// Uploads are atomic: not even the valid keys of the rejected uploads were stored.
		wantBody(t, "counts", ts.ok(uploadPath, bobToken, `{}`), zeroCountsBody)
		wantBody(t, "claim", ts.ok(claimPath, aliceToken, claimBody(bob, "BOBDEV")),
			`{"failures":{},"one_time_keys":{"`+bob+`":{"BOBDEV":{}}}}`)
		// A key whose strings merely spell null is a key.
		ts.ok(uploadPath, bobToken, `{"fallback_keys":{"signed_curve25519:F":{"key":"null","fallback":true,"signatures":{"`+bob+`":{"ed25519:BOBDEV":"null"}}}}}`)
		wantBody(t, "claim of a key spelling null", ts.ok(claimPath, aliceToken, claimBody(bob, "BOBDEV")),
			`{"failures":{},"one_time_keys":{"`+bob+`":{"BOBDEV":{"signed_curve25519:F":{"fallback":true,"key":"null","signatures":{"`+bob+`":{"ed25519:BOBDEV":"null"}}}}}}}`)
	})
}
