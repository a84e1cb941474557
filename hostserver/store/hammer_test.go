package store

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// hammerConfig sizes a hammer run. Every loop in it is bounded in count and in time.
type hammerConfig struct {
	devices       int           // devices claimed from, each with its own user
	initialKeys   int           // one-time keys per device before the claimers start (two uploads)
	claimers      int           // goroutines claiming concurrently
	uploads       int           // uploads made by the uploader goroutine while they claim
	keysPerUpload int           // new one-time keys per upload
	perClaim      int           // devices per claim request (0: all); every 8th claim asks all
	timeout       time.Duration // the whole run must end by then
}

// defaultHammer is the run used by the tests of every backend.
var defaultHammer = hammerConfig{
	devices:       4,
	initialKeys:   200,
	claimers:      12,
	uploads:       40,
	keysPerUpload: 10,
	timeout:       2 * time.Minute,
}

// claimRecord is one one-time key that a claimer received.
type claimRecord struct {
	device int
	keyID  string
	value  string
}

// runHammer proves under concurrency that no one-time key is handed out twice and none is lost.
//
// cfg.claimers goroutines claim from the same few devices until they are drained, spread over
// the given stores (several stores on one database stand for several server processes), while
// one goroutine keeps uploading new batches, each together with the previous batch of the device
// again: keys that are being claimed at that very moment are uploaded again (the double-issue
// race of matrix-spec#1124). Key IDs grow with upload order, so every claimer must also see the
// keys of one device come in strictly increasing key ID order (oldest batch first). At the end,
// per device: uploaded = claimed + remaining, and remaining is 0.
func runHammer(t *testing.T, stores []Store, cfg hammerConfig) {
	deadline := time.Now().Add(cfg.timeout)
	user := func(d int) string { return fmt.Sprintf("@hammer%d:example.org", d) }
	keyID := func(batch, k int) string { return fmt.Sprintf("signed_curve25519:b%04dk%04d", batch, k) }
	value := func(d int, id string) string { return fmt.Sprintf(`"v-%d-%s"`, d, id) }

	// uploaded[d] holds every distinct one-time key uploaded to device d (key ID -> value).
	uploaded := make([]map[string]string, cfg.devices)
	batchKeys := func(d, batch, n int) map[string]json.RawMessage {
		keys := make(map[string]json.RawMessage, n)
		for k := 0; k < n; k++ {
			id := keyID(batch, k)
			keys[id] = json.RawMessage(value(d, id))
			uploaded[d][id] = value(d, id)
		}
		return keys
	}
	for d := 0; d < cfg.devices; d++ {
		uploaded[d] = make(map[string]string)
		mustUpload(t, stores[0], user(d), "D", Upload{
			DeviceKeys:   json.RawMessage(fmt.Sprintf(`{"device_id":"D","user_id":%q}`, user(d))),
			OneTimeKeys:  batchKeys(d, 0, cfg.initialKeys/2),
			FallbackKeys: otks(`signed_curve25519:FB="fallback"`),
		})
		mustUpload(t, stores[0], user(d), "D", Upload{OneTimeKeys: batchKeys(d, 1, cfg.initialKeys-cfg.initialKeys/2)})
	}

	var uploaderDone atomic.Bool
	var wg sync.WaitGroup
	var uploadErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer uploaderDone.Store(true)
		s := stores[len(stores)-1]
		for i := 0; i < cfg.uploads && time.Now().Before(deadline); i++ {
			d := i % cfg.devices
			batch := 2 + i
			keys := batchKeys(d, batch, cfg.keysPerUpload)
			// The previous batch of this device again: identical values, mostly claimed already.
			prev := batch - cfg.devices
			if prev < 2 {
				prev = 1
			}
			for k := 0; k < cfg.keysPerUpload; k++ {
				if id := keyID(prev, k); uploaded[d][id] != "" {
					keys[id] = json.RawMessage(uploaded[d][id])
				}
			}
			if _, err := s.Upload(testCtx(t), user(d), "D", Upload{OneTimeKeys: keys}); err != nil {
				uploadErr = fmt.Errorf("upload %d: %w", i, err)
				return
			}
		}
	}()

	results := make([][]claimRecord, cfg.claimers)
	errs := make([]error, cfg.claimers)
	var requests, fallbacks atomic.Int64
	start := time.Now()
	for g := 0; g < cfg.claimers; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := stores[g%len(stores)]
			rng := rand.New(rand.NewPCG(uint64(g), 42))
			last := make([]string, cfg.devices) // the last key ID this claimer got per device
			for iter := 0; iter < 100000; iter++ {
				if time.Now().After(deadline) {
					errs[g] = fmt.Errorf("claimer %d: not drained by the deadline", g)
					return
				}
				finished := uploaderDone.Load() // read before the claim: no upload after it
				k := cfg.devices
				if cfg.perClaim > 0 && iter%8 != 7 {
					k = cfg.perClaim
				}
				wants := make([]Want, 0, k+2)
				for _, d := range rng.Perm(cfg.devices)[:k] {
					wants = append(wants, Want{user(d), "D", SignedCurve25519})
				}
				wants = append(wants, Want{user(0), "NO-SUCH-DEVICE", SignedCurve25519})
				if rng.IntN(4) == 0 {
					wants = append(wants, wants[0]) // a duplicate: claimed once
				}
				got, err := s.Claim(testCtx(t), wants)
				if err != nil {
					errs[g] = fmt.Errorf("claimer %d: %w", g, err)
					return
				}
				requests.Add(1)
				if len(got) != k {
					errs[g] = fmt.Errorf("claimer %d: %d keys for %d devices (each has a fallback key): %+v", g, len(got), k, got)
					return
				}
				allFallback := true
				for _, c := range got {
					var d int
					if _, err := fmt.Sscanf(c.User, "@hammer%d:example.org", &d); err != nil || c.Device != "D" {
						errs[g] = fmt.Errorf("claimer %d: key from unexpected device %s/%s", g, c.User, c.Device)
						return
					}
					if c.Fallback {
						fallbacks.Add(1)
						continue
					}
					allFallback = false
					if c.KeyID <= last[d] {
						errs[g] = fmt.Errorf("claimer %d: device %d gave %s after %s: not oldest first", g, d, c.KeyID, last[d])
						return
					}
					last[d] = c.KeyID
					results[g] = append(results[g], claimRecord{device: d, keyID: c.KeyID, value: string(c.Key)})
				}
				if finished && allFallback && k == cfg.devices {
					return
				}
				if iter%50 == 0 {
					d := rng.IntN(cfg.devices)
					if c, err := s.Counts(testCtx(t), user(d), "D"); err != nil {
						errs[g] = fmt.Errorf("claimer %d: counts: %w", g, err)
						return
					} else if _, ok := c[SignedCurve25519]; !ok || c[SignedCurve25519] < 0 {
						errs[g] = fmt.Errorf("claimer %d: bad counts %v", g, c)
						return
					}
				}
			}
			errs[g] = fmt.Errorf("claimer %d: not drained after 100000 claims", g)
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if uploadErr != nil {
		t.Fatal(uploadErr)
	}
	for _, err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	// Every one-time key was handed out exactly once, with the value uploaded, and none is lost.
	claimed := make([]map[string]int, cfg.devices)
	for d := range claimed {
		claimed[d] = make(map[string]int)
	}
	total := 0
	for g, recs := range results {
		for _, r := range recs {
			total++
			if claimed[r.device][r.keyID]++; claimed[r.device][r.keyID] == 2 {
				t.Errorf("device %d: key %s handed out twice (second time to claimer %d)", r.device, r.keyID, g)
			}
			if want, ok := uploaded[r.device][r.keyID]; !ok {
				t.Errorf("device %d: key %s was never uploaded", r.device, r.keyID)
			} else if r.value != want {
				t.Errorf("device %d: key %s has value %s, uploaded %s", r.device, r.keyID, r.value, want)
			}
		}
	}
	for d := 0; d < cfg.devices; d++ {
		remaining := mustCounts(t, stores[0], user(d), "D")[SignedCurve25519]
		if len(uploaded[d]) != len(claimed[d])+remaining {
			t.Errorf("device %d: uploaded %d keys, claimed %d + remaining %d", d, len(uploaded[d]), len(claimed[d]), remaining)
		}
		if remaining != 0 {
			t.Errorf("device %d: %d keys left after the claimers drained it", d, remaining)
		}
		for id := range uploaded[d] {
			if claimed[d][id] == 0 {
				t.Errorf("device %d: key %s was uploaded but never handed out", d, id)
			}
		}
	}
	t.Logf("%d stores, %d claimers: %d claim requests, %d one-time keys and %d fallback keys handed out in %v (%.0f device-claims/s)",
		len(stores), cfg.claimers, requests.Load(), total, fallbacks.Load(), elapsed.Round(time.Millisecond),
		float64(total+int(fallbacks.Load()))/elapsed.Seconds())
}
