package federation

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/keyclaim/keyclaim/core"
)

// XMatrixScheme is the authorization scheme of federation requests.
const XMatrixScheme = "X-Matrix"

// XMatrix is the content of an X-Matrix Authorization header (server-server API, "Request
// Authentication").
type XMatrix struct {
	Origin core.ServerName
	// Destination is empty when the header has no destination parameter (servers older than
	// spec v1.3 do not send it).
	Destination core.ServerName
	Key         core.KeyID
	Signature   string
}

// String returns the header value as the spec asks senders to write it: one space after
// X-Matrix, lower-case names, every value quoted, no whitespace around the commas.
func (x XMatrix) String() string {
	var b strings.Builder
	b.WriteString(XMatrixScheme + " origin=")
	writeQuoted(&b, string(x.Origin))
	if x.Destination != "" {
		b.WriteString(",destination=")
		writeQuoted(&b, string(x.Destination))
	}
	b.WriteString(",key=")
	writeQuoted(&b, string(x.Key))
	b.WriteString(",sig=")
	writeQuoted(&b, x.Signature)
	return b.String()
}

func writeQuoted(b *strings.Builder, s string) {
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		if s[i] == '"' || s[i] == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	b.WriteByte('"')
}

// ErrNotXMatrix is returned by [ParseXMatrix] for a header of another scheme.
var ErrNotXMatrix = errors.New("not an X-Matrix authorization")

// ParseXMatrix parses an Authorization header value of the X-Matrix scheme, following the
// grammar of the spec (RFC 9110 section 11.4): the scheme (case-insensitive) and one or more
// spaces, then comma-separated name=value parameters with optional spaces and tabs around the
// commas and the "="; names are case-insensitive; values are tokens or quoted strings with
// backslash escapes; unquoted values may contain colons (and, for compatibility, any visible
// character but comma and quote). Unknown parameters are ignored; a repeated known parameter is
// an error; "signature" is read as "sig" (the spec's prose names the parameter "signature", its
// example and every implementation "sig", which senders must use). origin, key and sig are required; origin and destination must be valid server
// names and key an "algorithm:version" key ID.
func ParseXMatrix(header string) (XMatrix, error) {
	var x XMatrix
	scheme, rest, _ := strings.Cut(header, " ")
	if !strings.EqualFold(scheme, XMatrixScheme) {
		return x, ErrNotXMatrix
	}
	p := paramParser{s: rest}
	seen := map[string]bool{}
	for {
		name, value, ok, err := p.next()
		if err != nil {
			return x, fmt.Errorf("malformed X-Matrix header: %w", err)
		}
		if !ok {
			break
		}
		if name == "signature" {
			name = "sig" // the spec's prose names it "signature"; its example and every server say "sig"
		}
		switch name {
		case "origin", "destination", "key", "sig":
		default:
			continue // unknown parameters are ignored
		}
		if seen[name] {
			return x, fmt.Errorf("malformed X-Matrix header: parameter %s given twice", name)
		}
		seen[name] = true
		switch name {
		case "origin":
			x.Origin = core.ServerName(value)
		case "destination":
			x.Destination = core.ServerName(value)
		case "key":
			x.Key = core.KeyID(value)
		case "sig":
			x.Signature = value
		}
	}
	for _, name := range []string{"origin", "key", "sig"} {
		if !seen[name] {
			return x, fmt.Errorf("malformed X-Matrix header: parameter %s is missing", name)
		}
	}
	if _, err := core.ParseServerName(string(x.Origin)); err != nil {
		return x, fmt.Errorf("malformed X-Matrix header: origin: %w", err)
	}
	if seen["destination"] {
		if _, err := core.ParseServerName(string(x.Destination)); err != nil {
			return x, fmt.Errorf("malformed X-Matrix header: destination: %w", err)
		}
	}
	if alg, ver, ok := strings.Cut(string(x.Key), ":"); !ok || alg == "" || ver == "" {
		return x, fmt.Errorf("malformed X-Matrix header: key %q is not an algorithm:version key ID", x.Key)
	}
	if x.Signature == "" {
		return x, errors.New("malformed X-Matrix header: sig is empty")
	}
	return x, nil
}

// paramParser reads the comma-separated auth-param list of an Authorization header.
type paramParser struct {
	s   string
	pos int
}

func isOWS(c byte) bool { return c == ' ' || c == '\t' }

// isTchar reports whether c is a token character (RFC 9110 section 5.6.2).
func isTchar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

func (p *paramParser) skipOWS() {
	for p.pos < len(p.s) && isOWS(p.s[p.pos]) {
		p.pos++
	}
}

