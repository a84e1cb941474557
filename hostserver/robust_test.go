package hostserver_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/keyclaim/keyclaim/hostserver"
)

// Robustness tests of the keys server (issue 4, item 6): many clients claim over real HTTP while
// keys are being uploaded, and every one-time key must be handed out exactly once and none may
// be lost. This file holds the shared machinery (a fleet of devices with tokens, a ledger of
// every key uploaded and received, claimer and uploader workers, the final accounting) and the
// hammer test against one in-process server; robust_process_test.go runs the same machinery
// against server processes: two on one PostgreSQL, and one killed with SIGKILL and restarted.
//
// Every loop is bounded in count and in time; nothing but 127.0.0.1 is contacted.

const (
	robustAlg = "signed_curve25519"
	// robustFallbackID is the key ID of every device's fallback key. One-time key IDs are
	// "signed_curve25519:b<batch>k<index>", zero-padded, so that byte order is upload order.
	robustFallbackID = robustAlg + ":FB"
	// robustUnknownDevice is a device that does not exist: it must be answered with {}.
	robustUnknownDevice = "NO-SUCH-DEVICE"
	// robustSeedEnv fixes the seed of the random choices (which devices a claimer asks for, when
	// the crash test kills the server); every test logs the seed it used.
	robustSeedEnv = "KEYCLAIM_TEST_SEED"
	// robustMaxProblems bounds the problems a ledger keeps (it counts them all).
	robustMaxProblems = 30
)

// robustKeyID returns the key ID of key k of upload batch b.
func robustKeyID(batch, k int) string {
	return fmt.Sprintf("%s:b%05dk%04d", robustAlg, batch, k)
}

// robustKeyValue returns the value uploaded for a one-time key of device d: compact, so that the
// server's canonical form is the same bytes; signed, as uploads require (BRIEF 6).
func robustKeyValue(d int, id string) string {
	return `{"key":"otk-` + strconv.Itoa(d) + `-` + strings.TrimPrefix(id, robustAlg+":") + `",` + robustSignatures + `}`
}

// robustFallbackValue returns the fallback key of device d, in canonical form.
func robustFallbackValue(d int) string {
	return `{"fallback":true,"key":"fb-` + strconv.Itoa(d) + `",` + robustSignatures + `}`
}

// robustSignatures is the signatures member of every robust key (their contents are not checked).
const robustSignatures = `"signatures":{"@robust:hs1.test":{"ed25519:DEV":"sig"}}`

// robustSeed returns the seed of a test's random choices: KEYCLAIM_TEST_SEED or the clock.
func robustSeed(t *testing.T) uint64 {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv(robustSeedEnv); v != "" {
		s, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("%s=%q: %v", robustSeedEnv, v, err)
		}
		seed = s
	}
	t.Logf("seed %d (rerun with %s=%d)", seed, robustSeedEnv, seed)
	return seed
}

// fleetDevice is one device of a fleet and the access token it uploads with.
type fleetDevice struct {
	user, device, token string
}

// fleet is the set of devices a robustness test claims from: users with several devices each,
// one access token per device, and one more token for the claimers.
type fleet struct {
	devs       []fleetDevice
	claimToken string
}

// newFleet returns n devices, perUser of them per user.
func newFleet(n, perUser int) *fleet {
	f := &fleet{claimToken: "tok-robust-claimer"}
	for i := 0; i < n; i++ {
		f.devs = append(f.devs, fleetDevice{
			user:   fmt.Sprintf("@robust%02d:%s", i/perUser, serverName),
			device: fmt.Sprintf("DEV%03d", i),
			token:  fmt.Sprintf("tok-robust-%03d", i),
		})
	}
	return f
}

// tokens returns the token file of the fleet.
func (f *fleet) tokens() map[string]map[string]string {
	out := map[string]map[string]string{
		f.claimToken: {"user_id": "@claimer:" + serverName, "device_id": "CLAIMER"},
	}
	for _, d := range f.devs {
		out[d.token] = map[string]string{"user_id": d.user, "device_id": d.device}
	}
	return out
}

// writeTokens writes the fleet's token file into dir and returns its path.
func (f *fleet) writeTokens(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "robust-tokens.json")
	writeTokenFile(t, path, f.tokens())
	return path
}

