package core_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/keyclaim/keyclaim/core"
)

// claimFixture is a client claim for n devices, half of them on this server (hs1) and half on a
// remote server (hs2), ten devices per user, with the local results and the remote answer.
type claimFixture struct {
	body   []byte
	local  core.LocalResults
	remote map[core.ServerName]core.RemoteOutcome
	n      int
}

func newClaimFixture(n int) *claimFixture {
	fx := &claimFixture{local: core.LocalResults{}, n: n}
	var body, answer bytes.Buffer
	body.WriteString(`{"one_time_keys":{`)
	answer.WriteString(`{"one_time_keys":{`)
	firstRemote := true
	for i := 0; i < n; i += 10 {
		server := "hs1"
		if (i/10)%2 == 1 {
			server = "hs2"
		}
		user := fmt.Sprintf("@user%06d:%s", i/10, server)
		if i > 0 {
			body.WriteByte(',')
		}
		fmt.Fprintf(&body, "%q:{", user)
		if server == "hs2" {
			if !firstRemote {
				answer.WriteByte(',')
			}
			firstRemote = false
			fmt.Fprintf(&answer, "%q:{", user)
		}
		for j := i; j < min(i+10, n); j++ {
			dev := "DEVICE" + strconv.Itoa(j)
			if j > i {
				body.WriteByte(',')
				if server == "hs2" {
					answer.WriteByte(',')
				}
			}
			fmt.Fprintf(&body, "%q:\"signed_curve25519\"", dev)
			key := fmt.Sprintf(`{"key":"zKbLg+NrIjpnagy+pIY6uPL4ZwEG2v+8F9lmgsnlZzs%06d","signatures":{"%s":{"ed25519:%s":"FLWxXqGbwrb8SM3Y795eB6OA8bwBcoMZFXBqnTn58AYWZSqiD45tlBVcDa2L7RwdKXebW/VzDlnfVJ+9jok1Bw"}}}`, j, user, dev)
			kid := core.KeyID("signed_curve25519:AAAA" + strconv.Itoa(j))
			if server == "hs1" {
				if fx.local[core.UserID(user)] == nil {
					fx.local[core.UserID(user)] = map[core.DeviceID]core.ClaimedKey{}
				}
				fx.local[core.UserID(user)][core.DeviceID(dev)] = core.ClaimedKey{KeyID: kid, Key: []byte(key)}
			} else {
				fmt.Fprintf(&answer, "%q:{%q:%s}", dev, kid, key)
			}
		}
		body.WriteByte('}')
		if server == "hs2" {
			answer.WriteByte('}')
		}
	}
	body.WriteString(`},"timeout":10000}`)
	answer.WriteString(`}}`)
	fx.body = body.Bytes()
	fx.remote = map[core.ServerName]core.RemoteOutcome{"hs2": {Status: 200, Body: answer.Bytes()}}
	return fx
}

// run is the whole server path of a claim, bytes in to bytes out: parse the request, plan,
// complete from the local results and the remote answer, encode.
func (fx *claimFixture) run(buf *[]byte) ([]byte, error) {
	req, err := core.ParseClaimRequest(fx.body, core.ParseOptions{ServerName: "hs1"})
	if err != nil {
		return nil, err
	}
	_ = core.PlanFanout(req, "hs1")
	resp := core.CompleteClient(req, fx.local, fx.remote, core.CompleteOptions{ServerName: "hs1"})
	*buf = resp.AppendJSON((*buf)[:0])
	return *buf, nil
}

// naive is the baseline of issue 2: a plain encoding/json decode of the same input (the request
// and the remote answer) into map[string]any and a re-encode.
func (fx *claimFixture) naive() ([]byte, error) {
	var req, answer map[string]any
	if err := json.Unmarshal(fx.body, &req); err != nil {
		return nil, err
	}
	if err := json.Unmarshal(fx.remote["hs2"].Body, &answer); err != nil {
		return nil, err
	}
	return json.Marshal(map[string]any{"request": req, "answer": answer})
}

var benchSizes = []int{1, 100, 1000, 10000}

