package keyclaimwasm_test

import (
	"context"
	"errors"
	"fmt"
	"log"

	keyclaimwasm "github.com/keyclaim/keyclaim/bindings/go"
)

func Example() {
	ctx := context.Background()
	m, err := keyclaimwasm.New(ctx, keyclaimwasm.Config{}) // the embedded module
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close(ctx)

	req, err := m.ParseClaim(ctx, []byte(`{"body":"{\"one_time_keys\":{\"@alice:example.org\":{\"ALICEDEV\":\"signed_curve25519\"}}}"}`))
	fmt.Println(string(req), err)

	_, err = m.ParseClaim(ctx, []byte(`{"body":"{}"}`))
	fmt.Println(err)
	fmt.Println(errors.Is(err, &keyclaimwasm.Error{Code: keyclaimwasm.CodeBadJSON}))
	// Output:
	// {"one_time_keys":{"@alice:example.org":{"ALICEDEV":"signed_curve25519"}},"timeout":10000} <nil>
	// M_BAD_JSON: one_time_keys is required
	// true
}

func ExampleModule_NewTracker() {
	ctx := context.Background()
	m, err := keyclaimwasm.New(ctx, keyclaimwasm.Config{})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close(ctx)

	tr, err := m.NewTracker(ctx, []byte(`{"server_name":"example.org"}`))
	if err != nil {
		log.Fatal(err)
	}
	defer tr.Close(ctx) // gives the tracker's instance back

	request := `{"one_time_keys":{"@carol:down.example":{"CAROLDEV":"signed_curve25519"}}}`
	answer := `{\"one_time_keys\":{},\"failures\":{\"down.example\":{\"status\":504,\"message\":\"timed out\"}}}`
	outcomes, _ := tr.Observe(ctx, []byte(`{"now_ms":0,"request":`+request+`,"body":"`+answer+`"}`))
	fmt.Println(string(outcomes))
	next, _ := tr.Plan(ctx, []byte(`{"now_ms":1000,"request":`+request+`}`))
	fmt.Println(string(next))
	// Output:
	// {"outcomes":{"@carol:down.example":{"CAROLDEV":{"outcome":"server_failed"}}},"tracked":1}
	// {"deferred":{"@carol:down.example":{"CAROLDEV":15000}},"one_time_keys":{}}
}
