package federation_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"log"
	"net/http"
	"time"

	"github.com/keyclaim/keyclaim/hostserver/federation"
)

// The appendices' JSON signing test vector: the key from the seed
// YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1, server "domain", key ID "ed25519:1".
func ExampleSigningKey_SignJSON() {
	seed, _ := base64.RawStdEncoding.DecodeString("YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1")
	key, err := federation.NewSigningKey("domain", "1", seed)
	if err != nil {
		log.Fatal(err)
	}
	signed, err := key.SignJSON([]byte(`{"one": 1, "two": "Two"}`))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(signed))
	fmt.Println(federation.VerifyJSON(signed, "domain", "ed25519:1", key.PublicKey()))
	// Output:
	// {"one":1,"signatures":{"domain":{"ed25519:1":"KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw"}},"two":"Two"}
	// <nil>
}

func ExampleParseXMatrix() {
	x, err := federation.ParseXMatrix(`X-Matrix origin=origin.hs.example.com, Destination="destination.hs.example.com",key="ed25519:key1",sig="ABCDEF"`)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(x.Origin, x.Destination, x.Key, x.Signature)
	fmt.Println(x)
	// Output:
	// origin.hs.example.com destination.hs.example.com ed25519:key1 ABCDEF
	// X-Matrix origin="origin.hs.example.com",destination="destination.hs.example.com",key="ed25519:key1",sig="ABCDEF"
}

func ExampleStaticRoutes() {
	var routes federation.StaticRoutes // a flag.Value: flag.Var(&routes, "federation-resolve", "...")
	if err := routes.Set("hs2.test=http://127.0.0.1:8449"); err != nil {
		log.Fatal(err)
	}
	fmt.Println(routes)
	// Output: hs2.test=http://127.0.0.1:8449
}

// How a server wires the package: one signing key, one resolver, one client (hostserver's
// Federation), one verifier (its FederationAuthenticator) and the key server handler.
func ExampleNewClient() {
	key, err := federation.LoadOrCreateSigningKey("/var/lib/keyclaim/signing.key", "hs1.example")
	if err != nil {
		log.Fatal(err)
	}
	var routes federation.StaticRoutes
	_ = routes.Set("hs2.test=http://127.0.0.1:8449")
	client, err := federation.NewClient(federation.ClientOptions{
		SigningKey: key,
		Resolver:   federation.NewResolver(federation.ResolverOptions{Static: routes}),
		Observer: federation.ObserverFunc(func(e federation.RequestEvent) {
			// e.g. a Prometheus histogram by endpoint and outcome
		}),
	})
	if err != nil {
		log.Fatal(err)
	}
	verifier, err := federation.NewVerifier(federation.VerifierOptions{ServerName: key.ServerName(), Keys: client})
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(federation.KeyServerPath, federation.KeyServerHandler(key, federation.DefaultKeyValidity, nil))
	mux.HandleFunc("POST "+federation.ClaimPath, func(w http.ResponseWriter, r *http.Request) {
		var body []byte // read (size-limited) from r.Body
		origin, err := verifier.AuthenticateFederation(r, body)
		_, _ = origin, err // err is an *AuthError: answer 401 M_UNAUTHORIZED with its message
	})
	_ = federation.FanOut(context.Background(), client.ClaimKeys, []federation.Request{{Destination: "hs2.test", Body: []byte(`{"one_time_keys":{}}`)}}, 10*time.Second)
}
