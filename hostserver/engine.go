package hostserver

import (
	"context"
	"fmt"

	"github.com/keyclaim/keyclaim/core"
)

// Engine runs the claim logic of core for the HTTP layer: request validation and response
// completion (BRIEF sections 2, 4 and 5). Two implementations answer byte for byte alike: the
// native one calls core directly ([NewNativeEngine]); the wasm one (--engine wasm) runs the same
// core compiled to WebAssembly. Errors are *core.Error.
type Engine interface {
	// Name returns "native" or "wasm".
	Name() string
	// ParseClaim validates the body of a claim request sent to the endpoint of flavour, with the
	// raw ?timeout= query value ("" when absent).
	ParseClaim(ctx context.Context, flavour core.Flavour, body []byte, queryTimeout string) (*core.ClaimRequest, error)
	// CompleteClient returns the body of the client claim response, shaped by mode (the
	// server's --mode, or legacy for a client the compatibility policy names), and the tally
	// completion kept of it (the devices by outcome, for /metrics, without reading it again).
	CompleteClient(ctx context.Context, req *core.ClaimRequest, local core.LocalResults, remote map[core.ServerName]core.RemoteOutcome, mode core.Mode) ([]byte, core.Tally, error)
	// CompleteFederation returns the body of the federation claim response, shaped by mode
	// (--federation-answers).
	CompleteFederation(ctx context.Context, req *core.ClaimRequest, local core.LocalResults, mode core.Mode) ([]byte, error)
	// Close releases the engine's resources.
	Close(ctx context.Context) error
}

// EngineOptions are what every engine needs to know about the server. The shape of an answer
// (core.Mode) is given with each call: it depends on the endpoint and on the client.
type EngineOptions struct {
	ServerName core.ServerName
	Limits     core.Limits
}

// NativeEngine is the Engine that calls core directly.
type NativeEngine struct{ opts EngineOptions }

// NewNativeEngine returns the native engine.
func NewNativeEngine(opts EngineOptions) *NativeEngine { return &NativeEngine{opts: opts} }

// Name returns "native".
func (*NativeEngine) Name() string { return "native" }

// ParseClaim calls core.ParseClaimRequest.
func (e *NativeEngine) ParseClaim(_ context.Context, flavour core.Flavour, body []byte, queryTimeout string) (*core.ClaimRequest, error) {
	return core.ParseClaimRequest(body, core.ParseOptions{
		Flavour:      flavour,
		ServerName:   e.opts.ServerName,
		QueryTimeout: queryTimeout,
		Limits:       e.opts.Limits,
	})
}

// CompleteClient calls core.CompleteClient.
func (e *NativeEngine) CompleteClient(_ context.Context, req *core.ClaimRequest, local core.LocalResults, remote map[core.ServerName]core.RemoteOutcome, mode core.Mode) ([]byte, core.Tally, error) {
	resp := core.CompleteClient(req, local, remote, core.CompleteOptions{Mode: mode, ServerName: e.opts.ServerName})
	return resp.AppendJSON(make([]byte, 0, 64+128*req.Pairs())), resp.Tally(), nil
}

// CompleteFederation calls core.CompleteFederation.
func (e *NativeEngine) CompleteFederation(_ context.Context, req *core.ClaimRequest, local core.LocalResults, mode core.Mode) ([]byte, error) {
	resp := core.CompleteFederation(req, local, core.CompleteOptions{Mode: mode, ServerName: e.opts.ServerName})
	return resp.AppendJSON(make([]byte, 0, 64+128*req.Pairs())), nil
}

// Close does nothing.
func (*NativeEngine) Close(context.Context) error { return nil }

// buildEngine returns the engine the configuration names.
func buildEngine(ctx context.Context, cfg *Config, opts EngineOptions) (Engine, error) {
	switch cfg.Engine {
	case "native", "":
		return NewNativeEngine(opts), nil
	case "wasm":
		return newWasmEngine(ctx, cfg, opts)
	}
	return nil, fmt.Errorf("unknown engine %q", cfg.Engine)
}
