package core

import (
	"slices"
	"strings"
)

// This file holds the operations over state: the in-memory inventory of select_keys and the
// retry tracker.

func opSelectKeys(buf, input []byte) ([]byte, error) {
	inv, raw, ok := readSelectKeysFlat(input)
	if !ok {
		var err error
		if inv, raw, err = readSelectKeysChecked(input); err != nil {
			return nil, err
		}
	}
	var reqs []*ClaimRequest
	d := decoder{data: raw}
	if k, ok := d.kind(); !ok || k != KindArray {
		return nil, errorf(CodeBadJSON, "requests must be an array of claim requests")
	}
	err := d.array(func() error {
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
	// The claims of every request, in request order, one entry per requested device: a flat
	// list rather than a map per user (a request names each user and device once).
	n := 0
	for _, req := range reqs {
		n += req.Pairs()
	}
	claimed := make([]claimedKey, 0, n)
	for _, req := range reqs {
		for _, u := range req.Users {
			devs := inv.devices(u.User)
			for _, d := range u.Devices {
				var c claimedKey
				if di := devs.find(d.Device); di != nil {
					c.ClaimedKey, c.ok = di.Claim(d.Algorithm)
				}
				claimed = append(claimed, c)
			}
		}
	}
	buf = append(buf, `{"inventory":`...)
	buf = inv.appendJSON(buf)
	buf = append(buf, `,"results":[`...)
	for i, req := range reqs {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = appendClaimed(buf, req, claimed)
		claimed = claimed[req.Pairs():]
	}
	return append(buf, "]}"...), nil
}

// slab hands out runs of T (the devices of a user, the keys of a device) from chunks: a run
// grows in place while its chunk has room and moves alone to a new chunk when it has not, so
// runs already handed out are never copied (as they would be in one slice grown by append).
type slab[T any] struct {
	buf   []T
	start int // where the current run starts in buf
}

// begin starts a run.
func (s *slab[T]) begin() { s.start = len(s.buf) }

// add appends v to the current run.
func (s *slab[T]) add(v T) {
	if len(s.buf) == cap(s.buf) {
		run := s.buf[s.start:]
		chunk := make([]T, len(run), max(2*len(run), min(2*cap(s.buf), 1024), 4))
		copy(chunk, run)
		s.buf, s.start = chunk, 0
	}
	s.buf = append(s.buf, v)
}

// run returns the current run, which may not grow past its end.
func (s *slab[T]) run() []T { return s.buf[s.start:len(s.buf):len(s.buf)] }

// readSelectKeysChecked is readSelectKeysFlat for any input: it reads every level into fields
// and values, checking as it goes, and returns the first error in that order.
func readSelectKeysChecked(input []byte) (flatInventory, []byte, error) {
	f, err := readFields("select_keys input", input, "inventory", "requests")
	if err != nil {
		return nil, nil, err
	}
	inv := flatInventory{}
	if raw, ok := f.get("inventory"); ok {
		checked, err := readInventoryChecked(raw)
		if err != nil {
			return nil, nil, err
		}
		inv = checked.flat()
	}
	raw, ok := f.get("requests")
	if !ok {
		return nil, nil, errorf(CodeBadJSON, "requests is required")
	}
	return inv, raw, nil
}

// flatInventory is the inventory of select_keys: its users sorted by ID (byte order), each
// with its devices sorted by ID, found by binary search. It is built in one pass over the
// input (readSelectKeysFlat), with no map and no value tree.
type flatInventory []flatUser

type flatUser struct {
	id   UserID
	devs flatDevices
}

type flatDevices []flatDevice

type flatDevice struct {
	id   DeviceID
	keys DeviceInventory
}

// devices returns the devices of user, nil if the inventory has none.
func (inv flatInventory) devices(user UserID) flatDevices {
	i, ok := slices.BinarySearchFunc(inv, user, func(u flatUser, id UserID) int { return strings.Compare(string(u.id), string(id)) })
	if !ok {
		return nil
	}
	return inv[i].devs
}

// find returns the keys of device dev, nil if there is no such device.
func (devs flatDevices) find(dev DeviceID) *DeviceInventory {
	i, ok := slices.BinarySearchFunc(devs, dev, func(d flatDevice, id DeviceID) int { return strings.Compare(string(d.id), string(id)) })
	if !ok {
		return nil
	}
	return &devs[i].keys
}

// sort puts users and devices in ID order, as they are in canonical JSON, and reports false if
// an ID comes twice.
func (inv flatInventory) sort() bool {
	byUser := func(a, b flatUser) int { return strings.Compare(string(a.id), string(b.id)) }
	if !slices.IsSortedFunc(inv, byUser) {
		slices.SortFunc(inv, byUser)
	}
	for i := range inv {
		if i > 0 && inv[i].id == inv[i-1].id {
			return false
		}
		devs := inv[i].devs
		byDevice := func(a, b flatDevice) int { return strings.Compare(string(a.id), string(b.id)) }
		if !slices.IsSortedFunc(devs, byDevice) {
			slices.SortFunc(devs, byDevice)
		}
		for j := 1; j < len(devs); j++ {
			if devs[j].id == devs[j-1].id {
				return false
			}
		}
	}
	return true
}

// flat returns the inventory in the form select_keys claims from.
func (inv Inventory) flat() flatInventory {
	out := make(flatInventory, 0, len(inv))
	for u, devs := range inv {
		fu := flatUser{id: u, devs: make(flatDevices, 0, len(devs))}
		for d, di := range devs {
			fu.devs = append(fu.devs, flatDevice{d, *di})
		}
		out = append(out, fu)
	}
	out.sort()
	return out
}

// claimedKey is the outcome of one requested device: its key, if ok.
type claimedKey struct {
	ClaimedKey
	ok bool
}

// appendClaimed is [LocalResults.AppendJSON] for the claims of req, one per requested device in
// request order.
func appendClaimed(buf []byte, req *ClaimRequest, claimed []claimedKey) []byte {
	buf = append(buf, '{')
	firstUser := true
	for _, u := range req.Users {
		keys := claimed[:len(u.Devices)]
		claimed = claimed[len(u.Devices):]
		first := true
		for i, d := range u.Devices {
			k := &keys[i]
			if !k.ok {
				continue
			}
			if first {
				if !firstUser {
					buf = append(buf, ',')
				}
				firstUser = false
				buf = appendString(buf, string(u.User))
				buf = append(buf, ":{"...)
			} else {
				buf = append(buf, ',')
			}
			first = false
			buf = appendDeviceKey(buf, d.Device, k.ClaimedKey)
		}
		if !first {
			buf = append(buf, '}')
		}
	}
	return append(buf, '}')
}

// appendDeviceKey appends "device":{"key_id":key}.
func appendDeviceKey(buf []byte, dev DeviceID, k ClaimedKey) []byte {
	buf = appendString(buf, string(dev))
	buf = append(buf, ":{"...)
	buf = appendString(buf, string(k.KeyID))
	buf = append(buf, ':')
	buf = append(buf, k.Key...)
	return append(buf, '}')
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
			buf = appendDeviceKey(buf, d.Device, k)
		}
		buf = append(buf, '}')
	}
	return append(buf, '}')
}

