//go:build compat

package compat

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
)

// The stand-in is a small HTTP server on loopback in front of dist/keyclaim-server. It forwards
// every request unchanged (the User-Agent too, which the server's compatibility policy reads),
// except for what shapes the scenario's devices, and answers two control calls of the harnesses:
//
//   - /keys/upload of DEVKEYSONLY loses its one-time and fallback keys, of EXHAUSTED its fallback
//     key, of FALLBACKONLY its one-time keys: each device is left with exactly the keys its name
//     says, whatever the library uploads;
//   - /keys/query answers that list bob gain a device UNKNOWN with valid self-signed device keys
//     the server has never seen: a device deleted between a client's query and its claim (a
//     fake, named so: keyclaim has no device deletion);
//   - POST /_compat/ready: all uploads are done; the stand-in claims every one-time key of
//     EXHAUSTED (as another user would) and records each bob device's one-time key count;
//   - POST /_compat/claimed: the claiming client has claimed; the counts are recorded again, so
//     that a one-time key used up without a session shows as a count that went down;
//   - PUT /sendToDevice and PUT /rooms/{room}/send, which keyclaim does not serve, are answered
//     here for a harness that drives a library's whole send path (nio's room_send): to-device
//     messages are queued for GET /_compat/to_device/{user}/{device}, room events acknowledged.
//
// No /sync: each harness hands the ciphertext its library produced (directly, or fetched from
// the queue) to the receiving device's machine in the same process.
type standin struct {
	t        *testing.T
	base     string // the stand-in's own URL, which the harnesses use
	upstream *url.URL
	tokens   map[string]who // access token -> device
	unknown  json.RawMessage

	mu      sync.Mutex
	before  map[string]int // bob's device -> one-time key count at /_compat/ready
	after   map[string]int // ... at /_compat/claimed
	drained int            // one-time keys of EXHAUSTED claimed at /_compat/ready
	claimUA string         // the User-Agent of the claiming client's first claim
	claims  []string       // the claims, answers and sends the stand-in saw, one line each
	// to-device messages sent through the stand-in, per "user|device", as sync events
	toDevice map[string][]json.RawMessage
	notes    []string // anything unexpected the stand-in saw
}

type who struct {
	UserID   string `json:"user_id"`
	DeviceID string `json:"device_id"`
}

// strip lists the upload fields the stand-in removes, per device.
var strip = map[string][]string{
	"DEVKEYSONLY":  {"one_time_keys", "fallback_keys", "org.matrix.msc2732.fallback_keys"},
	"EXHAUSTED":    {"fallback_keys", "org.matrix.msc2732.fallback_keys"},
	"FALLBACKONLY": {"one_time_keys"},
}

