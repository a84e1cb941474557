package hostserver_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyclaim/keyclaim/hostserver"
	"github.com/keyclaim/keyclaim/hostserver/store"
)

// A very large room (BRIEF section 2: "tens of thousands of devices at once"): one remote user
// with several thousand devices, each with one realistic signed one-time key and device keys,
// claimed and queried in one request through hs1. hs2 is a real keyclaim server (its store an
// in-memory stand-in, see memStore); the answers it sends hs1 are larger than the
// --federation-max-response-bytes floor (1 MiB), which alone made hs1 refuse them after hs2 had
// handed the keys out. The bound on a remote answer grows with the devices asked of that
// server, so every key arrives.

const (
	bigUser    = "@big:" + hs2Name
	bigDevices = 6000
)

// bigDevice is one device of bigUser as a client would upload it.
type bigDevice struct {
	id         string
	keyID      string // signed_curve25519:...
	otk        string // the signed one-time key object (canonical JSON, as stored)
	deviceKeys string // the device_keys object, as uploaded
}

// unpadded is the unpadded standard base64 of Matrix keys and signatures.
var unpadded = base64.RawStdEncoding

// makeBigDevices returns n devices of bigUser with real ed25519 keys and signatures, derived
// from the device number (deterministic): device IDs of 10 capital letters as Element makes
// them, key IDs as vodozemac makes them, a curve25519-sized one-time key signed over its
// canonical JSON, and device keys for the two usual algorithms, self-signed.
func makeBigDevices(n int) []bigDevice {
	out := make([]bigDevice, n)
	for i := range out {
		seed := sha256.Sum256(binary.BigEndian.AppendUint32([]byte("keyclaim big device "), uint32(i)))
		priv := ed25519.NewKeyFromSeed(seed[:])
		var id [10]byte
		for j := range id {
			id[j] = 'A' + seed[j]%26
		}
		d := bigDevice{id: string(id[:])}
		otkPub := sha256.Sum256(seed[:]) // 32 bytes, the size of a curve25519 public key
		var kid [8]byte
		binary.BigEndian.PutUint64(kid[:], uint64(i+1))
		d.keyID = "signed_curve25519:" + unpadded.EncodeToString(kid[:])
		unsignedKey := `{"key":"` + unpadded.EncodeToString(otkPub[:]) + `"}`
		sig := unpadded.EncodeToString(ed25519.Sign(priv, []byte(unsignedKey)))
		d.otk = `{"key":"` + unpadded.EncodeToString(otkPub[:]) + `","signatures":{"` + bigUser + `":{"ed25519:` + d.id + `":"` + sig + `"}}}`
		curve := sha256.Sum256(otkPub[:])
		unsignedDK := `{"algorithms":["m.olm.v1.curve25519-aes-sha2","m.megolm.v1.aes-sha2"],"device_id":"` + d.id + `",` +
			`"keys":{"curve25519:` + d.id + `":"` + unpadded.EncodeToString(curve[:]) + `","ed25519:` + d.id + `":"` + unpadded.EncodeToString(priv.Public().(ed25519.PublicKey)) + `"},` +
			`"user_id":"` + bigUser + `"}`
		dkSig := unpadded.EncodeToString(ed25519.Sign(priv, []byte(unsignedDK)))
		d.deviceKeys = strings.TrimSuffix(unsignedDK, `,"user_id":"`+bigUser+`"}`) +
			`,"signatures":{"` + bigUser + `":{"ed25519:` + d.id + `":"` + dkSig + `"}},"user_id":"` + bigUser + `"}`
		out[i] = d
	}
	return out
}

// startBigPair starts hs1.test and hs2.test federating with each other through the real
// federation client, hs2 holding the devices of bigUser in a [memStore].
func startBigPair(t *testing.T, devices []bigDevice) (hs1, hs2 *testServer) {
	t.Helper()
	st := newMemStore()
	for _, d := range devices {
		st.deviceKeys[bigUser][d.id] = json.RawMessage(d.deviceKeys)
		st.oneTimeKeys[store.Want{User: bigUser, Device: d.id, Algorithm: "signed_curve25519"}] = []store.Claimed{
			{User: bigUser, Device: d.id, KeyID: d.keyID, Key: json.RawMessage(d.otk)},
		}
	}
	return startPairWith(t, sqliteBackend, func(*hostserver.Config) {}, func(cfg *hostserver.Config) { cfg.Store = st })
}

// memStore is an in-memory store.Store of device keys and one-time keys, enough for hs2 here:
// what this test is about is the size of what crosses federation, not the store, whose own tests
// claim thousands of devices; filling SQLite or PostgreSQL with 6,000 devices one upload at a
// time takes 3 to 6 seconds, most of this test's time.
type memStore struct {
	mu          sync.Mutex
	deviceKeys  map[string]map[string]json.RawMessage // user → device → device keys
	oneTimeKeys map[store.Want][]store.Claimed        // in claim order
}

func newMemStore() *memStore {
	return &memStore{deviceKeys: map[string]map[string]json.RawMessage{bigUser: {}}, oneTimeKeys: map[store.Want][]store.Claimed{}}
}

