package hostserver

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/keyclaim/keyclaim/core"
	"github.com/keyclaim/keyclaim/hostserver/federation"
)

// DevUsers are the users of a generated development token file: localpart, device ID and the
// device's display name (returned by /keys/query as unsigned.device_display_name).
var DevUsers = [][3]string{{"alice", "ALICEDEV", "Alice's development device"}, {"bob", "BOBDEV", "Bob's development device"}}

// EnsureDevTokens makes sure a development token file exists at path: if there is none, it
// writes one (mode 0600, parent directories created) with a random token for each of
// [DevUsers] on server. It returns the tokens in the file and whether it created it.
func EnsureDevTokens(path string, server core.ServerName) (map[string]Identity, bool, error) {
	if _, err := os.Stat(path); err == nil {
		tokens, err := ReadTokenFile(path, server)
		return tokens, false, err
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, false, fmt.Errorf("dev token file: %w", err)
	}
	entries := map[string]tokenEntry{}
	tokens := map[string]Identity{}
	for _, u := range DevUsers {
		var b [24]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, false, fmt.Errorf("dev token: %w", err)
		}
		token := "kc_dev_" + u[0] + "_" + base64.RawURLEncoding.EncodeToString(b[:])
		user := "@" + u[0] + ":" + string(server)
		entries[token] = tokenEntry{UserID: user, DeviceID: u[1], DisplayName: u[2]}
		tokens[token] = Identity{User: core.UserID(user), Device: core.DeviceID(u[1]), DisplayName: u[2]}
	}
	data, err := json.MarshalIndent(entries, "", "  ")
	if err != nil {
		return nil, false, fmt.Errorf("dev token file: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, false, fmt.Errorf("dev token file: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, false, fmt.Errorf("dev token file: %w", err)
	}
	_, err = f.Write(append(data, '\n'))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, false, fmt.Errorf("dev token file: %w", err)
	}
	return tokens, true, nil
}

// WriteDevBanner writes, for a person, where the server listens, the access tokens of its token
// file, a ready-to-paste curl example that uploads a one-time key as one user and claims it as
// another, and the federation signing key and static routes. It writes nothing unless the server was started with a token file.
func (s *Server) WriteDevBanner(w io.Writer) {
	tf, ok := s.auth.(*TokenFileAuth)
	addr := s.Addr()
	if !ok || addr == nil {
		return
	}
	writeDevBanner(w, addr, s.serverName, tf.Path(), *tf.tokens.Load())
	if s.signingKey != nil {
		fmt.Fprintf(w, "Federation: signing key %s (%s), published at http://%s%s\n", s.signingKey.ID(), s.cfg.SigningKey, reachableAddr(addr), federation.KeyServerPath)
		if len(s.cfg.FederationResolve) > 0 {
			fmt.Fprintf(w, "Static federation routes: %s\n", s.cfg.FederationResolve)
		}
		fmt.Fprintln(w)
	}
}

func writeDevBanner(w io.Writer, addr net.Addr, server core.ServerName, tokensPath string, tokens map[string]Identity) {
	base := "http://" + reachableAddr(addr)
	type entry struct {
		token string
		id    Identity
	}
	var list []entry
	for t, id := range tokens {
		list = append(list, entry{t, id})
	}
	slices.SortFunc(list, func(a, b entry) int {
		return strings.Compare(string(a.id.User)+"\x00"+a.token, string(b.id.User)+"\x00"+b.token)
	})
	fmt.Fprintf(w, "\nkeyclaim development server: %s (server name %s)\n", base, server)
	fmt.Fprintf(w, "Access tokens (from %s):\n", tokensPath)
	for _, e := range list {
		fmt.Fprintf(w, "  %-24s device %-10s token %s\n", e.id.User, e.id.Device, e.token)
	}
	if len(list) >= 2 {
		claimer, owner := list[0], list[1]
		fmt.Fprintf(w, "\nTry it: %s uploads a one-time key, %s claims it:\n\n", owner.id.User, claimer.id.User)
		fmt.Fprintf(w, "  curl -sS -H 'Authorization: Bearer %s' -d '{\"one_time_keys\": {\"signed_curve25519:AAAAAQ\": {\"key\": \"zKbLg+NrIjpnagy+pIY6uPL4ZwEG2v+8F9lmgsnlZzs\", \"signatures\": {\"%s\": {\"ed25519:%s\": \"<the device's signature>\"}}}}}' %s/_matrix/client/v3/keys/upload\n",
			owner.token, owner.id.User, owner.id.Device, base)
		fmt.Fprintf(w, "  curl -sS -H 'Authorization: Bearer %s' -d '{\"one_time_keys\": {\"%s\": {\"%s\": \"signed_curve25519\"}}}' %s/_matrix/client/v3/keys/claim\n\n",
			claimer.token, owner.id.User, owner.id.Device, base)
	}
}

// reachableAddr returns addr with an unspecified host replaced by the loopback address.
func reachableAddr(addr net.Addr) string {
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return addr.String()
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}
