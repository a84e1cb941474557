package federation

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"syscall"
	"time"

	"github.com/keyclaim/keyclaim/core"
)

// The federation endpoints the client calls (user_keys.yaml).
const (
	// ClaimPath is POST /_matrix/federation/v1/user/keys/claim.
	ClaimPath = "/_matrix/federation/v1/user/keys/claim"
	// QueryPath is POST /_matrix/federation/v1/user/keys/query.
	QueryPath = "/_matrix/federation/v1/user/keys/query"
)

// Client defaults.
const (
	// DefaultMaxResponseBytes is the floor of the bound on a claim or query answer: what an
	// answer may always be, however few devices the request names.
	DefaultMaxResponseBytes = 1 << 20
	// DefaultResponseBytesPerDevice is what the bound on a claim or query answer grows by for
	// every device the request names: about 8 times the 244 bytes a claimed signed curve25519
	// key of a 10-letter device takes in a claim answer, and 5 times the 424 bytes of its
	// self-signed device keys in a query answer (measured in hostserver's
	// TestFederationClaimThousandsOfDevices), so that long user IDs, more signatures and
	// pretty-printed JSON fit.
	DefaultResponseBytesPerDevice = 2 << 10
	// DefaultMaxKeyResponseBytes bounds the body of a key server answer.
	DefaultMaxKeyResponseBytes = 256 << 10
	// DefaultTimeout bounds a request whose context has no deadline (BRIEF section 2's default
	// claim timeout).
	DefaultTimeout = 10 * time.Second
)

// Failure statuses of [Client] outcomes (the core records them as they are).
const (
	// StatusTooLarge: the answer was larger than the limit.
	StatusTooLarge = http.StatusBadGateway
	// StatusUnavailable: the server could not be reached, or is backed off.
	StatusUnavailable = http.StatusServiceUnavailable
	// StatusTimeout: no answer before the deadline.
	StatusTimeout = http.StatusGatewayTimeout
)

// Endpoint names a kind of outgoing federation request, in metrics and logs.
type Endpoint string

// The endpoints the client calls.
const (
	EndpointClaim      Endpoint = "claim"       // POST ClaimPath
	EndpointQuery      Endpoint = "query"       // POST QueryPath
	EndpointServerKeys Endpoint = "server_keys" // GET KeyServerPath
)

// Outcome is what became of one outgoing request, in metrics and logs.
type Outcome string

// The outcomes of outgoing requests.
const (
	// OutcomeOK: a 2xx answer (its body is judged by the core, not here).
	OutcomeOK Outcome = "ok"
	// OutcomeHTTPError: a non-2xx answer, passed on as status and body.
	OutcomeHTTPError Outcome = "http_error"
	// OutcomeTransportError: no answer: discovery, connection, TLS or protocol failure (503).
	OutcomeTransportError Outcome = "transport_error"
	// OutcomeTimeout: no answer before the deadline (504).
	OutcomeTimeout Outcome = "timeout"
	// OutcomeBackoff: not sent, the destination is backed off (503 "Not ready for retry").
	OutcomeBackoff Outcome = "backoff"
	// OutcomeTooLarge: the answer was larger than the limit (502).
	OutcomeTooLarge Outcome = "too_large"
	// OutcomeCanceled: the caller gave up (its context was cancelled) before an answer (503).
	OutcomeCanceled Outcome = "canceled"
	// OutcomeRequestError: the request could not be made (an invalid server name or a body
	// that is not JSON): a bug of the caller, not a failure of the destination (500).
	OutcomeRequestError Outcome = "request_error"
)

// RequestEvent describes one outgoing request, for metrics.
type RequestEvent struct {
	Destination core.ServerName
	Endpoint    Endpoint
	Outcome     Outcome
	// Status is the HTTP status of the answer, or the status of the failure.
	Status  int
	Latency time.Duration
}

// Observer receives an event for every outgoing request. ObserveRequest is called
// synchronously and concurrently; it must be fast and safe for concurrent use.
type Observer interface {
	ObserveRequest(RequestEvent)
}

