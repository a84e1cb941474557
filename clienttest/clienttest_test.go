//go:build realclient

// Package clienttest runs a real Matrix client's crypto library against the keyclaim server:
// matrix-sdk-crypto (Rust) as shipped to Element Web in the npm package
// @matrix-org/matrix-sdk-crypto-wasm drives dist/keyclaim-server over HTTP on loopback
// (e2e.mjs; see README.md). It needs Node.js and `npm ci` in this folder, hence the build tag:
//
//	make test-client
//	go test -tags realclient -count=1 ./clienttest/   # after make build and npm ci here
package clienttest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyclaim/keyclaim/internal/serverproc"
)

const (
	serverName = "client.test"
	sdkPackage = "@matrix-org/matrix-sdk-crypto-wasm"
	// scenarioTimeout bounds one run of e2e.mjs (it takes a few seconds).
	scenarioTimeout = 3 * time.Minute
	// readyTimeout bounds the server's start (the wasm engine compiles its module first).
	readyTimeout = 30 * time.Second
)

// The devices e2e.mjs uses; the token file names them all.
var devices = []struct{ localpart, deviceID string }{
	{"alice", "ALICEDEV"},
	{"alice", "ALICEPHONE"},
	{"bob", "BOBDEV"},
	{"carol", "CAROLDEV"},
	{"dave", "DAVEDEV"},
	{"erin", "ERINDEV"},
	{"frank", "FRANKDEV"},
}

const setupHelp = `run "make test-client" from the repository root (it builds the server, runs "npm ci" in clienttest/ and then this test), or by hand: make build && (cd clienttest && npm ci) && go test -tags realclient -count=1 ./clienttest/`

func TestRealClient(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node (Node.js 20 or later) is not on PATH: %v\nInstall Node.js, then %s", err, setupHelp)
	}
	out, err := exec.Command(node, "--version").Output()
	if err != nil {
		t.Fatalf("%s --version: %v", node, err)
	}
	t.Logf("node %s", strings.TrimSpace(string(out)))
	pkg := filepath.Join("node_modules", filepath.FromSlash(sdkPackage), "package.json")
	raw, err := os.ReadFile(pkg)
	if err != nil {
		t.Fatalf("%s is not installed in clienttest/node_modules (%v)\n%s", sdkPackage, err, setupHelp)
	}
	var meta struct{ Version string }
	if err := json.Unmarshal(raw, &meta); err != nil {
		t.Fatalf("%s: %v", pkg, err)
	}
	want := pinnedVersion(t)
	if meta.Version != want {
		t.Fatalf("clienttest/node_modules has %s %s, package.json pins %s: run \"npm ci\" in clienttest/", sdkPackage, meta.Version, want)
	}
	t.Logf("%s %s", sdkPackage, meta.Version)

	bin := serverBinary(t)
	for _, engine := range []string{"native", "wasm"} {
		t.Run(engine, func(t *testing.T) {
			base, tokens := startServer(t, bin, engine)
			runScenario(t, node, base, tokens)
		})
	}
}

// pinnedVersion is the exact SDK version package.json depends on.
func pinnedVersion(t *testing.T) string {
	t.Helper()
	raw, err := os.ReadFile("package.json")
	if err != nil {
		t.Fatal(err)
	}
	var p struct{ Dependencies map[string]string }
	if err := json.Unmarshal(raw, &p); err != nil {
		t.Fatalf("package.json: %v", err)
	}
	v := p.Dependencies[sdkPackage]
	if v == "" {
		t.Fatalf("package.json does not depend on %s", sdkPackage)
	}
	return v
}

// serverBinary is ../dist/keyclaim-server (KEYCLAIM_SERVER_BINARY overrides it), or, when that is
// absent, the server built into a temporary directory.
func serverBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("KEYCLAIM_SERVER_BINARY"); p != "" {
		abs, err := filepath.Abs(p)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("server binary %s (KEYCLAIM_SERVER_BINARY)", abs)
		return abs
	}
	dist, err := filepath.Abs(filepath.Join("..", "dist", "keyclaim-server"))
	if err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(dist); err == nil && !st.IsDir() {
		t.Logf("server binary %s (built %s)", dist, st.ModTime().Format(time.RFC3339))
		return dist
	}
	bin := filepath.Join(t.TempDir(), "keyclaim-server")
	t.Logf("%s not found: building ./cmd/keyclaim-server into %s", dist, bin)
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/keyclaim-server")
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/keyclaim-server: %v\n%s\n(make build builds dist/keyclaim-server and the embedded WebAssembly module it needs)", err, out)
	}
	return bin
}

