// Command loaddriver measures the keyclaim keys server under claim load (issue 4, item 7).
//
// It builds nothing: given the server binary (--server-binary dist/keyclaim-server) it starts it
// on 127.0.0.1 with a temporary SQLite database (or the PostgreSQL database --db names) and a
// token file it writes for the devices it invents, uploads one-time keys for all of them, and
// then measures, for every request size (--sizes, devices per /keys/claim request) and number of
// concurrent clients (--clients): device-claims per second, p50 and p99 request latency, and the
// server's CPU time per device claimed (utime+stime of the server process from /proc/<pid>/stat,
// read before and after each cell). Each cell stops by itself after --duration or when its share
// of the uploaded keys is claimed, whichever comes first, so the one-time keys never run out and
// every device-claim measured is a real one-time key claim (the table says so).
//
// The result is a Markdown section on stdout, ready for BENCHMARKS.md, with the machine, the
// commands, and the targets of issue 4 beside the numbers; --json FILE also writes it as JSON.
// Everything runs on the loopback interface; every loop is bounded in count and in time.
//
//	go run ./bench/loaddriver --server-binary dist/keyclaim-server --engine native,wasm
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/keyclaim/keyclaim/internal/serverproc"
)

// Targets of issue 4, measured with 100-device requests and 8 clients on SQLite.
const (
	targetClaimsPerSecond = 30000.0
	targetCPUPerDeviceUS  = 20.0
	targetP99MS           = 50.0
	targetWasmCPURatio    = 2.0
	targetSize            = 100
	targetClients         = 8
)

const (
	serverName     = "bench.test"
	algorithm      = "signed_curve25519"
	fallbackKeyID  = algorithm + ":FB"
	devicesPerUser = 10
	// readyTimeout bounds the server's start (migrations; the wasm engine compiles its module).
	readyTimeout = 60 * time.Second
	// stopTimeout bounds the server's graceful stop before it is killed.
	stopTimeout = 30 * time.Second
)

// options are the command-line settings.
type options struct {
	serverBinary   string
	engines        []string
	db             string
	wasmModule     string
	sizes          []int
	clients        []int
	duration       time.Duration
	warmup         time.Duration
	devices        int
	keysPerDevice  int
	uploadClients  int
	serverLogLevel string
	jsonPath       string
	timeout        time.Duration
	seed           uint64
	replicas       int
	synapseURL     string
	synapsePID     int
	synapseFleet   string
}

func main() {
	opts, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "loaddriver: %v\n", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, opts.timeout)
	defer cancel()
	if err := run(ctx, opts, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "loaddriver: %v\n", err)
		os.Exit(1)
	}
}

