// Command mautrixgo-harness runs mautrix-go's crypto (the pure-Go Olm, build tag goolm) in the
// client compatibility matrix (../README.md). It is its own Go module so that the project's
// go.mod does not gain mautrix-go's dependencies.
//
//	go build -tags goolm -o ../../../var/compat/bin/mautrixgo-harness .
//	mautrixgo-harness STANDIN_URL TOKEN_FILE
//
// Every device is a mautrix.Client with its own OlmMachine (memory store). mautrix-go's own code
// uploads the keys (ShareKeys), queries (FetchKeys), claims and encrypts (EncryptToDevices: the
// claim of createOutboundSessions, which ShareGroupSession uses too, then one Olm message per
// device), and each receiving device's machine decrypts (HandleEncryptedEvent): no /sync, no
// /sendToDevice. mautrix-go uploads no fallback key, so FALLBACKONLY's is made with its Olm
// account (goolm) and signed by it.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

const stepTimeout = 20 * time.Second

var (
	bobDevices = []string{"DEVKEYSONLY", "EXHAUSTED", "FALLBACKONLY", "KEYED"}
	ping       = event.Type{Type: "org.keyclaim.compat.ping", Class: event.ToDeviceEventType}
)

type result struct {
	Library   string   `json:"library"`
	Version   string   `json:"version"`
	Olm       string   `json:"olm"`
	Fallback  string   `json:"fallback"`
	Sessions  []string `json:"sessions"`
	Decrypted []string `json:"decrypted"`
	Crash     string   `json:"crash"`
	Hang      string   `json:"hang"`
	Logs      []string `json:"logs"`
}

// logSink keeps every warning and error the library logs (zerolog JSON lines) as
// "LEVEL message key=value ...".
type logSink struct {
	mu    sync.Mutex
	lines []string
}

func (s *logSink) Write(p []byte) (int, error) {
	os.Stderr.Write(p)
	var m map[string]any
	if json.Unmarshal(p, &m) == nil {
		line := fmt.Sprintf("%s %v", strings.ToUpper(fmt.Sprint(m["level"])), m["message"])
		var keys []string
		for k := range m {
			// Keys, hashes and IDs differ on every run: left out, so that the lines compare.
			if k != "level" && k != "message" && k != "time" && !strings.Contains(k, "key") &&
				!strings.Contains(k, "hash") && !strings.HasSuffix(k, "session_id") && k != "trace_id" && k != "peer_otk_id" {
				keys = append(keys, k)
			}
		}
		sort.Strings(keys)
		for _, k := range keys {
			line += fmt.Sprintf(" %s=%v", k, m[k])
		}
		s.mu.Lock()
		s.lines = append(s.lines, line)
		s.mu.Unlock()
	}
	return len(p), nil
}

type noRooms struct{}

func (noRooms) IsEncrypted(context.Context, id.RoomID) (bool, error) { return false, nil }
func (noRooms) GetEncryptionEvent(context.Context, id.RoomID) (*event.EncryptionEventContent, error) {
	return nil, nil
}
func (noRooms) GetHistoryVisibility(context.Context, id.RoomID) (*event.HistoryVisibilityEventContent, error) {
	return nil, nil
}
func (noRooms) FindSharedRooms(context.Context, id.UserID) ([]id.RoomID, error) { return nil, nil }

type harness struct {
	base     string
	devices  map[string]struct{ user, token string }
	res      result
	machines map[string]*crypto.OlmMachine
}

// stop ends the scenario after a crash or a hang (already recorded).
type stop struct{}

// step runs one step of the library's code, bounded in time; a panic or an error out of it is
// a crash, a step that does not return in time a hang.
func (h *harness) step(name string, f func(ctx context.Context) error) {
	ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
	defer cancel()
	done := make(chan string, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				fmt.Fprintf(os.Stderr, "panic in %s: %v\n%s", name, r, debug.Stack())
				done <- fmt.Sprintf("panic: %v (in %s)", r, name)
			}
		}()
		if err := f(ctx); err != nil {
			done <- fmt.Sprintf("error: %v (in %s)", err, name)
			return
		}
		done <- ""
	}()
	select {
	case crash := <-done:
		if crash != "" {
			h.res.Crash = crash
			fmt.Println("CRASH " + crash)
			panic(stop{})
		}
	case <-time.After(stepTimeout + 2*time.Second):
		h.res.Hang = fmt.Sprintf("%s did not finish within %s", name, stepTimeout)
		fmt.Println("HANG " + h.res.Hang)
		panic(stop{})
	}
}