// startServer starts the server on a free loopback port with a fresh SQLite store and a token
// file for the test's devices, waits for /readyz, and stops it (SIGTERM, then kill) at cleanup.
// It returns the base URL and the token file's path.
func startServer(t *testing.T, bin, engine string) (string, string) {
	t.Helper()
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens.json")
	writeTokens(t, tokens)
	args := []string{
		"--server-name", serverName,
		"--db", "sqlite:" + filepath.Join(dir, "keys.db"),
		"--tokens", tokens,
		"--mode", "msc4072",
		"--engine", engine,
		"--federation=false",
		"--signing-key", filepath.Join(dir, "signing.key"),
		"--log-level", "info",
	}
	if engine == "wasm" {
		if mod, err := filepath.Abs(filepath.Join("..", "dist", "keyclaim.wasm")); err == nil {
			if _, err := os.Stat(mod); err == nil {
				args = append(args, "--wasm-module", mod)
			} else {
				t.Logf("%s not found: the wasm engine uses the module embedded in the binary", mod)
			}
		}
	}
	// A free port can be taken by someone else between our probe and the server's listen:
	// try a few.
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		logPath := filepath.Join(dir, fmt.Sprintf("server-%d.log", attempt))
		base, err := launch(t, bin, args, logPath)
		if err == nil {
			return base, tokens
		}
		lastErr = err
		t.Logf("server start %d failed: %v", attempt+1, err)
	}
	t.Fatalf("the server did not start: %v", lastErr)
	return "", ""
}

// launch starts the server with the shared launcher (internal/serverproc) on a free loopback
// port and waits for /readyz; at cleanup it stops it (SIGTERM) and checks that it stopped
// cleanly and logged no errors.
func launch(t *testing.T, bin string, args []string, logPath string) (string, error) {
	proc, err := serverproc.Start(bin, args, logPath)
	if err != nil {
		return "", err
	}
	t.Logf("server pid %d: %s --listen %s %s", proc.PID, filepath.Base(bin), proc.Addr, strings.Join(args, " "))
	if err := proc.Ready(context.Background(), readyTimeout); err != nil {
		_ = proc.Kill()
		return "", err
	}
	t.Logf("server ready at %s", proc.Base)
	t.Cleanup(func() {
		if err := proc.Stop(15 * time.Second); err != nil {
			t.Errorf("the server did not stop cleanly on SIGTERM: %v", err)
		}
		log, _ := os.ReadFile(logPath)
		if n := bytes.Count(log, []byte("level=ERROR")); n > 0 {
			t.Errorf("the server logged %d errors", n)
		}
		if t.Failed() {
			t.Logf("server log (last lines of %s):\n%s", logPath, tail(logPath, 60))
		}
	})
	return proc.Base, nil
}

func writeTokens(t *testing.T, path string) {
	t.Helper()
	type who struct {
		UserID   string `json:"user_id"`
		DeviceID string `json:"device_id"`
	}
	m := map[string]who{}
	for _, d := range devices {
		b := make([]byte, 16)
		if _, err := rand.Read(b); err != nil {
			t.Fatal(err)
		}
		m["syt_"+d.localpart+"_"+hex.EncodeToString(b)] = who{"@" + d.localpart + ":" + serverName, d.deviceID}
	}
	raw, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
}

// runScenario runs e2e.mjs against the server, streaming its output through t.Log.
func runScenario(t *testing.T, node, base, tokens string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), scenarioTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "e2e.mjs", base, tokens)
	cmd.WaitDelay = 5 * time.Second
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start node e2e.mjs: %v", err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failLines []string
	stream := func(r io.Reader, prefix string) {
		defer wg.Done()
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64*1024), 4*1024*1024)
		for sc.Scan() {
			line := sc.Text()
			t.Log(prefix + line)
			if strings.HasPrefix(line, "FAIL:") {
				mu.Lock()
				failLines = append(failLines, line)
				mu.Unlock()
			}
		}
	}
	wg.Add(2)
	go stream(stdout, "e2e: ")
	go stream(stderr, "e2e! ")
	wg.Wait()
	err = cmd.Wait()
	elapsed := time.Since(start).Round(10 * time.Millisecond)
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatalf("node e2e.mjs did not finish within %s", scenarioTimeout)
	}
	if err != nil {
		t.Fatalf("node e2e.mjs failed after %s (%v): %s", elapsed, err, strings.Join(failLines, " | "))
	}
	t.Logf("node e2e.mjs passed in %s", elapsed)
}

// tail is the last n lines of a file, for failure messages.
func tail(path string, n int) string {
	raw, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(raw), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
