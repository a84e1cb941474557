package hostserver_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/keyclaim/keyclaim/core"
	"github.com/keyclaim/keyclaim/hostserver"
)

// The shared vectors of core/testdata/vectors that apply to the server, run over HTTP:
//
//   - parse_claim vectors: the body is sent to the claim endpoint of the vector's flavour on a
//     server with the vector's limits. An expected error must come back with its errcode (and the
//     status of that errcode); an expected request must come back as the complete answer to it
//     (every local device {} on an empty store, every remote server a failure without federation,
//     users with an empty device map {}).
//   - complete_client and complete_federation vectors (and legacy.json) whose request names only
//     local users and which have no remote answers: the vector's local results are uploaded as
//     one-time keys of their devices, the request is sent, and the answer must be the vector's.
//     A vector whose local results could not be uploaded (a value that is not a key, a user of
//     another server) tests the operation's input handling, not the server: it is skipped.

const vectorsDir = "../core/testdata/vectors"

type vectorFile struct {
	Schema      int      `json:"schema"`
	Description string   `json:"description"`
	Vectors     []vector `json:"vectors"`
}

type vector struct {
	ID          string          `json:"id"`
	Description string          `json:"description"`
	Source      string          `json:"source"`
	Op          string          `json:"op"`
	Input       json.RawMessage `json:"input"`
	Expect      json.RawMessage `json:"expect"`
	ExpectError string          `json:"expect_error"`
}

func readVectors(t *testing.T, names ...string) []vector {
	t.Helper()
	var out []vector
	for _, name := range names {
		data, err := os.ReadFile(filepath.Join(vectorsDir, name))
		if err != nil {
			t.Fatal(err)
		}
		var f vectorFile
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&f); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if f.Schema != 1 || len(f.Vectors) == 0 {
			t.Fatalf("%s: schema %d with %d vectors", name, f.Schema, len(f.Vectors))
		}
		out = append(out, f.Vectors...)
	}
	return out
}

// statusOf is the status the server answers an errcode with (hostserver's one mapping).
func statusOf(errcode string) int {
	switch errcode {
	case "M_TOO_LARGE":
		return http.StatusRequestEntityTooLarge
	case "M_NOT_JSON", "M_BAD_JSON", "M_INVALID_PARAM":
		return http.StatusBadRequest
	}
	return http.StatusInternalServerError
}

type parseInput struct {
	Flavour      string `json:"flavour"`
	ServerName   string `json:"server_name"`
	Body         *string
	BodyBase64   *string `json:"body_base64"`
	QueryTimeout string  `json:"query_timeout"`
	Limits       struct {
		MaxBodyBytes     *int   `json:"max_body_bytes"`
		MaxPairs         *int   `json:"max_pairs"`
		DefaultTimeoutMS *int64 `json:"default_timeout_ms"`
		MaxTimeoutMS     *int64 `json:"max_timeout_ms"`
	} `json:"limits"`
}