// parseFlags reads and checks the command line.
func parseFlags(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("loaddriver", flag.ContinueOnError)
	var engines, sizes, clients string
	fs.StringVar(&o.serverBinary, "server-binary", "", "the keyclaim-server binary to start (required), e.g. dist/keyclaim-server")
	fs.StringVar(&engines, "engine", "native", "claim engine(s) of the server, comma-separated: native, wasm, synapse (the homeserver of --synapse-url, for comparison); each gets its own server and database")
	fs.StringVar(&o.synapseURL, "synapse-url", "", "with --engine synapse: the client API base URL of a running Synapse (make bench-synapse starts one)")
	fs.IntVar(&o.synapsePID, "synapse-pid", 0, "with --engine synapse: its process ID (for its CPU time)")
	fs.StringVar(&o.synapseFleet, "synapse-fleet", "", "with --engine synapse: a JSON file {server_name, run_id, tokens[], claimer_token} of registered users @load<run_id>-<k>, devices D0..D9, one token per device (scripts/bench-synapse.sh writes it)")
	fs.StringVar(&o.db, "db", "", "postgres://... DSN to use instead of a temporary SQLite database (keys are added under fresh user IDs)")
	fs.StringVar(&o.wasmModule, "wasm-module", "", "passed to the server as --wasm-module with --engine wasm (default: the embedded module)")
	fs.StringVar(&sizes, "sizes", "1,10,100,1000", "devices per claim request, comma-separated")
	fs.StringVar(&clients, "clients", "1,8", "concurrent clients, comma-separated")
	fs.DurationVar(&o.duration, "duration", 5*time.Second, "longest time of one measurement cell")
	fs.DurationVar(&o.warmup, "warmup", 500*time.Millisecond, "unmeasured claims before the first cell")
	fs.IntVar(&o.devices, "devices", 4000, "devices to upload keys for (a multiple of the largest size and of 10)")
	fs.IntVar(&o.keysPerDevice, "keys-per-device", 100, "one-time keys uploaded per device (one upload each)")
	fs.IntVar(&o.uploadClients, "upload-clients", 4, "concurrent uploaders while setting up")
	fs.StringVar(&o.serverLogLevel, "server-log-level", "warn", "the server's --log-level (info logs one line per request)")
	fs.StringVar(&o.jsonPath, "json", "", "also write the results as JSON to this file (- for stdout, instead of Markdown)")
	fs.DurationVar(&o.timeout, "timeout", 15*time.Minute, "bound on the whole run")
	fs.Uint64Var(&o.seed, "seed", 1, "seed of the generated keys")
	fs.IntVar(&o.replicas, "replicas", 1, "server processes on the one database (with --db), the clients spread over them in turn as by a load balancer; server CPU is their sum")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: loaddriver --server-binary dist/keyclaim-server [flags]\n\nStarts the keys server on 127.0.0.1, uploads keys and measures /keys/claim; prints a Markdown report.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if o.serverBinary == "" {
		return o, errors.New("--server-binary is required (make build puts it at dist/keyclaim-server)")
	}
	for _, e := range strings.Split(engines, ",") {
		e = strings.TrimSpace(e)
		if e != "native" && e != "wasm" && e != "synapse" {
			return o, fmt.Errorf("--engine: want native, wasm or synapse, got %q", e)
		}
		if e == "synapse" && (o.synapseURL == "" || o.synapsePID <= 0 || o.synapseFleet == "") {
			return o, errors.New("--engine synapse needs --synapse-url, --synapse-pid and --synapse-fleet")
		}
		o.engines = append(o.engines, e)
	}
	var err error
	if o.sizes, err = parseInts("--sizes", sizes); err != nil {
		return o, err
	}
	if o.clients, err = parseInts("--clients", clients); err != nil {
		return o, err
	}
	if o.db != "" && !strings.HasPrefix(o.db, "postgres://") && !strings.HasPrefix(o.db, "postgresql://") {
		return o, errors.New("--db: want a postgres:// DSN (without it, a temporary SQLite database is used)")
	}
	maxSize := slices.Max(o.sizes)
	if o.devices < maxSize || o.devices%maxSize != 0 || o.devices%devicesPerUser != 0 {
		return o, fmt.Errorf("--devices %d: must be a multiple of the largest size (%d) and of %d", o.devices, maxSize, devicesPerUser)
	}
	for _, s := range o.sizes {
		if maxSize%s != 0 {
			return o, fmt.Errorf("--sizes: every size must divide the largest (%d); %d does not", maxSize, s)
		}
	}
	if o.keysPerDevice < 1 || o.keysPerDevice > 10000 {
		return o, fmt.Errorf("--keys-per-device %d: want 1 to 10000", o.keysPerDevice)
	}
	if o.duration <= 0 || o.duration > 10*time.Minute {
		return o, fmt.Errorf("--duration %v: want more than 0 and at most 10m", o.duration)
	}
	if o.replicas < 1 || o.replicas > 8 || (o.replicas > 1 && o.db == "") {
		return o, fmt.Errorf("--replicas %d: want 1 to 8, and more than 1 only with --db (a PostgreSQL database)", o.replicas)
	}
	if o.uploadClients < 1 {
		return o, errors.New("--upload-clients must be at least 1")
	}
	return o, nil
}

func parseInts(name, s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 100000 {
			return nil, fmt.Errorf("%s: want positive integers, got %q", name, f)
		}
		out = append(out, n)
	}
	return out, nil
}

// Report is everything one invocation measured; it is printed as Markdown and written as JSON.
type Report struct {
	Date     string    `json:"date"`
	Machine  Machine   `json:"machine"`
	Command  string    `json:"command"`
	Settings Settings  `json:"settings"`
	Runs     []*Run    `json:"runs"`
	Targets  []*Target `json:"targets"`
}

// Machine describes where the numbers come from.
type Machine struct {
	CPUs        int    `json:"cpus"`
	CPUModel    string `json:"cpu_model"`
	Kernel      string `json:"kernel"`
	LoadAverage string `json:"load_average_before"` // /proc/loadavg before the run: 1, 5, 15 min
	GoVersion   string `json:"go_version"`          // of the driver
}

// Settings are the sizes of the run.
type Settings struct {
	Devices        int     `json:"devices"`
	KeysPerDevice  int     `json:"keys_per_device"`
	CellSeconds    float64 `json:"cell_max_seconds"`
	CellClaimsCap  int     `json:"cell_max_device_claims"`
	ServerLogLevel string  `json:"server_log_level"`
}

// Run is one server (one engine) and its cells.
type Run struct {
	Engine         string  `json:"engine"`
	DB             string  `json:"db"`
	Replicas       int     `json:"replicas"`
	ServerCommand  string  `json:"server_command"`
	StartSeconds   float64 `json:"start_seconds"`
	UploadSeconds  float64 `json:"upload_seconds"`
	UploadedKeys   int     `json:"uploaded_keys"`
	LoadAfterSetup string  `json:"load_average_after_setup"`
	Cells          []*Cell `json:"cells"`
}

