package core

import (
	"slices"
	"strings"
)

// Flavour says which endpoint a claim request was sent to.
type Flavour uint8

const (
	// FlavourClient is POST /_matrix/client/v3/keys/claim: any user, a timeout, failures in the answer.
	FlavourClient Flavour = iota
	// FlavourFederation is POST /_matrix/federation/v1/user/keys/claim: local users only.
	FlavourFederation
)

// Limits are the configurable bounds of a claim request (BRIEF section 2).
type Limits struct {
	MaxBodyBytes     int   // a larger body is M_TOO_LARGE (default 4 MiB)
	MaxPairs         int   // more (user, device) pairs is M_INVALID_PARAM (default 50,000)
	DefaultTimeoutMS int64 // the timeout when the request names none (default 10,000)
	MaxTimeoutMS     int64 // larger timeouts are clamped to this (default 60,000)
}

// DefaultLimits returns the limits of BRIEF section 2.
func DefaultLimits() Limits {
	return Limits{MaxBodyBytes: 4 << 20, MaxPairs: 50_000, DefaultTimeoutMS: 10_000, MaxTimeoutMS: 60_000}
}

// WithDefaults returns l with its zero (or negative) fields set to DefaultLimits', and the
// default timeout at most the maximum: the limits ParseClaimRequest applies.
func (l Limits) WithDefaults() Limits {
	d := DefaultLimits()
	if l.MaxBodyBytes <= 0 {
		l.MaxBodyBytes = d.MaxBodyBytes
	}
	if l.MaxPairs <= 0 {
		l.MaxPairs = d.MaxPairs
	}
	if l.DefaultTimeoutMS <= 0 {
		l.DefaultTimeoutMS = d.DefaultTimeoutMS
	}
	if l.MaxTimeoutMS <= 0 {
		l.MaxTimeoutMS = d.MaxTimeoutMS
	}
	if l.DefaultTimeoutMS > l.MaxTimeoutMS {
		l.DefaultTimeoutMS = l.MaxTimeoutMS
	}
	return l
}

// ParseOptions configure [ParseClaimRequest].
type ParseOptions struct {
	Flavour Flavour
	// ServerName is this server's name. For FlavourFederation every requested user must be on it.
	ServerName ServerName
	// QueryTimeout is the raw value of the ?timeout= query parameter ("" when absent). It is used
	// only when the body has no timeout (BRIEF section 2; Synapse reads only the query string).
	QueryTimeout string
	// Limits bound the request; zero fields take the defaults.
	Limits Limits
}

// ClaimRequest is a validated claim request. Users are sorted by user ID and each user's devices
// by device ID, so that every walk over a request is deterministic.
type ClaimRequest struct {
	Users []UserClaim
	// TimeoutMS is the resolved timeout in milliseconds: from the body, else from the query
	// string, else the default; clamped to the maximum. Zero for federation requests.
	TimeoutMS int64
	// Federation is true for a request parsed with FlavourFederation; its JSON form has no timeout.
	Federation bool
}

// UserClaim is one user of a claim request and the devices asked for.
type UserClaim struct {
	User    UserID
	Devices []DeviceClaim
}

// DeviceClaim is one requested device and the algorithm of the key wanted from it.
type DeviceClaim struct {
	Device    DeviceID
	Algorithm Algorithm
}

// Pairs returns the number of (user, device) pairs requested.
func (r *ClaimRequest) Pairs() int {
	n := 0
	for i := range r.Users {
		n += len(r.Users[i].Devices)
	}
	return n
}

// Find returns the index of user in r.Users.
func (r *ClaimRequest) Find(user UserID) (int, bool) {
	return slices.BinarySearchFunc(r.Users, user, func(u UserClaim, id UserID) int { return strings.Compare(string(u.User), string(id)) })
}

// Find returns the index of device in u.Devices.
func (u *UserClaim) Find(device DeviceID) (int, bool) {
	return slices.BinarySearchFunc(u.Devices, device, func(d DeviceClaim, id DeviceID) int { return strings.Compare(string(d.Device), string(id)) })
}