// newRobustClient returns an HTTP client for many concurrent requests to a few servers.
func newRobustClient() *http.Client {
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			MaxIdleConns:        64,
			MaxIdleConnsPerHost: 32,
			IdleConnTimeout:     30 * time.Second,
			DisableCompression:  true,
		},
	}
}

// robustPost sends an authenticated POST and returns the status and body; err is a transport
// error (no answer).
func robustPost(ctx context.Context, c *http.Client, url, token string, body []byte) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, nil, fmt.Errorf("building the request: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, &noAnswerError{err}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, &noAnswerError{fmt.Errorf("reading the answer: %w", err)}
	}
	return resp.StatusCode, data, nil
}

// noAnswerError is a request that got no answer: a transport error.
type noAnswerError struct{ err error }

func (e *noAnswerError) Error() string { return "no answer: " + e.err.Error() }
func (e *noAnswerError) Unwrap() error { return e.err }

// notDelivered reports whether a transport error proves that the server never saw the request
// (the connection was refused), as opposed to a request in flight whose answer was lost.
func notDelivered(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED)
}

// ledger records every one-time key uploaded and every key received, and checks each answer as
// it arrives. Its methods are safe for concurrent use.
type ledger struct {
	fl *fleet

	mu           sync.Mutex
	uploaded     []map[string]string // per device: key ID -> value, of every upload sent
	received     []map[string]string // per device: key ID -> who received it (200 answers only)
	drained      []bool              // per device: answered with its fallback key after the uploads ended
	ndrained     atomic.Int32
	inFlightLost []int // per device: claim requests naming it that may have reached the server but got no answer
	fallbacks    int
	unknowns     int
	problems     []string
	nproblems    int
}

func newLedger(fl *fleet) *ledger {
	n := len(fl.devs)
	l := &ledger{fl: fl, uploaded: make([]map[string]string, n), received: make([]map[string]string, n),
		drained: make([]bool, n), inFlightLost: make([]int, n)}
	for d := range n {
		l.uploaded[d] = map[string]string{}
		l.received[d] = map[string]string{}
	}
	return l
}

// problem records a failed check (with the lock held).
func (l *ledger) problemLocked(format string, args ...any) {
	l.nproblems++
	if len(l.problems) < robustMaxProblems {
		l.problems = append(l.problems, fmt.Sprintf(format, args...))
	}
}

// problem records a failed check.
func (l *ledger) problem(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.problemLocked(format, args...)
}

// report fails t with every problem recorded so far.
func (l *ledger) report(t *testing.T) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, p := range l.problems {
		t.Error(p)
	}
	if l.nproblems > len(l.problems) {
		t.Errorf("... and %d more problems", l.nproblems-len(l.problems))
	}
}

// allDrained reports whether every device has answered with its fallback key in a request sent
// after the last upload.
func (l *ledger) allDrained() bool { return int(l.ndrained.Load()) == len(l.fl.devs) }

// uploadBody builds the body of an upload of batch b (n new keys) to device d, together with the
// keys of batch b-1 again when again is set: identical values, most of them already claimed (the
// double-issue race of matrix-spec#1124: a claimed key uploaded again must not be stored again).
// It records the new keys as uploaded before the request is sent, so that a claimer may receive
// them at once.
func (l *ledger) uploadBody(d, batch, n int, again, fallback bool) []byte {
	keys := make(map[string]json.RawMessage, 2*n)
	l.mu.Lock()
	for k := 0; k < n; k++ {
		id := robustKeyID(batch, k)
		v := robustKeyValue(d, id)
		keys[id] = json.RawMessage(v)
		l.uploaded[d][id] = v
	}
	if again && batch > 0 {
		for k := 0; ; k++ {
			id := robustKeyID(batch-1, k)
			v, ok := l.uploaded[d][id]
			if !ok {
				break
			}
			keys[id] = json.RawMessage(v)
		}
	}
	l.mu.Unlock()
	body := map[string]any{"one_time_keys": keys}
	if fallback {
		body["fallback_keys"] = map[string]json.RawMessage{robustFallbackID: json.RawMessage(robustFallbackValue(d))}
	}
	data, err := json.Marshal(body)
	if err != nil {
		panic(err) // only RawMessages this file built
	}
	return data
}

