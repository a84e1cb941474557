package keyclaimwasm

import "context"

// result runs op and returns the bytes of its "result", or the envelope's *Error.
func (m *Module) result(ctx context.Context, op string, input []byte) ([]byte, error) {
	env, err := m.Invoke(ctx, op, input)
	if err != nil {
		return nil, err
	}
	return Unwrap(env)
}

// ParseClaim validates a claim request body (operation parse_claim) and returns the canonical
// request, {"one_time_keys": {...}, "timeout": N}.
func (m *Module) ParseClaim(ctx context.Context, input []byte) ([]byte, error) {
	return m.result(ctx, "parse_claim", input)
}

// PlanFanout splits a parsed request into local users and one federation body per remote server
// (operation plan_fanout).
func (m *Module) PlanFanout(ctx context.Context, input []byte) ([]byte, error) {
	return m.result(ctx, "plan_fanout", input)
}

// SelectKeys claims keys from an in-memory inventory (operation select_keys) and returns the
// inventory left and each request's claimed keys.
func (m *Module) SelectKeys(ctx context.Context, input []byte) ([]byte, error) {
	return m.result(ctx, "select_keys", input)
}

// CompleteClient builds the complete client claim response from local results and the remote
// servers' answers (operation complete_client).
func (m *Module) CompleteClient(ctx context.Context, input []byte) ([]byte, error) {
	return m.result(ctx, "complete_client", input)
}

// CompleteFederation builds the federation claim response from local results (operation
// complete_federation).
func (m *Module) CompleteFederation(ctx context.Context, input []byte) ([]byte, error) {
	return m.result(ctx, "complete_federation", input)
}

// ClassifyClaim classifies each requested device of a claim response as claimed, no_keys or
// server_failed (operation classify_claim).
func (m *Module) ClassifyClaim(ctx context.Context, input []byte) ([]byte, error) {
	return m.result(ctx, "classify_claim", input)
}

// TrackerRun drives a fresh retry tracker through a list of plan and observe steps in one call
// (operation tracker_run) and returns the array of step results.
func (m *Module) TrackerRun(ctx context.Context, input []byte) ([]byte, error) {
	return m.result(ctx, "tracker_run", input)
}

// CompleteUpstream completes an existing homeserver's answer to a client claim request, for
// proxy mode (operation complete_upstream): every requested device answered, failed servers'
// users only in failures, everything unrequested dropped.
func (m *Module) CompleteUpstream(ctx context.Context, input []byte) ([]byte, error) {
	return m.result(ctx, "complete_upstream", input)
}
