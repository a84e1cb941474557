package proxy

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/keyclaim/keyclaim/core"
	"github.com/keyclaim/keyclaim/hostserver/federation"
	"github.com/keyclaim/keyclaim/hostserver/internal/compat"
	"github.com/keyclaim/keyclaim/hostserver/internal/matrixhttp"
)

// The claim paths the proxy completes (client-server API v1.19, "POST /_matrix/client/v3/keys/claim").
const (
	ClaimPathV3 = "/_matrix/client/v3/keys/claim"
	ClaimPathR0 = "/_matrix/client/r0/keys/claim"
)

// Defaults of [Config].
const (
	// DefaultMaxUpstreamBody is the floor of the bound on the upstream's claim answer (8 MiB):
	// what an answer may always be, however few devices the claim names.
	DefaultMaxUpstreamBody int64 = 8 << 20
	// DefaultUpstreamBodyPerDevice is what the bound on the upstream's claim answer grows by for
	// every (user, device) the claim names: the allowance of federation claim answers, whose
	// entries a client claim answer repeats (about 8 times a measured signed curve25519 key;
	// see federation.DefaultResponseBytesPerDevice).
	DefaultUpstreamBodyPerDevice int64 = federation.DefaultResponseBytesPerDevice
	// DefaultTimeoutMargin is the time a claim exchange may take beyond the request's timeout:
	// the upstream's own store work and the transfer of its answer.
	DefaultTimeoutMargin = 5 * time.Second
)

// CodeUnrecognized is M_UNRECOGNIZED, the answer to a path the proxy does not serve (404) or a
// method the claim path does not allow (405).
const CodeUnrecognized = matrixhttp.CodeUnrecognized

// Config configures a [Proxy]. Upstream and ServerName are required; every other field has a
// default.
type Config struct {
	// Upstream is the base URL of the homeserver, http or https. A request path is appended to
	// its path, so https://example.org/prefix sends claims to
	// https://example.org/prefix/_matrix/client/v3/keys/claim.
	Upstream *url.URL
	// ServerName is the upstream homeserver's own server name: completion never lists it in
	// failures (BRIEF section 4).
	ServerName core.ServerName
	// Mode is the completion mode: "" or core.ModeMSC4072 gives complete answers; core.ModeLegacy
	// only sanitises the upstream's answer.
	Mode core.Mode
	// LegacyUserAgents, in msc4072 mode, names the clients answered as in legacy mode: those
	// whose User-Agent it matches (the client compatibility policy of the keys server,
	// --legacy-user-agents). nil answers every client in Mode.
	LegacyUserAgents *regexp.Regexp
	// Limits bound the claim request (body size, pairs, timeout default and cap); zero fields
	// take core's defaults.
	Limits core.Limits
	// MaxUpstreamBody is the floor of the bound on the upstream's claim answer: the bound of the
	// answer to a claim that names no device. A larger answer is 502. Zero means
	// DefaultMaxUpstreamBody. The bound grows with the claim: see UpstreamBodyPerDevice.
	MaxUpstreamBody int64
	// UpstreamBodyPerDevice is added to the bound for every (user, device) the claim names, up
	// to the allowance of Limits.MaxPairs devices (the most a valid claim names), so that a claim
	// within the pair limit is read in full. Zero means DefaultUpstreamBodyPerDevice; negative
	// means none: every answer is bounded by MaxUpstreamBody. See DESIGN.md, "Why does the bound
	// on a remote answer grow with the request?".
	UpstreamBodyPerDevice int64
	// TimeoutMargin is added to the claim's resolved timeout to bound the whole exchange with the
	// upstream; beyond it the answer is 504. Zero means DefaultTimeoutMargin.
	TimeoutMargin time.Duration
	// Passthrough proxies every other path to the upstream unchanged; otherwise they are 404
	// M_UNRECOGNIZED.
	Passthrough bool
	// TrustForwarded keeps the X-Forwarded-For, X-Forwarded-Host and X-Forwarded-Proto headers
	// of incoming requests (appending the peer's address to X-Forwarded-For): set it when the
	// proxy sits behind a reverse proxy of its own that sets them. Otherwise they are replaced.
	TrustForwarded bool
	// Transport sends the requests to the upstream; nil means a clone of
	// http.DefaultTransport.
	Transport http.RoundTripper
	// Logger receives the proxy's logs; nil discards them.
	Logger *slog.Logger
	// Metrics receives one Observation per claim request; nil records nothing.
	Metrics Metrics
}

