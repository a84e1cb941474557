package core

import (
	"strings"
	"unicode/utf8"
)

// UserID is a Matrix user ID, "@localpart:server_name" (spec appendices, "User Identifiers").
// A UserID obtained from [ParseUserID] is valid; the zero value is not.
type UserID string

// ServerName is a Matrix server name: a DNS name, an IPv4 literal or a bracketed IPv6 literal,
// with an optional port (spec appendices, "Server Name"). A valid server name need not be
// reachable as written: the grammar allows ports over 65535 (see [ParseServerName]).
type ServerName string

// DeviceID is a device ID: any non-empty string.
type DeviceID string

// Algorithm is a key algorithm such as "signed_curve25519": any non-empty string.
type Algorithm string

// KeyID is a key ID "algorithm:name", such as "signed_curve25519:AAAAHQ".
type KeyID string

// MaxUserIDBytes is the spec's limit on the length of a user ID, sigil and domain included.
const MaxUserIDBytes = 255

// IDCause is why an identifier failed validation. The set is closed: every failure is exactly
// one of the constants below.
type IDCause uint8

// The causes of identifier validation failures.
const (
	CauseEmpty            IDCause = iota + 1 // the identifier is empty
	CauseTooLong                             // a user ID over 255 bytes
	CauseMissingSigil                        // a user ID not starting with '@'
	CauseMissingColon                        // a user ID or key ID without ':'
	CauseInvalidLocalpart                    // a localpart with NUL, a surrogate or invalid UTF-8
	CauseEmptyHost                           // a server name with an empty host
	CauseInvalidHost                         // a DNS name with a character outside [A-Za-z0-9.-]
	CauseHostTooLong                         // a DNS name over 255 characters
	// Deprecated: never returned. By the spec grammar a dotted quad with a part over 255 is a
	// DNS name (999.1.1.1 is valid); the constant stays so that the others keep their values.
	CauseInvalidIPv4
	CauseInvalidIPv6    // a bracketed literal that is not an IPv6 address
	CauseInvalidPort    // a port that is not 1 to 5 digits
	CauseEmptyAlgorithm // a key ID with an empty algorithm
	CauseEmptyKeyName   // a key ID with an empty name
)

var causeText = [...]string{
	CauseEmpty:            "is empty",
	CauseTooLong:          "is longer than 255 bytes",
	CauseMissingSigil:     "does not start with '@'",
	CauseMissingColon:     "has no ':'",
	CauseInvalidLocalpart: "has a localpart with NUL, a surrogate or invalid UTF-8",
	CauseEmptyHost:        "has an empty server name",
	CauseInvalidHost:      "has a server name with a character outside A-Z, a-z, 0-9, '-' and '.'",
	CauseHostTooLong:      "has a DNS name longer than 255 characters",
	CauseInvalidIPv4:      "has an IPv4 address with a part over 255",
	CauseInvalidIPv6:      "has an invalid IPv6 address",
	CauseInvalidPort:      "has a port that is not 1 to 5 digits",
	CauseEmptyAlgorithm:   "has an empty algorithm",
	CauseEmptyKeyName:     "has an empty key name",
}

// String describes the cause as a predicate of the identifier, e.g. "has no ':'".
func (c IDCause) String() string {
	if int(c) < len(causeText) && causeText[c] != "" {
		return causeText[c]
	}
	return "is invalid"
}

// IDError is an identifier validation failure: which kind of identifier, the value, and the cause.
type IDError struct {
	Kind  string // "user ID", "server name" or "key ID"
	Value string
	Cause IDCause
}

// Error returns e.g. `user ID "alice" does not start with '@'`.
func (e *IDError) Error() string { return e.Kind + " " + quote(e.Value) + " " + e.Cause.String() }

// ParseUserID validates s as a user ID. Historical localparts are accepted as the spec says they
// MUST be: any code points except ':' and NUL, the empty localpart included. The server name is
// validated with [ParseServerName] and the whole ID is limited to 255 bytes.
func ParseUserID(s string) (UserID, error) {
	if s == "" {
		return "", &IDError{"user ID", s, CauseEmpty}
	}
	if s[0] != '@' {
		return "", &IDError{"user ID", s, CauseMissingSigil}
	}
	if len(s) > MaxUserIDBytes {
		return "", &IDError{"user ID", s, CauseTooLong}
	}
	colon := strings.IndexByte(s, ':')
	if colon < 0 {
		return "", &IDError{"user ID", s, CauseMissingColon}
	}
	local := s[1:colon]
	if strings.IndexByte(local, 0) >= 0 || !utf8.ValidString(local) {
		// utf8.ValidString rejects surrogate code points encoded in UTF-8.
		return "", &IDError{"user ID", s, CauseInvalidLocalpart}
	}
	if cause := validateServerName(s[colon+1:]); cause != 0 {
		return "", &IDError{"user ID", s, cause}
	}
	return UserID(s), nil
}

// Localpart returns the part between '@' and the first ':'.
func (u UserID) Localpart() string {
	s := string(u)
	if i := strings.IndexByte(s, ':'); i > 0 {
		return s[1:i]
	}
	return ""
}

// Server returns the server name of the user ID, everything after the first ':'.
func (u UserID) Server() ServerName {
	s := string(u)
	if i := strings.IndexByte(s, ':'); i >= 0 {
		return ServerName(s[i+1:])
	}
	return ""
}

