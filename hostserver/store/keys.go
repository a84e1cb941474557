package store

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"unicode/utf8"
)

// keyEntry is one uploaded one-time or fallback key, validated and compacted.
type keyEntry struct {
	keyID     string // "alg:name"
	algorithm string // "alg"
	value     []byte // the key value after json.Compact
}

// preparedUpload is an Upload after validation, in a deterministic order. Both backends store
// exactly this.
type preparedUpload struct {
	deviceKeys   []byte     // nil: nothing new; otherwise the bytes as uploaded
	oneTimeKeys  []keyEntry // sorted by key ID
	fallbackKeys []keyEntry // sorted by algorithm, at most one per algorithm
}

// empty reports whether the upload brings nothing new, so that it only asks for the counts.
func (p preparedUpload) empty() bool {
	return p.deviceKeys == nil && len(p.oneTimeKeys) == 0 && len(p.fallbackKeys) == 0
}

// oneTimeKeyIDs returns the key IDs of the uploaded one-time keys, in order.
func (p preparedUpload) oneTimeKeyIDs() []string {
	ids := make([]string, len(p.oneTimeKeys))
	for i, k := range p.oneTimeKeys {
		ids[i] = k.keyID
	}
	return ids
}

// prepareUpload validates an Upload and brings it into the form that is stored: key values
// compacted, keys sorted, device keys kept byte for byte. Errors wrap ErrInvalidKey. An upload
// the caller has Checked is not validated again: its values are taken as they are.
func prepareUpload(up Upload) (preparedUpload, error) {
	var p preparedUpload
	if dk := bytes.TrimSpace(up.DeviceKeys); len(dk) > 0 && !bytes.Equal(dk, []byte("null")) {
		if !up.Checked && (dk[0] != '{' || !json.Valid(dk)) {
			return preparedUpload{}, fmt.Errorf("%w: device_keys is not a JSON object", ErrInvalidKey)
		}
		// Byte for byte, including any surrounding whitespace the caller passed on.
		p.deviceKeys = bytes.Clone(up.DeviceKeys)
	}

	var err error
	if p.oneTimeKeys, err = prepareKeys("one-time", up.OneTimeKeys, up.Checked); err != nil {
		return preparedUpload{}, err
	}
	if p.fallbackKeys, err = prepareKeys("fallback", up.FallbackKeys, up.Checked); err != nil {
		return preparedUpload{}, err
	}
	sort.SliceStable(p.fallbackKeys, func(i, j int) bool {
		return p.fallbackKeys[i].algorithm < p.fallbackKeys[j].algorithm
	})
	for i := 1; i < len(p.fallbackKeys); i++ {
		if p.fallbackKeys[i].algorithm == p.fallbackKeys[i-1].algorithm {
			return preparedUpload{}, fmt.Errorf("%w: fallback keys %q and %q have the same algorithm %q (one per algorithm)",
				ErrInvalidKey, p.fallbackKeys[i-1].keyID, p.fallbackKeys[i].keyID, p.fallbackKeys[i].algorithm)
		}
	}
	return p, nil
}

// prepareKeys validates and compacts a key ID -> value map, sorted by key ID (byte order);
// checked keys (Upload.Checked) are taken as they are.
func prepareKeys(kind string, keys map[string]json.RawMessage, checked bool) ([]keyEntry, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	out := make([]keyEntry, 0, len(keys))
	for keyID, raw := range keys {
		if checked {
			alg, _, _ := strings.Cut(keyID, ":")
			out = append(out, keyEntry{keyID: keyID, algorithm: alg, value: raw})
			continue
		}
		alg, err := algorithmOf(keyID)
		if err != nil {
			return nil, fmt.Errorf("%s key: %w", kind, err)
		}
		value, err := compactKey(raw)
		if err != nil {
			return nil, fmt.Errorf("%w: %s key %q: %w", ErrInvalidKey, kind, keyID, err)
		}
		out = append(out, keyEntry{keyID: keyID, algorithm: alg, value: value})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].keyID < out[j].keyID })
	return out, nil
}