// Proxy is the proxy-mode HTTP handler. Build it with [New]; it is safe for concurrent use.
type Proxy struct {
	upstream    *url.URL
	serverName  core.ServerName
	policy      compat.Policy
	limits      core.Limits
	maxAnswer   int64 // the floor of the bound on the upstream's claim answer
	perDevice   int64 // added to it per claimed device
	ceiling     int64 // the largest bound: the floor plus the allowance of limits.MaxPairs devices
	margin      time.Duration
	trustFwd    bool
	client      *http.Client
	passthrough *httputil.ReverseProxy // nil without Config.Passthrough
	logger      *slog.Logger
	metrics     Metrics
	via         string // this proxy's Via entry, "1.1 keyclaim-<random>": a request carrying it has looped
}

// New validates cfg and builds the proxy.
func New(cfg Config) (*Proxy, error) {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if cfg.Upstream == nil {
		bad("the upstream URL is required")
	} else if (cfg.Upstream.Scheme != "http" && cfg.Upstream.Scheme != "https") || cfg.Upstream.Host == "" {
		bad("the upstream URL must be an http:// or https:// base URL, got %q", cfg.Upstream.Redacted())
	} else if cfg.Upstream.RawQuery != "" || cfg.Upstream.Fragment != "" || cfg.Upstream.User != nil {
		bad("the upstream URL must have no query, fragment or user information, got %q", cfg.Upstream.Redacted())
	}
	if _, err := core.ParseServerName(string(cfg.ServerName)); err != nil {
		bad("the server name: %w", err)
	}
	mode, err := core.ParseMode(string(cfg.Mode))
	if err != nil {
		bad("the mode: %w", err)
	}
	if cfg.MaxUpstreamBody < 0 {
		bad("the upstream body limit must not be negative, got %d", cfg.MaxUpstreamBody)
	}
	if cfg.TimeoutMargin < 0 {
		bad("the timeout margin must not be negative, got %s", cfg.TimeoutMargin)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}

	var id [4]byte
	_, _ = rand.Read(id[:])   // never fails (crypto/rand)
	upstream := *cfg.Upstream // a copy: the caller's URL may change later
	p := &Proxy{
		via:        "1.1 keyclaim-" + hex.EncodeToString(id[:]),
		upstream:   &upstream,
		serverName: cfg.ServerName,
		policy:     compat.Policy{Mode: mode, LegacyUserAgents: cfg.LegacyUserAgents},
		limits:     cfg.Limits.WithDefaults(),
		maxAnswer:  cfg.MaxUpstreamBody,
		perDevice:  cfg.UpstreamBodyPerDevice,
		margin:     cfg.TimeoutMargin,
		trustFwd:   cfg.TrustForwarded,
		logger:     cfg.Logger,
		metrics:    cfg.Metrics,
	}
	if p.maxAnswer == 0 {
		p.maxAnswer = DefaultMaxUpstreamBody
	}
	switch {
	case p.perDevice == 0:
		p.perDevice = DefaultUpstreamBodyPerDevice
	case p.perDevice < 0:
		p.perDevice = 0
	}
	p.ceiling = federation.ResponseBound(p.maxAnswer, p.perDevice, int64(p.limits.MaxPairs))
	if p.margin == 0 {
		p.margin = DefaultTimeoutMargin
	}
	if p.logger == nil {
		p.logger = slog.New(slog.DiscardHandler)
	}
	transport := cfg.Transport
	if transport == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = 64 // one upstream: keep its connections
		transport = t
	}
	p.client = &http.Client{
		Transport: transport,
		// A redirect is the upstream's answer: it is passed through, never followed.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	if cfg.Passthrough {
		p.passthrough = &httputil.ReverseProxy{
			Rewrite: func(pr *httputil.ProxyRequest) {
				pr.SetURL(p.upstream) // and the Host header: the upstream's own host name
				p.setForwarded(pr.Out.Header, pr.In)
				p.setVia(pr.Out.Header, pr.In.Header)
			},
			Transport:    transport,
			ErrorHandler: p.passthroughError,
			ErrorLog:     slog.NewLogLogger(p.logger.Handler(), slog.LevelWarn),
		}
	}
	return p, nil
}

