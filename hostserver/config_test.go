package hostserver_test

import (
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyclaim/keyclaim/hostserver"
)

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLoadConfigDefaults(t *testing.T) {
	cfg, err := hostserver.LoadConfig([]string{"--tokens", "t.json"}, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := hostserver.DefaultConfig()
	want.Tokens = "t.json"
	if cfg.Listen != "127.0.0.1:8008" || cfg.ServerName != "localhost" || cfg.DB != "sqlite:./var/keyclaim.db" ||
		cfg.Mode != "msc4072" || cfg.Engine != "native" || cfg.MaxBodyBytes != 4<<20 || cfg.MaxPairs != 50000 ||
		cfg.MaxTimeout != 60*time.Second || cfg.DefaultTimeout != 10*time.Second || cfg.LogFormat != "text" || cfg.LogLevel != "info" || cfg.GCPercent != 400 {
		t.Errorf("defaults: %+v", cfg)
	}
	if cfg.Listen != want.Listen || cfg.Tokens != want.Tokens {
		t.Errorf("got %+v, want %+v", cfg, want)
	}
}

func TestLoadConfigPrecedence(t *testing.T) {
	// flag > env > file > default, for every kind of setting.
	yamlFile := writeFile(t, "keyclaim.yaml", `
listen: 127.0.0.1:9001
server-name: file.test
server_name_is_not_here: no
`)
	if _, err := hostserver.LoadConfig([]string{"--config", yamlFile, "--tokens", "t"}, env(nil), io.Discard); err == nil ||
		!strings.Contains(err.Error(), "server_name_is_not_here") {
		t.Errorf("unknown key in the file: err = %v", err)
	}

	file := writeFile(t, "keyclaim.yaml", `
listen: 127.0.0.1:9001
server_name: file.test
mode: legacy
max-pairs: 7
max-timeout: 30s
dev: true
tokens: file-tokens.json
log-level: debug
`)
	e := map[string]string{
		"KEYCLAIM_SERVER_NAME":  "env.test",
		"KEYCLAIM_MAX_PAIRS":    "8",
		"KEYCLAIM_LOG_LEVEL":    "warn",
		"KEYCLAIM_TEST_UNKNOWN": "ignored",
	}
	cfg, err := hostserver.LoadConfig([]string{"--config", file, "--max-pairs", "9"}, env(e), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name      string
		got, want any
	}{
		{"listen (file)", cfg.Listen, "127.0.0.1:9001"},
		{"server-name (env over file)", cfg.ServerName, "env.test"},
		{"mode (file)", cfg.Mode, "legacy"},
		{"max-pairs (flag over env over file)", cfg.MaxPairs, 9},
		{"max-timeout (file)", cfg.MaxTimeout, 30 * time.Second},
		{"dev (file)", cfg.Dev, true},
		{"tokens (file)", cfg.Tokens, "file-tokens.json"},
		{"log-level (env over file)", cfg.LogLevel, "warn"},
		{"default-timeout (default)", cfg.DefaultTimeout, 10 * time.Second},
	} {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}

	// The config file from the environment, in JSON.
	jsonFile := writeFile(t, "keyclaim.json", `{"engine": "native", "max-body-bytes": 1000, "homeserver": "https://hs.example"}`)
	cfg, err = hostserver.LoadConfig(nil, env(map[string]string{"KEYCLAIM_CONFIG": jsonFile}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MaxBodyBytes != 1000 || cfg.Homeserver != "https://hs.example" {
		t.Errorf("JSON config: %+v", cfg)
	}
}

func TestLoadConfigFederation(t *testing.T) {
	cfg, err := hostserver.LoadConfig([]string{"--tokens", "t"}, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.FederationEnabled || cfg.SigningKey != "./var/signing.key" || len(cfg.FederationResolve) != 0 ||
		cfg.FederationTimeoutCap != 60*time.Second || cfg.FederationMaxResponseBytes != 1<<20 || cfg.FederationResponseBytesPerDevice != 2048 ||
		cfg.FederationAllowPrivateIPs {
		t.Errorf("federation defaults: %+v", cfg)
	}
	// The bound on a remote answer: 1 MiB, plus 2 KiB per device asked, at most what a claim of
	// --max-pairs devices may take.
	if got := cfg.FederationMaxResponseBytesCeiling(); got != 1<<20+2048*50_000 {
		t.Errorf("default ceiling of a remote answer = %d", got)
	}

	// Repeatable on the command line, comma-separated in the environment, a list in the file.
	cfg, err = hostserver.LoadConfig([]string{"--tokens", "t", "--federation-resolve", "hs2.test=http://127.0.0.1:8448",
		"--federation-resolve", "hs3.test=https://hs3.internal:8443,hs4.test=http://[::1]:9"}, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.FederationResolve.String(); got != "hs2.test=http://127.0.0.1:8448,hs3.test=https://hs3.internal:8443,hs4.test=http://[::1]:9" {
		t.Errorf("routes from flags: %s", got)
	}
	file := writeFile(t, "keyclaim.yaml", `
tokens: t
federation: false
signing-key: /etc/keyclaim/signing.key
federation-resolve:
  - hs2.test=http://127.0.0.1:8448
  - hs3.test=http://127.0.0.1:8449
federation_timeout_cap: 20s
federation-max-response-bytes: 65536
federation-response-bytes-per-device: 512
max-pairs: 1000
federation-allow-private-ips: true
`)
	cfg, err = hostserver.LoadConfig([]string{"--config", file}, env(map[string]string{"KEYCLAIM_FEDERATION_TIMEOUT_CAP": "15s"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.FederationEnabled || cfg.SigningKey != "/etc/keyclaim/signing.key" || cfg.FederationResolve.String() != "hs2.test=http://127.0.0.1:8448,hs3.test=http://127.0.0.1:8449" ||
		cfg.FederationTimeoutCap != 15*time.Second || cfg.FederationMaxResponseBytes != 65536 || cfg.FederationResponseBytesPerDevice != 512 ||
		!cfg.FederationAllowPrivateIPs {
		t.Errorf("federation settings from the file and the environment: %+v", cfg)
	}
	if got := cfg.FederationMaxResponseBytesCeiling(); got != 65536+512*1000 {
		t.Errorf("ceiling of a remote answer = %d, want --federation-max-response-bytes + --federation-response-bytes-per-device × --max-pairs", got)
	}
	cfg.FederationResponseBytesPerDevice = 0
	if got := cfg.FederationMaxResponseBytesCeiling(); got != 65536 {
		t.Errorf("ceiling without an allowance per device = %d, want the floor", got)
	}
	cfg, err = hostserver.LoadConfig([]string{"--config", file, "--federation-resolve", "hs9.test=http://127.0.0.1:1"},
		env(map[string]string{"KEYCLAIM_FEDERATION_RESOLVE": "hs8.test=http://127.0.0.1:2"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.FederationResolve.String(); got != "hs9.test=http://127.0.0.1:1" {
		t.Errorf("routes: the flag must win over the environment and the file: %s", got)
	}
	if _, err := hostserver.LoadConfig([]string{"--config", writeFile(t, "bad.yaml", "tokens: t\nmode: [legacy]\n")}, env(nil), io.Discard); err == nil ||
		!strings.Contains(err.Error(), "single value") {
		t.Errorf("a list for a setting that is not repeatable: %v", err)
	}
}

func TestLoadConfigUpstreamResponseBound(t *testing.T) {
	cfg, err := hostserver.LoadConfig([]string{"--upstream", "http://127.0.0.1:8008"}, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	// The bound on the upstream's claim answer: 8 MiB, plus 2 KiB per device claimed, at most
	// what a claim of --max-pairs devices may take.
	if cfg.UpstreamMaxResponseBytes != 8<<20 || cfg.UpstreamResponseBytesPerDevice != 2048 {
		t.Errorf("upstream answer defaults: %d, %d per device", cfg.UpstreamMaxResponseBytes, cfg.UpstreamResponseBytesPerDevice)
	}
	if got := cfg.UpstreamMaxResponseBytesCeiling(); got != 8<<20+2048*50_000 {
		t.Errorf("default ceiling of the upstream's answer = %d", got)
	}
	file := writeFile(t, "keyclaim.yaml", `
upstream: http://127.0.0.1:8008
upstream-max-response-bytes: 65536
max-pairs: 1000
`)
	cfg, err = hostserver.LoadConfig([]string{"--config", file}, env(map[string]string{"KEYCLAIM_UPSTREAM_RESPONSE_BYTES_PER_DEVICE": "512"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.UpstreamMaxResponseBytes != 65536 || cfg.UpstreamResponseBytesPerDevice != 512 {
		t.Errorf("upstream answer settings from the file and the environment: %d, %d per device", cfg.UpstreamMaxResponseBytes, cfg.UpstreamResponseBytesPerDevice)
	}
	if got := cfg.UpstreamMaxResponseBytesCeiling(); got != 65536+512*1000 {
		t.Errorf("ceiling of the upstream's answer = %d, want --upstream-max-response-bytes + --upstream-response-bytes-per-device × --max-pairs", got)
	}
	cfg.UpstreamResponseBytesPerDevice = 0
	if got := cfg.UpstreamMaxResponseBytesCeiling(); got != 65536 {
		t.Errorf("ceiling without an allowance per device = %d, want the floor", got)
	}
}

func TestLoadConfigDev(t *testing.T) {
	cfg, err := hostserver.LoadConfig([]string{"--dev"}, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Tokens != hostserver.DevTokensPath {
		t.Errorf("--dev tokens = %q, want %q", cfg.Tokens, hostserver.DevTokensPath)
	}
	cfg, err = hostserver.LoadConfig([]string{"--dev", "--tokens", "mine.json"}, env(nil), io.Discard)
	if err != nil || cfg.Tokens != "mine.json" {
		t.Errorf("--dev --tokens: %q, %v", cfg.Tokens, err)
	}
}

func TestLoadConfigRejects(t *testing.T) {
	cases := []struct {
		name    string
		args    []string
		env     map[string]string
		wantErr string
	}{
		{"no authentication", nil, nil, "no authentication configured"},
		{"tokens and homeserver", []string{"--tokens", "t", "--homeserver", "http://hs"}, nil, "exclude each other"},
		{"bad listen", []string{"--tokens", "t", "--listen", "8008"}, nil, "--listen"},
		{"bad server name", []string{"--tokens", "t", "--server-name", "bad_name"}, nil, "--server-name"},
		{"bad db", []string{"--tokens", "t", "--db", "mysql://x"}, nil, "--db"},
		{"bad mode", []string{"--tokens", "t", "--mode", "complete"}, nil, "--mode"},
		{"bad engine", []string{"--tokens", "t", "--engine", "jit"}, nil, "--engine"},
		{"bad limits", []string{"--tokens", "t", "--max-pairs", "0"}, nil, "--max-pairs"},
		{"default over max", []string{"--tokens", "t", "--default-timeout", "2m"}, nil, "--default-timeout"},
		{"bad homeserver", []string{"--homeserver", "hs.example"}, nil, "--homeserver"},
		{"bad log format", []string{"--tokens", "t", "--log-format", "xml"}, nil, "--log-format"},
		{"bad log level", []string{"--tokens", "t", "--log-level", "loud"}, nil, "--log-level"},
		{"negative gc percent", []string{"--tokens", "t", "--gc-percent", "-1"}, nil, "--gc-percent"},
		{"bad env value", []string{"--tokens", "t"}, map[string]string{"KEYCLAIM_MAX_PAIRS": "many"}, "KEYCLAIM_MAX_PAIRS"},
		{"bad duration", []string{"--tokens", "t", "--max-timeout", "60"}, nil, "max-timeout"},
		{"unknown flag", []string{"--tokens", "t", "--frobnicate"}, nil, "frobnicate"},
		{"positional argument", []string{"--tokens", "t", "serve"}, nil, "serve"},
		{"missing config file", []string{"--config", "/nonexistent/keyclaim.yaml"}, nil, "config file"},
		{"bad federation route", []string{"--tokens", "t", "--federation-resolve", "hs2.test=ftp://x"}, nil, "federation-resolve"},
		{"federation route without a URL", []string{"--tokens", "t", "--federation-resolve", "hs2.test"}, nil, "server_name=URL"},
		{"bad federation route in env", []string{"--tokens", "t"}, map[string]string{"KEYCLAIM_FEDERATION_RESOLVE": "bad_name=http://x"}, "KEYCLAIM_FEDERATION_RESOLVE"},
		{"no signing key", []string{"--tokens", "t", "--signing-key", ""}, nil, "--signing-key"},
		{"bad timeout cap", []string{"--tokens", "t", "--federation-timeout-cap", "0s"}, nil, "--federation-timeout-cap"},
		{"bad response limit", []string{"--tokens", "t", "--federation-max-response-bytes", "1"}, nil, "--federation-max-response-bytes"},
		{"negative allowance per device", []string{"--tokens", "t", "--federation-response-bytes-per-device", "-1"}, nil, "--federation-response-bytes-per-device"},
		{"huge allowance per device", []string{"--tokens", "t", "--federation-response-bytes-per-device", "2000000"}, nil, "--federation-response-bytes-per-device"},
		{"bad upstream response limit", []string{"--upstream", "http://hs", "--upstream-max-response-bytes", "0"}, nil, "--upstream-max-response-bytes"},
		{"negative upstream allowance per device", []string{"--upstream", "http://hs", "--upstream-response-bytes-per-device", "-1"}, nil, "--upstream-response-bytes-per-device"},
		{"huge upstream allowance per device", []string{"--upstream", "http://hs"}, map[string]string{"KEYCLAIM_UPSTREAM_RESPONSE_BYTES_PER_DEVICE": "2000000"}, "--upstream-response-bytes-per-device"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := hostserver.LoadConfig(c.args, env(c.env), io.Discard)
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("err = %v, want one mentioning %q", err, c.wantErr)
			}
		})
	}
	if _, err := hostserver.LoadConfig([]string{"-h"}, env(nil), io.Discard); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: %v", err)
	}
}

func TestDevTokens(t *testing.T) {
	path := filepath.Join(t.TempDir(), "var", "dev-tokens.json")
	tokens, created, err := hostserver.EnsureDevTokens(path, "example.test")
	if err != nil || !created || len(tokens) != 2 {
		t.Fatalf("EnsureDevTokens = %v, %v, %v", tokens, created, err)
	}
	users := map[string]string{}
	for tok, id := range tokens {
		if len(tok) < 32 {
			t.Errorf("token %q is short", tok)
		}
		users[string(id.User)] = string(id.Device)
	}
	if users["@alice:example.test"] != "ALICEDEV" || users["@bob:example.test"] != "BOBDEV" {
		t.Errorf("users = %v", users)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("file mode: %v, %v", fi, err)
	}
	again, created, err := hostserver.EnsureDevTokens(path, "example.test")
	if err != nil || created || len(again) != 2 {
		t.Fatalf("second EnsureDevTokens = %v, %v, %v", again, created, err)
	}
	for tok := range tokens {
		if _, ok := again[tok]; !ok {
			t.Errorf("the existing file was not reused")
		}
	}
}

func TestDevServer(t *testing.T) {
	// --dev generates the token file and the banner tells how to use it.
	dir := t.TempDir()
	tokens := filepath.Join(dir, "dev-tokens.json")
	ts := startServer(t, sqliteBackend, func(cfg *hostserver.Config) {
		cfg.Dev = true
		cfg.Tokens = tokens
		cfg.ServerName = "localhost"
	})
	var banner strings.Builder
	ts.srv.WriteDevBanner(&banner)
	out := banner.String()
	for _, want := range []string{ts.base, "@alice:localhost", "@bob:localhost", "curl", "/_matrix/client/v3/keys/upload", "/_matrix/client/v3/keys/claim", "Playground: " + ts.base + "/ "} {
		if !strings.Contains(out, want) {
			t.Errorf("banner lacks %q:\n%s", want, out)
		}
	}
	if _, err := os.Stat(tokens); err != nil {
		t.Errorf("token file not generated: %v", err)
	}
}
