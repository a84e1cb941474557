package federation

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/keyclaim/keyclaim/core"
)

// quietLog discards logs; set KEYCLAIM_TEST_LOG to see them (go test -v).
func quietLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

// fakeClock is an injectable clock that only moves when told.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// fakeDNS answers from maps and records the SRV names asked.
type fakeDNS struct {
	mu      sync.Mutex
	srv     map[string][]*net.SRV // "_matrix-fed._tcp.host"
	hosts   map[string][]string
	srvAsks []string
}

func newFakeDNS() *fakeDNS {
	return &fakeDNS{srv: map[string][]*net.SRV{}, hosts: map[string][]string{}}
}

func (d *fakeDNS) LookupSRV(_ context.Context, service, proto, name string) (string, []*net.SRV, error) {
	q := "_" + service + "._" + proto + "." + name
	d.mu.Lock()
	defer d.mu.Unlock()
	d.srvAsks = append(d.srvAsks, q)
	if recs, ok := d.srv[q]; ok {
		return q, recs, nil
	}
	return "", nil, &net.DNSError{Err: "no such host", Name: q, IsNotFound: true}
}

func (d *fakeDNS) LookupHost(_ context.Context, host string) ([]string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if ips, ok := d.hosts[host]; ok {
		return ips, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

func (d *fakeDNS) setHost(host string, ips ...string) {
	d.mu.Lock()
	d.hosts[host] = ips
	d.mu.Unlock()
}

func (d *fakeDNS) setSRV(name, target string, port uint16) {
	d.mu.Lock()
	d.srv[name] = append(d.srv[name], &net.SRV{Target: target, Port: port})
	d.mu.Unlock()
}

// portMap is a dialer that sends connections for some IP:port to test listeners elsewhere
// on loopback, so that servers "on port 443 or 8448" can be tests' listeners. It records
// every address dialed.
type portMap struct {
	mu     sync.Mutex
	to     map[string]string
	dialed []string
}

func newPortMap() *portMap { return &portMap{to: map[string]string{}} }

func (p *portMap) set(from, to string) {
	p.mu.Lock()
	p.to[from] = to
	p.mu.Unlock()
}

func (p *portMap) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	p.mu.Lock()
	p.dialed = append(p.dialed, addr)
	to, ok := p.to[addr]
	p.mu.Unlock()
	if !ok {
		to = addr
	}
	var d net.Dialer
	return d.DialContext(ctx, network, to)
}

// testPKI is a private CA that issues server certificates for test names.
type testPKI struct {
	ca    *x509.Certificate
	key   *ecdsa.PrivateKey
	pool  *x509.CertPool
	mu    sync.Mutex
	nextN int64
}

func newTestPKI(t testing.TB) *testPKI {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "keyclaim test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return &testPKI{ca: ca, key: key, pool: pool, nextN: 2}
}

// cert issues a server certificate for the given DNS names and IP addresses.
func (p *testPKI) cert(t testing.TB, names ...string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	serial := p.nextN
	p.nextN++
	p.mu.Unlock()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: names[0]},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// tlsServer is an HTTPS server on 127.0.0.1 with a certificate of the test PKI. It records
// the SNI of each TLS connection and the Host header of each request.
type tlsServer struct {
	Addr  string
	mu    sync.Mutex
	snis  []string
	hosts []string
}

func startTLSServer(t testing.TB, pki *testPKI, handler http.Handler, names ...string) *tlsServer {
	t.Helper()
	ts := &tlsServer{}
	cert := pki.cert(t, names...)
	cfg := &tls.Config{
		Certificates: []tls.Certificate{cert},
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			ts.mu.Lock()
			ts.snis = append(ts.snis, hello.ServerName)
			ts.mu.Unlock()
			return nil, nil
		},
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts.Addr = ln.Addr().String()
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ts.mu.Lock()
			ts.hosts = append(ts.hosts, r.Host)
			ts.mu.Unlock()
			handler.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          nil,
	}
	go srv.Serve(tls.NewListener(ln, cfg))
	t.Cleanup(func() { srv.Close() })
	return ts
}

func (s *tlsServer) seen() (snis, hosts []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.snis...), append([]string(nil), s.hosts...)
}

// mustRoute parses a static route.
func mustRoute(t testing.TB, routes StaticRoutes, name core.ServerName, rawURL string) {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	routes[name] = u
}

// testKey returns a deterministic signing key for name.
func testKey(t testing.TB, name core.ServerName, version string) *SigningKey {
	t.Helper()
	seed := make([]byte, 32)
	copy(seed, name)
	copy(seed[24:], version)
	k, err := NewSigningKey(name, version, seed)
	if err != nil {
		t.Fatal(err)
	}
	return k
}
