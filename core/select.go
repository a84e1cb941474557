package core

import "strings"

// OneTimeKey is an unclaimed one-time key of a device.
type OneTimeKey struct {
	KeyID KeyID
	// Batch is the upload batch: every /keys/upload that adds one-time keys is one batch, and
	// batches increase over time (MSC4225, spec v1.13: keys are handed out oldest first).
	Batch int64
	// Key is the key's value as canonical JSON (numbers inside it keep their literal text): a
	// string, or an object with a string "key" and no null in it.
	Key []byte
}

// FallbackKey is the fallback key of a device for one algorithm.
type FallbackKey struct {
	KeyID KeyID
	Key   []byte // canonical JSON, numbers as written
	Used  bool
}

// ClaimedKey is what a device gave up for one claim.
type ClaimedKey struct {
	KeyID    KeyID
	Key      []byte // canonical JSON, numbers as written
	Fallback bool   // true if it is the device's fallback key
}

// DeviceInventory is the keys one device holds. It is the in-memory form of claim selection;
// a database store applies the same rule in one transaction (see [SelectKey]).
type DeviceInventory struct {
	OneTimeKeys  []OneTimeKey
	FallbackKeys []FallbackKey
}

// CompareOneTimeKeys orders one-time keys for claiming: by upload batch, then by key ID (byte
// order). The first key in this order is the one handed out. In SQL:
// ORDER BY batch, key_id (with a byte-order collation) LIMIT 1.
func CompareOneTimeKeys(a, b OneTimeKey) int {
	switch {
	case a.Batch < b.Batch:
		return -1
	case a.Batch > b.Batch:
		return 1
	}
	return strings.Compare(string(a.KeyID), string(b.KeyID))
}

// SelectionKind says where a selected key comes from.
type SelectionKind uint8

// The kinds of selection, in the order BRIEF section 3 tries them.
const (
	SelectedNone     SelectionKind = iota // the device has nothing: {} in msc4072 mode, absent in legacy mode
	SelectedOneTime                       // a one-time key, to be removed
	SelectedFallback                      // the fallback key, returned even if used, to be marked used
)

// Selection is the outcome of [SelectKey]: which key, by index into the inventory's slices.
type Selection struct {
	Kind  SelectionKind
	Index int
}

// SelectKey applies claim selection (BRIEF section 3) for one algorithm without changing inv:
// the oldest one-time key of that algorithm by [CompareOneTimeKeys]; otherwise the fallback key
// of that algorithm; otherwise nothing.
func SelectKey(inv *DeviceInventory, alg Algorithm) Selection {
	best := -1
	for i := range inv.OneTimeKeys {
		if inv.OneTimeKeys[i].KeyID.Algorithm() != alg {
			continue
		}
		if best < 0 || CompareOneTimeKeys(inv.OneTimeKeys[i], inv.OneTimeKeys[best]) < 0 {
			best = i
		}
	}
	if best >= 0 {
		return Selection{SelectedOneTime, best}
	}
	for i := range inv.FallbackKeys {
		if inv.FallbackKeys[i].KeyID.Algorithm() == alg {
			return Selection{SelectedFallback, i}
		}
	}
	return Selection{}
}

// Claim selects a key for alg and applies the selection: a one-time key is removed, a fallback
// key is marked used. ok is false if the device has nothing to give.
func (inv *DeviceInventory) Claim(alg Algorithm) (key ClaimedKey, ok bool) {
	sel := SelectKey(inv, alg)
	switch sel.Kind {
	case SelectedOneTime:
		k := inv.OneTimeKeys[sel.Index]
		inv.OneTimeKeys = append(inv.OneTimeKeys[:sel.Index], inv.OneTimeKeys[sel.Index+1:]...)
		return ClaimedKey{KeyID: k.KeyID, Key: k.Key}, true
	case SelectedFallback:
		k := &inv.FallbackKeys[sel.Index]
		k.Used = true
		return ClaimedKey{KeyID: k.KeyID, Key: k.Key, Fallback: true}, true
	}
	return ClaimedKey{}, false
}

// Inventory is an in-memory key store: user -> device -> keys.
type Inventory map[UserID]map[DeviceID]*DeviceInventory

// LocalResults are the keys claimed from this server's store: user -> device -> key. A requested
// device missing here had nothing to give.
type LocalResults map[UserID]map[DeviceID]ClaimedKey

// Claim claims one key for every requested device of users in inv, in request order.
func (inv Inventory) Claim(users []UserClaim) LocalResults {
	res := LocalResults{}
	for _, u := range users {
		devs := inv[u.User]
		for _, d := range u.Devices {
			di := devs[d.Device]
			if di == nil {
				continue
			}
			if k, ok := di.Claim(d.Algorithm); ok {
				if res[u.User] == nil {
					res[u.User] = map[DeviceID]ClaimedKey{}
				}
				res[u.User][d.Device] = k
			}
		}
	}
	return res
}