func (h *harness) control(name string) {
	resp, err := http.Post(h.base+"/_compat/"+name, "application/json", strings.NewReader("{}"))
	if err != nil {
		panic(fmt.Sprintf("stand-in %s: %v", name, err))
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(resp.Body)
	fmt.Printf("stand-in %s: %s\n", name, strings.TrimSpace(buf.String()))
}

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: mautrixgo-harness STANDIN_URL TOKEN_FILE")
		os.Exit(2)
	}
	h := &harness{base: strings.TrimRight(os.Args[1], "/"), machines: map[string]*crypto.OlmMachine{}}
	h.res = result{Library: "mautrix-go", Version: moduleVersion("maunium.net/go/mautrix"), Olm: "goolm (pure Go)",
		Sessions: []string{}, Decrypted: []string{}, Logs: []string{}}
	raw, err := os.ReadFile(os.Args[2])
	if err != nil {
		panic(err)
	}
	var tokens map[string]struct {
		UserID   string `json:"user_id"`
		DeviceID string `json:"device_id"`
	}
	if err := json.Unmarshal(raw, &tokens); err != nil {
		panic(err)
	}
	h.devices = map[string]struct{ user, token string }{}
	for tok, w := range tokens {
		h.devices[w.DeviceID] = struct{ user, token string }{w.UserID, tok}
	}
	sink := &logSink{}
	func() {
		defer func() {
			if r := recover(); r != nil {
				if _, ok := r.(stop); !ok {
					h.res.Crash = fmt.Sprintf("panic: %v (in harness)", r)
					fmt.Fprintf(os.Stderr, "%s\n", debug.Stack())
				}
			}
		}()
		h.scenario(zerolog.New(sink).Level(zerolog.WarnLevel).With().Timestamp().Logger())
	}()
	sink.mu.Lock()
	h.res.Logs = append(h.res.Logs, sink.lines...)
	sink.mu.Unlock()
	sort.Strings(h.res.Sessions)
	sort.Strings(h.res.Decrypted)
	out, _ := json.Marshal(h.res)
	fmt.Println("COMPAT-RESULT " + string(out))
}