// ServeHTTP serves the claim paths, the CORS preflight there, and every other path (404 or
// passthrough). A request that already passed through this proxy (its Via entry) is refused:
// the upstream routes it back here, and forwarding it again would loop.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	claimPath := r.URL.Path == ClaimPathV3 || r.URL.Path == ClaimPathR0
	if p.looped(r) {
		p.logger.Error("request loop: the upstream sent a request back to this proxy; the upstream URL must be the homeserver itself, not an address that routes to keyclaim", "method", r.Method, "path", r.URL.Path, "upstream", p.upstream.Redacted())
		if claimPath && r.Method == http.MethodPost && p.metrics != nil {
			p.metrics.ObserveClaim(Observation{Result: ResultLoop})
		}
		matrixhttp.WriteError(w, http.StatusBadGateway, core.CodeUnknown, "request loop: the keyclaim proxy's upstream sends this request back to the proxy")
		return
	}
	if !claimPath {
		if p.passthrough != nil {
			p.passthrough.ServeHTTP(w, r)
			return
		}
		if strings.HasPrefix(r.URL.Path, "/_matrix/client/") {
			matrixhttp.SetCORS(w.Header())
		}
		matrixhttp.WriteError(w, http.StatusNotFound, CodeUnrecognized, "unrecognized request: this keyclaim proxy serves only POST "+ClaimPathV3)
		return
	}
	matrixhttp.SetCORS(w.Header())
	switch r.Method {
	case http.MethodPost:
		p.serveClaim(w, r)
	case http.MethodOptions:
		w.WriteHeader(http.StatusNoContent)
	default:
		w.Header().Set("Allow", "POST, OPTIONS")
		matrixhttp.WriteError(w, http.StatusMethodNotAllowed, CodeUnrecognized, "unrecognized request: method not allowed on this endpoint")
	}
}

// serveClaim validates, forwards and completes one claim request.
func (p *Proxy) serveClaim(w http.ResponseWriter, r *http.Request) {
	obs := Observation{}
	defer func() {
		if p.metrics != nil {
			p.metrics.ObserveClaim(obs)
		}
	}()

	body, err := matrixhttp.ReadBody(w, r, p.limits.MaxBodyBytes)
	if err == nil {
		var req *core.ClaimRequest
		req, err = core.ParseClaimRequest(body, core.ParseOptions{
			Flavour:      core.FlavourClient,
			ServerName:   p.serverName,
			QueryTimeout: r.URL.Query().Get("timeout"),
			Limits:       p.limits,
		})
		if err == nil {
			obs = p.exchange(w, r, req, body)
			return
		}
	}
	obs.Result = ResultRejected
	var ce *core.Error
	if !errors.As(err, &ce) {
		ce = &core.Error{Code: core.CodeUnknown, Message: err.Error()}
	}
	matrixhttp.WriteError(w, matrixhttp.StatusOf(ce.Code), ce.Code, ce.Message)
}

// exchange sends the validated claim to the upstream and answers the client from its answer.
func (p *Proxy) exchange(w http.ResponseWriter, r *http.Request, req *core.ClaimRequest, body []byte) Observation {
	obs := Observation{Devices: req.Pairs()}
	budget := time.Duration(req.TimeoutMS)*time.Millisecond + p.margin
	ctx, cancel := context.WithTimeout(r.Context(), budget)
	defer cancel()

	out, err := http.NewRequestWithContext(ctx, http.MethodPost, p.upstreamURL(r), bytes.NewReader(body))
	if err != nil {
		obs.Result = ResultUnreachable
		p.logger.Error("building the upstream request", "err", err)
		matrixhttp.WriteError(w, http.StatusBadGateway, core.CodeUnknown, "the upstream homeserver could not be asked")
		return obs
	}
	copyHeader(out.Header, r.Header, "Authorization", "Content-Type", "User-Agent", "Accept-Language")
	if out.Header.Get("Content-Type") == "" {
		out.Header.Set("Content-Type", "application/json")
	}
	p.setForwarded(out.Header, r)
	p.setVia(out.Header, r.Header)

	limit := p.answerLimit(req.Pairs())
	start := time.Now()
	resp, err := p.client.Do(out)
	var answer []byte
	if err == nil {
		defer resp.Body.Close()
		obs.UpstreamStatus = resp.StatusCode
		answer, err = readAnswer(resp, limit)
	}
	obs.Latency = time.Since(start)
	if err != nil {
		obs.Result = p.failExchange(ctx, w, r, budget, req.Pairs(), err)
		return obs
	}

	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		// The upstream's own answer, unchanged: its status, body and the headers clients read.
		obs.Result = ResultPassedThrough
		h := w.Header()
		for _, k := range []string{"Content-Type", "Retry-After", "Location"} {
			if v := resp.Header.Values(k); len(v) > 0 {
				h[k] = v
			}
		}
		if _, ok := h["Content-Type"]; !ok {
			h["Content-Type"] = nil // none upstream: none here either, no sniffing
		}
		h.Set("Content-Length", strconv.Itoa(len(answer)))
		w.WriteHeader(resp.StatusCode)
		_, _ = w.Write(answer)
		return obs
	}

	shape := p.policy.ModeFor(r.UserAgent())
	completed, err := core.CompleteUpstream(req, answer, core.CompleteOptions{Mode: shape, ServerName: p.serverName})
	if err != nil {
		obs.Result = ResultBadAnswer
		p.logger.Warn("the upstream homeserver's claim answer is unusable", "status", resp.StatusCode, "bytes", len(answer), "err", err)
		matrixhttp.WriteError(w, http.StatusBadGateway, core.CodeUnknown, fmt.Sprintf("the upstream homeserver answered HTTP %d with a body that is not a claim answer (%s)", resp.StatusCode, describe(err)))
		return obs
	}
	obs.Result = ResultCompleted
	obs.Shape = shape
	if p.metrics != nil {
		t := completed.Tally() // counted by completion itself: the answer is not read again
		obs.Filled, obs.Dropped = t.Filled, t.Dropped
	}
	matrixhttp.WriteJSON(w, http.StatusOK, completed.AppendJSON(nil))
	return obs
}