// ObserverFunc adapts a function to an [Observer].
type ObserverFunc func(RequestEvent)

// ObserveRequest calls f(e).
func (f ObserverFunc) ObserveRequest(e RequestEvent) { f(e) }

// ClientOptions configure a [Client].
type ClientOptions struct {
	// SigningKey signs requests (required); its server name is the origin.
	SigningKey *SigningKey
	// Resolver finds and connects to servers (nil means NewResolver(ResolverOptions{})).
	Resolver *Resolver
	// MaxResponseBytes is the floor of the bound on claim and query answers: the bound of the
	// answer to a request that names no device (0 means DefaultMaxResponseBytes). The bound grows
	// with the request: see [ClientOptions.ResponseBytesPerDevice].
	MaxResponseBytes int64
	// ResponseBytesPerDevice is added to the bound of an answer for every device the request
	// names: every (user, device) of a claim, every device ID of a query (0 means
	// DefaultResponseBytesPerDevice; negative means none: every answer is bounded by
	// MaxResponseBytes).
	ResponseBytesPerDevice int64
	// MaxResponseBytesCeiling is the largest bound of an answer, whatever the request names (a
	// query user asked for all of its devices, an empty list, counts as allDevicesAllowance
	// devices: how many there are is not known before the answer). 0 means MaxResponseBytes plus the allowance of
	// 50,000 devices (core's default pair limit); a ceiling below MaxResponseBytes is
	// MaxResponseBytes, and without an allowance per device the ceiling is MaxResponseBytes.
	MaxResponseBytesCeiling int64
	// MaxKeyResponseBytes bounds key server answers (0 means DefaultMaxKeyResponseBytes).
	MaxKeyResponseBytes int64
	// DefaultTimeout bounds requests whose context has no deadline (0 means DefaultTimeout).
	DefaultTimeout time.Duration
	// Backoff is the per-destination backoff policy.
	Backoff BackoffPolicy
	// Clock is the time source of the backoff (nil means time.Now). Latencies are measured
	// with the monotonic clock.
	Clock func() time.Time
	// Observer receives an event per outgoing request (nil means none).
	Observer Observer
	// Logger receives a record per outgoing request (nil means slog.Default()): Debug when it
	// succeeded or was not sent, Info for non-2xx answers, Warn for failures.
	Logger *slog.Logger
}

// Client sends federation requests, X-Matrix signed, through a [Resolver]. ClaimKeys and
// QueryKeys implement hostserver's Federation; FetchServerKeys implements [KeyFetcher]. It is
// safe for concurrent use.
type Client struct {
	key        *SigningKey
	resolver   *Resolver
	http       *http.Client
	maxBody    int64 // the floor of the bound on claim and query answers
	perDevice  int64 // added to it per requested device
	ceiling    int64 // the largest bound
	maxKeyBody int64
	timeout    time.Duration
	backoff    *backoffs
	observer   Observer
	log        *slog.Logger
}