// Cell is one measurement: a request size and a number of clients.
type Cell struct {
	Size             int     `json:"devices_per_request"`
	Clients          int     `json:"clients"`
	Requests         int     `json:"requests"`
	DeviceClaims     int     `json:"device_claims"`
	OneTimeKeys      int     `json:"one_time_keys"`
	FallbackKeys     int     `json:"fallback_keys"`
	Empty            int     `json:"empty"`
	Errors           int     `json:"errors"`
	Seconds          float64 `json:"seconds"`
	StoppedBy        string  `json:"stopped_by"` // "time" or "count"
	ClaimsPerSecond  float64 `json:"device_claims_per_second"`
	P50MS            float64 `json:"p50_ms"`
	P99MS            float64 `json:"p99_ms"`
	ServerCPUSeconds float64 `json:"server_cpu_seconds"`
	ServerCPUPerDev  float64 `json:"server_cpu_us_per_device"`
	ClientCPUPerDev  float64 `json:"client_cpu_us_per_device"`
	FirstError       string  `json:"first_error,omitempty"`
}

// Target is one target of issue 4 and whether it is met.
type Target struct {
	Name     string  `json:"name"`
	Engine   string  `json:"engine"`
	Want     string  `json:"want"`
	Measured float64 `json:"measured"`
	Unit     string  `json:"unit"`
	Met      bool    `json:"met"`
	Note     string  `json:"note,omitempty"`
}

// run performs the whole measurement and writes the report.
func run(ctx context.Context, o options, stdout, stderr io.Writer) error {
	bin, err := filepath.Abs(o.serverBinary)
	if err != nil {
		return err
	}
	if st, err := os.Stat(bin); err != nil || st.IsDir() {
		return fmt.Errorf("--server-binary %s: not a file (run make build): %v", o.serverBinary, err)
	}
	rep := &Report{
		Date:    time.Now().UTC().Format("2006-01-02 15:04 MST"),
		Machine: machine(),
		Command: "loaddriver " + strings.Join(redactArgs(os.Args[1:]), " "),
	}
	cells := len(o.sizes) * len(o.clients)
	pool := o.devices * o.keysPerDevice
	warmupCap := pool / 50
	// Aligning the device cursor to the request size may skip up to one request per cell.
	cellCap := (pool - warmupCap - cells*slices.Max(o.sizes)) / cells
	if cellCap < slices.Max(o.sizes) {
		return fmt.Errorf("%d devices x %d keys are too few for %d cells of up to %d devices: raise --devices or --keys-per-device", o.devices, o.keysPerDevice, cells, slices.Max(o.sizes))
	}
	rep.Settings = Settings{Devices: o.devices, KeysPerDevice: o.keysPerDevice, CellSeconds: o.duration.Seconds(), CellClaimsCap: cellCap, ServerLogLevel: o.serverLogLevel}
	logf := func(format string, args ...any) { fmt.Fprintf(stderr, "loaddriver: "+format+"\n", args...) }
	logf("load average before the run: %s", rep.Machine.LoadAverage)

	for _, engine := range o.engines {
		r, err := runEngine(ctx, o, bin, engine, cellCap, warmupCap, logf)
		if err != nil {
			return fmt.Errorf("engine %s: %w", engine, err)
		}
		rep.Runs = append(rep.Runs, r)
	}
	rep.Targets = evaluate(rep)

	if o.jsonPath != "" {
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
		data := buf.Bytes()
		if o.jsonPath == "-" {
			_, err = stdout.Write(data)
			return err
		}
		if err := os.WriteFile(o.jsonPath, data, 0o644); err != nil {
			return fmt.Errorf("--json: %w", err)
		}
	}
	_, err = io.WriteString(stdout, markdown(rep))
	return err
}

// redactArgs returns the command line with the value of --db (which may hold a password)
// replaced by a placeholder.
func redactArgs(args []string) []string {
	out := slices.Clone(args)
	for i, a := range out {
		switch {
		case (a == "--db" || a == "-db") && i+1 < len(out):
			out[i+1] = "'<postgres DSN>'"
		case strings.HasPrefix(a, "--db=") || strings.HasPrefix(a, "-db="):
			out[i] = "--db='<postgres DSN>'"
		}
	}
	return out
}

// server is a server under load: a keyclaim-server process the driver started (proc), or a
// homeserver it did not start (--engine synapse: proc is nil).
type server struct {
	proc    *serverproc.Proc
	base    string
	pid     int
	command string
}

// startServer starts the binary on a free loopback port with a database and the token file.
func startServer(ctx context.Context, o options, bin, engine, db, tokens, dir string, replica int) (*server, error) {
	args := []string{"--db", db, "--tokens", tokens, "--server-name", serverName,
		"--engine", engine, "--log-level", o.serverLogLevel}
	if engine == "wasm" && o.wasmModule != "" {
		args = append(args, "--wasm-module", o.wasmModule)
	}
	proc, err := serverproc.Start(bin, args, filepath.Join(dir, fmt.Sprintf("server-%s-%d.log", engine, replica)))
	if err != nil {
		return nil, err
	}
	shown := append([]string{o.serverBinary, "--listen", "127.0.0.1:<free port>"}, args...)
	for i := range shown {
		if shown[i] == db && strings.HasPrefix(db, "postgres") {
			shown[i] = "'<postgres DSN>'"
		}
		if shown[i] == tokens {
			shown[i] = "<generated token file>"
		}
		if strings.HasPrefix(shown[i], "sqlite:") {
			shown[i] = "sqlite:<temporary directory>/bench.db"
		}
	}
	s := &server{proc: proc, base: proc.Base, pid: proc.PID, command: strings.Join(shown, " ")}
	if err := proc.Ready(ctx, readyTimeout); err != nil {
		s.stop()
		return nil, err
	}
	return s, nil
}

