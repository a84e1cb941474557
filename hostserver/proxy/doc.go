// Package proxy implements keyclaim's proxy mode (issue 6): keyclaim in front of an existing
// Matrix homeserver gives that homeserver's clients the complete claim answers of MSC4072 with
// no change to the homeserver.
//
// [Proxy] is an http.Handler. For POST /_matrix/client/v3/keys/claim (and the r0 path) it
//
//   - validates the request with the keys server's rules ([core.ParseClaimRequest], BRIEF
//     section 2), so that a malformed request is refused before the homeserver sees it;
//   - forwards the original body, query string and the client's own Authorization header to the
//     same path on the upstream homeserver, bounded by the request's timeout plus a margin;
//   - passes the upstream's errors (401, 403, 429, 400, 5xx, ...) through unchanged: status,
//     body, Content-Type and Retry-After;
//   - completes a 2xx answer with [core.CompleteUpstream] (BRIEF section 4): every requested
//     device the upstream left out becomes {} unless its server is in failures, whatever was not
//     asked for is dropped, one_time_keys and failures are always present and never null;
//   - answers 502 M_UNKNOWN when the upstream is unreachable, answers garbage or too large a
//     body (the bound grows with the devices the claim names: [Config.MaxUpstreamBody] plus
//     [Config.UpstreamBodyPerDevice] for each, so that a claim within the pair limit is read in
//     full), and 504 M_UNKNOWN when it does not answer in time: never a half-answer.
//
// Nothing is stored. Every other path is either answered 404 M_UNRECOGNIZED or, with
// [Config.Passthrough], proxied unchanged to the upstream (streaming bodies, hop-by-hop headers
// removed, X-Forwarded-* set), so that keyclaim can be the one entry point of the homeserver.
// The claim path answers the CORS preflight of the client-server API ("Web Browser Clients")
// itself; other methods there are 405 M_UNRECOGNIZED. Every forwarded request carries a Via
// entry of this proxy, so that a request the upstream routes back to the proxy (an upstream URL
// that names keyclaim itself) is refused with 502 instead of looping.
//
// What the proxy observes (answers completed, devices filled with {}, junk entries dropped,
// upstream latency and errors by kind) goes to a [Metrics]; [NewPrometheusMetrics] provides one.
package proxy
