package proxy_test

import (
	"log"
	"log/slog"
	"net/http"
	"net/url"
	"os"

	"github.com/keyclaim/keyclaim/hostserver/proxy"
	"github.com/prometheus/client_golang/prometheus"
)

// Complete answers in front of an existing homeserver: the proxy listens on loopback, and the
// homeserver's reverse proxy sends POST /_matrix/client/(v3|r0)/keys/claim to it.
func Example() {
	upstream, err := url.Parse("http://127.0.0.1:8008") // the homeserver's own listener
	if err != nil {
		log.Fatal(err)
	}
	metrics, err := proxy.NewPrometheusMetrics(prometheus.DefaultRegisterer)
	if err != nil {
		log.Fatal(err)
	}
	p, err := proxy.New(proxy.Config{
		Upstream:   upstream,
		ServerName: "example.org", // the homeserver's server name
		Logger:     slog.New(slog.NewTextHandler(os.Stderr, nil)),
		Metrics:    metrics,
	})
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Addr: "127.0.0.1:8009", Handler: p}
	_ = srv // srv.ListenAndServe() serves until the process stops
}
