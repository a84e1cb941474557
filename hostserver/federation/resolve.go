package federation

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/keyclaim/keyclaim/core"
)

// DefaultPort is the federation port of a server name without one (server-server API,
// "Resolving server names").
const DefaultPort = 8448

// Well-known caching (server-server API, "Resolving server names", step 3).
const (
	// WellKnownDefaultCache is how long a valid /.well-known/matrix/server answer without
	// cache headers is cached: the spec's recommended 24 hours.
	WellKnownDefaultCache = 24 * time.Hour
	// WellKnownMaxCache caps the cache time of any answer: the spec's recommended 48 hours.
	WellKnownMaxCache = 48 * time.Hour
	// WellKnownMinCache is the least time an answer is cached, whatever its headers say
	// (no-store, max-age=0), so that a server cannot make us fetch on every request (Synapse
	// does the same).
	WellKnownMinCache = 5 * time.Minute
	// WellKnownErrorCache is how long a failed lookup (an error, a non-200 answer, invalid
	// JSON) is cached the first time; it doubles for each consecutive failure up to
	// WellKnownMaxErrorCache, the spec's "up to an hour" with exponential backoff.
	WellKnownErrorCache = 5 * time.Minute
	// WellKnownMaxErrorCache caps the cache time of failed lookups.
	WellKnownMaxErrorCache = time.Hour
	// WellKnownMaxBytes bounds the size of a /.well-known/matrix/server answer (Synapse's
	// limit).
	WellKnownMaxBytes = 50 << 10
	// WellKnownMaxRedirects bounds the redirects followed for one lookup.
	WellKnownMaxRedirects = 10
	// SRVCache is how long SRV lookups (found or not) are cached; the Go resolver does not
	// report DNS TTLs.
	SRVCache = 5 * time.Minute
)

// DNS performs the DNS lookups of server discovery. *net.Resolver implements it; tests inject
// a fake. LookupSRV must return records in the order to try them (RFC 2782 priority and
// weight), as *net.Resolver does.
type DNS interface {
	LookupSRV(ctx context.Context, service, proto, name string) (cname string, addrs []*net.SRV, err error)
	LookupHost(ctx context.Context, host string) (addrs []string, err error)
}

// StaticRoutes maps server names to base URLs that bypass discovery: for private federations
// and tests, "hs2.test=http://127.0.0.1:8449". A route is the only way a server is reached over
// plain HTTP, and only when its URL says http://. With https://, the certificate is checked
// against the URL's host. *StaticRoutes implements flag.Value, so a repeatable flag can fill it.
type StaticRoutes map[core.ServerName]*url.URL

// ParseStaticRoute parses "server_name=URL", where URL is http:// or https:// with a host, an
// optional port and no path, query, fragment or user info.
func ParseStaticRoute(s string) (core.ServerName, *url.URL, error) {
	name, raw, ok := strings.Cut(strings.TrimSpace(s), "=")
	if !ok {
		return "", nil, fmt.Errorf("federation route %q: want server_name=URL", s)
	}
	server, err := core.ParseServerName(name)
	if err != nil {
		return "", nil, fmt.Errorf("federation route %q: %w", s, err)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", nil, fmt.Errorf("federation route %q: %w", s, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", nil, fmt.Errorf("federation route %q: the URL must start with http:// or https://", s)
	}
	if u.Host == "" || u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return "", nil, fmt.Errorf("federation route %q: the URL must be scheme://host[:port] with nothing else", s)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return "", nil, fmt.Errorf("federation route %q: bad port %q", s, p)
		}
	}
	return server, &url.URL{Scheme: u.Scheme, Host: u.Host}, nil
}

// String returns the routes as "name=URL" pairs separated by commas, sorted by name.
func (r StaticRoutes) String() string {
	names := make([]string, 0, len(r))
	for n := range r {
		names = append(names, string(n))
	}
	slices.Sort(names)
	for i, n := range names {
		names[i] = n + "=" + r[core.ServerName(n)].String()
	}
	return strings.Join(names, ",")
}