func TestVectorsParseOverHTTP(t *testing.T) {
	for _, v := range readVectors(t, "parse.json") {
		t.Run(v.ID, func(t *testing.T) {
			var in parseInput
			if err := json.Unmarshal(v.Input, &in); err != nil {
				t.Fatalf("input: %v", err)
			}
			var body []byte
			switch {
			case in.Body != nil:
				body = []byte(*in.Body)
			case in.BodyBase64 != nil:
				var err error
				if body, err = base64.StdEncoding.DecodeString(*in.BodyBase64); err != nil {
					t.Fatal(err)
				}
			}
			if in.Flavour == "federation" && in.ServerName == "" {
				t.Skip("a server always has a server name")
			}
			server := in.ServerName
			if server == "" {
				server = "hs1.test"
			}
			if _, err := core.ParseServerName(server); err != nil {
				t.Skipf("server name %q cannot configure a server", server)
			}
			ts := startVectorServer(t, server, "msc4072", map[string]map[string]string{
				"tok": {"user_id": "@vectors:" + server, "device_id": "VECTORS"},
			}, func(cfg *hostserver.Config) {
				lim := in.Limits
				if lim.MaxBodyBytes != nil {
					cfg.MaxBodyBytes = *lim.MaxBodyBytes
				}
				if lim.MaxPairs != nil {
					cfg.MaxPairs = *lim.MaxPairs
				}
				if lim.MaxTimeoutMS != nil {
					cfg.MaxTimeout = time.Duration(*lim.MaxTimeoutMS) * time.Millisecond
				}
				if lim.DefaultTimeoutMS != nil {
					cfg.DefaultTimeout = time.Duration(*lim.DefaultTimeoutMS) * time.Millisecond
				}
				cfg.DefaultTimeout = min(cfg.DefaultTimeout, cfg.MaxTimeout)
			})
			path := claimPath
			if in.Flavour == "federation" {
				path = fedClaimPath
			}
			if in.QueryTimeout != "" {
				path += "?timeout=" + url.QueryEscape(in.QueryTimeout)
			}
			req, _ := http.NewRequest(http.MethodPost, ts.base+path, bytes.NewReader(body))
			req.Header.Set("Authorization", "Bearer tok")
			r := ts.send(req)
			if v.ExpectError != "" {
				wantError(t, v.ID, r, statusOf(v.ExpectError), v.ExpectError)
				return
			}
			if r.status != http.StatusOK {
				t.Fatalf("status %d %s", r.status, r.body)
			}
			wantBody(t, v.ID, r.body, completeAnswerOnEmptyStore(t, v.Expect, core.ServerName(server), in.Flavour == "federation"))
		})
	}
}

// completeAnswerOnEmptyStore returns the answer a server with an empty store and no federation
// gives to the canonical request expect.
func completeAnswerOnEmptyStore(t *testing.T, expect json.RawMessage, server core.ServerName, federation bool) string {
	t.Helper()
	var req struct {
		OneTimeKeys map[string]map[string]string `json:"one_time_keys"`
	}
	if err := json.Unmarshal(expect, &req); err != nil {
		t.Fatal(err)
	}
	keys := map[string]map[string]struct{}{}
	failures := map[string]map[string]any{}
	for user, devs := range req.OneTimeKeys {
		if s := core.UserID(user).Server(); s != server && len(devs) > 0 {
			failures[string(s)] = map[string]any{"status": 503, "message": hostserver.NoFederationMessage}
		}
	}
	// None of a failed server's users appears, not even one with an empty device map (BRIEF 4).
	for user, devs := range req.OneTimeKeys {
		if _, failed := failures[string(core.UserID(user).Server())]; failed {
			continue
		}
		keys[user] = map[string]struct{}{}
		for d := range devs {
			keys[user][d] = struct{}{}
		}
	}
	answer := map[string]any{"one_time_keys": keys}
	if !federation {
		answer["failures"] = failures
	}
	raw, err := json.Marshal(answer)
	if err != nil {
		t.Fatal(err)
	}
	c, err := core.Canonical(raw)
	if err != nil {
		t.Fatal(err)
	}
	return string(c)
}

type completeInput struct {
	Mode       string                                           `json:"mode"`
	ServerName string                                           `json:"server_name"`
	Request    json.RawMessage                                  `json:"request"`
	Local      map[string]map[string]map[string]json.RawMessage `json:"local"`
	Remote     map[string]json.RawMessage                       `json:"remote"`
	Tally      json.RawMessage                                  `json:"tally"` // an option of the operation, not of the HTTP answer
}

