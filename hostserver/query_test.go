package hostserver_test

import (
	"net/http"
	"testing"

	"github.com/keyclaim/keyclaim/core"
	"github.com/keyclaim/keyclaim/hostserver"
)

// BRIEF section 6: /keys/query and the federation query.

// deviceKeys returns device keys as a client would upload them (self-signed), with a space
// that canonical JSON would not have.
func deviceKeys(user, device string) string {
	return `{"algorithms":["m.olm.v1.curve25519-aes-sha2"], "device_id":"` + device + `","keys":{"ed25519:` + device + `":"ed-` + device + `"},` +
		`"signatures":{"` + user + `":{"ed25519:` + device + `":"sig-` + device + `"}},"user_id":"` + user + `"}`
}

func TestQuery(t *testing.T) {
	forEachStore(t, func(t *testing.T, b backend) {
		ts := startServer(t, b, nil)
		dkBob, dkPhone, dkCarol := deviceKeys(bob, "BOBDEV"), deviceKeys(bob, "BOBPHONE"), deviceKeys(carol, "CAROLDEV")
		ts.ok(uploadPath, bobToken, `{"device_keys":`+dkBob+`}`)
		ts.ok(uploadPath, bobPhoneTok, `{"device_keys":`+dkPhone+`}`)
		ts.ok(uploadPath, carolToken, `{"device_keys":`+dkCarol+`}`)
		// A device that uploaded only one-time keys has no device keys to show.
		ts.ok(uploadPath, aliceToken, `{"one_time_keys":{"signed_curve25519:A":"a"}}`)

		cases := []struct{ name, body, want string }{
			{"empty list means all devices", `{"device_keys":{"` + bob + `":[]}}`,
				`{"device_keys":{"` + bob + `":{"BOBDEV":` + dkBob + `,"BOBPHONE":` + dkPhone + `}},"failures":{}}`},
			{"a list limits the devices", `{"device_keys":{"` + bob + `":["BOBPHONE","NOSUCH"]}}`,
				`{"device_keys":{"` + bob + `":{"BOBPHONE":` + dkPhone + `}},"failures":{}}`},
			{"every requested local user appears", `{"device_keys":{"` + carol + `":[],"@nobody:` + serverName + `":[],"` + alice + `":[],"` + bob + `":["NOSUCH"]}}`,
				`{"device_keys":{"` + alice + `":{},"` + bob + `":{},"` + carol + `":{"CAROLDEV":` + dkCarol + `},"@nobody:` + serverName + `":{}},"failures":{}}`},
			{"remote users are failures of their server only", `{"device_keys":{"` + remoteUser + `":[],"@erin:remote.test":["E"],"` + carol + `":[]},"timeout":1000}`,
				`{"device_keys":{"` + carol + `":{"CAROLDEV":` + dkCarol + `}},"failures":{"remote.test":{"message":"federation is off on this server","status":503}}}`},
			{"empty query", `{"device_keys":{}}`, `{"device_keys":{},"failures":{}}`},
			{"repeated device IDs", `{"device_keys":{"` + bob + `":["BOBDEV","BOBDEV"]}}`,
				`{"device_keys":{"` + bob + `":{"BOBDEV":` + dkBob + `}},"failures":{}}`},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				wantBody(t, "query", ts.ok(queryPath, aliceToken, c.body), c.want)
			})
		}
		t.Run("r0 path", func(t *testing.T) {
			wantBody(t, "query", ts.ok("/_matrix/client/r0/keys/query", aliceToken, `{"device_keys":{"`+carol+`":[]}}`),
				`{"device_keys":{"`+carol+`":{"CAROLDEV":`+dkCarol+`}},"failures":{}}`)
		})
		t.Run("federation", func(t *testing.T) {
			wantBody(t, "federation query", ts.ok(fedQueryPath, "", `{"device_keys":{"`+bob+`":["BOBDEV"],"@nobody:`+serverName+`":[]}}`),
				`{"device_keys":{"`+bob+`":{"BOBDEV":`+dkBob+`},"@nobody:`+serverName+`":{}}}`)
			r := ts.post(fedQueryPath, "", `{"device_keys":{"`+bob+`":[],"`+remoteUser+`":[]}}`)
			wantError(t, "non-local user", r, http.StatusBadRequest, "M_INVALID_PARAM")
		})
	})
}

