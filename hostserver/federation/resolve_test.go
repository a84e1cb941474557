package federation

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyclaim/keyclaim/core"
)

// discoveryEnv is a fake internet on loopback: a fake DNS, a dialer that maps the ports the
// spec connects to (443, 8448, SRV ports) to test listeners, and an HTTPS server answering
// /.well-known/matrix/server for many host names with certificates of a test CA.
type discoveryEnv struct {
	pki       *testPKI
	dns       *fakeDNS
	ports     *portMap
	clock     *fakeClock
	wellKnown *tlsServer
	mu        sync.Mutex
	wkFetches map[string]int
}

// wellKnownAnswers maps a host to its /.well-known/matrix/server handler.
var wellKnownAnswers = map[string]func(w http.ResponseWriter, r *http.Request){
	"wk-port.test":   wkJSON(`{"m.server":"delegated.test:8555"}`, ""),
	"wk-ip.test":     wkJSON(`{"m.server":"127.0.0.2"}`, ""),
	"wk-ip6.test":    wkJSON(`{"m.server":"[2001:db8::1]:9000"}`, ""),
	"wk-srv.test":    wkJSON(`{"m.server":"deleg-srv.test"}`, "max-age=600"),
	"wk-legacy.test": wkJSON(`{"m.server":"deleg-legacy.test"}`, ""),
	"wk-none.test":   wkJSON(`{"m.server":"deleg-none.test"}`, ""),
	"nostore.test":   wkJSON(`{"m.server":"deleg-none.test"}`, "no-store"),
	"forever.test":   wkJSON(`{"m.server":"deleg-none.test"}`, "public, max-age=999999999"),
	"badjson.test":   wkJSON(`{"m.server":`, ""),
	"badname.test":   wkJSON(`{"m.server":"bad name!"}`, ""),
	"badport.test":   wkJSON(`{"m.server":"delegated.test:99999"}`, ""),
	"notobject.test": wkJSON(`["m.server"]`, ""),
	"big.test":       wkJSON(`{"m.server":"deleg-none.test"}`+strings.Repeat(" ", 100<<10), ""),
	"redirect.test": func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/.well-known/matrix/server" {
			http.Redirect(w, r, "https://redirect.test/elsewhere", http.StatusFound)
			return
		}
		wkJSON(`{"m.server":"after-redirect.test:1234"}`, "")(w, r)
	},
	"loop.test": func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "https://loop.test/.well-known/matrix/server", http.StatusMovedPermanently)
	},
	"http-redirect.test": func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://http-redirect.test/elsewhere", http.StatusFound)
	},
}

func wkJSON(body, cacheControl string) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, _ *http.Request) {
		if cacheControl != "" {
			w.Header().Set("Cache-Control", cacheControl)
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, body)
	}
}

// wkHosts are the host names that resolve to the well-known server (127.0.0.1): those with an
// answer above, and some that answer 404.
var wkHosts = []string{"srv.test", "legacy.test", "plain.test"}

func newDiscoveryEnv(t *testing.T) *discoveryEnv {
	env := &discoveryEnv{pki: newTestPKI(t), dns: newFakeDNS(), ports: newPortMap(), clock: newFakeClock(), wkFetches: map[string]int{}}
	names := slices.Clone(wkHosts)
	for h := range wellKnownAnswers {
		names = append(names, h)
	}
	env.wellKnown = startTLSServer(t, env.pki, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		env.mu.Lock()
		env.wkFetches[host]++
		env.mu.Unlock()
		if h, ok := wellKnownAnswers[host]; ok {
			h(w, r)
			return
		}
		http.NotFound(w, r)
	}), names...)
	for _, n := range names {
		env.dns.setHost(n, "127.0.0.1")
	}
	env.ports.set("127.0.0.1:443", env.wellKnown.Addr)
	env.dns.setSRV("_matrix-fed._tcp.deleg-srv.test", "fed.deleg-srv.test.", 8666)
	env.dns.setSRV("_matrix._tcp.deleg-legacy.test", "old.deleg-legacy.test.", 8667)
	env.dns.setSRV("_matrix-fed._tcp.srv.test", "target.srv.test.", 8777)
	env.dns.setSRV("_matrix-fed._tcp.srv.test", "backup.srv.test.", 8778)
	env.dns.setSRV("_matrix._tcp.srv.test", "ignored.srv.test.", 1) // _matrix-fed wins
	env.dns.setSRV("_matrix._tcp.legacy.test", "old.legacy.test.", 8779)
	return env
}

