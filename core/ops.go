package core

import (
	"encoding/base64"
	"fmt"
	"slices"
	"strings"
)

// Operations lists the operation names [Invoke] accepts, in the order ABI.md documents them.
var Operations = []string{
	"parse_claim", "plan_fanout", "select_keys", "complete_client", "complete_federation",
	"classify_claim", "tracker_run", "complete_upstream",
}

// Invoke runs one operation with JSON input and returns its JSON envelope: {"result": ...} on
// success, or the Matrix error body {"errcode": ..., "error": ...} on failure. It never panics:
// a panic inside an operation is recovered into M_UNKNOWN. The same function serves the native
// vector runner and every export of the WebAssembly module, so all runtimes answer alike.
// The inputs and outputs of each operation are documented in bindings/ABI.md.
func Invoke(op string, input []byte) []byte {
	return envelope(op, len(input), func(buf []byte) ([]byte, error) {
		switch op {
		case "parse_claim":
			return opParseClaim(buf, input)
		case "plan_fanout":
			return opPlanFanout(buf, input)
		case "select_keys":
			return opSelectKeys(buf, input)
		case "complete_client":
			return opComplete(buf, input, false)
		case "complete_federation":
			return opComplete(buf, input, true)
		case "classify_claim":
			return opClassify(buf, input)
		case "tracker_run":
			return opTrackerRun(buf, input)
		case "complete_upstream":
			return opCompleteUpstream(buf, input)
		}
		return nil, errorf(CodeUnknown, "unknown operation %s", quote(op))
	})
}

// envelope runs fn, which appends a result to its buffer, and wraps what it did in the envelope.
func envelope(op string, sizeHint int, fn func(buf []byte) ([]byte, error)) (out []byte) {
	defer func() {
		if r := recover(); r != nil {
			out = (&Error{Code: CodeUnknown, Message: fmt.Sprintf("internal error in %s: %v", op, r)}).AppendJSON(nil)
		}
	}()
	buf := make([]byte, 0, 64+sizeHint+sizeHint/2)
	buf = append(buf, `{"result":`...)
	buf, err := fn(buf)
	if err != nil {
		return asError(err).AppendJSON(nil)
	}
	return append(buf, '}')
}

func asError(err error) *Error {
	if e, ok := err.(*Error); ok {
		return e
	}
	return &Error{Code: CodeBadJSON, Message: err.Error()}
}

// fields holds the raw values of a JSON object's members.
type fields map[string][]byte

// readFields reads a JSON object into its members' raw values, rejecting duplicate keys and,
// when allowed is not empty, keys not in allowed.

func readFields(what string, data []byte, allowed ...string) (fields, error) {
	d := decoder{data: data}
	if k, ok := d.kind(); !ok || k != KindObject {
		if _, err := ParseValue(data); err != nil {
			return nil, err
		}
		return nil, errorf(CodeBadJSON, "%s must be a JSON object", what)
	}
	f := fields{}
	err := d.object(func(key string) error {
		if len(allowed) > 0 && !slices.Contains(allowed, key) {
			return errorf(CodeBadJSON, "unknown field %s in %s", quote(key), what)
		}
		if _, dup := f[key]; dup {
			return errorf(CodeBadJSON, "duplicate key %s in %s", quote(key), what)
		}
		d.ws()
		start := d.pos
		if err := d.skip(); err != nil {
			return err
		}
		f[key] = data[start:d.pos]
		return nil
	})
	if err == nil {
		err = d.end()
	}
	return f, err
}

func (f fields) value(name string) (Value, bool, error) {
	raw, ok := f[name]
	if !ok {
		return Value{}, false, nil
	}
	v, err := ParseValue(raw)
	if err != nil {
		return Value{}, true, err
	}
	return v, true, nil
}

func (f fields) str(name string, required bool) (string, error) {
	v, ok, err := f.value(name)
	if err != nil {
		return "", err
	}
	if !ok {
		if required {
			return "", errorf(CodeBadJSON, "%s is required", name)
		}
		return "", nil
	}
	if v.Kind != KindString {
		return "", errorf(CodeBadJSON, "%s must be a string", name)
	}
	return v.Str, nil
}

func (f fields) int(name string, def int64) (int64, error) {
	v, ok, err := f.value(name)
	if err != nil || !ok {
		return def, err
	}
	if v.Kind != KindNumber || !isInteger(v.Str) {
		return 0, errorf(CodeBadJSON, "%s must be an integer", name)
	}
	neg := strings.HasPrefix(v.Str, "-")
	n, _ := parseMillis(strings.TrimPrefix(v.Str, "-"))
	if neg {
		n = -n
	}
	return n, nil
}

