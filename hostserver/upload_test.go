package hostserver_test

import (
	"net/http"
	"strings"
	"testing"
)

// BRIEF section 6: /keys/upload and the counts.

func TestUploadCounts(t *testing.T) {
	forEachStore(t, func(t *testing.T, b backend) {
		ts := startServer(t, b, nil)

		t.Run("empty object answers the counts with signed_curve25519", func(t *testing.T) {
			wantBody(t, "counts", ts.ok(uploadPath, bobToken, `{}`), zeroCountsBody)
		})
		t.Run("empty body answers the counts", func(t *testing.T) {
			wantBody(t, "counts", ts.ok(uploadPath, bobToken, ``), zeroCountsBody)
		})
		t.Run("null and empty fields mean nothing new", func(t *testing.T) {
			wantBody(t, "counts", ts.ok(uploadPath, bobToken, `{"device_keys":null,"one_time_keys":{},"fallback_keys":null}`), zeroCountsBody)
		})
		t.Run("only another algorithm still reports signed_curve25519", func(t *testing.T) {
			got := ts.ok(uploadPath, bobToken, `{"one_time_keys":{"curve25519:A":"plainkey"}}`)
			wantBody(t, "counts", got, `{"one_time_key_counts":{"curve25519":1,"signed_curve25519":0}}`)
		})
		t.Run("counts add up per algorithm", func(t *testing.T) {
			got := ts.ok(uploadPath, bobToken, `{"one_time_keys":{"signed_curve25519:A":`+key("A")+`,"signed_curve25519:B":`+key("B")+`}}`)
			wantBody(t, "counts", got, `{"one_time_key_counts":{"curve25519":1,"signed_curve25519":2}}`)
		})
		t.Run("identical re-upload is a no-op", func(t *testing.T) {
			// The same key with different whitespace and member order is the same key.
			same := `{ "one_time_keys" : { "signed_curve25519:A" : {"signatures":{"` + bob + `":{"ed25519:BOBDEV":"sig-A"}}, "key":"A"} } }`
			wantBody(t, "counts", ts.ok(uploadPath, bobToken, same), `{"one_time_key_counts":{"curve25519":1,"signed_curve25519":2}}`)
		})
		t.Run("a different key under an unclaimed key ID is 400", func(t *testing.T) {
			r := ts.post(uploadPath, bobToken, `{"one_time_keys":{"signed_curve25519:C":`+key("C")+`,"signed_curve25519:B":`+key("other")+`}}`)
			msg := wantError(t, "conflict", r, http.StatusBadRequest, "M_INVALID_PARAM")
			if !strings.Contains(msg, "signed_curve25519:B") {
				t.Errorf("the message does not name the key ID: %q", msg)
			}
			// Nothing of the failed upload was stored.
			wantBody(t, "counts after conflict", ts.ok(uploadPath, bobToken, `{}`), `{"one_time_key_counts":{"curve25519":1,"signed_curve25519":2}}`)
		})
		t.Run("counts are per device", func(t *testing.T) {
			wantBody(t, "other device", ts.ok(uploadPath, bobPhoneTok, `{}`), zeroCountsBody)
		})
		t.Run("counts drop as keys are claimed", func(t *testing.T) {
			ts.ok(claimPath, aliceToken, claimBody(bob, "BOBDEV"))
			wantBody(t, "counts", ts.ok(uploadPath, bobToken, `{}`), `{"one_time_key_counts":{"curve25519":1,"signed_curve25519":1}}`)
		})
	})
}

func TestUploadClaimedKeyIsNotStoredAgain(t *testing.T) {
	// matrix-spec#1124: a claimed one-time key ID uploaded again must not be handed out twice.
	forEachStore(t, func(t *testing.T, b backend) {
		ts := startServer(t, b, nil)
		up := `{"one_time_keys":{"signed_curve25519:A":` + key("A") + `}}`
		ts.ok(uploadPath, bobToken, up)
		wantBody(t, "first claim", ts.ok(claimPath, aliceToken, claimBody(bob, "BOBDEV")),
			`{"failures":{},"one_time_keys":{"`+bob+`":{"BOBDEV":{"signed_curve25519:A":`+key("A")+`}}}}`)
		wantBody(t, "re-upload", ts.ok(uploadPath, bobToken, up), zeroCountsBody)
		wantBody(t, "second claim", ts.ok(claimPath, aliceToken, claimBody(bob, "BOBDEV")),
			`{"failures":{},"one_time_keys":{"`+bob+`":{"BOBDEV":{}}}}`)
	})
}

