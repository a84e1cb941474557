package hostserver

import (
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
)

// DebugPprofEnv names the environment variable that, when set to a loopback address such as
// 127.0.0.1:6060, makes the server expose net/http/pprof on a listener of its own at that
// address (for profiling under load; see bench/README.md). Off when unset. It is deliberately
// not a flag: it is a debugging aid, never part of a deployment's configuration, and it refuses
// addresses that are not loopback.
const DebugPprofEnv = "KEYCLAIM_DEBUG_PPROF"

// startDebugPprof starts the pprof listener if DebugPprofEnv asks for one. Failures are logged,
// never fatal. The listener lives until the process exits.
func startDebugPprof(logger *slog.Logger) {
	addr := os.Getenv(DebugPprofEnv)
	if addr == "" {
		return
	}
	if !isLoopbackAddr(addr) {
		logger.Warn("debug pprof not started: want a loopback IP address and port", "env", DebugPprofEnv, "addr", addr)
		return
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		logger.Warn("debug pprof not started", "env", DebugPprofEnv, "err", err)
		return
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	logger.Warn("debug pprof listening (not for production)", "addr", ln.Addr().String())
	go func() {
		if err := http.Serve(ln, mux); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Warn("debug pprof stopped", "err", err)
		}
	}()
}