// claimer is one concurrent client that claims keys; last remembers, per device, the last
// one-time key ID it received, to check that it sees a device's keys oldest first.
type claimer struct {
	id       int
	rng      *rand.Rand
	last     []string
	requests int
	lost     int // requests in flight whose answer never arrived
	refused  int // requests the server never saw (connection refused)
}

func newClaimer(id int, seed uint64, devices int) *claimer {
	return &claimer{id: id, rng: rand.New(rand.NewPCG(seed, uint64(id))), last: make([]string, devices)}
}

// pick chooses the devices of the next request: a window of 1 to maxDevices consecutive devices
// at a random place, so that the requests of different claimers overlap.
func (c *claimer) pick(devices, maxDevices int) []int {
	n := 1 + c.rng.IntN(min(maxDevices, devices))
	start := c.rng.IntN(devices)
	out := make([]int, n)
	for i := range out {
		out[i] = (start + i) % devices
	}
	return out
}

// claimBody builds a claim request for the devices devs; withUnknown adds a device that does
// not exist.
func (l *ledger) claimBody(devs []int, withUnknown bool) []byte {
	users := map[string]map[string]string{}
	for _, d := range devs {
		fd := l.fl.devs[d]
		if users[fd.user] == nil {
			users[fd.user] = map[string]string{}
		}
		users[fd.user][fd.device] = robustAlg
	}
	if withUnknown {
		u := l.fl.devs[devs[0]].user
		users[u][robustUnknownDevice] = robustAlg
	}
	data, err := json.Marshal(map[string]any{"one_time_keys": users})
	if err != nil {
		panic(err)
	}
	return data
}

// claimAnswer is the body of a 200 answer to /keys/claim.
type claimAnswer struct {
	OneTimeKeys map[string]map[string]map[string]json.RawMessage `json:"one_time_keys"`
	Failures    map[string]json.RawMessage                       `json:"failures"`
}

