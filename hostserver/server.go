package hostserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"sync"
	"syscall"
	"time"

	gojson "github.com/goccy/go-json"
	"github.com/keyclaim/keyclaim/core"
	"github.com/keyclaim/keyclaim/hostserver/federation"
	"github.com/keyclaim/keyclaim/hostserver/internal/compat"
	"github.com/keyclaim/keyclaim/hostserver/internal/matrixhttp"
	"github.com/keyclaim/keyclaim/hostserver/store"
	"github.com/labstack/echo/v4"
)

// Server is one keyclaim keys server: the HTTP routes over a store, an authenticator and a claim
// engine. Build it with [New], serve with [Server.Start], stop with [Server.Shutdown].
type Server struct {
	cfg        Config
	logger     *slog.Logger
	serverName core.ServerName
	policy     compat.Policy // the shape of client claim answers (--mode, --legacy-user-agents)
	fedMode    core.Mode     // the shape of federation claim answers (--federation-answers)
	store      store.Store
	auth       Authenticator
	fedAuth    FederationAuthenticator
	fed        Federation
	signingKey *federation.SigningKey // nil when federation is off
	fedClient  *federation.Client     // nil when federation is off
	engine     Engine
	metrics    *metrics
	echo       *echo.Echo
	http       *http.Server
	routes     map[string]bool // registered path patterns, for the route label of metrics
	playground string          // what the banner says of the playground; "" when it is not served

	mu       sync.Mutex
	started  bool
	addr     net.Addr
	done     chan struct{}
	serveErr error
	stopHUP  context.CancelFunc
	closed   bool
	closeErr error
}

// Timeouts of the HTTP server. The write timeout and the per-request cap follow --max-timeout,
// which bounds the federation fan-out of a claim.
const (
	ReadHeaderTimeout = 10 * time.Second
	ReadTimeout       = 60 * time.Second
	IdleTimeout       = 120 * time.Second
	// requestSlack is the time a request may take beyond --max-timeout (store work, writing).
	requestSlack = 20 * time.Second
)

// New builds a server from cfg: it validates the configuration, opens the store (running its
// migrations) unless cfg.Store is set, and builds the authenticator and the engine. It does not
// listen yet.
func New(cfg Config) (_ *Server, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("configuration: %w", err)
	}
	logger := cfg.Logger
	if logger == nil {
		if logger, err = cfg.NewLogger(os.Stderr); err != nil {
			return nil, err
		}
	}
	if cfg.GCPercent > 0 && os.Getenv("GOGC") == "" {
		debug.SetGCPercent(cfg.GCPercent)
	}
	mode, _ := core.ParseMode(cfg.Mode)
	policy, err := compat.New(mode, cfg.LegacyUserAgents)
	if err != nil {
		return nil, fmt.Errorf("configuration: %w", err) // Validate compiled it already
	}
	fedMode, _ := core.ParseMode(cfg.FederationAnswers)
	s := &Server{
		cfg:        cfg,
		logger:     logger,
		serverName: core.ServerName(cfg.ServerName),
		policy:     policy,
		fedMode:    fedMode,
		store:      cfg.Store,
		fedAuth:    cfg.FederationAuthenticator,
		fed:        cfg.Federation,
		metrics:    newMetrics(),
		routes:     map[string]bool{},
		done:       make(chan struct{}),
	}
	if cfg.Upstream != "" {
		return s.buildProxyMode()
	}
	s.logger.Info("claim answer policy: "+policy.Describe(), "mode", string(policy.Mode), "legacy_user_agents", policy.Expr(),
		"federation_answers", string(fedMode))
	if err := s.buildFederation(&cfg); err != nil {
		return nil, fmt.Errorf("federation: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if s.auth, err = buildAuthenticator(&cfg, logger); err != nil {
		return nil, fmt.Errorf("authentication: %w", err)
	}
	if s.engine, err = buildEngine(ctx, &cfg, EngineOptions{ServerName: s.serverName, Limits: cfg.limits()}); err != nil {
		return nil, fmt.Errorf("engine: %w", err)
	}
	if s.store == nil {
		if s.store, err = store.Open(ctx, cfg.DB); err != nil {
			_ = s.engine.Close(ctx)
			return nil, fmt.Errorf("store %s: %w", redact(cfg.DB), err)
		}
	}
	s.echo = s.buildEcho()
	s.http = s.newHTTPServer()
	return s, nil
}

