package hostserver_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/keyclaim/keyclaim/core"
	"github.com/keyclaim/keyclaim/hostserver"
)

// A remote server chooses its error text. Copied as it came, one 500 answer with a 600 KB
// "error" and a 300 KB "errcode" made a 900 KB answer to the client, and an errcode "M_X\n"
// passed. Every failures entry (claims and key queries, both engines) now has a message of at
// most core.MaxFailureMessageBytes, cut on a UTF-8 boundary and marked with "…", and an errcode
// only when core.IsErrcode accepts it; control characters stay, escaped.
func TestFederationRemoteErrorBounded(t *testing.T) {
	hugeError := strings.Repeat("é", 300000)                             // 600 KB
	hugeCode := "M_" + strings.Repeat("A", 300000)                       // 300 KB
	huge := `{"errcode":"` + hugeCode + `","error":"` + hugeError + `"}` // no "N": answer replaces it
	cut := strings.Repeat("é", 510) + "…"                                // 1,020 bytes of é (1,021 would split one) and the mark
	behaviours := map[string]map[string]fakeBehaviour{
		"huge-error.fake.test":   {"claim": answer(500, huge)},
		"bad-errcode.fake.test":  {"claim": answer(400, `{"errcode":"M_X\n","error":"bad\u0000thing"}`)},
		"q-huge-error.fake.test": {"query": answer(500, huge)},
	}
	for _, engine := range []string{"native", "wasm"} {
		t.Run(engine, func(t *testing.T) {
			ln := listenLoopback(t)
			fake := startFakeRemote(t, routeTo(t, ln), behaviours)
			hs1 := startServerOn(t, sqliteBackend, ln, func(cfg *hostserver.Config) {
				cfg.Engine = engine
				cfg.Federation = nil // the real client
				for name := range behaviours {
					cfg.FederationResolve[core.ServerName(name)] = fake.url
				}
			})

			req := claimRequest{"@u:huge-error.fake.test": devicesOf("D1"), "@u:bad-errcode.fake.test": devicesOf("D1")}
			got := hs1.ok(claimPath, aliceToken, req.body(5000))
			want := `{"failures":{"bad-errcode.fake.test":{"message":"bad\u0000thing","status":400},` +
				`"huge-error.fake.test":{"message":"` + cut + `","status":500}},"one_time_keys":{}}`
			wantBody(t, "claim", got, want)
			checkCompleteAnswer(t, got, req, "msc4072", []core.ServerName{"bad-errcode.fake.test", "huge-error.fake.test"})

			got = hs1.ok(queryPath, aliceToken, `{"device_keys":{"@u:q-huge-error.fake.test":[]},"timeout":5000}`)
			var answer struct {
				Failures map[string]map[string]any `json:"failures"`
			}
			if err := json.Unmarshal([]byte(got), &answer); err != nil {
				t.Fatalf("%v: %s", err, got)
			}
			f := answer.Failures["q-huge-error.fake.test"]
			if f["message"] != cut || f["status"] != float64(500) || f["errcode"] != nil || len(got) > 2048 {
				t.Errorf("query failure %v, want message %d bytes ending in …, status 500, no errcode; answer of %d bytes", f, len(cut), len(got))
			}
		})
	}
}
