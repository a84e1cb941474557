package hostserver_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyclaim/keyclaim/hostserver"
)

// TestProxyMode runs the server binary's proxy mode (--upstream) in front of a fake upstream
// homeserver with today's spec behaviour: the claim answer comes back completed, the client's
// Authorization header reaches the upstream, and no token file, database or signing key is needed.
func TestProxyMode(t *testing.T) {
	var gotAuth string
	fakeHomeserver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotAuth = r.Header.Get("Authorization")
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"failures":{},"one_time_keys":{"@bob:hs1.test":{"B1":{"signed_curve25519:K":{"key":"k"}},"JUNK":{}}}}`)
	}))
	defer fakeHomeserver.Close()

	// No token file, database or signing key: proxy mode needs none.
	base := startProxyMode(t, "--upstream", fakeHomeserver.URL, "--server-name", "hs1.test", "--listen", "127.0.0.1:0")
	req, _ := http.NewRequest(http.MethodPost, base+"/_matrix/client/v3/keys/claim",
		strings.NewReader(`{"one_time_keys":{"@bob:hs1.test":{"B1":"signed_curve25519","B2":"signed_curve25519"}}}`))
	req.Header.Set("Authorization", "Bearer client-token")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	want := `{"failures":{},"one_time_keys":{"@bob:hs1.test":{"B1":{"signed_curve25519:K":{"key":"k"}},"B2":{}}}}`
	if resp.StatusCode != 200 || string(body) != want {
		t.Fatalf("got %d %s\nwant 200 %s", resp.StatusCode, body, want)
	}
	if gotAuth != "Bearer client-token" {
		t.Errorf("upstream got Authorization %q, want the client's own", gotAuth)
	}
	for path, status := range map[string]int{"/healthz": 200, "/readyz": 200, "/metrics": 200, "/_matrix/client/v3/keys/upload": 404} {
		r, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		if r.StatusCode != status && !(path == "/_matrix/client/v3/keys/upload" && r.StatusCode == 405) {
			t.Errorf("GET %s = %d, want %d", path, r.StatusCode, status)
		}
	}
}

func TestProxyModeFlagsNeedUpstream(t *testing.T) {
	_, err := hostserver.LoadConfig([]string{"--upstream-passthrough", "--dev"}, func(string) (string, bool) { return "", false }, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "--upstream") {
		t.Fatalf("err = %v, want a message that --upstream is needed", err)
	}
}

// TestProxyModeUpstreamResponseBound checks that --upstream-max-response-bytes and
// --upstream-response-bytes-per-device reach the proxy: a fake upstream homeserver answers a
// claim of 2 devices with a valid answer padded to the size the test asks for, and the bound is
// the floor plus the allowance of 2 devices (just the floor with an allowance of 0).
func TestProxyModeUpstreamResponseBound(t *testing.T) {
	var size atomic.Int64
	fakeHomeserver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		answer := `{"failures":{},"one_time_keys":{"@bob:hs1.test":{"B1":{"signed_curve25519:K":{"key":"k"}}}}}`
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, answer+strings.Repeat(" ", int(size.Load())-len(answer)))
	}))
	defer fakeHomeserver.Close()
	claim := func(base string) (int, string) {
		t.Helper()
		resp, err := http.Post(base+"/_matrix/client/v3/keys/claim", "application/json",
			strings.NewReader(`{"one_time_keys":{"@bob:hs1.test":{"B1":"signed_curve25519","B2":"signed_curve25519"}}}`))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	for _, c := range []struct {
		perDevice string
		bound     int64
	}{{"100", 1200}, {"0", 1000}} {
		t.Run("per device "+c.perDevice, func(t *testing.T) {
			base := startProxyMode(t, "--upstream", fakeHomeserver.URL, "--server-name", "hs1.test", "--listen", "127.0.0.1:0",
				"--upstream-max-response-bytes", "1000", "--upstream-response-bytes-per-device", c.perDevice)
			size.Store(c.bound)
			if status, body := claim(base); status != 200 || !strings.Contains(body, `"B2":{}`) {
				t.Errorf("an answer of %d bytes, the bound: got %d %s", c.bound, status, body)
			}
			size.Store(c.bound + 1)
			want := `{"errcode":"M_UNKNOWN","error":"upstream answer too large: the upstream homeserver's answer is larger than ` + strconv.FormatInt(c.bound, 10) + ` bytes"}`
			if status, body := claim(base); status != 502 || body != want {
				t.Errorf("an answer of %d bytes: got %d %s\nwant 502 %s", c.bound+1, status, body, want)
			}
		})
	}
}

// startProxyMode starts the server with the command-line arguments args and returns its base URL.
func startProxyMode(t *testing.T, args ...string) string {
	t.Helper()
	cfg, err := hostserver.LoadConfig(args, func(string) (string, bool) { return "", false }, io.Discard)
	if err != nil {
		t.Fatalf("configuration %q: %v", args, err)
	}
	cfg.Logger = slog.New(slog.DiscardHandler)
	srv, err := hostserver.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background(), ln); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return "http://" + ln.Addr().String()
}