// newHTTPServer returns the http.Server serving s.echo with the server's timeouts.
func (s *Server) newHTTPServer() *http.Server {
	return &http.Server{
		Handler:           s.echo,
		ReadHeaderTimeout: ReadHeaderTimeout,
		ReadTimeout:       ReadTimeout,
		WriteTimeout:      s.cfg.MaxTimeout + requestSlack + 10*time.Second,
		IdleTimeout:       IdleTimeout,
		ErrorLog:          slog.NewLogLogger(s.logger.Handler(), slog.LevelWarn),
	}
}

// Handler returns the server's HTTP handler (for embedding; Start serves it on a listener).
func (s *Server) Handler() http.Handler { return s.echo }

// Engine returns the claim engine in use.
func (s *Server) Engine() Engine { return s.engine }

// Authenticator returns the client authenticator in use.
func (s *Server) Authenticator() Authenticator { return s.auth }

// Start serves on ln in the background and returns. It logs the effective configuration. With a
// token file, SIGHUP reloads
// it until ctx is done or the server shuts down. Call Shutdown to stop.
func (s *Server) Start(ctx context.Context, ln net.Listener) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started || s.closed {
		return errors.New("hostserver: Start called twice or after Shutdown")
	}
	s.started = true
	s.addr = ln.Addr()
	s.logger.Info("keyclaim keys server starting", append([]any{"addr", s.addr.String()}, s.cfg.LogAttrs()...)...)
	startDebugPprof(s.logger)
	if tf, ok := s.auth.(*TokenFileAuth); ok {
		hupCtx, stop := context.WithCancel(ctx)
		s.stopHUP = stop
		s.watchSIGHUP(hupCtx, tf)
	}
	go func() {
		err := s.http.Serve(ln)
		if !errors.Is(err, http.ErrServerClosed) {
			s.logger.Error("HTTP server stopped", "err", err)
			s.mu.Lock()
			s.serveErr = err
			s.mu.Unlock()
		}
		close(s.done)
	}()
	return nil
}

// watchSIGHUP reloads the token file on every SIGHUP until ctx is done.
func (s *Server) watchSIGHUP(ctx context.Context, tf *TokenFileAuth) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGHUP)
	go func() {
		defer signal.Stop(ch)
		for {
			select {
			case <-ctx.Done():
				return
			case <-ch:
				if err := tf.Reload(); err != nil {
					s.logger.Error("SIGHUP: token file not reloaded; keeping the previous tokens", "tokens", tf.Path(), "err", err)
				} else {
					s.logger.Info("SIGHUP: token file reloaded", "tokens", tf.Path(), "count", tf.Len())
				}
			}
		}
	}()
}

// Addr returns the address the server listens on (nil before Start).
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// Done is closed when the server has stopped serving (after Shutdown, or on a listener error).
func (s *Server) Done() <-chan struct{} { return s.done }

// Err returns the error that stopped serving, nil after a clean Shutdown.
func (s *Server) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.serveErr
}

// Shutdown stops the server gracefully: it stops accepting connections, waits for the requests
// in flight until ctx is done, then closes the engine and the store. It is safe to call more
// than once; later calls return the first result.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return s.closeErr
	}
	s.closed = true
	started := s.started
	if s.stopHUP != nil {
		s.stopHUP()
	}
	s.mu.Unlock()

	var errs []error
	if started {
		if err := s.http.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("draining HTTP requests: %w", err))
			_ = s.http.Close()
		}
		<-s.done
	}
	if s.fedClient != nil {
		s.fedClient.Resolver().CloseIdleConnections()
	}
	if s.engine != nil {
		if err := s.engine.Close(ctx); err != nil {
			errs = append(errs, fmt.Errorf("closing the engine: %w", err))
		}
	}
	if s.store != nil {
		if err := s.store.Close(); err != nil {
			errs = append(errs, fmt.Errorf("closing the store: %w", err))
		}
	}
	err := errors.Join(errs...)
	s.mu.Lock()
	s.closeErr = err
	s.mu.Unlock()
	s.logger.Info("keyclaim keys server stopped")
	return err
}

