package hostserver

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/keyclaim/keyclaim/core"
	"github.com/keyclaim/keyclaim/hostserver/federation"
	"github.com/keyclaim/keyclaim/hostserver/internal/compat"
	"github.com/keyclaim/keyclaim/hostserver/proxy"
	"github.com/keyclaim/keyclaim/hostserver/store"
	"go.yaml.in/yaml/v3"
)

// Config is the configuration of a keys server. [LoadConfig] fills it from flags, the
// environment and a config file; [DefaultConfig] gives the defaults. The fields after the
// "Dependencies" comment are not configuration: a program embedding the server (a test, a load
// driver) may set them to replace what the server would otherwise build from the configuration.
type Config struct {
	Listen     string // --listen: the address to listen on
	ServerName string // --server-name: this server's Matrix server name
	DB         string // --db: "sqlite:PATH" or "postgres://..."
	Tokens     string // --tokens: the static access token file
	Mode       string // --mode: "msc4072" or "legacy"
	// LegacyUserAgents (--legacy-user-agents) is a regular expression (Go RE2 syntax) matched
	// against the User-Agent of client claim requests: in msc4072 mode a client that matches is
	// answered legacy-shaped (the client compatibility policy, README "Client compatibility").
	// The default matches matrix-nio; empty answers every client in the --mode shape.
	LegacyUserAgents string
	// FederationAnswers (--federation-answers) is the shape of inbound federation claim
	// answers: "legacy" (the default) or "msc4072". A requesting server that implements MSC4072
	// completes its client's answer from its own request, so {} there helps nobody, and one that
	// copies remote answers into its clients' (Synapse) would pass {} to clients we cannot see.
	FederationAnswers string
	Engine            string        // --engine: "native" or "wasm"
	WasmModule        string        // --wasm-module: the module file for --engine wasm ("" = embedded)
	MaxBodyBytes      int           // --max-body-bytes: the request body limit
	MaxPairs          int           // --max-pairs: (user, device) pairs per claim request
	MaxTimeout        time.Duration // --max-timeout: the cap on a claim's timeout
	DefaultTimeout    time.Duration // --default-timeout: a claim's timeout when it names none
	Homeserver        string        // --homeserver: delegate token checks to this homeserver's whoami
	Dev               bool          // --dev: generate a development token file and print how to use it
	LogFormat         string        // --log-format: "text" or "json"
	LogLevel          string        // --log-level: "debug", "info", "warn" or "error"
	// GCPercent (--gc-percent) is the Go garbage collector's target percentage that New sets for
	// the process (debug.SetGCPercent), unless the GOGC environment variable is set, which then
	// wins; 0 leaves the runtime's setting alone. See DESIGN.md, "Why does the keys server set
	// the garbage collector to 400 %?".
	GCPercent int
	// Playground (--playground) serves the browser playground (web/, embedded at build time) at
	// "/" without the rest of development mode. --dev serves it too, and only --dev gives the
	// page live mode's development tokens. See hostserver/README.md, "Playground".
	Playground bool

	// Federation (server-server API). See hostserver/README.md, "Federation".

	// FederationEnabled (--federation, on by default) turns federation on: the signing key is
	// loaded (or created), GET /_matrix/key/v2/server is served, inbound federation requests are
	// verified with X-Matrix and remote users are claimed from their servers. Off, remote users
	// are failures of their server and the federation endpoints answer 403 M_FORBIDDEN.
	FederationEnabled bool
	// SigningKey (--signing-key) is the file of this server's ed25519 signing key, in Synapse's
	// format; it is created on first start when missing.
	SigningKey string
	// FederationResolve (--federation-resolve, repeatable) maps server names to base URLs that
	// bypass server discovery: "hs2.test=http://127.0.0.1:8448". The only way to use plain HTTP.
	FederationResolve federation.StaticRoutes
	// FederationTimeoutCap (--federation-timeout-cap) is the longest a client request waits for
	// remote servers, whatever timeout the client asked for.
	FederationTimeoutCap time.Duration
	// FederationMaxResponseBytes (--federation-max-response-bytes) is the floor of the bound on
	// the body of a remote server's claim or query answer: the bound of an answer to a request
	// that names no device. A larger answer is a failure of that server (502).
	FederationMaxResponseBytes int64
	// FederationResponseBytesPerDevice (--federation-response-bytes-per-device) is added to that
	// bound for every device the request names, so that a claim within --max-pairs can be
	// answered in full (a query user asked for all of its devices counts as 10,000); the bound
	// is at most [Config.FederationMaxResponseBytesCeiling]. 0 means none: every
	// answer is bounded by FederationMaxResponseBytes. See DESIGN.md, "Why does the bound on a
	// remote answer grow with the request?".
	FederationResponseBytesPerDevice int64
	// FederationAllowPrivateIPs (--federation-allow-private-ips) lets discovered servers be at
	// loopback, private and other non-public addresses (static routes always may).
	FederationAllowPrivateIPs bool

	// Proxy mode (issue 6). See hostserver/proxy/README.md.

	// Upstream (--upstream) turns on proxy mode: POST /keys/claim is forwarded to this existing
	// homeserver with the client's own Authorization header and body, and its answer is
	// completed before it goes back. Nothing is stored; no token file, database or signing key
	// is needed.
	Upstream string
	// UpstreamPassthrough (--upstream-passthrough) proxies every other path to the upstream
	// unchanged, so that keyclaim can be the one entry point.
	UpstreamPassthrough bool
	// UpstreamTrustForwarded (--upstream-trust-forwarded) keeps the X-Forwarded-* headers set by
	// a reverse proxy in front of keyclaim instead of replacing them.
	UpstreamTrustForwarded bool
	// UpstreamMaxResponseBytes (--upstream-max-response-bytes) is the floor of the bound on the
	// body of the upstream's claim answer: the bound of an answer to a claim that names no
	// device. A larger answer is 502 (and the keys it carried are lost: the upstream handed them
	// out).
	UpstreamMaxResponseBytes int64
	// UpstreamResponseBytesPerDevice (--upstream-response-bytes-per-device) is added to that
	// bound for every (user, device) the claim names, so that a claim within --max-pairs is read
	// in full; the bound is at most [Config.UpstreamMaxResponseBytesCeiling]. 0 means none:
	// every answer is bounded by UpstreamMaxResponseBytes. See DESIGN.md, "Why does the bound on
	// a remote answer grow with the request?".
	UpstreamResponseBytesPerDevice int64

	// Dependencies. Each is optional; nil means "build it from the configuration".

	// Logger receives the server's logs; nil builds one on stderr from LogFormat and LogLevel.
	Logger *slog.Logger
	// Store replaces the store that DB names. The server closes it on Shutdown.
	Store store.Store
	// Authenticator replaces the token file or homeserver authentication.
	Authenticator Authenticator
	// FederationAuthenticator authenticates inbound federation requests; nil means X-Matrix
	// verification with the origin's published keys (a [federation.Verifier]).
	FederationAuthenticator FederationAuthenticator
	// PlaygroundFS replaces the playground site embedded at build time (--dev, --playground):
	// a directory like web/dist. nil means the embedded one.
	PlaygroundFS fs.FS
	// Federation claims and queries keys of remote users; nil means the X-Matrix signing
	// [federation.Client] built from the configuration ([NoFederation] when federation is off).
	Federation Federation
}

