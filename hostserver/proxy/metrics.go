package proxy

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/keyclaim/keyclaim/core"
	"github.com/prometheus/client_golang/prometheus"
)

// Result is what became of one claim request.
type Result string

// The results of a claim request.
const (
	// ResultCompleted: the upstream answered 2xx and the completed answer was sent (200).
	ResultCompleted Result = "completed"
	// ResultPassedThrough: the upstream answered an error (or a redirect), passed through unchanged.
	ResultPassedThrough Result = "passed_through"
	// ResultRejected: the request was invalid (400, 413); the upstream was not asked.
	ResultRejected Result = "rejected"
	// ResultBadAnswer: the upstream answered 2xx with a body that is not a claim answer (502).
	ResultBadAnswer Result = "bad_answer"
	// ResultTooLarge: the upstream's answer was over the size limit (502).
	ResultTooLarge Result = "too_large"
	// ResultUnreachable: the upstream could not be reached, or the connection broke (502).
	ResultUnreachable Result = "unreachable"
	// ResultTimeout: the upstream did not answer within the request's timeout and margin (504).
	ResultTimeout Result = "timeout"
	// ResultCanceled: the client went away before the answer; nothing was sent.
	ResultCanceled Result = "canceled"
	// ResultLoop: the request had already passed through this proxy: the upstream URL routes
	// claims back to keyclaim (502).
	ResultLoop Result = "loop"
)

// results lists every Result, so that the Prometheus metrics have all their series from the start.
var results = []Result{ResultCompleted, ResultPassedThrough, ResultRejected, ResultBadAnswer, ResultTooLarge, ResultUnreachable, ResultTimeout, ResultCanceled, ResultLoop}

// Observation is what the proxy saw of one claim request.
type Observation struct {
	Result Result
	// UpstreamStatus is the HTTP status the upstream answered, 0 when it gave none.
	UpstreamStatus int
	// Latency is the time from sending the request to the upstream to the end of its answer
	// (or the failure), 0 when the upstream was not asked.
	Latency time.Duration
	// Devices is the number of requested (user, device) pairs, 0 for a rejected request.
	Devices int
	// Shape is the shape of the completed answer (ResultCompleted only, "" otherwise):
	// core.ModeMSC4072, or core.ModeLegacy in legacy mode and for a client that
	// Config.LegacyUserAgents names.
	Shape core.Mode
	// Filled is the number of requested devices answered {} that the upstream did not answer
	// {} itself (it left them out, or gave nothing usable): the devices completion added. Always
	// 0 in legacy mode, where such devices are left out.
	Filled int
	// Dropped is the number of entries of the upstream's answer left out of the completed
	// answer: unrequested users and devices, users of failed servers, values that are not
	// objects, keys not kept (another algorithm, not a key, or beyond the one kept per device),
	// and failures entries of servers nobody asked about or of the upstream itself. An entry is
	// counted once, not its contents. 0 when the answer could not be parsed whole for counting.
	Dropped int
}

// Metrics receives one Observation per claim request. Implementations must be safe for
// concurrent use and should be quick: ObserveClaim runs before the handler returns.
type Metrics interface {
	ObserveClaim(Observation)
}

// MetricsFunc adapts a function to [Metrics].
type MetricsFunc func(Observation)

// ObserveClaim calls f(o).
func (f MetricsFunc) ObserveClaim(o Observation) { f(o) }

// PrometheusMetrics records the proxy's observations as Prometheus metrics:
//
//	keyclaim_proxy_claims_total{result}                   claim requests by Result
//	keyclaim_proxy_devices_filled_total                   devices completion answered {} (Observation.Filled)
//	keyclaim_proxy_junk_dropped_total                     upstream entries dropped (Observation.Dropped)
//	keyclaim_proxy_upstream_duration_seconds{result}      upstream exchange latency
//	keyclaim_proxy_upstream_errors_total{kind}            unreachable, timeout, too_large, bad_answer, loop,
//	                                                      status_4xx, status_5xx, status_other
type PrometheusMetrics struct {
	claims   *prometheus.CounterVec
	filled   prometheus.Counter
	dropped  prometheus.Counter
	latency  *prometheus.HistogramVec
	upErrors *prometheus.CounterVec
}

