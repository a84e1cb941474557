// Package serverproc builds and runs keyclaim-server processes on loopback: the one launcher of
// the load driver (bench/loaddriver) and the process tests (hostserver's robust_process_test.go).
// A process gets a free 127.0.0.1 port (unless its arguments name one), writes its output to a
// log file, is ready when GET /readyz answers 200, and stops with SIGTERM, then SIGKILL.
package serverproc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Build builds ./cmd/keyclaim-server of the module the go command sees from the working
// directory into dir and returns the binary's path. A failed build is tried once more (a build
// cache shared with concurrent builds has been seen to fail a build transiently).
func Build(ctx context.Context, dir string) (string, error) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("the go command is needed to build the server: %w", err)
	}
	modOut, err := exec.CommandContext(ctx, goTool, "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(modOut)))
	bin := filepath.Join(dir, "keyclaim-server")
	var out []byte
	for attempt := 0; attempt < 2; attempt++ {
		cmd := exec.CommandContext(ctx, goTool, "build", "-o", bin, "./cmd/keyclaim-server")
		cmd.Dir = root
		if out, err = cmd.CombinedOutput(); err == nil {
			return bin, nil
		}
	}
	return "", fmt.Errorf("go build ./cmd/keyclaim-server: %w\n%s", err, out)
}

// FreeAddr returns a loopback address (127.0.0.1:port) that was free a moment ago.
func FreeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := ln.Addr().String()
	return addr, ln.Close()
}

// Proc is a started server process.
type Proc struct {
	Cmd     *exec.Cmd
	Addr    string // host:port it listens on
	Base    string // http://Addr
	PID     int
	LogPath string

	exited  chan struct{}
	waitErr error
}

// Start starts bin with args plus --listen on a free loopback port, its standard output and
// error appended to logPath. It does not wait for the server to be ready (see Ready).
func Start(bin string, args []string, logPath string) (*Proc, error) {
	addr, err := FreeAddr()
	if err != nil {
		return nil, err
	}
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, append([]string{"--listen", addr}, args...)...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		_ = logFile.Close()
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	p := &Proc{Cmd: cmd, Addr: addr, Base: "http://" + addr, PID: cmd.Process.Pid, LogPath: logPath, exited: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		_ = logFile.Close()
		close(p.exited)
	}()
	return p, nil
}

// Exited is closed when the process has exited; WaitErr then says how.
func (p *Proc) Exited() <-chan struct{} { return p.exited }

// WaitErr is the process's exit status (after Exited is closed).
func (p *Proc) WaitErr() error { return p.waitErr }

// Ready waits until GET /readyz answers 200. It fails when the process exits first or timeout
// passes (or ctx ends), with the end of the log in the error.
func (p *Proc) Ready(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	for {
		select {
		case <-p.exited:
			return fmt.Errorf("the server exited before it was ready (%v); its log:\n%s", p.waitErr, p.LogTail(4000))
		default:
		}
		resp, err := client.Get(p.Base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the server was not ready within %v; its log:\n%s", timeout, p.LogTail(4000))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Stop ends the process: SIGTERM, then SIGKILL after timeout. It returns an error when the
// process had to be killed or did not exit cleanly; nil if it had already exited.
func (p *Proc) Stop(timeout time.Duration) error {
	select {
	case <-p.exited:
		return nil
	default:
	}
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		return p.waitErr
	case <-time.After(timeout):
		_ = p.Cmd.Process.Kill()
		<-p.exited
		return fmt.Errorf("the server did not stop within %v of SIGTERM; killed", timeout)
	}
}

// Kill ends the process with SIGKILL and waits for it.
func (p *Proc) Kill() error {
	if err := p.Cmd.Process.Signal(syscall.SIGKILL); err != nil {
		return err
	}
	<-p.exited
	return nil
}

// LogTail returns the last n bytes of the process's log.
func (p *Proc) LogTail(n int) string {
	data, _ := os.ReadFile(p.LogPath)
	if len(data) > n {
		data = data[len(data)-n:]
	}
	return string(bytes.TrimRight(data, "\n"))
}

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat: 100 on Linux for
// every architecture Go supports there.
const clockTicks = 100

// CPUSeconds returns the CPU time (user + system) process pid has used so far, from
// /proc/<pid>/stat.
func CPUSeconds(pid int) (float64, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, fmt.Errorf("server CPU time: %w", err)
	}
	// The command name (field 2) is in parentheses and may hold spaces: count after the last ')'.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, errors.New("server CPU time: unexpected /proc/<pid>/stat")
	}
	f := strings.Fields(string(data[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, errors.New("server CPU time: short /proc/<pid>/stat")
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("server CPU time: bad utime/stime %q %q", f[11], f[12])
	}
	return float64(ut+st) / clockTicks, nil
}