// DefaultConfig returns the defaults of every setting.
func DefaultConfig() Config {
	lim := core.DefaultLimits()
	return Config{
		Listen:     "127.0.0.1:8008",
		ServerName: "localhost",
		DB:         "sqlite:./var/keyclaim.db",
		Mode:       string(core.ModeMSC4072),
		Engine:     "native",

		LegacyUserAgents:  compat.DefaultLegacyUserAgents,
		FederationAnswers: string(core.ModeLegacy),

		MaxBodyBytes:   lim.MaxBodyBytes,
		MaxPairs:       lim.MaxPairs,
		MaxTimeout:     time.Duration(lim.MaxTimeoutMS) * time.Millisecond,
		DefaultTimeout: time.Duration(lim.DefaultTimeoutMS) * time.Millisecond,
		LogFormat:      "text",
		LogLevel:       "info",
		GCPercent:      DefaultGCPercent,

		FederationEnabled:                true,
		SigningKey:                       DefaultSigningKeyPath,
		FederationTimeoutCap:             DefaultFederationTimeoutCap,
		FederationMaxResponseBytes:       federation.DefaultMaxResponseBytes,
		FederationResponseBytesPerDevice: federation.DefaultResponseBytesPerDevice,

		UpstreamMaxResponseBytes:       proxy.DefaultMaxUpstreamBody,
		UpstreamResponseBytesPerDevice: proxy.DefaultUpstreamBodyPerDevice,
	}
}