// recordAnswer checks a 200 answer of claimer c to a claim for devs and records the keys in it:
// the answer is complete (every requested device, nothing else, one key each; the unknown device
// {}); every one-time key was uploaded to that device with that value and was never received
// before; the claimer sees each device's keys in increasing key ID order, which is upload batch
// order and then key ID order; a fallback key is the device's. afterUploads says that the
// request was sent after the last upload, so a fallback answer means the device is drained.
func (l *ledger) recordAnswer(c *claimer, where string, devs []int, withUnknown, afterUploads bool, body []byte) {
	var ans claimAnswer
	if err := json.Unmarshal(body, &ans); err != nil {
		l.problem("claimer %d (%s): answer is not JSON (%v): %.300s", c.id, where, err, body)
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(ans.Failures) != 0 {
		l.problemLocked("claimer %d (%s): failures for local users: %.300s", c.id, where, body)
	}
	entries := 0
	for _, devices := range ans.OneTimeKeys {
		entries += len(devices)
	}
	want := len(devs)
	if withUnknown {
		want++
		u := l.fl.devs[devs[0]].user
		if keys, ok := ans.OneTimeKeys[u][robustUnknownDevice]; !ok || len(keys) != 0 {
			l.problemLocked("claimer %d (%s): the unknown device %s/%s is not answered with {}: %.300s", c.id, where, u, robustUnknownDevice, body)
		}
		l.unknowns++
	}
	if entries != want {
		l.problemLocked("claimer %d (%s): %d devices answered, %d requested: %.500s", c.id, where, entries, want, body)
	}
	for _, d := range devs {
		fd := l.fl.devs[d]
		keys, ok := ans.OneTimeKeys[fd.user][fd.device]
		if !ok {
			l.problemLocked("claimer %d (%s): incomplete answer: device %s/%s is missing: %.500s", c.id, where, fd.user, fd.device, body)
			continue
		}
		if len(keys) != 1 {
			l.problemLocked("claimer %d (%s): device %s/%s answered with %d keys, want 1 (it has a fallback key)", c.id, where, fd.user, fd.device, len(keys))
			continue
		}
		for id, raw := range keys {
			var value bytes.Buffer
			if err := json.Compact(&value, raw); err != nil {
				l.problemLocked("claimer %d (%s): device %d key %s: bad JSON %s", c.id, where, d, id, raw)
				continue
			}
			if id == robustFallbackID {
				if value.String() != robustFallbackValue(d) {
					l.problemLocked("claimer %d (%s): device %d: fallback key %s, uploaded %s", c.id, where, d, value.String(), robustFallbackValue(d))
				}
				l.fallbacks++
				if afterUploads && !l.drained[d] {
					l.drained[d] = true
					l.ndrained.Add(1)
				}
				continue
			}
			if up, ok := l.uploaded[d][id]; !ok {
				l.problemLocked("claimer %d (%s): device %d: key %s was never uploaded to it", c.id, where, d, id)
			} else if up != value.String() {
				l.problemLocked("claimer %d (%s): device %d: key %s has value %s, uploaded %s", c.id, where, d, id, value.String(), up)
			}
			me := fmt.Sprintf("claimer %d request %d (%s)", c.id, c.requests, where)
			if first, dup := l.received[d][id]; dup {
				l.problemLocked("DOUBLE ISSUE: device %d (%s/%s): one-time key %s handed out to %s and again to %s",
					d, fd.user, fd.device, id, first, me)
			} else {
				l.received[d][id] = me
			}
			if last := c.last[d]; last != "" && id <= last {
				l.problemLocked("claimer %d (%s): device %d gave %s after %s: not oldest batch first", c.id, where, d, id, last)
			}
			c.last[d] = id
		}
	}
}

// claimLoop claims until every device is drained after the uploads ended, ctx ends, maxRequests
// requests were sent, or a request gets no answer (returned: the caller decides whether that is
// a failure). Server i of bases gets every len(bases)-th request. Non-200 answers are problems.
func (l *ledger) claimLoop(ctx context.Context, hc *http.Client, c *claimer, bases []string, uploadsDone *atomic.Bool, maxRequests, maxDevices int) error {
	for i := 0; i < maxRequests; i++ {
		if ctx.Err() != nil || l.allDrained() {
			return nil
		}
		devs := c.pick(len(l.fl.devs), maxDevices)
		withUnknown := c.rng.IntN(8) == 0
		body := l.claimBody(devs, withUnknown)
		after := uploadsDone.Load() // read before sending: no upload after it
		base := bases[(c.id+c.requests)%len(bases)]
		c.requests++
		status, answer, err := robustPost(ctx, hc, base+claimPath, l.fl.claimToken, body)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if notDelivered(err) {
				c.refused++
			} else {
				c.lost++
				l.mu.Lock()
				for _, d := range devs {
					l.inFlightLost[d]++
				}
				l.mu.Unlock()
			}
			return fmt.Errorf("claimer %d: %s: %w", c.id, base, err)
		}
		if status != http.StatusOK {
			l.problem("claimer %d: %s: claim answered %d: %.300s", c.id, base, status, answer)
			continue
		}
		l.recordAnswer(c, base, devs, withUnknown, after, answer)
	}
	return nil
}

// uploader uploads batches to the devices it owns, round robin; next is the next batch label
// per owned device. pending is an upload whose answer never arrived, to be sent again.
type uploader struct {
	devs    []int
	next    map[int]int
	turn    int
	done    int
	pending *pendingUpload
}

// pendingUpload is an upload request that may or may not have been stored.
type pendingUpload struct {
	device int
	body   []byte
}

// uploadOnce sends body as device d's upload to base and checks the answer's counts.
func (l *ledger) uploadOnce(ctx context.Context, hc *http.Client, base string, d int, body []byte) error {
	status, answer, err := robustPost(ctx, hc, base+uploadPath, l.fl.devs[d].token, body)
	if err != nil {
		return err
	}
	if status != http.StatusOK {
		return fmt.Errorf("device %d: upload answered %d: %.300s", d, status, answer)
	}
	var counts struct {
		Counts map[string]int `json:"one_time_key_counts"`
	}
	if err := json.Unmarshal(answer, &counts); err != nil {
		return fmt.Errorf("device %d: upload answer %q: %w", d, answer, err)
	}
	if n, ok := counts.Counts[robustAlg]; !ok || n < 0 {
		return fmt.Errorf("device %d: upload answer without a count of %s: %s", d, robustAlg, answer)
	}
	return nil
}

