package federation

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/keyclaim/keyclaim/core"
	"github.com/keyclaim/keyclaim/hostserver/internal/matrixhttp"
)

// CodeUnauthorized is M_UNAUTHORIZED, the errcode of a federation request whose X-Matrix
// authorization fails; the server answers it with HTTP 401 (server-server API, "Request
// Authentication").
const CodeUnauthorized = matrixhttp.CodeUnauthorized

// AuthCause is which check of a federation request's authorization failed. The set is closed.
type AuthCause uint8

// The causes of [AuthError].
const (
	// CauseMissingHeader: there is no Authorization header of the X-Matrix scheme.
	CauseMissingHeader AuthCause = iota + 1
	// CauseMalformedHeader: the X-Matrix header does not follow the grammar or lacks origin,
	// key or sig.
	CauseMalformedHeader
	// CauseWrongDestination: the header's destination is not this server.
	CauseWrongDestination
	// CauseBodyNotJSON: the body is not JSON, or JSON with duplicate keys (ambiguous), so the
	// signature over it cannot be checked.
	CauseBodyNotJSON
	// CauseKeyFetchFailed: the origin's server keys could not be fetched or did not pass the
	// checks of [ParseServerKeys].
	CauseKeyFetchFailed
	// CauseUnknownKey: the origin's current keys do not include the key ID of the header.
	CauseUnknownKey
	// CauseKeyExpired: the origin's keys are past their valid_until_ts, and no newer ones could
	// be fetched.
	CauseKeyExpired
	// CauseBadSignature: the signature does not verify with the origin's key.
	CauseBadSignature
)

var causeNames = [...]string{
	CauseMissingHeader:    "missing_header",
	CauseMalformedHeader:  "malformed_header",
	CauseWrongDestination: "wrong_destination",
	CauseBodyNotJSON:      "body_not_json",
	CauseKeyFetchFailed:   "key_fetch_failed",
	CauseUnknownKey:       "unknown_key",
	CauseKeyExpired:       "key_expired",
	CauseBadSignature:     "bad_signature",
}

// String returns the cause as a snake_case name, for logs and metrics.
func (c AuthCause) String() string {
	if int(c) < len(causeNames) && causeNames[c] != "" {
		return causeNames[c]
	}
	return "unknown"
}

// AuthError is why a federation request was not authenticated: the check that failed, the
// Matrix error to answer (M_UNAUTHORIZED; for [CauseBodyNotJSON] core's M_NOT_JSON or
// M_BAD_JSON) and the
// underlying cause. errors.As finds the *core.Error in it, so a server that maps errcodes to
// statuses needs only to map [CodeUnauthorized] to 401. Errors compare by cause:
// errors.Is(err, &AuthError{Cause: CauseBadSignature}).
type AuthError struct {
	Cause  AuthCause
	Matrix *core.Error
	Err    error // the underlying error, if any
}

// Error returns the Matrix error and the underlying error.
func (e *AuthError) Error() string {
	if e.Err != nil {
		return e.Matrix.Error() + ": " + e.Err.Error()
	}
	return e.Matrix.Error()
}

// Unwrap returns the Matrix error and the underlying error.
func (e *AuthError) Unwrap() []error {
	if e.Err != nil {
		return []error{e.Matrix, e.Err}
	}
	return []error{e.Matrix}
}

// Is reports whether target is an *AuthError with the same cause.
func (e *AuthError) Is(target error) bool {
	t, ok := target.(*AuthError)
	return ok && t.Cause == e.Cause
}

func authErr(cause AuthCause, err error, format string, args ...any) *AuthError {
	code := CodeUnauthorized
	if cause == CauseBodyNotJSON {
		// core's reading of the body: M_NOT_JSON, or M_BAD_JSON for JSON that is ambiguous
		// (duplicate keys) or nested too deep, as BRIEF 2 answers any request body.
		code = core.CodeNotJSON
		if ce := (*core.Error)(nil); errors.As(err, &ce) {
			code = ce.Code
		}
	}
	return &AuthError{Cause: cause, Matrix: &core.Error{Code: code, Message: fmt.Sprintf(format, args...)}, Err: err}
}

// KeyFetcher fetches and checks a server's keys from GET /_matrix/key/v2/server. [*Client]
// implements it over the same discovery and transport as every outgoing request.
type KeyFetcher interface {
	FetchServerKeys(ctx context.Context, server core.ServerName) (*ServerKeys, error)
}