// MaxFederationResponseBytesPerDevice is the largest --federation-response-bytes-per-device and
// --upstream-response-bytes-per-device: no device's keys come near it.
const MaxFederationResponseBytesPerDevice = 1 << 20

// FederationMaxResponseBytesCeiling returns the largest bound on a remote server's claim or
// query answer: FederationMaxResponseBytes plus FederationResponseBytesPerDevice for MaxPairs
// devices, the most one request may name (math.MaxInt64 if that overflows).
func (c *Config) FederationMaxResponseBytesCeiling() int64 {
	return federation.ResponseBound(c.FederationMaxResponseBytes, c.FederationResponseBytesPerDevice, int64(c.MaxPairs))
}

// UpstreamMaxResponseBytesCeiling returns the largest bound on the upstream's claim answer in
// proxy mode: UpstreamMaxResponseBytes plus UpstreamResponseBytesPerDevice for MaxPairs
// devices, the most one claim may name (math.MaxInt64 if that overflows).
func (c *Config) UpstreamMaxResponseBytesCeiling() int64 {
	return federation.ResponseBound(c.UpstreamMaxResponseBytes, c.UpstreamResponseBytesPerDevice, int64(c.MaxPairs))
}

// Federation defaults.
const (
	// DefaultSigningKeyPath is where the signing key lives unless --signing-key says otherwise.
	DefaultSigningKeyPath = "./var/signing.key"
	// DefaultFederationTimeoutCap is the default of --federation-timeout-cap, the default of
	// --max-timeout: by default the client's timeout alone bounds the fan-out.
	DefaultFederationTimeoutCap = 60 * time.Second
)

// DefaultGCPercent is the default of --gc-percent: the heap may grow to 5 times the live heap
// between collections (Go's default is 100, twice), which measured 7-15 % less CPU per claimed
// device for about 12 MB more memory under the load driver's claims.
const DefaultGCPercent = 400

// DevTokensPath is the token file --dev uses when --tokens is not given.
const DevTokensPath = "./var/dev-tokens.json"

// EnvPrefix prefixes the environment variable of every setting: --max-body-bytes is
// KEYCLAIM_MAX_BODY_BYTES.
const EnvPrefix = "KEYCLAIM_"