func TestUploadFallbackKeys(t *testing.T) {
	forEachStore(t, func(t *testing.T, b backend) {
		ts := startServer(t, b, nil)
		fb := func(name string) string {
			return `{"fallback":true,"key":"` + name + `","signatures":{"` + bob + `":{"ed25519:BOBDEV":"sig-` + name + `"}}}`
		}
		answer := func(keyID, value string) string {
			return `{"failures":{},"one_time_keys":{"` + bob + `":{"BOBDEV":{"` + keyID + `":` + value + `}}}}`
		}
		ts.ok(uploadPath, bobToken, `{"fallback_keys":{"signed_curve25519:F1":`+fb("F1")+`},"one_time_keys":{"signed_curve25519:O1":`+key("O1")+`}}`)

		wantBody(t, "one-time key before fallback", ts.ok(claimPath, aliceToken, claimBody(bob, "BOBDEV")), answer("signed_curve25519:O1", key("O1")))
		wantBody(t, "fallback", ts.ok(claimPath, aliceToken, claimBody(bob, "BOBDEV")), answer("signed_curve25519:F1", fb("F1")))
		wantBody(t, "fallback again (used)", ts.ok(claimPath, aliceToken, claimBody(bob, "BOBDEV")), answer("signed_curve25519:F1", fb("F1")))
		// Fallback keys do not count as one-time keys.
		wantBody(t, "counts", ts.ok(uploadPath, bobToken, `{}`), zeroCountsBody)
		// An identical re-upload keeps it; a new one replaces it.
		ts.ok(uploadPath, bobToken, `{"fallback_keys":{"signed_curve25519:F1":`+fb("F1")+`}}`)
		wantBody(t, "after identical re-upload", ts.ok(claimPath, aliceToken, claimBody(bob, "BOBDEV")), answer("signed_curve25519:F1", fb("F1")))
		ts.ok(uploadPath, bobToken, `{"fallback_keys":{"signed_curve25519:F2":`+fb("F2")+`}}`)
		wantBody(t, "replaced", ts.ok(claimPath, aliceToken, claimBody(bob, "BOBDEV")), answer("signed_curve25519:F2", fb("F2")))
		// One-time keys and fallback keys are separate namespaces: the same key ID in both.
		ts.ok(uploadPath, bobToken, `{"one_time_keys":{"signed_curve25519:F2":`+key("F2")+`}}`)
		wantBody(t, "one-time key with the fallback's key ID", ts.ok(claimPath, aliceToken, claimBody(bob, "BOBDEV")), answer("signed_curve25519:F2", key("F2")))
		wantBody(t, "fallback with that key ID", ts.ok(claimPath, aliceToken, claimBody(bob, "BOBDEV")), answer("signed_curve25519:F2", fb("F2")))

		r := ts.post(uploadPath, bobToken, `{"fallback_keys":{"signed_curve25519:X":`+fb("X")+`,"signed_curve25519:Y":`+fb("Y")+`}}`)
		wantError(t, "two fallback keys of one algorithm", r, http.StatusBadRequest, "M_INVALID_PARAM")
		// Fallback keys of different algorithms in one upload are fine.
		ts.ok(uploadPath, bobToken, `{"fallback_keys":{"signed_curve25519:X":`+fb("X")+`,"curve25519:Y":"plain"}}`)
	})
}