// AppendJSON appends the request in its canonical JSON form, a valid claim request body:
// {"one_time_keys":{...},"timeout":N} (no timeout for a federation request).
func (r *ClaimRequest) AppendJSON(buf []byte) []byte {
	buf = append(buf, `{"one_time_keys":`...)
	buf = appendUserClaims(buf, r.Users)
	if !r.Federation {
		buf = append(buf, `,"timeout":`...)
		buf = appendInt(buf, r.TimeoutMS)
	}
	return append(buf, '}')
}

func appendUserClaims(buf []byte, users []UserClaim) []byte {
	buf = append(buf, '{')
	for i := range users {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = appendString(buf, string(users[i].User))
		buf = append(buf, ":{"...)
		for j, d := range users[i].Devices {
			if j > 0 {
				buf = append(buf, ',')
			}
			buf = appendString(buf, string(d.Device))
			buf = append(buf, ':')
			buf = appendString(buf, string(d.Algorithm))
		}
		buf = append(buf, '}')
	}
	return append(buf, '}')
}

// ParseClaimRequest parses and validates the body of a claim request (BRIEF section 2).
//
// Errors, all *Error: a body over the size limit is M_TOO_LARGE; a body that is not JSON (or not
// UTF-8) is M_NOT_JSON; otherwise the first problem in document order decides: a body that is not
// an object, a missing or ill-typed one_time_keys, or a duplicate key is M_BAD_JSON naming the
// path; an invalid user ID, an empty device ID or algorithm, a non-local user (federation), a bad
// timeout or too many pairs is M_INVALID_PARAM naming the value. The body's timeout is checked
// for both flavours (null counts as absent); a federation request does not use it, nor
// QueryTimeout. Unknown top-level fields are ignored, as the spec allows extension. A user with
// an empty device map is kept: it is answered {} and causes no federation request.
func ParseClaimRequest(body []byte, opts ParseOptions) (*ClaimRequest, error) {
	lim := opts.Limits.WithDefaults()
	if len(body) > lim.MaxBodyBytes {
		return nil, errorf(CodeTooLarge, "request body is %d bytes; the limit is %d", len(body), lim.MaxBodyBytes)
	}
	p := requestParser{d: decoder{data: body}, opts: opts, lim: lim}
	p.d.shareStrings()
	p.d.strict = true
	req, err := p.parse()
	if err != nil {
		// A syntax error anywhere outranks a shape error found earlier: check the whole body.
		if e, ok := err.(*Error); ok && e.Code != CodeNotJSON {
			if serr := checkSyntax(body); serr != nil {
				return nil, serr
			}
		}
		return nil, err
	}
	return req, nil
}

type requestParser struct {
	d     decoder
	opts  ParseOptions
	lim   Limits
	pairs int
}

func (p *requestParser) parse() (*ClaimRequest, error) {
	d := &p.d
	if k, ok := d.kind(); !ok {
		return nil, d.syntaxError("a JSON value")
	} else if k != KindObject {
		if err := d.skip(); err != nil {
			return nil, err
		}
		if err := d.end(); err != nil {
			return nil, err
		}
		return nil, errorf(CodeBadJSON, "the request body must be a JSON object")
	}
	req := &ClaimRequest{Federation: p.opts.Flavour == FlavourFederation}
	var seenBuf [4]string
	seen := seenBuf[:0]
	haveKeys := false
	bodyTimeout := int64(-1)
	err := d.object(func(key string) error {
		if slices.Contains(seen, key) {
			return errorf(CodeBadJSON, "duplicate key %s in the request body", quote(key))
		}
		seen = append(seen, key)
		switch key {
		case "one_time_keys":
			haveKeys = true
			users, err := p.users()
			req.Users = users
			return err
		case "timeout":
			// Checked on both endpoints (BRIEF 2); the federation endpoint does not use it.
			t, err := p.timeout()
			bodyTimeout = t
			return err
		default:
			return d.skip()
		}
	})
	if err == nil {
		err = d.end()
	}
	if err != nil {
		return nil, err
	}
	if !haveKeys {
		return nil, errorf(CodeBadJSON, "one_time_keys is required")
	}
	if !req.Federation {
		t, err := p.resolveTimeout(bodyTimeout)
		if err != nil {
			return nil, err
		}
		req.TimeoutMS = t
	}
	return req, nil
}

