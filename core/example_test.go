package core_test

import (
	"fmt"

	"github.com/keyclaim/keyclaim/core"
)

// A server completes a client claim: Alice's device on this server (hs1) has a key, Bob's
// server hs2 answers for one of his two devices and slips in a device nobody asked for, and
// Carol's server hs3 is down.
func ExampleCompleteClient() {
	req, err := core.ParseClaimRequest([]byte(`{
		"one_time_keys": {
			"@alice:hs1": {"ALICE1": "signed_curve25519"},
			"@bob:hs2":   {"BOB1": "signed_curve25519", "BOB2": "signed_curve25519"},
			"@carol:hs3": {"CAROL1": "signed_curve25519"}
		},
		"timeout": 5000
	}`), core.ParseOptions{ServerName: "hs1"})
	if err != nil {
		fmt.Println(err)
		return
	}
	plan := core.PlanFanout(req, "hs1")
	for _, d := range plan.Remote {
		fmt.Printf("ask %s: %s\n", d.Server, d.AppendBody(nil))
	}
	local := core.LocalResults{"@alice:hs1": {"ALICE1": {KeyID: "signed_curve25519:AAAA", Key: []byte(`{"key":"a"}`)}}}
	remote := map[core.ServerName]core.RemoteOutcome{
		"hs2": {Status: 200, Body: []byte(`{"one_time_keys":{"@bob:hs2":{"BOB1":{"signed_curve25519:B":{"key":"b"}},"EVIL":{"signed_curve25519:X":{"key":"x"}}}}}`)},
		"hs3": {Failure: &core.Failure{Status: 503, Message: "connection refused"}},
	}
	resp := core.CompleteClient(req, local, remote, core.CompleteOptions{ServerName: "hs1"})
	fmt.Printf("%s\n", resp.AppendJSON(nil))
	// Output:
	// ask hs2: {"one_time_keys":{"@bob:hs2":{"BOB1":"signed_curve25519","BOB2":"signed_curve25519"}}}
	// ask hs3: {"one_time_keys":{"@carol:hs3":{"CAROL1":"signed_curve25519"}}}
	// {"failures":{"hs3":{"message":"connection refused","status":503}},"one_time_keys":{"@alice:hs1":{"ALICE1":{"signed_curve25519:AAAA":{"key":"a"}}},"@bob:hs2":{"BOB1":{"signed_curve25519:B":{"key":"b"}},"BOB2":{}}}}
}

// An inbound federation claim: every user must be local, and there is no failures map.
func ExampleCompleteFederation() {
	req, err := core.ParseClaimRequest([]byte(`{"one_time_keys":{"@bob:hs2":{"BOB1":"signed_curve25519","GONE":"signed_curve25519"}}}`),
		core.ParseOptions{Flavour: core.FlavourFederation, ServerName: "hs2"})
	if err != nil {
		fmt.Println(err)
		return
	}
	inv := core.Inventory{"@bob:hs2": {"BOB1": {FallbackKeys: []core.FallbackKey{{KeyID: "signed_curve25519:FB", Key: []byte(`{"fallback":true,"key":"f"}`)}}}}}
	local := inv.Claim(req.Users)
	fmt.Printf("%s\n", core.CompleteFederation(req, local, core.CompleteOptions{ServerName: "hs2"}).AppendJSON(nil))
	// Output:
	// {"one_time_keys":{"@bob:hs2":{"BOB1":{"signed_curve25519:FB":{"fallback":true,"key":"f"}},"GONE":{}}}}
}

// ParseClaimRequest rejects ambiguous or malformed input with a Matrix error.
func ExampleParseClaimRequest() {
	for _, body := range []string{
		`{"one_time_keys":{"@bob:hs2":{"D":"signed_curve25519"}},"one_time_keys":{}}`,
		`{"one_time_keys":{"bob":{}}}`,
		`{"one_time_keys":`,
	} {
		_, err := core.ParseClaimRequest([]byte(body), core.ParseOptions{})
		fmt.Println(err)
	}
	// Output:
	// M_BAD_JSON: duplicate key "one_time_keys" in the request body
	// M_INVALID_PARAM: invalid user ID in one_time_keys: user ID "bob" does not start with '@'
	// M_NOT_JSON: invalid JSON: unexpected end of input, expected a JSON value
}

// A client SDK classifies the answer per device and lets the tracker plan the next request.
func ExampleTracker() {
	wanted, _ := core.ParseClaimRequest([]byte(`{"one_time_keys":{"@bob:hs2":{"B1":"signed_curve25519","B2":"signed_curve25519"},"@carol:hs3":{"C1":"signed_curve25519"}}}`), core.ParseOptions{})
	answer := []byte(`{"failures":{"hs3":{"status":503,"message":"down"}},"one_time_keys":{"@bob:hs2":{"B1":{"signed_curve25519:K":{"key":"k"}},"B2":{}}}}`)
	c, _ := core.ClassifyClaim(wanted, answer)
	for _, o := range c.Devices {
		fmt.Println(o.User, o.Device, o.Outcome)
	}
	tr := core.NewTracker(core.TrackerConfig{ServerName: "hs1"})
	tr.Observe(0, c)
	next, deferred := tr.Plan(1000, wanted)
	fmt.Printf("next: %d users; deferred: %s\n", len(next.Users), deferred.AppendJSON(nil))
	// Output:
	// @bob:hs2 B1 claimed
	// @bob:hs2 B2 no_keys
	// @carol:hs3 C1 server_failed
	// next: 1 users; deferred: {"@bob:hs2":{"B2":15000},"@carol:hs3":{"C1":15000}}
}

// Invoke is the JSON-in, JSON-out form of every operation, as the WebAssembly module exports it.
func ExampleInvoke() {
	out := core.Invoke("plan_fanout", []byte(`{"server_name":"hs1","request":{"one_time_keys":{"@a:hs1":{"D":"alg"},"@b:hs2":{"E":"alg"}}}}`))
	fmt.Printf("%s\n", out)
	out = core.Invoke("plan_fanout", []byte(`{"server_name":"hs1"}`))
	fmt.Printf("%s\n", out)
	// Output:
	// {"result":{"local":{"one_time_keys":{"@a:hs1":{"D":"alg"}}},"remote":{"hs2":{"one_time_keys":{"@b:hs2":{"E":"alg"}}}}}}
	// {"errcode":"M_BAD_JSON","error":"request is required"}
}
