package federation

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/keyclaim/keyclaim/core"
)

// AlgorithmEd25519 is the only signing algorithm of the Matrix specification, the prefix of
// every signing key ID ("ed25519:<version>").
const AlgorithmEd25519 = "ed25519"

// Signature errors. VerifyJSON and the Verifier wrap them, so errors.Is tells which check failed.
var (
	// ErrSignatureMissing: the object has no signature by the entity under the key ID.
	ErrSignatureMissing = errors.New("signature missing")
	// ErrSignatureInvalid: the signature is not valid unpadded base64, not 64 bytes, or does not
	// verify with the key.
	ErrSignatureInvalid = errors.New("signature invalid")
)

// SigningKey is a server's ed25519 signing key with its server name and key ID
// ("ed25519:<version>"). It signs JSON objects, federation requests and the server's key
// server response. It is safe for concurrent use.
type SigningKey struct {
	serverName core.ServerName
	id         core.KeyID
	private    ed25519.PrivateKey
}

// NewSigningKey returns the signing key of serverName with the given version (the part of the
// key ID after "ed25519:", characters [a-zA-Z0-9_]) and 32-byte ed25519 seed.
func NewSigningKey(serverName core.ServerName, version string, seed []byte) (*SigningKey, error) {
	if _, err := core.ParseServerName(string(serverName)); err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	if !validKeyVersion(version) {
		return nil, fmt.Errorf("signing key: version %q must be one or more of [a-zA-Z0-9_]", version)
	}
	if len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("signing key: seed is %d bytes, want %d", len(seed), ed25519.SeedSize)
	}
	return &SigningKey{
		serverName: serverName,
		id:         core.KeyID(AlgorithmEd25519 + ":" + version),
		private:    ed25519.NewKeyFromSeed(seed),
	}, nil
}

// ServerName returns the name of the server the key belongs to.
func (k *SigningKey) ServerName() core.ServerName { return k.serverName }

// ID returns the key ID, "ed25519:<version>".
func (k *SigningKey) ID() core.KeyID { return k.id }

// PublicKey returns the ed25519 public key.
func (k *SigningKey) PublicKey() ed25519.PublicKey {
	return k.private.Public().(ed25519.PublicKey)
}

// sign returns the unpadded base64 ed25519 signature of msg.
func (k *SigningKey) sign(msg []byte) string {
	return base64.RawStdEncoding.EncodeToString(ed25519.Sign(k.private, msg))
}

// SignJSON signs the JSON object obj as the appendices' "Signing Details" say: the object
// without "signatures" and "unsigned" is encoded as canonical JSON and signed; the signature is
// added under signatures[server name][key ID], keeping any other signatures and "unsigned". The
// result is canonical JSON. obj must be a JSON object without duplicate keys.
func (k *SigningKey) SignJSON(obj []byte) ([]byte, error) {
	v, err := core.ParseValue(obj)
	if err != nil {
		return nil, fmt.Errorf("sign JSON: %w", err)
	}
	if err := k.signValue(&v, k.serverName); err != nil {
		return nil, err
	}
	return v.AppendJSON(nil), nil
}

// signValue adds the signature of v by entity with this key to v.
func (k *SigningKey) signValue(v *core.Value, entity core.ServerName) error {
	if v.Kind != core.KindObject {
		return errors.New("sign JSON: not a JSON object")
	}
	sigs := core.Value{Kind: core.KindObject}
	if s, ok := v.Get("signatures"); ok {
		if s.Kind != core.KindObject {
			return errors.New(`sign JSON: "signatures" is not an object`)
		}
		sigs = *s
	}
	ent := core.Value{Kind: core.KindObject}
	if e, ok := sigs.Get(string(entity)); ok {
		if e.Kind != core.KindObject {
			return fmt.Errorf("sign JSON: signatures of %q is not an object", entity)
		}
		ent = *e
	}
	sig := k.sign(signedBytes(v))
	setMember(&ent, string(k.id), jsonString(sig))
	setMember(&sigs, string(entity), ent)
	setMember(v, "signatures", sigs)
	return nil
}