// uploadLoop sends up to batches uploads of keysPerBatch new keys (each with the previous batch
// again), pausing pause between them, to bases in turn. It stops at the first upload without an
// answer and keeps it as pending (returned as the error); an answer other than 200 is a problem.
func (l *ledger) uploadLoop(ctx context.Context, hc *http.Client, u *uploader, bases []string, batches, keysPerBatch int, pause time.Duration) error {
	for i := 0; i < batches && ctx.Err() == nil; i++ {
		d := u.devs[u.turn%len(u.devs)]
		u.turn++
		batch := u.next[d]
		u.next[d]++
		body := l.uploadBody(d, batch, keysPerBatch, true, false)
		base := bases[u.done%len(bases)]
		if err := l.uploadOnce(ctx, hc, base, d, body); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var na *noAnswerError
			if errors.As(err, &na) {
				u.pending = &pendingUpload{device: d, body: body}
				return fmt.Errorf("upload to %s: %w", base, err)
			}
			l.problem("%v", err)
			continue
		}
		u.done++
		if pause > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(pause):
			}
		}
	}
	return nil
}

// setup uploads the fallback key and batches batches of keysPerBatch one-time keys to every
// device (several uploads each, batch labels 0 to batches-1); any failure is fatal.
func (l *ledger) setup(t *testing.T, ctx context.Context, hc *http.Client, base string, batches, keysPerBatch int) {
	t.Helper()
	for d := range l.fl.devs {
		for b := 0; b < batches; b++ {
			body := l.uploadBody(d, b, keysPerBatch, false, b == 0)
			if err := l.uploadOnce(ctx, hc, base, d, body); err != nil {
				t.Fatalf("initial upload: %v", err)
			}
		}
	}
}

// remaining asks the server for device d's count of unclaimed one-time keys (an empty upload).
func (l *ledger) remaining(ctx context.Context, hc *http.Client, base string, d int) (int, error) {
	status, answer, err := robustPost(ctx, hc, base+uploadPath, l.fl.devs[d].token, []byte(`{}`))
	if err != nil {
		return 0, err
	}
	if status != http.StatusOK {
		return 0, fmt.Errorf("device %d: counts answered %d: %.300s", d, status, answer)
	}
	var counts struct {
		Counts map[string]int `json:"one_time_key_counts"`
	}
	if err := json.Unmarshal(answer, &counts); err != nil {
		return 0, fmt.Errorf("device %d: counts %q: %w", d, answer, err)
	}
	n, ok := counts.Counts[robustAlg]
	if !ok {
		return 0, fmt.Errorf("device %d: counts without %s: %s", d, robustAlg, answer)
	}
	return n, nil
}

// conserve checks per device that uploaded = received + remaining + lost, where lost (keys
// claimed by a transaction whose answer never arrived) is 0 when allowLost is false and at most
// the number of unanswered claim requests naming the device otherwise; and that a drained device
// has nothing left. It returns the totals.
func (l *ledger) conserve(t *testing.T, ctx context.Context, hc *http.Client, base string, allowLost bool) (uploaded, received, lost int) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	for d, fd := range l.fl.devs {
		rem, err := l.remaining(ctx, hc, base, d)
		if err != nil {
			t.Errorf("remaining: %v", err)
			continue
		}
		up, got := len(l.uploaded[d]), len(l.received[d])
		missing := up - got - rem
		uploaded += up
		received += got
		switch {
		case missing < 0:
			t.Errorf("device %d (%s/%s): uploaded %d one-time keys but %d were received and %d remain: keys appeared from nowhere",
				d, fd.user, fd.device, up, got, rem)
		case missing > 0 && !allowLost:
			t.Errorf("device %d (%s/%s): uploaded %d one-time keys = received %d + remaining %d fails: %d lost",
				d, fd.user, fd.device, up, got, rem, missing)
		case missing > l.inFlightLost[d]:
			t.Errorf("device %d (%s/%s): uploaded %d = received %d + remaining %d + %d lost, but only %d claim requests naming it lost their answer",
				d, fd.user, fd.device, up, got, rem, missing, l.inFlightLost[d])
		}
		if missing > 0 {
			lost += missing
		}
		if l.drained[d] && rem != 0 {
			t.Errorf("device %d (%s/%s): answered with its fallback key after the last upload, yet %d one-time keys remain", d, fd.user, fd.device, rem)
		}
		if !l.drained[d] {
			t.Errorf("device %d (%s/%s): never drained (no fallback answer after the last upload)", d, fd.user, fd.device)
		}
	}
	return uploaded, received, lost
}

