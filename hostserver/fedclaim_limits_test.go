package hostserver_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/keyclaim/keyclaim/hostserver"
)

// BRIEF sections 2 and 5: the request limits and the duplicate-key rule hold on the X-Matrix
// signed federation claim endpoint too, and a rejected request claims nothing.
func TestFederationClaimLimits(t *testing.T) {
	forEachStore(t, func(t *testing.T, b backend) {
		ts := startServer(t, b, func(cfg *hostserver.Config) {
			cfg.MaxPairs = 3
			cfg.MaxBodyBytes = 4096
		})
		ts.ok(uploadPath, bobToken, `{"one_time_keys":{"signed_curve25519:A":`+key("A")+`,"signed_curve25519:B":`+key("B")+`}}`)
		ts.ok(uploadPath, bobPhoneTok, `{"one_time_keys":{"signed_curve25519:P":"p"}}`)
		counts := func(what string) {
			t.Helper()
			wantBody(t, what+": bob's counts", ts.ok(uploadPath, bobToken, `{}`), `{"one_time_key_counts":{"signed_curve25519":2}}`)
			wantBody(t, what+": bob's phone counts", ts.ok(uploadPath, bobPhoneTok, `{}`), `{"one_time_key_counts":{"signed_curve25519":1}}`)
		}

		// Duplicate keys are refused before the claim parser, by the X-Matrix check (a signature
		// over ambiguous JSON cannot be checked), with the errcode of BRIEF 2.
		cases := []struct {
			name, body string
			status     int
			errcode    string
		}{
			// Four local pairs, one over the limit of 3 (the requests are signed by the
			// harness's origin server: send signs federation POSTs without X-Matrix).
			{"too many pairs", `{"one_time_keys":{"` + bob + `":{"BOBDEV":"signed_curve25519","BOBPHONE":"signed_curve25519"},"` + carol + `":{"C1":"signed_curve25519","C2":"signed_curve25519"}}}`,
				http.StatusBadRequest, "M_INVALID_PARAM"},
			{"body over max_body_bytes", `{"one_time_keys":{"` + bob + `":{"BOBDEV":"signed_curve25519"}},"pad":"` + strings.Repeat("x", 4096) + `"}`,
				http.StatusRequestEntityTooLarge, "M_TOO_LARGE"},
			{"duplicate device", `{"one_time_keys":{"` + bob + `":{"BOBDEV":"signed_curve25519","BOBDEV":"signed_curve25519"}}}`,
				http.StatusBadRequest, "M_BAD_JSON"},
			{"duplicate user", `{"one_time_keys":{"` + bob + `":{"BOBDEV":"signed_curve25519"},"` + bob + `":{"BOBPHONE":"signed_curve25519"}}}`,
				http.StatusBadRequest, "M_BAD_JSON"},
			{"duplicate one_time_keys", `{"one_time_keys":{"` + bob + `":{"BOBDEV":"signed_curve25519"}},"one_time_keys":{"` + bob + `":{"BOBPHONE":"signed_curve25519"}}}`,
				http.StatusBadRequest, "M_BAD_JSON"},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				wantError(t, c.name, ts.post(fedClaimPath, "", c.body), c.status, c.errcode)
			})
		}
		counts("after the rejected requests")

		// At the limit is fine, and claims (so the rejected requests would have claimed).
		wantBody(t, "three pairs", ts.ok(fedClaimPath, "", `{"one_time_keys":{"`+bob+`":{"BOBDEV":"signed_curve25519","BOBPHONE":"signed_curve25519"},"`+carol+`":{"C1":"signed_curve25519"}}}`),
			`{"one_time_keys":{"`+bob+`":{"BOBDEV":{"signed_curve25519:A":`+key("A")+`},"BOBPHONE":{"signed_curve25519:P":"p"}}}}`) // carol's C1 has no key: left out (--federation-answers legacy, the default)
		wantBody(t, "bob's counts after the valid claim", ts.ok(uploadPath, bobToken, `{}`), `{"one_time_key_counts":{"signed_curve25519":1}}`)
	})
}