func (f fields) bool(name string) (bool, error) {
	v, ok, err := f.value(name)
	if err != nil || !ok {
		return false, err
	}
	if v.Kind != KindBool {
		return false, errorf(CodeBadJSON, "%s must be a boolean", name)
	}
	return v.Bool, nil
}

// body returns the bytes given as "body" (a string holding the text) or "body_base64".
func (f fields) body(required bool) ([]byte, bool, error) {
	_, hasText := f["body"]
	_, has64 := f["body_base64"]
	switch {
	case hasText && has64:
		return nil, false, errorf(CodeBadJSON, "give body or body_base64, not both")
	case hasText:
		s, err := f.str("body", true)
		return []byte(s), true, err
	case has64:
		s, err := f.str("body_base64", true)
		if err != nil {
			return nil, false, err
		}
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return nil, false, errorf(CodeBadJSON, "body_base64 is not valid base64")
		}
		return b, true, nil
	case required:
		return nil, false, errorf(CodeBadJSON, "body (or body_base64) is required")
	}
	return nil, false, nil
}

// internalLimits bound requests passed between operations: they were validated when parsed.
var internalLimits = Limits{MaxBodyBytes: 1 << 30, MaxPairs: 1 << 30}

func (f fields) request(name string) (*ClaimRequest, error) {
	raw, ok := f[name]
	if !ok {
		return nil, errorf(CodeBadJSON, "%s is required", name)
	}
	req, err := ParseClaimRequest(raw, ParseOptions{Limits: internalLimits})
	if err != nil {
		e := asError(err)
		return nil, &Error{Code: e.Code, Message: name + ": " + e.Message}
	}
	return req, nil
}

func (f fields) serverName(required bool) (ServerName, error) {
	s, err := f.str("server_name", required)
	if err != nil || s == "" && !required {
		return "", err
	}
	sn, err := ParseServerName(s)
	if err != nil {
		return "", &Error{Code: CodeInvalidParam, Message: err.Error()}
	}
	return sn, nil
}

func opParseClaim(buf, input []byte) ([]byte, error) {
	f, err := readFields("parse_claim input", input, "flavour", "server_name", "body", "body_base64", "query_timeout", "limits")
	if err != nil {
		return nil, err
	}
	opts := ParseOptions{}
	switch fl, err := f.str("flavour", false); {
	case err != nil:
		return nil, err
	case fl == "" || fl == "client":
	case fl == "federation":
		opts.Flavour = FlavourFederation
	default:
		return nil, errorf(CodeBadJSON, "flavour must be \"client\" or \"federation\", not %s", quote(fl))
	}
	if opts.ServerName, err = f.serverName(opts.Flavour == FlavourFederation); err != nil {
		return nil, err
	}
	if opts.QueryTimeout, err = f.str("query_timeout", false); err != nil {
		return nil, err
	}
	if raw, ok := f["limits"]; ok {
		lf, err := readFields("limits", raw, "max_body_bytes", "max_pairs", "default_timeout_ms", "max_timeout_ms")
		if err != nil {
			return nil, err
		}
		var n [4]int64
		for i, name := range []string{"max_body_bytes", "max_pairs", "default_timeout_ms", "max_timeout_ms"} {
			if n[i], err = lf.int(name, 0); err != nil {
				return nil, err
			}
		}
		opts.Limits = Limits{MaxBodyBytes: int(n[0]), MaxPairs: int(n[1]), DefaultTimeoutMS: n[2], MaxTimeoutMS: n[3]}
	}
	body, _, err := f.body(true)
	if err != nil {
		return nil, err
	}
	req, err := ParseClaimRequest(body, opts)
	if err != nil {
		return nil, err
	}
	return req.AppendJSON(buf), nil
}

func opPlanFanout(buf, input []byte) ([]byte, error) {
	f, err := readFields("plan_fanout input", input, "server_name", "request")
	if err != nil {
		return nil, err
	}
	server, err := f.serverName(true)
	if err != nil {
		return nil, err
	}
	req, err := f.request("request")
	if err != nil {
		return nil, err
	}
	return PlanFanout(req, server).AppendJSON(buf), nil
}