// describe is the client-facing detail of a completion error.
func describe(err error) string {
	var ce *core.Error
	if errors.As(err, &ce) {
		return string(ce.Code) + ": " + ce.Message
	}
	return err.Error()
}

// upstreamURL is the upstream URL of the claim: the upstream's path joined with the request's,
// and the request's own query string.
func (p *Proxy) upstreamURL(r *http.Request) string {
	u := *p.upstream
	u.Path = strings.TrimSuffix(u.Path, "/") + r.URL.Path
	u.RawPath = ""
	u.RawQuery = r.URL.RawQuery
	return u.String()
}

// answerLimit returns the bound on the upstream's answer to a claim of devices (user, device)
// pairs: the floor plus the allowance of each device, at most the ceiling. The upstream hands
// out the keys before it answers, so an honest answer refused here loses them; the bound follows
// the claim so that a claim within the pair limit is read in full, while a small claim still
// cannot make the proxy buffer more than the floor and a little.
func (p *Proxy) answerLimit(devices int) int64 {
	return min(federation.ResponseBound(p.maxAnswer, p.perDevice, int64(devices)), p.ceiling)
}

// readAnswer reads the upstream's answer, at most limit bytes: a larger one is a
// [tooLargeError], found from its Content-Length when it has one, otherwise after reading at
// most limit plus one byte.
func readAnswer(resp *http.Response, limit int64) ([]byte, error) {
	if resp.ContentLength > limit {
		return nil, &tooLargeError{limit: limit, length: resp.ContentLength}
	}
	var buf bytes.Buffer
	if resp.ContentLength > 0 {
		buf.Grow(int(resp.ContentLength))
	}
	if _, err := buf.ReadFrom(io.LimitReader(resp.Body, min(limit, math.MaxInt64-1)+1)); err != nil { // one byte more, without overflow
		return nil, fmt.Errorf("reading the upstream answer: %w", err)
	}
	if int64(buf.Len()) > limit {
		return nil, &tooLargeError{limit: limit, length: -1}
	}
	return buf.Bytes(), nil
}

// tooLargeError is an upstream answer over the size limit.
type tooLargeError struct {
	limit  int64 // the bound of this claim's answer
	length int64 // the answer's Content-Length, -1 when it had none
}

func (e *tooLargeError) Error() string {
	return fmt.Sprintf("the upstream answer is larger than %d bytes", e.limit)
}