// readSelectKeysFlat reads the input of select_keys in one pass: the inventory with
// inventoryFlat, the requests as raw text. ok is false, and the caller reads the input again with
// readFields and readInventoryChecked (which say its errors), for anything but a valid input with
// requests whose inventory inventoryFlat takes.
func readSelectKeysFlat(input []byte) (inv flatInventory, requests []byte, ok bool) {
	d := decoder{data: input}
	d.shareStrings()
	var hasInv bool
	if d.ws() != '{' {
		return nil, nil, false
	}
	err := d.objectRaw(func(key []byte) error {
		switch {
		case string(key) == "inventory" && !hasInv:
			hasInv = true
			var err error
			inv, err = d.inventoryFlat()
			return err
		case string(key) == "requests" && requests == nil:
			d.ws()
			from := d.pos
			if err := d.skip(); err != nil {
				return err
			}
			requests = input[from:d.pos]
			return nil
		}
		return errNotFlat
	})
	if err != nil || d.end() != nil || requests == nil {
		return nil, nil, false
	}
	return inv, requests, true
}

// errNotFlat stops inventoryFlat: the input needs readInventoryChecked.
var errNotFlat = &Error{Code: CodeBadJSON, Message: "not flat"}

// inventoryFlat reads the inventory at d.pos in one pass over its text, without a value tree or
// a map: names are substrings of d.src (d shares strings), key values (canonical JSON, checked
// by canonicalValue) are slices of the input, users, devices and keys come from shared slabs.
// It fails, and what it read is to be thrown away, for anything but a valid inventory whose key
// values are canonical: an error, a duplicate, a key to canonicalise. When it succeeds the
// inventory is the one readInventoryChecked would return.
func (d *decoder) inventoryFlat() (flatInventory, error) {
	name := func(key []byte) string {
		if d.keyOff < 0 {
			return string(key)
		}
		return d.src[d.keyOff : d.keyOff+len(key)]
	}
	var inv flatInventory
	var devSlab slab[flatDevice]
	var otkSlab slab[OneTimeKey]
	var fbSlab slab[FallbackKey]
	// key reads one item of one_time_keys (oneTime) or fallback_keys into the slabs.
	key := func(oneTime bool) error {
		if d.ws() != '{' {
			return errNotFlat
		}
		var kid KeyID
		var value []byte
		var batch int64
		var used, hasID, hasKey, hasBatch, hasUsed bool
		err := d.objectRaw(func(m []byte) error {
			d.ws()
			switch {
			case string(m) == "key_id" && !hasID:
				s, off, err := d.strBytes()
				if err != nil {
					return errNotFlat
				}
				id := string(s)
				if off >= 0 {
					id = d.src[off : off+len(s)]
				}
				if kid, err = ParseKeyID(id); err != nil {
					return errNotFlat
				}
				hasID = true
			case string(m) == "key" && !hasKey:
				start := d.pos
				if isKey, ok := d.canonicalValue(); !ok || !isKey {
					return errNotFlat
				}
				value, hasKey = d.data[start:d.pos:d.pos], true
			case string(m) == "batch" && oneTime && !hasBatch:
				if c := d.ws(); c < '0' || c > '9' {
					return errNotFlat
				}
				lit, err := d.number()
				if err != nil || !isInteger(lit) {
					return errNotFlat
				}
				batch, _ = parseMillis(lit)
				hasBatch = true
			case string(m) == "used" && !oneTime && !hasUsed:
				switch d.ws() {
				case 't':
					used = true
					if d.literal("true") != nil {
						return errNotFlat
					}
				case 'f':
					if d.literal("false") != nil {
						return errNotFlat
					}
				default:
					return errNotFlat
				}
				hasUsed = true
			default:
				return errNotFlat
			}
			return nil
		})
		if err != nil || !hasID || !hasKey || oneTime && !hasBatch {
			return errNotFlat
		}
		if oneTime {
			otkSlab.add(OneTimeKey{KeyID: kid, Batch: batch, Key: value})
		} else {
			fbSlab.add(FallbackKey{KeyID: kid, Key: value, Used: used})
		}
		return nil
	}
	// keys reads the array of one_time_keys (oneTime) or fallback_keys.
	keys := func(oneTime bool) error {
		if d.ws() != '[' || d.array(func() error { return key(oneTime) }) != nil {
			return errNotFlat
		}
		return nil
	}
	if d.ws() != '{' {
		return nil, errNotFlat
	}
	err := d.objectRaw(func(ukey []byte) error {
		uid, err := ParseUserID(name(ukey))
		if err != nil || d.ws() != '{' {
			return errNotFlat
		}
		devSlab.begin()
		err = d.objectRaw(func(dkey []byte) error {
			if d.ws() != '{' {
				return errNotFlat
			}
			devSlab.add(flatDevice{id: DeviceID(name(dkey))})
			at := len(devSlab.buf) - 1 // stays until the next device is added
			var hasOTK, hasFB bool
			return d.objectRaw(func(m []byte) error {
				switch {
				case string(m) == "one_time_keys" && !hasOTK:
					hasOTK = true
					otkSlab.begin()
					if err := keys(true); err != nil {
						return err
					}
					devSlab.buf[at].keys.OneTimeKeys = otkSlab.run()
				case string(m) == "fallback_keys" && !hasFB:
					hasFB = true
					fbSlab.begin()
					if err := keys(false); err != nil {
						return err
					}
					fbs := fbSlab.run()
					for i := range fbs {
						for j := range i {
							if fbs[i].KeyID.Algorithm() == fbs[j].KeyID.Algorithm() {
								return errNotFlat
							}
						}
					}
					devSlab.buf[at].keys.FallbackKeys = fbs
				default:
					return errNotFlat
				}
				return nil
			})
		})
		inv = append(inv, flatUser{id: uid, devs: devSlab.run()})
		return err
	})
	if err != nil || !inv.sort() {
		return nil, errNotFlat
	}
	return inv, nil
}

// readInventoryChecked is readInventory for any input: it reads every level into fields and
// values, checking as it goes, and returns the first error in that order.
func readInventoryChecked(raw []byte) (Inventory, error) {
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

// appendJSON appends the inventory in the form readInventory reads, canonically ordered (inv is
// sorted). It sorts each device's keys in place.
func (inv flatInventory) appendJSON(buf []byte) []byte {
	buf = append(buf, '{')
	for i := range inv {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = appendString(buf, string(inv[i].id))
		buf = append(buf, ":{"...)
		for j := range inv[i].devs {
			if j > 0 {
				buf = append(buf, ',')
			}
			dev := &inv[i].devs[j]
			buf = appendString(buf, string(dev.id))
			buf = append(buf, `:{"fallback_keys":[`...)
			fbs := dev.keys.FallbackKeys
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
			otks := dev.keys.OneTimeKeys
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