// hammerSize sizes a hammer run.
type hammerSize struct {
	devices, perUser      int // devices, and devices per user
	batches, keysPerBatch int // initial one-time keys per device: batches uploads of keysPerBatch
	claimers, maxDevices  int // concurrent claimers; devices per claim request: 1..maxDevices
	uploads, uploadKeys   int // uploads during the claims, keys in each
	uploadDevices         int // the uploader feeds devices 0 .. uploadDevices-1, in turn
	uploadPause           time.Duration
	timeout               time.Duration // the claims must drain everything by then
	maxRequestsPerClaimer int
}

// defaultHammerSize is 20 devices x 100 keys, 12 claimers, 40 uploads of 10 more keys.
var defaultHammerSize = hammerSize{
	devices: 20, perUser: 4, batches: 4, keysPerBatch: 25,
	claimers: 12, maxDevices: 8,
	uploads: 40, uploadKeys: 10, uploadDevices: 10, uploadPause: 5 * time.Millisecond,
	timeout: 30 * time.Second, maxRequestsPerClaimer: 20000,
}

// runHTTPHammer uploads keys to a fleet through bases[0], then lets the claimers drain every
// device while one uploader adds batches (all spread over bases), and checks the conservation.
func runHTTPHammer(t *testing.T, bases []string, fl *fleet, size hammerSize) {
	t.Helper()
	seed := robustSeed(t)
	hc := newRobustClient()
	defer hc.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), size.timeout+30*time.Second)
	defer cancel()

	l := newLedger(fl)
	start := time.Now()
	l.setup(t, ctx, hc, bases[0], size.batches, size.keysPerBatch)
	setupTime := time.Since(start)

	up := &uploader{next: map[int]int{}}
	for d := 0; d < size.uploadDevices; d++ {
		up.devs = append(up.devs, d)
		up.next[d] = size.batches
	}
	runCtx, runCancel := context.WithTimeout(ctx, size.timeout)
	defer runCancel()
	var uploadsDone atomic.Bool
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer uploadsDone.Store(true)
		if err := l.uploadLoop(runCtx, hc, up, bases, size.uploads, size.uploadKeys, size.uploadPause); err != nil {
			l.problem("uploader: %v", err)
		}
	}()
	claimers := make([]*claimer, size.claimers)
	start = time.Now()
	for g := range claimers {
		claimers[g] = newClaimer(g, seed, size.devices)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := l.claimLoop(runCtx, hc, claimers[g], bases, &uploadsDone, size.maxRequestsPerClaimer, size.maxDevices); err != nil {
				l.problem("%v", err)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if !l.allDrained() {
		t.Errorf("not every device was drained within %v (%d of %d)", size.timeout, l.ndrained.Load(), size.devices)
	}
	l.report(t)
	uploaded, received, _ := l.conserve(t, ctx, hc, bases[0], false)
	requests := 0
	for _, c := range claimers {
		requests += c.requests
	}
	t.Logf("%d server(s), %d devices, %d claimers, %d uploads during the claims: %d one-time keys uploaded (setup %v), %d received once each, %d fallback answers, %d unknown devices answered {}, in %d claim requests over %v",
		len(bases), size.devices, size.claimers, up.done, uploaded, setupTime.Round(time.Millisecond),
		received, l.fallbacks, l.unknowns, requests, elapsed.Round(time.Millisecond))
}

// TestRobustHammer: one server, 20 devices with 100 one-time keys (4 upload batches) and a
// fallback key each; 12 concurrent claimers ask for overlapping sets of them until every device
// answers with its fallback key, while one goroutine uploads 40 more batches (each with the
// previous batch of the device again). No one-time key may be handed out twice, none may be
// lost (per device: uploaded = received + remaining, and remaining is 0 at the end), every
// answer must be complete, and each claimer must see a device's keys oldest batch first.
func TestRobustHammer(t *testing.T) {
	if testing.Short() {
		t.Skip("hammer skipped in -short mode")
	}
	forEachStore(t, func(t *testing.T, b backend) {
		fl := newFleet(defaultHammerSize.devices, defaultHammerSize.perUser)
		dir := t.TempDir()
		tokens := fl.writeTokens(t, dir)
		ts := startServer(t, b, func(cfg *hostserver.Config) { cfg.Tokens = tokens })
		runHTTPHammer(t, []string{ts.base}, fl, defaultHammerSize)
	})
}