// stop ends a server the driver started: SIGTERM, then SIGKILL after stopTimeout.
func (s *server) stop() {
	if s.proc != nil {
		_ = s.proc.Stop(stopTimeout)
	}
}

// cpuSeconds returns the CPU time (user + system) the server process has used so far.
func (s *server) cpuSeconds() (float64, error) { return serverproc.CPUSeconds(s.pid) }

// cpuSeconds returns the CPU time the server processes have used so far, together.
func cpuSeconds(srvs []*server) (float64, error) {
	total := 0.0
	for _, s := range srvs {
		c, err := s.cpuSeconds()
		if err != nil {
			return 0, err
		}
		total += c
	}
	return total, nil
}

// selfCPUSeconds returns the CPU time of the driver itself (the clients).
func selfCPUSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return tv(ru.Utime) + tv(ru.Stime)
}

// fleet names the devices of one run: n/10 users of 10 devices each, one token per device; runID
// keeps the user IDs of runs apart in a database that is kept between runs.
type fleet struct {
	runID string
	n     int
	// An existing homeserver's users (--engine synapse): its server name, the token of each
	// device and of the claimer. Empty for keyclaim, whose token file the driver writes.
	server  string
	tokens  []string
	claimer string
}

// user returns the user of device i.
func (f fleet) user(i int) string {
	server := serverName
	if f.server != "" {
		server = f.server
	}
	return "@load" + f.runID + "-" + strconv.Itoa(i/devicesPerUser) + ":" + server
}

// device returns the device ID of device i.
func (f fleet) device(i int) string { return "D" + strconv.Itoa(i%devicesPerUser) }

// token returns the access token of device i.
func (f fleet) token(i int) string {
	if f.tokens != nil {
		return f.tokens[i]
	}
	return "tok-" + f.runID + "-" + strconv.Itoa(i)
}

// writeTokens writes the token file of the fleet, plus the claimers' token.
func (f fleet) writeTokens(path string) error {
	tokens := make(map[string]map[string]string, f.n+1)
	tokens[f.claimToken()] = map[string]string{"user_id": "@claimer" + f.runID + ":" + serverName, "device_id": "CLAIMER"}
	for i := 0; i < f.n; i++ {
		tokens[f.token(i)] = map[string]string{"user_id": f.user(i), "device_id": f.device(i)}
	}
	data, err := json.Marshal(tokens)
	if err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o600)
}

// claimToken returns the access token the claimers use.
func (f fleet) claimToken() string {
	if f.claimer != "" {
		return f.claimer
	}
	return "tok-" + f.runID + "-claimer"
}

// runEngine starts a server with engine, uploads the keys, and measures every cell.
func runEngine(ctx context.Context, o options, bin, engine string, cellCap, warmupCap int, logf func(string, ...any)) (*Run, error) {
	dir, err := os.MkdirTemp("", "keyclaim-loaddriver-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	if engine == "synapse" {
		return runSynapse(ctx, o, cellCap, warmupCap, logf)
	}
	fl := fleet{runID: strconv.FormatInt(time.Now().UnixNano()%1e9, 36), n: o.devices}
	tokens := filepath.Join(dir, "tokens.json")
	if err := fl.writeTokens(tokens); err != nil {
		return nil, fmt.Errorf("token file: %w", err)
	}
	db, dbName := o.db, "PostgreSQL"
	if db == "" {
		db, dbName = "sqlite:"+filepath.Join(dir, "bench.db"), "SQLite"
	}
	start := time.Now()
	var srvs []*server
	defer func() {
		for _, s := range srvs {
			s.stop()
		}
	}()
	for i := 0; i < o.replicas; i++ {
		srv, err := startServer(ctx, o, bin, engine, db, tokens, dir, i)
		if err != nil {
			return nil, err
		}
		srvs = append(srvs, srv)
	}
	srv := srvs[0]
	r := &Run{Engine: engine, DB: dbName, Replicas: o.replicas, ServerCommand: srv.command, StartSeconds: time.Since(start).Seconds()}
	for _, s := range srvs {
		logf("%s: server pid %d ready at %s in %.1fs", engine, s.pid, s.base, r.StartSeconds)
	}

	maxClients := slices.Max(o.clients)
	hc := &http.Client{
		Timeout: 60 * time.Second,
		Transport: &http.Transport{
			MaxIdleConns:        2 * max(maxClients, o.uploadClients),
			MaxIdleConnsPerHost: 2 * max(maxClients, o.uploadClients),
			IdleConnTimeout:     60 * time.Second,
			DisableCompression:  true,
		},
	}
	defer hc.CloseIdleConnections()

	start = time.Now()
	if err := upload(ctx, hc, srv.base, fl, o); err != nil {
		return nil, err
	}
	r.UploadSeconds = time.Since(start).Seconds()
	if err := measureAll(ctx, o, hc, srvs, fl, r, cellCap, warmupCap, logf); err != nil {
		return nil, err
	}
	for _, srv := range srvs {
		select {
		case <-srv.proc.Exited():
			return nil, fmt.Errorf("the server exited during the run (%v); its log:\n%s", srv.proc.WaitErr(), srv.proc.LogTail(4000))
		default:
		}
	}
	return r, nil
}

