// Package compat is the client compatibility policy of the keys server and of proxy mode
// (issue 15): which shape a claim answer takes for the client that asked.
//
// The server's --mode is the shape of every answer, except that in msc4072 mode a client whose
// User-Agent matches --legacy-user-agents is answered legacy-shaped: devices without a key and
// users none of whose devices has a key are left out, as spec v1.19 servers answer. Some
// clients crash on the {} entries of complete answers (matrix-nio: README.md, "Client
// compatibility"); no opt-in exists in the spec, so the User-Agent is the only sign a server
// has. Everything else about the answer (validation, failures, sanitising, which keys are
// claimed) is the same for every client.
package compat

import (
	"fmt"
	"regexp"

	"github.com/keyclaim/keyclaim/core"
)

// DefaultLegacyUserAgents is the default of --legacy-user-agents: matrix-nio, which sends
// "User-Agent: nio" (nio/http.py, USER_AGENT) and crashes on {} in a claim answer (issue 15).
// The word boundary lets a later "nio/0.26" match too, but not another library whose name only
// starts with the letters (such as "nionly").
const DefaultLegacyUserAgents = `^nio\b`

// Policy decides the shape of client claim answers.
type Policy struct {
	// Mode is the server's --mode: the shape of every answer, unless LegacyUserAgents matches.
	Mode core.Mode
	// LegacyUserAgents matches the User-Agent of clients answered legacy-shaped in msc4072 mode;
	// nil matches nothing.
	LegacyUserAgents *regexp.Regexp
}

// New returns the policy of mode and the regular expression expr (Go's RE2 syntax, matched
// anywhere in the User-Agent unless anchored); an empty expr matches no client.
func New(mode core.Mode, expr string) (Policy, error) {
	p := Policy{Mode: mode}
	if p.Mode == "" {
		p.Mode = core.ModeMSC4072
	}
	if expr == "" {
		return p, nil
	}
	re, err := regexp.Compile(expr)
	if err != nil {
		return Policy{}, fmt.Errorf("--legacy-user-agents %q is not a regular expression: %w", expr, err)
	}
	p.LegacyUserAgents = re
	return p, nil
}

// ModeFor returns the shape of the answer to a client with this User-Agent: legacy when the
// server's mode is msc4072 and the User-Agent matches, the server's mode otherwise.
func (p Policy) ModeFor(userAgent string) core.Mode {
	if p.Mode == core.ModeMSC4072 && p.LegacyUserAgents != nil && p.LegacyUserAgents.MatchString(userAgent) {
		return core.ModeLegacy
	}
	return p.Mode
}

// Describe says in words what the policy does, for the start-up log.
func (p Policy) Describe() string {
	switch {
	case p.Mode == core.ModeLegacy:
		return "every client claim answer is legacy-shaped (--mode legacy)"
	case p.LegacyUserAgents == nil:
		return "every client claim answer is complete (msc4072); no User-Agent is answered legacy-shaped (--legacy-user-agents is empty)"
	}
	return fmt.Sprintf("client claim answers are complete (msc4072), except for clients whose User-Agent matches the regular expression %s, which are answered legacy-shaped", p.LegacyUserAgents.String())
}

// Expr returns the regular expression of LegacyUserAgents, "" when there is none.
func (p Policy) Expr() string {
	if p.LegacyUserAgents == nil {
		return ""
	}
	return p.LegacyUserAgents.String()
}
