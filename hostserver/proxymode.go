package hostserver

import (
	"fmt"
	"net/http"
	"net/url"

	"github.com/keyclaim/keyclaim/hostserver/proxy"
	"github.com/labstack/echo/v4"
)

// buildProxyMode finishes New for --upstream (issue 6): keyclaim in front of an existing
// homeserver completes its /keys/claim answers. There is no store, authenticator, engine or
// federation: the upstream checks tokens and holds the keys. /healthz, /readyz and /metrics stay
// local; with --upstream-passthrough every other path goes to the upstream unchanged.
func (s *Server) buildProxyMode() (*Server, error) {
	upstream, err := url.Parse(s.cfg.Upstream)
	if err != nil {
		return nil, fmt.Errorf("--upstream: %w", err)
	}
	pm, err := proxy.NewPrometheusMetrics(s.metrics.registry)
	if err != nil {
		return nil, fmt.Errorf("proxy metrics: %w", err)
	}
	perDevice := s.cfg.UpstreamResponseBytesPerDevice
	if perDevice == 0 {
		perDevice = -1 // none (0 would be the proxy's default)
	}
	p, err := proxy.New(proxy.Config{
		Upstream:              upstream,
		ServerName:            s.serverName,
		Mode:                  s.policy.Mode,
		LegacyUserAgents:      s.policy.LegacyUserAgents,
		Limits:                s.cfg.limits(),
		MaxUpstreamBody:       s.cfg.UpstreamMaxResponseBytes,
		UpstreamBodyPerDevice: perDevice,
		Passthrough:           s.cfg.UpstreamPassthrough,
		TrustForwarded:        s.cfg.UpstreamTrustForwarded,
		Logger:                s.logger.With("component", "proxy"),
		Metrics: proxy.MetricsFunc(func(o proxy.Observation) {
			pm.ObserveClaim(o)
			if o.Result == proxy.ResultCompleted {
				s.metrics.addAnswer(endpointClient, o.Shape)
			}
		}),
	})
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	e := echo.New()
	e.HideBanner = true
	e.HidePort = true
	e.JSONSerializer = goccySerializer{}
	e.HTTPErrorHandler = func(err error, c echo.Context) { s.writeError(c, err) }
	e.Use(s.observe, s.recoverPanics)
	h := echo.WrapHandler(p)
	add := func(method, path string, h echo.HandlerFunc) {
		e.Add(method, path, h)
		s.routes[path] = true
	}
	add(http.MethodGet, "/healthz", s.handleHealthz)
	add(http.MethodGet, "/readyz", s.handleHealthz) // nothing local to be ready: the upstream answers for itself
	add(http.MethodGet, "/metrics", echo.WrapHandler(s.metrics.handler()))
	for _, path := range []string{proxy.ClaimPathV3, proxy.ClaimPathR0} {
		e.Any(path, h)
		s.routes[path] = true
	}
	// Every other path: the proxy passes it through (--upstream-passthrough) or answers
	// 404 M_UNRECOGNIZED itself.
	e.Any("/*", h)
	s.echo = e
	s.http = s.newHTTPServer()
	s.logger.Info("proxy mode", "upstream", redact(s.cfg.Upstream), "server_name", string(s.serverName),
		"mode", string(s.policy.Mode), "passthrough", s.cfg.UpstreamPassthrough)
	s.logger.Info("claim answer policy: "+s.policy.Describe(), "mode", string(s.policy.Mode), "legacy_user_agents", s.policy.Expr())
	return s, nil
}