// users reads one_time_keys: an object of user ID -> object of device ID -> algorithm.
func (p *requestParser) users() ([]UserClaim, error) {
	d := &p.d
	if k, ok := d.kind(); !ok {
		return nil, d.syntaxError("a JSON value")
	} else if k != KindObject {
		return nil, errorf(CodeBadJSON, "one_time_keys must be an object of user ID to an object of device ID to algorithm")
	}
	var users []UserClaim
	// The devices of every user are appended to one backing array, and each user's are cut from
	// it once all are read: a few allocations per request rather than a few per user.
	var all []DeviceClaim
	var endsBuf [16]int
	ends := endsBuf[:0] // ends[i]: the end in all of users[i]'s devices
	err := d.object(func(key string) error {
		uid, err := ParseUserID(key)
		if err != nil {
			return &Error{Code: CodeInvalidParam, Message: "invalid user ID in one_time_keys: " + err.Error()}
		}
		if p.opts.Flavour == FlavourFederation && uid.Server() != p.opts.ServerName {
			return errorf(CodeInvalidParam, "user %s is not local to this server (%s)", quote(key), quote(string(p.opts.ServerName)))
		}
		if k, ok := d.kind(); !ok {
			return d.syntaxError("a JSON value")
		} else if k != KindObject {
			return errorf(CodeBadJSON, "%s must be an object of device ID to algorithm", userPath(key))
		}
		first := len(all)
		err = d.object(func(dev string) error {
			if dev == "" {
				return errorf(CodeInvalidParam, "%s has an empty device ID", userPath(key))
			}
			if k, ok := d.kind(); !ok {
				return d.syntaxError("a JSON value")
			} else if k != KindString {
				return errorf(CodeBadJSON, "%s[%s] must be a string (an algorithm)", userPath(key), quote(dev))
			}
			alg, err := d.str()
			if err != nil {
				return err
			}
			if alg == "" {
				return errorf(CodeInvalidParam, "%s[%s] is an empty algorithm", userPath(key), quote(dev))
			}
			if p.pairs++; p.pairs > p.lim.MaxPairs {
				return errorf(CodeInvalidParam, "the request names more than %d (user, device) pairs", p.lim.MaxPairs)
			}
			all = append(all, DeviceClaim{DeviceID(dev), Algorithm(alg)})
			return nil
		})
		if err != nil {
			return err
		}
		devices := all[first:]
		if !slices.IsSortedFunc(devices, byDevice) { // clients usually send them sorted
			slices.SortFunc(devices, byDevice)
		}
		for i := 1; i < len(devices); i++ {
			if devices[i].Device == devices[i-1].Device {
				return errorf(CodeBadJSON, "duplicate key %s in %s", quote(string(devices[i].Device)), userPath(key))
			}
		}
		users = append(users, UserClaim{User: uid})
		ends = append(ends, len(all))
		return nil
	})
	if err != nil {
		return nil, err
	}
	for i := range users {
		first := 0
		if i > 0 {
			first = ends[i-1]
		}
		if first < ends[i] { // a user with an empty device map keeps nil devices
			users[i].Devices = all[first:ends[i]:ends[i]]
		}
	}
	if !slices.IsSortedFunc(users, byUser) {
		slices.SortFunc(users, byUser)
	}
	for i := 1; i < len(users); i++ {
		if users[i].User == users[i-1].User {
			return nil, errorf(CodeBadJSON, "duplicate key %s in one_time_keys", quote(string(users[i].User)))
		}
	}
	if users == nil {
		users = []UserClaim{}
	}
	return users, nil
}

// byDevice and byUser order a request's devices and users by ID (byte order).
func byDevice(a, b DeviceClaim) int { return strings.Compare(string(a.Device), string(b.Device)) }
func byUser(a, b UserClaim) int     { return strings.Compare(string(a.User), string(b.User)) }

// userPath names a user's device map in error messages.
func userPath(key string) string { return "one_time_keys[" + quote(key) + "]" }