// VerifierOptions configure a [Verifier].
type VerifierOptions struct {
	// ServerName is this server: the destination requests must name.
	ServerName core.ServerName
	// Keys fetches origins' keys; typically the *Client of outgoing requests.
	Keys KeyFetcher
	// Clock is the time source (nil means time.Now).
	Clock func() time.Time
	// MinRefetchInterval is the least time between two fetches of one origin's keys, so that
	// requests naming unknown key IDs cannot make us fetch without end (0 means 1 minute).
	MinRefetchInterval time.Duration
	// FetchTimeout bounds one key fetch (0 means 10 s). The fetch runs on even if the request
	// that caused it gives up, so that its result is cached.
	FetchTimeout time.Duration
	// MaxOrigins bounds the number of origins whose keys are cached (0 means 10,000).
	MaxOrigins int
	// Logger receives key fetch logs (nil means slog.Default()).
	Logger *slog.Logger
}

// Verifier authenticates incoming federation requests: it checks the X-Matrix header against
// this server's name and the origin's keys, fetched through a [KeyFetcher] and cached until
// their valid_until_ts (at most [MaxKeyValidity]); a key is never used past it. It implements
// hostserver's FederationAuthenticator. It is safe for concurrent use.
type Verifier struct {
	name       core.ServerName
	keys       KeyFetcher
	now        func() time.Time
	minRefetch time.Duration
	timeout    time.Duration
	maxOrigins int
	log        *slog.Logger

	mu     sync.Mutex
	cache  map[core.ServerName]*originKeys
	flight flight[struct{}]
}

// originKeys is what the Verifier knows of one origin's keys.
type originKeys struct {
	keys        *ServerKeys // the last keys fetched successfully, or nil
	validUntil  time.Time   // min(keys.ValidUntil, fetch time + MaxKeyValidity)
	lastAttempt time.Time
	lastErr     error // the error of the last fetch, nil if it succeeded
}

// NewVerifier returns a Verifier. ServerName and Keys are required.
func NewVerifier(opts VerifierOptions) (*Verifier, error) {
	if _, err := core.ParseServerName(string(opts.ServerName)); err != nil {
		return nil, fmt.Errorf("federation verifier: %w", err)
	}
	if opts.Keys == nil {
		return nil, errors.New("federation verifier: a KeyFetcher is required")
	}
	v := &Verifier{
		name:       opts.ServerName,
		keys:       opts.Keys,
		now:        opts.Clock,
		minRefetch: opts.MinRefetchInterval,
		timeout:    opts.FetchTimeout,
		maxOrigins: opts.MaxOrigins,
		log:        opts.Logger,
		cache:      map[core.ServerName]*originKeys{},
	}
	if v.now == nil {
		v.now = time.Now
	}
	if v.minRefetch <= 0 {
		v.minRefetch = time.Minute
	}
	if v.timeout <= 0 {
		v.timeout = 10 * time.Second
	}
	if v.maxOrigins <= 0 {
		v.maxOrigins = 10000
	}
	if v.log == nil {
		v.log = slog.Default()
	}
	return v, nil
}

// AuthenticateFederation authenticates r, whose body has been read into body, and returns the
// origin server. Errors are *AuthError. The signed uri is r.RequestURI, the request target as
// received.
func (v *Verifier) AuthenticateFederation(r *http.Request, body []byte) (core.ServerName, error) {
	return v.Verify(r.Context(), r.Method, requestURI(r), r.Header.Values("Authorization"), body)
}

// requestURI returns the path and query of r as the client sent them.
func requestURI(r *http.Request) string {
	if strings.HasPrefix(r.RequestURI, "/") {
		return r.RequestURI
	}
	return r.URL.RequestURI()
}

// Verify authenticates a request given its method, request target (path and query as sent),
// Authorization header values and body, and returns the origin server. The first X-Matrix
// header is checked; others are ignored. Errors are *AuthError.
func (v *Verifier) Verify(ctx context.Context, method, uri string, authorization []string, body []byte) (core.ServerName, error) {
	var x XMatrix
	found := false
	for _, h := range authorization {
		var err error
		x, err = ParseXMatrix(h)
		if errors.Is(err, ErrNotXMatrix) {
			continue
		}
		if err != nil {
			return "", authErr(CauseMalformedHeader, err, "%v", err)
		}
		found = true
		break
	}
	if !found {
		return "", authErr(CauseMissingHeader, nil, "missing Authorization header with the X-Matrix scheme")
	}
	if x.Destination != "" && x.Destination != v.name {
		return "", authErr(CauseWrongDestination, nil, "X-Matrix destination %q is not this server (%s)", x.Destination, v.name)
	}
	var content *core.Value
	if len(body) > 0 {
		c, err := core.ParseValue(body)
		if err != nil {
			if ce := (*core.Error)(nil); errors.As(err, &ce) && ce.Code != core.CodeNotJSON {
				return "", authErr(CauseBodyNotJSON, err, "request body is not usable JSON (%s), so its X-Matrix signature cannot be checked", ce.Message)
			}
			return "", authErr(CauseBodyNotJSON, err, "request body is not JSON, so its X-Matrix signature cannot be checked")
		}
		content = &c
	}
	if !strings.HasPrefix(string(x.Key), AlgorithmEd25519+":") {
		return "", authErr(CauseUnknownKey, nil, "X-Matrix key %q: only ed25519 keys are supported", x.Key)
	}
	key, err := v.key(ctx, x.Origin, x.Key)
	if err != nil {
		return "", err
	}
	signed := requestJSON(method, uri, x.Origin, v.name, content)
	if err := verifySignature(signed.AppendJSON(nil), x.Signature, key); err != nil {
		return "", authErr(CauseBadSignature, err, "X-Matrix signature of %s with key %s does not verify for %s %s", x.Origin, x.Key, method, uri)
	}
	return x.Origin, nil
}