func (env *discoveryEnv) resolver(t *testing.T, static StaticRoutes, allowPrivate bool) *Resolver {
	return NewResolver(ResolverOptions{
		Static:          static,
		DNS:             env.dns,
		Dial:            env.ports.Dial,
		TLSConfig:       &tls.Config{RootCAs: env.pki.pool},
		AllowPrivateIPs: allowPrivate,
		Clock:           env.clock.Now,
		Logger:          quietLog(),
	})
}

func (env *discoveryEnv) fetches(host string) int {
	env.mu.Lock()
	defer env.mu.Unlock()
	return env.wkFetches[host]
}

func TestResolve(t *testing.T) {
	env := newDiscoveryEnv(t)
	static := StaticRoutes{}
	mustRoute(t, static, "hs2.test", "http://127.0.0.1:8449")
	mustRoute(t, static, "hs3.test", "https://internal.test:8443")
	mustRoute(t, static, "hs4.test", "https://internal.test")
	mustRoute(t, static, "hs5.test:99999", "https://internal.test")
	r := env.resolver(t, static, true)
	cases := []struct {
		name   core.ServerName
		via    Via
		url    string // of "/x"
		tls    string
		sni    string
		target []string
	}{
		{"1.2.3.4", ViaIPLiteral, "https://1.2.3.4/x", "1.2.3.4", "", []string{"1.2.3.4:8448"}},
		{"1.2.3.4:9000", ViaIPLiteral, "https://1.2.3.4:9000/x", "1.2.3.4", "", []string{"1.2.3.4:9000"}},
		{"[2001:db8::1]", ViaIPLiteral, "https://[2001:db8::1]/x", "2001:db8::1", "", []string{"[2001:db8::1]:8448"}},
		{"[2001:db8::1]:9000", ViaIPLiteral, "https://[2001:db8::1]:9000/x", "2001:db8::1", "", []string{"[2001:db8::1]:9000"}},
		{"example.test:9000", ViaExplicitPort, "https://example.test:9000/x", "example.test", "example.test", []string{"example.test:9000"}},
		{"wk-port.test", ViaWellKnown, "https://delegated.test:8555/x", "delegated.test", "delegated.test", []string{"delegated.test:8555"}},
		{"wk-ip.test", ViaWellKnown, "https://127.0.0.2/x", "127.0.0.2", "", []string{"127.0.0.2:8448"}},
		{"wk-ip6.test", ViaWellKnown, "https://[2001:db8::1]:9000/x", "2001:db8::1", "", []string{"[2001:db8::1]:9000"}},
		{"wk-srv.test", ViaWellKnownSRV, "https://deleg-srv.test/x", "deleg-srv.test", "deleg-srv.test", []string{"fed.deleg-srv.test:8666"}},
		{"wk-legacy.test", ViaWellKnownSRV, "https://deleg-legacy.test/x", "deleg-legacy.test", "deleg-legacy.test", []string{"old.deleg-legacy.test:8667"}},
		{"wk-none.test", ViaWellKnown, "https://deleg-none.test/x", "deleg-none.test", "deleg-none.test", []string{"deleg-none.test:8448"}},
		{"redirect.test", ViaWellKnown, "https://after-redirect.test:1234/x", "after-redirect.test", "after-redirect.test", []string{"after-redirect.test:1234"}},
		{"srv.test", ViaSRV, "https://srv.test/x", "srv.test", "srv.test", []string{"target.srv.test:8777", "backup.srv.test:8778"}},
		{"legacy.test", ViaSRV, "https://legacy.test/x", "legacy.test", "legacy.test", []string{"old.legacy.test:8779"}},
		{"plain.test", ViaDefaultPort, "https://plain.test/x", "plain.test", "plain.test", []string{"plain.test:8448"}},
		{"nodns.test", ViaDefaultPort, "https://nodns.test/x", "nodns.test", "nodns.test", []string{"nodns.test:8448"}},
		{"badjson.test", ViaDefaultPort, "https://badjson.test/x", "badjson.test", "badjson.test", []string{"badjson.test:8448"}},
		{"badname.test", ViaDefaultPort, "https://badname.test/x", "badname.test", "badname.test", []string{"badname.test:8448"}},
		// m.server valid by the grammar but with a port no connection can be made to: step 4.
		{"badport.test", ViaDefaultPort, "https://badport.test/x", "badport.test", "badport.test", []string{"badport.test:8448"}},
		// Not an IPv4 literal (a part over 255) but a DNS name, as the grammar says.
		{"999.1.1.1", ViaDefaultPort, "https://999.1.1.1/x", "999.1.1.1", "999.1.1.1", []string{"999.1.1.1:8448"}},
		{"plain.test:08448", ViaExplicitPort, "https://plain.test:08448/x", "plain.test", "plain.test", []string{"plain.test:08448"}},
		{"notobject.test", ViaDefaultPort, "https://notobject.test/x", "notobject.test", "notobject.test", []string{"notobject.test:8448"}},
		{"big.test", ViaDefaultPort, "https://big.test/x", "big.test", "big.test", []string{"big.test:8448"}},
		{"loop.test", ViaDefaultPort, "https://loop.test/x", "loop.test", "loop.test", []string{"loop.test:8448"}},
		{"http-redirect.test", ViaDefaultPort, "https://http-redirect.test/x", "http-redirect.test", "http-redirect.test", []string{"http-redirect.test:8448"}},
		{"hs2.test", ViaStatic, "http://127.0.0.1:8449/x", "127.0.0.1", "", []string{"127.0.0.1:8449"}},
		{"hs3.test", ViaStatic, "https://internal.test:8443/x", "internal.test", "internal.test", []string{"internal.test:8443"}},
		{"hs4.test", ViaStatic, "https://internal.test/x", "internal.test", "internal.test", []string{"internal.test:443"}},
		{"hs5.test:99999", ViaStatic, "https://internal.test/x", "internal.test", "internal.test", []string{"internal.test:443"}},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, c := range cases {
		t.Run(string(c.name), func(t *testing.T) {
			res, err := r.Resolve(ctx, c.name)
			if err != nil {
				t.Fatal(err)
			}
			if res.ServerName != c.name || res.Via != c.via || res.URL("/x") != c.url || res.TLSServerName != c.tls || res.SNI() != c.sni || !slices.Equal(res.Targets, c.target) {
				t.Fatalf("got %+v (URL %s, SNI %q)\nwant via %s, URL %s, TLS %s, SNI %q, targets %v", res, res.URL("/x"), res.SNI(), c.via, c.url, c.tls, c.sni, c.target)
			}
		})
	}
	// The fallbacks above are the answers' doing, not a failure to reach the well-known server.
	for _, h := range append(slices.Clone(wkHosts), "badjson.test", "badname.test", "badport.test", "notobject.test", "big.test", "loop.test", "http-redirect.test", "redirect.test") {
		if env.fetches(h) == 0 {
			t.Errorf("%s: /.well-known/matrix/server was never fetched", h)
		}
	}
	if n := env.fetches("loop.test"); n > WellKnownMaxRedirects {
		t.Errorf("loop.test: %d fetches", n)
	}
	if _, err := r.Resolve(ctx, "bad name"); err == nil {
		t.Error("an invalid server name resolved")
	}
	// Valid server names (port = 1*5DIGIT) whose port cannot be connected to.
	for _, name := range []core.ServerName{"example.test:99999", "example.test:65536", "example.test:0", "example.test:00000", "1.2.3.4:65536", "[2001:db8::1]:70000"} {
		_, err := r.Resolve(ctx, name)
		var pe *PortError
		if !errors.As(err, &pe) || pe.ServerName != name || !strings.Contains(err.Error(), "outside 1-65535") {
			t.Errorf("Resolve(%s) = %v, want a *PortError", name, err)
		}
	}
	// Discovered names are never reached over plain HTTP (only static routes are).
	for _, c := range cases {
		if c.via != ViaStatic && !strings.HasPrefix(c.url, "https://") {
			t.Errorf("%s: %s", c.name, c.url)
		}
	}
}

func TestWellKnownCaching(t *testing.T) {
	env := newDiscoveryEnv(t)
	r := env.resolver(t, nil, true)
	ctx := context.Background()
	type step struct {
		advance time.Duration
		fetches int
	}
	cases := []struct {
		host  string
		steps []step
	}{
		// No cache headers: 24 hours.
		{"wk-port.test", []step{{0, 1}, {0, 1}, {23 * time.Hour, 1}, {2 * time.Hour, 2}}},
		// max-age=600.
		{"wk-srv.test", []step{{0, 1}, {9 * time.Minute, 1}, {2 * time.Minute, 2}}},
		// no-store: the 5 minute minimum.
		{"nostore.test", []step{{0, 1}, {4 * time.Minute, 1}, {2 * time.Minute, 2}}},
		// A huge max-age: capped at 48 hours.
		{"forever.test", []step{{0, 1}, {47 * time.Hour, 1}, {2 * time.Hour, 2}}},
		// Errors (404): 5 minutes, then 10, then 20 (exponential backoff).
		{"plain.test", []step{{0, 1}, {4 * time.Minute, 1}, {2 * time.Minute, 2}, {9 * time.Minute, 2}, {2 * time.Minute, 3}, {19 * time.Minute, 3}, {2 * time.Minute, 4}}},
	}
	for _, c := range cases {
		t.Run(c.host, func(t *testing.T) {
			for i, s := range c.steps {
				env.clock.Advance(s.advance)
				if _, err := r.Resolve(ctx, core.ServerName(c.host)); err != nil {
					t.Fatal(err)
				}
				if got := env.fetches(c.host); got != s.fetches {
					t.Fatalf("step %d (+%s): %d fetches, want %d", i, s.advance, got, s.fetches)
				}
			}
		})
	}
}

func TestWellKnownCacheHeaders(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		name   string
		header http.Header
		want   time.Duration
	}{
		{"none", http.Header{}, 24 * time.Hour},
		{"max-age", http.Header{"Cache-Control": {"max-age=3600"}}, time.Hour},
		{"max-age with Age", http.Header{"Cache-Control": {"public, max-age=7200"}, "Age": {"3600"}}, time.Hour},
		{"max-age quoted", http.Header{"Cache-Control": {`max-age="3600"`}}, time.Hour},
		{"short max-age", http.Header{"Cache-Control": {"max-age=10"}}, 5 * time.Minute},
		{"long max-age", http.Header{"Cache-Control": {"max-age=9999999"}}, 48 * time.Hour},
		{"no-store", http.Header{"Cache-Control": {"max-age=3600, no-store"}}, 5 * time.Minute},
		{"Expires", http.Header{"Expires": {now.Add(3 * time.Hour).Format(http.TimeFormat)}}, 3 * time.Hour},
		{"invalid Expires", http.Header{"Expires": {"0"}}, 5 * time.Minute},
		{"max-age wins over Expires", http.Header{"Cache-Control": {"max-age=3600"}, "Expires": {now.Add(3 * time.Hour).Format(http.TimeFormat)}}, time.Hour},
		{"bad max-age", http.Header{"Cache-Control": {"max-age=soon"}}, 24 * time.Hour},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := wellKnownCache(c.header, now); got != c.want {
				t.Fatalf("got %s, want %s", got, c.want)
			}
		})
	}
}

