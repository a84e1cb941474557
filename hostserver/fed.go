package hostserver

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"

	"github.com/keyclaim/keyclaim/core"
	"github.com/keyclaim/keyclaim/hostserver/federation"
	"github.com/labstack/echo/v4"
)

// This file wires package federation into the server: the signing key and the key server
// endpoint, the X-Matrix verification of inbound federation requests, and the client that
// claims and queries remote users (README.md, "Federation").

// ctxKeyOrigin is the echo context key of the authenticated origin of a federation request, for
// the request log.
const ctxKeyOrigin = "keyclaim.origin"

// buildFederation sets up federation from the configuration. With --federation on it loads (or
// creates) the signing key and builds the resolver (static routes, then discovery), the
// X-Matrix signing client (s.fed unless the configuration injected one) and the verifier of
// inbound requests (s.fedAuth unless injected). Off, remote users fail with [NoFederation] and
// the federation endpoints answer 403.
func (s *Server) buildFederation(cfg *Config) error {
	if !cfg.FederationEnabled {
		if s.fed == nil {
			s.fed = NoFederation{}
		}
		if s.fedAuth == nil {
			s.fedAuth = federationOff{}
		}
		s.logger.Info("federation is off (--federation=false): remote users are failures of their server; federation endpoints answer 403")
		return nil
	}
	key, err := federation.LoadOrCreateSigningKey(cfg.SigningKey, s.serverName)
	if err != nil {
		return fmt.Errorf("%w (give --signing-key a readable, or creatable, file; or turn federation off with --federation=false)", err)
	}
	log := s.logger.With("component", "federation")
	resolver := federation.NewResolver(federation.ResolverOptions{
		Static:          maps.Clone(cfg.FederationResolve), // the caller may change its map later
		AllowPrivateIPs: cfg.FederationAllowPrivateIPs,
		Logger:          log,
	})
	perDevice := cfg.FederationResponseBytesPerDevice
	if perDevice == 0 {
		perDevice = -1 // none (0 would be the client's default)
	}
	client, err := federation.NewClient(federation.ClientOptions{
		SigningKey:              key,
		Resolver:                resolver,
		MaxResponseBytes:        cfg.FederationMaxResponseBytes,
		ResponseBytesPerDevice:  perDevice,
		MaxResponseBytesCeiling: cfg.FederationMaxResponseBytesCeiling(),
		DefaultTimeout:          cfg.FederationTimeoutCap,
		Observer:                s.metrics,
		Logger:                  log,
	})
	if err != nil {
		return fmt.Errorf("federation client: %w", err)
	}
	verifier, err := federation.NewVerifier(federation.VerifierOptions{ServerName: s.serverName, Keys: client, Logger: log})
	if err != nil {
		return fmt.Errorf("federation verifier: %w", err)
	}
	s.signingKey, s.fedClient = key, client
	if s.fed == nil {
		s.fed = client
	}
	if s.fedAuth == nil {
		s.fedAuth = verifier
	}
	s.logger.Info("federation is on", "key_id", string(key.ID()), "signing_key", cfg.SigningKey,
		"federation_resolve", cfg.FederationResolve.String(), "allow_private_ips", cfg.FederationAllowPrivateIPs)
	return nil
}

// SigningKey returns the server's signing key, nil when federation is off.
func (s *Server) SigningKey() *federation.SigningKey { return s.signingKey }

// keyServerHandler serves GET /_matrix/key/v2/server: the signing key, self-signed.
func (s *Server) keyServerHandler() echo.HandlerFunc {
	return echo.WrapHandler(federation.KeyServerHandler(s.signingKey, federation.DefaultKeyValidity, nil))
}

// authenticateFederation checks the X-Matrix authorization of an inbound federation request
// whose body has been read. A refusal is counted by cause, logged with its underlying error,
// and answered 401 M_UNAUTHORIZED (400 M_NOT_JSON when the body is not JSON, 400 M_BAD_JSON
// when it has duplicate keys) with a message that says which check failed.
func (s *Server) authenticateFederation(c echo.Context, body []byte) (core.ServerName, error) {
	r := c.Request()
	origin, err := s.fedAuth.AuthenticateFederation(r, body)
	if err != nil {
		var ae *federation.AuthError
		if errors.As(err, &ae) {
			s.metrics.fedAuthFailures.WithLabelValues(ae.Cause.String()).Inc()
			s.logger.LogAttrs(r.Context(), slog.LevelInfo, "federation request refused",
				slog.String("path", r.URL.Path), slog.String("cause", ae.Cause.String()),
				slog.String("remote_addr", r.RemoteAddr), slog.String("error", err.Error()))
		}
		return "", err
	}
	if origin != "" {
		c.Set(ctxKeyOrigin, origin)
	}
	return origin, nil
}

// federationOff is the FederationAuthenticator of a server without federation: it refuses
// every request.
type federationOff struct{}

// AuthenticateFederation refuses the request: 403 M_FORBIDDEN.
func (federationOff) AuthenticateFederation(*http.Request, []byte) (core.ServerName, error) {
	return "", matrixErr(CodeForbidden, "federation is disabled on this server")
}