// algorithmOf returns the algorithm of a key ID "alg:name". Errors wrap ErrInvalidKey.
func algorithmOf(keyID string) (string, error) {
	alg, name, ok := strings.Cut(keyID, ":")
	if !ok || alg == "" || name == "" {
		return "", fmt.Errorf("%w: key ID %q is not of the form \"algorithm:name\"", ErrInvalidKey, keyID)
	}
	// A key ID that came from JSON is valid UTF-8; other bytes could not be stored exactly
	// (PostgreSQL refuses them, and the SQLite backend looks key IDs up through JSON).
	if !utf8.ValidString(keyID) {
		return "", fmt.Errorf("%w: key ID %q is not valid UTF-8", ErrInvalidKey, keyID)
	}
	return alg, nil
}

// compactKey returns a key value with insignificant whitespace removed. Two uploads of one key
// are the same key when these bytes are equal. The value must be a JSON string or object.
func compactKey(raw json.RawMessage) ([]byte, error) {
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return nil, fmt.Errorf("not valid JSON: %w", err)
	}
	b := buf.Bytes()
	if len(b) == 0 || (b[0] != '"' && b[0] != '{') {
		return nil, fmt.Errorf("not a JSON string or object")
	}
	return b, nil
}

// newOneTimeKeys decides which uploaded one-time keys are stored. existing holds the device's
// unclaimed one-time keys among the uploaded key IDs (key ID -> stored value) and claimed the
// uploaded key IDs that were already claimed from the device. A claimed key ID is skipped (it
// must never be handed out again: matrix-spec#1124), a re-upload of the same key is skipped
// (sameOneTimeKey: its signatures may differ; the stored one is kept), and a different key under
// an unclaimed key ID is an ErrKeyConflict for the whole upload.
func newOneTimeKeys(user, device string, keys []keyEntry, existing map[string][]byte, claimed map[string]bool) ([]keyEntry, error) {
	var fresh []keyEntry
	for _, k := range keys {
		if claimed[k.keyID] {
			continue
		}
		if old, ok := existing[k.keyID]; ok {
			if !sameOneTimeKey(old, k.value) {
				return nil, fmt.Errorf("%w: one-time key %q of device %q of user %q", ErrKeyConflict, k.keyID, device, user)
			}
			continue
		}
		fresh = append(fresh, k)
	}
	return fresh, nil
}

// sameOneTimeKey reports whether two values of one one-time key ID are the same key, as Synapse
// decides it (_one_time_keys_match): equal when either is a string, otherwise equal once their
// "signatures" are taken away, since a client may sign a key again (a new device signing key,
// another signature algorithm) and upload it again when it did not see the first answer. Values
// that are not JSON are the same only if byte for byte equal.
func sameOneTimeKey(a, b []byte) bool {
	if bytes.Equal(a, b) {
		return true
	}
	va, okA := decodeKey(a)
	vb, okB := decodeKey(b)
	if !okA || !okB {
		return false
	}
	ma, objA := va.(map[string]any)
	mb, objB := vb.(map[string]any)
	if objA && objB {
		delete(ma, "signatures")
		delete(mb, "signatures")
	}
	return reflect.DeepEqual(va, vb)
}

// decodeKey decodes a stored or uploaded key value, numbers as their literal text.
func decodeKey(data []byte) (any, bool) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil || dec.More() {
		return nil, false
	}
	return v, true
}

// dedupeWants drops repeated (user, device, algorithm) triples, keeping the first of each.
func dedupeWants(wants []Want) []Want {
	out, _ := dedupeWantsIndex(wants)
	return out
}

// dedupeWantsIndex drops repeated (user, device, algorithm) triples, keeping the first of each,
// and returns the position of each in the result.
func dedupeWantsIndex(wants []Want) ([]Want, map[Want]int) {
	index := make(map[Want]int, len(wants))
	var out []Want // nil until the first duplicate: wants itself is the answer without one
	for i, w := range wants {
		if _, dup := index[w]; dup {
			if out == nil {
				out = append(make([]Want, 0, len(wants)-1), wants[:i]...)
			}
			continue
		}
		if out == nil {
			index[w] = i
		} else {
			index[w] = len(out)
			out = append(out, w)
		}
	}
	if out == nil {
		return wants, index
	}
	return out, index
}

// newCounts returns counts that already hold signed_curve25519 = 0.
func newCounts() Counts {
	return Counts{SignedCurve25519: 0}
}
