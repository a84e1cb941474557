package hostserver

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keyclaim/keyclaim/core"
)

// Identity is who an access token belongs to: a local user and, for tokens bound to a device,
// the device.
type Identity struct {
	User   core.UserID
	Device core.DeviceID // empty when the token is not bound to a device
	// DisplayName is the device's display name from the token file ("" when it gives none).
	DisplayName string
}

// Authenticator checks client access tokens (client-server API, "Client Authentication").
//
// Authenticate returns the identity of token, or an error the HTTP layer answers: a Matrix error
// M_UNKNOWN_TOKEN (401) for a token it does not know, or a failure of a service it depends on
// (502/503). It is called for every authenticated request and must be safe for concurrent use.
type Authenticator interface {
	Authenticate(ctx context.Context, token string) (Identity, error)
}

// errUnknownToken is the answer to an access token nobody knows.
func errUnknownToken() error {
	return matrixErr(CodeUnknownToken, "unrecognised access token")
}

// accessToken returns the access token of a request: the Authorization: Bearer header, else the
// deprecated access_token query parameter. ok is false when there is none.
func accessToken(r *http.Request) (string, bool) {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, token, found := strings.Cut(h, " ")
		if found && strings.EqualFold(scheme, "Bearer") {
			if token = strings.TrimSpace(token); token != "" {
				return token, true
			}
		}
		return "", false
	}
	if t := r.URL.Query().Get("access_token"); t != "" {
		return t, true
	}
	return "", false
}

// TokenFileAuth authenticates with a static token file, JSON
// {"<access token>": {"user_id": "@alice:example.org", "device_id": "ALICEDEV", "display_name": "Alice's phone"}, ...}
// (display_name optional), for development, tests and load drivers. [TokenFileAuth.Reload]
// rereads the file (the server calls it on SIGHUP); an invalid file leaves the previous tokens in
// force. It is also the [DeviceNamer] of the devices it names.
type TokenFileAuth struct {
	path   string
	server core.ServerName
	tokens atomic.Pointer[map[string]Identity]
	names  atomic.Pointer[map[userDevice]string]
}

// userDevice names one device of one user.
type userDevice struct {
	user   core.UserID
	device string
}

// DeviceNamer gives the display names of devices, which /keys/query returns as
// unsigned.device_display_name of local devices (as Synapse does).
type DeviceNamer interface {
	// DeviceDisplayName returns the display name of the device of user, if it has one.
	DeviceDisplayName(user core.UserID, device string) (string, bool)
}

// NewTokenFileAuth reads the token file at path. Every user must be local to server.
func NewTokenFileAuth(path string, server core.ServerName) (*TokenFileAuth, error) {
	a := &TokenFileAuth{path: path, server: server}
	if err := a.Reload(); err != nil {
		return nil, err
	}
	return a, nil
}

// Path returns the token file's path.
func (a *TokenFileAuth) Path() string { return a.path }

// Reload rereads the token file. If the file cannot be read or is invalid, the tokens loaded
// before stay in force and the error says why.
func (a *TokenFileAuth) Reload() error {
	tokens, err := ReadTokenFile(a.path, a.server)
	if err != nil {
		return err
	}
	names := map[userDevice]string{}
	for _, id := range tokens {
		if id.DisplayName != "" {
			names[userDevice{id.User, string(id.Device)}] = id.DisplayName
		}
	}
	a.names.Store(&names) // a request may see the new names with the old tokens: both are valid
	a.tokens.Store(&tokens)
	return nil
}

// DeviceDisplayName returns the display_name the token file gives the device.
func (a *TokenFileAuth) DeviceDisplayName(user core.UserID, device string) (string, bool) {
	name, ok := (*a.names.Load())[userDevice{user, device}]
	return name, ok
}

// Len returns the number of tokens in force.
func (a *TokenFileAuth) Len() int { return len(*a.tokens.Load()) }

// Authenticate looks the token up.
func (a *TokenFileAuth) Authenticate(_ context.Context, token string) (Identity, error) {
	id, ok := (*a.tokens.Load())[token]
	if !ok {
		return Identity{}, errUnknownToken()
	}
	return id, nil
}

