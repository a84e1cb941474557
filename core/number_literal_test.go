package core_test

import (
	"testing"

	"github.com/keyclaim/keyclaim/core"
)

// TestNumberLiteralsInKeysKept pins what the docs say (DESIGN, "Why our own JSON reader and
// writer?"; bindings/ABI.md section 1): a number inside a key object keeps its literal text
// (1.0e+02, -0, 1E2), while members are sorted and white space removed, whichever path reads the
// key (canonical text copied, or a tree re-encoded) and wherever it comes from. The vector files
// hold integers only, so this cannot be a vector.
func TestNumberLiteralsInKeysKept(t *testing.T) {
	for _, c := range []struct{ name, op, input, want string }{
		{"remote key, canonical text and not", "complete_client",
			`{"server_name":"hs1.test","request":{"one_time_keys":{"@b:hs2.test":{"B1":"alg","B2":"alg"}}},"remote":{"hs2.test":{"status":200,"body":` +
				`"{\"one_time_keys\":{\"@b:hs2.test\":{\"B1\":{\"alg:x\":{\"key\":\"k\",\"m\":-0,\"n\":1.0e+02}},\"B2\":{\"alg:y\":{ \"n\":1E2, \"key\":\"k\" }}}}}"}}}`,
			`{"result":{"failures":{},"one_time_keys":{"@b:hs2.test":{"B1":{"alg:x":{"key":"k","m":-0,"n":1.0e+02}},"B2":{"alg:y":{"key":"k","n":1E2}}}}}}`},
		{"local key", "complete_federation",
			`{"server_name":"hs1.test","request":{"one_time_keys":{"@a:hs1.test":{"A1":"alg"}}},"local":{"@a:hs1.test":{"A1":{"alg:x":{"n":-0.50,"key":"k"}}}}}`,
			`{"result":{"one_time_keys":{"@a:hs1.test":{"A1":{"alg:x":{"key":"k","n":-0.50}}}}}}`},
		{"inventory key", "select_keys",
			`{"inventory":{"@a:hs1.test":{"A1":{"one_time_keys":[{"key_id":"alg:x","batch":1,"key":{"n":1e-7,"key":"k"}}]}}},"requests":[{"one_time_keys":{"@a:hs1.test":{"A1":"alg"}}}]}`,
			`{"result":{"inventory":{"@a:hs1.test":{"A1":{"fallback_keys":[],"one_time_keys":[]}}},"results":[{"@a:hs1.test":{"A1":{"alg:x":{"key":"k","n":1e-7}}}}]}}`},
		{"classified key", "classify_claim",
			`{"request":{"one_time_keys":{"@a:hs1.test":{"A1":"alg"}}},"body":"{\"one_time_keys\":{\"@a:hs1.test\":{\"A1\":{\"alg:x\":{\"key\":\"k\",\"n\":2.0}}}}}"}`,
			`{"result":{"outcomes":{"@a:hs1.test":{"A1":{"key":{"key":"k","n":2.0},"key_id":"alg:x","outcome":"claimed"}}}}}`},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := string(core.Invoke(c.op, []byte(c.input))); got != c.want {
				t.Errorf("got  %s\nwant %s", got, c.want)
			}
		})
	}
	// The native API writes local keys the same way.
	req, err := core.ParseClaimRequest([]byte(`{"one_time_keys":{"@a:hs1.test":{"A1":"alg","A2":"alg"}}}`), core.ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	local := core.LocalResults{"@a:hs1.test": {
		"A1": {KeyID: "alg:x", Key: []byte(`{"key":"k","n":1.0e+02}`)},
		"A2": {KeyID: "alg:y", Key: []byte(`{ "n" : -0, "key" : "k" }`)},
	}}
	got := string(core.CompleteFederation(req, local, core.CompleteOptions{ServerName: "hs1.test"}).AppendJSON(nil))
	if want := `{"one_time_keys":{"@a:hs1.test":{"A1":{"alg:x":{"key":"k","n":1.0e+02}},"A2":{"alg:y":{"key":"k","n":-0}}}}}`; got != want {
		t.Errorf("native: got  %s\nwant %s", got, want)
	}
}