// Set adds the routes of s: one or more "name=URL" separated by commas or white space. A
// later route for the same name replaces the earlier one.
func (r *StaticRoutes) Set(s string) error {
	for _, part := range strings.FieldsFunc(s, func(c rune) bool { return c == ',' || c == ' ' || c == '\t' || c == '\n' }) {
		name, u, err := ParseStaticRoute(part)
		if err != nil {
			return err
		}
		if *r == nil {
			*r = StaticRoutes{}
		}
		(*r)[name] = u
	}
	return nil
}

// Via says which step of server discovery produced a [Resolution].
type Via string

// The steps of server discovery (server-server API, "Resolving server names").
const (
	ViaStatic       Via = "static"         // a static route
	ViaIPLiteral    Via = "ip-literal"     // step 1
	ViaExplicitPort Via = "explicit-port"  // step 2
	ViaWellKnown    Via = "well-known"     // steps 3.1, 3.2 and 3.5
	ViaWellKnownSRV Via = "well-known-srv" // steps 3.3 and 3.4
	ViaSRV          Via = "srv"            // steps 4 and 5
	ViaDefaultPort  Via = "default-port"   // step 6
)

// Resolution is where requests to a server name go.
type Resolution struct {
	ServerName core.ServerName
	Via        Via
	// Scheme is "https", or "http" for a static route that says so.
	Scheme string
	// Host is the Host header (and the authority of URL).
	Host string
	// TLSServerName is the name the server's certificate must be valid for: a host name, or an
	// IP address (then no SNI is sent).
	TLSServerName string
	// Targets are the host:port pairs to connect to, in order of preference. Host names among
	// them are resolved with A/AAAA records when connecting.
	Targets []string
}

// URL returns the URL of pathAndQuery on the server, as the spec sees it (scheme and Host).
func (r *Resolution) URL(pathAndQuery string) string {
	return r.Scheme + "://" + r.Host + pathAndQuery
}

// SNI returns the TLS server name indication sent: TLSServerName, or "" when it is an IP
// address or the scheme is http.
func (r *Resolution) SNI() string {
	if r.Scheme != "https" || net.ParseIP(r.TLSServerName) != nil {
		return ""
	}
	return r.TLSServerName
}

// ResolverOptions configure a [Resolver].
type ResolverOptions struct {
	// Static routes bypass discovery.
	Static StaticRoutes
	// DNS does SRV and A/AAAA lookups (nil means net.DefaultResolver).
	DNS DNS
	// Dial opens a TCP connection to an IP:port (nil means a net.Dialer with a 10 s timeout).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// TLSConfig is cloned for every TLS connection, its ServerName set per connection (nil
	// means the system's roots). Set RootCAs to trust a private CA.
	TLSConfig *tls.Config
	// AllowPrivateIPs allows discovered servers (and their /.well-known) at loopback, private,
	// link-local and other non-public addresses. Off by default: any origin named in an
	// X-Matrix header makes us fetch its keys, which must not reach internal services (Synapse's
	// federation IP range blacklist does the same). Static routes are always allowed.
	AllowPrivateIPs bool
	// Clock is the time source of the caches (nil means time.Now).
	Clock func() time.Time
	// LookupTimeout bounds one /.well-known or SRV lookup (0 means 10 s). Lookups run on when
	// the request that caused them gives up, so that their result is cached.
	LookupTimeout time.Duration
	// Logger receives discovery logs (nil means slog.Default()).
	Logger *slog.Logger
}

