package hostserver_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyclaim/keyclaim/hostserver"
)

// Issue 14, fix 4: /keys/query returns unsigned.device_display_name of local devices from the
// token file's optional display_name, as Synapse does (an uploaded unsigned is replaced; keys
// without one keep their bytes, the member first). The federation query does not (Synapse's
// default). Devices without a name come back exactly as uploaded.
func TestQueryDeviceDisplayName(t *testing.T) {
	forEachStore(t, func(t *testing.T, b backend) {
		tokens := map[string]map[string]string{
			aliceToken:  {"user_id": alice, "device_id": "ALICEDEV", "display_name": "Alice's laptop"},
			bobToken:    {"user_id": bob, "device_id": "BOBDEV", "display_name": `Bob's "phone" ☎`},
			"tok-bob-2": {"user_id": bob, "device_id": "BOBDEV", "display_name": `Bob's "phone" ☎`}, // a second token of the same device
			bobPhoneTok: {"user_id": bob, "device_id": "BOBPHONE"},
		}
		path := filepath.Join(t.TempDir(), "named-tokens.json")
		writeTokenFile(t, path, tokens)
		ts := startServer(t, b, func(cfg *hostserver.Config) { cfg.Tokens = path })

		dkBob, dkPhone := deviceKeys(bob, "BOBDEV"), deviceKeys(bob, "BOBPHONE")
		// alice uploads an unsigned member of her own: the server's replaces it.
		dkAlice := `{"algorithms":["m.olm.v1.curve25519-aes-sha2"],"device_id":"ALICEDEV","keys":{"ed25519:ALICEDEV":"ed-A"},` +
			`"signatures":{"` + alice + `":{"ed25519:ALICEDEV":"sig-A"}},"unsigned":{"device_display_name":"forged","x":1},"user_id":"` + alice + `"}`
		ts.ok(uploadPath, bobToken, `{"device_keys":`+dkBob+`}`)
		ts.ok(uploadPath, bobPhoneTok, `{"device_keys":`+dkPhone+`}`)
		ts.ok(uploadPath, aliceToken, `{"device_keys":`+dkAlice+`}`)

		got := ts.ok(queryPath, aliceToken, `{"device_keys":{"`+bob+`":[],"`+alice+`":[]}}`)
		namedBob := `{"unsigned":{"device_display_name":"Bob's \"phone\" ☎"},` + dkBob[1:]
		namedAlice := `{"algorithms":["m.olm.v1.curve25519-aes-sha2"],"device_id":"ALICEDEV","keys":{"ed25519:ALICEDEV":"ed-A"},` +
			`"signatures":{"` + alice + `":{"ed25519:ALICEDEV":"sig-A"}},"unsigned":{"device_display_name":"Alice's laptop"},"user_id":"` + alice + `"}`
		wantBody(t, "client query", got, `{"device_keys":{"`+alice+`":{"ALICEDEV":`+namedAlice+`},"`+bob+`":{"BOBDEV":`+namedBob+`,"BOBPHONE":`+dkPhone+`}},"failures":{}}`)

		// The answer is what a client verifies: with unsigned and signatures taken away, each
		// device's keys are the uploaded ones.
		var answer struct {
			DeviceKeys map[string]map[string]map[string]any `json:"device_keys"`
		}
		if err := json.Unmarshal([]byte(got), &answer); err != nil {
			t.Fatal(err)
		}
		for user, devs := range answer.DeviceKeys {
			for dev, keys := range devs {
				if keys["user_id"] != user || keys["device_id"] != dev {
					t.Errorf("%s %s: %v", user, dev, keys)
				}
			}
		}

		// Over federation: no names, the keys as uploaded.
		fed := ts.ok(fedQueryPath, "", `{"device_keys":{"`+bob+`":[]}}`)
		wantBody(t, "federation query", fed, `{"device_keys":{"`+bob+`":{"BOBDEV":`+dkBob+`,"BOBPHONE":`+dkPhone+`}}}`)
	})
}

func TestTokenFileDisplayNames(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "tokens.json")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(`{"t1":{"user_id":"@a:hs1.test","device_id":"D","display_name":"A's phone"},"t2":{"user_id":"@a:hs1.test","device_id":"E"}}`)
	a, err := hostserver.NewTokenFileAuth(path, "hs1.test")
	if err != nil {
		t.Fatal(err)
	}
	if name, ok := a.DeviceDisplayName("@a:hs1.test", "D"); !ok || name != "A's phone" {
		t.Errorf("D: %q %v", name, ok)
	}
	if name, ok := a.DeviceDisplayName("@a:hs1.test", "E"); ok {
		t.Errorf("E has no name, got %q", name)
	}
	// Reloading changes the names with the tokens.
	write(`{"t1":{"user_id":"@a:hs1.test","device_id":"D","display_name":"renamed"}}`)
	if err := a.Reload(); err != nil {
		t.Fatal(err)
	}
	if name, _ := a.DeviceDisplayName("@a:hs1.test", "D"); name != "renamed" {
		t.Errorf("after reload: %q", name)
	}
	// Two names for one device, or a name of the wrong type, are refused; the old file stays.
	for _, bad := range []string{
		`{"t1":{"user_id":"@a:hs1.test","device_id":"D","display_name":"x"},"t2":{"user_id":"@a:hs1.test","device_id":"D","display_name":"y"}}`,
		`{"t1":{"user_id":"@a:hs1.test","device_id":"D","display_name":5}}`,
	} {
		write(bad)
		if err := a.Reload(); err == nil {
			t.Errorf("accepted %s", bad)
		}
	}
	if name, _ := a.DeviceDisplayName("@a:hs1.test", "D"); name != "renamed" {
		t.Errorf("after refused reloads: %q", name)
	}

	// The development token file gives every device a name.
	devPath := filepath.Join(dir, "dev.json")
	tokens, created, err := hostserver.EnsureDevTokens(devPath, "localhost")
	if err != nil || !created {
		t.Fatal(created, err)
	}
	for _, id := range tokens {
		if id.DisplayName == "" || !strings.Contains(id.DisplayName, "development device") {
			t.Errorf("dev token of %s %s: display name %q", id.User, id.Device, id.DisplayName)
		}
	}
	if data, err := os.ReadFile(devPath); err != nil || !strings.Contains(string(data), `"display_name"`) {
		t.Errorf("dev token file lacks display_name: %s %v", data, err)
	}
}
