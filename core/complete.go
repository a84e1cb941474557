package core

import (
	"bytes"
	"cmp"
	"encoding/base64"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Mode says how devices without a key are answered.
type Mode string

const (
	// ModeMSC4072 answers every requested device: {} when it has no key (the default).
	ModeMSC4072 Mode = "msc4072"
	// ModeLegacy follows spec v1.19 as Synapse answers it: devices without a key are left out,
	// and so is a user none of whose requested devices has a key (an unknown user, a user asked
	// with an empty device map): the spec says such a user "is missing" (BRIEF 1 and 2).
	ModeLegacy Mode = "legacy"
)

// ParseMode parses "msc4072" or "legacy"; "" is the default, msc4072.
func ParseMode(s string) (Mode, error) {
	switch Mode(s) {
	case "", ModeMSC4072:
		return ModeMSC4072, nil
	case ModeLegacy:
		return ModeLegacy, nil
	}
	return "", errorf(CodeInvalidParam, "mode must be %q or %q, not %s", ModeMSC4072, ModeLegacy, quote(s))
}

// Failure is a remote server's entry in the failures map of a client claim response, the shape
// Synapse clients already parse: {"status": <int>, "message": "...", "errcode": "..."}.
type Failure struct {
	Status  int
	Errcode string // empty when unknown
	Message string
}

// MaxFailureMessageBytes bounds the message of a failures entry. A remote server chooses its
// error text; copied without a bound, one 500 answer with a 600 KB error would make every
// client's answer as large.
const MaxFailureMessageBytes = 1024

// failureCut marks a message that was cut.
const failureCut = "\u2026" // "…"

// Bounded returns f as it may appear in failures: a message of at most MaxFailureMessageBytes
// (a longer one is cut on a UTF-8 boundary and ends with "…"; invalid UTF-8 becomes U+FFFD), and
// the errcode only if IsErrcode accepts it. It is applied to every failure completion records,
// whoever wrote it (a remote server, an upstream, the host), and does not change a bounded one.
func (f Failure) Bounded() Failure {
	if !utf8.ValidString(f.Message) {
		f.Message = strings.ToValidUTF8(f.Message, "\uFFFD")
	}
	if len(f.Message) > MaxFailureMessageBytes {
		n := MaxFailureMessageBytes - len(failureCut)
		for n > 0 && !utf8.RuneStart(f.Message[n]) {
			n--
		}
		f.Message = f.Message[:n] + failureCut
	}
	if !IsErrcode(f.Errcode) {
		f.Errcode = ""
	}
	return f
}

// IsErrcode reports whether s looks like a Matrix errcode: 1 to 128 bytes of A-Z, a-z, 0-9, '_',
// '.' and '-', starting with a letter. The spec's errcodes are like M_FORBIDDEN, and custom ones
// put a Java-package-style namespace first (COM.EXAMPLE.MYAPP_MY_ERROR); lower case is accepted
// because servers use it for unstable codes. Anything else (a newline, a space, 300 KB) is not an
// errcode, and a failure then goes without one.
func IsErrcode(s string) bool {
	if len(s) == 0 || len(s) > 128 || !(s[0] >= 'A' && s[0] <= 'Z' || s[0] >= 'a' && s[0] <= 'z') {
		return false
	}
	for i := 1; i < len(s); i++ {
		switch c := s[i]; {
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '_', c == '.', c == '-':
		default:
			return false
		}
	}
	return true
}

// AppendJSON appends the failure as {"errcode":...,"message":...,"status":...} (errcode only if known).
func (f *Failure) AppendJSON(buf []byte) []byte {
	buf = append(buf, '{')
	if f.Errcode != "" {
		buf = append(buf, `"errcode":`...)
		buf = appendString(buf, f.Errcode)
		buf = append(buf, ',')
	}
	buf = append(buf, `"message":`...)
	buf = appendString(buf, f.Message)
	buf = append(buf, `,"status":`...)
	buf = strconv.AppendInt(buf, int64(f.Status), 10)
	return append(buf, '}')
}

// RemoteOutcome is what became of the federation claim sent to one remote server: either the
// HTTP answer it gave (Status and Body), which completion judges, or a Failure the host met
// before any answer (unreachable, timed out, backed off), which completion records as it is.
type RemoteOutcome struct {
	Status  int
	Body    []byte
	Failure *Failure
}

// AppendJSON appends the outcome in the form the complete_client operation reads:
// {"failure": {...}} or {"body": "...", "status": N}, with "body_base64" instead of "body" when
// the body is not valid UTF-8 (so that no byte is altered on the way).
func (o *RemoteOutcome) AppendJSON(buf []byte) []byte {
	if o.Failure != nil {
		buf = append(buf, `{"failure":`...)
		buf = o.Failure.AppendJSON(buf)
		return append(buf, '}')
	}
	if utf8.Valid(o.Body) {
		buf = append(buf, `{"body":`...)
		buf = appendString(buf, string(o.Body))
	} else {
		buf = append(buf, `{"body_base64":"`...)
		buf = base64.StdEncoding.AppendEncode(buf, o.Body)
		buf = append(buf, '"')
	}
	buf = append(buf, `,"status":`...)
	buf = strconv.AppendInt(buf, int64(o.Status), 10)
	return append(buf, '}')
}

// Failure statuses and messages that completion produces when it judges a remote answer.
const (
	// StatusBadRemoteAnswer is the failure status of a 2xx answer that is not JSON or not of the
	// required shape.
	StatusBadRemoteAnswer = 502
	// StatusNoAnswer is the failure status of a destination for which the host recorded nothing.
	StatusNoAnswer = 503
)

// CompleteOptions configure completion.
type CompleteOptions struct {
	Mode       Mode       // "" means ModeMSC4072
	ServerName ServerName // this server: never in failures, its users answered from local results
}

// ClaimResponse is a completed claim response. Users and devices follow the request; the JSON
// form applies the mode.
type ClaimResponse struct {
	Mode       Mode
	Federation bool // no failures member
	Users      []UserResult
	Failures   []ServerFailure // sorted by server name
	arena      []byte          // backing store of the keys read from answers
	// alias lets keys whose text is canonical be slices of the input read rather than copies in
	// the arena: for callers (Invoke) whose input outlives every use of the response.
	alias bool
	ids   strings.Builder // backing store of claimed key IDs (strings.Builder never moves what it wrote)
	pairs int             // the number of requested devices
	// servers are the servers of the requested users, sorted, once asksServer has listed them.
	servers []ServerName
	// countDrops is set while a remote or upstream answer is read: entries left out are then
	// counted (dropped, UserResult.dropped) for Tally.
	countDrops bool
	dropped    int // entries left out that belong to no requested user
}

// Tally is what a completed answer holds and what completion left out of the answers it read,
// counted while completing (issue 13: a host's metrics need not read the answer again).
type Tally struct {
	// Claimed, NoKeys and ServerFailed count the requested devices by outcome, as ClassifyClaim
	// classifies the answer: a key; {} or left out; a user of a server in failures.
	Claimed, NoKeys, ServerFailed int
	// Filled counts, in msc4072 mode, the requested devices answered {} that no remote or
	// upstream answer read answered {} itself (they were left out, or answered unusably): the
	// devices completion added. 0 in legacy mode, which leaves such devices out.
	Filled int
	// Dropped counts the entries of the remote and upstream answers read that the completed
	// answer leaves out: users and devices not asked for, values that are not objects, keys not
	// kept (another algorithm, not a key, or beyond the one kept per device), a user of a failed
	// server (once, not its contents), and failures entries not kept (upstream). An entry is
	// counted once, not its contents.
	Dropped int
}

// Tally returns the counts of the completed answer (see [Tally]).
func (r *ClaimResponse) Tally() Tally {
	t := Tally{Dropped: r.dropped}
	msc := r.Mode != ModeLegacy
	for i := range r.Users {
		u := &r.Users[i]
		if u.Failed {
			t.ServerFailed += len(u.Devices)
			if u.seen && u.counted {
				t.Dropped++ // read from an answer, then failed: the user's entry is dropped whole
			}
			continue
		}
		t.Dropped += u.dropped
		for j := range u.Devices {
			switch d := &u.Devices[j]; {
			case d.Claimed:
				t.Claimed++
			default:
				t.NoKeys++
				if msc && !d.empty {
					t.Filled++
				}
			}
		}
	}
	return t
}

// AppendJSON appends the tally as {"claimed":N,"dropped":N,"filled":N,"no_keys":N,"server_failed":N}.
func (t Tally) AppendJSON(buf []byte) []byte {
	buf = append(buf, `{"claimed":`...)
	buf = strconv.AppendInt(buf, int64(t.Claimed), 10)
	buf = append(buf, `,"dropped":`...)
	buf = strconv.AppendInt(buf, int64(t.Dropped), 10)
	buf = append(buf, `,"filled":`...)
	buf = strconv.AppendInt(buf, int64(t.Filled), 10)
	buf = append(buf, `,"no_keys":`...)
	buf = strconv.AppendInt(buf, int64(t.NoKeys), 10)
	buf = append(buf, `,"server_failed":`...)
	buf = strconv.AppendInt(buf, int64(t.ServerFailed), 10)
	return append(buf, '}')
}

// UserResult is the answer for one requested user.
type UserResult struct {
	User UserID
	// Failed is true when the user's server is in failures: the user is then not in one_time_keys.
	Failed  bool
	Devices []DeviceResult
	seen    bool // the user was already read from the answer being walked
	counted bool // seen in a remote or upstream answer (while countDrops)
	dropped int  // entries of this user's answer left out (see Tally)
}

// DeviceResult is the answer for one requested device.
type DeviceResult struct {
	Device    DeviceID
	Algorithm Algorithm
	Claimed   bool // Key holds the claimed key
	Key       ClaimedKey
	seen      bool
	empty     bool // a remote or upstream answer gave {} for the device
}

// ServerFailure is one entry of the failures map.
type ServerFailure struct {
	Server  ServerName
	Failure Failure
}

// newResponse builds the skeleton of the answer to req: every requested device, nothing claimed.
func newResponse(req *ClaimRequest, mode Mode, federation bool) *ClaimResponse {
	if mode == "" {
		mode = ModeMSC4072
	}
	resp := &ClaimResponse{Mode: mode, Federation: federation, Users: make([]UserResult, len(req.Users)), Failures: []ServerFailure{}, pairs: req.Pairs()}
	devs := make([]DeviceResult, resp.pairs)
	for i, u := range req.Users {
		ud := devs[:len(u.Devices):len(u.Devices)]
		devs = devs[len(u.Devices):]
		for j := range u.Devices {
			ud[j].Device, ud[j].Algorithm = u.Devices[j].Device, u.Devices[j].Algorithm // the rest is zero
		}
		resp.Users[i].User, resp.Users[i].Devices = u.User, ud
	}
	return resp
}

// CompleteClient completes the answer to a client claim request (BRIEF section 4): local users
// from local, every remote server from its outcome in remote. A remote server whose outcome is a
// failure, a non-2xx answer, or an answer that is not JSON or not an object with a
// one_time_keys object is recorded once in failures, and none of its users appears in
// one_time_keys. A remote answer is never trusted: completion walks the request, keeping only
// requested users of that server, requested devices, keys of the requested algorithm (the
// smallest key ID when there are several) whose value is a key (IsKeyValue: a string or an
// object with a string "key", no null in it). A local key that is not a key value is dropped
// too. A destination missing from remote is recorded as a failure; an outcome for this server
// or for a server nobody asked about is ignored.
func CompleteClient(req *ClaimRequest, local LocalResults, remote map[ServerName]RemoteOutcome, opts CompleteOptions) *ClaimResponse {
	resp := newResponse(req, opts.Mode, false)
	resp.fillLocal(local, opts.ServerName)
	resp.fillRemotes(opts.ServerName, func(server ServerName) (RemoteOutcome, bool) {
		o, ok := remote[server]
		return o, ok
	})
	return resp
}

// CompleteFederation completes the answer to an inbound federation claim (BRIEF section 5): every
// user is local (ParseClaimRequest with FlavourFederation checked it), there is no failures map.
func CompleteFederation(req *ClaimRequest, local LocalResults, opts CompleteOptions) *ClaimResponse {
	resp := newResponse(req, opts.Mode, true)
	resp.fillLocal(local, opts.ServerName)
	return resp
}

func (r *ClaimResponse) fillLocal(local LocalResults, server ServerName) {
	for i := range r.Users {
		u := &r.Users[i]
		if u.User.Server() != server {
			continue
		}
		keys := local[u.User]
		for j := range u.Devices {
			d := &u.Devices[j]
			if k, ok := keys[d.Device]; ok && k.KeyID.Algorithm() == d.Algorithm {
				if k.Key, ok = localKey(k.Key); ok {
					d.Claimed, d.Key = true, k
				}
			}
		}
	}
}

// localKey judges the text of a local key as the local member of the completion operations is
// judged (readDeviceKeys): canonical text that is a key is kept as it is, other text that
// IsKeyValue accepts is written canonically, anything else (null inside, say, stored before
// uploads refused it) is no key. So a host calling core directly answers as the module does.
func localKey(text []byte) ([]byte, bool) {
	if end, isKey, ok := canonicalText(text, 0, 0, true); ok && end == len(text) {
		return text, isKey
	}
	v, err := ParseValue(text)
	if err != nil || !IsKeyValue(&v) {
		return nil, false
	}
	return v.AppendJSON(nil), true
}

// fillRemotes judges the outcome of every remote server named in the request. A claim may name
// tens of thousands of servers (BRIEF 2), so nothing here is quadratic in them.
func (r *ClaimResponse) fillRemotes(own ServerName, outcome func(ServerName) (RemoteOutcome, bool)) {
	servers := r.serversOf(func(u *UserResult) bool { return len(u.Devices) > 0 && u.User.Server() != own })
	var failed []ServerFailure
	for _, s := range servers {
		o, ok := outcome(s)
		var f *Failure
		switch {
		case !ok:
			f = &Failure{Status: StatusNoAnswer, Message: "no answer was received from " + string(s)}
		case o.Failure != nil:
			f = o.Failure
		default:
			f = r.readRemote(s, o.Status, o.Body)
		}
		if f != nil {
			failed = append(failed, ServerFailure{s, *f})
		}
	}
	// Marking the users of failed servers only now is safe: reading a server's answer looks at
	// that server's users alone.
	r.fail(failed...)
}

// serversOf returns the servers of the requested users that keep accepts, sorted, each once.
func (r *ClaimResponse) serversOf(keep func(*UserResult) bool) []ServerName {
	servers := make([]ServerName, 0, 4)
	for i := range r.Users {
		u := &r.Users[i]
		if s := u.User.Server(); keep(u) && (len(servers) == 0 || servers[len(servers)-1] != s) {
			servers = append(servers, s) // users of a server often come together: skip the repeats
		}
	}
	slices.Sort(servers)
	return slices.Compact(servers)
}

// fail records failures of servers, given in server order, each bounded (Failure.Bounded): the
// users of those servers leave one_time_keys (users with an empty device map too: BRIEF 4, "none
// of that server's users").
func (r *ClaimResponse) fail(failed ...ServerFailure) {
	if len(failed) == 0 {
		return
	}
	for _, f := range failed {
		r.Failures = append(r.Failures, ServerFailure{f.Server, f.Failure.Bounded()})
	}
	for i := range r.Users {
		u := &r.Users[i]
		if _, ok := slices.BinarySearchFunc(failed, u.User.Server(), func(f ServerFailure, s ServerName) int {
			return cmp.Compare(f.Server, s)
		}); ok {
			u.Failed = true
		}
	}
}

// readRemote judges one remote answer and, if it is usable, fills that server's devices from it.
func (r *ClaimResponse) readRemote(server ServerName, status int, body []byte) *Failure {
	if status < 200 || status > 299 {
		return RemoteErrorFailure(status, body)
	}
	d := decoder{data: body}
	if !r.alias && cap(r.arena)-len(r.arena) < len(body) {
		r.arena = make([]byte, 0, len(body)) // canonical keys are never longer than the answer
	}
	if k, ok := d.kind(); !ok || k != KindObject {
		if err := d.skip(); err == nil && d.end() == nil {
			return &Failure{Status: StatusBadRemoteAnswer, Message: "the remote answer is not a JSON object"}
		}
		return &Failure{Status: StatusBadRemoteAnswer, Message: "the remote answer is not valid JSON"}
	}
	found := false
	err := d.objectRaw(func(key []byte) error {
		if string(key) != "one_time_keys" {
			return d.skip()
		}
		if found {
			return errorf(CodeBadJSON, "duplicate key \"one_time_keys\"")
		}
		found = true
		if k, ok := d.kind(); !ok || k != KindObject {
			if err := d.skip(); err != nil {
				return err
			}
			return errorf(CodeBadJSON, "one_time_keys is not an object")
		}
		r.countDrops = true
		defer func() { r.countDrops = false }()
		return r.readKeys(&d, func(u UserID) bool { return u.Server() == server })
	})
	if err == nil {
		err = d.end()
	}
	if err == nil && !found {
		err = errorf(CodeBadJSON, "one_time_keys is missing")
	}
	if err != nil {
		e := err.(*Error)
		msg := "the remote answer is not of the required shape: " + e.Message
		if e.Code == CodeNotJSON || checkSyntax(body) != nil {
			msg = "the remote answer is not valid JSON"
		}
		// Discard anything read before the error: the server failed as a whole.
		return &Failure{Status: StatusBadRemoteAnswer, Message: msg}
	}
	return nil
}

// RemoteErrorFailure is the failure of a server that answered a non-2xx status (a claim or a
// key query): "the remote server answered HTTP <status>", or the errcode and error of the body
// when it is a Matrix error, bounded (Failure.Bounded: the message at most
// MaxFailureMessageBytes, the errcode only if it looks like one).
func RemoteErrorFailure(status int, body []byte) *Failure {
	f := &Failure{Status: status, Message: "the remote server answered HTTP " + strconv.Itoa(status)}
	v, err := ParseValue(body)
	if err != nil {
		return f
	}
	if c, ok := v.Get("errcode"); ok && c.Kind == KindString && c.Str != "" {
		f.Errcode = c.Str
	}
	if m, ok := v.Get("error"); ok && m.Kind == KindString && m.Str != "" {
		f.Message = m.Str
	}
	*f = f.Bounded()
	return f
}

// readKeys walks a one_time_keys object (user -> device -> key ID -> key), keeping only what
// the request asked for of users accepted by mine. Duplicate keys among the parts it reads are
// an error: such an answer is ambiguous.
func (r *ClaimResponse) readKeys(d *decoder, mine func(UserID) bool) error {
	next := 0 // answers usually list users in request order: try the one after the last first
	return d.objectRaw(func(key []byte) error {
		ui, ok := findSorted(r.Users, key, next)
		if ok {
			next = ui + 1
		}
		if !ok || !mine(r.Users[ui].User) || r.Users[ui].Failed {
			if r.countDrops {
				r.dropped++
			}
			return d.skip()
		}
		u := &r.Users[ui]
		if u.seen {
			return errorf(CodeBadJSON, "duplicate key %s", quote(string(key)))
		}
		u.seen = true
		u.counted = r.countDrops
		if k, ok := d.kind(); !ok || k != KindObject {
			r.drop(u)
			return d.skip() // not an object: its devices stay unanswered ({})
		}
		nextDev := 0
		return d.objectRaw(func(dev []byte) error {
			di, ok := findSorted(u.Devices, dev, nextDev)
			if !ok {
				r.drop(u)
				return d.skip()
			}
			nextDev = di + 1
			dr := &u.Devices[di]
			if dr.seen {
				return errorf(CodeBadJSON, "duplicate key %s in %s", quote(string(dev)), quote(string(key)))
			}
			dr.seen = true
			if k, ok := d.kind(); !ok || k != KindObject {
				r.drop(u)
				return d.skip()
			}
			n, err := r.readDeviceKeys(d, dr)
			if r.countDrops {
				dr.empty = n == 0
				if dr.Claimed {
					n-- // the key kept
				}
				u.dropped += n
			}
			return err
		})
	})
}

// drop counts an entry of u's answer left out, while countDrops.
func (r *ClaimResponse) drop(u *UserResult) {
	if r.countDrops {
		u.dropped++
	}
}

// findSorted returns the index of the element of items (sorted by sortName) named key, trying
// hint first: the users of a result by user ID, a user's devices by device ID.
func findSorted[T any, P interface {
	*T
	sortName() string
}](items []T, key []byte, hint int) (int, bool) {
	name := func(i int) string { return P(&items[i]).sortName() }
	if hint < len(items) && name(hint) == string(key) {
		return hint, true
	}
	lo, hi := 0, len(items)
	for lo < hi {
		if m := int(uint(lo+hi) >> 1); name(m) < string(key) {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo, lo < len(items) && name(lo) == string(key)
}

func (u *UserResult) sortName() string   { return string(u.User) }
func (d *DeviceResult) sortName() string { return string(d.Device) }

// readDeviceKeys reads one device's key map, keeping the valid key (IsKeyValue) of the requested
// algorithm with the smallest key ID. A key whose text is already canonical is copied as it is;
// any other is parsed, judged and re-encoded. n is the number of members of the map.
func (r *ClaimResponse) readDeviceKeys(d *decoder, dr *DeviceResult) (n int, err error) {
	var seen [4][]byte
	ids := seen[:0] // key IDs of the requested algorithm seen so far, for duplicate detection
	err = d.objectRaw(func(id []byte) error {
		n++
		off := d.keyOff
		// What ParseKeyID accepts, of the requested algorithm: "algorithm:name", both non-empty.
		if i := bytes.IndexByte(id, ':'); i <= 0 || i == len(id)-1 || string(id[:i]) != string(dr.Algorithm) {
			return d.skip()
		}
		for _, other := range ids {
			if string(other) == string(id) {
				return errorf(CodeBadJSON, "duplicate key ID %s", quote(string(id)))
			}
		}
		ids = append(ids, id)
		better := !dr.Claimed || string(id) < string(dr.Key.KeyID)
		d.ws()
		start := d.pos
		at := len(r.arena)
		if isKey, ok := d.canonicalValue(); ok {
			if isKey && better {
				if r.alias {
					// Field by field: a struct copy costs a bulk write barrier while the GC marks.
					dr.Claimed = true
					dr.Key.KeyID = r.keyID(d, id, off)
					dr.Key.Key = d.data[start:d.pos:d.pos]
					return nil
				}
				r.arena = append(r.arena, d.data[start:d.pos]...)
				r.claim(dr, r.keyID(d, id, off), at)
			}
			return nil
		}
		v, err := d.value()
		if err != nil {
			return err
		}
		if IsKeyValue(&v) && better {
			r.arena = v.AppendJSON(r.arena)
			r.claim(dr, r.keyID(d, id, off), at)
		}
		return nil
	})
	return n, err
}

// claim records the key appended to the arena from n on, with its ID, as dr's key.
func (r *ClaimResponse) claim(dr *DeviceResult, id KeyID, n int) {
	dr.Claimed = true
	dr.Key.KeyID = id
	dr.Key.Key = r.arena[n:len(r.arena):len(r.arena)]
}

// keyID returns the key ID id, read by objectRaw at offset off, as a string that stays valid: a
// substring of the decoder's shared copy, else one written to r.ids.
func (r *ClaimResponse) keyID(d *decoder, id []byte, off int) KeyID {
	if off >= 0 && d.src != "" {
		return KeyID(d.src[off : off+len(id)])
	}
	if r.ids.Cap() == 0 {
		r.ids.Grow(32 * max(r.pairs, 1)) // key IDs such as "signed_curve25519:AAAAHQ"
	}
	n := r.ids.Len()
	r.ids.Write(id)
	return KeyID(r.ids.String()[n:])
}

// IsKeyValue reports whether v can be a one-time or fallback key: a string, or an object with a
// string member "key" and no null anywhere in it. It is the one definition of a key value, applied
// to remote and upstream answers, local results, the inventory of select_keys and (in hostserver)
// uploads. Null is excluded at any depth because BRIEF 4 says nothing anywhere is null (real
// clients reject null maps, and the claimed key is then lost), and the spec's KeyObject requires
// signatures to be an object.
func IsKeyValue(v *Value) bool {
	if v.Kind == KindString {
		return true
	}
	k, ok := v.Get("key")
	return ok && k.Kind == KindString && !hasNull(v)
}

// hasNull reports whether v is null or holds a null at any depth.
func hasNull(v *Value) bool {
	switch v.Kind {
	case KindNull:
		return true
	case KindArray:
		for i := range v.Items {
			if hasNull(&v.Items[i]) {
				return true
			}
		}
	case KindObject:
		for i := range v.Members {
			if hasNull(&v.Members[i].Value) {
				return true
			}
		}
	}
	return false
}

// AppendJSON appends the response as canonical JSON, except that numbers inside key objects keep
// their literal text (see Value): {"failures":{...},"one_time_keys":{...}}
// for a client answer, {"one_time_keys":{...}} for a federation answer. Neither map is ever
// null. In msc4072 mode every requested user and device is there (a device without a key is {},
// and so is a user asked with an empty device map); in legacy mode a device without a key is
// left out, and so is a user with no device left to show. In both modes users of failed servers
// are left out.
func (r *ClaimResponse) AppendJSON(buf []byte) []byte {
	buf = slices.Grow(buf, r.sizeHint())
	buf = append(buf, '{')
	if !r.Federation {
		buf = append(buf, `"failures":{`...)
		for i := range r.Failures {
			if i > 0 {
				buf = append(buf, ',')
			}
			buf = appendString(buf, string(r.Failures[i].Server))
			buf = append(buf, ':')
			buf = r.Failures[i].Failure.AppendJSON(buf)
		}
		buf = append(buf, "},"...)
	}
	buf = append(buf, `"one_time_keys":{`...)
	legacy := r.Mode == ModeLegacy
	first := true
	for i := range r.Users {
		u := &r.Users[i]
		if u.Failed || legacy && !u.anyClaimed() {
			continue
		}
		if !first {
			buf = append(buf, ',')
		}
		first = false
		buf = appendString(buf, string(u.User))
		buf = append(buf, ":{"...)
		firstDev := true
		for j := range u.Devices {
			dr := &u.Devices[j]
			if legacy && !dr.Claimed {
				continue
			}
			if !firstDev {
				buf = append(buf, ',')
			}
			firstDev = false
			buf = appendString(buf, string(dr.Device))
			buf = append(buf, ":{"...)
			if dr.Claimed {
				buf = appendString(buf, string(dr.Key.KeyID))
				buf = append(buf, ':')
				buf = append(buf, dr.Key.Key...)
			}
			buf = append(buf, '}')
		}
		buf = append(buf, '}')
	}
	return append(buf, "}}"...)
}

// anyClaimed reports whether some requested device of u has a key.
func (u *UserResult) anyClaimed() bool {
	for j := range u.Devices {
		if u.Devices[j].Claimed {
			return true
		}
	}
	return false
}

// sizeHint is an upper bound of the JSON size of r when no string needs escaping, so that
// AppendJSON grows its buffer once.
func (r *ClaimResponse) sizeHint() int {
	n := 64
	for i := range r.Failures {
		n += len(r.Failures[i].Server) + len(r.Failures[i].Failure.Message) + len(r.Failures[i].Failure.Errcode) + 48
	}
	for i := range r.Users {
		u := &r.Users[i]
		n += len(u.User) + 6
		for j := range u.Devices {
			d := &u.Devices[j]
			n += len(d.Device) + len(d.Key.KeyID) + len(d.Key.Key) + 10
		}
	}
	return n
}
