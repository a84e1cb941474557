//go:build synapse

package hostserver_test

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keyclaim/keyclaim/hostserver"
	"github.com/keyclaim/keyclaim/hostserver/internal/specconform"
)

// A differential test against a real Synapse (issue 14), run by scripts/test-synapse.sh (make
// test-synapse), which starts Synapse and sets KEYCLAIM_SYNAPSE_URL and
// KEYCLAIM_SYNAPSE_SHARED_SECRET. The same sequence of uploads, claims and queries, with the
// same keys, goes to Synapse and to a fresh keyclaim keys server in each mode, one step at a
// time, and the answers are compared:
//
//   - legacy mode must equal Synapse;
//   - msc4072 mode must equal Synapse plus {} for every requested device that Synapse left out
//     (and the users it left out, unless their server is in failures);
//
// except for the steps that name an intended difference (intendedDifferences: each with its
// reason, and each step also checks that Synapse really still answers differently, so that a
// stale entry fails). README.md, "Differences from Synapse", lists the same.

// intendedDifferences are the only ways keyclaim may answer differently from Synapse.
var intendedDifferences = map[string]string{
	"stricter-validation": "keyclaim rejects malformed requests that Synapse accepts and answers from " +
		"whatever it can read (a timeout Synapse ignores in the body, duplicate object keys, an empty " +
		"algorithm): BRIEF section 2 asks for a clear 400 instead of a guess",
	"reuploaded-claimed-key": "Synapse stores a one-time key that was already claimed again when the client " +
		"uploads it again, and hands it out a second time (matrix-spec#1124, the double-issue race); keyclaim " +
		"remembers claimed key IDs: the upload succeeds, the count does not include it, it is never handed out again",
	"errcode": "the same refusal with the same status, but keyclaim's documented errcode (README, error table): " +
		"M_INVALID_PARAM for a parameter that contradicts what is stored or who is asking (a different key under " +
		"an unclaimed key ID, device keys of another device), where Synapse says M_UNKNOWN or M_BAD_JSON",
	"no-cross-signing": "keyclaim keeps device and one-time keys, not cross-signing keys (/keys/device_signing/upload " +
		"is the homeserver's): its /keys/query answer has no master_keys, self_signing_keys or user_signing_keys, " +
		"which the spec makes optional and Synapse sends empty when nobody uploaded any; and a device without a " +
		"display name comes back exactly as uploaded (BRIEF section 6), where Synapse adds an empty unsigned " +
		"object (optional in the spec's DeviceInformation)",
}

// Answer normalisations applied to both sides before every comparison, each with its reason:
//
//   - an error is compared by status and errcode, not by its message (the wording is each
//     server's own);
//   - a failures entry is compared by its server name: its status and message describe the failure
//     as each server met it (Synapse refuses the server by its federation whitelist, keyclaim
//     meets a closed port); both must still carry an integer status and a string message.

const (
	synapseSecretEnv = "KEYCLAIM_SYNAPSE_SHARED_SECRET" // Synapse's registration_shared_secret
	synapseBaseEnv   = "KEYCLAIM_SYNAPSE_URL"
)

// diffTarget is one server of the comparison.
type diffTarget struct {
	name   string // "synapse", "msc4072", "legacy"
	base   string
	tokens map[string]string // "user/device" -> access token
	client *http.Client
}

type diffAnswer struct {
	status int
	body   any // parsed JSON; errors reduced to {"errcode": ...}
	raw    string
}

