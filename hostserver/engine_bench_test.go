package hostserver

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/keyclaim/keyclaim/core"
)

// BenchmarkEngines runs what the claim handler asks of its engine for one client claim of n
// local devices (ParseClaim, then CompleteClient with a key for every device), natively and
// through the wasm module, and reports the CPU cost per device. The store and HTTP are left
// out: this is the part of a claim that --engine changes.
func BenchmarkEngines(b *testing.B) {
	ctx := context.Background()
	opts := EngineOptions{ServerName: "bench.test", Limits: core.DefaultLimits()}
	wasm, err := NewWasmEngine(ctx, opts, "")
	if err != nil {
		b.Fatal(err)
	}
	defer wasm.Close(ctx)
	engines := []Engine{NewNativeEngine(opts), wasm}
	for _, n := range []int{1, 100, 1000} {
		body, local := engineBenchInput(n)
		for _, e := range engines {
			b.Run(fmt.Sprintf("devices=%d/%s", n, e.Name()), func(b *testing.B) {
				for b.Loop() {
					req, err := e.ParseClaim(ctx, core.FlavourClient, body, "")
					if err != nil {
						b.Fatal(err)
					}
					if _, _, err := e.CompleteClient(ctx, req, local, nil, core.ModeMSC4072); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n)/1000, "µs/device")
			})
		}
	}
}

// engineBenchInput is a claim body for n devices of bench.test (10 per user) and a claimed key
// for each, as the store returns them.
func engineBenchInput(n int) ([]byte, core.LocalResults) {
	var b strings.Builder
	local := core.LocalResults{}
	b.WriteString(`{"one_time_keys":{`)
	for d := 0; d < n; d++ {
		user := core.UserID(fmt.Sprintf("@user%05d:bench.test", d/10))
		dev := core.DeviceID(fmt.Sprintf("DEVICE%02d", d%10))
		if d%10 == 0 {
			if d > 0 {
				b.WriteString("},")
			}
			fmt.Fprintf(&b, "%q:{", user)
			local[user] = map[core.DeviceID]core.ClaimedKey{}
		} else {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `%q:"signed_curve25519"`, dev)
		local[user][dev] = core.ClaimedKey{
			KeyID: core.KeyID(fmt.Sprintf("signed_curve25519:AAAA%04d", d)),
			Key: []byte(fmt.Sprintf(`{"key":"zKbLg+NrIjpnagy+pIY6uPL4ZwEG2v+8F9lmgsnlZzs","signatures":{%q:{"ed25519:%s":"FLWxXqGbwrb8SM3Y795eB6OA8bwBcoMZFXBqnTn58AYWZSqiD45tlBVcDa2L7RwdKXebW/VzDlnfVJ+9jok1Bw"}}}`,
				user, dev)),
		}
	}
	if n > 0 {
		b.WriteByte('}')
	}
	b.WriteString(`}}`)
	return []byte(b.String()), local
}
