package core

import (
	"cmp"
	"slices"
)

// CompleteUpstream completes a homeserver's answer to a client claim request, for proxy mode:
// keyclaim in front of an existing homeserver gives its clients MSC4072's complete answers with
// no change to the homeserver. body is the upstream's 2xx answer.
//
// The answer is read as a remote answer is (BRIEF 4): only requested users and devices, only one
// key of the requested algorithm per device (the smallest key ID) whose value is a key
// (IsKeyValue: a string or an object with a string "key", no null in it); everything else is
// dropped. Each failures entry of a server that some requested user is on is kept, reduced to
// {"status","message","errcode"} (a status that is not an integer HTTP status becomes 502, a
// missing message a generic one; bounded as every failure is, see Failure.Bounded), and that
// server's users leave one_time_keys; other failures entries, and one naming the proxied server
// itself, are dropped. Every requested device the upstream left out becomes {} (msc4072 mode). A missing
// or null one_time_keys or failures is read as empty. An answer that is not JSON is M_NOT_JSON;
// one that is not an object, has ill-typed maps or duplicate keys is M_BAD_JSON: the host then
// answers 502, never a half-answer.
func CompleteUpstream(req *ClaimRequest, body []byte, opts CompleteOptions) (*ClaimResponse, error) {
	resp := newResponse(req, opts.Mode, false)
	resp.countDrops = true // every entry of the upstream's answer is counted for Tally
	defer func() { resp.countDrops = false }()
	var failed []ServerFailure
	err := resp.readClientAnswer(body, "the upstream answer is not a JSON object", func(d *decoder, server string) error {
		v, err := d.value()
		if err != nil {
			return err
		}
		if ServerName(server) != opts.ServerName && resp.asksServer(ServerName(server)) {
			failed = append(failed, ServerFailure{ServerName(server), upstreamFailure(&v)})
		} else {
			resp.dropped++ // our own server, or one nobody asked about
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sortFailures(failed)
	resp.fail(failed...)
	return resp, nil
}

// readClientAnswer reads the body of a client claim answer into r: its one_time_keys as a
// remote answer is read (only requested users and devices, see readKeys), and each entry of its
// failures through failure, called with the decoder at the entry's value (which it must
// consume). A missing or null one_time_keys or failures is read as empty; duplicate keys at the
// top, in failures or in the parts of one_time_keys that are read are M_BAD_JSON, as is a body
// that is not an object (with the message notObject) or maps of the wrong type. A body that
// is not JSON is M_NOT_JSON wherever the problem lies, as for requests.
func (r *ClaimResponse) readClientAnswer(body []byte, notObject string, failure func(d *decoder, server string) error) error {
	d := decoder{data: body}
	d.shareStrings()
	if r.arena == nil {
		r.arena = make([]byte, 0, len(body))
	}
	err := func() error {
		if k, ok := d.kind(); !ok {
			return d.syntaxError("a JSON value")
		} else if k != KindObject {
			if err := d.skip(); err != nil {
				return err
			}
			if err := d.end(); err != nil {
				return err
			}
			return errorf(CodeBadJSON, "%s", notObject)
		}
		var seen []string
		err := d.object(func(key string) error {
			if key != "one_time_keys" && key != "failures" {
				return d.skip()
			}
			if slices.Contains(seen, key) {
				return errorf(CodeBadJSON, "duplicate key %s", quote(key))
			}
			seen = append(seen, key)
			k, ok := d.kind()
			switch {
			case !ok:
				return d.syntaxError("a JSON value")
			case k == KindNull:
				return d.literal("null")
			case k != KindObject:
				return errorf(CodeBadJSON, "%s must be an object", key)
			case key == "failures":
				servers := map[string]bool{}
				return d.object(func(server string) error {
					if servers[server] {
						return errorf(CodeBadJSON, "duplicate key %s in failures", quote(server))
					}
					servers[server] = true
					return failure(&d, server)
				})
			default:
				return r.readKeys(&d, func(UserID) bool { return true })
			}
		})
		if err != nil {
			return err
		}
		return d.end()
	}()
	if err != nil {
		if e, ok := err.(*Error); ok && e.Code != CodeNotJSON {
			if serr := checkSyntax(body); serr != nil {
				return serr
			}
		}
		return err
	}
	return nil
}

// asksServer reports whether a user of server is in the request. The servers are listed once, on
// the first call, so that an answer with thousands of failures entries costs no more than a
// lookup for each.
func (r *ClaimResponse) asksServer(server ServerName) bool {
	if r.servers == nil {
		r.servers = r.serversOf(func(*UserResult) bool { return true })
	}
	_, ok := slices.BinarySearch(r.servers, server)
	return ok
}

// upstreamFailure reduces an upstream failures entry to the shape clients parse, bounded
// (Failure.Bounded).
func upstreamFailure(v *Value) Failure {
	f := Failure{Status: StatusBadRemoteAnswer, Message: "the server failed"}
	if s, ok := v.Get("status"); ok && s.Kind == KindNumber && isInteger(s.Str) {
		if n, ok := parseMillis(s.Str); ok && n >= 100 && n <= 599 {
			f.Status = int(n)
		}
	}
	if m, ok := v.Get("message"); ok && m.Kind == KindString && m.Str != "" {
		f.Message = m.Str
	}
	if c, ok := v.Get("errcode"); ok && c.Kind == KindString && c.Str != "" {
		f.Errcode = c.Str
	}
	return f.Bounded()
}

func sortFailures(fs []ServerFailure) {
	slices.SortFunc(fs, func(a, b ServerFailure) int { return cmp.Compare(a.Server, b.Server) })
}