// tokenEntry is one entry of a token file.
type tokenEntry struct {
	UserID      string `json:"user_id"`
	DeviceID    string `json:"device_id"`
	DisplayName string `json:"display_name,omitempty"`
}

// ReadTokenFile reads and validates a token file: every token non-empty, every user ID valid
// and local to server, every device ID non-empty, and a device given a display_name by several
// tokens given the same one.
func ReadTokenFile(path string, server core.ServerName) (map[string]Identity, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("token file: %w", err)
	}
	if _, err := core.ParseValue(data); err != nil { // rejects duplicate tokens
		return nil, fmt.Errorf("token file %s: %w", path, err)
	}
	var entries map[string]tokenEntry
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&entries); err != nil {
		return nil, fmt.Errorf("token file %s: want {\"<token>\": {\"user_id\": ..., \"device_id\": ..., \"display_name\": ... (optional)}}: %w", path, err)
	}
	tokens := make(map[string]Identity, len(entries))
	names := map[userDevice]string{}
	for token, e := range entries {
		if token == "" {
			return nil, fmt.Errorf("token file %s: an empty access token", path)
		}
		user, err := core.ParseUserID(e.UserID)
		if err != nil {
			return nil, fmt.Errorf("token file %s: %w", path, err)
		}
		if user.Server() != server {
			return nil, fmt.Errorf("token file %s: user %s is not local to this server (%s)", path, user, server)
		}
		if e.DeviceID == "" {
			return nil, fmt.Errorf("token file %s: user %s has an empty device_id", path, user)
		}
		if e.DisplayName != "" {
			k := userDevice{user, e.DeviceID}
			if other, ok := names[k]; ok && other != e.DisplayName {
				return nil, fmt.Errorf("token file %s: device %s of %s has two display names, %q and %q", path, e.DeviceID, user, other, e.DisplayName)
			}
			names[k] = e.DisplayName
		}
		tokens[token] = Identity{User: user, Device: core.DeviceID(e.DeviceID), DisplayName: e.DisplayName}
	}
	return tokens, nil
}

// WhoamiAuth delegates token checks to a homeserver: a token is valid when
// GET <homeserver>/_matrix/client/v3/account/whoami accepts it, and belongs to the user_id and
// device_id it answers. Successes are cached for a short time in a bounded cache, keyed by a hash
// of the token. A 401 from the homeserver is M_UNKNOWN_TOKEN; a homeserver that cannot be reached
// is 503 M_UNKNOWN and one that answers anything else is 502 M_UNKNOWN.
type WhoamiAuth struct {
	endpoint string
	server   core.ServerName
	client   *http.Client
	ttl      time.Duration
	maxSize  int
	now      func() time.Time

	mu    sync.Mutex
	cache map[[32]byte]cachedIdentity
}

type cachedIdentity struct {
	id      Identity
	expires time.Time
}

// Defaults of [WhoamiAuth].
const (
	WhoamiCacheTTL  = 60 * time.Second // how long a successful check is reused
	WhoamiCacheSize = 10_000           // the most tokens cached at once
	WhoamiTimeout   = 10 * time.Second // the longest a check may take
)

// NewWhoamiAuth returns an authenticator that asks the homeserver at base (a URL such as
// "https://matrix.example.org") and accepts only users local to server. client may be nil.
func NewWhoamiAuth(base string, server core.ServerName, client *http.Client) (*WhoamiAuth, error) {
	u, err := url.Parse(strings.TrimRight(base, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("homeserver %q: want an http:// or https:// base URL", base)
	}
	if client == nil {
		client = &http.Client{Timeout: WhoamiTimeout}
	}
	return &WhoamiAuth{
		endpoint: u.String() + "/_matrix/client/v3/account/whoami",
		server:   server,
		client:   client,
		ttl:      WhoamiCacheTTL,
		maxSize:  WhoamiCacheSize,
		now:      time.Now,
		cache:    map[[32]byte]cachedIdentity{},
	}, nil
}

// Authenticate checks token with the homeserver, or answers from the cache.
func (a *WhoamiAuth) Authenticate(ctx context.Context, token string) (Identity, error) {
	key := sha256.Sum256([]byte(token))
	now := a.now()
	a.mu.Lock()
	c, ok := a.cache[key]
	a.mu.Unlock()
	if ok && now.Before(c.expires) {
		return c.id, nil
	}
	id, err := a.whoami(ctx, token)
	if err != nil {
		return Identity{}, err
	}
	a.remember(key, id, now)
	return id, nil
}

func (a *WhoamiAuth) remember(key [32]byte, id Identity, now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.cache) >= a.maxSize {
		for k, v := range a.cache {
			if !now.Before(v.expires) {
				delete(a.cache, k)
			}
		}
		// Still full: drop arbitrary entries (map order) until there is room.
		for k := range a.cache {
			if len(a.cache) < a.maxSize {
				break
			}
			delete(a.cache, k)
		}
	}
	a.cache[key] = cachedIdentity{id: id, expires: now.Add(a.ttl)}
}

