package core

import (
	"slices"
	"strings"
)

// This file holds the operations over state: the in-memory inventory of select_keys and the
// retry tracker.

func opSelectKeys(buf, input []byte) ([]byte, error) {
	f, err := readFields("select_keys input", input, "inventory", "requests")
	if err != nil {
		return nil, err
	}
	inv := Inventory{}
	if raw, ok := f.get("inventory"); ok {
		if inv, err = readInventory(raw); err != nil {
			return nil, err
		}
	}
	raw, ok := f.get("requests")
	if !ok {
		return nil, errorf(CodeBadJSON, "requests is required")
	}
	var reqs []*ClaimRequest
	d := decoder{data: raw}
	if k, ok := d.kind(); !ok || k != KindArray {
		return nil, errorf(CodeBadJSON, "requests must be an array of claim requests")
	}
	err = d.array(func() error {
		d.ws()
		start := d.pos
		if err := d.skip(); err != nil {
			return err
		}
		req, err := ParseClaimRequest(raw[start:d.pos], ParseOptions{Limits: internalLimits})
		if err != nil {
			e := asError(err)
			return &Error{Code: e.Code, Message: "requests[" + itoa(len(reqs)) + "]: " + e.Message}
		}
		reqs = append(reqs, req)
		return nil
	})
	if err != nil {
		return nil, err
	}
	buf = append(buf, `{"inventory":`...)
	results := make([]LocalResults, len(reqs))
	for i, req := range reqs {
		results[i] = inv.Claim(req.Users)
	}
	buf = inv.appendJSON(buf)
	buf = append(buf, `,"results":[`...)
	for i, req := range reqs {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = results[i].AppendJSON(buf, req)
	}
	return append(buf, "]}"...), nil
}

// AppendJSON appends {user: {device: {key_id: key}}} for the devices of req that gave a key,
// in request order: the "local" input of the complete_client and complete_federation operations.
func (res LocalResults) AppendJSON(buf []byte, req *ClaimRequest) []byte {
	buf = append(buf, '{')
	firstUser := true
	for _, u := range req.Users {
		keys := res[u.User]
		if len(keys) == 0 {
			continue
		}
		if !firstUser {
			buf = append(buf, ',')
		}
		firstUser = false
		buf = appendString(buf, string(u.User))
		buf = append(buf, ":{"...)
		first := true
		for _, d := range u.Devices {
			k, ok := keys[d.Device]
			if !ok {
				continue
			}
			if !first {
				buf = append(buf, ',')
			}
			first = false
			buf = appendString(buf, string(d.Device))
			buf = append(buf, ":{"...)
			buf = appendString(buf, string(k.KeyID))
			buf = append(buf, ':')
			buf = append(buf, k.Key...)
			buf = append(buf, '}')
		}
		buf = append(buf, '}')
	}
	return append(buf, '}')
}

// readInventory reads {user: {device: {"one_time_keys": [{"key_id","batch","key"}],
// "fallback_keys": [{"key_id","key","used"}]}}}.
func readInventory(raw []byte) (Inventory, error) {
	users, err := readFields("inventory", raw)
	if err != nil {
		return nil, err
	}
	inv := Inventory{}
	for _, u := range users {
		user, uraw := u.name, u.raw
		uid, err := ParseUserID(user)
		if err != nil {
			return nil, &Error{Code: CodeInvalidParam, Message: "inventory: " + err.Error()}
		}
		devs, err := readFields("inventory["+quote(user)+"]", uraw)
		if err != nil {
			return nil, err
		}
		inv[uid] = map[DeviceID]*DeviceInventory{}
		for _, dv := range devs {
			dev, draw := dv.name, dv.raw
			what := "inventory[" + quote(user) + "][" + quote(dev) + "]"
			df, err := readFields(what, draw, "one_time_keys", "fallback_keys")
			if err != nil {
				return nil, err
			}
			di := &DeviceInventory{}
			if v, ok, err := df.value("one_time_keys"); err != nil {
				return nil, err
			} else if ok {
				if v.Kind != KindArray {
					return nil, errorf(CodeBadJSON, "%s.one_time_keys must be an array", what)
				}
				for _, item := range v.Items {
					k, batch, _, err := readInventoryKey(what+".one_time_keys", item, true)
					if err != nil {
						return nil, err
					}
					di.OneTimeKeys = append(di.OneTimeKeys, OneTimeKey{KeyID: k.KeyID, Batch: batch, Key: k.Key})
				}
			}
			if v, ok, err := df.value("fallback_keys"); err != nil {
				return nil, err
			} else if ok {
				if v.Kind != KindArray {
					return nil, errorf(CodeBadJSON, "%s.fallback_keys must be an array", what)
				}
				for _, item := range v.Items {
					k, _, used, err := readInventoryKey(what+".fallback_keys", item, false)
					if err != nil {
						return nil, err
					}
					for _, other := range di.FallbackKeys {
						if other.KeyID.Algorithm() == k.KeyID.Algorithm() {
							return nil, errorf(CodeBadJSON, "%s has two fallback keys of algorithm %s", what, quote(string(k.KeyID.Algorithm())))
						}
					}
					di.FallbackKeys = append(di.FallbackKeys, FallbackKey{KeyID: k.KeyID, Key: k.Key, Used: used})
				}
			}
			inv[uid][DeviceID(dev)] = di
		}
	}
	return inv, nil
}