// EnvName returns the environment variable that sets the flag name.
func EnvName(flagName string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// LoadConfig reads the configuration from the command-line arguments (without the program
// name), the environment (through lookupEnv, normally os.LookupEnv) and the config file that
// --config (or KEYCLAIM_CONFIG) names, YAML or JSON, whose keys are the flag names. A flag wins
// over the environment, which wins over the file, which wins over the default. The result is
// validated. -h and --help return flag.ErrHelp after writing the usage to usage.
func LoadConfig(args []string, lookupEnv func(string) (string, bool), usage io.Writer) (Config, error) {
	cfg := DefaultConfig()
	fs := flag.NewFlagSet("keyclaim-server", flag.ContinueOnError)
	fs.SetOutput(usage)
	var configFile string
	fs.StringVar(&configFile, "config", "", "read settings from this YAML or JSON file (keys are the flag names)")
	fs.StringVar(&cfg.Listen, "listen", cfg.Listen, "address to listen on (host:port)")
	fs.StringVar(&cfg.ServerName, "server-name", cfg.ServerName, "this server's Matrix server name")
	fs.StringVar(&cfg.DB, "db", cfg.DB, "key store: sqlite:PATH or postgres://...")
	fs.StringVar(&cfg.Tokens, "tokens", cfg.Tokens, "static access token file (JSON {token: {user_id, device_id}}), reloaded on SIGHUP")
	fs.StringVar(&cfg.Mode, "mode", cfg.Mode, "claim answers: msc4072 (complete) or legacy (spec v1.19)")
	fs.StringVar(&cfg.LegacyUserAgents, "legacy-user-agents", cfg.LegacyUserAgents, "client compatibility: in msc4072 mode, answer client claims legacy-shaped (no {} entries) to clients whose User-Agent matches this regular expression (Go RE2 syntax; the default matches matrix-nio and mautrix-python, which crash on {}; empty: none), here and in proxy mode")
	fs.StringVar(&cfg.FederationAnswers, "federation-answers", cfg.FederationAnswers, "shape of inbound federation claim answers: legacy (devices without a key left out; a requesting server completes its own client's answer) or msc4072 ({} entries)")
	fs.StringVar(&cfg.Engine, "engine", cfg.Engine, "claim engine: native or wasm")
	fs.StringVar(&cfg.WasmModule, "wasm-module", cfg.WasmModule, "WebAssembly module for --engine wasm, such as dist/keyclaim.wasm (default: the module embedded at build time)")
	fs.IntVar(&cfg.MaxBodyBytes, "max-body-bytes", cfg.MaxBodyBytes, "largest request body in bytes")
	fs.IntVar(&cfg.MaxPairs, "max-pairs", cfg.MaxPairs, "most (user, device) pairs in one claim request")
	fs.DurationVar(&cfg.MaxTimeout, "max-timeout", cfg.MaxTimeout, "cap on a claim request's timeout")
	fs.DurationVar(&cfg.DefaultTimeout, "default-timeout", cfg.DefaultTimeout, "a claim request's timeout when it names none")
	fs.StringVar(&cfg.Homeserver, "homeserver", cfg.Homeserver, "check access tokens with this homeserver's /account/whoami (base URL)")
	fs.BoolVar(&cfg.Dev, "dev", cfg.Dev, "development mode: generate a token file if missing and print how to use it")
	fs.BoolVar(&cfg.Playground, "playground", cfg.Playground, "serve the browser playground at / (--dev serves it too, with live mode)")
	fs.StringVar(&cfg.LogFormat, "log-format", cfg.LogFormat, "log format: text or json")
	fs.StringVar(&cfg.LogLevel, "log-level", cfg.LogLevel, "log level: debug, info, warn or error")
	fs.IntVar(&cfg.GCPercent, "gc-percent", cfg.GCPercent, "Go garbage collector target percentage for the process (0: the runtime's default; the GOGC environment variable, when set, wins)")
	fs.BoolVar(&cfg.FederationEnabled, "federation", cfg.FederationEnabled, "federation: serve the signing key, verify inbound X-Matrix requests, claim and query remote users (off: remote users fail, federation endpoints answer 403)")
	fs.StringVar(&cfg.SigningKey, "signing-key", cfg.SigningKey, "this server's ed25519 signing key file (Synapse's format), created on first start if missing")
	fs.Var(&cfg.FederationResolve, "federation-resolve", "send requests for a server name to a base URL, bypassing discovery: `name=URL` (repeatable, or comma-separated; the only way to use plain http://)")
	fs.DurationVar(&cfg.FederationTimeoutCap, "federation-timeout-cap", cfg.FederationTimeoutCap, "the longest a client request waits for remote servers, whatever its timeout")
	fs.Int64Var(&cfg.FederationMaxResponseBytes, "federation-max-response-bytes", cfg.FederationMaxResponseBytes, "bound on a remote server's claim or query answer, in bytes, before the allowance per requested device (a larger answer makes that server a failure, 502)")
	fs.Int64Var(&cfg.FederationResponseBytesPerDevice, "federation-response-bytes-per-device", cfg.FederationResponseBytesPerDevice, "bytes added to that bound per device the request names (a query user asked for all of its devices counts as 10,000), up to the allowance of --max-pairs devices (0: none)")
	fs.StringVar(&cfg.Upstream, "upstream", cfg.Upstream, "proxy mode: complete the /keys/claim answers of this existing homeserver (base URL); nothing is stored")
	fs.BoolVar(&cfg.UpstreamPassthrough, "upstream-passthrough", cfg.UpstreamPassthrough, "proxy mode: also proxy every other path to the upstream unchanged")
	fs.BoolVar(&cfg.UpstreamTrustForwarded, "upstream-trust-forwarded", cfg.UpstreamTrustForwarded, "proxy mode: keep X-Forwarded-* headers from a reverse proxy in front of keyclaim")
	fs.Int64Var(&cfg.UpstreamMaxResponseBytes, "upstream-max-response-bytes", cfg.UpstreamMaxResponseBytes, "proxy mode: bound on the upstream's claim answer, in bytes, before the allowance per requested device (a larger answer is 502, and the keys in it are lost)")
	fs.Int64Var(&cfg.UpstreamResponseBytesPerDevice, "upstream-response-bytes-per-device", cfg.UpstreamResponseBytesPerDevice, "proxy mode: bytes added to that bound per (user, device) the claim names, up to the allowance of --max-pairs devices (0: none)")
	fs.BoolVar(&cfg.FederationAllowPrivateIPs, "federation-allow-private-ips", cfg.FederationAllowPrivateIPs, "allow discovered servers at loopback, private and other non-public addresses (static routes always may)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: keyclaim-server [flags]\n\nEvery flag can also be set by the environment variable %s<NAME> (upper case, dashes as\nunderscores) and by a key of the --config file. Precedence: flag > environment > file > default.\n\n", EnvPrefix)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected argument %q (all settings are flags)", fs.Arg(0))
	}
	onCommandLine := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { onCommandLine[f.Name] = true })

	if !onCommandLine["config"] {
		if v, ok := lookupEnv(EnvName("config")); ok {
			configFile = v
		}
	}
	var fromFile map[string]string
	if configFile != "" {
		var err error
		if fromFile, err = readConfigFile(configFile, fs); err != nil {
			return Config{}, err
		}
	}
	var setErr error
	fs.VisitAll(func(f *flag.Flag) {
		if setErr != nil || f.Name == "config" || onCommandLine[f.Name] {
			return
		}
		if v, ok := lookupEnv(EnvName(f.Name)); ok {
			if err := fs.Set(f.Name, v); err != nil {
				setErr = fmt.Errorf("environment variable %s=%q: %w", EnvName(f.Name), v, err)
			}
			return
		}
		if v, ok := fromFile[f.Name]; ok {
			if err := fs.Set(f.Name, v); err != nil {
				setErr = fmt.Errorf("config file %s: %s: %q: %w", configFile, f.Name, v, err)
			}
		}
	})
	if setErr != nil {
		return Config{}, setErr
	}
	if cfg.Dev && cfg.Tokens == "" && cfg.Homeserver == "" && cfg.Upstream == "" {
		cfg.Tokens = DevTokensPath
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// readConfigFile reads a YAML (or JSON) mapping of flag names to scalar values (or, for the
// [repeatableSettings], lists of them, joined by commas). Keys may use dashes or underscores. An unknown key is an error, so that a typo does not go unnoticed.
func readConfigFile(path string, fs *flag.FlagSet) (map[string]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config file: %w", err)
	}
	var doc map[string]yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("config file %s: %w", path, err)
	}
	out := make(map[string]string, len(doc))
	for key, node := range doc {
		name := strings.ReplaceAll(key, "_", "-")
		if name == "config" || fs.Lookup(name) == nil {
			return nil, fmt.Errorf("config file %s: unknown setting %q", path, key)
		}
		value := node.Value
		switch {
		case node.Kind == yaml.SequenceNode && repeatableSettings[name]:
			items := make([]string, 0, len(node.Content))
			for _, item := range node.Content {
				if item.Kind != yaml.ScalarNode {
					return nil, fmt.Errorf("config file %s: %s must be a list of single values", path, key)
				}
				items = append(items, item.Value)
			}
			value = strings.Join(items, ",")
		case node.Kind != yaml.ScalarNode:
			return nil, fmt.Errorf("config file %s: %s must be a single value", path, key)
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("config file %s: %s is given twice", path, name)
		}
		out[name] = value
	}
	return out, nil
}