// measureAll runs the warm-up and every cell against srvs (whose keys are uploaded) into r.
func measureAll(ctx context.Context, o options, hc *http.Client, srvs []*server, fl fleet, r *Run, cellCap, warmupCap int, logf func(string, ...any)) error {
	engine := r.Engine
	maxClients := slices.Max(o.clients)
	r.UploadedKeys = o.devices * o.keysPerDevice
	r.LoadAfterSetup = loadAverage()
	logf("%s: uploaded %d one-time keys for %d devices in %.1fs; load average %s", engine, r.UploadedKeys, o.devices, r.UploadSeconds, r.LoadAfterSetup)

	var cursor atomic.Int64
	if o.warmup > 0 {
		if _, err := measure(ctx, hc, srvs, fl, &cursor, 10, maxClients, o.warmup, warmupCap); err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
	}
	for _, size := range o.sizes {
		for _, clients := range o.clients {
			if err := ctx.Err(); err != nil {
				return err
			}
			c, err := measure(ctx, hc, srvs, fl, &cursor, size, clients, o.duration, cellCap)
			if err != nil {
				return fmt.Errorf("%d devices x %d clients: %w", size, clients, err)
			}
			logf("%s: %4d devices x %d clients: %8.0f device-claims/s, p50 %.2f ms, p99 %.2f ms, server CPU %.1f µs/device (%d requests, %.1fs, stopped by %s)",
				engine, size, clients, c.ClaimsPerSecond, c.P50MS, c.P99MS, c.ServerCPUPerDev, c.Requests, c.Seconds, c.StoppedBy)
			if c.Errors > 0 {
				logf("%s: %d errors, first: %s", engine, c.Errors, c.FirstError)
			}
			r.Cells = append(r.Cells, c)
		}
	}
	return nil
}

// synapseFleet is the --synapse-fleet file: users registered on the Synapse for this run.
type synapseFleet struct {
	ServerName   string   `json:"server_name"`
	RunID        string   `json:"run_id"`
	Tokens       []string `json:"tokens"` // of device i: user @load<run_id>-<i/10>, device D<i%10>
	ClaimerToken string   `json:"claimer_token"`
}

// runSynapse runs the same workload against the running Synapse of --synapse-url: the same
// uploads, the same cells. Its CPU time is that of --synapse-pid.
func runSynapse(ctx context.Context, o options, cellCap, warmupCap int, logf func(string, ...any)) (*Run, error) {
	data, err := os.ReadFile(o.synapseFleet)
	if err != nil {
		return nil, fmt.Errorf("--synapse-fleet: %w", err)
	}
	var sf synapseFleet
	if err := json.Unmarshal(data, &sf); err != nil {
		return nil, fmt.Errorf("--synapse-fleet: %w", err)
	}
	if len(sf.Tokens) != o.devices || sf.ClaimerToken == "" || sf.ServerName == "" {
		return nil, fmt.Errorf("--synapse-fleet: %d tokens for --devices %d, server name %q", len(sf.Tokens), o.devices, sf.ServerName)
	}
	fl := fleet{runID: sf.RunID, n: o.devices, server: sf.ServerName, tokens: sf.Tokens, claimer: sf.ClaimerToken}
	srv := &server{base: strings.TrimSuffix(o.synapseURL, "/"), pid: o.synapsePID}
	if _, err := srv.cpuSeconds(); err != nil {
		return nil, fmt.Errorf("--synapse-pid %d: %w", o.synapsePID, err)
	}
	r := &Run{Engine: "synapse", DB: "SQLite (Synapse)", Replicas: 1, ServerCommand: "Synapse at " + srv.base + " (scripts/bench-synapse.sh)"}
	hc := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{
		MaxIdleConnsPerHost: 2 * max(slices.Max(o.clients), o.uploadClients), DisableCompression: true}}
	defer hc.CloseIdleConnections()
	start := time.Now()
	if err := upload(ctx, hc, srv.base, fl, o); err != nil {
		return nil, err
	}
	r.UploadSeconds = time.Since(start).Seconds()
	if err := measureAll(ctx, o, hc, []*server{srv}, fl, r, cellCap, warmupCap, logf); err != nil {
		return nil, err
	}
	return r, nil
}

