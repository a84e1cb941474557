package proxy

import (
	"encoding/json"
	"slices"
	"strings"

	"github.com/keyclaim/keyclaim/core"
)

// tally counts, for metrics, the devices completion filled with {} and the entries of the
// upstream's answer it dropped (see [Observation]). answer is the upstream's 2xx body that
// [core.CompleteUpstream] accepted, so it is valid JSON; tally walks it once more with a
// scanner that builds no tree and copies nothing but escaped keys, at a fraction of
// completion's cost. Should the walk meet anything unexpected, Dropped is 0 and Filled counts
// every device answered {}.
func tally(resp *core.ClaimResponse, answer []byte) (filled, dropped int) {
	legacy := resp.Mode == core.ModeLegacy
	for i := range resp.Users {
		u := &resp.Users[i]
		if u.Failed || legacy {
			continue
		}
		for j := range u.Devices {
			if !u.Devices[j].Claimed {
				filled++
			}
		}
	}
	t := tallier{resp: resp, legacy: legacy, s: scanner{b: answer}}
	if !t.walk() {
		return filled, 0
	}
	return filled - t.answeredEmpty, t.dropped
}

// tallier walks an upstream answer beside its completion.
type tallier struct {
	resp          *core.ClaimResponse
	legacy        bool
	s             scanner
	dropped       int
	answeredEmpty int // requested, unclaimed devices the upstream answered {} itself
}

func (t *tallier) walk() bool {
	s := &t.s
	if s.ws() != '{' {
		return false
	}
	return s.members(func(key []byte) bool {
		switch {
		case string(key) == "one_time_keys" && s.ws() == '{':
			return s.members(t.user)
		case string(key) == "failures" && s.ws() == '{':
			return s.members(func(server []byte) bool {
				if !t.failed(server) {
					t.dropped++
				}
				return s.skip()
			})
		}
		return s.skip()
	})
}

// failed reports whether server is in the completed answer's failures (sorted by server: a
// search, as an answer may list thousands).
func (t *tallier) failed(server []byte) bool {
	_, ok := slices.BinarySearchFunc(t.resp.Failures, string(server), func(f core.ServerFailure, s string) int {
		return strings.Compare(string(f.Server), s)
	})
	return ok
}

// user walks one member of one_time_keys.
func (t *tallier) user(key []byte) bool {
	s := &t.s
	ui, ok := findUser(t.resp.Users, key)
	if !ok || t.resp.Users[ui].Failed || s.ws() != '{' {
		t.dropped++
		return s.skip()
	}
	u := &t.resp.Users[ui]
	return s.members(func(dev []byte) bool {
		di, ok := findDevice(u.Devices, dev)
		if !ok || s.ws() != '{' {
			t.dropped++
			return s.skip()
		}
		d := &u.Devices[di]
		if s.emptyObject() {
			if !d.Claimed && !t.legacy {
				t.answeredEmpty++
			}
			return true
		}
		return s.members(func(keyID []byte) bool {
			if !d.Claimed || string(keyID) != string(d.Key.KeyID) {
				t.dropped++
			}
			return s.skip()
		})
	})
}

func findUser(users []core.UserResult, id []byte) (int, bool) {
	lo, hi := 0, len(users)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if string(users[m].User) < string(id) {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo, lo < len(users) && string(users[lo].User) == string(id)
}

func findDevice(devices []core.DeviceResult, id []byte) (int, bool) {
	lo, hi := 0, len(devices)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if string(devices[m].Device) < string(id) {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo, lo < len(devices) && string(devices[lo].Device) == string(id)
}

// scanner walks JSON that is known to be valid. Every method checks its bounds and reports
// false on anything unexpected rather than trusting the input.
type scanner struct {
	b []byte
	i int
}

// ws skips white space and returns the next byte (0 at the end).
func (s *scanner) ws() byte {
	for s.i < len(s.b) {
		switch c := s.b[s.i]; c {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return c
		}
	}
	return 0
}

// str reads a string at the current position. A string without escapes is returned as a view
// of the input, without copying; one with escapes is decoded into a new slice.
func (s *scanner) str() ([]byte, bool) {
	if s.ws() != '"' {
		return nil, false
	}
	start := s.i + 1
	escaped := false
	for j := start; j < len(s.b); j++ {
		switch s.b[j] {
		case '\\':
			escaped = true
			j++
		case '"':
			s.i = j + 1
			if !escaped {
				return s.b[start:j:j], true
			}
			var out string
			if err := json.Unmarshal(s.b[start-1:j+1], &out); err != nil {
				return nil, false
			}
			return []byte(out), true
		}
	}
	return nil, false
}

// emptyObject consumes {} (with any white space inside) and reports whether it was there; it
// consumes nothing otherwise.
func (s *scanner) emptyObject() bool {
	save := s.i
	if s.ws() == '{' {
		s.i++
		if s.ws() == '}' {
			s.i++
			return true
		}
	}
	s.i = save
	return false
}

// members walks the object at the current position, calling member with each key; member
// must consume the member's value.
func (s *scanner) members(member func(key []byte) bool) bool {
	if s.ws() != '{' {
		return false
	}
	s.i++
	if s.ws() == '}' {
		s.i++
		return true
	}
	for {
		key, ok := s.str()
		if !ok || s.ws() != ':' {
			return false
		}
		s.i++
		if !member(key) {
			return false
		}
		switch s.ws() {
		case ',':
			s.i++
		case '}':
			s.i++
			return true
		default:
			return false
		}
	}
}

// skip consumes one value of any kind.
func (s *scanner) skip() bool {
	switch c := s.ws(); c {
	case '"':
		_, ok := s.skipString()
		return ok
	case '{', '[':
		depth := 0
		for s.i < len(s.b) {
			switch s.b[s.i] {
			case '"':
				if _, ok := s.skipString(); !ok {
					return false
				}
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					s.i++
					return true
				}
			}
			s.i++
		}
		return false
	case 0:
		return false
	default: // a number or a literal: up to the next delimiter
		start := s.i
		for s.i < len(s.b) {
			switch s.b[s.i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return s.i > start
			}
			s.i++
		}
		return s.i > start
	}
}

// skipString consumes a string without decoding it.
func (s *scanner) skipString() (int, bool) {
	for j := s.i + 1; j < len(s.b); j++ {
		switch s.b[j] {
		case '\\':
			j++
		case '"':
			s.i = j + 1
			return j, true
		}
	}
	return 0, false
}
