package federation

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/keyclaim/keyclaim/core"
)

// KeyServerPath is the path of the key server endpoint (server-server API, "Publishing Keys").
const KeyServerPath = "/_matrix/key/v2/server"

// DefaultKeyValidity is how long a key server response is valid (its valid_until_ts): a day,
// as Synapse publishes. keys_server.yaml asks for at least an hour.
const DefaultKeyValidity = 24 * time.Hour

// MaxKeyValidity is the longest a fetched key is trusted, whatever its valid_until_ts says:
// keys_server.yaml, "Servers MUST use the lesser of this field and 7 days into the future".
const MaxKeyValidity = 7 * 24 * time.Hour

// KeyServerResponse returns the signed body of GET /_matrix/key/v2/server (keys_server.yaml)
// for this key, valid from now for validity: server_name, verify_keys with this key,
// old_verify_keys (empty: keyclaim has one key per server), valid_until_ts and signatures, as
// canonical JSON.
func (k *SigningKey) KeyServerResponse(now time.Time, validity time.Duration) ([]byte, error) {
	if validity <= 0 {
		return nil, fmt.Errorf("key server response: validity %s is not positive", validity)
	}
	v := jsonObject(
		core.Member{Key: "old_verify_keys", Value: jsonObject()},
		core.Member{Key: "server_name", Value: jsonString(string(k.serverName))},
		core.Member{Key: "valid_until_ts", Value: jsonInt(now.Add(validity).UnixMilli())},
		core.Member{Key: "verify_keys", Value: jsonObject(core.Member{
			Key:   string(k.id),
			Value: jsonObject(core.Member{Key: "key", Value: jsonString(base64.RawStdEncoding.EncodeToString(k.PublicKey()))}),
		})},
	)
	if err := k.signValue(&v, k.serverName); err != nil {
		return nil, err
	}
	return v.AppendJSON(nil), nil
}

// KeyServerHandler returns an http.Handler for GET /_matrix/key/v2/server that answers
// [SigningKey.KeyServerResponse] with the given validity (0 means [DefaultKeyValidity]). now is
// the clock (nil means time.Now). The signed body is reused until half its validity has passed,
// as keys_server.yaml asks notaries to do. Other methods get 405 M_UNRECOGNIZED.
func KeyServerHandler(key *SigningKey, validity time.Duration, now func() time.Time) http.Handler {
	if validity <= 0 {
		validity = DefaultKeyValidity
	}
	if now == nil {
		now = time.Now
	}
	return &keyServerHandler{key: key, validity: validity, now: now}
}

type keyServerHandler struct {
	key      *SigningKey
	validity time.Duration
	now      func() time.Time

	mu      sync.Mutex
	body    []byte
	renewAt time.Time
}

// ServeHTTP answers the key server request.
func (h *keyServerHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeJSON(w, http.StatusMethodNotAllowed, []byte(`{"errcode":"M_UNRECOGNIZED","error":"unrecognized request: method not allowed on this endpoint"}`))
		return
	}
	body, err := h.current()
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, []byte(`{"errcode":"M_UNKNOWN","error":"internal error while signing the key server response"}`))
		return
	}
	writeJSON(w, http.StatusOK, body)
}

func (h *keyServerHandler) current() ([]byte, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	now := h.now()
	if h.body != nil && now.Before(h.renewAt) {
		return h.body, nil
	}
	body, err := h.key.KeyServerResponse(now, h.validity)
	if err != nil {
		return nil, err
	}
	h.body, h.renewAt = body, now.Add(h.validity/2)
	return body, nil
}

func writeJSON(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// ServerKeys are the verify keys a server published at /_matrix/key/v2/server, after checking.
type ServerKeys struct {
	ServerName core.ServerName
	// VerifyKeys are the ed25519 keys valid for signing requests (verify_keys). Keys of other
	// algorithms and old_verify_keys, which are valid for events only, are left out.
	VerifyKeys map[core.KeyID]ed25519.PublicKey
	// ValidUntil is valid_until_ts: the keys must not be used after it.
	ValidUntil time.Time
}

// ErrBadKeyResponse is wrapped by every error of [ParseServerKeys].
var ErrBadKeyResponse = errors.New("bad key server response")

// ParseServerKeys reads a GET /_matrix/key/v2/server answer of server and checks it: a JSON
// object without duplicate keys, server_name equal to server, verify_keys whose ed25519 keys
// are valid unpadded base64 of 32 bytes, an integer valid_until_ts, and self-signatures: at
// least one signature by server with a key of verify_keys, and every such signature valid.
// Signatures by keys not in verify_keys (old keys, notaries) are ignored. Errors wrap
// [ErrBadKeyResponse].
func ParseServerKeys(body []byte, server core.ServerName) (*ServerKeys, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrBadKeyResponse, fmt.Sprintf(format, args...))
	}
	v, err := core.ParseValue(body)
	if err != nil {
		return nil, bad("%v", err)
	}
	if v.Kind != core.KindObject {
		return nil, bad("not a JSON object")
	}
	name, ok := v.Get("server_name")
	if !ok || name.Kind != core.KindString {
		return nil, bad("server_name is missing or not a string")
	}
	if name.Str != string(server) {
		return nil, bad("server_name is %q", name.Str)
	}
	until, ok := v.Get("valid_until_ts")
	if !ok || until.Kind != core.KindNumber {
		return nil, bad("valid_until_ts is missing or not a number")
	}
	ms, err := strconv.ParseInt(until.Str, 10, 64)
	if err != nil {
		return nil, bad("valid_until_ts %s is not an integer", until.Str)
	}
	vk, ok := v.Get("verify_keys")
	if !ok || vk.Kind != core.KindObject {
		return nil, bad("verify_keys is missing or not an object")
	}
	keys := &ServerKeys{ServerName: server, VerifyKeys: map[core.KeyID]ed25519.PublicKey{}, ValidUntil: time.UnixMilli(ms)}
	for _, m := range vk.Members {
		if !strings.HasPrefix(m.Key, AlgorithmEd25519+":") {
			continue
		}
		k, ok := m.Value.Get("key")
		if !ok || k.Kind != core.KindString {
			return nil, bad("verify_keys[%q].key is missing or not a string", m.Key)
		}
		raw, err := decodeBase64(k.Str)
		if err != nil || len(raw) != ed25519.PublicKeySize {
			return nil, bad("verify_keys[%q].key is not a base64 ed25519 public key", m.Key)
		}
		keys.VerifyKeys[core.KeyID(m.Key)] = ed25519.PublicKey(raw)
	}
	if len(keys.VerifyKeys) == 0 {
		return nil, bad("verify_keys has no ed25519 key")
	}
	signed := 0
	msg := signedBytes(&v)
	if sigs, ok := v.Get("signatures"); ok {
		if own, ok := sigs.Get(string(server)); ok {
			for _, m := range own.Members {
				key, known := keys.VerifyKeys[core.KeyID(m.Key)]
				if !known {
					continue
				}
				if m.Value.Kind != core.KindString {
					return nil, bad("signature by %s is not a string", m.Key)
				}
				if err := verifySignature(msg, m.Value.Str, key); err != nil {
					return nil, bad("self-signature by %s: %v", m.Key, err)
				}
				signed++
			}
		}
	}
	if signed == 0 {
		return nil, bad("not signed by %s with any of its verify_keys", server)
	}
	return keys, nil
}
