package hostserver

import (
	"net/http"
	"strconv"
	"sync"

	"github.com/keyclaim/keyclaim/core"
	"github.com/keyclaim/keyclaim/hostserver/federation"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Claim outcomes counted by keyclaim_device_claims_total, one per requested (user, device).
const (
	OutcomeOneTimeKey = "one_time_key" // a one-time key was handed out
	OutcomeFallback   = "fallback"     // the fallback key was handed out
	OutcomeEmpty      = "empty"        // the device had nothing to give ({} or absent)
	OutcomeFailed     = "failed"       // the device's server is in failures
)

// metrics are the Prometheus metrics of one server, in a registry of its own.
type metrics struct {
	registry    *prometheus.Registry
	claims      *prometheus.CounterVec
	answers     *prometheus.CounterVec // claim answers by endpoint and shape
	latency     *prometheus.HistogramVec
	storeErrors *prometheus.CounterVec

	fedRequests     *prometheus.CounterVec   // outgoing federation requests
	fedLatency      *prometheus.HistogramVec // outgoing federation requests that were sent
	fedAuthFailures *prometheus.CounterVec   // inbound federation requests refused
	destinations    destinationLabels
}

// MaxDestinationLabels is the most distinct destinations the federation metrics name; requests
// to further destinations are counted under the destination label [OtherDestinations]. Without
// the cap, the label set would grow with every server any user names (and every origin an
// unauthenticated request claims to come from, whose keys are fetched).
const MaxDestinationLabels = 100

// OtherDestinations is the destination label of every destination beyond the first
// [MaxDestinationLabels]. It cannot be a server name.
const OtherDestinations = "(other)"

// destinationLabels hands out destination label values: the server name for the first
// MaxDestinationLabels distinct destinations, OtherDestinations after that.
type destinationLabels struct {
	mu   sync.Mutex
	seen map[core.ServerName]struct{}
	max  int
}

// label returns the label value of dest.
func (d *destinationLabels) label(dest core.ServerName) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.seen[dest]; ok {
		return string(dest)
	}
	if len(d.seen) >= d.max {
		return OtherDestinations
	}
	if d.seen == nil {
		d.seen = map[core.ServerName]struct{}{}
	}
	d.seen[dest] = struct{}{}
	return string(dest)
}

func newMetrics() *metrics {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		claims: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyclaim_device_claims_total",
			Help: "Requested (user, device) pairs of claim requests (client and federation) by outcome: one_time_key, fallback, empty, failed. A key claimed from a remote server counts as one_time_key.",
		}, []string{"outcome"}),
		answers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyclaim_claim_answers_total",
			Help: "Claim answers sent (200), by endpoint (client, federation) and shape: msc4072 (every requested device answered) or legacy (devices and users without a key left out: --mode legacy, a client matching --legacy-user-agents, --federation-answers legacy).",
		}, []string{"endpoint", "shape"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "keyclaim_http_request_duration_seconds",
			Help:    "Time to answer HTTP requests, by route (the path pattern, or \"unmatched\"), method and status.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"route", "method", "status"}),
		storeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyclaim_store_errors_total",
			Help: "Failed store operations by operation (upload, counts, query, claim, ping).",
		}, []string{"op"}),
	}
	m.fedRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "keyclaim_federation_requests_total",
		Help: "Outgoing federation requests by destination (at most " + strconv.Itoa(MaxDestinationLabels) + " named, then \"" + OtherDestinations + "\"), endpoint (claim, query, server_keys) and outcome (ok, http_error, transport_error, timeout, backoff, too_large, canceled, request_error).",
	}, []string{"destination", "endpoint", "outcome"})
	m.fedLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "keyclaim_federation_request_duration_seconds",
		Help:    "Time from sending an outgoing federation request to its answer or failure, by destination (capped as in keyclaim_federation_requests_total) and endpoint. Requests not sent (backoff, request_error) are not observed.",
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
	}, []string{"destination", "endpoint"})
	m.fedAuthFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "keyclaim_federation_auth_failures_total",
		Help: "Inbound federation requests refused by X-Matrix verification, by the check that failed.",
	}, []string{"cause"})
	m.destinations.max = MaxDestinationLabels
	m.registry.MustRegister(m.fedRequests, m.fedLatency, m.fedAuthFailures)
	for c := federation.CauseMissingHeader; c <= federation.CauseBadSignature; c++ {
		m.fedAuthFailures.WithLabelValues(c.String())
	}
	m.registry.MustRegister(m.claims, m.answers, m.latency, m.storeErrors,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, o := range []string{OutcomeOneTimeKey, OutcomeFallback, OutcomeEmpty, OutcomeFailed} {
		m.claims.WithLabelValues(o)
	}
	for _, e := range []string{endpointClient, endpointFederation} {
		for _, shape := range []core.Mode{core.ModeMSC4072, core.ModeLegacy} {
			m.answers.WithLabelValues(e, string(shape))
		}
	}
	for _, op := range []string{"upload", "counts", "query", "claim", "ping"} {
		m.storeErrors.WithLabelValues(op)
	}
	return m
}

// handler serves the registry in the Prometheus text format.
func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{Registry: m.registry})
}

// claimCounts tallies the outcomes of one claim request.
type claimCounts struct{ oneTime, fallback, empty, failed int }

func (m *metrics) addClaims(c claimCounts) {
	if c.oneTime > 0 {
		m.claims.WithLabelValues(OutcomeOneTimeKey).Add(float64(c.oneTime))
	}
	if c.fallback > 0 {
		m.claims.WithLabelValues(OutcomeFallback).Add(float64(c.fallback))
	}
	if c.empty > 0 {
		m.claims.WithLabelValues(OutcomeEmpty).Add(float64(c.empty))
	}
	if c.failed > 0 {
		m.claims.WithLabelValues(OutcomeFailed).Add(float64(c.failed))
	}
}

// Endpoint labels of keyclaim_claim_answers_total.
const (
	endpointClient     = "client"
	endpointFederation = "federation"
)

// addAnswer counts one claim answer of endpoint in shape.
func (m *metrics) addAnswer(endpoint string, shape core.Mode) {
	m.answers.WithLabelValues(endpoint, string(shape)).Inc()
}

// ObserveRequest records one outgoing federation request; it is the [federation.Observer] of
// the server's federation client.
func (m *metrics) ObserveRequest(e federation.RequestEvent) {
	dest := m.destinations.label(e.Destination)
	m.fedRequests.WithLabelValues(dest, string(e.Endpoint), string(e.Outcome)).Inc()
	switch e.Outcome {
	case federation.OutcomeBackoff, federation.OutcomeRequestError:
		// Nothing was sent: no latency to speak of.
	default:
		m.fedLatency.WithLabelValues(dest, string(e.Endpoint)).Observe(e.Latency.Seconds())
	}
}