// buildEcho sets up echo: the JSON serializer, the middleware and the routes.
func (s *Server) buildEcho() *echo.Echo {
	e := echo.New()
	e.HideBanner = true
	e.HidePort = true
	e.JSONSerializer = goccySerializer{}
	e.HTTPErrorHandler = func(err error, c echo.Context) { s.writeError(c, err) }
	e.Use(s.observe, s.recoverPanics, s.cors, s.capRequest)

	add := func(method, path string, h echo.HandlerFunc) {
		e.Add(method, path, h)
		s.routes[path] = true
	}
	for _, v := range []string{"v3", "r0"} {
		add(http.MethodPost, "/_matrix/client/"+v+"/keys/upload", s.handleUpload)
		add(http.MethodPost, "/_matrix/client/"+v+"/keys/query", s.handleClientQuery)
		add(http.MethodPost, "/_matrix/client/"+v+"/keys/claim", s.handleClientClaim)
	}
	add(http.MethodPost, "/_matrix/federation/v1/user/keys/claim", s.handleFederationClaim)
	add(http.MethodPost, "/_matrix/federation/v1/user/keys/query", s.handleFederationQuery)
	if s.signingKey != nil {
		add(http.MethodGet, federation.KeyServerPath, s.keyServerHandler())
	}
	add(http.MethodGet, "/_matrix/client/versions", s.handleVersions)
	add(http.MethodGet, "/healthz", s.handleHealthz)
	add(http.MethodGet, "/readyz", s.handleReadyz)
	add(http.MethodGet, "/metrics", echo.WrapHandler(s.metrics.handler()))
	if s.cfg.Dev || s.cfg.Playground {
		s.addPlayground(add)
	}
	return e
}

// ctxKeyUser is the echo context key of the authenticated user, for the request log.
const ctxKeyUser = "keyclaim.user"

// observe is the outermost middleware: it answers errors as Matrix errors, logs one line per
// request and records its latency.
func (s *Server) observe(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		err := next(c)
		if err != nil {
			s.writeError(c, err)
		}
		status := c.Response().Status
		elapsed := time.Since(start)
		route := c.Path()
		if !s.routes[route] {
			route = "unmatched"
		}
		s.metrics.latency.WithLabelValues(route, c.Request().Method, strconv.Itoa(status)).Observe(elapsed.Seconds())
		ctx := c.Request().Context()
		if !s.logger.Enabled(ctx, slog.LevelInfo) { // --log-level warn or error: no request line to build
			return nil
		}
		attrs := []slog.Attr{
			slog.String("method", c.Request().Method),
			slog.String("path", c.Request().URL.Path),
			slog.Int("status", status),
			slog.Duration("duration", elapsed),
		}
		if u, ok := c.Get(ctxKeyUser).(core.UserID); ok {
			attrs = append(attrs, slog.String("user", string(u)))
		}
		if o, ok := c.Get(ctxKeyOrigin).(core.ServerName); ok {
			attrs = append(attrs, slog.String("origin", string(o)))
		}
		if err != nil {
			_, merr := toHTTP(err)
			attrs = append(attrs, slog.String("errcode", string(merr.Code)))
		}
		s.logger.LogAttrs(ctx, slog.LevelInfo, "request", attrs...)
		return nil
	}
}

// writeError answers err as a Matrix error, logging the cause of 5xx answers. When the answer
// was already being written, err is about writing it (typically a client that went away, such as
// a remote server that gave up on a large answer): nothing more can be sent, and it is logged as
// an undelivered answer with the status that was sent, not as a server failure.
func (s *Server) writeError(c echo.Context, err error) {
	if c.Response().Committed {
		s.logger.Warn("answer not delivered", "method", c.Request().Method, "path", c.Request().URL.Path,
			"status", c.Response().Status, "err", err)
		return
	}
	status, merr := toHTTP(err)
	if status >= 500 {
		s.logger.Error("request failed", "method", c.Request().Method, "path", c.Request().URL.Path, "status", status, "err", err)
	}
	if ra := retryAfterOf(err); ra > 0 {
		c.Response().Header().Set("Retry-After", strconv.Itoa(ra))
	}
	_ = matrixhttp.WriteError(c.Response(), status, merr.Code, merr.Message)
}

// recoverPanics turns a panic in a handler into a 500 M_UNKNOWN answer.
func (s *Server) recoverPanics(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) (err error) {
		defer func() {
			if r := recover(); r != nil {
				if r == http.ErrAbortHandler {
					panic(r)
				}
				err = internalErr("handling the request", fmt.Errorf("panic: %v\n%s", r, debug.Stack()))
			}
		}()
		return next(c)
	}
}

// cors adds the CORS headers to every response under /_matrix/client/ and answers OPTIONS
// there without running the endpoint's logic, as the spec requires.
func (s *Server) cors(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		if !hasPathPrefix(r.URL.Path, "/_matrix/client/") {
			return next(c)
		}
		matrixhttp.SetCORS(c.Response().Header())
		if r.Method == http.MethodOptions {
			return c.NoContent(http.StatusNoContent)
		}
		return next(c)
	}
}