// fedServer is a federation endpoint for the connection tests: it answers claims with {} and
// records the X-Matrix header.
func fedHandler(got *sync.Map) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		x, err := ParseXMatrix(r.Header.Get("Authorization"))
		if err != nil {
			http.Error(w, err.Error(), 401)
			return
		}
		got.Store(r.Host, x)
		writeJSON(w, 200, []byte(`{"one_time_keys":{}}`))
	})
}

func TestConnectThroughDiscovery(t *testing.T) {
	env := newDiscoveryEnv(t)
	var seen sync.Map
	// The SRV target of wk-srv.test's delegated host: fed.deleg-srv.test:8666, with a
	// certificate for deleg-srv.test (the spec: the certificate of <delegated_hostname>).
	srvTarget := startTLSServer(t, env.pki, fedHandler(&seen), "deleg-srv.test")
	env.dns.setHost("fed.deleg-srv.test", "127.0.0.1")
	env.ports.set("127.0.0.1:8666", srvTarget.Addr)
	// An IP literal with its port: the certificate must be valid for the IP, no SNI.
	ipServer := startTLSServer(t, env.pki, fedHandler(&seen), "127.0.0.1")
	_, ipPort, _ := net.SplitHostPort(ipServer.Addr)
	// A server whose certificate is for another name.
	wrongCert := startTLSServer(t, env.pki, fedHandler(&seen), "other.test")
	env.dns.setHost("wrong-cert.test", "127.0.0.1")
	env.ports.set("127.0.0.1:8443", wrongCert.Addr)
	// A server whose certificate is valid, reached through well-known to host:port.
	env.dns.setHost("delegated.test", "127.0.0.1")
	delegated := startTLSServer(t, env.pki, fedHandler(&seen), "delegated.test")
	env.ports.set("127.0.0.1:8555", delegated.Addr)

	client, err := NewClient(ClientOptions{
		SigningKey: testKey(t, "hs1.test", "a_1"),
		Resolver:   env.resolver(t, nil, true),
		Logger:     quietLog(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	body := []byte(`{"one_time_keys":{}}`)

	cases := []struct {
		name   core.ServerName
		server *tlsServer
		sni    string
		host   string
	}{
		{"wk-srv.test", srvTarget, "deleg-srv.test", "deleg-srv.test"},
		{core.ServerName("127.0.0.1:" + ipPort), ipServer, "", "127.0.0.1:" + ipPort},
		{"wk-port.test", delegated, "delegated.test", "delegated.test:8555"},
	}
	for _, c := range cases {
		t.Run(string(c.name), func(t *testing.T) {
			out := client.ClaimKeys(ctx, c.name, body)
			if out.Failure != nil || out.Status != 200 {
				t.Fatalf("got %d %s %+v", out.Status, out.Body, out.Failure)
			}
			snis, hosts := c.server.seen()
			if len(snis) != 1 || snis[0] != c.sni || !slices.Contains(hosts, c.host) {
				t.Fatalf("server saw SNI %q and Host %q, want %q and %q", snis, hosts, c.sni, c.host)
			}
			x, _ := seen.Load(c.host)
			if x.(XMatrix).Destination != c.name || x.(XMatrix).Origin != "hs1.test" {
				t.Fatalf("X-Matrix %+v: the destination must be the server name before delegation", x)
			}
		})
	}
	t.Run("certificate for another name", func(t *testing.T) {
		out := client.ClaimKeys(ctx, "wrong-cert.test:8443", body)
		if out.Failure == nil || out.Failure.Status != 503 || !strings.Contains(out.Failure.Message, "certificate") {
			t.Fatalf("got %d %s %+v", out.Status, out.Body, out.Failure)
		}
	})
}

func TestPrivateAddressesRefused(t *testing.T) {
	env := newDiscoveryEnv(t)
	var seen sync.Map
	plain := startTLSServer(t, env.pki, fedHandler(&seen), "delegated.test")
	env.dns.setHost("delegated.test", "127.0.0.1")
	env.ports.set("127.0.0.1:8555", plain.Addr)
	static := StaticRoutes{}
	httpSrv := startKeyHost(t, nil) // any plain HTTP server on loopback
	mustRoute(t, static, "hs2.test", httpSrv.srv.URL)
	r := env.resolver(t, static, false)
	ctx := context.Background()
	// The well-known of wk-port.test is on 127.0.0.1: not fetched, so discovery falls back.
	res, err := r.Resolve(ctx, "wk-port.test")
	if err != nil {
		t.Fatal(err)
	}
	if res.Via != ViaDefaultPort || env.fetches("wk-port.test") != 0 {
		t.Fatalf("got %+v after %d fetches", res, env.fetches("wk-port.test"))
	}
	client, _ := NewClient(ClientOptions{SigningKey: testKey(t, "hs1.test", "a_1"), Resolver: r, Logger: quietLog()})
	out := client.ClaimKeys(ctx, "delegated.test:8555", []byte(`{}`))
	if out.Failure == nil || !strings.Contains(out.Failure.Message, "non-public") {
		t.Fatalf("got %+v", out.Failure)
	}
	if _, hosts := plain.seen(); len(hosts) != 0 {
		t.Fatalf("connected anyway: %v", hosts)
	}
	// Static routes are the operator's choice: allowed.
	out = client.ClaimKeys(ctx, "hs2.test", []byte(`{}`))
	if out.Failure != nil || out.Status != 404 {
		t.Fatalf("static route: got %d %+v", out.Status, out.Failure)
	}
}

func TestIsPublicIP(t *testing.T) {
	for ip, want := range map[string]bool{
		"8.8.8.8": true, "2001:4860:4860::8888": true,
		"127.0.0.1": false, "10.1.2.3": false, "172.16.0.1": false, "192.168.1.1": false,
		"169.254.1.1": false, "100.64.0.1": false, "0.1.2.3": false, "::1": false, "fe80::1": false,
		"fd00::1": false, "224.0.0.1": false, "0.0.0.0": false, "::ffff:127.0.0.1": false,
	} {
		if got := isPublicIP(net.ParseIP(ip)); got != want {
			t.Errorf("%s: %v, want %v", ip, got, want)
		}
	}
}

func TestStaticRoutes(t *testing.T) {
	var r StaticRoutes
	if err := r.Set("hs2.test=http://127.0.0.1:8449"); err != nil {
		t.Fatal(err)
	}
	if err := r.Set("hs3.test=https://hs3.internal:8448/, hs4.test=http://[::1]:8008"); err != nil {
		t.Fatal(err)
	}
	if got, want := r.String(), "hs2.test=http://127.0.0.1:8449,hs3.test=https://hs3.internal:8448,hs4.test=http://[::1]:8008"; got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
	for _, bad := range []string{
		"hs2.test", "hs2.test=", "bad name=http://x", "hs2.test=ftp://x", "hs2.test=http://", "hs2.test=http://x/path",
		"hs2.test=http://x?q", "hs2.test=http://u@x", "hs2.test=127.0.0.1:8449", "hs2.test=http://x:0", "hs2.test=http://x:99999",
	} {
		if _, _, err := ParseStaticRoute(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
