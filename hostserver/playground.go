package hostserver

import (
	"net"
	"net/http"
	"slices"
	"strings"

	"github.com/keyclaim/keyclaim/hostserver/playground"
	"github.com/labstack/echo/v4"
)

// Live mode's configuration: GET PlaygroundLivePath, served only with --dev, gives the page the
// development access tokens, so that it can upload its inventory and claim on this server.
const (
	PlaygroundLivePath = "/_keyclaim/playground/live"
	// PlaygroundLiveHeader must be sent with the value "live": a page of another origin cannot
	// send a custom header without a CORS preflight, which this path never grants.
	PlaygroundLiveHeader = "X-Keyclaim-Playground"
)

// addPlayground registers the playground's routes (--dev or --playground): the embedded site at
// "/" and its files, and with --dev live mode's configuration. A binary built without the site
// answers "/" with 404 M_NOT_FOUND and [playground.NotBuiltMessage].
func (s *Server) addPlayground(add func(method, path string, h echo.HandlerFunc)) {
	if s.cfg.Dev {
		add(http.MethodGet, PlaygroundLivePath, s.handlePlaygroundLive)
	}
	fsys, ok := s.cfg.PlaygroundFS, s.cfg.PlaygroundFS != nil
	if !ok {
		fsys, ok = playground.Embedded()
	}
	var site *playground.Site
	var err error
	if ok {
		site, err = playground.Load(fsys)
	}
	if !ok || err != nil {
		s.playground = "(not built into this binary: run `make build`)"
		if err != nil {
			s.logger.Error("playground: the embedded site cannot be served", "err", err)
		}
		add(http.MethodGet, "/", func(echo.Context) error {
			return matrixErr(CodeNotFound, playground.NotBuiltMessage)
		})
		return
	}
	s.playground = "(open it in a browser; live mode claims with the tokens above)"
	h := echo.WrapHandler(site)
	for _, p := range site.Paths() {
		add(http.MethodGet, p, h)
		add(http.MethodHead, p, h)
	}
}

// liveIdentity is one development identity given to the playground page.
type liveIdentity struct {
	UserID      string `json:"user_id"`
	DeviceID    string `json:"device_id"`
	AccessToken string `json:"access_token"`
}

// handlePlaygroundLive answers live mode's configuration: this server's name, its mode and the
// tokens of its token file (what the --dev banner prints). The tokens go only to a request that
// comes over loopback, names a loopback host (a DNS-rebound name cannot), carries
// PlaygroundLiveHeader and, when the browser says where it comes from, comes from the page's own
// origin. The answer is never cached.
func (s *Server) handlePlaygroundLive(c echo.Context) error {
	r := c.Request()
	playground.SetSecurityHeaders(c.Response().Header())
	c.Response().Header().Set("Cache-Control", "no-store")
	if r.Header.Get(PlaygroundLiveHeader) != "live" {
		return matrixErr(CodeForbidden, "live mode's configuration is for the playground page only: send "+PlaygroundLiveHeader+": live")
	}
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" {
		return matrixErr(CodeForbidden, "live mode's configuration is given only to the playground's own origin")
	}
	if !isLoopbackAddr(r.RemoteAddr) || !isLoopbackHost(r.Host) {
		return matrixErr(CodeForbidden, "live mode's development tokens are given only over loopback (127.0.0.1, ::1 or localhost)")
	}
	tf, ok := s.auth.(*TokenFileAuth)
	if !ok {
		return matrixErr(CodeNotFound, "live mode needs a token file (--dev without --homeserver)")
	}
	tokens := *tf.tokens.Load()
	ids := make([]liveIdentity, 0, len(tokens))
	for token, id := range tokens {
		if id.Device == "" {
			continue // a token without a device cannot upload keys
		}
		ids = append(ids, liveIdentity{UserID: string(id.User), DeviceID: string(id.Device), AccessToken: token})
	}
	slices.SortFunc(ids, func(a, b liveIdentity) int {
		return strings.Compare(a.UserID+"\x00"+a.DeviceID+"\x00"+a.AccessToken, b.UserID+"\x00"+b.DeviceID+"\x00"+b.AccessToken)
	})
	return c.JSON(http.StatusOK, map[string]any{
		"server_name": s.serverName,
		"mode":        s.policy.Mode,
		"identities":  ids,
	})
}

// isLoopbackAddr reports whether a remote address (host:port) is a loopback IP.
func isLoopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// isLoopbackHost reports whether a Host header names the loopback interface: "localhost" or a
// loopback IP literal, with or without a port.
func isLoopbackHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
