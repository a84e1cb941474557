package core

import (
	"math/bits"
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

// ParseObjectRaw parses data as ParseValue does and, when it is an object, also returns the
// exact text of each of its members' values (a sub-slice of data, without the white space
// around it), in the same single pass: a host that must keep a member byte for byte (the
// device_keys of /keys/upload) need not read the body a second time. raw is nil when data is not
// an object.
func ParseObjectRaw(data []byte) (v Value, raw map[string][]byte, err error) {
	raw = make(map[string][]byte, 4)
	v, err = ParseValueRaw(data, 1, func(path []string, text []byte) { raw[path[0]] = text })
	if err != nil {
		return Value{}, nil, err
	}
	if v.Kind != KindObject {
		raw = nil
	}
	return v, raw, nil
}

// ParseValueRaw parses data as ParseValue does and, in the same single pass, calls raw with the
// path of member keys and the exact text (a sub-slice of data, without the white space around
// it) of each value that is depth objects deep: depth 1 is the members of the top object, 2 the
// members of those that are objects, and so on. A host that keeps such values byte for byte
// (the device keys of a remote /keys/query answer, three deep) reads the text once. raw is
// called as values are read, before the whole text is judged: when ParseValueRaw fails, throw
// away what it was given. path is reused between calls.
func ParseValueRaw(data []byte, depth int, raw func(path []string, text []byte)) (Value, error) {
	d := decoder{data: data}
	v, err := d.valueRaw(make([]string, 0, depth), depth, raw)
	if err == nil {
		err = d.end()
	}
	if err != nil {
		return Value{}, err
	}
	return v, nil
}

// valueRaw is value that calls raw for the values depth objects deep below path.
func (d *decoder) valueRaw(path []string, depth int, raw func([]string, []byte)) (Value, error) {
	if len(path) >= depth || d.ws() != '{' {
		return d.value()
	}
	members := make([]Member, 0, 4)
	err := d.object(func(key string) error {
		d.ws()
		start := d.pos
		p := append(path, key)
		v, err := d.valueRaw(p, depth, raw)
		members = append(members, Member{key, v})
		if err == nil && len(p) == depth {
			raw(p, d.data[start:d.pos:d.pos])
		}
		return err
	})
	if err != nil {
		return Value{}, err
	}
	if err := sortMembers(members); err != nil {
		return Value{}, err
	}
	return Value{Kind: KindObject, Members: members}, nil
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

// shortEscape marks the characters that may follow a backslash in a JSON escape of one
// character (every escape but \uXXXX).
var shortEscape = func() (t [256]bool) {
	for _, c := range `"\/bfnrt` {
		t[c] = true
	}
	return t
}()

// appendString appends s as a JSON string with the escapes of canonical JSON: '"', '\\' and the
// control characters (short forms for \b \t \n \f \r, \u00XX with lower-case hex otherwise);
// everything else, '<', '>', '&', U+2028 and non-ASCII included, is written as it is.
func appendString(buf []byte, s string) []byte {
	buf = append(buf, '"')
	start := 0
	for i := nextEscape(s, 0); i < len(s); i = nextEscape(s, i+1) {
		c := s[i]
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

// The scanners below look at strings 8 bytes at a time (SWAR): a word with no byte of interest
// is passed over with a few arithmetic operations instead of 8 loads and branches, which matters
// most inside WebAssembly, where byte loops are several times slower than natively.
const (
	lsb = 0x0101010101010101 // 0x01 in every byte
	msb = 0x8080808080808080 // 0x80 in every byte
)

// load64 returns the 8 bytes of b at i as a little-endian word (the compiler makes it one load).
func load64(b []byte, i int) uint64 {
	b = b[i : i+8 : i+8]
	return uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
		uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
}

// load64s is load64 for a string.
func load64s(s string, i int) uint64 {
	s = s[i : i+8]
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
}

// escapeLanes sets the high bit of the bytes of x that canonical JSON escapes in strings: '"',
// '\\' and the control characters. The lowest marked byte is exact (a borrow can only mark bytes
// above a marked one), which is all the scanners use.
func escapeLanes(x uint64) uint64 {
	q := x ^ (lsb * '"')
	b := x ^ (lsb * '\\')
	return ((x-lsb*0x20)&^x | (q-lsb)&^q | (b-lsb)&^b) & msb
}

// nextEscape returns the index of the first byte at or after i of s that needsEscape, or len(s).
func nextEscape(s string, i int) int {
	for ; i+8 <= len(s); i += 8 {
		if m := escapeLanes(load64s(s, i)); m != 0 {
			return i + bits.TrailingZeros64(m)>>3
		}
	}
	for ; i < len(s); i++ {
		if needsEscape[s[i]] {
			return i
		}
	}
	return i
}

// nextBackslash returns the index of the first '\\' in s, or len(s).
func nextBackslash(s []byte) int {
	i := 0
	for ; i+8 <= len(s); i += 8 {
		x := load64(s, i) ^ (lsb * '\\')
		if m := (x - lsb) &^ x & msb; m != 0 {
			return i + bits.TrailingZeros64(m)>>3
		}
	}
	for i < len(s) && s[i] != '\\' {
		i++
	}
	return i
}

// nextSpecial returns the index of the first byte at or after i of b that ends a run of plain
// string bytes: '"', '\\', a control character or a non-ASCII byte; len(b) if there is none.
func nextSpecial(b []byte, i int) int {
	for ; i+8 <= len(b); i += 8 {
		x := load64(b, i)
		if m := escapeLanes(x) | x&msb; m != 0 {
			return i + bits.TrailingZeros64(m)>>3
		}
	}
	for ; i < len(b); i++ {
		if c := b[i]; needsEscape[c] || c >= 0x80 {
			return i
		}
	}
	return i
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
	// trusted says that data is known to be valid JSON (a raw value readFields checked): strings
	// are then passed over without validating their escapes and UTF-8 again.
	trusted bool
	// keyOff is, inside an objectRaw callback, the offset in data of the member's key when the key
	// has no escape (the key is then data[keyOff:keyOff+len(key)]), else -1.
	keyOff int
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
// member must consume the value. It does not check for duplicate keys: callers do. It is
// objectRaw with each key as a string (a substring of src when the decoder shares strings).
func (d *decoder) object(member func(key string) error) error {
	return d.objectRaw(func(key []byte) error {
		if d.src != "" && d.keyOff >= 0 {
			return member(d.src[d.keyOff : d.keyOff+len(key)])
		}
		return member(string(key))
	})
}

// objectRaw reads an object, calling member for each key with the decoder placed at the value
// (member must consume the value), each key as bytes: a slice of data when the key has no escape
// (see keyOff), else a new buffer. Reading keys this way costs no allocation. It does not check
// for duplicate keys: callers do. It is the one walk over an object's members: object,
// skipObject and the readers of typed values go through it.
func (d *decoder) objectRaw(member func(key []byte) error) error {
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
		// A key of plain bytes, the rule, is read here: strBytes, inlined.
		b, off := d.data, d.pos+1
		i := off
		for ; i+8 <= len(b); i += 8 {
			x := load64(b, i)
			if m := escapeLanes(x) | x&msb; m != 0 {
				i += bits.TrailingZeros64(m) >> 3
				break
			}
		}
		for i < len(b) && !needsEscape[b[i]] && b[i] < 0x80 {
			i++
		}
		var key []byte
		if i < len(b) && b[i] == '"' {
			key, d.pos = b[off:i], i+1
		} else {
			var err error
			if key, off, err = d.strBytes(); err != nil {
				return err
			}
		}
		if d.ws() != ':' {
			return d.syntaxError("':'")
		}
		d.pos++
		d.keyOff = off
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

// skipObject skips an object without building its keys; errors are those of objectRaw.
func (d *decoder) skipObject() error {
	return d.objectRaw(func([]byte) error { return d.skip() })
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

// str reads a string. Strings without escapes cost one allocation, none when the decoder shares
// strings; invalid UTF-8, raw control characters and lone surrogate escapes are errors.
func (d *decoder) str() (string, error) {
	if d.ws() != '"' {
		return "", d.syntaxError("a string")
	}
	start := d.pos + 1
	escaped, err := d.scanString()
	if err != nil {
		return "", err
	}
	end := d.pos - 1
	if escaped {
		return string(appendUnescaped(make([]byte, 0, end-start), d.data[start:end])), nil
	}
	if d.src != "" {
		return d.src[start:end], nil
	}
	return string(d.data[start:end]), nil
}

// strBytes reads a string as bytes: the content as a slice of data and its offset when it has no
// escape, else a new buffer with the escapes decoded and offset -1. Errors are those of str.
func (d *decoder) strBytes() ([]byte, int, error) {
	if d.ws() != '"' {
		return nil, -1, d.syntaxError("a string")
	}
	start := d.pos + 1
	escaped, err := d.scanString()
	if err != nil {
		return nil, -1, err
	}
	end := d.pos - 1
	if escaped {
		return appendUnescaped(make([]byte, 0, end-start), d.data[start:end]), -1, nil
	}
	return d.data[start:end], start, nil
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

// appendUnescaped appends the content s of a string that scanString accepted, with its escapes
// decoded. The result is never longer than s.
func appendUnescaped(dst, s []byte) []byte {
	for {
		j := nextBackslash(s)
		if j == len(s) {
			return append(dst, s...)
		}
		dst = append(dst, s[:j]...)
		switch e := s[j+1]; e {
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			r, _ := hex4(s, j+2)
			if utf16.IsSurrogate(r) { // scanString checked that a low surrogate escape follows
				r2, _ := hex4(s, j+8)
				r = utf16.DecodeRune(r, r2)
				j += 6
			}
			dst = utf8.AppendRune(dst, r)
			j += 4
		default: // '"', '\\', '/'
			dst = append(dst, e)
		}
		s = s[j+2:]
	}
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

// number reads a number literal per RFC 8259 and returns its text (a substring of src when the
// decoder shares strings).
func (d *decoder) number() (string, error) {
	start := d.pos
	if err := d.skipNumber(); err != nil {
		return "", err
	}
	if d.src != "" {
		return d.src[start:d.pos], nil
	}
	return string(d.data[start:d.pos]), nil
}

// skipNumber reads a number literal per RFC 8259 without building its text.
func (d *decoder) skipNumber() error {
	b, i := d.data, d.pos
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
		return d.syntaxError("a digit")
	}
	if i < len(b) && b[i] == '.' {
		i++
		if i >= len(b) || b[i] < '0' || b[i] > '9' {
			d.pos = i
			return d.syntaxError("a digit after '.'")
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
			return d.syntaxError("a digit in the exponent")
		}
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	}
	d.pos = i
	return nil
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

// canonicalValue moves past the value at d.pos if its text is already canonical JSON, which is
// how keys usually arrive: no white space, strings without escapes (and valid UTF-8), object
// keys in strictly ascending byte order, nesting within maxDepth, and no null (a value with a
// null in it is never a key, see IsKeyValue; it is left to the slow path, which says so). Such a
// text is exactly what value followed by AppendJSON would produce, so it can be copied as it is,
// without building a tree. isKey reports whether the value is a string or an object with a string
// member "key" (IsKeyValue). When ok is false nothing was consumed: read the value with value,
// which builds it, canonicalises it, judges it or reports its error.
func (d *decoder) canonicalValue() (isKey, ok bool) {
	end, isKey, ok := canonicalText(d.data, d.pos, d.depth, true)
	if ok {
		d.pos = end
	}
	return isKey, ok
}

// canonicalText is canonicalValue for the value at b[i], inside depth containers: a function of
// its arguments rather than a method, so that its state stays in registers (which matters inside
// WebAssembly). It returns the end of the value.
func canonicalText(b []byte, i, depth int, top bool) (end int, isKey, ok bool) {
	if i >= len(b) {
		return i, false, false
	}
	switch c := b[i]; {
	case c == '"':
		end, ok := canonicalString(b, i)
		return end, true, ok
	case c == '{':
		if depth++; depth > maxDepth {
			return i, false, false
		}
		i++
		if i < len(b) && b[i] == '}' {
			return i + 1, false, true
		}
		var prev []byte
		for first := true; ; first = false {
			if i >= len(b) || b[i] != '"' {
				return i, false, false
			}
			end, ok := canonicalString(b, i)
			if !ok {
				return i, false, false
			}
			key := b[i+1 : end-1]
			if !first && string(prev) >= string(key) {
				return i, false, false
			}
			prev = key
			if end >= len(b) || b[end] != ':' {
				return i, false, false
			}
			i = end + 1
			str := i < len(b) && b[i] == '"'
			if i, _, ok = canonicalText(b, i, depth, false); !ok {
				return i, false, false
			}
			if top && str && string(key) == "key" {
				isKey = true
			}
			if i >= len(b) {
				return i, false, false
			}
			switch b[i] {
			case ',':
				i++
			case '}':
				return i + 1, isKey, true
			default:
				return i, false, false
			}
		}
	case c == '[':
		if depth++; depth > maxDepth {
			return i, false, false
		}
		i++
		if i < len(b) && b[i] == ']' {
			return i + 1, false, true
		}
		for {
			if i, _, ok = canonicalText(b, i, depth, false); !ok || i >= len(b) {
				return i, false, false
			}
			switch b[i] {
			case ',':
				i++
			case ']':
				return i + 1, false, true
			default:
				return i, false, false
			}
		}
	case c == '-' || c >= '0' && c <= '9':
		d := decoder{data: b, pos: i} // numbers keep their literal text
		if d.skipNumber() != nil {
			return i, false, false
		}
		return d.pos, false, true
	case c == 't':
		return i + 4, false, literalAt(b, i, "true")
	case c == 'f':
		return i + 5, false, literalAt(b, i, "false")
	case c == 'n': // null is not copied: a value holding it is no key (IsKeyValue), the tree decides
		return i, false, false
	}
	return i, false, false
}

func literalAt(b []byte, i int, word string) bool {
	return len(b)-i >= len(word) && string(b[i:i+len(word)]) == word
}

// canonicalString checks that the string at b[i] (its opening quote) is valid and has no escape,
// and returns the index after its closing quote.
func canonicalString(b []byte, i int) (end int, ok bool) {
	start := i + 1
	ascii := true
	for i = start; ; i++ {
		for ; i+8 <= len(b); i += 8 { // nextSpecial, inlined
			x := load64(b, i)
			if m := escapeLanes(x) | x&msb; m != 0 {
				i += bits.TrailingZeros64(m) >> 3
				break
			}
		}
		for i < len(b) && !needsEscape[b[i]] && b[i] < 0x80 {
			i++
		}
		if i >= len(b) {
			return i, false
		}
		switch c := b[i]; {
		case c == '"':
			return i + 1, ascii || utf8.Valid(b[start:i])
		case c < 0x80: // an escape or a control character
			return i, false
		}
		ascii = false
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
		return d.skipObject()
	case KindArray:
		return d.array(d.skip)
	case KindString:
		return d.skipString()
	case KindNumber:
		return d.skipNumber()
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
	_, err := d.scanString()
	return err
}

// scanString checks the string at d.pos (its opening quote) and moves past it, reporting whether
// it has escapes. Runs of plain bytes are passed over a word at a time.
func (d *decoder) scanString() (escaped bool, err error) {
	if d.trusted {
		return d.scanTrustedString(), nil
	}
	b := d.data
	start := d.pos + 1
	ascii := true
	for i := start; ; {
		// Pass over plain bytes (nextSpecial, inlined: this loop is the hottest of the reader),
		// and over escapes of one character without leaving the loop (see scanDecodeString).
		for i+8 <= len(b) {
			x := load64(b, i)
			m := escapeLanes(x) | x&msb
			if m == 0 {
				i += 8
				continue
			}
			i += bits.TrailingZeros64(m) >> 3
			if b[i] != '\\' || i+1 >= len(b) || !shortEscape[b[i+1]] {
				break
			}
			escaped = true
			i += 2
		}
		for i < len(b) && !needsEscape[b[i]] && b[i] < 0x80 {
			i++
		}
		if i >= len(b) {
			break
		}
		c := b[i]
		switch {
		case c == '"':
			if !ascii && !utf8.Valid(b[start:i]) {
				return false, d.utf8Error(start)
			}
			d.pos = i + 1
			return escaped, nil
		case c < 0x20:
			d.pos = i
			return false, d.syntaxError("no raw control character in a string")
		case c != '\\':
			ascii = false
			i++
			continue
		}
		// an escape
		escaped = true
		if i+1 >= len(b) {
			d.pos = len(b)
			return false, d.syntaxError("an escape")
		}
		switch b[i+1] {
		case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			i += 2
		case 'u':
			r, ok := hex4(b, i+2)
			if !ok {
				d.pos = i
				return false, d.syntaxError("4 hex digits after \\u")
			}
			if utf16.IsSurrogate(r) {
				r2, ok2 := rune(0), false
				if r < 0xdc00 && i+7 < len(b) && b[i+6] == '\\' && b[i+7] == 'u' {
					r2, ok2 = hex4(b, i+8)
				}
				if !ok2 || utf16.DecodeRune(r, r2) == utf8.RuneError {
					d.pos = i
					return false, errorf(CodeNotJSON, "invalid JSON at byte %d: lone surrogate escape", i)
				}
				i += 6
			}
			i += 6
		default:
			d.pos = i
			return false, d.syntaxError("a valid escape")
		}
	}
	d.pos = len(b)
	return false, d.syntaxError("'\"'")
}

// scanDecodeString is scanString that also writes the string's content, escapes decoded, to dst
// from w on, and returns the end of what it wrote. dst[w:] must be at least as long as the rest
// of data from the string on: a decoded string is never longer than its text, so plain bytes are
// copied a word at a time, words written past the content being overwritten or left beyond the
// returned end. Checks and errors are those of scanString.
func (d *decoder) scanDecodeString(dst []byte, w int) (int, error) {
	b := d.data
	start := d.pos + 1
	ascii := true
	for i := start; ; {
		i, w = decodeRun(b, dst, i, w)
		if i >= len(b) {
			break
		}
		c := b[i]
		switch {
		case c == '"':
			if !ascii && !utf8.Valid(b[start:i]) {
				return 0, d.utf8Error(start)
			}
			d.pos = i + 1
			return w, nil
		case c < 0x20:
			d.pos = i
			return 0, d.syntaxError("no raw control character in a string")
		case c != '\\':
			ascii = false
			dst[w] = c
			i, w = i+1, w+1
			continue
		}
		// an escape
		if i+1 >= len(b) {
			d.pos = len(b)
			return 0, d.syntaxError("an escape")
		}
		switch e := b[i+1]; e {
		case '"', '\\', '/':
			dst[w] = e
		case 'b':
			dst[w] = '\b'
		case 'f':
			dst[w] = '\f'
		case 'n':
			dst[w] = '\n'
		case 'r':
			dst[w] = '\r'
		case 't':
			dst[w] = '\t'
		case 'u':
			r, ok := hex4(b, i+2)
			if !ok {
				d.pos = i
				return 0, d.syntaxError("4 hex digits after \\u")
			}
			if utf16.IsSurrogate(r) {
				r2, ok2 := rune(0), false
				if r < 0xdc00 && i+7 < len(b) && b[i+6] == '\\' && b[i+7] == 'u' {
					r2, ok2 = hex4(b, i+8)
				}
				if r = utf16.DecodeRune(r, r2); !ok2 || r == utf8.RuneError {
					d.pos = i
					return 0, errorf(CodeNotJSON, "invalid JSON at byte %d: lone surrogate escape", i)
				}
				i += 6
			}
			w += utf8.EncodeRune(dst[w:], r)
			i += 6
			continue
		default:
			d.pos = i
			return 0, d.syntaxError("a valid escape")
		}
		i, w = i+2, w+1
	}
	d.pos = len(b)
	return 0, d.syntaxError("'\"'")
}

// decodeRun copies the plain bytes of the string content at b[i] to dst[w], a word at a time,
// together with the escapes of one character that a JSON encoder writes inside a quoted
// document (\", \\, \/), and stops at any other escape, a control character, a non-ASCII
// byte or the closing quote, returning where it stopped in b and in dst. In a body that arrives
// as a JSON string such escapes come every few bytes, so they must not leave the loop. It is a
// function of its own so that, inside WebAssembly, its loop keeps its few values in locals
// rather than in the stack frame of scanDecodeString (which was 30% slower there).
//
//go:noinline
func decodeRun(b, dst []byte, i, w int) (int, int) {
	for i+8 <= len(b) {
		x := load64(b, i)
		store64(dst, w, x) // bytes past the run are overwritten later or lie beyond the end
		m := escapeLanes(x) | x&msb
		if m == 0 {
			i, w = i+8, w+8
			continue
		}
		k := bits.TrailingZeros64(m) >> 3
		i, w = i+k, w+k
		if b[i] != '\\' || i+1 >= len(b) {
			return i, w
		}
		if e := b[i+1]; e == '"' || e == '\\' || e == '/' {
			dst[w] = e
			i, w = i+2, w+1
			continue
		}
		return i, w
	}
	for i < len(b) && !needsEscape[b[i]] && b[i] < 0x80 {
		dst[w] = b[i]
		i, w = i+1, w+1
	}
	return i, w
}

// skipUnchecked moves past the object or array at d.pos by matching its brackets and quotes
// only, checking nothing else, and reports whether it found the end. It is for a value that
// is checked later, when it is read (the member "local" of the completion operations, see
// decodedBodies.check): reading it then is the only full pass over it. On malformed input the
// end it finds may be wrong; the reader then fails, and the check reports the real error.
func (d *decoder) skipUnchecked() bool {
	b, start := d.data, d.pos
	depth := 0
	for i := start; i < len(b); i++ {
		switch b[i] {
		case '"':
			d.pos = i
			d.scanTrustedString()
			if d.pos > len(b) {
				d.pos = start // no end: d is left where it was
				return false
			}
			i = d.pos - 1
		case '{', '[':
			depth++
		case '}', ']':
			if depth--; depth == 0 {
				d.pos = i + 1
				return true
			}
		}
	}
	d.pos = start
	return false
}

// scanTrustedString moves past the string at d.pos in data known to be valid, reporting whether
// it has escapes: it only looks for the closing quote.
func (d *decoder) scanTrustedString() (escaped bool) {
	b := d.data
	i := d.pos + 1
	for {
		for ; i+8 <= len(b); i += 8 {
			x := load64(b, i)
			q := x ^ (lsb * '"')
			e := x ^ (lsb * '\\')
			if m := ((q-lsb)&^q | (e-lsb)&^e) & msb; m != 0 {
				i += bits.TrailingZeros64(m) >> 3
				break
			}
		}
		for i < len(b) && b[i] != '"' && b[i] != '\\' {
			i++
		}
		if i >= len(b) || b[i] == '"' {
			d.pos = i + 1
			return escaped
		}
		escaped = true
		i += 2 // the escaped byte is never the closing quote (nor a backslash that starts an escape)
	}
}

// store64 writes x to the 8 bytes of b at i, little-endian (the compiler makes it one store).
func store64(b []byte, i int, x uint64) {
	b = b[i : i+8 : i+8]
	b[0], b[1], b[2], b[3] = byte(x), byte(x>>8), byte(x>>16), byte(x>>24)
	b[4], b[5], b[6], b[7] = byte(x>>32), byte(x>>40), byte(x>>48), byte(x>>56)
}

// isInteger reports whether a number literal has neither fraction nor exponent.
func isInteger(lit string) bool { return strings.IndexAny(lit, ".eE") < 0 }