func readInventoryKey(what string, item Value, oneTime bool) (ClaimedKey, int64, bool, error) {
	if item.Kind != KindObject {
		return ClaimedKey{}, 0, false, errorf(CodeBadJSON, "%s items must be objects", what)
	}
	allowed := []string{"key_id", "key", "used"}
	if oneTime {
		allowed = []string{"key_id", "key", "batch"}
	}
	for _, m := range item.Members {
		if !slices.Contains(allowed, m.Key) {
			return ClaimedKey{}, 0, false, errorf(CodeBadJSON, "unknown field %s in %s", quote(m.Key), what)
		}
	}
	idv, ok := item.Get("key_id")
	if !ok || idv.Kind != KindString {
		return ClaimedKey{}, 0, false, errorf(CodeBadJSON, "%s: key_id must be a string", what)
	}
	kid, err := ParseKeyID(idv.Str)
	if err != nil {
		return ClaimedKey{}, 0, false, &Error{Code: CodeInvalidParam, Message: what + ": " + err.Error()}
	}
	kv, ok := item.Get("key")
	if !ok || !IsKeyValue(kv) {
		return ClaimedKey{}, 0, false, errorf(CodeBadJSON, "%s: key must be a string or an object with a string \"key\" and no null", what)
	}
	var batch int64
	var used bool
	if b, ok := item.Get("batch"); ok {
		if b.Kind != KindNumber || !isInteger(b.Str) || strings.HasPrefix(b.Str, "-") {
			return ClaimedKey{}, 0, false, errorf(CodeBadJSON, "%s: batch must be a non-negative integer", what)
		}
		batch, _ = parseMillis(b.Str)
	} else if oneTime {
		return ClaimedKey{}, 0, false, errorf(CodeBadJSON, "%s: batch is required", what)
	}
	if u, ok := item.Get("used"); ok {
		if u.Kind != KindBool {
			return ClaimedKey{}, 0, false, errorf(CodeBadJSON, "%s: used must be a boolean", what)
		}
		used = u.Bool
	}
	return ClaimedKey{KeyID: kid, Key: kv.AppendJSON(nil)}, batch, used, nil
}

// appendJSON appends the inventory in the form readInventory reads, canonically ordered.
func (inv Inventory) appendJSON(buf []byte) []byte {
	users := make([]UserID, 0, len(inv))
	for u := range inv {
		users = append(users, u)
	}
	slices.Sort(users)
	buf = append(buf, '{')
	for i, u := range users {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = appendString(buf, string(u))
		buf = append(buf, ":{"...)
		devs := make([]DeviceID, 0, len(inv[u]))
		for d := range inv[u] {
			devs = append(devs, d)
		}
		slices.Sort(devs)
		for j, d := range devs {
			if j > 0 {
				buf = append(buf, ',')
			}
			di := inv[u][d]
			buf = appendString(buf, string(d))
			buf = append(buf, `:{"fallback_keys":[`...)
			fbs := slices.Clone(di.FallbackKeys)
			slices.SortFunc(fbs, func(a, b FallbackKey) int { return strings.Compare(string(a.KeyID), string(b.KeyID)) })
			for k, fb := range fbs {
				if k > 0 {
					buf = append(buf, ',')
				}
				buf = append(buf, `{"key":`...)
				buf = append(buf, fb.Key...)
				buf = append(buf, `,"key_id":`...)
				buf = appendString(buf, string(fb.KeyID))
				buf = append(buf, `,"used":`...)
				if fb.Used {
					buf = append(buf, "true"...)
				} else {
					buf = append(buf, "false"...)
				}
				buf = append(buf, '}')
			}
			buf = append(buf, `],"one_time_keys":[`...)
			otks := slices.Clone(di.OneTimeKeys)
			slices.SortFunc(otks, CompareOneTimeKeys)
			for k, otk := range otks {
				if k > 0 {
					buf = append(buf, ',')
				}
				buf = append(buf, `{"batch":`...)
				buf = appendInt(buf, otk.Batch)
				buf = append(buf, `,"key":`...)
				buf = append(buf, otk.Key...)
				buf = append(buf, `,"key_id":`...)
				buf = appendString(buf, string(otk.KeyID))
				buf = append(buf, '}')
			}
			buf = append(buf, "]}"...)
		}
		buf = append(buf, '}')
	}
	return append(buf, '}')
}