// upload gives every device keysPerDevice one-time keys (one upload) and a fallback key, with
// uploadClients concurrent uploaders. Keys look like libolm's: a 6-character base64 key ID, a
// 43-character key and an 86-character signature.
func upload(ctx context.Context, hc *http.Client, base string, fl fleet, o options) error {
	var next atomic.Int64
	errs := make(chan error, o.uploadClients)
	var wg sync.WaitGroup
	for w := 0; w < o.uploadClients; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(o.seed, uint64(w)))
			var body []byte
			for {
				i := int(next.Add(1) - 1)
				if i >= fl.n || ctx.Err() != nil {
					return
				}
				body = uploadBody(body[:0], rng, fl, i, o.keysPerDevice)
				status, answer, err := post(ctx, hc, base+"/_matrix/client/v3/keys/upload", fl.token(i), body)
				if err == nil && status != http.StatusOK {
					err = fmt.Errorf("answered %d: %.300s", status, answer)
				}
				if err == nil && !bytes.Contains(answer, []byte(`"`+algorithm+`":`+strconv.Itoa(o.keysPerDevice))) {
					err = fmt.Errorf("unexpected counts %s (want %d)", answer, o.keysPerDevice)
				}
				if err != nil {
					errs <- fmt.Errorf("upload for device %d: %w", i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// uploadBody appends the upload of device i.
func uploadBody(buf []byte, rng *rand.Rand, fl fleet, i, keys int) []byte {
	random := func(n int) string {
		b := make([]byte, n)
		for j := 0; j < n; j += 8 {
			var w [8]byte
			binary.LittleEndian.PutUint64(w[:], rng.Uint64())
			copy(b[j:], w[:])
		}
		return base64.RawStdEncoding.EncodeToString(b)
	}
	keyObject := func(fallback bool) string {
		fb := ""
		if fallback {
			fb = `"fallback":true,`
		}
		return `{` + fb + `"key":"` + random(32) + `","signatures":{"` + fl.user(i) + `":{"ed25519:` + fl.device(i) + `":"` + random(64) + `"}}}`
	}
	buf = append(buf, `{"fallback_keys":{"`+fallbackKeyID+`":`...)
	buf = append(buf, keyObject(true)...)
	buf = append(buf, `},"one_time_keys":{`...)
	for k := 0; k < keys; k++ {
		if k > 0 {
			buf = append(buf, ',')
		}
		var id [4]byte
		binary.BigEndian.PutUint32(id[:], uint32(k+1))
		buf = append(buf, `"`+algorithm+`:`...)
		buf = append(buf, base64.RawStdEncoding.EncodeToString(id[1:])...) // 4 characters
		buf = append(buf, "AA\":"...)
		buf = append(buf, keyObject(false)...)
	}
	return append(buf, "}}"...)
}

// measure runs one cell: clients goroutines send claims of size devices each, consecutive
// devices from the shared cursor, until dur has passed or maxClaims device-claims were sent.
func measure(ctx context.Context, hc *http.Client, srvs []*server, fl fleet, cursor *atomic.Int64, size, clients int, dur time.Duration, maxClaims int) (*Cell, error) {
	// Align the cursor so that no request wraps around the device list or splits a user.
	if rem := cursor.Load() % int64(size); rem != 0 {
		cursor.Add(int64(size) - rem)
	}
	c := &Cell{Size: size, Clients: clients, StoppedBy: "time"}
	var reserved atomic.Int64
	var mu sync.Mutex
	var latencies []time.Duration
	var stoppedByCount atomic.Bool
	cpu0, err := cpuSeconds(srvs)
	if err != nil {
		return nil, err
	}
	self0 := selfCPUSeconds()
	start := time.Now()
	deadline := start.Add(dur)
	var wg sync.WaitGroup
	for w := 0; w < clients; w++ {
		wg.Add(1)
		srv := srvs[w%len(srvs)] // client w talks to replica w mod n, as a load balancer would
		go func() {
			defer wg.Done()
			var lat []time.Duration
			var requests, otks, fbs, empty, errs int
			var firstErr string
			var body []byte
			for time.Now().Before(deadline) && ctx.Err() == nil {
				if reserved.Add(int64(size)) > int64(maxClaims) {
					stoppedByCount.Store(true)
					break
				}
				first := (cursor.Add(int64(size)) - int64(size)) % int64(fl.n)
				body = claimBody(body[:0], fl, int(first), size)
				t0 := time.Now()
				status, answer, err := post(ctx, hc, srv.base+"/_matrix/client/v3/keys/claim", fl.claimToken(), body)
				elapsed := time.Since(t0)
				requests++
				if err == nil && status != http.StatusOK {
					err = fmt.Errorf("answered %d: %.300s", status, answer)
				}
				if err != nil {
					if errs == 0 {
						firstErr = err.Error()
					}
					errs++
					continue
				}
				lat = append(lat, elapsed)
				n := bytes.Count(answer, []byte(`"`+algorithm+`:`))
				fb := bytes.Count(answer, []byte(`"`+fallbackKeyID+`"`))
				otks += n - fb
				fbs += fb
				empty += size - n
			}
			mu.Lock()
			defer mu.Unlock()
			latencies = append(latencies, lat...)
			c.Requests += requests
			c.OneTimeKeys += otks
			c.FallbackKeys += fbs
			c.Empty += empty
			c.Errors += errs
			if c.FirstError == "" {
				c.FirstError = firstErr
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpu1, err := cpuSeconds(srvs)
	if err != nil {
		return nil, err
	}
	self1 := selfCPUSeconds()
	if stoppedByCount.Load() {
		c.StoppedBy = "count"
	}
	c.Seconds = elapsed.Seconds()
	c.DeviceClaims = c.OneTimeKeys + c.FallbackKeys + c.Empty
	c.ClaimsPerSecond = float64(c.DeviceClaims) / c.Seconds
	c.ServerCPUSeconds = cpu1 - cpu0
	if c.DeviceClaims > 0 {
		c.ServerCPUPerDev = c.ServerCPUSeconds / float64(c.DeviceClaims) * 1e6
		c.ClientCPUPerDev = (self1 - self0) / float64(c.DeviceClaims) * 1e6
	}
	slices.Sort(latencies)
	c.P50MS = percentile(latencies, 0.50)
	c.P99MS = percentile(latencies, 0.99)
	if c.Requests > 0 && c.Errors == c.Requests {
		return nil, fmt.Errorf("every request failed; first: %s", c.FirstError)
	}
	return c, nil
}

// percentile returns the q-quantile of sorted latencies in milliseconds (nearest rank).
func percentile(sorted []time.Duration, q float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	i = max(0, min(i, len(sorted)-1))
	return float64(sorted[i]) / float64(time.Millisecond)
}

// claimBody appends a claim request for devices first .. first+size-1.
func claimBody(buf []byte, fl fleet, first, size int) []byte {
	buf = append(buf, `{"one_time_keys":{`...)
	lastUser := ""
	for i := first; i < first+size; i++ {
		u := fl.user(i)
		if u != lastUser {
			if lastUser != "" {
				buf = append(buf, "},"...)
			}
			buf = append(buf, '"')
			buf = append(buf, u...)
			buf = append(buf, `":{`...)
			lastUser = u
		} else {
			buf = append(buf, ',')
		}
		buf = append(buf, '"')
		buf = append(buf, fl.device(i)...)
		buf = append(buf, `":"`+algorithm+`"`...)
	}
	return append(buf, "}}}"...)
}

// post sends an authenticated POST and returns the status and the body.
func post(ctx context.Context, hc *http.Client, url, token string, body []byte) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	return resp.StatusCode, data, err
}

// machine describes this machine.
func machine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), LoadAverage: loadAverage(), GoVersion: runtime.Version()}
	if data, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = "Linux " + strings.TrimSpace(string(data))
	}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	return m
}

// loadAverage returns the 1, 5 and 15 minute load averages.
func loadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// cell returns the cell of run r with size and clients, or nil.
func (r *Run) cell(size, clients int) *Cell {
	for _, c := range r.Cells {
		if c.Size == size && c.Clients == clients {
			return c
		}
	}
	return nil
}

// evaluate checks the targets of issue 4 on the target cell (100 devices, 8 clients) of each run.
func evaluate(rep *Report) []*Target {
	var out []*Target
	var native, wasm *Cell
	for _, r := range rep.Runs {
		c := r.cell(targetSize, targetClients)
		if c == nil || r.Engine == "synapse" { // Synapse is measured for comparison only
			continue
		}
		note := ""
		if r.DB != "SQLite" {
			note = "the targets are set for SQLite; this run used " + r.DB
		}
		out = append(out,
			&Target{Name: "device-claims/s, 100-device requests, 8 clients", Engine: r.Engine, Want: "≥ 30,000", Measured: c.ClaimsPerSecond, Unit: "/s", Met: c.ClaimsPerSecond >= targetClaimsPerSecond, Note: note},
			&Target{Name: "server CPU per device claimed (100 × 8)", Engine: r.Engine, Want: "≤ 20 µs", Measured: c.ServerCPUPerDev, Unit: "µs", Met: c.ServerCPUPerDev <= targetCPUPerDeviceUS, Note: note},
			&Target{Name: "p99 latency, 100-device requests, 8 clients", Engine: r.Engine, Want: "< 50 ms", Measured: c.P99MS, Unit: "ms", Met: c.P99MS < targetP99MS, Note: note},
		)
		switch r.Engine {
		case "native":
			native = c
		case "wasm":
			wasm = c
		}
	}
	if native != nil && wasm != nil && native.ServerCPUPerDev > 0 {
		ratio := wasm.ServerCPUPerDev / native.ServerCPUPerDev
		out = append(out, &Target{Name: "wasm CPU per device ÷ native (100 × 8)", Engine: "wasm", Want: "≤ 2×", Measured: ratio, Unit: "×", Met: ratio <= targetWasmCPURatio})
	}
	return out
}

// markdown renders the report as a section of BENCHMARKS.md.
func markdown(rep *Report) string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	m := rep.Machine
	p("Measured %s on %d CPUs (%s), %s; load average before the run: %s (1, 5, 15 min). Driver built with %s.\n\n",
		rep.Date, m.CPUs, m.CPUModel, m.Kernel, m.LoadAverage, m.GoVersion)
	p("```sh\n%s\n", rep.Command)
	for _, r := range rep.Runs {
		p("# server (%s): %s\n", r.Engine, r.ServerCommand)
	}
	p("```\n\n")
	s := rep.Settings
	p("%d devices with %d one-time keys and a fallback key each (%d users of %d devices); each cell starts requests for at most %v or %d device-claims, whichever comes first, so every claim hands out a one-time key. The server logs at `%s`. Server CPU is utime+stime of the server process (`/proc/<pid>/stat`); the load driver runs on the same machine and its own CPU is shown too.",
		s.Devices, s.KeysPerDevice, s.Devices/devicesPerUser, devicesPerUser, time.Duration(s.CellSeconds*float64(time.Second)), s.CellClaimsCap, s.ServerLogLevel)
	for _, r := range rep.Runs {
		if r.DB != "SQLite" {
			p(" With %s the database's own processes do the query work and are **not** counted in the server CPU column.", r.DB)
			break
		}
	}
	p("\n\n")
	for _, r := range rep.Runs {
		replicas := ""
		if r.Replicas > 1 {
			replicas = fmt.Sprintf(" (%d server processes on the one database, clients spread over them; server CPU is their sum)", r.Replicas)
		}
		p("Engine **%s**, %s%s: server ready in %.1f s; %d keys uploaded in %.1f s; load average after the upload %s.\n\n",
			r.Engine, r.DB, replicas, r.StartSeconds, r.UploadedKeys, r.UploadSeconds, r.LoadAfterSetup)
	}
	p("| engine | devices/request | clients | requests | device-claims | device-claims/s | p50 | p99 | server CPU/device | driver CPU/device | stopped by |\n")
	p("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|\n")
	for _, r := range rep.Runs {
		for _, c := range r.Cells {
			extra := ""
			if c.FallbackKeys+c.Empty > 0 {
				extra += fmt.Sprintf(" (%d fallback, %d empty!)", c.FallbackKeys, c.Empty)
			}
			if c.Errors > 0 {
				extra += fmt.Sprintf(" (%d errors!)", c.Errors)
			}
			p("| %s | %d | %d | %d | %d%s | %s | %.2f ms | %.2f ms | %.1f µs | %.1f µs | %s |\n",
				r.Engine, c.Size, c.Clients, c.Requests, c.DeviceClaims, extra, thousands(c.ClaimsPerSecond),
				c.P50MS, c.P99MS, c.ServerCPUPerDev, c.ClientCPUPerDev, c.StoppedBy)
		}
	}
	p("%s", sideBySide(rep))
	if len(rep.Targets) > 0 {
		p("\n| target (issue 4) | engine | want | measured | met |\n|---|---|---|--:|---|\n")
		for _, t := range rep.Targets {
			met := "yes"
			if !t.Met {
				met = "**no**"
			}
			if t.Note != "" {
				met += " (" + t.Note + ")"
			}
			val := fmt.Sprintf("%.1f %s", t.Measured, t.Unit)
			switch t.Unit {
			case "/s":
				val = thousands(t.Measured) + "/s"
			case "×":
				val = fmt.Sprintf("%.2f×", t.Measured)
			}
			p("| %s | %s | %s | %s | %s |\n", t.Name, t.Engine, t.Want, val, met)
		}
	}
	return b.String()
}