// NewClient returns a Client.
func NewClient(opts ClientOptions) (*Client, error) {
	if opts.SigningKey == nil {
		return nil, errors.New("federation client: a signing key is required")
	}
	c := &Client{
		key:        opts.SigningKey,
		resolver:   opts.Resolver,
		maxBody:    opts.MaxResponseBytes,
		perDevice:  opts.ResponseBytesPerDevice,
		ceiling:    opts.MaxResponseBytesCeiling,
		maxKeyBody: opts.MaxKeyResponseBytes,
		timeout:    opts.DefaultTimeout,
		observer:   opts.Observer,
		log:        opts.Logger,
	}
	if c.resolver == nil {
		c.resolver = NewResolver(ResolverOptions{})
	}
	if c.maxBody <= 0 {
		c.maxBody = DefaultMaxResponseBytes
	}
	switch {
	case c.perDevice == 0:
		c.perDevice = DefaultResponseBytesPerDevice
	case c.perDevice < 0:
		c.perDevice, c.ceiling = 0, c.maxBody
	}
	if c.ceiling == 0 {
		c.ceiling = ResponseBound(c.maxBody, c.perDevice, int64(core.DefaultLimits().MaxPairs))
	}
	c.ceiling = max(c.ceiling, c.maxBody)
	if c.maxKeyBody <= 0 {
		c.maxKeyBody = DefaultMaxKeyResponseBytes
	}
	if c.timeout <= 0 {
		c.timeout = DefaultTimeout
	}
	if c.log == nil {
		c.log = slog.Default()
	}
	clock := opts.Clock
	if clock == nil {
		clock = time.Now
	}
	c.backoff = newBackoffs(opts.Backoff, clock)
	c.http = &http.Client{
		Transport: c.resolver.transport,
		// Federation answers are not redirected: a 3xx is an answer like any non-2xx.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return c, nil
}

// Resolver returns the client's resolver.
func (c *Client) Resolver() *Resolver { return c.resolver }

// ClaimKeys sends body, a federation claim body ({"one_time_keys": {...}}), to destination's
// POST /_matrix/federation/v1/user/keys/claim and returns its answer (any status, body
// size-limited) or a failure: 503 when it cannot be reached or is backed off ("Not ready for
// retry"), 504 when ctx's deadline passes first, 502 when the answer is larger than its bound
// (MaxResponseBytes plus ResponseBytesPerDevice for every device body names, at most
// MaxResponseBytesCeiling), 500 when the request cannot be made (an invalid server name, a body
// that is not JSON). The answer is not judged here. A context without a deadline is bounded by
// DefaultTimeout.
func (c *Client) ClaimKeys(ctx context.Context, destination core.ServerName, body []byte) core.RemoteOutcome {
	return c.post(ctx, EndpointClaim, destination, ClaimPath, body)
}

// QueryKeys sends body, a federation query body ({"device_keys": {...}}), to destination's
// POST /_matrix/federation/v1/user/keys/query, with the outcomes of [Client.ClaimKeys]. A user
// asked for all of its devices (an empty list) counts as allDevicesAllowance devices in the bound.
func (c *Client) QueryKeys(ctx context.Context, destination core.ServerName, body []byte) core.RemoteOutcome {
	return c.post(ctx, EndpointQuery, destination, QueryPath, body)
}

func (c *Client) post(ctx context.Context, ep Endpoint, dest core.ServerName, path string, body []byte) core.RemoteOutcome {
	start := time.Now()
	if ok, until := c.backoff.ready(dest); !ok {
		c.record(ctx, dest, ep, OutcomeBackoff, StatusUnavailable, 0, slog.Time("retry_after", until))
		return failed(StatusUnavailable, NotReadyForRetry)
	}
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	deadline, _ := ctx.Deadline()
	var status int
	var data []byte
	content, err := parseContent(body)
	devices, allUsers := requestedDevices(ep, content)
	limit := c.limitFor(devices, allUsers)
	if err != nil {
		err = &requestError{err}
	} else {
		status, data, err = c.roundTrip(ctx, dest, http.MethodPost, path, body, content, limit)
	}
	latency := time.Since(start)
	if err != nil {
		f, outcome := classify(ctx, dest, err, latency)
		attrs := []slog.Attr{slog.String("error", err.Error())}
		// A port no connection can be made to fails at once without touching the network:
		// nothing to back off from, and the next request should say why again.
		unreachable := outcome == OutcomeTransportError && !errors.As(err, new(*PortError))
		if outcome == OutcomeTooLarge {
			attrs = append(attrs, slog.Int64("requested_devices", devices), slog.Int64("all_devices_users", allUsers))
		}
		if unreachable || outcome == OutcomeTimeout && deadline.Sub(start) >= c.backoff.policy.MinTimeout {
			attrs = append(attrs, slog.Duration("backoff", c.backoff.fail(dest)))
		}
		c.record(ctx, dest, ep, outcome, f.Status, latency, attrs...)
		return core.RemoteOutcome{Failure: f}
	}
	outcome := OutcomeOK
	if status < 200 || status > 299 {
		outcome = OutcomeHTTPError
	}
	if status >= 500 || status == http.StatusTooManyRequests {
		c.record(ctx, dest, ep, outcome, status, latency, slog.Duration("backoff", c.backoff.fail(dest)))
	} else {
		c.backoff.succeed(dest)
		c.record(ctx, dest, ep, outcome, status, latency)
	}
	return core.RemoteOutcome{Status: status, Body: data}
}

func failed(status int, msg string) core.RemoteOutcome {
	return core.RemoteOutcome{Failure: &core.Failure{Status: status, Message: msg}}
}

// responseLimit returns the bound on the answer to body, a request to the endpoint ep.
func (c *Client) responseLimit(ep Endpoint, body []byte) int64 {
	content, _ := parseContent(body)
	return c.limitFor(requestedDevices(ep, content))
}

// allDevicesAllowance is how many devices a query user asked for all of its devices (an empty
// list, how clients query) counts for in the bound: its device count is not known before the
// answer. Counting it as the pair limit would let any remote make us hold the ceiling (about
// 99 MiB) for every query; 10,000 devices (about 20 MiB at 2 KiB each, room for some 48,000
// real device keys of 424 bytes) is beyond any account but a bot that never logs out.
const allDevicesAllowance = 10_000

// limitFor returns the bound on the answer to a request that names devices devices, and asks
// for all devices of allUsers users: the floor plus the allowance of each device (each such user
// counting as allDevicesAllowance), at most the ceiling.
func (c *Client) limitFor(devices, allUsers int64) int64 {
	return min(ResponseBound(c.maxBody, c.perDevice, devices+allUsers*allDevicesAllowance), c.ceiling)
}

// ResponseBound returns the bound on an answer to a request that names devices devices: floor
// plus perDevice for each (floor when either is not positive), saturating at math.MaxInt64-1
// (so that a reader may always ask for one byte more than the bound). With devices the most a request may name (the pair limit), it is the ceiling of
// such bounds. hostserver's configuration and proxy mode's bound on the upstream's claim
// answer use it too (DESIGN.md, "Why does the bound on a remote answer grow with the
// request?").
func ResponseBound(floor, perDevice, devices int64) int64 {
	if perDevice <= 0 || devices <= 0 {
		return floor
	}
	if floor >= math.MaxInt64-1 || devices > (math.MaxInt64-1-floor)/perDevice {
		return math.MaxInt64 - 1
	}
	return floor + perDevice*devices
}

// requestedDevices counts the devices a claim or query body (read; nil when there is none)
// names: every (user, device) of one_time_keys, every device ID of device_keys. allUsers counts
// the query users asked with an empty list, that is for all of their devices. A body of another
// shape names no device.
func requestedDevices(ep Endpoint, content *core.Value) (devices, allUsers int64) {
	if content == nil {
		return 0, 0
	}
	switch ep {
	case EndpointClaim:
		users, ok := content.Get("one_time_keys")
		if !ok {
			return 0, 0
		}
		for i := range users.Members {
			devices += int64(len(users.Members[i].Value.Members))
		}
	case EndpointQuery:
		users, ok := content.Get("device_keys")
		if !ok {
			return 0, 0
		}
		for i := range users.Members {
			list := &users.Members[i].Value
			if list.Kind == core.KindArray && len(list.Items) == 0 {
				allUsers++
			}
			devices += int64(len(list.Items))
		}
	}
	return devices, allUsers
}

// withTimeout bounds ctx by the default timeout when it has no deadline.
func (c *Client) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, c.timeout)
}

