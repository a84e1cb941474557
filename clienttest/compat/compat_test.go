//go:build compat

// Package compat is the client compatibility matrix: real Matrix client libraries drive
// dist/keyclaim-server over HTTP on loopback in each server configuration, and the test records
// what each library does with the answers (README.md here; make test-compat).
//
//	make test-compat
//	go test -tags compat -count=1 -v ./clienttest/compat/   # after make test-compat installed the libraries
package compat

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	serverName = "compat.test"
	aliceUser  = "@alice:" + serverName
	bobUser    = "@bob:" + serverName
	drainToken = "syt_drain_compat"
	// harnessTimeout bounds one library's run; each harness also bounds each of its steps
	// (stepTimeout in the harnesses, 20 s) and reports a step that did not finish as a hang.
	harnessTimeout = 90 * time.Second
	readyTimeout   = 30 * time.Second
)

// bobDevices are the claim targets, named by what keys they have at the time of the claim.
// The names sort so that the devices without a key come first in the server's (sorted) answer.
var bobDevices = []string{"DEVKEYSONLY", "EXHAUSTED", "FALLBACKONLY", "KEYED"}

// withSession is what a library that handles every answer correctly ends up with: sessions
// with the device that has a one-time key and the one that has only a fallback key.
var withSession = []string{"FALLBACKONLY", "KEYED"}

// A library under test: how to run its harness (paths relative to the repository root).
type library struct {
	Name, Version string
	Command       []string
}

func libraries() []library {
	return []library{
		{"matrix-nio", "0.26.0", []string{"var/compat/nio-0.26.0/bin/python", "clienttest/compat/nio/harness.py"}},
		{"matrix-nio", "0.25.2", []string{"var/compat/nio-0.25.2/bin/python", "clienttest/compat/nio/harness.py"}},
		{"mautrix-python", "0.21.1", []string{"var/compat/mautrix-python/bin/python", "clienttest/compat/mautrixpy/harness.py"}},
		{"mautrix-go", "0.33.0", []string{"var/compat/bin/mautrixgo-harness"}},
		{"matrix-sdk-crypto-wasm", "18.9.0", []string{"node", "clienttest/compat/matrixsdk/harness.mjs"}},
	}
}

// A server configuration of the matrix.
type config struct {
	Key, Title string
	Args       []string
}

var configs = []config{
	{"default", "msc4072, default policy", []string{"--mode", "msc4072"}},
	{"policy-off", "msc4072, policy off", []string{"--mode", "msc4072", "--legacy-user-agents="}},
	{"legacy", "legacy mode", []string{"--mode", "legacy"}},
}

// result is what a harness prints on its last line, after "COMPAT-RESULT ".
type result struct {
	Library   string   `json:"library"`
	Version   string   `json:"version"`
	Olm       string   `json:"olm"`      // the Olm implementation under the library
	Fallback  string   `json:"fallback"` // "library": it uploads fallback keys itself; "harness": made with its Olm account
	Sessions  []string `json:"sessions"` // bob's devices the claiming machine has an Olm session with
	Decrypted []string `json:"decrypted"`
	Crash     string   `json:"crash"` // an exception/panic out of the library's code, with the step
	Hang      string   `json:"hang"`  // the step that did not finish in time
	Logs      []string `json:"logs"`  // every warning and error the library logged
}

// outcome is one cell of the matrix.
type outcome struct {
	result
	Used    map[string]int // one-time keys of each device used up by the claim
	Wasted  []string       // devices whose one-time key was used up without a session
	Claims  []string       // the claims as the stand-in saw them
	UA      string         // the User-Agent of the library's claim (what the policy reads)
	Seconds float64
}

func (o outcome) works() bool {
	return o.Crash == "" && o.Hang == "" && len(o.Wasted) == 0 &&
		slices.Equal(o.Sessions, withSession) && slices.Equal(o.Decrypted, withSession)
}

// expectation: what the matrix asserts. Under the default policy and in legacy mode every library
// must work. With the policy off, the libraries that crash on {} are expected to crash, exactly
// as measured, so that a fixed release shows up as a failing expectation to update.
type expectation struct {
	Crash  string   // substring of the crash; "" = must work
	Hang   string   // substring of the hang; "" = none
	Wasted []string // with Crash: the devices whose key is used up without a session
}