func TestUploadDeviceKeysByteForByte(t *testing.T) {
	forEachStore(t, func(t *testing.T, b backend) {
		ts := startServer(t, b, nil)
		// Odd whitespace, unusual member order, escapes that canonical JSON would rewrite.
		dk := "{ \"user_id\" :\"" + bob + "\",\n\t\"keys\": {\"ed25519:BOBDEV\": \"k\\u0065y\", \"curve25519:BOBDEV\":\"c\"},  \"device_id\":\"BOBDEV\",\"algorithms\":[\"m.olm.v1.curve25519-aes-sha2\" ],\"signatures\":{\"" + bob + "\":{\"ed25519:BOBDEV\":\"s\\/ig\"}},\"x\":1.50 }"
		ts.ok(uploadPath, bobToken, `{"device_keys":   `+dk+`  , "one_time_keys": {}}`)
		got := ts.ok(queryPath, aliceToken, `{"device_keys":{"`+bob+`":[]}}`)
		wantBody(t, "query", got, `{"device_keys":{"`+bob+`":{"BOBDEV":`+dk+`}},"failures":{}}`)

		// Uploading only one-time keys later leaves the device keys alone.
		ts.ok(uploadPath, bobToken, `{"one_time_keys":{"signed_curve25519:A":`+key("A")+`}}`)
		wantBody(t, "query after key upload", ts.ok(queryPath, aliceToken, `{"device_keys":{"`+bob+`":[]}}`), got)
	})
}

func TestUploadRejects(t *testing.T) {
	ts := startServer(t, sqliteBackend, nil)
	dk := func(user, device string) string {
		return `{"device_keys":{"user_id":"` + user + `","device_id":"` + device + `","keys":{}}}`
	}
	cases := []struct {
		name, body string
		status     int
		errcode    string
	}{
		{"not JSON", `{"one_time_keys":`, 400, "M_NOT_JSON"},
		{"trailing garbage", `{} x`, 400, "M_NOT_JSON"},
		{"invalid UTF-8", "{\"one_time_keys\":{\"signed_curve25519:A\":\"\xff\"}}", 400, "M_NOT_JSON"},
		{"array body", `[]`, 400, "M_BAD_JSON"},
		{"duplicate top-level key", `{"one_time_keys":{},"one_time_keys":{}}`, 400, "M_BAD_JSON"},
		{"duplicate key ID", `{"one_time_keys":{"signed_curve25519:A":"x","signed_curve25519:A":"y"}}`, 400, "M_BAD_JSON"},
		{"one_time_keys not an object", `{"one_time_keys":[]}`, 400, "M_BAD_JSON"},
		{"fallback_keys not an object", `{"fallback_keys":"x"}`, 400, "M_BAD_JSON"},
		{"key is a number", `{"one_time_keys":{"signed_curve25519:A":1}}`, 400, "M_BAD_JSON"},
		{"key object without key", `{"one_time_keys":{"signed_curve25519:A":{"signatures":{}}}}`, 400, "M_BAD_JSON"},
		{"key object with a non-string key", `{"one_time_keys":{"signed_curve25519:A":{"key":1}}}`, 400, "M_BAD_JSON"},
		{"key ID without colon", `{"one_time_keys":{"signed_curve25519":"x"}}`, 400, "M_INVALID_PARAM"},
		{"key ID with empty algorithm", `{"one_time_keys":{":A":"x"}}`, 400, "M_INVALID_PARAM"},
		{"key ID with empty name", `{"fallback_keys":{"signed_curve25519:":"x"}}`, 400, "M_INVALID_PARAM"},
		{"device_keys not an object", `{"device_keys":"x"}`, 400, "M_BAD_JSON"},
		{"device_keys of another user", dk(alice, "BOBDEV"), 400, "M_INVALID_PARAM"},
		{"device_keys of another device", dk(bob, "BOBPHONE"), 400, "M_INVALID_PARAM"},
		{"device_keys without user_id", `{"device_keys":{"device_id":"BOBDEV"}}`, 400, "M_INVALID_PARAM"},
		{"device_keys with a non-string device_id", `{"device_keys":{"user_id":"` + bob + `","device_id":1}}`, 400, "M_INVALID_PARAM"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			wantError(t, c.name, ts.post(uploadPath, bobToken, c.body), c.status, c.errcode)
		})
	}
	// Nothing of the rejected uploads was stored.
	wantBody(t, "counts", ts.ok(uploadPath, bobToken, `{}`), zeroCountsBody)
	wantBody(t, "device keys", ts.ok(queryPath, bobToken, `{"device_keys":{"`+bob+`":[]}}`), `{"device_keys":{"`+bob+`":{}},"failures":{}}`)
}