func TestQueryRejects(t *testing.T) {
	ts := startServer(t, sqliteBackend, func(cfg *hostserver.Config) { cfg.MaxPairs = 3 })
	cases := []struct {
		name, body string
		status     int
		errcode    string
	}{
		{"not JSON", `{`, 400, "M_NOT_JSON"},
		{"not an object", `[]`, 400, "M_BAD_JSON"},
		{"missing device_keys", `{}`, 400, "M_BAD_JSON"},
		{"device_keys not an object", `{"device_keys":[]}`, 400, "M_BAD_JSON"},
		{"device list not an array", `{"device_keys":{"` + bob + `":{}}}`, 400, "M_BAD_JSON"},
		{"device ID not a string", `{"device_keys":{"` + bob + `":[1]}}`, 400, "M_BAD_JSON"},
		{"duplicate user", `{"device_keys":{"` + bob + `":[],"` + bob + `":[]}}`, 400, "M_BAD_JSON"},
		{"invalid user ID", `{"device_keys":{"bob":[]}}`, 400, "M_INVALID_PARAM"},
		{"negative timeout", `{"device_keys":{},"timeout":-1}`, 400, "M_INVALID_PARAM"},
		{"negative timeout with an exponent", `{"device_keys":{},"timeout":-1e3}`, 400, "M_INVALID_PARAM"},
		{"fractional timeout", `{"device_keys":{},"timeout":1.5}`, 400, "M_INVALID_PARAM"},
		{"fractional timeout with an exponent", `{"device_keys":{},"timeout":1e-3}`, 400, "M_INVALID_PARAM"},
		{"string timeout", `{"device_keys":{},"timeout":"1000"}`, 400, "M_INVALID_PARAM"},
		{"too many entries", `{"device_keys":{"` + bob + `":["A","B","C"]}}`, 400, "M_INVALID_PARAM"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			wantError(t, c.name, ts.post(queryPath, aliceToken, c.body), c.status, c.errcode)
		})
	}
}

func TestQueryRemoteAnswersAreNotTrusted(t *testing.T) {
	dave := deviceKeys(remoteUser, "D1")
	fed := &scriptedFederation{queries: map[core.ServerName]core.RemoteOutcome{
		"remote.test": {Status: 200, Body: []byte(`{"device_keys":{"` + remoteUser + `":{"D1":` + dave + `,` +
			`"D2":` + deviceKeys("@someone:else.test", "D2") + `,"D3":"not an object"},` +
			`"@mallory:remote.test":{"M":` + deviceKeys("@mallory:remote.test", "M") + `},` +
			`"` + bob + `":{"EVIL":` + deviceKeys(bob, "EVIL") + `}},"master_keys":{}}`)},
		"down.test": {Status: 404, Body: []byte(`not json`)},
	}}
	ts := startServer(t, sqliteBackend, func(cfg *hostserver.Config) { cfg.Federation = fed })
	got := ts.ok(queryPath, aliceToken, `{"device_keys":{"`+remoteUser+`":[],"@x:down.test":[],"`+bob+`":[]}}`)
	wantBody(t, "query", got, `{"device_keys":{"`+bob+`":{},"`+remoteUser+`":{"D1":`+dave+`}},"failures":{"down.test":{"message":"the remote server answered HTTP 404","status":404}}}`)
	wantBody(t, "federation body", fed.sent["remote.test"], `{"device_keys":{"`+remoteUser+`":[]}}`)
}
