package hostserver_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/keyclaim/keyclaim/hostserver"
)

// The client compatibility policy (issue 15): in msc4072 mode a client whose User-Agent matches
// --legacy-user-agents (by default matrix-nio's "nio") is answered legacy-shaped; everything
// else about the answer (which keys are claimed, failures) is the same; /metrics counts answers
// by shape; --federation-answers shapes inbound federation answers (legacy by default).

// claimAs sends a client claim with the User-Agent ua ("" sends Go's default).
func (ts *testServer) claimAs(ua, token, body string) response {
	ts.t.Helper()
	req, err := http.NewRequest(http.MethodPost, ts.base+claimPath, strings.NewReader(body))
	if err != nil {
		ts.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	if ua != "" {
		req.Header.Set("User-Agent", ua)
	}
	return ts.send(req)
}

func TestClientCompatibilityPolicy(t *testing.T) {
	// bob's BOBDEV has two one-time keys, BOBPHONE none; carol none; remote.test is a failure
	// (no federation in the harness).
	req := `{"one_time_keys":{"` + bob + `":{"BOBDEV":"signed_curve25519","BOBPHONE":"signed_curve25519"},"` +
		carol + `":{"CAROLDEV":"signed_curve25519"},"@empty:` + serverName + `":{},"` + remoteUser + `":{"D1":"signed_curve25519"}},"timeout":1000}`
	failures := `{"remote.test":{"message":"federation is off on this server","status":503}}`
	complete := func(k string) string {
		return `{"failures":` + failures + `,"one_time_keys":{"` + bob + `":{"BOBDEV":{"signed_curve25519:` + k + `":` + key(k) + `},"BOBPHONE":{}},"` +
			carol + `":{"CAROLDEV":{}},"@empty:` + serverName + `":{}}}`
	}
	legacy := func(k string) string {
		return `{"failures":` + failures + `,"one_time_keys":{"` + bob + `":{"BOBDEV":{"signed_curve25519:` + k + `":` + key(k) + `}}}}`
	}
	cases := []struct {
		name   string
		edit   func(*hostserver.Config)
		ua     string
		shape  string
		answer func(string) string
	}{
		{"default policy, nio", nil, "nio", "legacy", legacy},
		{"default policy, nio with a version", nil, "nio/0.26.0", "legacy", legacy},
		{"default policy, Go's client", nil, "", "msc4072", complete},
		{"default policy, mautrix-go", nil, "mautrix-go/0.33.0 go1.25.0 linux/amd64", "msc4072", complete},
		{"default policy, Element", nil, "Element/1.11.100 (matrix-sdk-crypto)", "msc4072", complete},
		{"policy off, nio", func(c *hostserver.Config) { c.LegacyUserAgents = "" }, "nio", "msc4072", complete},
		{"custom policy", func(c *hostserver.Config) { c.LegacyUserAgents = `^mautrix-go/` }, "mautrix-go/0.33.0", "legacy", legacy},
		{"custom policy, nio no longer listed", func(c *hostserver.Config) { c.LegacyUserAgents = `^mautrix-go/` }, "nio", "msc4072", complete},
		{"legacy mode, any client", func(c *hostserver.Config) { c.Mode = "legacy" }, "", "legacy", legacy},
		{"legacy mode, nio", func(c *hostserver.Config) { c.Mode = "legacy" }, "nio", "legacy", legacy},
	}
	forEachStore(t, func(t *testing.T, b backend) {
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				ts := startServer(t, b, c.edit)
				ts.ok(uploadPath, bobToken, `{"one_time_keys":{"signed_curve25519:A":`+key("A")+`,"signed_curve25519:B":`+key("B")+`}}`)
				// Two claims: the policy changes the shape only, not which key is claimed.
				for _, k := range []string{"A", "B"} {
					r := ts.claimAs(c.ua, aliceToken, req)
					if r.status != http.StatusOK {
						t.Fatalf("claim: %d %s", r.status, r.body)
					}
					wantBody(t, "claim of key "+k, r.body, c.answer(k))
				}
				wantBody(t, "counts", ts.ok(uploadPath, bobToken, `{}`), `{"one_time_key_counts":{"signed_curve25519":0}}`)
				m := ts.metrics()
				other := map[string]string{"legacy": "msc4072", "msc4072": "legacy"}[c.shape]
				if got := m[`keyclaim_claim_answers_total{endpoint="client",shape="`+c.shape+`"}`]; got != 2 {
					t.Errorf("client answers of shape %s: %v, want 2", c.shape, got)
				}
				if got, ok := m[`keyclaim_claim_answers_total{endpoint="client",shape="`+other+`"}`]; !ok || got != 0 {
					t.Errorf("client answers of shape %s: %v (present %v), want 0", other, got, ok)
				}
				// The MSC4072 flag of /versions tells this client what it gets.
				vreq, _ := http.NewRequest(http.MethodGet, ts.base+"/_matrix/client/versions", nil)
				if c.ua != "" {
					vreq.Header.Set("User-Agent", c.ua)
				}
				v := ts.send(vreq)
				wantFlag := `"org.matrix.msc4072":` + map[string]string{"legacy": "false", "msc4072": "true"}[c.shape]
				if !strings.Contains(v.body, wantFlag) {
					t.Errorf("/versions for %q: %s, want %s", c.ua, v.body, wantFlag)
				}
			})
		}
		// Errors are the same for every client: the policy shapes answers only.
		t.Run("errors alike", func(t *testing.T) {
			ts := startServer(t, b, nil)
			for _, bad := range []string{`{`, `{"one_time_keys":{"not-a-user":{}}}`, `{"one_time_keys":{},"timeout":-1}`} {
				a, n := ts.claimAs("", aliceToken, bad), ts.claimAs("nio", aliceToken, bad)
				if a.status != n.status || a.body != n.body || a.status != http.StatusBadRequest {
					t.Errorf("%s: Go client %d %s, nio %d %s", bad, a.status, a.body, n.status, n.body)
				}
			}
		})
	})
}

