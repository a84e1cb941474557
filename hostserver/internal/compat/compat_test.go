package compat

import (
	"testing"

	"github.com/keyclaim/keyclaim/core"
)

func TestModeFor(t *testing.T) {
	def, err := New(core.ModeMSC4072, DefaultLegacyUserAgents)
	if err != nil {
		t.Fatal(err)
	}
	off, err := New(core.ModeMSC4072, "")
	if err != nil {
		t.Fatal(err)
	}
	legacy, err := New(core.ModeLegacy, DefaultLegacyUserAgents)
	if err != nil {
		t.Fatal(err)
	}
	custom, err := New(core.ModeMSC4072, `(?i)mautrix-go|^nio\b`)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		p    Policy
		ua   string
		want core.Mode
	}{
		{def, "nio", core.ModeLegacy}, // what matrix-nio 0.25 and 0.26 send
		{def, "nio/0.27", core.ModeLegacy},
		{def, "nio 0.27", core.ModeLegacy},
		{def, "", core.ModeMSC4072},
		{def, "nionly/1.0", core.ModeMSC4072},
		{def, "Mozilla/5.0 nio", core.ModeMSC4072}, // anchored: only a User-Agent that starts with nio
		{def, "NIO", core.ModeMSC4072},             // case-sensitive, as nio writes it
		{def, "mautrix-go/0.33.0 go1.25", core.ModeMSC4072},
		{def, "Element/1.11 matrix-sdk-crypto", core.ModeMSC4072},
		{off, "nio", core.ModeMSC4072},
		{legacy, "anything", core.ModeLegacy},
		{legacy, "nio", core.ModeLegacy},
		{custom, "MAUTRIX-GO/1", core.ModeLegacy},
		{custom, "nio", core.ModeLegacy},
		{custom, "Element", core.ModeMSC4072},
	}
	for _, c := range cases {
		if got := c.p.ModeFor(c.ua); got != c.want {
			t.Errorf("%s with %q: %s, want %s", c.p.Describe(), c.ua, got, c.want)
		}
	}
}

func TestNew(t *testing.T) {
	if _, err := New(core.ModeMSC4072, "(nio"); err == nil {
		t.Error("an invalid regular expression was accepted")
	}
	p, err := New("", "")
	if err != nil || p.Mode != core.ModeMSC4072 || p.Expr() != "" {
		t.Errorf("New(\"\", \"\") = %+v, %v", p, err)
	}
	if p, _ := New(core.ModeMSC4072, DefaultLegacyUserAgents); p.Expr() != DefaultLegacyUserAgents {
		t.Errorf("Expr() = %q", p.Expr())
	}
}