// roundTrip sends one request to dest and returns the status and body of its answer. Requests
// are X-Matrix signed, except GET (the key server request, which is not authenticated).
func (c *Client) roundTrip(ctx context.Context, dest core.ServerName, method, path string, body []byte, content *core.Value, limit int64) (int, []byte, error) {
	res, err := c.resolver.Resolve(ctx, dest)
	if err != nil {
		if ctx.Err() == nil && !errors.As(err, new(*PortError)) {
			err = &requestError{err} // an invalid server name
		}
		return 0, nil, err
	}
	req, err := c.resolver.newRequest(ctx, res, method, path, body)
	if err != nil {
		return 0, nil, &requestError{err}
	}
	if method != http.MethodGet {
		signRequest(req, content, c.key.serverName, dest, c.key)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, unwrapURLError(err)
	}
	defer resp.Body.Close()
	if resp.ContentLength > limit {
		return 0, nil, &tooLargeError{limit: limit}
	}
	data, err := readLimited(resp.Body, limit)
	if err != nil {
		return 0, nil, err
	}
	return resp.StatusCode, data, nil
}

// requestError is a request that could not be made: the caller's fault, not the destination's.
type requestError struct{ err error }

// Error returns the underlying error's message.
func (e *requestError) Error() string { return e.err.Error() }

