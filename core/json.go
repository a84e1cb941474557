package core

import (
	"slices"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// This file holds core's JSON reader and writer. Both are written for this package rather than
// taken from encoding/json: the reader rejects duplicate object keys and invalid UTF-8 (ambiguous
// input), reads claim requests into typed values without building a generic tree, and reports
// Matrix errors; the writer emits canonical JSON (spec appendices, "Canonical JSON"): sorted keys,
// no insignificant whitespace, only the escapes the grammar allows. See DESIGN.md, "Why our own
// JSON reader and writer?".

// maxDepth bounds nesting so that hostile input cannot exhaust the stack (in WebAssembly the Go
// stack lives in linear memory).
const maxDepth = 64

// Kind is the kind of a JSON value.
type Kind uint8

// The kinds of JSON values.
const (
	KindNull Kind = iota
	KindBool
	KindNumber
	KindString
	KindArray
	KindObject
)

// Value is a parsed JSON value. Objects keep their members sorted by key, which makes the value
// canonical: [Value.AppendJSON] writes canonical JSON, except that numbers keep their literal
// text (canonical JSON allows integers only; a value with fractions or exponents is copied as it
// came rather than rewritten).
type Value struct {
	Kind    Kind
	Str     string   // the content of a string, or the literal of a number
	Bool    bool     // the value of a bool
	Items   []Value  // the items of an array
	Members []Member // the members of an object, sorted by key, keys unique
}

// Member is one member of a JSON object.
type Member struct {
	Key   string
	Value Value
}

// Get returns the member of an object with the given key.
func (v *Value) Get(key string) (*Value, bool) {
	if v.Kind != KindObject {
		return nil, false
	}
	i, ok := slices.BinarySearchFunc(v.Members, key, func(m Member, k string) int { return strings.Compare(m.Key, k) })
	if !ok {
		return nil, false
	}
	return &v.Members[i].Value, true
}

// ParseValue parses data as one JSON value. Duplicate object keys, invalid UTF-8, lone
// surrogate escapes, trailing data and nesting deeper than 64 are errors (M_NOT_JSON, or
// M_BAD_JSON for duplicates and depth).
func ParseValue(data []byte) (Value, error) {
	d := decoder{data: data}
	v, err := d.value()
	if err == nil {
		err = d.end()
	}
	if err != nil {
		return Value{}, err
	}
	return v, nil
}

// Canonical parses data as one JSON value and returns its canonical JSON encoding.
func Canonical(data []byte) ([]byte, error) {
	v, err := ParseValue(data)
	if err != nil {
		return nil, err
	}
	return v.AppendJSON(make([]byte, 0, len(data))), nil
}

// AppendJSON appends the canonical JSON encoding of v to buf.
func (v *Value) AppendJSON(buf []byte) []byte {
	switch v.Kind {
	case KindNull:
		return append(buf, "null"...)
	case KindBool:
		if v.Bool {
			return append(buf, "true"...)
		}
		return append(buf, "false"...)
	case KindNumber:
		return append(buf, v.Str...)
	case KindString:
		return appendString(buf, v.Str)
	case KindArray:
		buf = append(buf, '[')
		for i := range v.Items {
			if i > 0 {
				buf = append(buf, ',')
			}
			buf = v.Items[i].AppendJSON(buf)
		}
		return append(buf, ']')
	default:
		buf = append(buf, '{')
		for i := range v.Members {
			if i > 0 {
				buf = append(buf, ',')
			}
			buf = appendString(buf, v.Members[i].Key)
			buf = append(buf, ':')
			buf = v.Members[i].Value.AppendJSON(buf)
		}
		return append(buf, '}')
	}
}

const hexDigits = "0123456789abcdef"

// needsEscape marks the bytes that canonical JSON escapes inside strings.
var needsEscape = func() (t [256]bool) {
	for c := range 0x20 {
		t[c] = true
	}
	t['"'], t['\\'] = true, true
	return t
}()

// appendString appends s as a JSON string with the escapes of canonical JSON: '"', '\\' and the
// control characters (short forms for \b \t \n \f \r, \u00XX with lower-case hex otherwise);
// everything else, '<', '>', '&', U+2028 and non-ASCII included, is written as it is.
func appendString(buf []byte, s string) []byte {
	buf = append(buf, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !needsEscape[c] {
			continue
		}
		buf = append(buf, s[start:i]...)
		switch c {
		case '"', '\\':
			buf = append(buf, '\\', c)
		case '\b':
			buf = append(buf, '\\', 'b')
		case '\t':
			buf = append(buf, '\\', 't')
		case '\n':
			buf = append(buf, '\\', 'n')
		case '\f':
			buf = append(buf, '\\', 'f')
		case '\r':
			buf = append(buf, '\\', 'r')
		default:
			buf = append(buf, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		start = i + 1
	}
	buf = append(buf, s[start:]...)
	return append(buf, '"')
}

// decoder reads JSON from a byte slice. Its methods leave pos after what they read.
type decoder struct {
	data  []byte
	pos   int
	depth int
	// strict makes skip reject duplicate object keys too (requests: BRIEF 2).
	strict bool
	// src, when set, is string(data): strings without escapes are then substrings of it and
	// cost no allocation. Set it with shareStrings when many strings will be kept.
	src string
}

// shareStrings makes the strings d returns share one copy of the input.
func (d *decoder) shareStrings() { d.src = string(d.data) }

func (d *decoder) syntaxError(what string) *Error {
	if d.pos >= len(d.data) {
		return errorf(CodeNotJSON, "invalid JSON: unexpected end of input, expected %s", what)
	}
	return errorf(CodeNotJSON, "invalid JSON at byte %d: expected %s", d.pos, what)
}

// ws skips whitespace and returns the next byte, or 0 at the end.
func (d *decoder) ws() byte {
	for d.pos < len(d.data) {
		switch c := d.data[d.pos]; c {
		case ' ', '\t', '\n', '\r':
			d.pos++
		default:
			return c
		}
	}
	return 0
}

// end checks that only whitespace follows.
func (d *decoder) end() error {
	if d.ws() != 0 || d.pos < len(d.data) {
		return d.syntaxError("end of input")
	}
	return nil
}

// kind returns the kind of the next value without consuming it; ok is false if no value can start here.
func (d *decoder) kind() (Kind, bool) {
	switch c := d.ws(); {
	case c == '{':
		return KindObject, true
	case c == '[':
		return KindArray, true
	case c == '"':
		return KindString, true
	case c == 't' || c == 'f':
		return KindBool, true
	case c == 'n':
		return KindNull, true
	case c == '-' || c >= '0' && c <= '9':
		return KindNumber, true
	}
	return 0, false
}

// object reads an object, calling member for each key with the decoder placed at the value;
// member must consume the value. It does not check for duplicate keys: callers do.
func (d *decoder) object(member func(key string) error) error {
	if d.ws() != '{' {
		return d.syntaxError("'{'")
	}
	if d.depth++; d.depth > maxDepth {
		return errorf(CodeBadJSON, "JSON nested deeper than %d levels", maxDepth)
	}
	d.pos++
	if d.ws() == '}' {
		d.pos++
		d.depth--
		return nil
	}
	for {
		if d.ws() != '"' {
			return d.syntaxError("a string key")
		}
		key, err := d.str()
		if err != nil {
			return err
		}
		if d.ws() != ':' {
			return d.syntaxError("':'")
		}
		d.pos++
		if err := member(key); err != nil {
			return err
		}
		switch d.ws() {
		case ',':
			d.pos++
		case '}':
			d.pos++
			d.depth--
			return nil
		default:
			return d.syntaxError("',' or '}'")
		}
	}
}

// array reads an array, calling item with the decoder placed at each item.
func (d *decoder) array(item func() error) error {
	if d.ws() != '[' {
		return d.syntaxError("'['")
	}
	if d.depth++; d.depth > maxDepth {
		return errorf(CodeBadJSON, "JSON nested deeper than %d levels", maxDepth)
	}
	d.pos++
	if d.ws() == ']' {
		d.pos++
		d.depth--
		return nil
	}
	for {
		if err := item(); err != nil {
			return err
		}
		switch d.ws() {
		case ',':
			d.pos++
		case ']':
			d.pos++
			d.depth--
			return nil
		default:
			return d.syntaxError("',' or ']'")
		}
	}
}

// str reads a string. Strings without escapes cost one allocation; invalid UTF-8, raw control
// characters and lone surrogate escapes are errors.
func (d *decoder) str() (string, error) {
	if d.ws() != '"' {
		return "", d.syntaxError("a string")
	}
	d.pos++
	start := d.pos
	ascii := true
	for i := start; i < len(d.data); i++ {
		c := d.data[i]
		switch {
		case c == '"':
			s := d.data[start:i]
			if !ascii && !utf8.Valid(s) {
				return "", d.utf8Error(start)
			}
			d.pos = i + 1
			if d.src != "" {
				return d.src[start:i], nil
			}
			return string(s), nil
		case c == '\\':
			return d.strEscaped(start, i)
		case c < 0x20:
			d.pos = i
			return "", d.syntaxError("no raw control character in a string")
		case c >= 0x80:
			ascii = false
		}
	}
	d.pos = len(d.data)
	return "", d.syntaxError("'\"'")
}

func (d *decoder) utf8Error(start int) *Error {
	for i := start; i < len(d.data); {
		r, n := utf8.DecodeRune(d.data[i:])
		if r == utf8.RuneError && n <= 1 {
			return errorf(CodeNotJSON, "invalid JSON at byte %d: invalid UTF-8", i)
		}
		i += n
	}
	return errorf(CodeNotJSON, "invalid JSON: invalid UTF-8")
}

// strEscaped finishes reading a string that has an escape at esc.
func (d *decoder) strEscaped(start, esc int) (string, error) {
	b := make([]byte, 0, esc-start+16)
	b = append(b, d.data[start:esc]...)
	i := esc
	for i < len(d.data) {
		c := d.data[i]
		switch {
		case c == '"':
			if !utf8.Valid(b) {
				return "", d.utf8Error(start)
			}
			d.pos = i + 1
			return string(b), nil
		case c < 0x20:
			d.pos = i
			return "", d.syntaxError("no raw control character in a string")
		case c != '\\':
			b = append(b, c)
			i++
			continue
		}
		// an escape
		if i+1 >= len(d.data) {
			d.pos = len(d.data)
			return "", d.syntaxError("an escape")
		}
		switch e := d.data[i+1]; e {
		case '"', '\\', '/':
			b = append(b, e)
			i += 2
		case 'b':
			b, i = append(b, '\b'), i+2
		case 'f':
			b, i = append(b, '\f'), i+2
		case 'n':
			b, i = append(b, '\n'), i+2
		case 'r':
			b, i = append(b, '\r'), i+2
		case 't':
			b, i = append(b, '\t'), i+2
		case 'u':
			r, ok := hex4(d.data, i+2)
			if !ok {
				d.pos = i
				return "", d.syntaxError("4 hex digits after \\u")
			}
			i += 6
			if utf16.IsSurrogate(r) {
				r2, ok := rune(0), false
				if r < 0xdc00 && i+1 < len(d.data) && d.data[i] == '\\' && d.data[i+1] == 'u' {
					r2, ok = hex4(d.data, i+2)
				}
				dec := utf16.DecodeRune(r, r2)
				if !ok || dec == utf8.RuneError {
					d.pos = i - 6
					return "", errorf(CodeNotJSON, "invalid JSON at byte %d: lone surrogate escape", d.pos)
				}
				r = dec
				i += 6
			}
			b = utf8.AppendRune(b, r)
		default:
			d.pos = i
			return "", d.syntaxError("a valid escape")
		}
	}
	d.pos = len(d.data)
	return "", d.syntaxError("'\"'")
}

func hex4(b []byte, i int) (rune, bool) {
	if i+4 > len(b) {
		return 0, false
	}
	var r rune
	for _, c := range b[i : i+4] {
		switch {
		case c >= '0' && c <= '9':
			r = r<<4 | rune(c-'0')
		case c >= 'a' && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case c >= 'A' && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	return r, true
}

// number reads a number literal per RFC 8259 and returns its text.
func (d *decoder) number() (string, error) {
	b, i := d.data, d.pos
	start := i
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	default:
		d.pos = i
		return "", d.syntaxError("a digit")
	}
	if i < len(b) && b[i] == '.' {
		i++
		if i >= len(b) || b[i] < '0' || b[i] > '9' {
			d.pos = i
			return "", d.syntaxError("a digit after '.'")
		}
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i >= len(b) || b[i] < '0' || b[i] > '9' {
			d.pos = i
			return "", d.syntaxError("a digit in the exponent")
		}
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	}
	d.pos = i
	return string(b[start:i]), nil
}

// literal reads true, false or null.
func (d *decoder) literal(word string) error {
	if len(d.data)-d.pos < len(word) || string(d.data[d.pos:d.pos+len(word)]) != word {
		return d.syntaxError(quote(word))
	}
	d.pos += len(word)
	return nil
}

// value reads any value into a tree.
func (d *decoder) value() (Value, error) {
	k, ok := d.kind()
	if !ok {
		return Value{}, d.syntaxError("a value")
	}
	switch k {
	case KindObject:
		members := make([]Member, 0, 4)
		err := d.object(func(key string) error {
			v, err := d.value()
			members = append(members, Member{key, v})
			return err
		})
		if err != nil {
			return Value{}, err
		}
		if err := sortMembers(members); err != nil {
			return Value{}, err
		}
		return Value{Kind: KindObject, Members: members}, nil
	case KindArray:
		var items []Value
		err := d.array(func() error {
			v, err := d.value()
			items = append(items, v)
			return err
		})
		if err != nil {
			return Value{}, err
		}
		return Value{Kind: KindArray, Items: items}, nil
	case KindString:
		s, err := d.str()
		return Value{Kind: KindString, Str: s}, err
	case KindNumber:
		s, err := d.number()
		return Value{Kind: KindNumber, Str: s}, err
	case KindBool:
		if d.data[d.pos] == 't' {
			return Value{Kind: KindBool, Bool: true}, d.literal("true")
		}
		return Value{Kind: KindBool}, d.literal("false")
	default:
		return Value{Kind: KindNull}, d.literal("null")
	}
}

// sortMembers sorts members by key and rejects duplicates.
func sortMembers(members []Member) error {
	slices.SortFunc(members, func(a, b Member) int { return strings.Compare(a.Key, b.Key) })
	for i := 1; i < len(members); i++ {
		if members[i].Key == members[i-1].Key {
			return errorf(CodeBadJSON, "duplicate object key %s", quote(members[i].Key))
		}
	}
	return nil
}

// skip reads and discards one value, checking its syntax (not its keys for duplicates).
func (d *decoder) skip() error {
	k, ok := d.kind()
	if !ok {
		return d.syntaxError("a value")
	}
	switch k {
	case KindObject:
		if d.strict {
			return d.skipObjectStrict()
		}
		return d.object(func(string) error { return d.skip() })
	case KindArray:
		return d.array(d.skip)
	case KindString:
		return d.skipString()
	case KindNumber:
		_, err := d.number()
		return err
	case KindBool:
		if d.data[d.pos] == 't' {
			return d.literal("true")
		}
		return d.literal("false")
	default:
		return d.literal("null")
	}
}

// skipObjectStrict skips an object, rejecting duplicate keys.
func (d *decoder) skipObjectStrict() error {
	var keys []string
	err := d.object(func(key string) error {
		keys = append(keys, key)
		return d.skip()
	})
	if err != nil {
		return err
	}
	slices.Sort(keys)
	for i := 1; i < len(keys); i++ {
		if keys[i] == keys[i-1] {
			return errorf(CodeBadJSON, "duplicate object key %s", quote(keys[i]))
		}
	}
	return nil
}

// checkSyntax reports whether data is one JSON value, as M_NOT_JSON if not. It is iterative, so
// it has no depth limit: a body that is not JSON is M_NOT_JSON however deep the problem lies.
func checkSyntax(data []byte) error {
	d := decoder{data: data}
	var stack []byte // the open containers: '{' or '['
	for {
		// A value is expected here.
		switch k, ok := d.kind(); {
		case !ok:
			return d.syntaxError("a value")
		case k == KindObject:
			d.pos++
			if d.ws() == '}' {
				d.pos++
				break
			}
			stack = append(stack, '{')
			if err := d.memberKey(); err != nil {
				return err
			}
			continue
		case k == KindArray:
			d.pos++
			if d.ws() == ']' {
				d.pos++
				break
			}
			stack = append(stack, '[')
			continue
		default:
			if err := d.skip(); err != nil {
				return err
			}
		}
		// A value ended: close containers or move to the next member or item.
		for {
			if len(stack) == 0 {
				return d.end()
			}
			top := stack[len(stack)-1]
			c := d.ws()
			if c == ',' {
				d.pos++
				if top == '{' {
					if err := d.memberKey(); err != nil {
						return err
					}
				}
				break
			}
			if top == '{' && c == '}' || top == '[' && c == ']' {
				d.pos++
				stack = stack[:len(stack)-1]
				continue
			}
			if top == '{' {
				return d.syntaxError("',' or '}'")
			}
			return d.syntaxError("',' or ']'")
		}
	}
}

// memberKey reads `"key" :` inside an object.
func (d *decoder) memberKey() error {
	if d.ws() != '"' {
		return d.syntaxError("a string key")
	}
	if err := d.skipString(); err != nil {
		return err
	}
	if d.ws() != ':' {
		return d.syntaxError("':'")
	}
	d.pos++
	return nil
}

// skipString checks a string without building it: escapes and UTF-8 are validated in place,
// with the same rules and errors as str.
func (d *decoder) skipString() error {
	b := d.data
	start := d.pos + 1
	ascii := true
	for i := start; i < len(b); {
		c := b[i]
		switch {
		case c == '"':
			if !ascii && !utf8.Valid(b[start:i]) {
				return d.utf8Error(start)
			}
			d.pos = i + 1
			return nil
		case c < 0x20:
			d.pos = i
			return d.syntaxError("no raw control character in a string")
		case c != '\\':
			if c >= 0x80 {
				ascii = false
			}
			i++
		default: // an escape
			if i+1 >= len(b) {
				d.pos = len(b)
				return d.syntaxError("an escape")
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				r, ok := hex4(b, i+2)
				if !ok {
					d.pos = i
					return d.syntaxError("4 hex digits after \\u")
				}
				if utf16.IsSurrogate(r) {
					r2, ok2 := rune(0), false
					if r < 0xdc00 && i+7 < len(b) && b[i+6] == '\\' && b[i+7] == 'u' {
						r2, ok2 = hex4(b, i+8)
					}
					if !ok2 || utf16.DecodeRune(r, r2) == utf8.RuneError {
						d.pos = i
						return errorf(CodeNotJSON, "invalid JSON at byte %d: lone surrogate escape", i)
					}
					i += 6
				}
				i += 6
			default:
				d.pos = i
				return d.syntaxError("a valid escape")
			}
		}
	}
	d.pos = len(b)
	return d.syntaxError("'\"'")
}

// isInteger reports whether a number literal has neither fraction nor exponent.
func isInteger(lit string) bool { return strings.IndexAny(lit, ".eE") < 0 }