// whoami asks the homeserver.
func (a *WhoamiAuth) whoami(ctx context.Context, token string) (Identity, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.endpoint, nil)
	if err != nil {
		return Identity{}, fmt.Errorf("whoami request: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := a.client.Do(req)
	if err != nil {
		return Identity{}, unavailableErr("the homeserver that checks access tokens cannot be reached", fmt.Errorf("whoami: %w", err))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return Identity{}, unavailableErr("the homeserver that checks access tokens did not answer completely", fmt.Errorf("whoami: %w", err))
	}
	switch {
	case resp.StatusCode == http.StatusUnauthorized:
		return Identity{}, errUnknownToken()
	case resp.StatusCode != http.StatusOK:
		return Identity{}, upstreamErr(fmt.Sprintf("the homeserver that checks access tokens answered HTTP %d", resp.StatusCode),
			fmt.Errorf("whoami: HTTP %d: %.200s", resp.StatusCode, body))
	}
	var who struct {
		UserID   string `json:"user_id"`
		DeviceID string `json:"device_id"`
	}
	if err := json.Unmarshal(body, &who); err != nil {
		return Identity{}, upstreamErr("the homeserver that checks access tokens gave an answer that is not JSON", fmt.Errorf("whoami: %w", err))
	}
	user, err := core.ParseUserID(who.UserID)
	if err != nil {
		return Identity{}, upstreamErr("the homeserver that checks access tokens answered an invalid user ID", fmt.Errorf("whoami: %w", err))
	}
	if user.Server() != a.server {
		return Identity{}, upstreamErr("the homeserver that checks access tokens answered a user of another server; check --server-name",
			fmt.Errorf("whoami: user %s is not on %s", user, a.server))
	}
	return Identity{User: user, Device: core.DeviceID(who.DeviceID)}, nil
}

// FederationAuthenticator authenticates inbound federation requests (server-server API,
// "Request Authentication": the X-Matrix Authorization header). It returns the origin server.
// body is the request body, which the X-Matrix signature covers.
//
// The server's own is a [federation.Verifier]: any failed check is an error wrapping a
// *core.Error M_UNAUTHORIZED (401) whose message says which check failed. Config may replace it
// (tests, embedding programs).
type FederationAuthenticator interface {
	AuthenticateFederation(r *http.Request, body []byte) (origin core.ServerName, err error)
}

// buildAuthenticator returns the authenticator the configuration names.
func buildAuthenticator(cfg *Config, logger *slog.Logger) (Authenticator, error) {
	if cfg.Authenticator != nil {
		return cfg.Authenticator, nil
	}
	server := core.ServerName(cfg.ServerName)
	if cfg.Homeserver != "" {
		logger.Info("access tokens are checked by the homeserver", "homeserver", cfg.Homeserver)
		return NewWhoamiAuth(cfg.Homeserver, server, nil)
	}
	if cfg.Dev {
		if _, created, err := EnsureDevTokens(cfg.Tokens, server); err != nil {
			return nil, err
		} else if created {
			logger.Info("generated a development token file", "tokens", cfg.Tokens)
		}
	}
	a, err := NewTokenFileAuth(cfg.Tokens, server)
	if err != nil {
		return nil, err
	}
	logger.Info("access tokens are read from the token file", "tokens", cfg.Tokens, "count", a.Len())
	return a, nil
}
