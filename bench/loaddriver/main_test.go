package main

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"
)

func TestClaimBodyGroupsUsers(t *testing.T) {
	fl := fleet{runID: "x", n: 1000}
	for _, tc := range []struct{ first, size int }{{0, 1}, {7, 1}, {0, 10}, {990, 10}, {100, 100}, {0, 1000}} {
		body := claimBody(nil, fl, tc.first, tc.size)
		var req struct {
			OneTimeKeys map[string]map[string]string `json:"one_time_keys"`
		}
		if err := json.Unmarshal(body, &req); err != nil {
			t.Fatalf("first %d size %d: %v: %s", tc.first, tc.size, err, body)
		}
		n := 0
		for _, devs := range req.OneTimeKeys {
			n += len(devs)
		}
		// A user named twice would be a duplicate key, which the server rejects and
		// json.Unmarshal silently merges: the device count would still match, the user count not.
		if users := strings.Count(string(body), `":{"D`); n != tc.size || users != len(req.OneTimeKeys) {
			t.Errorf("first %d size %d: %d devices in %d users (%d user objects): %s", tc.first, tc.size, n, len(req.OneTimeKeys), users, body)
		}
	}
}

func TestUploadBodyIsValid(t *testing.T) {
	fl := fleet{runID: "x", n: 10}
	body := uploadBody(nil, rand.New(rand.NewPCG(1, 2)), fl, 3, 100)
	var up struct {
		OneTimeKeys  map[string]json.RawMessage `json:"one_time_keys"`
		FallbackKeys map[string]json.RawMessage `json:"fallback_keys"`
	}
	if err := json.Unmarshal(body, &up); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	if len(up.OneTimeKeys) != 100 || len(up.FallbackKeys) != 1 {
		t.Errorf("%d one-time keys and %d fallback keys", len(up.OneTimeKeys), len(up.FallbackKeys))
	}
	for id := range up.OneTimeKeys {
		if !strings.HasPrefix(id, algorithm+":") || len(id) != len(algorithm)+1+6 || id == fallbackKeyID {
			t.Errorf("key ID %q", id)
		}
	}
}

func TestPercentile(t *testing.T) {
	var lat []time.Duration
	for i := 1; i <= 100; i++ {
		lat = append(lat, time.Duration(i)*time.Millisecond)
	}
	if p := percentile(lat, 0.5); p != 50 {
		t.Errorf("p50 = %v", p)
	}
	if p := percentile(lat, 0.99); p != 99 {
		t.Errorf("p99 = %v", p)
	}
	if p := percentile(nil, 0.5); !math.IsNaN(p) {
		t.Errorf("p50 of nothing = %v", p)
	}
}

func TestCPUSeconds(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc")
	}
	s := &server{pid: os.Getpid()}
	before, err := s.cpuSeconds()
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(100 * time.Millisecond)
	x := 0
	for time.Now().Before(deadline) {
		x++
	}
	after, err := s.cpuSeconds()
	if err != nil {
		t.Fatal(err)
	}
	if after < before || after-before > 10 {
		t.Errorf("CPU seconds went from %v to %v", before, after)
	}
	_ = x
}

func TestParseFlags(t *testing.T) {
	if _, err := parseFlags([]string{}); err == nil {
		t.Error("no --server-binary accepted")
	}
	if _, err := parseFlags([]string{"--server-binary", "x", "--devices", "1500"}); err == nil {
		t.Error("--devices 1500 accepted with a largest size of 1000")
	}
	if _, err := parseFlags([]string{"--server-binary", "x", "--engine", "jit"}); err == nil {
		t.Error("--engine jit accepted")
	}
	o, err := parseFlags([]string{"--server-binary", "x", "--engine", "native,wasm"})
	if err != nil || len(o.engines) != 2 || len(o.sizes) != 4 || len(o.clients) != 2 {
		t.Errorf("defaults: %+v, %v", o, err)
	}
}

func TestRedactArgs(t *testing.T) {
	got := strings.Join(redactArgs([]string{"--server-binary", "x", "--db", "postgres://u:secret@h/db", "--db=postgres://u:secret@h/db"}), " ")
	if strings.Contains(got, "secret") {
		t.Errorf("redactArgs left the password: %s", got)
	}
}
