package proxy_test

import (
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keyclaim/keyclaim/hostserver/proxy"
)

// A claim for a very large room through the proxy (BRIEF section 2: "A client joining a very
// large room may legitimately claim for tens of thousands of devices at once"): 40,000 devices of
// 4,000 users, half of them on the upstream's own server and half on a remote one (the upstream
// answers for those after its own federation request), every device with a one-time key the size
// of a real signed curve25519 key. fakeUpstream answers with every key, about 10 MB: more than
// the fixed 8 MiB that alone bounded the upstream's answer and made the proxy refuse it after
// the upstream had handed every key out.

const (
	bigUsers          = 4000
	bigDevicesPerUser = 10
	bigDevices        = bigUsers * bigDevicesPerUser
)

// bigClaim is a claim of bigDevices devices and the answers around it.
type bigClaim struct {
	request string // the claim request body
	answer  string // the fake upstream's answer: a key for every device, in request order
	want    string // the proxy's completed answer: the same keys, canonical JSON
}

// unpadded is the unpadded standard base64 of Matrix keys and signatures.
var unpadded = base64.RawStdEncoding

// makeBigClaim builds the claim, deterministically: user IDs of 21 characters, device IDs of 10
// capital letters as Element makes them, key IDs as vodozemac makes them, a 32-byte key and a
// 64-byte signature of the device (random-looking bytes of the right sizes: nobody here verifies
// signatures, and computing 40,000 ed25519 signatures would take most of the test's time), in
// the shape clients upload (about 250 bytes per device in the answer).
func makeBigClaim() bigClaim {
	type device struct{ id, entry string } // entry: "ID":{"signed_curve25519:...":{...}}
	type user struct {
		id      string
		devices []device
	}
	users := make([]user, bigUsers)
	for i := range users {
		server := upstreamName
		if i%2 == 1 {
			server = "hs2.test"
		}
		u := user{id: fmt.Sprintf("@member%05d:%s", i, server)}
		for j := range bigDevicesPerUser {
			n := uint32(i*bigDevicesPerUser + j)
			seed := sha256.Sum256(binary.BigEndian.AppendUint32([]byte("keyclaim proxy big device "), n))
			var id [10]byte
			for k := range id {
				id[k] = 'A' + seed[k]%26
			}
			var kid [8]byte
			binary.BigEndian.PutUint64(kid[:], uint64(n)+1)
			sig := sha512.Sum512(seed[:])
			key := `{"key":"` + unpadded.EncodeToString(seed[:]) + `","signatures":{"` + u.id + `":{"ed25519:` + string(id[:]) + `":"` + unpadded.EncodeToString(sig[:]) + `"}}}`
			u.devices = append(u.devices, device{string(id[:]), `"` + string(id[:]) + `":{"signed_curve25519:` + unpadded.EncodeToString(kid[:]) + `":` + key + `}`})
		}
		users[i] = u
	}

	var req, answer, want strings.Builder
	req.WriteString(`{"timeout":10000,"one_time_keys":{`)
	answer.WriteString(`{"one_time_keys":{`)
	for i, u := range users {
		if i > 0 {
			req.WriteByte(',')
			answer.WriteByte(',')
		}
		req.WriteString(`"` + u.id + `":{`)
		answer.WriteString(`"` + u.id + `":{`)
		for j, d := range u.devices {
			if j > 0 {
				req.WriteByte(',')
				answer.WriteByte(',')
			}
			req.WriteString(`"` + d.id + `":"signed_curve25519"`)
			answer.WriteString(d.entry)
		}
		req.WriteByte('}')
		answer.WriteByte('}')
	}
	req.WriteString(`}}`)
	answer.WriteString(`},"failures":{}}`)

	// The completed answer: users and devices in code point order, as canonical JSON has them.
	slices.SortFunc(users, func(a, b user) int { return strings.Compare(a.id, b.id) })
	want.WriteString(`{"failures":{},"one_time_keys":{`)
	for i, u := range users {
		if i > 0 {
			want.WriteByte(',')
		}
		slices.SortFunc(u.devices, func(a, b device) int { return strings.Compare(a.id, b.id) })
		want.WriteString(`"` + u.id + `":{`)
		for j, d := range u.devices {
			if j > 0 {
				want.WriteByte(',')
			}
			want.WriteString(d.entry)
		}
		want.WriteByte('}')
	}
	want.WriteString(`}}`)
	return bigClaim{request: req.String(), answer: answer.String(), want: want.String()}
}

