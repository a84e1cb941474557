package hostserver

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"unicode/utf8"

	keyclaimwasm "github.com/keyclaim/keyclaim/bindings/go"
	"github.com/keyclaim/keyclaim/core"
)

// WasmEngine is the Engine that runs core compiled to WebAssembly (the module built from ./wasm)
// on wazero through bindings/go, with the JSON inputs of core's operations (bindings/ABI.md):
// parse_claim, complete_client and complete_federation. It answers byte for byte as
// [NativeEngine] does.
type WasmEngine struct {
	opts   EngineOptions
	module *keyclaimwasm.Module
	limits []byte // the "limits" member of parse_claim inputs
}

// NewWasmEngine loads the module: the file wasmPath (such as dist/keyclaim.wasm), or, when
// wasmPath is empty, the module embedded in the binary at build time.
func NewWasmEngine(ctx context.Context, opts EngineOptions, wasmPath string) (*WasmEngine, error) {
	m, err := keyclaimwasm.New(ctx, keyclaimwasm.Config{WasmPath: wasmPath})
	if err != nil {
		if errors.Is(err, keyclaimwasm.ErrNotEmbedded) {
			return nil, fmt.Errorf("--engine wasm: no module embedded in this build; run `make wasm` or give --wasm-module dist/keyclaim.wasm: %w", err)
		}
		return nil, fmt.Errorf("--engine wasm: %w", err)
	}
	lim := opts.Limits
	limits := []byte(`{"default_timeout_ms":`)
	limits = strconv.AppendInt(limits, lim.DefaultTimeoutMS, 10)
	limits = append(limits, `,"max_body_bytes":`...)
	limits = strconv.AppendInt(limits, int64(lim.MaxBodyBytes), 10)
	limits = append(limits, `,"max_pairs":`...)
	limits = strconv.AppendInt(limits, int64(lim.MaxPairs), 10)
	limits = append(limits, `,"max_timeout_ms":`...)
	limits = strconv.AppendInt(limits, lim.MaxTimeoutMS, 10)
	limits = append(limits, '}')
	return &WasmEngine{opts: opts, module: m, limits: limits}, nil
}

// Name returns "wasm".
func (*WasmEngine) Name() string { return "wasm" }

// internalLimits bound the native decoding of a request the module has already validated.
var internalLimits = core.Limits{MaxBodyBytes: 1 << 30, MaxPairs: 1 << 30}

// ParseClaim runs parse_claim in the module, then decodes the canonical request it answers.
func (e *WasmEngine) ParseClaim(ctx context.Context, flavour core.Flavour, body []byte, queryTimeout string) (*core.ClaimRequest, error) {
	in := make([]byte, 0, len(body)+len(body)/8+256)
	in = append(in, `{"flavour":`...)
	if flavour == core.FlavourFederation {
		in = append(in, `"federation"`...)
	} else {
		in = append(in, `"client"`...)
	}
	in = append(in, `,"server_name":`...)
	in = appendJSONString(in, string(e.opts.ServerName))
	if queryTimeout != "" {
		in = append(in, `,"query_timeout":`...)
		in = appendJSONString(in, queryTimeout)
	}
	in = append(in, `,"limits":`...)
	in = append(in, e.limits...)
	if utf8.Valid(body) {
		in = append(in, `,"body":`...)
		in = appendJSONString(in, string(body))
	} else { // no byte may be altered on the way: the module then rejects it as core does
		in = append(in, `,"body_base64":"`...)
		in = base64.StdEncoding.AppendEncode(in, body)
		in = append(in, '"')
	}
	in = append(in, '}')
	canonical, err := e.invoke(ctx, "parse_claim", in)
	if err != nil {
		return nil, err
	}
	req, err := core.ParseClaimRequest(canonical, core.ParseOptions{
		Flavour:    flavour,
		ServerName: e.opts.ServerName,
		Limits:     core.Limits{MaxBodyBytes: internalLimits.MaxBodyBytes, MaxPairs: internalLimits.MaxPairs, MaxTimeoutMS: e.opts.Limits.MaxTimeoutMS},
	})
	if err != nil {
		return nil, internalErr("decoding the module's answer", fmt.Errorf("wasm parse_claim answered a request core rejects: %w", err))
	}
	return req, nil
}

