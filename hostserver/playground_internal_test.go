package hostserver

import (
	"net"
	"strings"
	"testing"
)

func FuzzIsLoopbackHost(f *testing.F) {
	for _, s := range []string{"localhost", "localhost:8008", "127.0.0.1", "[::1]:80", "::1", "example.org", "127.0.0.1.nip.io", "[::ffff:127.0.0.1]", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, host string) {
		if !isLoopbackHost(host) {
			return
		}
		h := host
		if hh, _, err := net.SplitHostPort(host); err == nil {
			h = hh
		}
		h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
		if ip := net.ParseIP(h); !strings.EqualFold(h, "localhost") && (ip == nil || !ip.IsLoopback()) {
			t.Errorf("isLoopbackHost(%q) = true for a host that is not loopback", host)
		}
	})
}

func TestIsLoopback(t *testing.T) {
	for host, want := range map[string]bool{
		"localhost": true, "LocalHost:1": true, "127.0.0.1": true, "127.9.9.9:80": true, "[::1]:8008": true, "::1": true,
		"example.org": false, "127.0.0.1.nip.io": false, "localhost.example": false, "10.0.0.1": false, "": false,
	} {
		if got := isLoopbackHost(host); got != want {
			t.Errorf("isLoopbackHost(%q) = %v", host, got)
		}
	}
	for addr, want := range map[string]bool{"127.0.0.1:5": true, "[::1]:5": true, "192.0.2.1:5": false, "garbage": false} {
		if got := isLoopbackAddr(addr); got != want {
			t.Errorf("isLoopbackAddr(%q) = %v", addr, got)
		}
	}
}