func expected(lib library, cfg config) expectation {
	if cfg.Key != "policy-off" {
		return expectation{}
	}
	switch lib.Name {
	case "matrix-nio":
		// _handle_key_claiming: next(iter({})) on DEVKEYSONLY, the first device of the
		// answer; the keys of the devices after it are gone, and no session is made. The
		// crash leaves the room marked as sharing a room key: the next room_send waits forever.
		return expectation{Crash: "StopIteration", Hang: "room_send 2", Wasted: []string{"KEYED"}}
	case "mautrix-python":
		// _create_outbound_sessions_locked: one_time_keys.popitem() on DEVKEYSONLY's {}.
		return expectation{Crash: "popitem(): dictionary is empty", Wasted: []string{"KEYED"}}
	}
	return expectation{}
}

func TestCompatibilityMatrix(t *testing.T) {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(root, "dist", "keyclaim-server")
	if p := os.Getenv("KEYCLAIM_SERVER_BINARY"); p != "" {
		bin = p
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("%s: %v (run make test-compat, which builds it)", bin, err)
	}
	libs := libraries()
	if only := os.Getenv("COMPAT_ONLY"); only != "" { // e.g. COMPAT_ONLY=mautrix-go while developing
		libs = slices.DeleteFunc(libs, func(l library) bool { return !strings.Contains(l.Name+" "+l.Version, only) })
	}
	for _, lib := range libs {
		exe := lib.Command[0]
		if !strings.Contains(exe, "/") {
			if _, err := exec.LookPath(exe); err != nil {
				t.Fatalf("%s: %s is not on PATH", lib.Name, exe)
			}
		} else if _, err := os.Stat(filepath.Join(root, exe)); err != nil {
			t.Fatalf("%s %s is not installed (%v): run make test-compat", lib.Name, lib.Version, err)
		}
	}

	cells := map[string]map[string]outcome{}
	for _, lib := range libs {
		id := lib.Name + " " + lib.Version
		cells[id] = map[string]outcome{}
		for _, cfg := range configs {
			t.Run(strings.ReplaceAll(id, " ", "_")+"/"+cfg.Key, func(t *testing.T) {
				o := runCell(t, root, bin, lib, cfg)
				cells[id][cfg.Key] = o
				check(t, lib, cfg, o)
			})
		}
	}
	table := render(libs, cells)
	t.Logf("\n%s", table)
	out := filepath.Join(root, "var", "compat", "matrix.md")
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err == nil {
		if err := os.WriteFile(out, []byte(table), 0o644); err == nil {
			t.Logf("written to %s", out)
		}
	}
}

func check(t *testing.T, lib library, cfg config, o outcome) {
	t.Helper()
	want := expected(lib, cfg)
	if o.Library != lib.Name || o.Version != lib.Version {
		t.Errorf("the harness reports %s %s, the matrix expects %s %s", o.Library, o.Version, lib.Name, lib.Version)
	}
	if want.Crash == "" {
		if !o.works() {
			t.Errorf("%s %s in %s must work: sessions %v, decrypted %v (want %v), crash %q, hang %q, keys wasted on %v",
				lib.Name, lib.Version, cfg.Title, o.Sessions, o.Decrypted, withSession, o.Crash, o.Hang, o.Wasted)
		}
		return
	}
	// The measured misbehaviour, asserted so that a change (a fixed release) is noticed.
	hangOK := o.Hang == "" && want.Hang == "" || want.Hang != "" && strings.Contains(o.Hang, want.Hang)
	if !strings.Contains(o.Crash, want.Crash) || !hangOK || len(o.Sessions) != 0 || !slices.Equal(o.Wasted, want.Wasted) {
		t.Errorf("%s %s in %s: expected (as measured before) a crash %q, hang %q, no session, keys wasted on %v; got crash %q, hang %q, sessions %v, wasted %v: update expected() and the README if the library changed",
			lib.Name, lib.Version, cfg.Title, want.Crash, want.Hang, want.Wasted, o.Crash, o.Hang, o.Sessions, o.Wasted)
	}
}