func (d *diffTarget) send(t *testing.T, as, path, body string) diffAnswer {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, d.base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if as != "" {
		tok, ok := d.tokens[as]
		if !ok {
			t.Fatalf("%s: no token for %s", d.name, as)
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := d.client.Do(req)
	if err != nil {
		t.Fatalf("%s: POST %s: %v", d.name, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	a := diffAnswer{status: resp.StatusCode, raw: string(data)}
	if err := json.Unmarshal(data, &a.body); err != nil {
		t.Fatalf("%s: POST %s: the answer is not JSON: %d %s", d.name, path, resp.StatusCode, data)
	}
	return a
}

// normalise applies the normalisations above.
func normalise(t *testing.T, who string, a diffAnswer) diffAnswer {
	t.Helper()
	obj, _ := a.body.(map[string]any)
	if a.status != http.StatusOK {
		return diffAnswer{status: a.status, body: map[string]any{"errcode": obj["errcode"]}, raw: a.raw}
	}
	if f, ok := obj["failures"].(map[string]any); ok {
		out := map[string]any{}
		for server, v := range f {
			e, _ := v.(map[string]any)
			if _, ok := e["status"].(float64); !ok {
				t.Errorf("%s: the failure of %s has no integer status: %s", who, server, a.raw)
			}
			if _, ok := e["message"].(string); !ok {
				t.Errorf("%s: the failure of %s has no message: %s", who, server, a.raw)
			}
			out[server] = "failed"
		}
		obj = maps.Clone(obj)
		obj["failures"] = out
	}
	return diffAnswer{status: a.status, body: obj, raw: a.raw}
}

// completed is Synapse's claim answer as msc4072 mode must give it: every requested device of
// every user whose server is not in failures, {} where Synapse left it out.
func completed(answer any, request string) any {
	var req struct {
		OneTimeKeys map[string]map[string]string `json:"one_time_keys"`
	}
	if json.Unmarshal([]byte(request), &req) != nil {
		return answer
	}
	obj := deepCopyJSON(answer).(map[string]any)
	failures, _ := obj["failures"].(map[string]any)
	otk, _ := obj["one_time_keys"].(map[string]any)
	for user, devices := range req.OneTimeKeys {
		if _, failed := failures[user[strings.IndexByte(user, ':')+1:]]; failed {
			continue
		}
		u, _ := otk[user].(map[string]any)
		if u == nil {
			u = map[string]any{}
			otk[user] = u
		}
		for d := range devices {
			if _, ok := u[d]; !ok {
				u[d] = map[string]any{}
			}
		}
	}
	return obj
}

// diffStep is one request of the sequence.
type diffStep struct {
	name string
	as   string // "user/device" whose token is sent ("" = none)
	path string
	body string
	// intended names an entry of intendedDifferences; adjust then turns Synapse's (normalised)
	// answer into keyclaim's expected one (before msc4072 completion), and must change it.
	intended string
	adjust   func(a diffAnswer) diffAnswer
}

// synapseRegister registers a user through Synapse's shared-secret registration API.
func synapseRegister(t *testing.T, base, secret, localpart, password string) {
	t.Helper()
	resp, err := http.Get(base + "/_synapse/admin/v1/register")
	if err != nil {
		t.Fatal(err)
	}
	var nonce struct {
		Nonce string `json:"nonce"`
	}
	err = json.NewDecoder(resp.Body).Decode(&nonce)
	resp.Body.Close()
	if err != nil || nonce.Nonce == "" {
		t.Fatalf("registration nonce: %v", err)
	}
	mac := hmac.New(sha1.New, []byte(secret))
	mac.Write([]byte(nonce.Nonce + "\x00" + localpart + "\x00" + password + "\x00notadmin"))
	body, _ := json.Marshal(map[string]any{"nonce": nonce.Nonce, "username": localpart, "password": password,
		"admin": false, "mac": hex.EncodeToString(mac.Sum(nil))})
	resp, err = http.Post(base+"/_synapse/admin/v1/register", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("registering %s: %d %s", localpart, resp.StatusCode, data)
	}
}

// synapseLogin logs a user in on a device (with a display name, or none) and returns the token.
func synapseLogin(t *testing.T, base, localpart, password, device, displayName string) string {
	t.Helper()
	req := map[string]any{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": localpart},
		"password": password, "device_id": device}
	if displayName != "" {
		req["initial_device_display_name"] = displayName
	}
	body, _ := json.Marshal(req)
	resp, err := http.Post(base+"/_matrix/client/v3/login", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		AccessToken string `json:"access_token"`
		DeviceID    string `json:"device_id"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusOK || out.DeviceID != device {
		t.Fatalf("logging %s in on %s: %d %v", localpart, device, resp.StatusCode, err)
	}
	return out.AccessToken
}

func TestSynapseDifferential(t *testing.T) {
	base, secret := os.Getenv(synapseBaseEnv), os.Getenv(synapseSecretEnv)
	if base == "" || secret == "" {
		if os.Getenv("CI") != "" {
			t.Fatalf("FAIL (CI): %s and %s are not set: run it with `make test-synapse`", synapseBaseEnv, synapseSecretEnv)
		}
		t.Skipf("Synapse differential test skipped: run it with `make test-synapse` (scripts/test-synapse.sh sets %s and %s)", synapseBaseEnv, synapseSecretEnv)
	}
	// Fresh user names for each run, the same on every server (Synapse's server name is
	// localhost, and so is the keyclaim servers').
	var sfx [3]byte
	_, _ = rand.Read(sfx[:])
	s := hex.EncodeToString(sfx[:])
	amy, ben, cat := "amy"+s, "ben"+s, "cat"+s
	uid := func(localpart string) string { return "@" + localpart + ":localhost" }
	// The devices: ben's B1 (device keys, batches of one-time keys), B2 (a fallback key only),
	// B3 (device keys only), B4 (one one-time key), B5 (a one-time key and a fallback key), B6
	// (the re-uploaded claimed key); cat's C1 has nothing; amy's A1 claims and queries.
	devices := map[string][]string{amy: {"A1"}, ben: {"B1", "B2", "B3", "B4", "B5", "B6"}, cat: {"C1"}}
	displayNames := map[string]string{ben + "/B1": "Ben's phone", ben + "/B3": "Ben's laptop"}

	spec := specconform.Load(t).Fresh()
	// Synapse's answers are checked against the spec too, but only logged: it is not under test.
	syn := &diffTarget{name: "synapse", base: base, tokens: map[string]string{}, client: &http.Client{Timeout: 60 * time.Second,
		Transport: &specconform.Transport{V: spec, T: t, Lenient: "Synapse's answer, not under test"}}}
	kcTokens := map[string]map[string]string{}
	for _, user := range slices.Sorted(maps.Keys(devices)) {
		pw := "pw-" + user + "-" + secret
		synapseRegister(t, base, secret, user, pw)
		for _, d := range devices[user] {
			name := displayNames[user+"/"+d]
			syn.tokens[user+"/"+d] = synapseLogin(t, base, user, pw, d, name)
			entry := map[string]string{"user_id": uid(user), "device_id": d}
			if name != "" {
				entry["display_name"] = name
			}
			kcTokens["kc-"+user+"-"+d] = entry
		}
	}
	targets := []*diffTarget{syn}
	dead := listenLoopback(t)
	deadURL := routeTo(t, dead)
	_ = dead.Close() // nobody listens there: connection refused
	for _, mode := range []string{"legacy", "msc4072"} {
		ts := startServer(t, sqliteBackend, func(cfg *hostserver.Config) {
			tokens := filepath.Join(t.TempDir(), "diff-tokens.json")
			writeTokenFile(t, tokens, kcTokens)
			cfg.ServerName = "localhost"
			cfg.Tokens = tokens
			cfg.Mode = mode
			cfg.Federation = nil // the real federation client
			cfg.FederationResolve["unreachable.test"] = deadURL
		})
		// Every keyclaim answer of the sequence is also checked against the spec's OpenAPI files.
		conformClient(t, spec, ts)
		d := &diffTarget{name: mode, base: ts.base, tokens: map[string]string{}, client: ts.client}
		for tok, e := range kcTokens {
			d.tokens[e["user_id"][1:strings.IndexByte(e["user_id"], ':')]+"/"+e["device_id"]] = tok
		}
		targets = append(targets, d)
	}

	otk := func(user, device, name string) string {
		return `{"key":"` + name + `","signatures":{"` + uid(user) + `":{"ed25519:` + device + `":"sig-` + name + `"}}}`
	}
	fallback := func(user, device, name string) string {
		return `{"key":"` + name + `","fallback":true,"signatures":{"` + uid(user) + `":{"ed25519:` + device + `":"sig-` + name + `"}}}`
	}
	deviceKeys := func(user, device string) string {
		return `{"user_id":"` + uid(user) + `","device_id":"` + device + `","algorithms":["m.olm.v1.curve25519-aes-sha2","m.megolm.v1.aes-sha2"],` +
			`"keys":{"curve25519:` + device + `":"cu-` + device + `","ed25519:` + device + `":"ed-` + device + `"},` +
			`"signatures":{"` + uid(user) + `":{"ed25519:` + device + `":"self-` + device + `"}}}`
	}
	const up, query, claim = "/_matrix/client/v3/keys/upload", "/_matrix/client/v3/keys/query", "/_matrix/client/v3/keys/claim"
	B := func(d string) string { return ben + "/" + d }
	A := amy + "/A1"
	claimOf := func(user string, devs ...string) string { return claimBody(uid(user), devs...) }
	everyBenDevice := claimOf(ben, "B1", "B2", "B3", "B4", "B5", "GHOST")
	badRequest := func(errcode string) func(diffAnswer) diffAnswer {
		return func(diffAnswer) diffAnswer {
			return diffAnswer{status: http.StatusBadRequest, body: map[string]any{"errcode": errcode}}
		}
	}
	// noCrossSigning leaves out Synapse's empty cross-signing maps (and only empty ones), and
	// the empty unsigned objects it adds to devices without a display name.
	noCrossSigning := func(a diffAnswer) diffAnswer {
		b := deepCopyJSON(a.body).(map[string]any)
		for _, k := range []string{"master_keys", "self_signing_keys", "user_signing_keys"} {
			if m, ok := b[k].(map[string]any); ok && len(m) == 0 {
				delete(b, k)
			}
		}
		users, _ := b["device_keys"].(map[string]any)
		for _, devs := range users {
			devices, _ := devs.(map[string]any)
			for _, d := range devices {
				dev, _ := d.(map[string]any)
				if u, ok := dev["unsigned"].(map[string]any); ok && len(u) == 0 {
					delete(dev, "unsigned")
				}
			}
		}
		return diffAnswer{status: a.status, body: b}
	}
	// counts replaces the signed_curve25519 count of an upload answer.
	counts := func(n float64) func(diffAnswer) diffAnswer {
		return func(a diffAnswer) diffAnswer {
			b := deepCopyJSON(a.body).(map[string]any)
			b["one_time_key_counts"].(map[string]any)["signed_curve25519"] = n
			return diffAnswer{status: a.status, body: b}
		}
	}

	steps := []diffStep{
		// Uploads: device keys, several batches, fallback keys, re-uploads.
		{name: "B1 device keys and a first batch", as: B("B1"), path: up, body: `{"device_keys":` + deviceKeys(ben, "B1") +
			`,"one_time_keys":{"signed_curve25519:AAAAAQ":` + otk(ben, "B1", "k1") + `,"signed_curve25519:AAAAAg":` + otk(ben, "B1", "k2") + `}}`},
		{name: "B1 a second batch", as: B("B1"), path: up, body: `{"one_time_keys":{"signed_curve25519:AAAAAw":` + otk(ben, "B1", "k3") + `}}`},
		{name: "B1 a third batch", as: B("B1"), path: up, body: `{"one_time_keys":{"signed_curve25519:AAAABA":` + otk(ben, "B1", "k4") + `}}`},
		{name: "B1 an identical re-upload", as: B("B1"), path: up, body: `{"device_keys":` + deviceKeys(ben, "B1") +
			`,"one_time_keys":{"signed_curve25519:AAAAAQ":` + otk(ben, "B1", "k1") + `}}`},
		{name: "B1 the same key re-signed", as: B("B1"), path: up, body: `{"one_time_keys":{"signed_curve25519:AAAAAQ":` +
			`{"key":"k1","signatures":{"` + uid(ben) + `":{"ed25519:B1":"another-signature"}}}}}`},
		{name: "B1 a different key under an unclaimed ID", as: B("B1"), path: up, body: `{"one_time_keys":{"signed_curve25519:AAAAAg":` + otk(ben, "B1", "not-k2") + `}}`,
			intended: "errcode", adjust: badRequest("M_INVALID_PARAM")},
		{name: "B1 the counts (an empty upload)", as: B("B1"), path: up, body: `{}`},
		{name: "B2 a fallback key", as: B("B2"), path: up, body: `{"device_keys":` + deviceKeys(ben, "B2") +
			`,"fallback_keys":{"signed_curve25519:FB2":` + fallback(ben, "B2", "fb2") + `}}`},
		{name: "B3 device keys only", as: B("B3"), path: up, body: `{"device_keys":` + deviceKeys(ben, "B3") + `}`},
		{name: "B4 one one-time key", as: B("B4"), path: up, body: `{"one_time_keys":{"signed_curve25519:X1":` + otk(ben, "B4", "x1") + `}}`},
		{name: "B5 a one-time key and a fallback key", as: B("B5"), path: up, body: `{"one_time_keys":{"signed_curve25519:Y1":` + otk(ben, "B5", "y1") +
			`},"fallback_keys":{"signed_curve25519:FB5":` + fallback(ben, "B5", "fb5") + `}}`},
		{name: "B5 the same fallback key again", as: B("B5"), path: up, body: `{"fallback_keys":{"signed_curve25519:FB5":` + fallback(ben, "B5", "fb5") + `}}`},
		{name: "an upload of a key object without signatures", as: B("B1"), path: up, body: `{"one_time_keys":{"signed_curve25519:E2":{"key":"k-E2"}}}`},
		{name: "an upload of signatures that are a list", as: B("B1"), path: up, body: `{"one_time_keys":{"signed_curve25519:E3":{"key":"k-E3","signatures":[]}}}`},
		{name: "an upload of device keys of another device", as: B("B1"), path: up, body: `{"device_keys":` + deviceKeys(ben, "B2") + `}`,
			intended: "errcode", adjust: badRequest("M_INVALID_PARAM")},
		{name: "an upload that is not JSON", as: B("B1"), path: up, body: `{"one_time_keys":`},

		// Queries.
		{name: "query ben, all devices", as: A, path: query, body: `{"device_keys":{"` + uid(ben) + `":[]}}`,
			intended: "no-cross-signing", adjust: noCrossSigning},
		{name: "query ben B1 and a ghost, cat, an unknown user, an unreachable server", as: A, path: query,
			body:     `{"device_keys":{"` + uid(ben) + `":["B1","GHOST"],"` + uid(cat) + `":[],"@nobody` + s + `:localhost":[],"@eve:unreachable.test":[]}}`,
			intended: "no-cross-signing", adjust: noCrossSigning},
		{name: "query, device_keys not an object", as: A, path: query, body: `{"device_keys":[]}`},

		// Claims until exhaustion.
		{name: "claim every ben device", as: A, path: claim, body: everyBenDevice},
		{name: "claim every ben device again", as: A, path: claim, body: everyBenDevice},
		{name: "claim every ben device a third time", as: A, path: claim + "?timeout=5000", body: everyBenDevice},
		{name: "claim B1's last key", as: A, path: claim, body: claimOf(ben, "B1")},
		{name: "claim B1 exhausted, B4 exhausted", as: A, path: claim, body: claimOf(ben, "B1", "B4")},
		{name: "claim devices without keys only", as: A, path: claim, body: claimOf(ben, "B3", "GHOST")},
		{name: "claim an unknown user, a keyless user, an empty device map", as: A, path: claim,
			body: `{"one_time_keys":{"@nobody` + s + `:localhost":{"X":"signed_curve25519"},"` + uid(cat) + `":{"C1":"signed_curve25519"},"` + uid(amy) + `":{}}}`},
		{name: "claim a user of an unreachable server beside a local one", as: A, path: claim,
			body: `{"one_time_keys":{"@eve:unreachable.test":{"E1":"signed_curve25519"},"` + uid(ben) + `":{"B2":"signed_curve25519"}},"timeout":3000}`},
		{name: "claim an empty request", as: A, path: claim, body: `{"one_time_keys":{}}`},
		{name: "claim with a body timeout written 1000.0", as: A, path: claim, body: `{"one_time_keys":{"` + uid(ben) + `":{"B2":"signed_curve25519"}},"timeout":1000.0}`},
		{name: "claim with a body timeout written 1e3", as: A, path: claim, body: `{"one_time_keys":{"` + uid(ben) + `":{"B2":"signed_curve25519"}},"timeout":1e3}`},
		{name: "claim another algorithm", as: A, path: claim, body: `{"one_time_keys":{"` + uid(ben) + `":{"B2":"curve25519","B1":"signed_curve25519"}}}`},
		{name: "B5 replaces its fallback key", as: B("B5"), path: up, body: `{"fallback_keys":{"signed_curve25519:FB5b":` + fallback(ben, "B5", "fb5b") + `}}`},
		{name: "claim B5's new fallback key", as: A, path: claim, body: claimOf(ben, "B5")},

		// The re-uploaded claimed key.
		{name: "B6 one one-time key", as: B("B6"), path: up, body: `{"one_time_keys":{"signed_curve25519:Z1":` + otk(ben, "B6", "z1") + `}}`},
		{name: "claim B6's key", as: A, path: claim, body: claimOf(ben, "B6")},
		{name: "B6 uploads the claimed key again", as: B("B6"), path: up, body: `{"one_time_keys":{"signed_curve25519:Z1":` + otk(ben, "B6", "z1") + `}}`,
			intended: "reuploaded-claimed-key", adjust: counts(0)},
		{name: "claim B6 after the re-upload", as: A, path: claim, body: claimOf(ben, "B6"),
			intended: "reuploaded-claimed-key", adjust: func(a diffAnswer) diffAnswer {
				b := deepCopyJSON(a.body).(map[string]any)
				delete(b["one_time_keys"].(map[string]any), uid(ben))
				return diffAnswer{status: a.status, body: b}
			}},

		// Requests keyclaim refuses and Synapse reads as best it can.
		{name: "a negative timeout in the body", as: A, path: claim, body: `{"one_time_keys":{},"timeout":-1}`,
			intended: "stricter-validation", adjust: badRequest("M_INVALID_PARAM")},
		{name: "duplicate object keys", as: A, path: claim, body: `{"one_time_keys":{"` + uid(ben) + `":{"B2":"signed_curve25519","B2":"signed_curve25519"}}}`,
			intended: "stricter-validation", adjust: badRequest("M_BAD_JSON")},
		{name: "an empty algorithm", as: A, path: claim, body: `{"one_time_keys":{"` + uid(ben) + `":{"B2":""}}}`,
			intended: "stricter-validation", adjust: badRequest("M_INVALID_PARAM")},
		{name: "an empty device ID", as: A, path: claim, body: `{"one_time_keys":{"` + uid(ben) + `":{"":"signed_curve25519"}}}`,
			intended: "stricter-validation", adjust: badRequest("M_INVALID_PARAM")},
		{name: "a timeout that is a string", as: A, path: claim, body: `{"one_time_keys":{},"timeout":"10"}`,
			intended: "stricter-validation", adjust: badRequest("M_INVALID_PARAM")},

		// Errors both give.
		{name: "claim without a token", path: claim, body: claimOf(ben, "B2")},
		{name: "claim that is not JSON", as: A, path: claim, body: `{`},
		{name: "claim of a body that is a list", as: A, path: claim, body: `[]`},
		{name: "the final counts of B1", as: B("B1"), path: up, body: `{}`},
		{name: "the final query", as: A, path: query, body: `{"device_keys":{"` + uid(ben) + `":[],"` + uid(amy) + `":[]}}`,
			intended: "no-cross-signing", adjust: noCrossSigning},
	}

	for i, st := range steps {
		if st.intended != "" && intendedDifferences[st.intended] == "" {
			t.Fatalf("step %q names an unknown intended difference %q", st.name, st.intended)
		}
		answers := make([]diffAnswer, len(targets))
		for j, d := range targets {
			answers[j] = normalise(t, d.name, d.send(t, st.as, st.path, st.body))
		}
		synA := answers[0]
		want := synA
		if st.adjust != nil {
			want = st.adjust(synA)
			if reflect.DeepEqual(want, synA) {
				t.Errorf("step %d %q: Synapse no longer differs as %q says; remove it from the step", i, st.name, st.intended)
			}
		}
		for j, d := range targets[1:] {
			got := answers[j+1]
			w := want
			if d.name == "msc4072" && strings.HasPrefix(st.path, claim) && w.status == http.StatusOK {
				w = diffAnswer{status: w.status, body: completed(w.body, st.body)}
			}
			if got.status != w.status || !reflect.DeepEqual(got.body, w.body) {
				what := "Synapse plus {} for every requested device"
				if d.name == "legacy" {
					what = "Synapse"
				}
				if st.intended != "" {
					what += fmt.Sprintf(", with the intended difference %q", st.intended)
				}
				t.Errorf("step %d %q: %s mode must answer as %s: %s\n keyclaim %d %s\n want     %d %s\n synapse  %d %s",
					i, st.name, d.name, what, firstDiff(got.body, w.body, ""), got.status, compact(got.body), w.status, compact(w.body), synA.status, synA.raw)
			}
		}
	}
}
