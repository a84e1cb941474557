package hostserver

import (
	"context"
	"time"

	"github.com/keyclaim/keyclaim/core"
	"github.com/keyclaim/keyclaim/hostserver/federation"
)

// Federation reaches remote servers for the client endpoints: it claims and queries keys of
// users of other servers. The server's own is a [federation.Client], which sends X-Matrix signed
// POST /_matrix/federation/v1/user/keys/claim and /user/keys/query requests, size-limits the
// answers and backs off destinations that keep failing; [NoFederation] stands in when
// federation is off. Whatever it returns is judged, never trusted: claim answers by the core
// (core.CompleteClient), query answers by [judgeRemoteQuery].
type Federation interface {
	RemoteClaimer
	RemoteQuerier
}

// RemoteClaimer sends one federation claim request.
type RemoteClaimer interface {
	// ClaimKeys sends body, a federation claim request body ({"one_time_keys": {...}}), to
	// server and returns its answer (status and body) or a failure met before any answer. It must
	// return soon after ctx is done. The answer is judged by the engine, not trusted.
	ClaimKeys(ctx context.Context, server core.ServerName, body []byte) core.RemoteOutcome
}

// RemoteQuerier sends one federation device key query.
type RemoteQuerier interface {
	// QueryKeys sends body, a federation query body ({"device_keys": {...}}), to server and
	// returns its answer (status and body) or a failure met before any answer. It must return
	// soon after ctx is done. The answer is judged by the server, not trusted.
	QueryKeys(ctx context.Context, server core.ServerName, body []byte) core.RemoteOutcome
}

// NoFederation is the Federation of a server without federation (--federation=false, or tests
// that must not reach the network): every remote server fails with 503 "federation is off on
// this server".
type NoFederation struct{}

// NoFederationMessage is the failure message of [NoFederation].
const NoFederationMessage = "federation is off on this server"

func noFederation() core.RemoteOutcome {
	return core.RemoteOutcome{Failure: &core.Failure{Status: 503, Message: NoFederationMessage}}
}

// ClaimKeys fails.
func (NoFederation) ClaimKeys(context.Context, core.ServerName, []byte) core.RemoteOutcome {
	return noFederation()
}

// QueryKeys fails.
func (NoFederation) QueryKeys(context.Context, core.ServerName, []byte) core.RemoteOutcome {
	return noFederation()
}

// StatusRemoteTimeout is the failure status of a remote server that did not answer within the
// request's timeout.
const StatusRemoteTimeout = federation.StatusTimeout

// fanOut sends reqs with call in parallel within timeout ([federation.FanOut]). Without
// federation ([NoFederation]) every destination fails at once with NoFederation's failure: even a
// client timeout of 0 then says that federation is off, not that no answer came within 0 ms.
func (s *Server) fanOut(ctx context.Context, call federation.CallFunc, reqs []federation.Request, timeout time.Duration) map[core.ServerName]core.RemoteOutcome {
	if _, off := s.fed.(NoFederation); off {
		out := make(map[core.ServerName]core.RemoteOutcome, len(reqs))
		for _, r := range reqs {
			out[r.Destination] = noFederation()
		}
		return out
	}
	return federation.FanOut(ctx, call, reqs, timeout)
}

// fanoutTimeout is how long a client request waits for remote servers: the request's timeout,
// at most --federation-timeout-cap.
func (s *Server) fanoutTimeout(requested time.Duration) time.Duration {
	return min(requested, s.cfg.FederationTimeoutCap)
}