// runCell starts a fresh server with cfg, the stand-in in front of it, and the library's harness.
func runCell(t *testing.T, root, bin string, lib library, cfg config) outcome {
	dir := t.TempDir()
	tokens := map[string]who{drainToken: {"@drain:" + serverName, "DRAIN"}}
	add := func(user, dev string) {
		b := make([]byte, 12)
		_, _ = rand.Read(b)
		tokens["syt_"+strings.ToLower(dev)+"_"+hex.EncodeToString(b)] = who{user, dev}
	}
	add(aliceUser, "ALICE")
	for _, d := range bobDevices {
		add(bobUser, d)
	}
	tokenFile := filepath.Join(dir, "tokens.json")
	raw, _ := json.MarshalIndent(tokens, "", "  ")
	if err := os.WriteFile(tokenFile, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	upstream := startServer(t, bin, dir, tokenFile, cfg.Args)
	si := newStandin(t, upstream, tokens)

	ctx, cancel := context.WithTimeout(context.Background(), harnessTimeout)
	defer cancel()
	argv := append(slices.Clone(lib.Command), si.base, tokenFile)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	if strings.Contains(argv[0], "/") {
		cmd.Path = filepath.Join(root, argv[0])
	}
	cmd.Dir = root
	cmd.WaitDelay = 5 * time.Second
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %v: %v", argv, err)
	}
	var res *result
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 64*1024), 8*1024*1024)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "COMPAT-RESULT "); ok {
			res = new(result)
			if err := json.Unmarshal([]byte(rest), res); err != nil {
				t.Errorf("harness result: %v: %s", err, rest)
			}
			continue
		}
		t.Log(line)
	}
	waitErr := cmd.Wait()
	o := outcome{Seconds: time.Since(start).Seconds()}
	if ctx.Err() != nil {
		o.Library, o.Version = lib.Name, lib.Version
		o.Hang = fmt.Sprintf("the harness did not finish within %s", harnessTimeout)
	} else if res == nil {
		t.Errorf("the harness printed no COMPAT-RESULT line (%v); stderr:\n%s", waitErr, tailString(stderr.String(), 40))
		o.Library, o.Version = lib.Name, lib.Version
		o.Crash = fmt.Sprintf("the harness process died: %v", waitErr)
	} else {
		o.result = *res
		if waitErr != nil {
			t.Errorf("the harness exited with %v after its result; stderr:\n%s", waitErr, tailString(stderr.String(), 40))
		}
	}
	if stderr.Len() > 0 {
		t.Logf("harness stderr:\n%s", tailString(stderr.String(), 40))
	}
	sort.Strings(o.Sessions)
	sort.Strings(o.Decrypted)
	si.mu.Lock()
	before, after, claims, ua := si.before, si.after, slices.Clone(si.claims), si.claimUA
	si.mu.Unlock()
	if after == nil && before != nil {
		after = si.counts() // the harness died or hung before it said it had claimed
	}
	o.Claims, o.UA = claims, ua
	o.Used = map[string]int{}
	for _, d := range bobDevices {
		if n := before[d] - after[d]; n > 0 {
			o.Used[d] = n
			if !slices.Contains(o.Sessions, d) {
				o.Wasted = append(o.Wasted, d)
			}
		}
	}
	if before == nil {
		t.Errorf("the harness never reached /_compat/ready")
	}
	for _, c := range claims {
		t.Log("stand-in: " + c)
	}
	t.Logf("%s %s (%s), %s: sessions %v, decrypted %v, crash %q, hang %q, one-time keys used %v, wasted on %v, %d log lines, %.1fs",
		o.Library, o.Version, o.Olm, cfg.Title, o.Sessions, o.Decrypted, o.Crash, o.Hang, o.Used, o.Wasted, len(o.Logs), o.Seconds)
	for _, l := range o.Logs {
		t.Logf("  library log: %s", l)
	}
	return o
}

// startServer starts the keys server on a free loopback port with a fresh SQLite store and
// returns its URL; it is stopped (SIGTERM) at cleanup, and must not have logged an error.
func startServer(t *testing.T, bin, dir, tokens string, extra []string) string {
	t.Helper()
	for attempt := 0; ; attempt++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		logPath := filepath.Join(dir, fmt.Sprintf("server-%d.log", attempt))
		logFile, err := os.Create(logPath)
		if err != nil {
			t.Fatal(err)
		}
		args := append([]string{
			"--listen", addr, "--server-name", serverName,
			"--db", "sqlite:" + filepath.Join(dir, fmt.Sprintf("keys-%d.db", attempt)),
			"--tokens", tokens, "--federation=false",
			"--signing-key", filepath.Join(dir, "signing.key"),
		}, extra...)
		cmd := exec.Command(bin, args...)
		cmd.Stdout, cmd.Stderr = logFile, logFile
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		base := "http://" + addr
		if err := waitReady(base, exited); err != nil {
			_ = cmd.Process.Kill()
			logFile.Close()
			if attempt < 2 {
				t.Logf("server start %d failed (%v), retrying", attempt+1, err)
				continue
			}
			t.Fatalf("the server did not start: %v\n%s %s\n%s", err, bin, strings.Join(args, " "), readTail(logPath))
		}
		t.Cleanup(func() {
			defer logFile.Close()
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case err := <-exited:
				if err != nil {
					t.Errorf("the server did not stop cleanly: %v", err)
				}
			case <-time.After(15 * time.Second):
				_ = cmd.Process.Kill()
				t.Errorf("the server did not stop within 15 s of SIGTERM")
			}
			log, _ := os.ReadFile(logPath)
			if bytes.Contains(log, []byte("level=ERROR")) || t.Failed() {
				if bytes.Contains(log, []byte("level=ERROR")) {
					t.Errorf("the server logged an error")
				}
				t.Logf("server log:\n%s", readTail(logPath))
			}
		})
		return base
	}
}