// failExchange answers a claim whose exchange with the upstream failed and returns the result.
func (p *Proxy) failExchange(ctx context.Context, w http.ResponseWriter, r *http.Request, budget time.Duration, devices int, err error) Result {
	var tl *tooLargeError
	switch {
	case errors.As(err, &tl):
		p.logger.Warn("upstream answer too large", "limit", tl.limit, "content_length", tl.length, "requested_devices", devices)
		matrixhttp.WriteError(w, http.StatusBadGateway, core.CodeUnknown, fmt.Sprintf("upstream answer too large: the upstream homeserver's answer is larger than %d bytes", tl.limit))
		return ResultTooLarge
	case errors.Is(r.Context().Err(), context.Canceled):
		p.logger.Debug("the client went away during the upstream exchange", "err", err)
		return ResultCanceled
	case errors.Is(ctx.Err(), context.DeadlineExceeded) || errors.Is(err, context.DeadlineExceeded):
		p.logger.Warn("the upstream homeserver did not answer in time", "budget", budget.String(), "err", err)
		matrixhttp.WriteError(w, http.StatusGatewayTimeout, core.CodeUnknown, fmt.Sprintf("the upstream homeserver did not answer within %d ms", budget.Milliseconds()))
		return ResultTimeout
	}
	p.logger.Warn("the upstream homeserver could not be reached", "err", err)
	matrixhttp.WriteError(w, http.StatusBadGateway, core.CodeUnknown, "the upstream homeserver could not be reached ("+reason(err)+")")
	return ResultUnreachable
}

// reason names the kind of a network error for the client, without the upstream's address.
func reason(err error) string {
	var dnsErr *net.DNSError
	var certErr *tls.CertificateVerificationError
	var unknownAuth x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var recErr tls.RecordHeaderError
	var netErr net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.As(err, &dnsErr):
		return "its host name could not be resolved"
	case errors.As(err, &certErr), errors.As(err, &unknownAuth), errors.As(err, &hostErr), errors.As(err, &recErr):
		return "TLS handshake failed"
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return "the connection closed before a complete answer"
	case errors.As(err, &netErr) && netErr.Timeout():
		return "network timeout"
	}
	return "network error"
}

// setForwarded sets X-Forwarded-For, -Host and -Proto of an outbound request from in.
func (p *Proxy) setForwarded(h http.Header, in *http.Request) {
	clientIP, _, err := net.SplitHostPort(in.RemoteAddr)
	if err != nil {
		clientIP = in.RemoteAddr
	}
	proto := "http"
	if in.TLS != nil {
		proto = "https"
	}
	host := in.Host
	xff := clientIP
	if p.trustFwd {
		if prior := in.Header.Values("X-Forwarded-For"); len(prior) > 0 {
			xff = strings.Join(prior, ", ") + ", " + clientIP
		}
		if v := in.Header.Get("X-Forwarded-Host"); v != "" {
			host = v
		}
		if v := in.Header.Get("X-Forwarded-Proto"); v != "" {
			proto = v
		}
	}
	if xff != "" {
		h.Set("X-Forwarded-For", xff)
	} else {
		h.Del("X-Forwarded-For")
	}
	h.Set("X-Forwarded-Host", host)
	h.Set("X-Forwarded-Proto", proto)
	h.Del("Forwarded")
}

// setVia sets the Via header of an outbound request: the inbound entries and this proxy's
// (RFC 9110, section 7.6.3).
func (p *Proxy) setVia(out, in http.Header) {
	if prior := in.Values("Via"); len(prior) > 0 {
		out.Set("Via", strings.Join(prior, ", ")+", "+p.via)
		return
	}
	out.Set("Via", p.via)
}

// looped reports whether r carries this proxy's own Via entry.
func (p *Proxy) looped(r *http.Request) bool {
	for _, v := range r.Header.Values("Via") {
		for entry := range strings.SplitSeq(v, ",") {
			if strings.TrimSpace(entry) == p.via {
				return true
			}
		}
	}
	return false
}

// passthroughError answers a passthrough request the upstream did not answer.
func (p *Proxy) passthroughError(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(r.Context().Err(), context.Canceled) {
		return // the client went away
	}
	if errors.Is(err, context.DeadlineExceeded) {
		p.logger.Warn("passthrough: the upstream homeserver did not answer in time", "method", r.Method, "path", r.URL.Path, "err", err)
		matrixhttp.WriteError(w, http.StatusGatewayTimeout, core.CodeUnknown, "the upstream homeserver did not answer in time")
		return
	}
	p.logger.Warn("passthrough: the upstream homeserver could not be reached", "method", r.Method, "path", r.URL.Path, "err", err)
	matrixhttp.WriteError(w, http.StatusBadGateway, core.CodeUnknown, "the upstream homeserver could not be reached ("+reason(err)+")")
}

func copyHeader(dst, src http.Header, keys ...string) {
	for _, k := range keys {
		if v := src.Values(k); len(v) > 0 {
			dst[k] = append([]string(nil), v...)
		}
	}
}