// signedBytes returns the canonical JSON of object v without "signatures" and "unsigned": the
// bytes a signature covers.
func signedBytes(v *core.Value) []byte {
	stripped := core.Value{Kind: core.KindObject, Members: make([]core.Member, 0, len(v.Members))}
	for _, m := range v.Members {
		if m.Key != "signatures" && m.Key != "unsigned" {
			stripped.Members = append(stripped.Members, m)
		}
	}
	return stripped.AppendJSON(nil)
}

// VerifyJSON checks the signature of the JSON object obj by entity under keyID with key, as
// the appendices' "Checking for a Signature" says. It returns an error wrapping
// ErrSignatureMissing or ErrSignatureInvalid when the check fails, or a *core.Error when obj is
// not a JSON object.
func VerifyJSON(obj []byte, entity core.ServerName, keyID core.KeyID, key ed25519.PublicKey) error {
	v, err := core.ParseValue(obj)
	if err != nil {
		return fmt.Errorf("verify JSON: %w", err)
	}
	if v.Kind != core.KindObject {
		return errors.New("verify JSON: not a JSON object")
	}
	return verifyValue(&v, entity, keyID, key)
}

// verifyValue checks the signature of object v by entity under keyID with key.
func verifyValue(v *core.Value, entity core.ServerName, keyID core.KeyID, key ed25519.PublicKey) error {
	sig, ok := signatureOf(v, entity, keyID)
	if !ok {
		return fmt.Errorf("%w: no signature by %s with %s", ErrSignatureMissing, entity, keyID)
	}
	return verifySignature(signedBytes(v), sig, key)
}

// signatureOf returns signatures[entity][keyID] of object v when it is a string.
func signatureOf(v *core.Value, entity core.ServerName, keyID core.KeyID) (string, bool) {
	sigs, ok := v.Get("signatures")
	if !ok {
		return "", false
	}
	ent, ok := sigs.Get(string(entity))
	if !ok {
		return "", false
	}
	s, ok := ent.Get(string(keyID))
	if !ok || s.Kind != core.KindString {
		return "", false
	}
	return s.Str, true
}

// verifySignature checks sig, an unpadded (or padded) base64 ed25519 signature, over msg.
func verifySignature(msg []byte, sig string, key ed25519.PublicKey) error {
	raw, err := decodeBase64(sig)
	if err != nil {
		return fmt.Errorf("%w: not base64: %w", ErrSignatureInvalid, err)
	}
	if len(raw) != ed25519.SignatureSize {
		return fmt.Errorf("%w: %d bytes, want %d", ErrSignatureInvalid, len(raw), ed25519.SignatureSize)
	}
	if len(key) != ed25519.PublicKeySize || !ed25519.Verify(key, msg, raw) {
		return fmt.Errorf("%w: does not verify", ErrSignatureInvalid)
	}
	return nil
}

// decodeBase64 decodes standard base64 with or without padding (appendices, "Unpadded Base64":
// implementations SHOULD accept both).
func decodeBase64(s string) ([]byte, error) {
	return base64.RawStdEncoding.DecodeString(strings.TrimRight(s, "="))
}

// validKeyVersion reports whether s matches [a-zA-Z0-9_]+ (keys_server.yaml).
func validKeyVersion(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// LoadOrCreateSigningKey returns the signing key of serverName stored at path, creating it
// first when the file does not exist: a new random ed25519 key whose version is "a_" and four
// random letters, as Synapse generates them. The file has Synapse's format, one line
// "ed25519 <version> <unpadded base64 seed>", mode 0600; missing directories are created with
// mode 0700. Creation is atomic: concurrent starts agree on one key.
func LoadOrCreateSigningKey(path string, serverName core.ServerName) (*SigningKey, error) {
	if _, err := core.ParseServerName(string(serverName)); err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		if err := createSigningKeyFile(path); err != nil {
			return nil, err
		}
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	version, seed, err := parseSigningKeyFile(data)
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", path, err)
	}
	return NewSigningKey(serverName, version, seed)
}