func waitReady(base string, exited chan error) error {
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(readyTimeout)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			exited <- err
			return fmt.Errorf("exited: %v", err)
		default:
		}
		if resp, err := client.Get(base + "/readyz"); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("no 200 from /readyz within %s", readyTimeout)
}

func readTail(path string) string {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	return tailString(string(raw), 40)
}

func tailString(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// render is the summary table (Markdown), then each cell's detail.
func render(libs []library, cells map[string]map[string]outcome) string {
	var b strings.Builder
	b.WriteString("| library | version (Olm) | User-Agent of its claim |")
	for _, c := range configs {
		b.WriteString(" " + c.Title + " |")
	}
	b.WriteString("\n|---|---|---|")
	for range configs {
		b.WriteString("---|")
	}
	b.WriteString("\n")
	for _, lib := range libs {
		id := lib.Name + " " + lib.Version
		olm, ua := "", ""
		for _, c := range configs {
			if o, ok := cells[id][c.Key]; ok {
				olm, ua = cmp.Or(o.Olm, olm), cmp.Or(o.UA, ua)
			}
		}
		fmt.Fprintf(&b, "| %s | %s (%s) | `%s` |", lib.Name, lib.Version, olm, ua)
		for _, c := range configs {
			o, ok := cells[id][c.Key]
			if !ok {
				b.WriteString(" not run |")
				continue
			}
			b.WriteString(" " + cell(o) + " |")
		}
		b.WriteString("\n")
	}
	b.WriteString("\nClaim targets: DEVKEYSONLY (device keys only), EXHAUSTED (one-time keys all claimed, no fallback key), " +
		"FALLBACKONLY (only a fallback key), KEYED (one-time keys and a fallback key), UNKNOWN (a device the server does not know). " +
		"\"works\": Olm sessions exactly with FALLBACKONLY and KEYED, a to-device payload encrypted to each decrypted by that device's own machine, " +
		"no crash, no hang, no one-time key used up without a session.\n")
	b.WriteString("\nLibrary log lines (warnings and errors, each distinct line once, with how many times):\n\n")
	for _, lib := range libs {
		id := lib.Name + " " + lib.Version
		for _, c := range configs {
			o := cells[id][c.Key]
			counts := map[string]int{}
			var order []string
			for _, l := range o.Logs {
				if counts[l] == 0 {
					order = append(order, l)
				}
				counts[l]++
			}
			if len(order) == 0 {
				continue
			}
			sort.Strings(order) // the libraries log some of these in map order
			fmt.Fprintf(&b, "- %s, %s:\n", id, c.Title)
			for _, l := range order {
				fmt.Fprintf(&b, "  - %dx `%s`\n", counts[l], strings.ReplaceAll(l, "`", "'"))
			}
		}
	}
	return b.String()
}

func cell(o outcome) string {
	var parts []string
	switch {
	case o.works():
		parts = append(parts, "works")
	case o.Crash != "" || o.Hang != "":
		if o.Crash != "" {
			parts = append(parts, "**crash**: "+o.Crash)
		}
		if o.Hang != "" {
			parts = append(parts, "**hang**: "+o.Hang)
		}
	default:
		parts = append(parts, "**fails**")
	}
	if !o.works() {
		if len(o.Sessions) == 0 {
			parts = append(parts, "no session")
		} else {
			parts = append(parts, "sessions with "+strings.Join(o.Sessions, ", "))
		}
	}
	if len(o.Wasted) > 0 {
		parts = append(parts, "one-time key used up without a session: "+strings.Join(o.Wasted, ", "))
	}
	if n := len(o.Logs); n > 0 {
		parts = append(parts, fmt.Sprintf("%d library warnings/errors", n))
	}
	return strings.Join(parts, "; ")
}