func TestVectorsCompleteOverHTTP(t *testing.T) {
	vectors := readVectors(t, "complete_client.json", "complete_federation.json", "legacy.json")
	forEachStore(t, func(t *testing.T, b backend) {
		ran := 0
		for _, v := range vectors {
			var in completeInput
			if err := json.Unmarshal(v.Input, &in); err != nil {
				t.Fatalf("%s: input: %v", v.ID, err)
			}
			var req struct {
				OneTimeKeys map[string]json.RawMessage `json:"one_time_keys"`
			}
			if json.Unmarshal(in.Request, &req) != nil || len(in.Remote) > 0 || !allLocal(req.OneTimeKeys, in.ServerName) {
				continue // not a local-only vector
			}
			if in.Tally != nil {
				continue // asks the operation for its tally, which the server keeps for /metrics
			}
			t.Run(v.ID, func(t *testing.T) {
				if reason := uploadable(in); reason != "" {
					t.Skipf("local results cannot be uploaded: %s", reason)
				}
				ran++
				mode := in.Mode
				if mode == "" {
					mode = "msc4072"
				}
				if _, err := core.ParseMode(mode); err != nil {
					t.Skipf("mode %q cannot configure a server", mode)
				}
				tokens := map[string]map[string]string{"requester": {"user_id": "@vectors:" + in.ServerName, "device_id": "VECTORS"}}
				for user, devs := range in.Local {
					for dev := range devs {
						tokens[user+"|"+dev] = map[string]string{"user_id": user, "device_id": dev}
					}
				}
				ts := startVectorServer(t, in.ServerName, mode, tokens, func(cfg *hostserver.Config) { cfg.Store = nil; cfg.DB = b.freshDB(t) })
				for user, devs := range in.Local {
					for dev, keys := range devs {
						up, _ := json.Marshal(map[string]any{"one_time_keys": keys})
						ts.ok(uploadPath, user+"|"+dev, string(up))
					}
				}
				path := claimPath
				if v.Op == "complete_federation" {
					path = fedClaimPath
				}
				r := ts.post(path, "requester", string(in.Request))
				if v.ExpectError != "" {
					wantError(t, v.ID, r, statusOf(v.ExpectError), v.ExpectError)
					return
				}
				want, err := core.Canonical(v.Expect)
				if err != nil {
					t.Fatal(err)
				}
				if r.status != http.StatusOK {
					t.Fatalf("status %d %s", r.status, r.body)
				}
				wantBody(t, v.ID, r.body, string(want))
			})
		}
		if ran == 0 {
			t.Errorf("no vector applied")
		}
	})
}

func allLocal(users map[string]json.RawMessage, server string) bool {
	for u := range users {
		if string(core.UserID(u).Server()) != server {
			return false
		}
	}
	return true
}

// uploadable says why the vector's local results cannot be uploaded, or "".
func uploadable(in completeInput) string {
	users := make([]string, 0, len(in.Local))
	for u := range in.Local {
		users = append(users, u)
	}
	sort.Strings(users)
	for _, user := range users {
		id, err := core.ParseUserID(user)
		if err != nil || string(id.Server()) != in.ServerName {
			return fmt.Sprintf("user %q is not a local user", user)
		}
		for dev, keys := range in.Local[user] {
			if dev == "" || strings.Contains(user+dev, "|") {
				return fmt.Sprintf("device %q", dev)
			}
			for kid, val := range keys {
				if _, err := core.ParseKeyID(kid); err != nil {
					return fmt.Sprintf("key ID %q", kid)
				}
				if v, err := core.ParseValue(val); err != nil || !core.IsKeyValue(&v) {
					return fmt.Sprintf("value %s of %s is not a key", val, kid)
				}
			}
		}
	}
	return ""
}

// startVectorServer starts a SQLite server for one vector with its own token file.
func startVectorServer(t *testing.T, server, mode string, tokens map[string]map[string]string, edit func(*hostserver.Config)) *testServer {
	t.Helper()
	path := filepath.Join(t.TempDir(), "vector-tokens.json")
	writeTokenFile(t, path, tokens)
	return startServer(t, sqliteBackend, func(cfg *hostserver.Config) {
		cfg.ServerName = server
		cfg.Mode = mode
		cfg.FederationAnswers = mode // complete_federation vectors: the vector's mode
		cfg.Tokens = path
		if edit != nil {
			edit(cfg)
		}
	})
}