// Unwrap returns the underlying error.
func (e *requestError) Unwrap() error { return e.err }

// classify turns the error of a request to dest into a failure.
func classify(ctx context.Context, dest core.ServerName, err error, latency time.Duration) (*core.Failure, Outcome) {
	var tl *tooLargeError
	var ne net.Error
	var re *requestError
	switch {
	case errors.As(err, &re):
		return &core.Failure{Status: http.StatusInternalServerError, Message: fmt.Sprintf("could not send a request to %s: %v", dest, re.err)}, OutcomeRequestError
	case errors.As(err, &tl):
		return &core.Failure{Status: StatusTooLarge, Message: fmt.Sprintf("the answer of %s is larger than the limit of %d bytes", dest, tl.limit)}, OutcomeTooLarge
	case errors.Is(ctx.Err(), context.DeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout():
		return &core.Failure{Status: StatusTimeout, Message: fmt.Sprintf("timed out after %s waiting for %s", latency.Round(time.Millisecond), dest)}, OutcomeTimeout
	case ctx.Err() != nil:
		return &core.Failure{Status: StatusUnavailable, Message: fmt.Sprintf("the request to %s was cancelled", dest)}, OutcomeCanceled
	}
	return &core.Failure{Status: StatusUnavailable, Message: fmt.Sprintf("could not reach %s: %s", dest, transportReason(err))}, OutcomeTransportError
}

// transportReason says in a few words why a connection failed, without the network details
// (resolver addresses, local ports) that an error's text carries: the failure reaches clients;
// the full error goes to the log.
func transportReason(err error) string {
	var dnsErr *net.DNSError
	var certErr *tls.CertificateVerificationError
	var recErr tls.RecordHeaderError
	var npErr *nonPublicError
	var portErr *PortError
	switch {
	case errors.As(err, &portErr):
		return "its port " + portErr.Port + " is outside 1-65535"
	case errors.As(err, &npErr):
		return npErr.Error()
	case errors.As(err, &dnsErr):
		return "its address could not be resolved"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "the connection was closed"
	case errors.As(err, &certErr):
		return "its TLS certificate could not be verified"
	case errors.As(err, &recErr):
		return "it did not answer with TLS"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return "no route to it"
	}
	return "the connection failed"
}

// record reports a request to the observer and the log.
func (c *Client) record(ctx context.Context, dest core.ServerName, ep Endpoint, outcome Outcome, status int, latency time.Duration, extra ...slog.Attr) {
	if c.observer != nil {
		c.observer.ObserveRequest(RequestEvent{Destination: dest, Endpoint: ep, Outcome: outcome, Status: status, Latency: latency})
	}
	level := slog.LevelWarn
	switch outcome {
	case OutcomeOK, OutcomeBackoff, OutcomeCanceled:
		level = slog.LevelDebug
	case OutcomeHTTPError:
		level = slog.LevelInfo
	}
	if !c.log.Enabled(ctx, level) {
		return
	}
	attrs := append([]slog.Attr{
		slog.String("destination", string(dest)),
		slog.String("endpoint", string(ep)),
		slog.String("outcome", string(outcome)),
		slog.Int("status", status),
		slog.Duration("latency", latency),
	}, extra...)
	c.log.LogAttrs(ctx, level, "federation request", attrs...)
}

// FetchServerKeys fetches server's keys from its GET /_matrix/key/v2/server through the same
// discovery and transport as every request, and checks them with [ParseServerKeys]. The answer
// is limited to MaxKeyResponseBytes. Backoff does not apply.
func (c *Client) FetchServerKeys(ctx context.Context, server core.ServerName) (*ServerKeys, error) {
	start := time.Now()
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	status, data, err := c.roundTrip(ctx, server, http.MethodGet, KeyServerPath, nil, nil, c.maxKeyBody)
	latency := time.Since(start)
	if err != nil {
		f, outcome := classify(ctx, server, err, latency)
		c.record(ctx, server, EndpointServerKeys, outcome, f.Status, latency, slog.String("error", err.Error()))
		return nil, &messageError{msg: fmt.Sprintf("could not fetch the server keys of %s: %s", server, f.Message), err: err}
	}
	if status != http.StatusOK {
		c.record(ctx, server, EndpointServerKeys, OutcomeHTTPError, status, latency)
		return nil, fmt.Errorf("could not fetch the server keys of %s: status %d", server, status)
	}
	c.record(ctx, server, EndpointServerKeys, OutcomeOK, status, latency)
	keys, err := ParseServerKeys(data, server)
	if err != nil {
		return nil, fmt.Errorf("could not fetch the server keys of %s: %w", server, err)
	}
	return keys, nil
}

// messageError is an error with its own message that wraps another.
type messageError struct {
	msg string
	err error
}

// Error returns the message.
func (e *messageError) Error() string { return e.msg }

// Unwrap returns the wrapped error.
func (e *messageError) Unwrap() error { return e.err }

// Request is one request of a fan-out: a destination and the body to send it.
type Request struct {
	Destination core.ServerName
	Body        []byte
}

// ClaimRequests returns the federation claim requests of a fan-out plan's remote part
// (core.FanoutPlan.Remote): one per destination, its body {"one_time_keys": {...}}.
func ClaimRequests(remote []core.Destination) []Request {
	reqs := make([]Request, len(remote))
	for i := range remote {
		reqs[i] = Request{Destination: remote[i].Server, Body: remote[i].AppendBody(nil)}
	}
	return reqs
}

// CallFunc sends one federation request; [Client.ClaimKeys] and [Client.QueryKeys] are
// CallFuncs.
type CallFunc func(ctx context.Context, destination core.ServerName, body []byte) core.RemoteOutcome

// FanOut sends all requests in parallel with call and returns every destination's outcome once
// all have answered or timeout has passed (or ctx is done), whichever is first: it never waits
// longer (BRIEF section 4: the timeout bounds the whole fan-out). A destination without an answer
// by then gets a failure, 504 "no answer from <destination> within the timeout of <N> ms" (503
// when ctx was cancelled), its call's context is cancelled, and its late answer is dropped. A
// destination given twice is sent once, with its first body. The keys server's client endpoints
// fan out through it.
func FanOut(ctx context.Context, call CallFunc, reqs []Request, timeout time.Duration) map[core.ServerName]core.RemoteOutcome {
	out := make(map[core.ServerName]core.RemoteOutcome, len(reqs))
	if len(reqs) == 0 {
		return out
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	type answer struct {
		dest    core.ServerName
		outcome core.RemoteOutcome
	}
	answers := make(chan answer, len(reqs)) // buffered: late answers never block
	pending := map[core.ServerName]bool{}
	for _, r := range reqs {
		if pending[r.Destination] {
			continue
		}
		pending[r.Destination] = true
		go func() { answers <- answer{r.Destination, call(ctx, r.Destination, r.Body)} }()
	}
	for len(pending) > 0 {
		select {
		case a := <-answers:
			out[a.dest] = a.outcome
			delete(pending, a.dest)
		case <-ctx.Done():
			for dest := range pending {
				if errors.Is(ctx.Err(), context.DeadlineExceeded) {
					out[dest] = failed(StatusTimeout, fmt.Sprintf("no answer from %s within the timeout of %d ms", dest, timeout.Milliseconds()))
				} else {
					out[dest] = failed(StatusUnavailable, fmt.Sprintf("the request to %s was cancelled", dest))
				}
			}
			return out
		}
	}
	return out
}