func TestFederationAnswersShape(t *testing.T) {
	body := `{"one_time_keys":{"` + bob + `":{"BOBDEV":"signed_curve25519","BOBPHONE":"signed_curve25519"},"` + carol + `":{"CAROLDEV":"signed_curve25519"},"@empty:` + serverName + `":{}}}`
	cases := []struct {
		name, mode, answers, want string
	}{
		{"default", "", "", `{"one_time_keys":{"` + bob + `":{"BOBDEV":{"signed_curve25519:A":` + key("A") + `}}}}`},
		{"msc4072 mode, legacy answers", "msc4072", "legacy", `{"one_time_keys":{"` + bob + `":{"BOBDEV":{"signed_curve25519:A":` + key("A") + `}}}}`},
		{"legacy mode, msc4072 answers", "legacy", "msc4072", `{"one_time_keys":{"` + bob + `":{"BOBDEV":{"signed_curve25519:A":` + key("A") + `},"BOBPHONE":{}},"` + carol + `":{"CAROLDEV":{}},"@empty:` + serverName + `":{}}}`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ts := startServer(t, sqliteBackend, func(cfg *hostserver.Config) {
				if c.mode != "" {
					cfg.Mode = c.mode
				}
				if c.answers != "" {
					cfg.FederationAnswers = c.answers
				}
			})
			ts.ok(uploadPath, bobToken, `{"one_time_keys":{"signed_curve25519:A":`+key("A")+`}}`)
			wantBody(t, "federation claim", ts.ok(fedClaimPath, "", body), c.want)
			shape := c.answers
			if shape == "" {
				shape = "legacy"
			}
			if got := ts.metrics()[`keyclaim_claim_answers_total{endpoint="federation",shape="`+shape+`"}`]; got != 1 {
				t.Errorf("federation answers of shape %s: %v, want 1", shape, got)
			}
		})
	}
}