func TestClaimTensOfThousandsOfDevices(t *testing.T) {
	start := time.Now()
	big := makeBigClaim()
	t.Logf("made a claim of %d devices in %s: request %d bytes, answer %d bytes (%d per device)",
		bigDevices, time.Since(start).Round(time.Millisecond), len(big.request), len(big.answer), len(big.answer)/bigDevices)
	if int64(len(big.answer)) <= proxy.DefaultMaxUpstreamBody {
		t.Fatalf("the answer (%d bytes) does not exceed the %d-byte floor: the test proves nothing", len(big.answer), proxy.DefaultMaxUpstreamBody)
	}
	// The bound on the answer to this claim with the defaults: 8 MiB plus 2 KiB per device.
	bound := proxy.DefaultMaxUpstreamBody + bigDevices*proxy.DefaultUpstreamBodyPerDevice

	// streamed answers with body, flushed in 1 MiB pieces: no Content-Length.
	streamed := func(body string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			for i := 0; i < len(body); i += 1 << 20 {
				if _, err := io.WriteString(w, body[i:min(i+1<<20, len(body))]); err != nil {
					return // the proxy stopped reading
				}
				w.(http.Flusher).Flush()
			}
		}
	}
	cases := []struct {
		name      string
		answer    http.HandlerFunc
		perDevice int64 // Config.UpstreamBodyPerDevice
		status    int
		body      string // byte for byte (the completed answer is canonical JSON, complete, no null)
		result    proxy.Result
	}{
		{
			name:   "every key delivered",
			answer: answerWith(200, "application/json", big.answer, "Content-Length", strconv.Itoa(len(big.answer))),
			status: 200,
			body:   big.want,
			result: proxy.ResultCompleted,
		},
		{
			name:   "every key delivered, streamed",
			answer: streamed(big.answer),
			status: 200,
			body:   big.want,
			result: proxy.ResultCompleted,
		},
		{
			// Refused from the Content-Length alone: the body is not read.
			name: "an answer one byte over the bound",
			answer: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.Header().Set("Content-Length", strconv.FormatInt(bound+1, 10))
				w.WriteHeader(200)
				_, _ = io.WriteString(w, big.answer) // then the handler ends short: the connection closes
			},
			status: 502,
			body:   tooLargeBody(bound),
			result: proxy.ResultTooLarge,
		},
		{
			// A fixed bound (no allowance per device) is what the proxy had: the same honest
			// answer, streamed, is refused at the floor, the existing failure.
			name:      "a fixed bound refuses it",
			answer:    streamed(big.answer),
			perDevice: -1,
			status:    502,
			body:      tooLargeBody(proxy.DefaultMaxUpstreamBody),
			result:    proxy.ResultTooLarge,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			up := newFakeUpstream(t, tc.answer)
			tp := startProxy(t, up.srv.URL, func(cfg *proxy.Config) {
				cfg.TimeoutMargin = time.Minute // moves megabytes: generous, for race-enabled runs
				cfg.UpstreamBodyPerDevice = tc.perDevice
			})
			start := time.Now()
			r := send(t, http.MethodPost, tp.base+proxy.ClaimPathV3, token, big.request)
			t.Logf("answered %d (%d bytes) in %s", r.status, len(r.body), time.Since(start).Round(time.Millisecond))
			if r.status != tc.status || r.body != tc.body {
				t.Fatalf("got %d %.300s (%d bytes)\nwant %d %.300s (%d bytes)", r.status, r.body, len(r.body), tc.status, tc.body, len(tc.body))
			}
			if seen := up.requests(); len(seen) != 1 || string(seen[0].body) != big.request {
				t.Errorf("the upstream received %d requests, want 1 with the original body", len(seen))
			}
			o := tp.observation(t)
			if o.Result != tc.result || o.Devices != bigDevices || o.Filled != 0 || o.Dropped != 0 {
				t.Errorf("observation %v, want result %s, %d devices, none filled or dropped", o, tc.result, bigDevices)
			}
		})
	}
}