// Upstream error kinds of keyclaim_proxy_upstream_errors_total.
var upstreamErrorKinds = []string{"unreachable", "timeout", "too_large", "bad_answer", "loop", "status_4xx", "status_5xx", "status_other"}

// NewPrometheusMetrics creates the proxy's metrics and registers them with reg.
func NewPrometheusMetrics(reg prometheus.Registerer) (*PrometheusMetrics, error) {
	m := &PrometheusMetrics{
		claims: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyclaim_proxy_claims_total",
			Help: "Claim requests of proxy mode by result: completed, passed_through (an upstream error answer), rejected (invalid, the upstream not asked), bad_answer, too_large, unreachable, timeout, canceled, loop (the upstream sent the claim back to keyclaim).",
		}, []string{"result"}),
		filled: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keyclaim_proxy_devices_filled_total",
			Help: "Requested devices that the upstream homeserver left out (or answered unusably) and the proxy answered {}.",
		}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keyclaim_proxy_junk_dropped_total",
			Help: "Entries of upstream claim answers dropped because they were not asked for or not usable (unrequested users or devices, other algorithms, non-object values, foreign failures).",
		}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "keyclaim_proxy_upstream_duration_seconds",
			Help:    "Time from sending a claim to the upstream homeserver to the end of its answer, by result.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"result"}),
		upErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyclaim_proxy_upstream_errors_total",
			Help: "Failed claim exchanges with the upstream homeserver by kind: unreachable, timeout, too_large, bad_answer, loop, status_4xx, status_5xx, status_other (a non-2xx answer, passed through).",
		}, []string{"kind"}),
	}
	var errs []error
	for _, c := range []prometheus.Collector{m.claims, m.filled, m.dropped, m.latency, m.upErrors} {
		if err := reg.Register(c); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("registering the proxy metrics: %w", err)
	}
	for _, r := range results {
		m.claims.WithLabelValues(string(r))
	}
	for _, k := range upstreamErrorKinds {
		m.upErrors.WithLabelValues(k)
	}
	return m, nil
}

// ObserveClaim records one observation.
func (m *PrometheusMetrics) ObserveClaim(o Observation) {
	m.claims.WithLabelValues(string(o.Result)).Inc()
	if o.Filled > 0 {
		m.filled.Add(float64(o.Filled))
	}
	if o.Dropped > 0 {
		m.dropped.Add(float64(o.Dropped))
	}
	if o.Result != ResultRejected && o.Result != ResultLoop { // the upstream was asked
		m.latency.WithLabelValues(string(o.Result)).Observe(o.Latency.Seconds())
	}
	if kind := errorKind(o); kind != "" {
		m.upErrors.WithLabelValues(kind).Inc()
	}
}

// errorKind is the upstream error kind of an observation, "" when there was none.
func errorKind(o Observation) string {
	switch o.Result {
	case ResultUnreachable, ResultTimeout, ResultTooLarge, ResultBadAnswer, ResultLoop:
		return string(o.Result)
	case ResultPassedThrough:
		switch {
		case o.UpstreamStatus >= 400 && o.UpstreamStatus < 500:
			return "status_4xx"
		case o.UpstreamStatus >= 500:
			return "status_5xx"
		}
		return "status_other"
	}
	return ""
}

// String returns the observation in a compact form for logs and test failures.
func (o Observation) String() string {
	return string(o.Result) + " shape=" + string(o.Shape) + " status=" + strconv.Itoa(o.UpstreamStatus) + " devices=" + strconv.Itoa(o.Devices) +
		" filled=" + strconv.Itoa(o.Filled) + " dropped=" + strconv.Itoa(o.Dropped) + " latency=" + o.Latency.String()
}
