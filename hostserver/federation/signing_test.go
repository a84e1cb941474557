package federation

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyclaim/keyclaim/core"
)

// The appendices' "Cryptographic Test Vectors": signing key, server name and key ID.
const (
	vectorSeed   = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1"
	vectorServer = "domain"
	vectorKeyID  = "ed25519:1"
)

func vectorKey(t *testing.T) *SigningKey {
	t.Helper()
	seed, err := decodeBase64(vectorSeed)
	if err != nil {
		t.Fatal(err)
	}
	k, err := NewSigningKey(vectorServer, "1", seed)
	if err != nil {
		t.Fatal(err)
	}
	if k.ID() != vectorKeyID {
		t.Fatalf("key ID %s, want %s", k.ID(), vectorKeyID)
	}
	return k
}

// TestSpecJSONSigningVectors signs the appendices' "JSON Signing" inputs and compares with
// the spec's expected signed JSON, copied verbatim (compared as canonical JSON).
func TestSpecJSONSigningVectors(t *testing.T) {
	key := vectorKey(t)
	vectors := []struct {
		name, input, want string
	}{
		{"empty object", `{}`, `{
    "signatures": {
        "domain": {
            "ed25519:1": "K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ"
        }
    }
}`},
		{"data values", `{
    "one": 1,
    "two": "Two"
}`, `{
    "one": 1,
    "signatures": {
        "domain": {
            "ed25519:1": "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw"
        }
    },
    "two": "Two"
}`},
	}
	for _, v := range vectors {
		t.Run(v.name, func(t *testing.T) {
			got, err := key.SignJSON([]byte(v.input))
			if err != nil {
				t.Fatal(err)
			}
			want, err := core.Canonical([]byte(v.want))
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != string(want) {
				t.Fatalf("signed:\n got %s\nwant %s", got, want)
			}
			if err := VerifyJSON([]byte(v.want), vectorServer, vectorKeyID, key.PublicKey()); err != nil {
				t.Fatalf("the spec's signed JSON does not verify: %v", err)
			}
		})
	}
}

func TestSignJSONKeepsSignaturesAndUnsigned(t *testing.T) {
	key := vectorKey(t)
	in := `{"a":"b","unsigned":{"age_ts":922834800000},"signatures":{"other.example":{"ed25519:x":"abc"}}}`
	got, err := key.SignJSON([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	// The signature covers {"a":"b"} only, so it is the signature of {"a":"b"}.
	plain, err := key.SignJSON([]byte(`{"a":"b"}`))
	if err != nil {
		t.Fatal(err)
	}
	sig := regexp.MustCompile(`"ed25519:1":"([^"]+)"`).FindStringSubmatch(string(plain))[1]
	want := `{"a":"b","signatures":{"domain":{"ed25519:1":"` + sig + `"},"other.example":{"ed25519:x":"abc"}},"unsigned":{"age_ts":922834800000}}`
	if string(got) != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	// unsigned is not covered: changing it keeps the signature valid.
	changed := strings.Replace(string(got), "922834800000", "1", 1)
	if err := VerifyJSON([]byte(changed), vectorServer, vectorKeyID, key.PublicKey()); err != nil {
		t.Fatalf("changing unsigned broke the signature: %v", err)
	}
}

func TestVerifyJSONFailures(t *testing.T) {
	key := vectorKey(t)
	other := testKey(t, "domain", "1")
	signed, err := key.SignJSON([]byte(`{"one":1,"two":"Two"}`))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		obj    string
		entity core.ServerName
		keyID  core.KeyID
		pub    ed25519.PublicKey
		want   error
	}{
		{"tampered", strings.Replace(string(signed), `"Two"`, `"Three"`, 1), vectorServer, vectorKeyID, key.PublicKey(), ErrSignatureInvalid},
		{"other key", string(signed), vectorServer, vectorKeyID, other.PublicKey(), ErrSignatureInvalid},
		{"other entity", string(signed), "elsewhere", vectorKeyID, key.PublicKey(), ErrSignatureMissing},
		{"other key ID", string(signed), vectorServer, "ed25519:2", key.PublicKey(), ErrSignatureMissing},
		{"unsigned", `{"one":1}`, vectorServer, vectorKeyID, key.PublicKey(), ErrSignatureMissing},
		{"not base64", `{"signatures":{"domain":{"ed25519:1":"!!!"}}}`, vectorServer, vectorKeyID, key.PublicKey(), ErrSignatureInvalid},
		{"short", `{"signatures":{"domain":{"ed25519:1":"AAAA"}}}`, vectorServer, vectorKeyID, key.PublicKey(), ErrSignatureInvalid},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := VerifyJSON([]byte(c.obj), c.entity, c.keyID, c.pub)
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
		})
	}
	// Padded base64 is accepted (appendices: implementations SHOULD accept both).
	padded := strings.Replace(string(signed), `Bw"`, `Bw=="`, 1)
	if err := VerifyJSON([]byte(padded), vectorServer, vectorKeyID, key.PublicKey()); err != nil {
		t.Fatalf("padded signature: %v", err)
	}
}