// ParseServerName validates s as a server name by the spec's grammar: hostname [":" port], where
// port is 1 to 5 digits of any value (65536, 99999 and 0 included) and hostname is a bracketed
// IPv6 literal (RFC 3513, as the appendix requires) or a DNS name of 1 to 255 characters
// [A-Za-z0-9.-]. An IPv4 literal is a DNS name by that grammar, so 999.1.1.1, not an IPv4
// address, is still a valid server name. Whether a name can be connected to (a port within
// 1-65535) is for server discovery to judge, not this grammar. Server names are case-sensitive
// and are not normalised.
func ParseServerName(s string) (ServerName, error) {
	if cause := validateServerName(s); cause != 0 {
		return "", &IDError{"server name", s, cause}
	}
	return ServerName(s), nil
}

func validateServerName(s string) IDCause {
	if s == "" {
		return CauseEmptyHost
	}
	host, port := s, ""
	if s[0] == '[' {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return CauseInvalidIPv6
		}
		host, port = s[:end+1], s[end+1:]
		if port != "" {
			if port[0] != ':' {
				return CauseInvalidIPv6
			}
			port = port[1:]
			if cause := validatePort(port); cause != 0 {
				return cause
			}
		}
		if !validIPv6(host[1 : len(host)-1]) {
			return CauseInvalidIPv6
		}
		return 0
	}
	if i := strings.IndexByte(s, ':'); i >= 0 {
		host = s[:i]
		if cause := validatePort(s[i+1:]); cause != 0 {
			return cause
		}
	}
	if host == "" {
		return CauseEmptyHost
	}
	// IPv4address (1*3DIGIT "." ... ) is a subset of dns-name, so a dotted quad needs no check of
	// its own: one with a part over 255 is not an IPv4 literal, but it is still a dns-name.
	if len(host) > 255 {
		return CauseHostTooLong
	}
	for i := 0; i < len(host); i++ {
		c := host[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return CauseInvalidHost
		}
	}
	return 0
}

// validatePort checks port = 1*5DIGIT. The grammar sets no range: 0 and 65536-99999 are valid
// in a server name, though no connection can be made to them.
func validatePort(p string) IDCause {
	if len(p) == 0 || len(p) > 5 {
		return CauseInvalidPort
	}
	for i := 0; i < len(p); i++ {
		if p[i] < '0' || p[i] > '9' {
			return CauseInvalidPort
		}
	}
	return 0
}

// isDottedQuadShape reports whether h matches 1*3DIGIT "." 1*3DIGIT "." 1*3DIGIT "." 1*3DIGIT.
func isDottedQuadShape(h string) bool {
	parts, digits := 1, 0
	for i := 0; i < len(h); i++ {
		switch c := h[i]; {
		case c >= '0' && c <= '9':
			digits++
			if digits > 3 {
				return false
			}
		case c == '.':
			if digits == 0 {
				return false
			}
			parts, digits = parts+1, 0
		default:
			return false
		}
	}
	return parts == 4 && digits > 0
}

func validIPv4(h string) bool {
	n := 0
	for i := 0; i <= len(h); i++ {
		if i == len(h) || h[i] == '.' {
			if n > 255 {
				return false
			}
			n = 0
			continue
		}
		n = n*10 + int(h[i]-'0')
	}
	return true
}

// validIPv6 checks an IPv6 literal per RFC 3513 section 2.2: eight groups of 1-4 hex digits, "::"
// at most once standing for one or more zero groups, and optionally a trailing dotted-quad IPv4
// address standing for the last two groups.
func validIPv6(s string) bool {
	if len(s) < 2 || len(s) > 45 {
		return false
	}
	groups, double := 0, false
	i := 0
	if strings.HasPrefix(s, "::") {
		double, i = true, 2
		if i == len(s) {
			return true
		}
	} else if s[0] == ':' {
		return false
	}
	for i < len(s) {
		// An embedded IPv4 address must be the last thing.
		j := i
		for j < len(s) && s[j] != ':' {
			j++
		}
		part := s[i:j]
		if strings.IndexByte(part, '.') >= 0 {
			if j != len(s) || !isDottedQuadShape(part) || !validIPv4(part) {
				return false
			}
			groups += 2
			break
		}
		if len(part) == 0 || len(part) > 4 {
			return false
		}
		for k := 0; k < len(part); k++ {
			c := part[k]
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
				return false
			}
		}
		groups++
		if j == len(s) {
			break
		}
		// s[j] == ':'
		if j+1 < len(s) && s[j+1] == ':' {
			if double {
				return false
			}
			double = true
			i = j + 2
			if i == len(s) {
				break
			}
			continue
		}
		if j+1 == len(s) {
			return false // trailing single ':'
		}
		i = j + 1
	}
	if double {
		return groups <= 7
	}
	return groups == 8
}

// ParseKeyID validates s as a key ID "algorithm:name" with both parts non-empty.
func ParseKeyID(s string) (KeyID, error) {
	i := strings.IndexByte(s, ':')
	switch {
	case s == "":
		return "", &IDError{"key ID", s, CauseEmpty}
	case i < 0:
		return "", &IDError{"key ID", s, CauseMissingColon}
	case i == 0:
		return "", &IDError{"key ID", s, CauseEmptyAlgorithm}
	case i == len(s)-1:
		return "", &IDError{"key ID", s, CauseEmptyKeyName}
	}
	return KeyID(s), nil
}

// Algorithm returns the part before the first ':'.
func (k KeyID) Algorithm() Algorithm {
	s := string(k)
	if i := strings.IndexByte(s, ':'); i >= 0 {
		return Algorithm(s[:i])
	}
	return ""
}

// Name returns the part after the first ':'.
func (k KeyID) Name() string {
	s := string(k)
	if i := strings.IndexByte(s, ':'); i >= 0 {
		return s[i+1:]
	}
	return ""
}