// Resolver resolves server names as the server-server API's "Resolving server names" says and
// connects to them with the certificate checks of its "TLS" section. It caches /.well-known
// answers by the spec's rules and SRV answers for [SRVCache]. It is safe for concurrent use.
type Resolver struct {
	static       StaticRoutes
	dns          DNS
	dial         func(ctx context.Context, network, addr string) (net.Conn, error)
	tlsConfig    *tls.Config
	allowPrivate bool
	now          func() time.Time
	timeout      time.Duration
	log          *slog.Logger

	transport *http.Transport
	wkClient  *http.Client

	mu        sync.Mutex
	wellKnown map[string]*wellKnownEntry
	srv       map[string]*srvEntry
	wkFlight  flight[*wellKnownEntry]
	srvFlight flight[*srvEntry]
}

type wellKnownEntry struct {
	server   string // m.server, or "" when the lookup failed
	err      error
	failures int // consecutive failures
	expires  time.Time
}

type srvEntry struct {
	targets []string
	expires time.Time
}

// maxCacheEntries bounds the discovery caches; expired entries are dropped beyond it.
const maxCacheEntries = 10000

// NewResolver returns a Resolver.
func NewResolver(opts ResolverOptions) *Resolver {
	r := &Resolver{
		static:       opts.Static,
		dns:          opts.DNS,
		dial:         opts.Dial,
		tlsConfig:    opts.TLSConfig,
		allowPrivate: opts.AllowPrivateIPs,
		now:          opts.Clock,
		timeout:      opts.LookupTimeout,
		log:          opts.Logger,
		wellKnown:    map[string]*wellKnownEntry{},
		srv:          map[string]*srvEntry{},
	}
	if r.dns == nil {
		r.dns = net.DefaultResolver
	}
	if r.dial == nil {
		r.dial = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	}
	if r.tlsConfig == nil {
		r.tlsConfig = &tls.Config{}
	}
	if r.now == nil {
		r.now = time.Now
	}
	if r.timeout <= 0 {
		r.timeout = 10 * time.Second
	}
	if r.log == nil {
		r.log = slog.Default()
	}
	r.transport = &http.Transport{
		DialContext:           r.dialPlain,
		DialTLSContext:        r.dialTLS,
		MaxIdleConns:          100,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	r.wkClient = &http.Client{Transport: r.transport, CheckRedirect: checkWellKnownRedirect}
	return r
}

// CloseIdleConnections closes idle connections to federation servers.
func (r *Resolver) CloseIdleConnections() { r.transport.CloseIdleConnections() }

// Resolve returns where requests to name go. Only an invalid server name, a port that cannot be
// connected to (0 or over 65535, which the grammar allows: a [*PortError]) or ctx ending while
// waiting for a lookup is an error: a failed /.well-known or SRV lookup falls back to the next
// step, as the spec says. A static route wins over all of these.
func (r *Resolver) Resolve(ctx context.Context, name core.ServerName) (*Resolution, error) {
	if u, ok := r.static[name]; ok {
		port := u.Port()
		if port == "" {
			port = "443"
			if u.Scheme == "http" {
				port = "80"
			}
		}
		return &Resolution{ServerName: name, Via: ViaStatic, Scheme: u.Scheme, Host: u.Host,
			TLSServerName: u.Hostname(), Targets: []string{net.JoinHostPort(u.Hostname(), port)}}, nil
	}
	if _, err := core.ParseServerName(string(name)); err != nil {
		return nil, fmt.Errorf("resolve: %w", err)
	}
	host, port := splitServerName(string(name))
	if !dialablePort(port) {
		return nil, &PortError{ServerName: name, Port: port}
	}
	res := &Resolution{ServerName: name, Scheme: "https", Host: string(name), TLSServerName: host}
	// Step 1: an IP literal, with its port or 8448.
	if net.ParseIP(host) != nil {
		res.Via, res.Targets = ViaIPLiteral, []string{joinPort(host, port)}
		return res, nil
	}
	// Step 2: a host name with an explicit port.
	if port != "" {
		res.Via, res.Targets = ViaExplicitPort, []string{net.JoinHostPort(host, port)}
		return res, nil
	}
	// Step 3: /.well-known/matrix/server.
	delegated, err := r.lookupWellKnown(ctx, host)
	if err != nil {
		return nil, err
	}
	if delegated != "" {
		dhost, dport := splitServerName(delegated)
		res.TLSServerName = dhost
		res.Via = ViaWellKnown
		switch {
		case net.ParseIP(dhost) != nil: // 3.1
			res.Host, res.Targets = delegated, []string{joinPort(dhost, dport)}
		case dport != "": // 3.2
			res.Host, res.Targets = delegated, []string{net.JoinHostPort(dhost, dport)}
		default: // 3.3, 3.4, 3.5
			res.Host = dhost
			targets, err := r.lookupSRV(ctx, dhost)
			if err != nil {
				return nil, err
			}
			if len(targets) > 0 {
				res.Via, res.Targets = ViaWellKnownSRV, targets
			} else {
				res.Targets = []string{joinPort(dhost, "")}
			}
		}
		return res, nil
	}
	// Steps 4, 5 and 6: SRV records of the host name, then port 8448.
	targets, err := r.lookupSRV(ctx, host)
	if err != nil {
		return nil, err
	}
	if len(targets) > 0 {
		res.Via, res.Targets = ViaSRV, targets
	} else {
		res.Via, res.Targets = ViaDefaultPort, []string{joinPort(host, "")}
	}
	return res, nil
}

// splitServerName splits a valid server name into its host (IPv6 literals without brackets)
// and its port ("" when absent).
func splitServerName(s string) (host, port string) {
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		host, rest := s[1:end], s[end+1:]
		return host, strings.TrimPrefix(rest, ":")
	}
	if i := strings.IndexByte(s, ':'); i >= 0 {
		return s[:i], s[i+1:]
	}
	return s, ""
}

