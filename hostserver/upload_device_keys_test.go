package hostserver_test

import (
	"net/http"
	"strings"
	"testing"
)

// BRIEF section 6 and the spec's DeviceKeys schema (client-server API,
// definitions/device_keys.yaml): device_keys must have user_id and device_id (those of the
// access token), algorithms (an array of strings), keys (an object of strings) and signatures (an
// object of user ID to an object of strings); other members are allowed. A malformed
// device_keys is 400 M_BAD_JSON naming the path, and nothing of that upload is stored.

// bobDK returns device keys of bob's BOBDEV with the given members after user_id and device_id
// (each `"name":value`, comma-separated).
func bobDK(members string) string {
	dk := `{"user_id":"` + bob + `","device_id":"BOBDEV"`
	if members != "" {
		dk += "," + members
	}
	return dk + "}"
}

const (
	goodAlgorithms = `"algorithms":["m.olm.v1.curve25519-aes-sha2","m.megolm.v1.aes-sha2"]`
	goodKeys       = `"keys":{"curve25519:BOBDEV":"cu","ed25519:BOBDEV":"ed"}`
	goodSignatures = `"signatures":{"` + bob + `":{"ed25519:BOBDEV":"sig"}}`
)

func TestUploadDeviceKeysShape(t *testing.T) {
	ts := startServer(t, sqliteBackend, nil)
	sigsOf := func(v string) string { return `"signatures":` + v }
	cases := []struct {
		name    string
		dk      string
		message string // the whole error message
	}{
		{"no algorithms", bobDK(goodKeys + "," + goodSignatures),
			"device_keys.algorithms is missing; it must be an array of strings"},
		{"algorithms a string", bobDK(`"algorithms":"x",` + goodKeys + "," + goodSignatures),
			"device_keys.algorithms must be an array of strings"},
		{"algorithms null", bobDK(`"algorithms":null,` + goodKeys + "," + goodSignatures),
			"device_keys.algorithms must be an array of strings"},
		{"an algorithm that is a number", bobDK(`"algorithms":["m.olm.v1.curve25519-aes-sha2",1],` + goodKeys + "," + goodSignatures),
			"device_keys.algorithms[1] must be a string"},
		{"no keys", bobDK(goodAlgorithms + "," + goodSignatures),
			"device_keys.keys is missing; it must be an object of strings"},
		{"keys a number", bobDK(goodAlgorithms + `,"keys":5,` + goodSignatures),
			"device_keys.keys must be an object of strings"},
		{"keys an array", bobDK(goodAlgorithms + `,"keys":["a"],` + goodSignatures),
			"device_keys.keys must be an object of strings"},
		{"a key that is an object", bobDK(goodAlgorithms + `,"keys":{"curve25519:BOBDEV":"cu","ed25519:BOBDEV":{"key":"ed"}},` + goodSignatures),
			`device_keys.keys["ed25519:BOBDEV"] must be a string`},
		{"a key that is null", bobDK(goodAlgorithms + `,"keys":{"ed25519:BOBDEV":null},` + goodSignatures),
			`device_keys.keys["ed25519:BOBDEV"] must be a string`},
		{"no signatures", bobDK(goodAlgorithms + "," + goodKeys),
			"device_keys.signatures is missing; it must be an object of user ID to an object of strings"},
		{"signatures a string", bobDK(goodAlgorithms + "," + goodKeys + "," + sigsOf(`"sig"`)),
			"device_keys.signatures must be an object of user ID to an object of strings"},
		{"signatures of something that is not a user ID", bobDK(goodAlgorithms + "," + goodKeys + "," + sigsOf(`{"bob":{"ed25519:BOBDEV":"sig"}}`)),
			`device_keys.signatures: "bob" is not a user ID`},
		{"signatures of a user that are a string", bobDK(goodAlgorithms + "," + goodKeys + "," + sigsOf(`{"`+bob+`":"sig"}`)),
			`device_keys.signatures["` + bob + `"] must be an object of strings`},
		{"a signature that is a number", bobDK(goodAlgorithms + "," + goodKeys + "," + sigsOf(`{"`+bob+`":{"ed25519:BOBDEV":1}}`)),
			`device_keys.signatures["` + bob + `"]["ed25519:BOBDEV"] must be a string`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			msg := wantError(t, c.name, ts.post(uploadPath, bobToken, `{"device_keys":`+c.dk+`}`), http.StatusBadRequest, "M_BAD_JSON")
			if c.message == `device_keys.signatures: "bob" is not a user ID` {
				if !strings.HasPrefix(msg, c.message) {
					t.Errorf("message %q, want one starting with %q", msg, c.message)
				}
			} else if msg != c.message {
				t.Errorf("message %q, want %q", msg, c.message)
			}
		})
	}

	t.Run("the audit's upload", func(t *testing.T) {
		r := ts.post(uploadPath, carolToken, `{"device_keys":{"user_id":"`+carol+`","device_id":"CAROLDEV","keys":5,"algorithms":"x"}}`)
		if msg := wantError(t, "keys 5, algorithms x", r, http.StatusBadRequest, "M_BAD_JSON"); !strings.HasPrefix(msg, "device_keys.") {
			t.Errorf("message %q does not name the path", msg)
		}
		wantBody(t, "query", ts.ok(queryPath, aliceToken, `{"device_keys":{"`+carol+`":[]}}`), `{"device_keys":{"`+carol+`":{}},"failures":{}}`)
	})

	t.Run("the owner is checked as before", func(t *testing.T) {
		// Device keys of another user are M_INVALID_PARAM, whatever else is wrong with them.
		r := ts.post(uploadPath, bobToken, `{"device_keys":{"user_id":"`+alice+`","device_id":"BOBDEV","keys":5}}`)
		wantError(t, "another user's device keys", r, http.StatusBadRequest, "M_INVALID_PARAM")
	})

	t.Run("nothing of a rejected upload is stored", func(t *testing.T) {
		fb := `{"fallback":true,"key":"F1","signatures":{"` + bob + `":{"ed25519:BOBDEV":"sig-F1"}}}`
		r := ts.post(uploadPath, bobToken, `{"one_time_keys":{"signed_curve25519:A":`+key("A")+`},"fallback_keys":{"signed_curve25519:F1":`+fb+`},`+
			`"device_keys":`+bobDK(goodAlgorithms+`,"keys":5,`+goodSignatures)+`}`)
		wantError(t, "malformed device keys beside keys", r, http.StatusBadRequest, "M_BAD_JSON")
		wantBody(t, "counts", ts.ok(uploadPath, bobToken, `{}`), zeroCountsBody)
		wantBody(t, "query", ts.ok(queryPath, aliceToken, `{"device_keys":{"`+bob+`":[]}}`), `{"device_keys":{"`+bob+`":{}},"failures":{}}`)
		// Neither the one-time key nor the fallback key is there to claim.
		wantBody(t, "claim", ts.ok(claimPath, aliceToken, claimBody(bob, "BOBDEV")), `{"failures":{},"one_time_keys":{"`+bob+`":{"BOBDEV":{}}}}`)
	})

	t.Run("well-formed device keys are stored byte for byte, extra members and all", func(t *testing.T) {
		for _, dk := range []string{
			// What the spec requires, nothing more; empty lists and maps are well-formed.
			bobDK(`"algorithms":[],"keys":{},"signatures":{}`),
			// Extra members (unsigned, a dehydrated flag, something unknown) are kept as they are.
			bobDK(goodAlgorithms + "," + goodKeys + "," + goodSignatures + `,"unsigned":{"device_display_name":"Bob's phone"},"dehydrated":false,"x":[1,null,{}]`),
			// Odd whitespace and escapes.
			"{ \"signatures\" : {\"" + bob + "\":{\"ed25519:BOBDEV\":\"s\\/ig\"}} ,\n\"keys\":{\"ed25519:BOBDEV\":\"k\\u0065y\"}, \"algorithms\":[ \"m.megolm.v1.aes-sha2\" ],\"device_id\":\"BOBDEV\",\"user_id\":\"" + bob + "\"}",
		} {
			ts.ok(uploadPath, bobToken, `{"device_keys":`+dk+`}`)
			wantBody(t, "query", ts.ok(queryPath, aliceToken, `{"device_keys":{"`+bob+`":[]}}`), `{"device_keys":{"`+bob+`":{"BOBDEV":`+dk+`}},"failures":{}}`)
		}
	})
}