// next returns the next parameter, its name in lower case; ok is false at the end.
func (p *paramParser) next() (name, value string, ok bool, err error) {
	// Skip empty list elements: RFC 9110 section 5.6.1 asks recipients to accept them.
	for {
		p.skipOWS()
		if p.pos < len(p.s) && p.s[p.pos] == ',' {
			p.pos++
			continue
		}
		break
	}
	if p.pos == len(p.s) {
		return "", "", false, nil
	}
	start := p.pos
	for p.pos < len(p.s) && isTchar(p.s[p.pos]) {
		p.pos++
	}
	if p.pos == start {
		return "", "", false, fmt.Errorf("expected a parameter name at byte %d", start)
	}
	name = strings.ToLower(p.s[start:p.pos])
	p.skipOWS()
	if p.pos == len(p.s) || p.s[p.pos] != '=' {
		return "", "", false, fmt.Errorf("parameter %s has no value", name)
	}
	p.pos++
	p.skipOWS()
	if p.pos < len(p.s) && p.s[p.pos] == '"' {
		value, err = p.quoted()
		if err != nil {
			return "", "", false, fmt.Errorf("parameter %s: %w", name, err)
		}
	} else {
		start := p.pos
		for p.pos < len(p.s) {
			c := p.s[p.pos]
			if c <= ' ' || c == 0x7f || c == ',' || c == '"' {
				break
			}
			p.pos++
		}
		if p.pos == start {
			return "", "", false, fmt.Errorf("parameter %s has an empty value", name)
		}
		value = p.s[start:p.pos]
	}
	p.skipOWS()
	if p.pos < len(p.s) && p.s[p.pos] != ',' {
		return "", "", false, fmt.Errorf("parameter %s: unexpected %q after the value", name, p.s[p.pos])
	}
	return name, value, true, nil
}

// quoted reads a quoted-string at p.pos (RFC 9110 section 5.6.4), unescaping backslash pairs.
func (p *paramParser) quoted() (string, error) {
	p.pos++ // opening quote
	var b strings.Builder
	for p.pos < len(p.s) {
		c := p.s[p.pos]
		switch {
		case c == '"':
			p.pos++
			return b.String(), nil
		case c == '\\':
			if p.pos+1 == len(p.s) {
				return "", errors.New("unterminated quoted value")
			}
			c = p.s[p.pos+1]
			if c < ' ' && c != '\t' || c == 0x7f {
				return "", errors.New("control character in quoted value")
			}
			b.WriteByte(c)
			p.pos += 2
		case c < ' ' && c != '\t' || c == 0x7f:
			return "", errors.New("control character in quoted value")
		default:
			b.WriteByte(c)
			p.pos++
		}
	}
	return "", errors.New("unterminated quoted value")
}

// requestJSON returns the object a federation request's X-Matrix signature covers: method, uri
// (path and query as sent), origin, destination and, when there is a body, content (the body
// parsed as JSON).
func requestJSON(method, uri string, origin, destination core.ServerName, content *core.Value) core.Value {
	v := jsonObject(
		core.Member{Key: "destination", Value: jsonString(string(destination))},
		core.Member{Key: "method", Value: jsonString(method)},
		core.Member{Key: "origin", Value: jsonString(string(origin))},
		core.Member{Key: "uri", Value: jsonString(uri)},
	)
	if content != nil {
		setMember(&v, "content", *content)
	}
	return v
}

// SignRequest sets the X-Matrix Authorization header of req, an outgoing federation request
// from origin to destination with the given body (nil or empty when there is none), signed
// with key. The signed uri is req.URL.RequestURI(), the path and query as Go sends them; the
// body must be JSON. origin and destination are server names before any delegation.
func SignRequest(req *http.Request, body []byte, origin, destination core.ServerName, key *SigningKey) error {
	content, err := parseContent(body)
	if err != nil {
		return err
	}
	signRequest(req, content, origin, destination, key)
	return nil
}

// parseContent reads the JSON body of a request to be signed: nil when there is none.
func parseContent(body []byte) (*core.Value, error) {
	if len(body) == 0 {
		return nil, nil
	}
	v, err := core.ParseValue(body)
	if err != nil {
		return nil, fmt.Errorf("sign request: body: %w", err)
	}
	return &v, nil
}

// signRequest is SignRequest with the body already read (nil when there is none).
func signRequest(req *http.Request, content *core.Value, origin, destination core.ServerName, key *SigningKey) {
	v := requestJSON(req.Method, req.URL.RequestURI(), origin, destination, content)
	req.Header.Set("Authorization", XMatrix{
		Origin:      origin,
		Destination: destination,
		Key:         key.id,
		Signature:   key.sign(v.AppendJSON(nil)),
	}.String())
}
