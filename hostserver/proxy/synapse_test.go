//go:build synapse

package proxy_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/keyclaim/keyclaim/hostserver/proxy"
)

// The proxy in front of a real Synapse, started by scripts/test-synapse.sh (make test-synapse),
// which sets these variables after registering the users and uploading their keys.
const (
	synapseURLEnv   = "KEYCLAIM_SYNAPSE_URL"         // Synapse's base URL
	synapseAliceEnv = "KEYCLAIM_SYNAPSE_ALICE_TOKEN" // alice's access token
	synapseStateEnv = "KEYCLAIM_SYNAPSE_STATE"       // the JSON file of what the script uploaded
)

// synapseState is what scripts/test-synapse.sh set up.
type synapseState struct {
	BobTokens    map[string]string                     `json:"bob_tokens"`
	OneTimeKeys  map[string]map[string]json.RawMessage `json:"one_time_keys"` // device -> key ID -> key
	FallbackKeys map[string]map[string]json.RawMessage `json:"fallback_keys"`
}

// claimAnswer is a claim answer, read loosely so that null or a missing map is seen as such.
type claimAnswer struct {
	OneTimeKeys map[string]map[string]map[string]json.RawMessage `json:"one_time_keys"`
	Failures    map[string]map[string]any                        `json:"failures"`
}