// parseSigningKeyFile reads the first key line "ed25519 <version> <base64 seed>".
func parseSigningKeyFile(data []byte) (version string, seed []byte, err error) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 3 {
			return "", nil, fmt.Errorf("want one line \"ed25519 <version> <base64 seed>\", got %d fields", len(f))
		}
		if f[0] != AlgorithmEd25519 {
			return "", nil, fmt.Errorf("unsupported algorithm %q", f[0])
		}
		if !validKeyVersion(f[1]) {
			return "", nil, fmt.Errorf("version %q must be one or more of [a-zA-Z0-9_]", f[1])
		}
		seed, err := decodeBase64(f[2])
		if err != nil {
			return "", nil, fmt.Errorf("seed is not base64: %w", err)
		}
		if len(seed) != ed25519.SeedSize {
			return "", nil, fmt.Errorf("seed is %d bytes, want %d", len(seed), ed25519.SeedSize)
		}
		return f[1], seed, nil
	}
	if err := sc.Err(); err != nil {
		return "", nil, err
	}
	return "", nil, errors.New("no key in the file")
}

// createSigningKeyFile writes a new key to path unless a file is there already: the key is
// written to a temporary file which is then hard-linked to path, which fails if path exists.
func createSigningKeyFile(path string) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("signing key: %w", err)
	}
	seed := make([]byte, ed25519.SeedSize)
	if _, err := rand.Read(seed); err != nil {
		return fmt.Errorf("signing key: %w", err)
	}
	line := AlgorithmEd25519 + " " + randomVersion() + " " + base64.RawStdEncoding.EncodeToString(seed) + "\n"
	tmp, err := os.CreateTemp(dir, ".signing-key-*") // mode 0600
	if err != nil {
		return fmt.Errorf("signing key: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.WriteString(line)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("signing key: %w", err)
	}
	if err := os.Link(tmp.Name(), path); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("signing key: %w", err)
	}
	return nil
}

// randomVersion returns "a_" and four random letters, Synapse's form of a key version.
func randomVersion() string {
	const letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	b := []byte("a_....")
	for i := 2; i < len(b); i++ {
		b[i] = letters[randIntn(len(letters))]
	}
	return string(b)
}

func randIntn(n int) int {
	var b [1]byte
	for {
		if _, err := rand.Read(b[:]); err != nil {
			panic(err) // crypto/rand.Read does not fail (Go 1.24+)
		}
		if int(b[0]) < 256-256%n {
			return int(b[0]) % n
		}
	}
}

// JSON value helpers. core.Value keeps object members sorted by key, which is what makes
// AppendJSON canonical; these keep that invariant.

func jsonString(s string) core.Value { return core.Value{Kind: core.KindString, Str: s} }

func jsonInt(n int64) core.Value {
	return core.Value{Kind: core.KindNumber, Str: strconv.FormatInt(n, 10)}
}

func jsonObject(members ...core.Member) core.Value {
	v := core.Value{Kind: core.KindObject}
	for _, m := range members {
		setMember(&v, m.Key, m.Value)
	}
	return v
}

// setMember sets key of object v to val, keeping the members sorted. It copies v.Members
// first, so values that share members with v are not changed.
func setMember(v *core.Value, key string, val core.Value) {
	v.Members = slices.Clone(v.Members)
	i, found := slices.BinarySearchFunc(v.Members, key, func(m core.Member, k string) int { return strings.Compare(m.Key, k) })
	if found {
		v.Members[i].Value = val
		return
	}
	v.Members = slices.Insert(v.Members, i, core.Member{Key: key, Value: val})
}