// key returns the current verify key keyID of origin, fetching the origin's keys when they are
// not cached, expired, or lack keyID (at most once per MinRefetchInterval).
func (v *Verifier) key(ctx context.Context, origin core.ServerName, keyID core.KeyID) (ed25519.PublicKey, error) {
	now := v.now()
	v.mu.Lock()
	e := v.cache[origin]
	if e != nil && e.keys != nil && now.Before(e.validUntil) {
		if k, ok := e.keys.VerifyKeys[keyID]; ok {
			v.mu.Unlock()
			return k, nil
		}
	}
	fresh := e != nil && now.Sub(e.lastAttempt) < v.minRefetch
	v.mu.Unlock()
	if !fresh {
		_, err := v.flight.do(ctx, string(origin), v.timeout, func(fctx context.Context) struct{} {
			v.fetch(fctx, origin)
			return struct{}{}
		})
		if err != nil {
			return nil, authErr(CauseKeyFetchFailed, err, "gave up waiting for the server keys of %s: %v", origin, err)
		}
	}
	now = v.now()
	v.mu.Lock()
	defer v.mu.Unlock()
	e = v.cache[origin]
	switch {
	case e == nil:
		return nil, authErr(CauseKeyFetchFailed, nil, "no server keys of %s", origin)
	case e.keys != nil && now.Before(e.validUntil):
		if k, ok := e.keys.VerifyKeys[keyID]; ok {
			return k, nil
		}
		if e.lastErr != nil {
			return nil, authErr(CauseKeyFetchFailed, e.lastErr, "%v", e.lastErr)
		}
		return nil, authErr(CauseUnknownKey, nil, "%s has no current key %s", origin, keyID)
	case e.lastErr != nil:
		return nil, authErr(CauseKeyFetchFailed, e.lastErr, "%v", e.lastErr)
	default:
		return nil, authErr(CauseKeyExpired, nil, "the server keys of %s expired at %s (valid_until_ts %d)",
			origin, e.keys.ValidUntil.UTC().Format(time.RFC3339), e.keys.ValidUntil.UnixMilli())
	}
}

// fetch fetches origin's keys and records the result.
func (v *Verifier) fetch(ctx context.Context, origin core.ServerName) {
	keys, err := v.keys.FetchServerKeys(ctx, origin)
	now := v.now()
	v.mu.Lock()
	defer v.mu.Unlock()
	e := v.cache[origin]
	if e == nil {
		v.evict(now)
		e = &originKeys{}
		v.cache[origin] = e
	}
	e.lastAttempt = now
	e.lastErr = err
	if err != nil {
		v.log.LogAttrs(ctx, slog.LevelWarn, "federation: fetching server keys failed",
			slog.String("origin", string(origin)), slog.String("error", err.Error()))
		return
	}
	e.keys = keys
	e.validUntil = keys.ValidUntil
	if limit := now.Add(MaxKeyValidity); limit.Before(e.validUntil) {
		e.validUntil = limit
	}
	v.log.LogAttrs(ctx, slog.LevelDebug, "federation: fetched server keys",
		slog.String("origin", string(origin)), slog.Int("keys", len(keys.VerifyKeys)), slog.Time("valid_until", e.validUntil))
}

// evict makes room for one more origin when the cache is full: origins whose keys expired
// first, then any. v.mu is held.
func (v *Verifier) evict(now time.Time) {
	if len(v.cache) < v.maxOrigins {
		return
	}
	for o, e := range v.cache {
		if (e.keys == nil || !now.Before(e.validUntil)) && now.Sub(e.lastAttempt) >= v.minRefetch {
			delete(v.cache, o)
		}
	}
	for o := range v.cache {
		if len(v.cache) < v.maxOrigins {
			break
		}
		delete(v.cache, o)
	}
}