// dialablePort reports whether port ("" for none) can be connected to: the grammar's
// 1*5DIGIT also allows 0 and 65536-99999, which TCP has no room for.
func dialablePort(port string) bool {
	if port == "" {
		return true
	}
	n, err := strconv.Atoi(port)
	return err == nil && n >= 1 && n <= 65535
}

// PortError is a server name that is valid (the spec's grammar allows any port of 1 to 5
// digits) but names a port no connection can be made to: 0, or over 65535. It is a failure of
// that destination at request time, not an invalid request: a user ID on such a server is a
// valid user ID.
type PortError struct {
	ServerName core.ServerName
	Port       string
}

// Error says which server name and port.
func (e *PortError) Error() string {
	return "server name " + string(e.ServerName) + " has port " + e.Port + ", outside 1-65535: no connection can be made to it"
}

func joinPort(host, port string) string {
	if port == "" {
		port = strconv.Itoa(DefaultPort)
	}
	return net.JoinHostPort(host, port)
}

// lookupWellKnown returns the m.server of host's /.well-known/matrix/server, or "" when there
// is none or it is invalid. It fails only when ctx ends first.
func (r *Resolver) lookupWellKnown(ctx context.Context, host string) (string, error) {
	r.mu.Lock()
	e := r.wellKnown[host]
	r.mu.Unlock()
	if e == nil || !r.now().Before(e.expires) {
		var err error
		e, err = r.wkFlight.do(ctx, host, r.timeout, func(ctx context.Context) *wellKnownEntry {
			return r.refreshWellKnown(ctx, host)
		})
		if err != nil {
			return "", fmt.Errorf("resolve %s: waiting for /.well-known/matrix/server: %w", host, err)
		}
	}
	return e.server, nil
}