// TestFederationAnswersSameClientAnswers: keyclaim-to-keyclaim federation gives hs1's clients
// the same answers whether hs2 answers federation claims legacy-shaped or msc4072-shaped: hs1
// completes its answer from its own request (BRIEF 4). Two pairs of real servers on loopback
// are set up alike and asked the same claims, in each of hs1's client shapes.
func TestFederationAnswersSameClientAnswers(t *testing.T) {
	claims := []claimRequest{
		{bob2: devicesOf("BOBDEV", "BOBPHONE", "BOBTAB", "NOSUCH"), carol2: devicesOf("CAROLDEV"), "@nobody:" + hs2Name: devicesOf("X")},
		{bob2: devicesOf("BOBDEV", "BOBTAB"), "@empty:" + hs2Name: {}},
		{bob2: devicesOf("BOBDEV", "BOBPHONE", "BOBTAB", "NOSUCH")},
		{bob2: devicesOf("BOBDEV")}, // BOBDEV's keys are used up by now
	}
	for _, ua := range []string{"", "nio"} { // hs1 answers Go's client msc4072-shaped, nio legacy-shaped
		answers := map[string][]string{}
		for _, fedAnswers := range []string{"legacy", "msc4072"} {
			hs1, hs2 := startPairWith(t, sqliteBackend, func(*hostserver.Config) {},
				func(cfg *hostserver.Config) { cfg.FederationAnswers = fedAnswers })
			setUpBob2(t, hs2)
			for _, c := range claims {
				r := hs1.claimAs(ua, aliceToken, c.body(5000))
				if r.status != http.StatusOK {
					t.Fatalf("claim: %d %s", r.status, r.body)
				}
				mode := "msc4072"
				if ua == "nio" {
					mode = "legacy"
				}
				checkCompleteAnswer(t, r.body, c, mode, nil)
				answers[fedAnswers] = append(answers[fedAnswers], r.body)
			}
			// hs2 really answered in that shape.
			if got := hs2.metrics()[`keyclaim_claim_answers_total{endpoint="federation",shape="`+fedAnswers+`"}`]; got != float64(len(claims)) {
				t.Errorf("hs2 sent %v federation answers of shape %s, want %d", got, fedAnswers, len(claims))
			}
		}
		for i := range claims {
			if answers["legacy"][i] != answers["msc4072"][i] {
				t.Errorf("User-Agent %q, claim %d: hs2 answering legacy gave\n  %s\nmsc4072 gave\n  %s", ua, i+1, answers["legacy"][i], answers["msc4072"][i])
			}
		}
		if ua == "" && !strings.Contains(answers["legacy"][0], `"BOBTAB":{}`) {
			t.Errorf("hs1's complete answer lacks the exhausted device: %s", answers["legacy"][0])
		}
	}
}