func hasPathPrefix(path, prefix string) bool {
	return len(path) >= len(prefix) && path[:len(prefix)] == prefix
}

// capRequest bounds the time a request may take: --max-timeout plus some slack.
func (s *Server) capRequest(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		ctx, cancel := context.WithTimeout(c.Request().Context(), s.cfg.MaxTimeout+requestSlack)
		defer cancel()
		c.SetRequest(c.Request().WithContext(ctx))
		return next(c)
	}
}

// readBody reads the request body, at most --max-body-bytes: a larger body is 413 M_TOO_LARGE,
// found without reading more than the limit plus one byte.
func (s *Server) readBody(c echo.Context) ([]byte, error) {
	return matrixhttp.ReadBody(nil, c.Request(), s.cfg.MaxBodyBytes)
}

// authenticate checks the access token of a client request.
func (s *Server) authenticate(c echo.Context) (Identity, error) {
	token, ok := accessToken(c.Request())
	if !ok {
		return Identity{}, matrixErr(CodeMissingToken, "missing access token")
	}
	id, err := s.auth.Authenticate(c.Request().Context(), token)
	if err != nil {
		return Identity{}, err
	}
	c.Set(ctxKeyUser, id.User)
	return id, nil
}

// storeFailed counts and wraps a store error.
func (s *Server) storeFailed(op string, err error) error {
	s.metrics.storeErrors.WithLabelValues(op).Inc()
	if errors.Is(err, store.ErrUnavailable) {
		return storeUnavailableErr(fmt.Errorf("store %s: %w", op, err))
	}
	return internalErr("accessing the key store", fmt.Errorf("store %s: %w", op, err))
}

// writeJSON answers 200 with a JSON body built by the caller. The length is known, so it is
// sent as Content-Length: without it net/http sends any body over 2 KiB (a claim of more than
// a few devices) chunked, in more write calls.
func writeJSON(c echo.Context, body []byte) error {
	return matrixhttp.WriteJSON(c.Response(), http.StatusOK, body)
}

// ClientVersions are the client-server API versions GET /_matrix/client/versions lists.
var ClientVersions = []string{
	"r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10",
	"v1.11", "v1.12", "v1.13", "v1.14", "v1.15", "v1.16", "v1.17", "v1.18", "v1.19",
}

// UnstableFeatureMSC4072 is the unstable feature flag of complete claim answers.
const UnstableFeatureMSC4072 = "org.matrix.msc4072"

// handleVersions serves GET /_matrix/client/versions. The MSC4072 flag says whether this
// client's claim answers are complete: false in legacy mode and for a client the compatibility
// policy answers legacy-shaped.
func (s *Server) handleVersions(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]any{
		"versions":          ClientVersions,
		"unstable_features": map[string]bool{UnstableFeatureMSC4072: s.policy.ModeFor(c.Request().UserAgent()) == core.ModeMSC4072},
	})
}

func (s *Server) handleHealthz(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
}

// pinger is implemented by stores that have a cheap reachability check.
type pinger interface {
	Ping(ctx context.Context) error
}

// ReadyTimeout bounds the store check of GET /readyz.
const ReadyTimeout = 2 * time.Second

func (s *Server) handleReadyz(c echo.Context) error {
	ctx, cancel := context.WithTimeout(c.Request().Context(), ReadyTimeout)
	defer cancel()
	var err error
	if p, ok := s.store.(pinger); ok {
		err = p.Ping(ctx)
	} else {
		// A count over a device that cannot exist: one indexed read.
		_, err = s.store.Counts(ctx, "@keyclaim-readyz:"+string(s.serverName), "")
	}
	if err != nil {
		s.metrics.storeErrors.WithLabelValues("ping").Inc()
		return unavailableErr("the key store is not reachable", fmt.Errorf("readyz: %w", err))
	}
	return c.JSON(http.StatusOK, map[string]string{"status": "ready"})
}

// goccySerializer is echo's JSON serializer on goccy/go-json.
type goccySerializer struct{}

// Serialize writes i as JSON.
func (goccySerializer) Serialize(c echo.Context, i any, indent string) error {
	enc := gojson.NewEncoder(c.Response())
	if indent != "" {
		enc.SetIndent("", indent)
	}
	return enc.Encode(i)
}

// Deserialize reads the request body as JSON into i.
func (goccySerializer) Deserialize(c echo.Context, i any) error {
	if err := gojson.NewDecoder(c.Request().Body).Decode(i); err != nil {
		return matrixErr(core.CodeNotJSON, "the request body is not valid JSON")
	}
	return nil
}