// timeout reads the body's timeout: a non-negative integer, or null for none. It returns -1 for none.
func (p *requestParser) timeout() (int64, error) {
	d := &p.d
	k, ok := d.kind()
	switch {
	case !ok:
		return -1, d.syntaxError("a JSON value")
	case k == KindNull:
		return -1, d.literal("null")
	case k != KindNumber:
		return -1, errorf(CodeInvalidParam, "timeout must be a non-negative integer number of milliseconds")
	}
	lit, err := d.number()
	if err != nil {
		return -1, err
	}
	t, ok := ParseMillis(lit)
	if !ok {
		return -1, errorf(CodeInvalidParam, "timeout must be a non-negative integer number of milliseconds, not %s", lit)
	}
	return t, nil
}

func (p *requestParser) resolveTimeout(body int64) (int64, error) {
	t := body
	if t < 0 && p.opts.QueryTimeout != "" {
		q, ok := ParseMillis(p.opts.QueryTimeout)
		if !ok {
			return 0, errorf(CodeInvalidParam, "the timeout query parameter must be a non-negative integer number of milliseconds, not %s", quote(p.opts.QueryTimeout))
		}
		t = q
	}
	if t < 0 {
		t = p.lim.DefaultTimeoutMS
	}
	return min(t, p.lim.MaxTimeoutMS), nil
}

// ParseMillis parses a timeout in milliseconds: a JSON number literal whose value is a
// non-negative integer, saturating at a large value (about 2^50). As JSON Schema counts integers
// by value (and the spec's OpenAPI validators accept them), 1000, 1000.0, 1e3, 1.5e3 and 10000e-1
// are integers (1000, 1000, 1000, 1500, 1000) and -0 is 0; 1.5, 1e-3, -1, a leading '+', an
// empty string or anything that is not a number literal is not. Leading zeros are accepted
// ("007" from a query string); in a body the JSON decoder has refused them already. The body's
// timeout and the ?timeout= query parameter of a claim, and the keys server's /keys/query
// timeout, are read with it.
func ParseMillis(s string) (int64, bool) {
	i, n := 0, len(s)
	neg := i < n && s[i] == '-'
	if neg {
		i++
	}
	intStart := i
	for i < n && isDigit(s[i]) {
		i++
	}
	digits := s[intStart:i]
	if len(digits) == 0 {
		return 0, false
	}
	frac := ""
	if i < n && s[i] == '.' {
		i++
		start := i
		for i < n && isDigit(s[i]) {
			i++
		}
		if frac = s[start:i]; frac == "" {
			return 0, false
		}
	}
	exp := int64(0)
	if i < n && (s[i] == 'e' || s[i] == 'E') {
		i++
		expNeg := false
		if i < n && (s[i] == '+' || s[i] == '-') {
			expNeg = s[i] == '-'
			i++
		}
		start := i
		for i < n && isDigit(s[i]) {
			if exp < 1<<40 {
				exp = exp*10 + int64(s[i]-'0')
			}
			i++
		}
		if i == start {
			return 0, false
		}
		if expNeg {
			exp = -exp
		}
	}
	if i != n {
		return 0, false
	}
	// The value is mant × 10^(exp − len(frac)), mant = digits+frac without leading zeros.
	mant := strings.TrimLeft(digits+frac, "0")
	if mant == "" {
		return 0, true // zero, whatever its sign or exponent
	}
	if neg {
		return 0, false
	}
	scale := exp - int64(len(frac))
	trimmed := strings.TrimRight(mant, "0")
	scale += int64(len(mant) - len(trimmed))
	if scale < 0 {
		return 0, false // a fraction remains: not an integer
	}
	if int64(len(trimmed))+scale > 16 {
		return 1 << 50, true // at least 10^16: saturate, as parseMillis does
	}
	v, _ := parseMillis(trimmed)
	for ; scale > 0; scale-- {
		v *= 10
	}
	return min(v, 1<<50), true
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// parseMillis parses a non-negative integer literal, saturating at a large value.
func parseMillis(s string) (int64, bool) {
	if s == "" || !isInteger(s) {
		return 0, false
	}
	if s == "-0" {
		return 0, true
	}
	if s[0] == '-' {
		return 0, false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		if n < 1<<50 {
			n = n*10 + int64(c-'0')
		}
	}
	return n, true
}

func appendInt(buf []byte, n int64) []byte {
	if n < 0 {
		buf = append(buf, '-')
		n = -n
	}
	var tmp [20]byte
	i := len(tmp)
	for {
		i--
		tmp[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			break
		}
	}
	return append(buf, tmp[i:]...)
}
