// Command keyclaim-playground serves keyclaim's browser playground (web/) as a static site, the
// way `make playground` runs it: the site built into web/dist (--dir) or, without --dir, the
// copy embedded at build time. The address is --addr, else $PLAYGROUND_ADDR, else
// 127.0.0.1:8090; port 0 picks a free one. It prints the URL it serves on, then serves until
// SIGINT or SIGTERM.
//
// Live mode needs a keys server: start dist/keyclaim-server --dev (or `make run`), which serves
// the same page at "/".
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/keyclaim/keyclaim/hostserver/playground"
)

// DefaultAddr is where the playground is served unless --addr or PLAYGROUND_ADDR say otherwise.
const DefaultAddr = "127.0.0.1:8090"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

// run serves until ctx is done; it returns the exit status (2 for a bad flag, 1 for a failure).
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	flags := flag.NewFlagSet("keyclaim-playground", flag.ContinueOnError)
	flags.SetOutput(stderr)
	addr := flags.String("addr", "", "address to serve on (default $PLAYGROUND_ADDR, else "+DefaultAddr+")")
	dir := flags.String("dir", "", "serve the built site in this directory (web/dist) instead of the embedded one")
	if err := flags.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *addr == "" {
		*addr = getenv("PLAYGROUND_ADDR")
	}
	if *addr == "" {
		*addr = DefaultAddr
	}
	var fsys fs.FS
	if *dir != "" {
		fsys = os.DirFS(*dir)
	} else if embedded, ok := playground.Embedded(); ok {
		fsys = embedded
	} else {
		fmt.Fprintf(stderr, "keyclaim-playground: %s\n", playground.NotBuiltMessage)
		return 1
	}
	site, err := playground.Load(fsys)
	if err != nil {
		fmt.Fprintf(stderr, "keyclaim-playground: %v (run `make playground`, which builds web/dist)\n", err)
		return 1
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintf(stderr, "keyclaim-playground: %v\n", err)
		return 1
	}
	srv := &http.Server{Handler: site, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	fmt.Fprintf(stdout, "keyclaim playground: http://%s/\n", ln.Addr())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		fmt.Fprintf(stderr, "keyclaim-playground: %v\n", err)
		return 1
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	return 0
}