func opComplete(buf, input []byte, federation bool) ([]byte, error) {
	what, allowed := "complete_client input", []string{"mode", "server_name", "request", "local", "remote"}
	if federation {
		what, allowed = "complete_federation input", allowed[:4]
	}
	f, err := readFields(what, input, allowed...)
	if err != nil {
		return nil, err
	}
	opts := CompleteOptions{}
	ms, err := f.str("mode", false)
	if err != nil {
		return nil, err
	}
	if opts.Mode, err = ParseMode(ms); err != nil {
		return nil, err
	}
	if opts.ServerName, err = f.serverName(true); err != nil {
		return nil, err
	}
	req, err := f.request("request")
	if err != nil {
		return nil, err
	}
	if federation {
		for _, u := range req.Users {
			if u.User.Server() != opts.ServerName {
				return nil, errorf(CodeInvalidParam, "user %s is not local to this server (%s)", quote(string(u.User)), quote(string(opts.ServerName)))
			}
		}
	}
	resp := newResponse(req, opts.Mode, federation)
	if raw, ok := f["local"]; ok {
		d := decoder{data: raw}
		if k, ok := d.kind(); !ok || k != KindObject {
			return nil, errorf(CodeBadJSON, "local must be an object of user ID to device ID to key ID to key")
		}
		if err := resp.readKeys(&d, func(u UserID) bool { return u.Server() == opts.ServerName }); err != nil {
			e := asError(err)
			return nil, &Error{Code: e.Code, Message: "local: " + e.Message}
		}
	}
	if !federation {
		remote := map[ServerName]RemoteOutcome{}
		if raw, ok := f["remote"]; ok {
			if remote, err = readRemoteOutcomes(raw); err != nil {
				return nil, err
			}
		}
		resp.fillRemotes(opts.ServerName, func(s ServerName) (RemoteOutcome, bool) {
			o, ok := remote[s]
			return o, ok
		})
	}
	return resp.AppendJSON(buf), nil
}

// readRemoteOutcomes reads {"server": {"status": N, "body": "..."} | {"failure": {...}}}.
func readRemoteOutcomes(raw []byte) (map[ServerName]RemoteOutcome, error) {
	top, err := readFields("remote", raw)
	if err != nil {
		return nil, err
	}
	out := make(map[ServerName]RemoteOutcome, len(top))
	for server, oraw := range top {
		what := "remote[" + quote(server) + "]"
		of, err := readFields(what, oraw, "status", "body", "body_base64", "failure")
		if err != nil {
			return nil, err
		}
		var o RemoteOutcome
		if fraw, ok := of["failure"]; ok {
			if len(of) != 1 {
				return nil, errorf(CodeBadJSON, "%s: give failure alone, or status and body", what)
			}
			ff, err := readFields(what+".failure", fraw, "status", "errcode", "message")
			if err != nil {
				return nil, err
			}
			st, err := ff.int("status", 0)
			if err != nil {
				return nil, err
			}
			if st < 100 || st > 599 {
				return nil, errorf(CodeBadJSON, "%s.failure.status must be an HTTP status (100-599)", what)
			}
			fl := &Failure{Status: int(st)}
			if fl.Errcode, err = ff.str("errcode", false); err != nil {
				return nil, err
			}
			if fl.Message, err = ff.str("message", true); err != nil {
				return nil, err
			}
			o.Failure = fl
		} else {
			st, err := of.int("status", 0)
			if err != nil {
				return nil, err
			}
			if st < 100 || st > 599 {
				return nil, errorf(CodeBadJSON, "%s.status must be an HTTP status (100-599)", what)
			}
			o.Status = int(st)
			if o.Body, _, err = of.body(true); err != nil {
				return nil, err
			}
		}
		out[ServerName(server)] = o
	}
	return out, nil
}

func opClassify(buf, input []byte) ([]byte, error) {
	f, err := readFields("classify_claim input", input, "request", "body", "body_base64")
	if err != nil {
		return nil, err
	}
	req, err := f.request("request")
	if err != nil {
		return nil, err
	}
	body, _, err := f.body(true)
	if err != nil {
		return nil, err
	}
	c, err := ClassifyClaim(req, body)
	if err != nil {
		return nil, err
	}
	return c.AppendJSON(buf), nil
}

// opCompleteUpstream: {"mode","server_name","request","body"|"body_base64"} → the completed
// client answer (proxy mode).
func opCompleteUpstream(buf, input []byte) ([]byte, error) {
	f, err := readFields("complete_upstream input", input, "mode", "server_name", "request", "body", "body_base64")
	if err != nil {
		return nil, err
	}
	opts := CompleteOptions{}
	ms, err := f.str("mode", false)
	if err != nil {
		return nil, err
	}
	if opts.Mode, err = ParseMode(ms); err != nil {
		return nil, err
	}
	if opts.ServerName, err = f.serverName(true); err != nil {
		return nil, err
	}
	req, err := f.request("request")
	if err != nil {
		return nil, err
	}
	body, _, err := f.body(true)
	if err != nil {
		return nil, err
	}
	resp, err := CompleteUpstream(req, body, opts)
	if err != nil {
		return nil, err
	}
	return resp.AppendJSON(buf), nil
}