func TestSynapse(t *testing.T) {
	base, aliceToken, statePath := os.Getenv(synapseURLEnv), os.Getenv(synapseAliceEnv), os.Getenv(synapseStateEnv)
	if base == "" || aliceToken == "" || statePath == "" {
		t.Skipf("Synapse test skipped: run it with `make test-synapse` (scripts/test-synapse.sh sets %s, %s and %s)", synapseURLEnv, synapseAliceEnv, synapseStateEnv)
	}
	data, err := os.ReadFile(statePath)
	if err != nil {
		t.Fatal(err)
	}
	var state synapseState
	if err := json.Unmarshal(data, &state); err != nil {
		t.Fatalf("%s: %v", statePath, err)
	}
	upstream, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	var last proxy.Observation
	p, err := proxy.New(proxy.Config{
		Upstream:   upstream,
		ServerName: "localhost",
		Metrics:    proxy.MetricsFunc(func(o proxy.Observation) { last = o }), // requests run one at a time
	})
	if err != nil {
		t.Fatal(err)
	}
	front := startHTTP(t, p)
	auth := "Bearer " + aliceToken

	const bob = "@bob:localhost"
	request := `{"one_time_keys":{` +
		`"` + bob + `":{"BOBDEV":"signed_curve25519","BOBPHONE":"signed_curve25519","BOBTAB":"signed_curve25519","BOBGHOST":"signed_curve25519"},` +
		`"@alice:localhost":{"ALICEDEV":"signed_curve25519"},` +
		`"@nobody:localhost":{"X":"signed_curve25519"},` +
		`"@dave:remote.test":{"D1":"signed_curve25519"}}}`
	uploaded := state.OneTimeKeys["BOBDEV"]
	fallback := state.FallbackKeys["BOBPHONE"]

	claim := func(t *testing.T, target string) (response, claimAnswer) {
		t.Helper()
		r := send(t, http.MethodPost, target, auth, request)
		if r.status != http.StatusOK {
			t.Fatalf("POST %s: %d %s", target, r.status, r.body)
		}
		var a claimAnswer
		if err := json.Unmarshal([]byte(r.body), &a); err != nil {
			t.Fatalf("the answer is not JSON: %v: %s", err, r.body)
		}
		t.Logf("%s answered %s", target, r.body)
		return r, a
	}
	// keyOf returns the one key of a device entry.
	keyOf := func(t *testing.T, entry map[string]json.RawMessage) (string, json.RawMessage) {
		t.Helper()
		if len(entry) != 1 {
			t.Fatalf("want exactly one key, got %v", entry)
		}
		for id, k := range entry {
			return id, k
		}
		return "", nil
	}
	sameJSON := func(a, b json.RawMessage) bool {
		var x, y any
		return json.Unmarshal(a, &x) == nil && json.Unmarshal(b, &y) == nil && reflect.DeepEqual(x, y)
	}

	var handedOut []string
	t.Run("Synapse alone leaves devices out", func(t *testing.T) {
		_, a := claim(t, base+proxy.ClaimPathV3)
		devs := a.OneTimeKeys[bob]
		for _, d := range []string{"BOBTAB", "BOBGHOST"} {
			if _, ok := devs[d]; ok {
				t.Errorf("Synapse answered %s: the proxy test proves nothing", d)
			}
		}
		id, k := keyOf(t, devs["BOBDEV"])
		if !sameJSON(k, uploaded[id]) {
			t.Errorf("BOBDEV: %s %s is not an uploaded one-time key", id, k)
		}
		handedOut = append(handedOut, id)
		if _, ok := a.Failures["remote.test"]; !ok {
			t.Errorf("no failure for remote.test: %v", a.Failures)
		}
	})

	checkComplete := func(t *testing.T, r response, a claimAnswer) {
		t.Helper()
		assertComplete(t, r.body)
		want := map[string][]string{
			bob:                 {"BOBDEV", "BOBGHOST", "BOBPHONE", "BOBTAB"},
			"@alice:localhost":  {"ALICEDEV"},
			"@nobody:localhost": {"X"},
		}
		if len(a.OneTimeKeys) != len(want) {
			t.Errorf("one_time_keys has %d users, want %d (the failed server's user left out)", len(a.OneTimeKeys), len(want))
		}
		for user, devices := range want {
			if len(a.OneTimeKeys[user]) != len(devices) {
				t.Errorf("%s: %d devices answered, want %d", user, len(a.OneTimeKeys[user]), len(devices))
			}
			for _, d := range devices {
				if _, ok := a.OneTimeKeys[user][d]; !ok {
					t.Errorf("%s %s is not answered", user, d)
				}
			}
		}
		for _, d := range []string{"BOBTAB", "BOBGHOST"} {
			if len(a.OneTimeKeys[bob][d]) != 0 {
				t.Errorf("%s: %v, want {}", d, a.OneTimeKeys[bob][d])
			}
		}
		f, ok := a.Failures["remote.test"]
		if !ok {
			t.Fatalf("the failure of remote.test is lost: %v", a.Failures)
		}
		if _, ok := f["status"].(float64); !ok {
			t.Errorf("the failure has no integer status: %v", f)
		}
		if _, ok := f["message"].(string); !ok {
			t.Errorf("the failure has no message: %v", f)
		}
		id, k := keyOf(t, a.OneTimeKeys[bob]["BOBPHONE"])
		if !sameJSON(k, fallback[id]) {
			t.Errorf("BOBPHONE: %s %s is not the uploaded fallback key", id, k)
		}
	}

	for round := 1; round <= 2; round++ {
		t.Run("through the proxy: every device answered, keys kept", func(t *testing.T) {
			r, a := claim(t, front+proxy.ClaimPathV3)
			checkComplete(t, r, a)
			id, k := keyOf(t, a.OneTimeKeys[bob]["BOBDEV"])
			if !sameJSON(k, uploaded[id]) {
				t.Errorf("BOBDEV: %s %s is not an uploaded one-time key", id, k)
			}
			for _, prev := range handedOut {
				if prev == id {
					t.Errorf("BOBDEV: %s handed out twice", id)
				}
			}
			handedOut = append(handedOut, id)
			// Filled: BOBTAB, BOBGHOST, ALICEDEV, X.
			if last.Result != proxy.ResultCompleted || last.Filled != 4 || last.Dropped != 0 {
				t.Errorf("observation %v, want completed with 4 filled", last)
			}
		})
	}

	t.Run("through the proxy: the exhausted device is {}", func(t *testing.T) {
		r, a := claim(t, front+proxy.ClaimPathR0)
		checkComplete(t, r, a)
		if len(a.OneTimeKeys[bob]["BOBDEV"]) != 0 {
			t.Errorf("BOBDEV: %v, want {} (its three one-time keys are gone and it has no fallback key)", a.OneTimeKeys[bob]["BOBDEV"])
		}
	})

	t.Run("Synapse alone leaves the exhausted device out", func(t *testing.T) {
		_, a := claim(t, base+proxy.ClaimPathV3+"?timeout=5000")
		if entry, ok := a.OneTimeKeys[bob]["BOBDEV"]; ok {
			t.Errorf("Synapse answered the exhausted BOBDEV: %v", entry)
		}
	})

	t.Run("Synapse's errors pass through unchanged", func(t *testing.T) {
		for _, authz := range []string{"", "Bearer not-a-token"} {
			direct := send(t, http.MethodPost, base+proxy.ClaimPathV3, authz, request)
			proxied := send(t, http.MethodPost, front+proxy.ClaimPathV3, authz, request)
			if direct.status != http.StatusUnauthorized || proxied.status != direct.status || proxied.body != direct.body {
				t.Errorf("Authorization %q: Synapse %d %s, proxy %d %s", authz, direct.status, direct.body, proxied.status, proxied.body)
			}
			if g, w := proxied.header.Get("Content-Type"), direct.header.Get("Content-Type"); g != w {
				t.Errorf("Content-Type %q, Synapse's %q", g, w)
			}
		}
	})

	t.Run("a malformed request never reaches Synapse", func(t *testing.T) {
		r := send(t, http.MethodPost, front+proxy.ClaimPathV3, auth, `{"one_time_keys":{"bob":{"D":"signed_curve25519"}}}`)
		wantError(t, r, http.StatusBadRequest, "M_INVALID_PARAM")
		if last.Result != proxy.ResultRejected {
			t.Errorf("observation %v, want rejected", last)
		}
	})

	t.Run("passthrough", func(t *testing.T) {
		pt, err := proxy.New(proxy.Config{Upstream: upstream, ServerName: "localhost", Passthrough: true})
		if err != nil {
			t.Fatal(err)
		}
		ptBase := startHTTP(t, pt)
		direct := send(t, http.MethodGet, base+"/_matrix/client/versions", "", "")
		proxied := send(t, http.MethodGet, ptBase+"/_matrix/client/versions", "", "")
		if direct.status != 200 || proxied.status != 200 || proxied.body != direct.body {
			t.Errorf("versions: Synapse %d %s, proxy %d %s", direct.status, direct.body, proxied.status, proxied.body)
		}
		who := send(t, http.MethodGet, ptBase+"/_matrix/client/v3/account/whoami", auth, "")
		if who.status != 200 || !strings.Contains(who.body, `"@alice:localhost"`) {
			t.Errorf("whoami through the proxy: %d %s", who.status, who.body)
		}
	})
}