// TestProxyModeCompatibilityPolicy: proxy mode applies the same policy to the claims it
// completes, and counts its answers by shape.
func TestProxyModeCompatibilityPolicy(t *testing.T) {
	var gotUA []string
	fakeHomeserver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotUA = append(gotUA, r.UserAgent())
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"failures":{},"one_time_keys":{"@bob:hs1.test":{"B1":{"signed_curve25519:K":{"key":"k","signatures":{"@bob:hs1.test":{"ed25519:B1":"s"}}}}}}}`)
	}))
	defer fakeHomeserver.Close()
	claim := `{"one_time_keys":{"@bob:hs1.test":{"B1":"signed_curve25519","B2":"signed_curve25519"},"@carol:hs1.test":{"C1":"signed_curve25519"}}}`
	keyB1 := `{"signed_curve25519:K":{"key":"k","signatures":{"@bob:hs1.test":{"ed25519:B1":"s"}}}}`
	complete := `{"failures":{},"one_time_keys":{"@bob:hs1.test":{"B1":` + keyB1 + `,"B2":{}},"@carol:hs1.test":{"C1":{}}}}`
	legacy := `{"failures":{},"one_time_keys":{"@bob:hs1.test":{"B1":` + keyB1 + `}}}`
	post := func(base, ua string) string {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, base+"/_matrix/client/v3/keys/claim", strings.NewReader(claim))
		req.Header.Set("User-Agent", ua)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("claim as %q: %d %s", ua, resp.StatusCode, body)
		}
		return string(body)
	}
	args := []string{"--upstream", fakeHomeserver.URL, "--server-name", "hs1.test", "--listen", "127.0.0.1:0"}
	for _, c := range []struct {
		name  string
		extra []string
		want  map[string]string // User-Agent -> answer
	}{
		{"default", nil, map[string]string{"nio": legacy, "nio/0.26": legacy, "mautrix-go/0.33": complete, "Go-http-client/1.1": complete}},
		{"off", []string{"--legacy-user-agents", ""}, map[string]string{"nio": complete, "mautrix-go/0.33": complete}},
		{"legacy mode", []string{"--mode", "legacy"}, map[string]string{"nio": legacy, "mautrix-go/0.33": legacy}},
	} {
		t.Run(c.name, func(t *testing.T) {
			base := startProxyMode(t, append(append([]string{}, args...), c.extra...)...)
			shapes := map[string]int{}
			gotUA = nil
			for ua, want := range c.want {
				wantBody(t, "claim as "+ua, post(base, ua), want)
				if want == legacy {
					shapes["legacy"]++
				} else {
					shapes["msc4072"]++
				}
			}
			for i, ua := range gotUA {
				if _, ok := c.want[ua]; !ok {
					t.Errorf("request %d reached the upstream with User-Agent %q", i, ua)
				}
			}
			r, err := http.Get(base + "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			text, _ := io.ReadAll(r.Body)
			r.Body.Close()
			for _, shape := range []string{"legacy", "msc4072"} {
				line := `keyclaim_claim_answers_total{endpoint="client",shape="` + shape + `"} ` + strconv.Itoa(shapes[shape]) + "\n"
				if !strings.Contains(string(text), line) {
					t.Errorf("/metrics lacks %q", line)
				}
			}
		})
	}
}

// TestCompatibilityConfig: the flags, the environment and the config file set both settings; a
// bad value is refused at start-up with a clear message; the policy is logged at start-up.
func TestCompatibilityConfig(t *testing.T) {
	noEnv := func(string) (string, bool) { return "", false }
	base := []string{"--dev", "--tokens", filepath.Join(t.TempDir(), "t.json")}
	cfg, err := hostserver.LoadConfig(base, noEnv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.LegacyUserAgents != `^nio\b` || cfg.FederationAnswers != "legacy" {
		t.Errorf("defaults: %q %q", cfg.LegacyUserAgents, cfg.FederationAnswers)
	}
	cfg, err = hostserver.LoadConfig(append(base, "--legacy-user-agents=", "--federation-answers", "msc4072"), noEnv, io.Discard)
	if err != nil || cfg.LegacyUserAgents != "" || cfg.FederationAnswers != "msc4072" {
		t.Errorf("flags: %q %q %v", cfg.LegacyUserAgents, cfg.FederationAnswers, err)
	}
	env := map[string]string{"KEYCLAIM_LEGACY_USER_AGENTS": "^mautrix-go/"}
	cfg, err = hostserver.LoadConfig(base, func(k string) (string, bool) { v, ok := env[k]; return v, ok }, io.Discard)
	if err != nil || cfg.LegacyUserAgents != "^mautrix-go/" {
		t.Errorf("environment: %q %v", cfg.LegacyUserAgents, err)
	}
	file := filepath.Join(t.TempDir(), "keyclaim.yaml")
	if err := os.WriteFile(file, []byte("legacy_user_agents: \"^(nio|mautrix-go)\\\\b\"\nfederation-answers: msc4072\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err = hostserver.LoadConfig(append(base, "--config", file), noEnv, io.Discard)
	if err != nil || cfg.LegacyUserAgents != `^(nio|mautrix-go)\b` || cfg.FederationAnswers != "msc4072" {
		t.Errorf("config file: %q %q %v", cfg.LegacyUserAgents, cfg.FederationAnswers, err)
	}
	if err := os.WriteFile(file, []byte("legacy_user_agents: \"\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err = hostserver.LoadConfig(append(base, "--config", file), noEnv, io.Discard)
	if err != nil || cfg.LegacyUserAgents != "" {
		t.Errorf("config file, empty: %q %v", cfg.LegacyUserAgents, err)
	}
	for _, bad := range [][]string{{"--legacy-user-agents", "(nio"}, {"--federation-answers", "complete"}, {"--federation-answers", ""}} {
		_, err := hostserver.LoadConfig(append(base, bad...), noEnv, io.Discard)
		if err == nil || !strings.Contains(err.Error(), bad[0]) {
			t.Errorf("%q: err = %v, want one naming %s", bad, err, bad[0])
		}
	}
	var help bytes.Buffer
	_, _ = hostserver.LoadConfig([]string{"--help"}, noEnv, &help)
	for _, want := range []string{"-legacy-user-agents", "matrix-nio", "-federation-answers"} {
		if !strings.Contains(help.String(), want) {
			t.Errorf("--help lacks %q", want)
		}
	}

	// The policy is logged at start-up, in the keys server and in proxy mode.
	for _, args := range [][]string{base, {"--upstream", "http://127.0.0.1:9", "--server-name", "hs1.test"}} {
		cfg, err := hostserver.LoadConfig(append(args, "--listen", "127.0.0.1:0", "--federation=false", "--db", "sqlite:"+filepath.Join(t.TempDir(), "k.db")), noEnv, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		var logs bytes.Buffer
		cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
		srv, err := hostserver.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		_ = srv.Shutdown(context.Background())
		if !strings.Contains(logs.String(), "claim answer policy") || !strings.Contains(logs.String(), `legacy_user_agents=^nio\b`) {
			t.Errorf("start-up log of %q lacks the policy:\n%s", args, logs.String())
		}
	}
}