func (r *Resolver) refreshWellKnown(ctx context.Context, host string) *wellKnownEntry {
	server, ttl, err := r.fetchWellKnown(ctx, host)
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	e := &wellKnownEntry{server: server, expires: now.Add(ttl)}
	if err != nil {
		e.server, e.err, e.failures = "", err, 1
		if prev := r.wellKnown[host]; prev != nil && prev.err != nil {
			e.failures = prev.failures + 1
		}
		e.expires = now.Add(wellKnownErrorCache(e.failures))
		r.log.LogAttrs(ctx, slog.LevelDebug, "federation: no valid /.well-known/matrix/server",
			slog.String("host", host), slog.String("error", err.Error()), slog.Time("retry_after", e.expires))
	} else {
		r.log.LogAttrs(ctx, slog.LevelDebug, "federation: /.well-known/matrix/server delegates",
			slog.String("host", host), slog.String("m.server", server), slog.Time("expires", e.expires))
	}
	if len(r.wellKnown) >= maxCacheEntries {
		for k, old := range r.wellKnown {
			if !now.Before(old.expires) {
				delete(r.wellKnown, k)
			}
		}
	}
	r.wellKnown[host] = e
	return e
}

// wellKnownErrorCache is the cache time after n consecutive failed lookups.
func wellKnownErrorCache(n int) time.Duration {
	d := WellKnownErrorCache
	for i := 1; i < n && d < WellKnownMaxErrorCache; i++ {
		d *= 2
	}
	return min(d, WellKnownMaxErrorCache)
}

// fetchWellKnown fetches https://host/.well-known/matrix/server and returns its m.server and
// how long to cache it.
func (r *Resolver) fetchWellKnown(ctx context.Context, host string) (string, time.Duration, error) {
	// The lookup connects to host itself, whatever resolution a caller's context may carry.
	ctx = context.WithValue(ctx, resolutionKey{}, (*Resolution)(nil))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+host+"/.well-known/matrix/server", nil)
	if err != nil {
		return "", 0, err
	}
	resp, err := r.wkClient.Do(req)
	if err != nil {
		return "", 0, unwrapURLError(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", 0, fmt.Errorf("status %d", resp.StatusCode)
	}
	body, err := readLimited(resp.Body, WellKnownMaxBytes)
	if err != nil {
		return "", 0, err
	}
	v, err := core.ParseValue(body)
	if err != nil {
		return "", 0, err
	}
	m, ok := v.Get("m.server")
	if v.Kind != core.KindObject || !ok || m.Kind != core.KindString {
		return "", 0, errors.New(`no "m.server" string in a JSON object`)
	}
	if _, err := core.ParseServerName(m.Str); err != nil {
		return "", 0, fmt.Errorf("m.server: %w", err)
	}
	if _, port := splitServerName(m.Str); !dialablePort(port) {
		// Valid by the grammar, but step 3.2 could not connect to it: an unusable answer, so
		// discovery goes on with step 4 as for any invalid one.
		return "", 0, fmt.Errorf("m.server %s: port %s is outside 1-65535", m.Str, port)
	}
	return m.Str, wellKnownCache(resp.Header, r.now()), nil
}

// checkWellKnownRedirect follows up to WellKnownMaxRedirects redirects, to https only, never
// twice to the same URL (the spec: "redirection loops should be avoided").
func checkWellKnownRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= WellKnownMaxRedirects {
		return fmt.Errorf("more than %d redirects", WellKnownMaxRedirects)
	}
	if req.URL.Scheme != "https" {
		return fmt.Errorf("redirect to a non-https URL %s", req.URL.Redacted())
	}
	for _, v := range via {
		if v.URL.String() == req.URL.String() {
			return fmt.Errorf("redirect loop at %s", req.URL.Redacted())
		}
	}
	return nil
}