// sideBySide renders, when Synapse was measured, each cell of keyclaim beside the same cell of
// Synapse: device-claims per second and server CPU per device, and their ratios.
func sideBySide(rep *Report) string {
	var syn *Run
	for _, r := range rep.Runs {
		if r.Engine == "synapse" {
			syn = r
		}
	}
	if syn == nil {
		return ""
	}
	var b strings.Builder
	b.WriteString("\n| engine vs Synapse | devices/request | clients | device-claims/s | Synapse | × | server CPU/device | Synapse | ÷ |\n|---|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, r := range rep.Runs {
		if r == syn {
			continue
		}
		for _, c := range r.Cells {
			sc := syn.cell(c.Size, c.Clients)
			if sc == nil || sc.ClaimsPerSecond == 0 || c.ServerCPUPerDev == 0 {
				continue
			}
			fmt.Fprintf(&b, "| %s | %d | %d | %s | %s | %.1f× | %.1f µs | %.1f µs | %.1f× |\n",
				r.Engine, c.Size, c.Clients, thousands(c.ClaimsPerSecond), thousands(sc.ClaimsPerSecond),
				c.ClaimsPerSecond/sc.ClaimsPerSecond, c.ServerCPUPerDev, sc.ServerCPUPerDev, sc.ServerCPUPerDev/c.ServerCPUPerDev)
		}
	}
	return b.String()
}

// thousands formats a rate with thousands separators.
func thousands(v float64) string {
	s := strconv.FormatInt(int64(math.Round(v)), 10)
	var out []byte
	for i := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	return string(out)
}
