package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer safe to read while run writes to it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func noEnv(string) string { return "" }

func TestServesADirectory(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "index.html"), []byte("<p>playground</p>"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var stdout, stderr syncBuffer
	done := make(chan int)
	// PLAYGROUND_ADDR is read when -addr is absent.
	env := func(k string) string {
		if k == "PLAYGROUND_ADDR" {
			return "127.0.0.1:0"
		}
		return ""
	}
	go func() { done <- run(ctx, []string{"-dir", dir}, env, &stdout, &stderr) }()
	var url string
	for deadline := time.Now().Add(10 * time.Second); url == "" && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if out := stdout.String(); strings.HasPrefix(out, "keyclaim playground: ") {
			url = strings.TrimSpace(strings.TrimPrefix(out, "keyclaim playground: "))
		}
	}
	if !strings.HasPrefix(url, "http://127.0.0.1:") {
		t.Fatalf("no URL printed: %q %q", stdout.String(), stderr.String())
	}
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "<p>playground</p>" {
		t.Errorf("GET /: %d %q", resp.StatusCode, body)
	}
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("exit %d: %s", code, stderr.String())
	}
}

func TestFailures(t *testing.T) {
	var stderr bytes.Buffer
	if code := run(context.Background(), []string{"-dir", t.TempDir(), "-addr", "127.0.0.1:0"}, noEnv, io.Discard, &stderr); code != 1 || !strings.Contains(stderr.String(), "no index.html") {
		t.Errorf("a directory without index.html: exit %d, %q", code, stderr.String())
	}
	if code := run(context.Background(), []string{"-nope"}, noEnv, io.Discard, io.Discard); code != 2 {
		t.Errorf("an unknown flag: exit %d", code)
	}
}
