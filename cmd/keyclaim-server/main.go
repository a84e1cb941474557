// Command keyclaim-server runs the keyclaim keys server (package hostserver): the Matrix
// end-to-end encryption key endpoints (client-server API v1.19 /keys/upload, /keys/query,
// /keys/claim; server-server API /user/keys/claim and /user/keys/query) with the complete claim
// answers of MSC4072.
//
// Every setting is a flag, an environment variable KEYCLAIM_<NAME> and a key of the --config
// file (see keyclaim-server -h). With --dev it generates a development token file if there is
// none and prints the tokens and a curl example. SIGINT and SIGTERM stop it gracefully; SIGHUP
// reloads the token file.
//
// Federation is on by default: the server's ed25519 signing key is read from --signing-key
// (./var/signing.key), created there on first start, and published at
// GET /_matrix/key/v2/server; inbound federation requests must be X-Matrix signed; remote users
// are claimed and queried from their servers, found by server discovery or by
// --federation-resolve name=URL. --federation=false turns it off.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/keyclaim/keyclaim/hostserver"
)

// shutdownTimeout bounds the graceful shutdown: requests still running after it are cut.
const shutdownTimeout = 30 * time.Second

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is the program; it returns the exit status: 0 after a clean stop, 2 for a configuration
// error, 1 for any other failure.
func run(args []string, stdout, stderr io.Writer) int {
	cfg, err := hostserver.LoadConfig(args, os.LookupEnv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "keyclaim-server: %v\n", err)
		return 2
	}
	logger, err := cfg.NewLogger(stderr)
	if err != nil {
		fmt.Fprintf(stderr, "keyclaim-server: %v\n", err)
		return 2
	}
	cfg.Logger = logger

	srv, err := hostserver.New(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "keyclaim-server: %v\n", err)
		return 1
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		fmt.Fprintf(stderr, "keyclaim-server: %v\n", err)
		_ = srv.Shutdown(context.Background())
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := srv.Start(ctx, ln); err != nil {
		fmt.Fprintf(stderr, "keyclaim-server: %v\n", err)
		return 1
	}
	if cfg.Dev {
		srv.WriteDevBanner(stdout)
	}

	status := 0
	select {
	case <-ctx.Done():
		logger.Info("shutting down: draining requests", "timeout", shutdownTimeout.String())
	case <-srv.Done():
		status = 1
	}
	stop()
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		logger.Error("shutdown", "err", err)
		status = 1
	}
	if err := srv.Err(); err != nil {
		status = 1
	}
	return status
}
