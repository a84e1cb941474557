package hostserver_test

import "testing"

// BRIEF section 6: "an empty or missing field means 'nothing new', never 'delete'". An upload
// whose three fields are all empty objects answers the counts and leaves the stored device keys,
// one-time keys and fallback key untouched.
func TestUploadEmptyFieldsNeverDelete(t *testing.T) {
	forEachStore(t, func(t *testing.T, b backend) {
		ts := startServer(t, b, nil)
		// Device keys with odd whitespace and escapes, so that a re-encoding would show.
		dk := "{\"user_id\":\"" + bob + "\", \"device_id\":\"BOBDEV\",\n \"keys\":{\"ed25519:BOBDEV\":\"k\\u0065y\"},\"signatures\":{\"" + bob + "\":{\"ed25519:BOBDEV\":\"s\\/ig\"}},\"algorithms\":[\"m.olm.v1.curve25519-aes-sha2\"]}"
		fb := `{"fallback":true,"key":"F1","signatures":{"` + bob + `":{"ed25519:BOBDEV":"sig-F1"}}}`
		ts.ok(uploadPath, bobToken, `{"device_keys":`+dk+`,"one_time_keys":{"signed_curve25519:A":`+key("A")+`},"fallback_keys":{"signed_curve25519:F1":`+fb+`}}`)
		wantQuery := `{"device_keys":{"` + bob + `":{"BOBDEV":` + dk + `}},"failures":{}}`
		wantBody(t, "query before", ts.ok(queryPath, aliceToken, `{"device_keys":{"`+bob+`":[]}}`), wantQuery)

		wantBody(t, "empty fields answer the counts",
			ts.ok(uploadPath, bobToken, `{"device_keys":{},"one_time_keys":{},"fallback_keys":{}}`),
			`{"one_time_key_counts":{"signed_curve25519":1}}`)
		wantBody(t, "query after empty upload", ts.ok(queryPath, aliceToken, `{"device_keys":{"`+bob+`":[]}}`), wantQuery)

		// The one-time key and then the fallback key are still there to be claimed.
		answer := func(keyID, value string) string {
			return `{"failures":{},"one_time_keys":{"` + bob + `":{"BOBDEV":{"` + keyID + `":` + value + `}}}}`
		}
		wantBody(t, "one-time key kept", ts.ok(claimPath, aliceToken, claimBody(bob, "BOBDEV")), answer("signed_curve25519:A", key("A")))
		wantBody(t, "fallback key kept", ts.ok(claimPath, aliceToken, claimBody(bob, "BOBDEV")), answer("signed_curve25519:F1", fb))
		wantBody(t, "counts after the claims", ts.ok(uploadPath, bobToken, `{"device_keys":{},"one_time_keys":{},"fallback_keys":{}}`), zeroCountsBody)
		wantBody(t, "query at the end", ts.ok(queryPath, aliceToken, `{"device_keys":{"`+bob+`":[]}}`), wantQuery)
	})
}