func newStandin(t *testing.T, upstream string, tokens map[string]who) *standin {
	u, err := url.Parse(upstream)
	if err != nil {
		t.Fatal(err)
	}
	s := &standin{t: t, upstream: u, tokens: tokens, unknown: unknownDevice(t), toDevice: map[string][]json.RawMessage{}}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(u)
			r.Out.Host = r.In.Host
			// Uncompressed answers, so that ModifyResponse can read them.
			r.Out.Header.Del("Accept-Encoding")
		},
		ModifyResponse: s.modifyResponse,
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /_compat/ready", func(w http.ResponseWriter, r *http.Request) {
		s.drain()
		counts := s.counts()
		s.mu.Lock()
		s.before = counts
		s.mu.Unlock()
		writeJSON(w, map[string]any{"counts": counts})
	})
	mux.HandleFunc("POST /_compat/claimed", func(w http.ResponseWriter, r *http.Request) {
		counts := s.counts()
		s.mu.Lock()
		s.after = counts
		s.mu.Unlock()
		writeJSON(w, map[string]any{"counts": counts})
	})
	// What a homeserver would do with a client's to-device and room messages, for the harnesses
	// that drive a library's whole send path (nio's room_send): queued to-device messages are
	// fetched by the receiving device's machine, room events are only acknowledged.
	mux.HandleFunc("PUT /_matrix/client/{version}/sendToDevice/{type}/{txn}", func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Messages map[string]map[string]json.RawMessage `json:"messages"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			http.Error(w, `{"errcode":"M_NOT_JSON","error":"not JSON"}`, http.StatusBadRequest)
			return
		}
		sender := s.tokens[strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")].UserID
		s.mu.Lock()
		for user, devs := range body.Messages {
			for dev, content := range devs {
				ev, _ := json.Marshal(map[string]any{"type": r.PathValue("type"), "sender": sender, "content": content})
				s.toDevice[user+"|"+dev] = append(s.toDevice[user+"|"+dev], ev)
			}
		}
		s.mu.Unlock()
		s.note(fmt.Sprintf("sendToDevice %s by %s to %d users", r.PathValue("type"), s.device(r), len(body.Messages)))
		writeJSON(w, map[string]any{})
	})
	mux.HandleFunc("PUT /_matrix/client/{version}/rooms/{room}/send/{type}/{txn}", func(w http.ResponseWriter, r *http.Request) {
		s.note(fmt.Sprintf("room event %s by %s in %s", r.PathValue("type"), s.device(r), r.PathValue("room")))
		writeJSON(w, map[string]any{"event_id": "$compat-" + r.PathValue("txn")})
	})
	mux.HandleFunc("GET /_compat/to_device/{user}/{device}", func(w http.ResponseWriter, r *http.Request) {
		key := r.PathValue("user") + "|" + r.PathValue("device")
		s.mu.Lock()
		events := s.toDevice[key]
		delete(s.toDevice, key)
		s.mu.Unlock()
		if events == nil {
			events = []json.RawMessage{}
		}
		writeJSON(w, map[string]any{"events": events})
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/keys/upload") {
			s.stripUpload(r)
		}
		if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/keys/claim") {
			body, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(body))
			r.ContentLength = int64(len(body))
			s.note(fmt.Sprintf("claim by %s (User-Agent %q): asked %s", s.device(r), r.UserAgent(), compactJSON(body)))
			s.mu.Lock()
			if s.claimUA == "" && s.device(r) == "ALICE" {
				s.claimUA = r.UserAgent()
			}
			s.mu.Unlock()
		}
		proxy.ServeHTTP(w, r)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	s.base = srv.URL
	return s
}

func (s *standin) note(line string) {
	s.mu.Lock()
	s.claims = append(s.claims, line)
	s.mu.Unlock()
}

// device is "DEVICE" of the request's access token, or "?".
func (s *standin) device(r *http.Request) string {
	tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	if w, ok := s.tokens[tok]; ok {
		return w.DeviceID
	}
	return "?"
}

func (s *standin) stripUpload(r *http.Request) {
	fields := strip[s.device(r)]
	if len(fields) == 0 {
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		s.t.Errorf("stand-in: read upload: %v", err)
		return
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(body, &m); err == nil {
		for _, f := range fields {
			delete(m, f)
		}
		body, _ = json.Marshal(m) // device_keys stay byte for byte (RawMessage)
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	r.Header.Del("Content-Length")
}

func (s *standin) modifyResponse(resp *http.Response) error {
	path := resp.Request.URL.Path
	isQuery := strings.HasSuffix(path, "/keys/query")
	isClaim := strings.HasSuffix(path, "/keys/claim")
	if resp.StatusCode != http.StatusOK || !(isQuery || isClaim) {
		return nil
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	if isClaim {
		s.note("  answered " + compactJSON(body))
	}
	if isQuery {
		var m map[string]json.RawMessage
		var dk map[string]map[string]json.RawMessage
		if json.Unmarshal(body, &m) == nil && json.Unmarshal(m["device_keys"], &dk) == nil {
			if devs, ok := dk[bobUser]; ok {
				devs["UNKNOWN"] = s.unknown
				raw, _ := json.Marshal(dk)
				m["device_keys"] = raw
				body, _ = json.Marshal(m)
			}
		}
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	resp.Header.Set("Content-Length", fmt.Sprint(len(body)))
	return nil
}

// drain claims every one-time key of EXHAUSTED (its fallback key was never uploaded).
func (s *standin) drain() {
	for i := 0; i < 1000; i++ {
		var ans struct {
			OneTimeKeys map[string]map[string]map[string]json.RawMessage `json:"one_time_keys"`
		}
		s.call(drainToken, "claim", map[string]any{"one_time_keys": map[string]any{bobUser: map[string]string{"EXHAUSTED": "signed_curve25519"}}}, &ans)
		if len(ans.OneTimeKeys[bobUser]["EXHAUSTED"]) == 0 {
			s.mu.Lock()
			s.drained = i
			s.mu.Unlock()
			return
		}
	}
	s.t.Errorf("stand-in: EXHAUSTED still had one-time keys after 1000 claims")
}

// counts is each of bob's devices' unclaimed one-time key count, from an empty /keys/upload.
func (s *standin) counts() map[string]int {
	out := map[string]int{}
	for tok, w := range s.tokens {
		if w.UserID != bobUser {
			continue
		}
		var ans struct {
			Counts map[string]int `json:"one_time_key_counts"`
		}
		s.call(tok, "upload", map[string]any{}, &ans)
		out[w.DeviceID] = ans.Counts["signed_curve25519"]
	}
	return out
}

func (s *standin) call(token, endpoint string, body, into any) {
	raw, _ := json.Marshal(body)
	req, _ := http.NewRequest(http.MethodPost, s.upstream.String()+"/_matrix/client/v3/keys/"+endpoint, bytes.NewReader(raw))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Errorf("stand-in: /keys/%s: %v", endpoint, err)
		return
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		s.t.Errorf("stand-in: /keys/%s answered %d: %s", endpoint, resp.StatusCode, out)
		return
	}
	if err := json.Unmarshal(out, into); err != nil {
		s.t.Errorf("stand-in: /keys/%s: %v", endpoint, err)
	}
}

// unknownDevice is device keys for bob's device UNKNOWN, self-signed as a real client signs
// them (canonical JSON: sorted keys, no spaces, which encoding/json gives for these maps).
func unknownDevice(t *testing.T) json.RawMessage {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	curve, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	b64 := base64.RawStdEncoding.EncodeToString
	dev := map[string]any{
		"algorithms": []string{"m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"},
		"device_id":  "UNKNOWN",
		"keys": map[string]string{
			"curve25519:UNKNOWN": b64(curve.PublicKey().Bytes()),
			"ed25519:UNKNOWN":    b64(pub),
		},
		"user_id": bobUser,
	}
	canonical, err := json.Marshal(dev)
	if err != nil {
		t.Fatal(err)
	}
	dev["signatures"] = map[string]any{bobUser: map[string]string{"ed25519:UNKNOWN": b64(ed25519.Sign(priv, canonical))}}
	raw, err := json.Marshal(dev)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func compactJSON(b []byte) string {
	var buf bytes.Buffer
	if json.Compact(&buf, b) != nil {
		return string(b)
	}
	s := buf.String()
	if len(s) > 600 {
		s = s[:600] + "..."
	}
	return s
}