// wellKnownCache returns how long to cache a valid /.well-known answer with headers h:
// Cache-Control max-age (less Age) or Expires, else WellKnownDefaultCache, within
// [WellKnownMinCache, WellKnownMaxCache]; no-store caches for the minimum.
func wellKnownCache(h http.Header, now time.Time) time.Duration {
	d, known := WellKnownDefaultCache, false
	for _, cc := range h.Values("Cache-Control") {
		for dir := range strings.SplitSeq(cc, ",") {
			name, value, _ := strings.Cut(strings.TrimSpace(dir), "=")
			switch strings.ToLower(strings.TrimSpace(name)) {
			case "no-store":
				return WellKnownMinCache
			case "max-age":
				if n, err := strconv.ParseInt(strings.Trim(strings.TrimSpace(value), `"`), 10, 64); err == nil && n >= 0 && !known {
					d, known = time.Duration(min(n, int64(WellKnownMaxCache/time.Second)))*time.Second, true
				}
			}
		}
	}
	if known {
		if age, err := strconv.ParseInt(h.Get("Age"), 10, 64); err == nil && age > 0 {
			d -= time.Duration(min(age, int64(WellKnownMaxCache/time.Second))) * time.Second
		}
	} else if exp := h.Get("Expires"); exp != "" {
		if t, err := http.ParseTime(exp); err == nil {
			d = t.Sub(now)
		} else {
			d = 0 // an invalid Expires means "already expired" (RFC 9111 section 5.3)
		}
	}
	return min(max(d, WellKnownMinCache), WellKnownMaxCache)
}

// lookupSRV returns the targets of _matrix-fed._tcp.host, else of _matrix._tcp.host, or none.
// It fails only when ctx ends first.
func (r *Resolver) lookupSRV(ctx context.Context, host string) ([]string, error) {
	r.mu.Lock()
	e := r.srv[host]
	r.mu.Unlock()
	if e == nil || !r.now().Before(e.expires) {
		var err error
		e, err = r.srvFlight.do(ctx, host, r.timeout, func(ctx context.Context) *srvEntry {
			return r.refreshSRV(ctx, host)
		})
		if err != nil {
			return nil, fmt.Errorf("resolve %s: waiting for SRV records: %w", host, err)
		}
	}
	return e.targets, nil
}

func (r *Resolver) refreshSRV(ctx context.Context, host string) *srvEntry {
	var targets []string
	for _, service := range []string{"matrix-fed", "matrix"} {
		_, addrs, err := r.dns.LookupSRV(ctx, service, "tcp", host)
		if err != nil {
			var dnsErr *net.DNSError
			if !errors.As(err, &dnsErr) || !dnsErr.IsNotFound {
				r.log.LogAttrs(ctx, slog.LevelInfo, "federation: SRV lookup failed",
					slog.String("name", "_"+service+"._tcp."+host), slog.String("error", err.Error()))
			}
		}
		for _, a := range addrs { // *net.Resolver may return valid records alongside an error
			if t := strings.TrimSuffix(a.Target, "."); t != "" {
				targets = append(targets, net.JoinHostPort(t, strconv.Itoa(int(a.Port))))
			}
		}
		if len(targets) > 0 {
			break
		}
	}
	now := r.now()
	e := &srvEntry{targets: targets, expires: now.Add(SRVCache)}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.srv) >= maxCacheEntries {
		for k, old := range r.srv {
			if !now.Before(old.expires) {
				delete(r.srv, k)
			}
		}
	}
	r.srv[host] = e
	return e
}

// resolutionKey is the context key under which a request carries its Resolution to the dialer.
type resolutionKey struct{}

// newRequest returns a request to pathAndQuery on the resolved server. Its URL's host is a
// name private to this package, one per server name, so that each server name has its own
// connection pool and no connection made for one (or for a /.well-known lookup) is used for
// another; the dialer finds the real targets and TLS name in the request's context.
func (r *Resolver) newRequest(ctx context.Context, res *Resolution, method, pathAndQuery string, body []byte) (*http.Request, error) {
	sum := sha256.Sum256([]byte(res.ServerName))
	u := res.Scheme + "://fed-" + hex.EncodeToString(sum[:16]) + ".invalid" + pathAndQuery
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(context.WithValue(ctx, resolutionKey{}, res), method, u, rd)
	if err != nil {
		return nil, err
	}
	req.Host = res.Host
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return req, nil
}