// NewTrackerJSON returns a tracker configured by {"server_name","max_entries","base_backoff_ms",
// "max_backoff_ms"} (all optional; an empty input is the default configuration).
func NewTrackerJSON(config []byte) (*Tracker, error) {
	cfg := TrackerConfig{}
	if len(strings.TrimSpace(string(config))) > 0 {
		f, err := readFields("tracker config", config, "server_name", "max_entries", "base_backoff_ms", "max_backoff_ms")
		if err != nil {
			return nil, err
		}
		if cfg.ServerName, err = f.serverName(false); err != nil {
			return nil, err
		}
		var n [3]int64
		for i, name := range []string{"max_entries", "base_backoff_ms", "max_backoff_ms"} {
			if n[i], err = f.int(name, 0); err != nil {
				return nil, err
			}
			if n[i] < 0 {
				return nil, errorf(CodeInvalidParam, "%s must not be negative", name)
			}
		}
		cfg.MaxEntries, cfg.BaseBackoffMS, cfg.MaxBackoffMS = int(min(n[0], 1<<30)), n[1], n[2]
	}
	return NewTracker(cfg), nil
}

// Invoke runs the tracker operation "plan" or "observe" with JSON input and returns the same
// envelope as the package-level [Invoke]. plan takes {"now_ms": N, "request": {...}} and returns
// {"deferred": {user: {device: retry_at_ms}}, "one_time_keys": {...}}; observe takes
// {"now_ms": N, "request": {...}, "body": "<claim response>"} and returns the classification
// with the number of entries tracked, {"outcomes": {...}, "tracked": N}.
func (t *Tracker) Invoke(op string, input []byte) []byte {
	return envelope("tracker "+op, len(input), func(buf []byte) ([]byte, error) { return t.step(buf, op, input) })
}

func (t *Tracker) step(buf []byte, op string, input []byte) ([]byte, error) {
	switch op {
	case "plan":
		f, err := readFields("plan input", input, "now_ms", "request")
		if err != nil {
			return nil, err
		}
		now, err := f.int("now_ms", 0)
		if err != nil {
			return nil, err
		}
		req, err := f.request("request")
		if err != nil {
			return nil, err
		}
		next, deferred := t.Plan(now, req)
		buf = append(buf, `{"deferred":`...)
		buf = deferred.AppendJSON(buf)
		buf = append(buf, `,"one_time_keys":`...)
		buf = appendUserClaims(buf, next.Users)
		return append(buf, '}'), nil
	case "observe":
		f, err := readFields("observe input", input, "now_ms", "request", "body", "body_base64")
		if err != nil {
			return nil, err
		}
		now, err := f.int("now_ms", 0)
		if err != nil {
			return nil, err
		}
		req, err := f.request("request")
		if err != nil {
			return nil, err
		}
		body, _, err := f.body(true)
		if err != nil {
			return nil, err
		}
		c, err := ClassifyClaim(req, body)
		if err != nil {
			return nil, err
		}
		t.Observe(now, c)
		buf = c.AppendJSON(buf)
		buf = append(buf[:len(buf)-1], `,"tracked":`...)
		buf = appendInt(buf, int64(t.Len()))
		return append(buf, '}'), nil
	}
	return nil, errorf(CodeUnknown, "unknown tracker operation %s", quote(op))
}

// opTrackerRun runs {"config": {...}, "steps": [{"op": "plan"|"observe", "input": {...}}]} on a
// fresh tracker and returns the array of step results. A failing step fails the run.
func opTrackerRun(buf, input []byte) ([]byte, error) {
	f, err := readFields("tracker_run input", input, "config", "steps")
	if err != nil {
		return nil, err
	}
	config, _ := f.get("config")
	t, err := NewTrackerJSON(config)
	if err != nil {
		return nil, err
	}
	raw, ok := f.get("steps")
	if !ok {
		return nil, errorf(CodeBadJSON, "steps is required")
	}
	d := decoder{data: raw}
	if k, ok := d.kind(); !ok || k != KindArray {
		return nil, errorf(CodeBadJSON, "steps must be an array")
	}
	buf = append(buf, '[')
	n := 0
	err = d.array(func() error {
		d.ws()
		start := d.pos
		if err := d.skip(); err != nil {
			return err
		}
		sf, err := readFields("steps["+itoa(n)+"]", raw[start:d.pos], "op", "input")
		if err != nil {
			return err
		}
		op, err := sf.str("op", true)
		if err != nil {
			return err
		}
		in, ok := sf.get("input")
		if !ok {
			return errorf(CodeBadJSON, "steps[%d].input is required", n)
		}
		if n > 0 {
			buf = append(buf, ',')
		}
		if buf, err = t.step(buf, op, in); err != nil {
			e := asError(err)
			return &Error{Code: e.Code, Message: "steps[" + itoa(n) + "]: " + e.Message}
		}
		n++
		return nil
	})
	if err != nil {
		return nil, err
	}
	return append(buf, ']'), nil
}
