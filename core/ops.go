package core

import (
	"bytes"
	"cmp"
	"encoding/base64"
	"fmt"
	"slices"
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
	hint := len(input)
	switch op {
	case "complete_client", "complete_federation", "complete_upstream":
		hint = 0 // ClaimResponse.AppendJSON grows the buffer once, to an upper bound of its size
	}
	return envelope(op, hint, func(buf []byte) ([]byte, error) {
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
	var buf []byte
	if sizeHint > 0 {
		buf = make([]byte, 0, 64+sizeHint+sizeHint/2)
	}
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

// fields holds the raw values of a JSON object's members, in document order. The objects read
// this way have a handful of members: a slice searched linearly is cheaper than a map.
type fields []field

type field struct {
	name  string
	raw   []byte
	start int    // the offset of raw in the object's text
	text  []byte // a string "body", decoded while it was checked
}

// decoded returns the member name as decoded while it was read, if it was.
func (f fields) decoded(name string) []byte {
	for i := range f {
		if f[i].name == name {
			return f[i].text
		}
	}
	return nil
}

// get returns the raw value of the member name.
func (f fields) get(name string) ([]byte, bool) {
	for i := range f {
		if f[i].name == name {
			return f[i].raw, true
		}
	}
	return nil, false
}

// readFields reads a JSON object into its members' raw values, rejecting duplicate keys and,
// when allowed is not empty, keys not in allowed.
func readFields(what string, data []byte, allowed ...string) (fields, error) {
	return readFieldsBodies(what, data, allowed, nil)
}

// readFieldsBodies is readFields that, when bodies is not nil, reads the member "remote" of
// complete_client with skipRemote (same checks and errors as skip), decoding the remote bodies.
func readFieldsBodies(what string, data []byte, allowed []string, bodies *decodedBodies) (fields, error) {
	d := decoder{data: data}
	if k, ok := d.kind(); !ok || k != KindObject {
		return nil, notObject(what, data)
	}
	f, err := d.fields(what, allowed, bodies)
	if err == nil {
		err = d.end()
	}
	if err != nil && bodies != nil {
		err = bodies.check(data, err)
	}
	return f, err
}

// notObject is readFields' error for data that is not a JSON object.
func notObject(what string, data []byte) error {
	if _, err := ParseValue(data); err != nil {
		return err
	}
	return errorf(CodeBadJSON, "%s must be a JSON object", what)
}

// fields is readFieldsBodies for the object at d.pos, which d moves past.
func (d *decoder) fields(what string, allowed []string, bodies *decodedBodies) (fields, error) {
	f := make(fields, 0, max(len(allowed), 4))
	err := d.objectRaw(func(key []byte) error {
		var name string
		if len(allowed) > 0 {
			i := slices.IndexFunc(allowed, func(a string) bool { return a == string(key) })
			if i < 0 {
				return errorf(CodeBadJSON, "unknown field %s in %s", quote(string(key)), what)
			}
			name = allowed[i] // no copy of the key
		} else {
			name = string(key)
		}
		if _, dup := f.get(name); dup {
			return errorf(CodeBadJSON, "duplicate key %s in %s", quote(name), what)
		}
		d.ws()
		start := d.pos
		var err error
		var text []byte
		switch {
		case bodies != nil && name == "remote":
			err = d.skipRemote(bodies)
		case bodies != nil && name == "local" && !checkLocalFirst && d.ws() == '{' && d.skipUnchecked():
			// Checked when read (most of the input, as a rule: read once, not twice).
			bodies.local = start
		case name == "body" && d.ws() == '"':
			// Decode the body while checking it: one pass over what is often most of the input.
			buf := make([]byte, len(d.data)-start)
			var n int
			if n, err = d.scanDecodeString(buf, 0); err == nil {
				text = buf[:n:n]
			}
		default:
			err = d.skip()
		}
		if err != nil {
			return err
		}
		f = append(f, field{name, d.data[start:d.pos], start, text})
		return nil
	})
	return f, err
}

// The accessors below read a raw value that readFields already checked as JSON. A value of the
// expected kind is read directly; any other goes through ParseValue, as before, so that its
// error (a duplicate key inside it, say) comes first.

func (f fields) value(name string) (Value, bool, error) {
	raw, ok := f.get(name)
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
	raw, ok := f.get(name)
	switch {
	case !ok && required:
		return "", errorf(CodeBadJSON, "%s is required", name)
	case !ok:
		return "", nil
	case len(raw) > 0 && raw[0] == '"':
		d := decoder{data: raw}
		return d.str()
	}
	if _, _, err := f.value(name); err != nil { // an error inside the value (a duplicate key) comes first
		return "", err
	}
	return "", errorf(CodeBadJSON, "%s must be a string", name)
}

func (f fields) int(name string, def int64) (int64, error) {
	raw, ok := f.get(name)
	if !ok {
		return def, nil
	}
	if len(raw) > 0 && (raw[0] == '-' || raw[0] >= '0' && raw[0] <= '9') { // a number
		if bytes.ContainsAny(raw, ".eE") {
			return 0, errorf(CodeBadJSON, "%s must be an integer", name)
		}
		neg := raw[0] == '-'
		if neg {
			raw = raw[1:]
		}
		n, _ := parseMillis(string(raw))
		if neg {
			n = -n
		}
		return n, nil
	}
	if _, _, err := f.value(name); err != nil { // an error inside the value (a duplicate key) comes first
		return def, err
	}
	return 0, errorf(CodeBadJSON, "%s must be an integer", name)
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
	_, hasText := f.get("body")
	_, has64 := f.get("body_base64")
	switch {
	case hasText && has64:
		return nil, false, errorf(CodeBadJSON, "give body or body_base64, not both")
	case hasText:
		if t := f.decoded("body"); t != nil { // a string body is decoded while it is checked
			return t, true, nil
		}
		s, err := f.str("body", true) // not a string: its error
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
	raw, ok := f.get(name)
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
	if raw, ok := f.get("limits"); ok {
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
	what, allowed := "complete_client input", []string{"mode", "server_name", "request", "local", "tally", "remote"}
	if federation {
		what, allowed = "complete_federation input", allowed[:5]
	}
	// The remote answers' bodies are decoded while the input is checked: one pass over them.
	var bodies decodedBodies
	f, err := readFieldsBodies(what, input, allowed, &bodies)
	if err != nil {
		return nil, err
	}
	// From here on every error goes through bodies.check: "local" may not be checked yet.
	opts, req, err := f.completeOptions()
	if err != nil {
		return nil, bodies.check(input, err)
	}
	withTally, err := f.bool("tally")
	if err != nil {
		return nil, bodies.check(input, err)
	}
	if federation {
		for _, u := range req.Users {
			if u.User.Server() != opts.ServerName {
				return nil, bodies.check(input, errorf(CodeInvalidParam, "user %s is not local to this server (%s)", quote(string(u.User)), quote(string(opts.ServerName))))
			}
		}
	}
	resp := newResponse(req, opts.Mode, federation)
	resp.alias = true // input and the bodies decoded from it outlive resp, which is encoded below
	if raw, ok := f.get("local"); ok {
		d := decoder{data: raw, depth: 1} // inside the input object: the nesting limit counts from there
		if k, ok := d.kind(); !ok || k != KindObject {
			return nil, bodies.check(input, errorf(CodeBadJSON, "local must be an object of user ID to device ID to key ID to key"))
		}
		err := resp.readKeys(&d, func(u UserID) bool { return u.Server() == opts.ServerName })
		if err == nil && d.end() != nil {
			err = errorf(CodeNotJSON, "local was not read to its end") // skipUnchecked's end was wrong: check reports why
		}
		if err != nil {
			e := asError(err)
			return nil, bodies.check(input, &Error{Code: e.Code, Message: "local: " + e.Message})
		}
		bodies.local = 0 // read to its end: every part of it was checked (readKeys reads or skips)
	}
	if !federation {
		var remote []serverOutcome
		for i := range f {
			if f[i].name == "remote" {
				if remote, err = readRemoteOutcomes(f[i].raw, f[i].start, &bodies); err != nil {
					return nil, bodies.check(input, err)
				}
			}
		}
		slices.SortFunc(remote, func(a, b serverOutcome) int { return cmp.Compare(a.server, b.server) })
		resp.fillRemotes(opts.ServerName, func(s ServerName) (RemoteOutcome, bool) {
			i, ok := slices.BinarySearchFunc(remote, s, func(o serverOutcome, s ServerName) int {
				return cmp.Compare(o.server, s)
			})
			if !ok {
				return RemoteOutcome{}, false
			}
			return remote[i].outcome, true
		})
	}
	return appendCompleted(buf, resp, withTally), nil
}

// appendCompleted appends the completed answer, or, when the input asked for the tally,
// {"answer": <the answer>, "tally": {...}} (ClaimResponse.Tally): the answer's text is then
// everything between the leading {"answer": and the last ,"tally": of the result.
func appendCompleted(buf []byte, resp *ClaimResponse, withTally bool) []byte {
	if !withTally {
		return resp.AppendJSON(buf)
	}
	buf = append(buf, `{"answer":`...)
	buf = resp.AppendJSON(buf)
	buf = append(buf, `,"tally":`...)
	buf = resp.Tally().AppendJSON(buf)
	return append(buf, '}')
}

// serverOutcome is the outcome given for one server in the remote input of complete_client.
type serverOutcome struct {
	server  ServerName
	outcome RemoteOutcome
}

// readRemoteOutcomes reads {"server": {"status": N, "body": "..."} | {"failure": {...}}}, in
// document order. raw, which starts at rawStart in the input, was checked as JSON by
// readFieldsBodies, so it is walked once, trusted, rather than cut into raw values and checked
// again at each level; its string bodies (most of the input, as a rule) were decoded during that
// check, into decoded. The errors are those of reading the map with readFields and then each
// outcome in turn: a duplicate server name outranks any error in an outcome.
func readRemoteOutcomes(raw []byte, rawStart int, decoded *decodedBodies) ([]serverOutcome, error) {
	d := decoder{data: raw, trusted: true}
	if k, ok := d.kind(); !ok || k != KindObject {
		return nil, notObject("remote", raw)
	}
	var out []serverOutcome
	var seen map[string]bool // the servers so far, once there are many (a claim may name thousands)
	var first error          // the first error in an outcome
	err := d.objectRaw(func(key []byte) error {
		dup := false
		if seen != nil {
			dup = seen[string(key)]
		} else {
			for i := range out {
				dup = dup || string(out[i].server) == string(key)
			}
		}
		if dup {
			return errorf(CodeBadJSON, "duplicate key %s in %s", quote(string(key)), "remote")
		}
		if seen == nil && len(out) >= 16 {
			seen = make(map[string]bool, 2*len(out))
			for i := range out {
				seen[string(out[i].server)] = true
			}
		}
		if seen != nil {
			seen[string(key)] = true
		}
		server := ServerName(key)
		d.ws()
		start, depth := d.pos, d.depth
		var o RemoteOutcome
		if first == nil {
			var err error
			if o, err = readRemoteOutcome(&d, server, decoded, rawStart); err != nil {
				first = err
				d.pos, d.depth = start, depth
				_ = d.skip()
			}
		} else {
			_ = d.skip()
		}
		out = append(out, serverOutcome{server, o})
		return nil
	})
	if err == nil {
		err = first
	}
	if err != nil {
		return nil, err
	}
	return out, nil
}

// decodedBodies are the string bodies of the remote outcomes, decoded by skipRemote while it
// checks the input, in document order. They all fit in one buffer as long as the text from the
// first body on, since a decoded string is never longer than its text.
type decodedBodies struct {
	buf   []byte        // from the first body to the end of the text, as long as that
	n     int           // the end of the last body in buf
	first decodedBody   // the first body: one, the rule, costs no allocation for a list
	more  []decodedBody // the others
	count int
	next  int // find's cursor
	// local is the offset of the member "local" when its value is an object that was passed
	// over without being checked (skipUnchecked): it is checked when an error is about to be
	// reported (check), or by reading it, which checks all of it (opComplete).
	local int
}

// checkLocalFirst turns off the deferred check of "local" (decodedBodies.local): the tests set
// it to compare both ways on the same inputs (FuzzDeferredLocalCheck).
var checkLocalFirst = false

// check returns the error that checking the member "local" as JSON gives, if it was passed over
// unchecked and has one, else err. Every error of the operation goes through it, so that a
// syntax error in "local" is reported wherever it would have been had "local" been checked in
// document order with the other members: before any later error.
func (b *decodedBodies) check(input []byte, err error) error {
	if b.local > 0 {
		d := decoder{data: input, pos: b.local, depth: 1} // as fields' objectRaw leaves it
		if serr := d.skip(); serr != nil {
			return serr
		}
		b.local = 0
	}
	return err
}

// at returns the i-th body.
func (b *decodedBodies) at(i int) *decodedBody {
	if i == 0 {
		return &b.first
	}
	return &b.more[i-1]
}

type decodedBody struct {
	start, end int    // the text of the string: from its opening quote to after its closing quote
	text       []byte // its content, decoded
}

// skipRemote is skip for the remote member of complete_client, with the same checks and errors,
// that also decodes the body strings of the outcomes ({server: {"body": "..."}}) into bodies.
func (d *decoder) skipRemote(bodies *decodedBodies) error {
	if k, ok := d.kind(); !ok || k != KindObject {
		return d.skip()
	}
	return d.objectRaw(func([]byte) error {
		if k, ok := d.kind(); !ok || k != KindObject {
			return d.skip()
		}
		return d.objectRaw(func(key []byte) error {
			if string(key) != "body" || d.ws() != '"' {
				return d.skip()
			}
			if bodies.buf == nil {
				bodies.buf = make([]byte, len(d.data)-d.pos)
			}
			start, w := d.pos, bodies.n
			n, err := d.scanDecodeString(bodies.buf, w)
			if err != nil {
				return err
			}
			bodies.n = n
			if body := (decodedBody{start, d.pos, bodies.buf[w:n:n]}); bodies.count == 0 {
				bodies.first = body
			} else {
				bodies.more = append(bodies.more, body)
			}
			bodies.count++
			return nil
		})
	})
}

// find returns the decoded body whose text starts at start, and where that text ends.
func (b *decodedBodies) find(start int) ([]byte, int, bool) {
	for b.next < b.count && b.at(b.next).start < start {
		b.next++
	}
	if b.next < b.count && b.at(b.next).start == start {
		e := b.at(b.next)
		return e.text, e.end, true
	}
	return nil, 0, false
}

var outcomeFields = []string{"status", "body", "body_base64", "failure"}

// readRemoteOutcome reads the outcome of server at d.pos: readFields of the object with the
// members of outcomeFields, then the outcome from them. A string body is taken already decoded
// from decoded (d.data starts at rawStart in the input decoded was read from).
func readRemoteOutcome(d *decoder, server ServerName, decoded *decodedBodies, rawStart int) (RemoteOutcome, error) {
	what := func() string { return "remote[" + quote(string(server)) + "]" }
	var o RemoteOutcome
	if k, _ := d.kind(); k != KindObject {
		start := d.pos
		_ = d.skip()
		return o, notObject(what(), d.data[start:d.pos])
	}
	var buf [4]field
	of := fields(buf[:0])
	err := d.objectRaw(func(key []byte) error {
		i := slices.IndexFunc(outcomeFields, func(a string) bool { return a == string(key) })
		if i < 0 {
			return errorf(CodeBadJSON, "unknown field %s in %s", quote(string(key)), what())
		}
		name := outcomeFields[i]
		if _, dup := of.get(name); dup {
			return errorf(CodeBadJSON, "duplicate key %s in %s", quote(name), what())
		}
		d.ws()
		start := d.pos
		t, end, ok := []byte(nil), 0, false
		if name == "body" && start < len(d.data) && d.data[start] == '"' {
			t, end, ok = decoded.find(rawStart + start)
		}
		if ok {
			d.pos = end - rawStart // a string body, decoded while the input was checked
		} else {
			_ = d.skip()
		}
		of = append(of, field{name, d.data[start:d.pos], start, t})
		return nil
	})
	if err != nil {
		return o, err
	}
	if fraw, ok := of.get("failure"); ok {
		if len(of) != 1 {
			return o, errorf(CodeBadJSON, "%s: give failure alone, or status and body", what())
		}
		ff, err := readFields(what()+".failure", fraw, "status", "errcode", "message")
		if err != nil {
			return o, err
		}
		st, err := ff.int("status", 0)
		if err != nil {
			return o, err
		}
		if st < 100 || st > 599 {
			return o, errorf(CodeBadJSON, "%s.failure.status must be an HTTP status (100-599)", what())
		}
		fl := &Failure{Status: int(st)}
		if fl.Errcode, err = ff.str("errcode", false); err != nil {
			return o, err
		}
		if fl.Message, err = ff.str("message", true); err != nil {
			return o, err
		}
		o.Failure = fl
		return o, nil
	}
	st, err := of.int("status", 0)
	if err != nil {
		return o, err
	}
	if st < 100 || st > 599 {
		return o, errorf(CodeBadJSON, "%s.status must be an HTTP status (100-599)", what())
	}
	o.Status = int(st)
	if o.Body, _, err = of.body(true); err != nil {
		return o, err
	}
	return o, nil
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
	f, err := readFields("complete_upstream input", input, "mode", "server_name", "request", "tally", "body", "body_base64")
	if err != nil {
		return nil, err
	}
	opts, req, err := f.completeOptions()
	if err != nil {
		return nil, err
	}
	withTally, err := f.bool("tally")
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
	return appendCompleted(buf, resp, withTally), nil
}

// completeOptions reads the fields every completion shares: "mode", "server_name" and
// "request", in that order (which decides which error is reported first).
func (f fields) completeOptions() (CompleteOptions, *ClaimRequest, error) {
	var opts CompleteOptions
	ms, err := f.str("mode", false)
	if err != nil {
		return opts, nil, err
	}
	if opts.Mode, err = ParseMode(ms); err != nil {
		return opts, nil, err
	}
	if opts.ServerName, err = f.serverName(true); err != nil {
		return opts, nil, err
	}
	req, err := f.request("request")
	return opts, req, err
}