func (m *memStore) Upload(_ context.Context, user, device string, up store.Upload) (store.Counts, error) {
	m.mu.Lock()
	if len(up.DeviceKeys) > 0 {
		if m.deviceKeys[user] == nil {
			m.deviceKeys[user] = map[string]json.RawMessage{}
		}
		m.deviceKeys[user][device] = up.DeviceKeys
	}
	for _, id := range slices.Sorted(maps.Keys(up.OneTimeKeys)) {
		alg, _, _ := strings.Cut(id, ":")
		w := store.Want{User: user, Device: device, Algorithm: alg}
		m.oneTimeKeys[w] = append(m.oneTimeKeys[w], store.Claimed{User: user, Device: device, KeyID: id, Key: up.OneTimeKeys[id]})
	}
	m.mu.Unlock()
	return m.Counts(context.Background(), user, device)
}

func (m *memStore) Counts(_ context.Context, user, device string) (store.Counts, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	counts := store.Counts{store.SignedCurve25519: 0}
	for w, keys := range m.oneTimeKeys {
		if w.User == user && w.Device == device && len(keys) > 0 {
			counts[w.Algorithm] = len(keys)
		}
	}
	return counts, nil
}

func (m *memStore) QueryDevices(_ context.Context, req map[string][]string) (map[string]map[string]json.RawMessage, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]map[string]json.RawMessage, len(req))
	for user, devices := range req {
		found := map[string]json.RawMessage{}
		for d, keys := range m.deviceKeys[user] {
			if len(devices) == 0 || slices.Contains(devices, d) {
				found[d] = keys
			}
		}
		out[user] = found
	}
	return out, nil
}

func (m *memStore) Claim(_ context.Context, wants []store.Want) ([]store.Claimed, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []store.Claimed
	for _, w := range wants {
		if keys := m.oneTimeKeys[w]; len(keys) > 0 {
			out = append(out, keys[0])
			m.oneTimeKeys[w] = keys[1:]
		}
	}
	return out, nil
}

func (m *memStore) Close() error { return nil }

func TestFederationClaimThousandsOfDevices(t *testing.T) {
	start := time.Now()
	devices := makeBigDevices(bigDevices)
	t.Logf("made %d devices in %s", len(devices), time.Since(start).Round(time.Millisecond))
	hs1, _ := startBigPair(t, devices)
	ids := make([]string, len(devices))
	for i, d := range devices {
		ids[i] = d.id
	}

	t.Run("claim", func(t *testing.T) {
		req := claimRequest{bigUser: devicesOf(ids...)}
		start := time.Now()
		got := hs1.ok(claimPath, aliceToken, req.body(10000))
		took := time.Since(start)
		checkCompleteAnswer(t, got, req, "msc4072", nil)
		var want bytes.Buffer
		want.WriteString(`{"failures":{},"one_time_keys":{"` + bigUser + `":{`)
		for i, d := range sortedByID(devices) {
			if i > 0 {
				want.WriteByte(',')
			}
			want.WriteString(`"` + d.id + `":{"` + d.keyID + `":` + d.otk + `}`)
		}
		want.WriteString(`}}}`)
		if got != want.String() {
			t.Fatalf("the claim of %d devices did not bring every key (%d bytes, want %d): %.400s", len(devices), len(got), want.Len(), got)
		}
		t.Logf("claimed %d devices across federation in %s; answer %d bytes, %d per device",
			len(devices), took.Round(time.Millisecond), len(got), len(got)/len(devices))
		if len(got) <= 1<<20 {
			t.Errorf("the answer (%d bytes) does not exceed the 1 MiB floor: the test proves nothing", len(got))
		}
		// hs2 handed every key out once: a second claim finds nothing (and no failure).
		again := hs1.ok(claimPath, aliceToken, req.body(10000))
		checkCompleteAnswer(t, again, req, "msc4072", nil)
		if strings.Contains(again, "signed_curve25519:") {
			t.Errorf("a second claim got keys again: %.300s", again)
		}
	})

	t.Run("query", func(t *testing.T) {
		var want bytes.Buffer
		want.WriteString(`{"device_keys":{"` + bigUser + `":{`)
		for i, d := range sortedByID(devices) {
			if i > 0 {
				want.WriteByte(',')
			}
			want.WriteString(`"` + d.id + `":` + d.deviceKeys)
		}
		want.WriteString(`}},"failures":{}}`)
		// All devices (an empty list): how many there are is not known before the answer.
		got := hs1.ok(queryPath, aliceToken, `{"device_keys":{"`+bigUser+`":[]},"timeout":10000}`)
		if got != want.String() {
			t.Fatalf("the query of all devices did not bring every device (%d bytes, want %d): %.400s", len(got), want.Len(), got)
		}
		t.Logf("queried %d devices across federation; answer %d bytes, %d per device", len(devices), len(got), len(got)/len(devices))
		// Every device by name.
		names, _ := json.Marshal(map[string]any{"device_keys": map[string][]string{bigUser: ids}, "timeout": 10000})
		got = hs1.ok(queryPath, aliceToken, string(names))
		if got != want.String() {
			t.Fatalf("the query of %d named devices did not bring every device (%d bytes): %.400s", len(devices), len(got), got)
		}
	})
}

// sortedByID returns the devices sorted by device ID, the order of the answers.
func sortedByID(devices []bigDevice) []bigDevice {
	out := slices.Clone(devices)
	slices.SortFunc(out, func(a, b bigDevice) int { return strings.Compare(a.id, b.id) })
	return out
}
