package specconform

import (
	"net/http"
	"strings"
	"testing"
)

// TestValidatorCatches shows that the validator is not a rubber stamp: answers the spec allows
// pass, and each kind of fault the conformance suites look for is caught.
func TestValidatorCatches(t *testing.T) {
	v := Load(t)
	jsonHeader := http.Header{"Content-Type": {"application/json"}}
	const sig = `"signatures":{"@bob:hs1.test":{"ed25519:D":"s"}}`
	cases := []struct {
		name, method, path string
		status             int
		header             http.Header
		body               string
		wantErr            string // "" = valid
	}{
		{"claim, complete", "POST", "/_matrix/client/v3/keys/claim", 200, jsonHeader,
			`{"failures":{},"one_time_keys":{"@bob:hs1.test":{"D":{"signed_curve25519:K":{"key":"k",` + sig + `}},"E":{}}}}`, ""},
		{"claim, r0 prefix", "POST", "/_matrix/client/r0/keys/claim", 200, jsonHeader,
			`{"failures":{},"one_time_keys":{}}`, ""},
		{"claim, a key object without signatures", "POST", "/_matrix/client/v3/keys/claim", 200, jsonHeader,
			`{"failures":{},"one_time_keys":{"@bob:hs1.test":{"D":{"signed_curve25519:K":{"key":"k"}}}}}`, "signatures"},
		{"claim, one_time_keys missing", "POST", "/_matrix/client/v3/keys/claim", 200, jsonHeader,
			`{"failures":{}}`, "one_time_keys"},
		{"claim, one_time_keys null", "POST", "/_matrix/client/v3/keys/claim", 200, jsonHeader,
			`{"failures":{},"one_time_keys":null}`, "one_time_keys"},
		{"upload, a count that is not an integer", "POST", "/_matrix/client/v3/keys/upload", 200, jsonHeader,
			`{"one_time_key_counts":{"signed_curve25519":"3"}}`, "one_time_key_counts"},
		{"federation claim, signatures not strings", "POST", "/_matrix/federation/v1/user/keys/claim", 200, jsonHeader,
			`{"one_time_keys":{"@bob:hs1.test":{"D":{"signed_curve25519:K":{"key":"k","signatures":{"@bob:hs1.test":{"ed25519:D":1}}}}}}}`, "signatures"},
		{"federation query, no device_keys", "POST", "/_matrix/federation/v1/user/keys/query", 200, jsonHeader,
			`{}`, "device_keys"},
		{"query, device keys without algorithms", "POST", "/_matrix/client/v3/keys/query", 200, jsonHeader,
			`{"failures":{},"device_keys":{"@bob:hs1.test":{"D":{"user_id":"@bob:hs1.test","device_id":"D","keys":{},` + sig + `}}}}`, "algorithms"},
		{"versions", "GET", "/_matrix/client/versions", 200, jsonHeader, `{"versions":["v1.19"]}`, ""},
		{"versions, not a list", "GET", "/_matrix/client/versions", 200, jsonHeader, `{"versions":"v1.19"}`, "versions"},
		{"key server, no signatures", "GET", "/_matrix/key/v2/server", 200, jsonHeader,
			`{"server_name":"hs1.test","verify_keys":{"ed25519:a":{"key":"x"}},"valid_until_ts":1}`, "signatures"},
		{"a 200 that is not JSON", "POST", "/_matrix/client/v3/keys/claim", 200, http.Header{"Content-Type": {"text/plain"}},
			`{"failures":{},"one_time_keys":{}}`, "text/plain"},
		{"an error", "POST", "/_matrix/client/v3/keys/claim", 400, jsonHeader,
			`{"errcode":"M_BAD_JSON","error":"one_time_keys: not an object"}`, ""},
		{"an error without errcode", "POST", "/_matrix/client/v3/keys/claim", 400, jsonHeader,
			`{"error":"bad"}`, "errcode"},
		{"an error that is not JSON", "POST", "/_matrix/client/v3/keys/claim", 502, jsonHeader, `Bad Gateway`, "not JSON"},
		{"429 without retry_after_ms is fine, with a string is not", "POST", "/_matrix/client/v3/keys/claim", 429, jsonHeader,
			`{"errcode":"M_LIMIT_EXCEEDED","retry_after_ms":"soon"}`, "retry_after_ms"},
		{"429 without errcode", "POST", "/_matrix/client/v3/keys/claim", 429, jsonHeader,
			`{"error":"slow down","retry_after_ms":100}`, "errcode"},
		{"an undeclared success status", "POST", "/_matrix/client/v3/keys/claim", 201, jsonHeader,
			`{"failures":{},"one_time_keys":{}}`, "neither declared"},
		{"an unknown method answered with an error", "GET", "/_matrix/client/v3/keys/claim", 405, jsonHeader,
			`{"errcode":"M_UNRECOGNIZED","error":"Unrecognized request"}`, ""},
	}
	for _, c := range cases {
		req, _ := http.NewRequest(c.method, "http://127.0.0.1"+c.path, nil)
		err := v.Check(req, c.status, c.header, []byte(c.body))
		switch {
		case c.wantErr == "" && err != nil:
			t.Errorf("%s: valid answer refused: %v", c.name, err)
		case c.wantErr != "" && err == nil:
			t.Errorf("%s: invalid answer accepted", c.name)
		case c.wantErr != "" && !strings.Contains(err.Error(), c.wantErr):
			t.Errorf("%s: the error does not name %q: %v", c.name, c.wantErr, err)
		}
	}
}

// TestRequestExamples checks the examples that the conformance suite sends: built from the
// spec, and valid requests by the spec's own request schemas.
func TestRequestExamples(t *testing.T) {
	v := Load(t)
	for _, c := range []struct{ prefix, path, want string }{
		{"/_matrix/client/v3", "/keys/upload", "fallback_keys"},
		{"/_matrix/client/v3", "/keys/claim", "one_time_keys"},
		{"/_matrix/client/v3", "/keys/query", "device_keys"},
		{"/_matrix/federation/v1", "/user/keys/claim", "one_time_keys"},
		{"/_matrix/federation/v1", "/user/keys/query", "device_keys"},
	} {
		ex := v.RequestExample(c.prefix, c.path, "POST")
		if ex[c.want] == nil {
			t.Errorf("%s%s: no example for %s: %v", c.prefix, c.path, c.want, ex)
		}
	}
	up := v.RequestExample("/_matrix/client/v3", "/keys/upload", "POST")
	dk, _ := up["device_keys"].(map[string]any)
	if dk["user_id"] != "@alice:example.com" || dk["device_id"] != "JLAFKJWSCS" {
		t.Errorf("the upload example's device_keys, built from the property examples: %v", dk)
	}
}
