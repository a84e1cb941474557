package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// buildServer builds the command into a temporary directory.
func buildServer(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "keyclaim-server")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func TestDevRunAndGracefulStop(t *testing.T) {
	bin := buildServer(t)
	dir := t.TempDir()
	cmd := exec.Command(bin, "--dev", "--listen", "127.0.0.1:0")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "KEYCLAIM_LOG_FORMAT=json")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// One reader: the banner lines go to lines; then the process is waited for.
	lines := make(chan string, 256)
	done := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default: // nobody reads any more
			}
		}
		close(lines)
		done <- cmd.Wait()
	}()
	t.Cleanup(func() { _ = cmd.Process.Kill() })

	var banner []string
	timeout := time.After(30 * time.Second)
	for curls := 0; curls < 2; {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("stdout closed early; banner so far:\n%s\nstderr:\n%s", strings.Join(banner, "\n"), stderr.String())
			}
			banner = append(banner, l)
			if strings.Contains(l, "curl ") {
				curls++
			}
		case <-timeout:
			t.Fatalf("no banner; stderr:\n%s", stderr.String())
		}
	}
	text := strings.Join(banner, "\n")
	base := regexp.MustCompile(`http://127\.0\.0\.1:\d+`).FindString(text)
	bobToken := regexp.MustCompile(`kc_dev_bob_[A-Za-z0-9_-]+`).FindString(text)
	aliceToken := regexp.MustCompile(`kc_dev_alice_[A-Za-z0-9_-]+`).FindString(text)
	if base == "" || bobToken == "" || aliceToken == "" {
		t.Fatalf("banner lacks the address or the tokens:\n%s", text)
	}
	if _, err := os.Stat(filepath.Join(dir, "var", "dev-tokens.json")); err != nil {
		t.Errorf("dev token file: %v", err)
	}

	// Follow the banner's example.
	post := func(token, path, body string) string {
		req, _ := http.NewRequest(http.MethodPost, base+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("POST %s: %d %s", path, resp.StatusCode, b)
		}
		return string(b)
	}
	if got := post(bobToken, "/_matrix/client/v3/keys/upload", `{"one_time_keys": {"signed_curve25519:AAAAAQ": {"key": "k", "signatures": {"@bob:localhost": {"ed25519:BOBDEV": "s"}}}}}`); got != `{"one_time_key_counts":{"signed_curve25519":1}}` {
		t.Errorf("upload: %s", got)
	}
	if got := post(aliceToken, "/_matrix/client/v3/keys/claim", `{"one_time_keys": {"@bob:localhost": {"BOBDEV": "signed_curve25519"}}}`); got != `{"failures":{},"one_time_keys":{"@bob:localhost":{"BOBDEV":{"signed_curve25519:AAAAAQ":{"key":"k","signatures":{"@bob:localhost":{"ed25519:BOBDEV":"s"}}}}}}}` {
		t.Errorf("claim: %s", got)
	}

	// SIGTERM: graceful stop, exit status 0.
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("exit: %v\nstderr:\n%s", err, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("did not stop after SIGTERM")
	}
	for _, want := range []string{`"msg":"keyclaim keys server starting"`, `"msg":"request"`, `"msg":"keyclaim keys server stopped"`, `"user":"@alice:localhost"`} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("logs lack %s:\n%s", want, stderr.String())
		}
	}
}

func TestConfigErrorsExit2(t *testing.T) {
	bin := buildServer(t)
	for _, args := range [][]string{{"--mode", "nope", "--tokens", "x"}, {}, {"--frobnicate"}} {
		cmd := exec.Command(bin, args...)
		cmd.Dir = t.TempDir()
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 {
			t.Errorf("%v: err = %v, want exit status 2; output:\n%s", args, err, out)
		}
		if !strings.Contains(string(out), "keyclaim-server") && !strings.Contains(string(out), "Usage") {
			t.Errorf("%v: no clear message:\n%s", args, out)
		}
	}
	if out, err := exec.Command(bin, "-h").CombinedOutput(); err != nil || !strings.Contains(string(out), "KEYCLAIM_") {
		t.Errorf("-h: %v\n%s", err, out)
	}
}