// CompleteClient runs complete_client in the module.
func (e *WasmEngine) CompleteClient(ctx context.Context, req *core.ClaimRequest, local core.LocalResults, remote map[core.ServerName]core.RemoteOutcome, mode core.Mode) ([]byte, core.Tally, error) {
	in := e.completeInput(req, local, mode)
	in = append(in, `,"tally":true`...)
	in = append(in, `,"remote":{`...)
	first := true
	for server, o := range remote {
		if !first {
			in = append(in, ',')
		}
		first = false
		in = appendJSONString(in, string(server))
		in = append(in, ':')
		in = o.AppendJSON(in)
	}
	in = append(in, "}}"...)
	out, err := e.invoke(ctx, "complete_client", in)
	if err != nil {
		return nil, core.Tally{}, err
	}
	answer, tally, err := splitTally(out)
	if err != nil {
		return nil, core.Tally{}, internalErr("decoding the module's answer", fmt.Errorf("wasm complete_client: %w", err))
	}
	return answer, tally, nil
}

// splitTally splits the result of a completion asked for its tally,
// {"answer":ANSWER,"tally":{"claimed":N,...}} (canonical JSON, so the tally is last and holds
// only fixed names and integers: its start is the last ,"tally":{ of the result), into the
// answer's bytes and the tally.
func splitTally(out []byte) ([]byte, core.Tally, error) {
	const head, sep = `{"answer":`, `,"tally":{`
	i := bytes.LastIndex(out, []byte(sep))
	if !bytes.HasPrefix(out, []byte(head)) || i < len(head) || !bytes.HasSuffix(out, []byte("}")) {
		return nil, core.Tally{}, fmt.Errorf("not an answer with its tally: %.200q", out)
	}
	var t struct {
		Claimed      *int `json:"claimed"`
		Dropped      *int `json:"dropped"`
		Filled       *int `json:"filled"`
		NoKeys       *int `json:"no_keys"`
		ServerFailed *int `json:"server_failed"`
	}
	if err := json.Unmarshal(out[i+len(sep)-1:len(out)-1], &t); err != nil || t.Claimed == nil || t.Dropped == nil ||
		t.Filled == nil || t.NoKeys == nil || t.ServerFailed == nil {
		return nil, core.Tally{}, fmt.Errorf("the tally is not {claimed, dropped, filled, no_keys, server_failed}: %.200q (%v)", out[i:], err)
	}
	return out[len(head):i], core.Tally{Claimed: *t.Claimed, Dropped: *t.Dropped, Filled: *t.Filled, NoKeys: *t.NoKeys, ServerFailed: *t.ServerFailed}, nil
}

// CompleteFederation runs complete_federation in the module.
func (e *WasmEngine) CompleteFederation(ctx context.Context, req *core.ClaimRequest, local core.LocalResults, mode core.Mode) ([]byte, error) {
	in := e.completeInput(req, local, mode)
	return e.invoke(ctx, "complete_federation", append(in, '}'))
}

// completeInput starts the input of complete_client and complete_federation:
// {"mode":...,"server_name":...,"request":...,"local":... (without the closing brace).
func (e *WasmEngine) completeInput(req *core.ClaimRequest, local core.LocalResults, mode core.Mode) []byte {
	in := make([]byte, 0, 256+256*req.Pairs())
	in = append(in, `{"mode":`...)
	in = appendJSONString(in, string(mode))
	in = append(in, `,"server_name":`...)
	in = appendJSONString(in, string(e.opts.ServerName))
	in = append(in, `,"request":`...)
	in = req.AppendJSON(in)
	in = append(in, `,"local":`...)
	return local.AppendJSON(in, req)
}

// invoke runs op and returns its result, mapping an error envelope to *core.Error.
func (e *WasmEngine) invoke(ctx context.Context, op string, input []byte) ([]byte, error) {
	env, err := e.module.Invoke(ctx, op, input)
	if err == nil {
		var result []byte
		if result, err = keyclaimwasm.Unwrap(env); err == nil {
			return result, nil
		}
	}
	var we *keyclaimwasm.Error
	if errors.As(err, &we) {
		return nil, &core.Error{Code: core.Code(we.Code), Message: we.Message}
	}
	return nil, internalErr("running the wasm engine", fmt.Errorf("wasm %s: %w", op, err))
}

// Close closes the module.
func (e *WasmEngine) Close(ctx context.Context) error { return e.module.Close(ctx) }

// newWasmEngine builds the wasm engine of the configuration.
func newWasmEngine(ctx context.Context, cfg *Config, opts EngineOptions) (Engine, error) {
	return NewWasmEngine(ctx, opts, cfg.WasmModule)
}