func TestLoadOrCreateSigningKey(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "dir", "signing.key")
	k1, err := LoadOrCreateSigningKey(path, "hs1.test")
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", st.Mode().Perm())
	}
	if st, err := os.Stat(filepath.Dir(path)); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("key directory: %v, mode %v, want 0700", err, st.Mode().Perm())
	}
	data, _ := os.ReadFile(path)
	if !regexp.MustCompile(`^ed25519 a_[a-zA-Z]{4} [A-Za-z0-9+/]{43}\n$`).Match(data) {
		t.Errorf("key file %q is not Synapse's format", data)
	}
	if !regexp.MustCompile(`^ed25519:a_[a-zA-Z]{4}$`).MatchString(string(k1.ID())) {
		t.Errorf("key ID %s", k1.ID())
	}
	k2, err := LoadOrCreateSigningKey(path, "hs1.test")
	if err != nil {
		t.Fatal(err)
	}
	if k2.ID() != k1.ID() || !k2.PublicKey().Equal(k1.PublicKey()) {
		t.Fatalf("reloaded key differs: %s vs %s", k2.ID(), k1.ID())
	}
	if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
		t.Errorf("temporary files left behind: %v", entries)
	}
}

func TestLoadOrCreateSigningKeyConcurrent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "signing.key")
	var wg sync.WaitGroup
	keys := make([]*SigningKey, 8)
	for i := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k, err := LoadOrCreateSigningKey(path, "hs1.test")
			if err != nil {
				t.Error(err)
				return
			}
			keys[i] = k
		}()
	}
	wg.Wait()
	for _, k := range keys[1:] {
		if k == nil || keys[0] == nil || k.ID() != keys[0].ID() || !k.PublicKey().Equal(keys[0].PublicKey()) {
			t.Fatal("concurrent creations disagree on the key")
		}
	}
}

func TestLoadSigningKeySynapseFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hs.signing.key")
	// A key file as Synapse writes it, with the spec's test seed.
	if err := os.WriteFile(path, []byte("ed25519 a_Abcd "+vectorSeed+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	k, err := LoadOrCreateSigningKey(path, "domain")
	if err != nil {
		t.Fatal(err)
	}
	if k.ID() != "ed25519:a_Abcd" || !k.PublicKey().Equal(vectorKey(t).PublicKey()) {
		t.Fatalf("got %s", k.ID())
	}
	for name, content := range map[string]string{
		"empty":      "",
		"two fields": "ed25519 " + vectorSeed,
		"algorithm":  "curve25519 a_Abcd " + vectorSeed,
		"version":    "ed25519 a-b " + vectorSeed,
		"seed":       "ed25519 a_Abcd AAAA",
	} {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "k")
			if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := LoadOrCreateSigningKey(p, "domain"); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func TestKeyServerResponse(t *testing.T) {
	key := testKey(t, "hs1.test", "a_Test")
	now := time.UnixMilli(1_700_000_000_000)
	body, err := key.KeyServerResponse(now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pub := base64.RawStdEncoding.EncodeToString(key.PublicKey())
	wantPrefix := `{"old_verify_keys":{},"server_name":"hs1.test","signatures":{"hs1.test":{"ed25519:a_Test":"`
	wantSuffix := `"}},"valid_until_ts":1700003600000,"verify_keys":{"ed25519:a_Test":{"key":"` + pub + `"}}}`
	if !strings.HasPrefix(string(body), wantPrefix) || !strings.HasSuffix(string(body), wantSuffix) {
		t.Fatalf("got %s", body)
	}
	if err := VerifyJSON(body, "hs1.test", key.ID(), key.PublicKey()); err != nil {
		t.Fatal(err)
	}
	keys, err := ParseServerKeys(body, "hs1.test")
	if err != nil {
		t.Fatal(err)
	}
	if !keys.VerifyKeys[key.ID()].Equal(key.PublicKey()) || keys.ValidUntil.UnixMilli() != 1700003600000 {
		t.Fatalf("parsed %+v", keys)
	}
}

func TestParseServerKeysRejects(t *testing.T) {
	key := testKey(t, "hs1.test", "a_Test")
	other := testKey(t, "hs3.test", "a_Test")
	now := time.UnixMilli(1_700_000_000_000)
	good, _ := key.KeyServerResponse(now, time.Hour)
	foreign, _ := other.KeyServerResponse(now, time.Hour)
	unsignedBody := regexp.MustCompile(`"signatures":\{[^}]*\}\},`).ReplaceAllString(string(good), "")
	cases := map[string]string{
		"not JSON":            "<html>",
		"not an object":       "[]",
		"wrong server_name":   string(foreign),
		"tampered":            strings.Replace(string(good), "1700003600000", "1800003600000", 1),
		"unsigned":            unsignedBody,
		"duplicate key":       strings.Replace(string(good), `{"old_verify_keys":{},`, `{"old_verify_keys":{},"old_verify_keys":{},`, 1),
		"no verify_keys":      `{"server_name":"hs1.test","valid_until_ts":1}`,
		"fractional validity": strings.Replace(string(good), "1700003600000", "1.5", 1),
	}
	for name, body := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := ParseServerKeys([]byte(body), "hs1.test")
			if !errors.Is(err, ErrBadKeyResponse) {
				t.Fatalf("got %v", err)
			}
		})
	}
}
