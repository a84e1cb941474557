package core_test

import (
	"encoding/json"
	"testing"

	"github.com/keyclaim/keyclaim/core"
)

// TestCompleteClientRemoteDuplicateKeys covers duplicate keys in the complete_client "remote"
// input document. The shared vectors cannot express them (their files are strict JSON without
// duplicate keys, and "remote" is an object, not a body string), so they are checked here on the
// raw input text. bindings/ABI.md 6: input documents reject duplicate keys anywhere (M_BAD_JSON).
func TestCompleteClientRemoteDuplicateKeys(t *testing.T) {
	const req = `"server_name":"hs1.test","request":{"one_time_keys":{"@bob:hs2.test":{"BOBDEV":"signed_curve25519"}}}`
	cases := []struct{ name, input string }{
		{"duplicate server", `{` + req + `,"remote":{"hs2.test":{"status":200,"body":"{\"one_time_keys\":{}}"},"hs2.test":{"status":200,"body":"{\"one_time_keys\":{}}"}}}`},
		{"duplicate body", `{` + req + `,"remote":{"hs2.test":{"status":200,"body":"{\"one_time_keys\":{}}","body":"{\"one_time_keys\":{}}"}}}`},
		{"duplicate status", `{` + req + `,"remote":{"hs2.test":{"status":200,"status":200,"body":"{\"one_time_keys\":{}}"}}}`},
		{"duplicate failure member", `{` + req + `,"remote":{"hs2.test":{"failure":{"status":504,"message":"a","message":"b"}}}}`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out := core.Invoke("complete_client", []byte(c.input))
			var env map[string]json.RawMessage
			if err := json.Unmarshal(out, &env); err != nil {
				t.Fatalf("output is not JSON: %s", out)
			}
			var code, msg string
			if err := json.Unmarshal(env["errcode"], &code); err != nil || code != "M_BAD_JSON" {
				t.Fatalf("want errcode M_BAD_JSON, got %s", out)
			}
			if err := json.Unmarshal(env["error"], &msg); err != nil || msg == "" || len(env) != 2 {
				t.Fatalf("want exactly errcode and a non-empty error, got %s", out)
			}
		})
	}
}