// dialPlain opens a plain TCP connection: to the resolution's targets (static http:// routes),
// or to addr.
func (r *Resolver) dialPlain(ctx context.Context, network, addr string) (net.Conn, error) {
	if res, _ := ctx.Value(resolutionKey{}).(*Resolution); res != nil {
		return r.dialTargets(ctx, network, res.Targets, res.Via == ViaStatic)
	}
	return r.dialTargets(ctx, network, []string{addr}, false)
}

// dialTLS opens a TLS connection to the resolution's targets with its TLS server name, or to
// addr with its host name, and checks the certificate.
func (r *Resolver) dialTLS(ctx context.Context, network, addr string) (net.Conn, error) {
	targets, trusted := []string{addr}, false
	name, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	if res, _ := ctx.Value(resolutionKey{}).(*Resolution); res != nil {
		targets, trusted, name = res.Targets, res.Via == ViaStatic, res.TLSServerName
	}
	conn, err := r.dialTargets(ctx, network, targets, trusted)
	if err != nil {
		return nil, err
	}
	cfg := r.tlsConfig.Clone()
	cfg.ServerName = name // an IP address is checked against the certificate's IP SANs and sent as no SNI
	tc := tls.Client(conn, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("TLS with %s: %w", name, err)
	}
	return tc, nil
}

// dialTargets connects to the first target that answers, resolving host names with A/AAAA
// records. Unless trusted or AllowPrivateIPs, non-public addresses are refused.
func (r *Resolver) dialTargets(ctx context.Context, network string, targets []string, trusted bool) (net.Conn, error) {
	var last error
	for _, t := range targets {
		host, port, err := net.SplitHostPort(t)
		if err != nil {
			last = err
			continue
		}
		ips := []string{host}
		if net.ParseIP(host) == nil {
			if ips, err = r.dns.LookupHost(ctx, host); err != nil {
				last = err
				if !errors.As(err, new(*net.DNSError)) {
					last = fmt.Errorf("lookup %s: %w", host, err)
				}
				continue
			}
		}
		for _, ip := range ips {
			if !trusted && !r.allowPrivate && !isPublicIP(net.ParseIP(ip)) {
				last = &nonPublicError{host: host, ip: ip}
				continue
			}
			conn, err := r.dial(ctx, network, net.JoinHostPort(ip, port))
			if err == nil {
				return conn, nil
			}
			last = err
			if ctx.Err() != nil {
				return nil, err
			}
		}
	}
	if last == nil {
		last = errors.New("no address to connect to")
	}
	return nil, last
}

// cgnat is the shared address space of RFC 6598.
var cgnat = &net.IPNet{IP: net.IP{100, 64, 0, 0}, Mask: net.CIDRMask(10, 32)}

// isPublicIP reports whether ip is a global unicast address outside the private, shared and
// link-local ranges.
func isPublicIP(ip net.IP) bool {
	if ip == nil || !ip.IsGlobalUnicast() || ip.IsPrivate() || cgnat.Contains(ip) {
		return false
	}
	if ip4 := ip.To4(); ip4 != nil && ip4[0] == 0 {
		return false
	}
	return true
}

// readLimited reads all of rd if it is at most limit bytes.
func readLimited(rd io.Reader, limit int64) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(rd, min(limit, math.MaxInt64-1)+1)) // one byte more, without overflow
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, &tooLargeError{limit: limit}
	}
	return data, nil
}

type tooLargeError struct{ limit int64 }

// Error says the answer was larger than the limit.
func (e *tooLargeError) Error() string {
	return fmt.Sprintf("the answer is larger than the limit of %d bytes", e.limit)
}

// unwrapURLError drops the *url.Error wrapper of http.Client errors, whose URL (with this
// package's private host names) says nothing useful.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// nonPublicError refuses a discovered server at a loopback, private or other non-public address.
// Its text is safe to show to clients: it names only what the remote server published.
type nonPublicError struct{ host, ip string }

// Error says which host resolved to which address.
func (e *nonPublicError) Error() string {
	return e.host + " is at " + e.ip + ", a non-public address, which discovered servers may not use"
}