// repeatableSettings are the flags that may be given more than once; in the config file they
// may be a list, and in the environment a comma-separated value.
var repeatableSettings = map[string]bool{"federation-resolve": true}

// Validate checks every setting and says clearly what is wrong.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		bad("--listen %q: want host:port (%v)", c.Listen, err)
	}
	if _, err := core.ParseServerName(c.ServerName); err != nil {
		bad("--server-name: %v", err)
	}
	proxyMode := c.Upstream != ""
	if proxyMode {
		u, err := url.Parse(c.Upstream)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("--upstream: want an http:// or https:// base URL, got %q", c.Upstream)
		}
		if c.Playground {
			bad("--playground is not served in proxy mode (--upstream)")
		}
	} else if c.UpstreamPassthrough || c.UpstreamTrustForwarded {
		bad("--upstream-passthrough and --upstream-trust-forwarded need --upstream")
	}
	switch {
	case proxyMode:
	case strings.HasPrefix(c.DB, "sqlite:") && len(c.DB) > len("sqlite:"):
	case strings.HasPrefix(c.DB, "postgres://"), strings.HasPrefix(c.DB, "postgresql://"):
	default:
		if c.Store == nil {
			bad("--db: want sqlite:PATH or postgres://..., got %q", redact(c.DB))
		}
	}
	if _, err := core.ParseMode(c.Mode); err != nil || c.Mode == "" {
		bad("--mode: want msc4072 or legacy, got %q", c.Mode)
	}
	if _, err := compat.New(core.ModeMSC4072, c.LegacyUserAgents); err != nil {
		bad("%v", err)
	}
	if _, err := core.ParseMode(c.FederationAnswers); err != nil || c.FederationAnswers == "" {
		bad("--federation-answers: want legacy or msc4072, got %q", c.FederationAnswers)
	}
	if c.Engine != "native" && c.Engine != "wasm" {
		bad("--engine: want native or wasm, got %q", c.Engine)
	}
	if c.MaxBodyBytes < 2 {
		bad("--max-body-bytes must be at least 2 (the body {}), got %d", c.MaxBodyBytes)
	}
	if c.MaxPairs < 1 {
		bad("--max-pairs must be at least 1, got %d", c.MaxPairs)
	}
	if c.MaxTimeout < time.Millisecond {
		bad("--max-timeout must be at least 1ms, got %s", c.MaxTimeout)
	}
	if c.DefaultTimeout < 0 || c.DefaultTimeout > c.MaxTimeout {
		bad("--default-timeout must be between 0 and --max-timeout (%s), got %s", c.MaxTimeout, c.DefaultTimeout)
	}
	if c.Homeserver != "" {
		u, err := url.Parse(c.Homeserver)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("--homeserver: want an http:// or https:// base URL, got %q", c.Homeserver)
		}
	}
	if c.Authenticator == nil && !proxyMode {
		switch {
		case c.Tokens != "" && c.Homeserver != "":
			bad("--tokens and --homeserver exclude each other: choose one way to check access tokens")
		case c.Tokens == "" && c.Homeserver == "":
			bad("no authentication configured: give --tokens FILE or --homeserver URL (or --dev)")
		}
	}
	if c.FederationEnabled && c.SigningKey == "" && !proxyMode {
		bad("--signing-key: a file is required while --federation is on")
	}
	if c.FederationTimeoutCap < time.Millisecond {
		bad("--federation-timeout-cap must be at least 1ms, got %s", c.FederationTimeoutCap)
	}
	if c.FederationMaxResponseBytes < 2 {
		bad("--federation-max-response-bytes must be at least 2 (the body {}), got %d", c.FederationMaxResponseBytes)
	}
	if c.FederationResponseBytesPerDevice < 0 || c.FederationResponseBytesPerDevice > MaxFederationResponseBytesPerDevice {
		bad("--federation-response-bytes-per-device must be between 0 and %d, got %d", MaxFederationResponseBytesPerDevice, c.FederationResponseBytesPerDevice)
	}
	if c.UpstreamMaxResponseBytes < 2 {
		bad("--upstream-max-response-bytes must be at least 2 (the body {}), got %d", c.UpstreamMaxResponseBytes)
	}
	if c.UpstreamResponseBytesPerDevice < 0 || c.UpstreamResponseBytesPerDevice > MaxFederationResponseBytesPerDevice {
		bad("--upstream-response-bytes-per-device must be between 0 and %d, got %d", MaxFederationResponseBytesPerDevice, c.UpstreamResponseBytesPerDevice)
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		bad("--log-format: want text or json, got %q", c.LogFormat)
	}
	if c.GCPercent < 0 {
		bad("--gc-percent: want 0 (the runtime's default) or more, got %d", c.GCPercent)
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		bad("--log-level: %v", err)
	}
	return errors.Join(errs...)
}