// BenchmarkClaim measures parse + plan + complete + encode, with the encoding/json round trip of
// the same input beside it (the "naive" sub-benchmarks). Issue 2's target: at 1,000 devices the
// claim costs at most half of the naive round trip, and allocs/device stays flat as n grows.
func BenchmarkClaim(b *testing.B) {
	for _, n := range benchSizes {
		fx := newClaimFixture(n)
		b.Run(fmt.Sprintf("devices=%d/keyclaim", n), func(b *testing.B) {
			buf := make([]byte, 0, 1<<20)
			b.SetBytes(int64(len(fx.body) + len(fx.remote["hs2"].Body)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := fx.run(&buf); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(testing.AllocsPerRun(3, func() { fx.run(&buf) }))/float64(n), "allocs/device")
		})
		b.Run(fmt.Sprintf("devices=%d/naive-encoding-json", n), func(b *testing.B) {
			b.SetBytes(int64(len(fx.body) + len(fx.remote["hs2"].Body)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := fx.naive(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkInvoke measures the JSON operation that the WebAssembly module exports, natively.
func BenchmarkInvokeCompleteClient(b *testing.B) {
	for _, n := range benchSizes {
		fx := newClaimFixture(n)
		input := completeInput(fx)
		b.Run(fmt.Sprintf("devices=%d", n), func(b *testing.B) {
			b.SetBytes(int64(len(input)))
			b.ReportAllocs()
			for b.Loop() {
				if out := core.Invoke("complete_client", input); !bytes.HasPrefix(out, []byte(`{"result":`)) {
					b.Fatalf("%s", out[:min(len(out), 200)])
				}
			}
		})
	}
}

func completeInput(fx *claimFixture) []byte {
	req, err := core.ParseClaimRequest(fx.body, core.ParseOptions{})
	if err != nil {
		panic(err)
	}
	in := []byte(`{"server_name":"hs1","request":`)
	in = req.AppendJSON(in)
	in = append(in, `,"local":`...)
	in = fx.local.AppendJSON(in, req)
	in = append(in, `,"remote":{"hs2":`...)
	o := fx.remote["hs2"]
	in = o.AppendJSON(in)
	return append(in, "}}"...)
}

// TestClaimFixtureIsComplete guards the benchmark: every device comes back with a key.
func TestClaimFixtureIsComplete(t *testing.T) {
	fx := newClaimFixture(100)
	var buf []byte
	out, err := fx.run(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(out, []byte(`"signed_curve25519:AAAA`)); n != 100 {
		t.Fatalf("%d of 100 devices claimed: %s", n, out)
	}
	if env := core.Invoke("complete_client", completeInput(fx)); !bytes.Equal(env, append(append([]byte(`{"result":`), out...), '}')) {
		t.Fatal("Invoke(complete_client) disagrees with the Go API")
	}
}

// TestAllocationsPerDeviceFlat checks that completion has no quadratic part: allocations per
// device at 10,000 devices are no more than at 1,000 (allocation counts are deterministic, so this
// is not a timing test).
func TestAllocationsPerDeviceFlat(t *testing.T) {
	per := func(n int) float64 {
		fx := newClaimFixture(n)
		buf := make([]byte, 0, 4<<20)
		return testing.AllocsPerRun(2, func() { fx.run(&buf) }) / float64(n)
	}
	small, large := per(1000), per(10000)
	if large > small*1.1 {
		t.Errorf("allocations per device grow with size: %.2f at 1,000, %.2f at 10,000", small, large)
	}
	t.Logf("allocations per device: %.2f at 1,000, %.2f at 10,000", small, large)
}

// manyServersInput is an input of op naming n users, each on a server of its own, every server
// failed: a claim may name tens of thousands of servers (BRIEF 2), and nothing may be quadratic in
// them.
func manyServersInput(op string, n int) []byte {
	var req, failures, remote strings.Builder
	req.WriteString(`{"one_time_keys":{`)
	failures.WriteString(`{"one_time_keys":{},"failures":{`)
	remote.WriteString(`{`)
	for i := range n {
		if i > 0 {
			req.WriteByte(',')
			failures.WriteByte(',')
			remote.WriteByte(',')
		}
		s := "s" + strconv.Itoa(i) + ".example"
		fmt.Fprintf(&req, `"@u%d:%s":{"D":"signed_curve25519"}`, i, s)
		fmt.Fprintf(&failures, `%q:{"status":502,"message":"down"}`, s)
		fmt.Fprintf(&remote, `%q:{"failure":{"status":502,"message":"down"}}`, s)
	}
	req.WriteString(`}}`)
	failures.WriteString(`}}`)
	remote.WriteString(`}`)
	body := strconv.Quote(failures.String())
	switch op {
	case "complete_client":
		return []byte(`{"server_name":"example.org","request":` + req.String() + `,"remote":` + remote.String() + `}`)
	case "complete_upstream":
		return []byte(`{"server_name":"example.org","request":` + req.String() + `,"body":` + body + `}`)
	case "tracker_run":
		return []byte(`{"steps":[{"op":"observe","input":{"now_ms":0,"request":` + req.String() + `,"body":` + body +
			`}},{"op":"plan","input":{"now_ms":1000,"request":` + req.String() + `}}]}`)
	}
	panic(op)
}

// BenchmarkManyServers: 1,000 and 20,000 servers; the time per server must stay about flat (it
// was quadratic: 8 s for complete_client at 20,000 servers, now about 0.15 s).
func BenchmarkManyServers(b *testing.B) {
	for _, op := range []string{"complete_client", "complete_upstream", "tracker_run"} {
		for _, n := range []int{1000, 20000} {
			input := manyServersInput(op, n)
			if out := core.Invoke(op, input); !bytes.HasPrefix(out, []byte(`{"result":`)) {
				b.Fatalf("%s: %.200s", op, out)
			}
			b.Run(fmt.Sprintf("%s/servers=%d", op, n), func(b *testing.B) {
				for b.Loop() {
					core.Invoke(op, input)
				}
				b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/float64(n), "µs/server")
			})
		}
	}
}

// selectKeysInput is the select_keys input of bindings/go's benchmark: n devices, ten per user,
// each with two one-time keys (batches 2 and 1) and a fallback key, one request for all.
func selectKeysInput(n int) []byte {
	const key = `"zKbLg+NrIjpnagy+pIY6uPL4ZwEG2v+8F9lmgsnlZzs"`
	var inv, req strings.Builder
	inv.WriteString(`{`)
	req.WriteString(`{"one_time_keys":{`)
	for d := range n {
		user, dev := fmt.Sprintf("@user%05d:example.org", d/10), fmt.Sprintf("DEVICE%02d", d%10)
		if d%10 == 0 {
			if d > 0 {
				inv.WriteString("},")
				req.WriteString("},")
			}
			fmt.Fprintf(&inv, "%q:{", user)
			fmt.Fprintf(&req, "%q:{", user)
		} else {
			inv.WriteByte(',')
			req.WriteByte(',')
		}
		fmt.Fprintf(&inv, `%q:{"one_time_keys":[{"key_id":"signed_curve25519:A%d","batch":2,"key":%s},{"key_id":"signed_curve25519:B%d","batch":1,"key":%s}],"fallback_keys":[{"key_id":"signed_curve25519:F%d","key":%s,"used":false}]}`,
			dev, d, key, d, key, d, key)
		fmt.Fprintf(&req, `%q:"signed_curve25519"`, dev)
	}
	if n > 0 {
		inv.WriteByte('}')
		req.WriteByte('}')
	}
	inv.WriteByte('}')
	req.WriteString(`},"timeout":10000}`)
	return []byte(`{"inventory":` + inv.String() + `,"requests":[` + req.String() + `]}`)
}

// BenchmarkSelectKeys measures the select_keys operation natively (issue 13's target: at most
// 2 µs per device at 1,000 devices).
func BenchmarkSelectKeys(b *testing.B) {
	for _, n := range []int{1, 100, 1000} {
		input := selectKeysInput(n)
		if out := core.Invoke("select_keys", input); !bytes.HasPrefix(out, []byte(`{"result":`)) {
			b.Fatalf("%.300s", out)
		}
		b.Run(fmt.Sprintf("devices=%d", n), func(b *testing.B) {
			b.SetBytes(int64(len(input)))
			b.ReportAllocs()
			for b.Loop() {
				core.Invoke("select_keys", input)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/1000/float64(b.N)/float64(n), "µs/device")
		})
	}
}
