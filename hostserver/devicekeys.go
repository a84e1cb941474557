package hostserver

import (
	"strconv"

	"github.com/keyclaim/keyclaim/core"
)

// checkDeviceKeysShape checks the members of an uploaded device_keys object (not empty, its
// user_id and device_id already checked by checkDeviceKeysOwner) against the spec's DeviceKeys
// schema (client-server API, definitions/device_keys.yaml): algorithms an array of strings, keys
// an object of strings, signatures an object of user ID to an object of strings. Other members
// (unsigned, and any a client adds) are allowed, as the schema allows them; the object is then
// stored as uploaded. A violation is M_BAD_JSON naming the path, so that no client is ever
// served device keys it cannot read.
func checkDeviceKeysShape(dk *core.Value) error {
	bad := func(msg string) error { return matrixErr(core.CodeBadJSON, msg) }

	algs, ok := dk.Get("algorithms")
	switch {
	case !ok:
		return bad("device_keys.algorithms is missing; it must be an array of strings")
	case algs.Kind != core.KindArray:
		return bad("device_keys.algorithms must be an array of strings")
	}
	for i := range algs.Items {
		if algs.Items[i].Kind != core.KindString {
			return bad("device_keys.algorithms[" + strconv.Itoa(i) + "] must be a string")
		}
	}

	keys, ok := dk.Get("keys")
	switch {
	case !ok:
		return bad("device_keys.keys is missing; it must be an object of strings")
	case keys.Kind != core.KindObject:
		return bad("device_keys.keys must be an object of strings")
	}
	if err := checkStrings(keys, "device_keys.keys"); err != nil {
		return err
	}

	sigs, ok := dk.Get("signatures")
	switch {
	case !ok:
		return bad("device_keys.signatures is missing; it must be an object of user ID to an object of strings")
	case sigs.Kind != core.KindObject:
		return bad("device_keys.signatures must be an object of user ID to an object of strings")
	}
	for i := range sigs.Members {
		m := &sigs.Members[i]
		if _, err := core.ParseUserID(m.Key); err != nil {
			return bad("device_keys.signatures: " + strconv.Quote(m.Key) + " is not a user ID (" + err.Error() + ")")
		}
		path := "device_keys.signatures[" + strconv.Quote(m.Key) + "]"
		if m.Value.Kind != core.KindObject {
			return bad(path + " must be an object of strings")
		}
		if err := checkStrings(&m.Value, path); err != nil {
			return err
		}
	}
	return nil
}

// checkStrings checks that every member of the object v, at path, is a string.
func checkStrings(v *core.Value, path string) error {
	for i := range v.Members {
		if v.Members[i].Value.Kind != core.KindString {
			return matrixErr(core.CodeBadJSON, path+"["+strconv.Quote(v.Members[i].Key)+"] must be a string")
		}
	}
	return nil
}
