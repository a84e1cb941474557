// Package pgtest runs a PostgreSQL instance of a test's own: a fresh cluster (initdb) in a
// temporary directory, listening on 127.0.0.1 on a free port, which the test may stop, start and
// restart at will (the shared cluster of scripts/test-env.sh must never be restarted: other
// tests use it). It uses the installed server binaries (/usr/lib/postgresql/*/bin); when they
// are missing the test is skipped with a message naming the script that installs them.
//
// The instance runs with the durable defaults (fsync on, synchronous_commit on), so benchmarks
// on it measure what a production database costs. As root, the server runs as the "postgres"
// user (PostgreSQL refuses to run as root).
package pgtest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Instance is a running (or stopped) PostgreSQL cluster of one test.
type Instance struct {
	// DSN connects to the database "keyclaim" as the superuser "keyclaim" (trust
	// authentication on 127.0.0.1).
	DSN string
	// Port is the TCP port on 127.0.0.1.
	Port int

	bin, dir, logFile string
	runAs             string // the OS user the server runs as ("" = the current one)
	mu                sync.Mutex
	t                 testing.TB
}

// binDir returns the bin directory of the newest installed PostgreSQL, or "".
func binDir() string {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool {
		vi, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[i])))
		vj, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[j])))
		return vi < vj
	})
	for i := len(dirs) - 1; i >= 0; i-- {
		if _, err := os.Stat(filepath.Join(dirs[i], "pg_ctl")); err == nil {
			return dirs[i]
		}
	}
	return ""
}

// Start creates and starts an instance; it is stopped and removed when the test ends.
func Start(t testing.TB) *Instance {
	t.Helper()
	bin := binDir()
	if bin == "" {
		t.Skip("PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin (hostserver/store/testdata/start-postgres.sh installs them)")
	}
	dir, err := os.MkdirTemp("", "keyclaim-pgtest-")
	if err != nil {
		t.Fatal(err)
	}
	in := &Instance{bin: bin, dir: dir, logFile: filepath.Join(dir, "server.log"), t: t}
	if u, err := user.Current(); err == nil && u.Uid == "0" {
		in.runAs = "postgres"
		// The server's user must own the directory (and reach it: /tmp is world-searchable).
		if out, err := exec.Command("chown", "postgres:", dir).CombinedOutput(); err != nil {
			t.Fatalf("chown %s: %v: %s", dir, err, out)
		}
	}
	t.Cleanup(func() {
		_ = in.run("pg_ctl", "-D", in.data(), "-m", "immediate", "-w", "stop")
		_ = os.RemoveAll(dir)
	})
	if err := in.run("initdb", "-D", in.data(), "-U", "keyclaim", "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"); err != nil {
		t.Fatalf("initdb: %v", err)
	}
	in.Port = freePort(t)
	conf := fmt.Sprintf("listen_addresses = '127.0.0.1'\nport = %d\nunix_socket_directories = '%s'\nmax_connections = 100\nshared_buffers = 64MB\nfsync = on\nsynchronous_commit = on\n", in.Port, dir)
	if err := os.WriteFile(filepath.Join(in.data(), "postgresql.auto.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if in.runAs != "" {
		_ = exec.Command("chown", "postgres:", filepath.Join(in.data(), "postgresql.auto.conf")).Run()
	}
	in.StartServer()
	if err := in.run("createdb", "-h", "127.0.0.1", "-p", strconv.Itoa(in.Port), "-U", "keyclaim", "keyclaim"); err != nil {
		t.Fatalf("createdb: %v", err)
	}
	in.DSN = fmt.Sprintf("postgres://keyclaim@127.0.0.1:%d/keyclaim?sslmode=disable", in.Port)
	return in
}

func (in *Instance) data() string { return filepath.Join(in.dir, "data") }

// run runs a PostgreSQL program (as the server's user when the test runs as root).
func (in *Instance) run(prog string, args ...string) error {
	path := filepath.Join(in.bin, prog)
	var cmd *exec.Cmd
	if in.runAs != "" {
		cmd = exec.Command("runuser", append([]string{"-u", in.runAs, "--", path}, args...)...)
	} else {
		cmd = exec.Command(path, args...)
	}
	cmd.Dir = in.dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", prog, strings.Join(args, " "), err, out)
	}
	return nil
}

// StartServer starts the server and waits until it accepts connections.
func (in *Instance) StartServer() {
	in.t.Helper()
	in.mu.Lock()
	defer in.mu.Unlock()
	if err := in.run("pg_ctl", "-D", in.data(), "-l", in.logFile, "-w", "-t", "60", "start"); err != nil {
		log, _ := os.ReadFile(in.logFile)
		in.t.Fatalf("start PostgreSQL: %v\n%s", err, log)
	}
}

// StopServer stops the server in "fast" mode: open transactions are rolled back and every
// session is ended (what a restart by an administrator or a failover does to clients).
func (in *Instance) StopServer() {
	in.t.Helper()
	in.mu.Lock()
	defer in.mu.Unlock()
	if err := in.run("pg_ctl", "-D", in.data(), "-m", "fast", "-w", "-t", "60", "stop"); err != nil {
		in.t.Errorf("stop PostgreSQL: %v", err)
	}
}

// Restart stops the server (fast), keeps it down for down, and starts it again. It returns how
// long the database did not accept connections.
func (in *Instance) Restart(down time.Duration) time.Duration {
	in.t.Helper()
	start := time.Now()
	in.StopServer()
	time.Sleep(down)
	in.StartServer()
	return time.Since(start)
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Ready waits (bounded by ctx) until the server accepts TCP connections.
func (in *Instance) Ready(ctx context.Context) error {
	for {
		c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(in.Port)), time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}