func (h *harness) scenario(log zerolog.Logger) {
	ctx := context.Background()
	for dev, w := range h.devices {
		if dev == "DRAIN" {
			continue
		}
		cli, err := mautrix.NewClient(h.base, id.UserID(w.user), w.token)
		if err != nil {
			panic(err)
		}
		cli.DeviceID = id.DeviceID(dev)
		mach := crypto.NewOlmMachine(cli, &log, crypto.NewMemoryStore(nil), noRooms{})
		if err := mach.Load(ctx); err != nil {
			panic(err)
		}
		h.machines[dev] = mach
	}
	alice := h.machines["ALICE"]
	bob := id.UserID(h.devices["KEYED"].user)

	// 1. Uploads, by mautrix-go.
	for dev, mach := range h.machines {
		h.step("ShareKeys "+dev, func(ctx context.Context) error { return mach.ShareKeys(ctx, 0) })
	}
	h.uploadFallback(ctx, h.machines["FALLBACKONLY"])
	h.control("ready")

	// 2. Query, by mautrix-go.
	var known map[id.DeviceID]*id.Device
	h.step("FetchKeys", func(ctx context.Context) error {
		all, err := alice.FetchKeys(ctx, []id.UserID{bob}, true)
		known = all[bob]
		return err
	})
	var names []string
	for d := range known {
		names = append(names, string(d))
	}
	sort.Strings(names)
	fmt.Printf("alice knows bob's devices %v\n", names)

	// 3. Claim and encrypt, by mautrix-go, for all of them at once.
	nonces := map[id.DeviceID]string{}
	req := &mautrix.ReqSendToDevice{Messages: map[id.UserID]map[id.DeviceID]*event.Content{bob: {}}}
	for d := range known {
		b := make([]byte, 8)
		_, _ = rand.Read(b)
		nonces[d] = hex.EncodeToString(b)
		req.Messages[bob][d] = &event.Content{Raw: map[string]any{"nonce": nonces[d]}}
	}
	var encrypted *mautrix.ReqSendToDevice
	func() {
		defer func() {
			h.control("claimed")
			if r := recover(); r != nil {
				if _, ok := r.(stop); !ok || h.res.Hang != "" {
					panic(r)
				}
			}
		}()
		h.step("EncryptToDevices", func(ctx context.Context) error {
			var err error
			encrypted, err = alice.EncryptToDevices(ctx, ping, req)
			return err
		})
	}()

	// 4. Sessions, and the payloads: each device's own machine decrypts its own.
	for d, dev := range known {
		if alice.CryptoStore.HasSession(ctx, dev.IdentityKey) {
			h.res.Sessions = append(h.res.Sessions, string(d))
		}
	}
	if encrypted == nil {
		return
	}
	for d, content := range encrypted.Messages[bob] {
		mach := h.machines[string(d)]
		if mach == nil {
			continue
		}
		// As a sync would deliver it: JSON, parsed by mautrix's own event types.
		wire, err := json.Marshal(map[string]any{"type": event.ToDeviceEncrypted.Type, "sender": alice.Client.UserID, "content": content})
		if err != nil {
			panic(err)
		}
		var evt event.Event
		if err := json.Unmarshal(wire, &evt); err != nil {
			panic(err)
		}
		evt.Type.Class = event.ToDeviceEventType
		if err := evt.Content.ParseRaw(evt.Type); err != nil {
			panic(err)
		}
		got := mach.HandleEncryptedEvent(ctx, &evt)
		if got != nil && got.Type == ping && fmt.Sprint(got.Content.Raw["nonce"]) == nonces[d] {
			h.res.Decrypted = append(h.res.Decrypted, string(d))
			fmt.Printf("%s decrypted the payload\n", d)
		} else {
			fmt.Printf("%s did not decrypt the payload: %+v\n", d, got)
		}
	}
}

// uploadFallback makes a fallback key with the device's goolm account, signs it with the
// account's ed25519 key and uploads it through the device's mautrix.Client.
func (h *harness) uploadFallback(ctx context.Context, mach *crypto.OlmMachine) {
	acct, ok := mach.GetAccount().Internal.(interface {
		GenFallbackKey() error
		FallbackKey() map[string]id.Curve25519
		MarkKeysAsPublished()
	})
	if !ok {
		panic(fmt.Sprintf("the Olm account %T has no fallback key functions", mach.GetAccount().Internal))
	}
	if err := acct.GenFallbackKey(); err != nil {
		panic(err)
	}
	user, dev := mach.Client.UserID, mach.Client.DeviceID
	keys := map[string]any{}
	for keyID, key := range acct.FallbackKey() {
		canonical := fmt.Sprintf(`{"fallback":true,"key":%q}`, key)
		sig, err := mach.GetAccount().Internal.Sign([]byte(canonical))
		if err != nil {
			panic(err)
		}
		keys["signed_curve25519:"+keyID] = map[string]any{"key": key, "fallback": true,
			"signatures": map[string]any{string(user): map[string]string{"ed25519:" + string(dev): string(sig)}}}
	}
	url := mach.Client.BuildClientURL("v3", "keys", "upload")
	if _, err := mach.Client.MakeRequest(ctx, http.MethodPost, url, map[string]any{"fallback_keys": keys}, nil); err != nil {
		panic(fmt.Sprintf("upload the fallback key: %v", err))
	}
	acct.MarkKeysAsPublished()
	h.res.Fallback = "harness"
}

func moduleVersion(path string) string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, m := range bi.Deps {
			if m.Path == path {
				return strings.TrimPrefix(m.Version, "v")
			}
		}
	}
	return "unknown"
}