// limits returns the claim request limits of core.
func (c *Config) limits() core.Limits {
	return core.Limits{
		MaxBodyBytes:     c.MaxBodyBytes,
		MaxPairs:         c.MaxPairs,
		DefaultTimeoutMS: c.DefaultTimeout.Milliseconds(),
		MaxTimeoutMS:     c.MaxTimeout.Milliseconds(),
	}
}

// LogAttrs returns the effective configuration as log attributes, secrets redacted.
func (c *Config) LogAttrs() []any {
	return []any{
		"listen", c.Listen, "server_name", c.ServerName, "db", redact(c.DB), "tokens", c.Tokens,
		"homeserver", c.Homeserver, "upstream", redact(c.Upstream), "mode", c.Mode,
		"legacy_user_agents", c.LegacyUserAgents, "federation_answers", c.FederationAnswers, "engine", c.Engine, "wasm_module", c.WasmModule,
		"max_body_bytes", c.MaxBodyBytes, "max_pairs", c.MaxPairs,
		"max_timeout", c.MaxTimeout.String(), "default_timeout", c.DefaultTimeout.String(),
		"dev", c.Dev, "playground", c.Playground || c.Dev && c.Upstream == "", "log_format", c.LogFormat, "log_level", c.LogLevel, "gc_percent", c.GCPercent,
		"federation", c.FederationEnabled, "signing_key", c.SigningKey, "federation_resolve", c.FederationResolve.String(),
		"federation_timeout_cap", c.FederationTimeoutCap.String(), "federation_max_response_bytes", c.FederationMaxResponseBytes,
		"federation_response_bytes_per_device", c.FederationResponseBytesPerDevice, "federation_max_response_bytes_ceiling", c.FederationMaxResponseBytesCeiling(),
		"federation_allow_private_ips", c.FederationAllowPrivateIPs,
		"upstream_max_response_bytes", c.UpstreamMaxResponseBytes, "upstream_response_bytes_per_device", c.UpstreamResponseBytesPerDevice,
		"upstream_max_response_bytes_ceiling", c.UpstreamMaxResponseBytesCeiling(),
	}
}

// NewLogger builds the logger that LogFormat and LogLevel describe, writing to w.
func (c *Config) NewLogger(w io.Writer) (*slog.Logger, error) {
	level, err := parseLevel(c.LogLevel)
	if err != nil {
		return nil, err
	}
	opts := &slog.HandlerOptions{Level: level}
	if c.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return slog.New(slog.NewTextHandler(w, opts)), nil
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("want debug, info, warn or error, got %q", s)
	}
	return l, nil
}

// redact hides the password of a DSN or URL, in its user information or its query.
func redact(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil || u.Scheme == "" {
		return dsn
	}
	if u.User != nil {
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
		}
	}
	if q := u.Query(); q.Has("password") {
		q.Set("password", "xxxxx")
		u.RawQuery = q.Encode()
	}
	return u.String()
}
