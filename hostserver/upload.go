package hostserver

import (
	"bytes"
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"strings"

	"github.com/keyclaim/keyclaim/core"
	"github.com/keyclaim/keyclaim/hostserver/store"
	"github.com/labstack/echo/v4"
)

// handleUpload serves POST /_matrix/client/v3/keys/upload (BRIEF section 6): device keys of the
// authenticated device stored byte for byte, one-time keys and fallback keys stored as canonical
// JSON (numbers inside them as written), and the counts of unclaimed one-time keys answered, always with signed_curve25519.
func (s *Server) handleUpload(c echo.Context) error {
	ctx := c.Request().Context()
	id, err := s.authenticate(c)
	if err != nil {
		return err
	}
	if id.Device == "" {
		return matrixErr(CodeForbidden, "this access token is not bound to a device, so it cannot upload keys")
	}
	body, err := s.readBody(c)
	if err != nil {
		return err
	}
	up, err := ParseUpload(body, id)
	if err != nil {
		return err
	}
	var counts store.Counts
	if up.DeviceKeys == nil && len(up.OneTimeKeys) == 0 && len(up.FallbackKeys) == 0 {
		if counts, err = s.store.Counts(ctx, string(id.User), string(id.Device)); err != nil {
			return s.storeFailed("counts", err)
		}
	} else {
		counts, err = s.store.Upload(ctx, string(id.User), string(id.Device), up)
		switch {
		case errors.Is(err, store.ErrKeyConflict):
			return matrixErr(core.CodeInvalidParam, strings.TrimPrefix(err.Error(), "store: "))
		case errors.Is(err, store.ErrInvalidKey):
			return matrixErr(core.CodeBadJSON, strings.TrimPrefix(err.Error(), "store: "))
		case err != nil:
			return s.storeFailed("upload", err)
		}
	}
	return writeJSON(c, appendCounts(nil, counts))
}

// appendCounts appends {"one_time_key_counts":{...}} with the algorithms sorted and
// signed_curve25519 always present.
func appendCounts(buf []byte, counts store.Counts) []byte {
	algs := make([]string, 0, len(counts)+1)
	for alg := range counts {
		algs = append(algs, alg)
	}
	if _, ok := counts[store.SignedCurve25519]; !ok {
		algs = append(algs, store.SignedCurve25519)
	}
	slices.Sort(algs)
	buf = append(buf, `{"one_time_key_counts":{`...)
	for i, alg := range algs {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = appendJSONString(buf, alg)
		buf = append(buf, ':')
		buf = strconv.AppendInt(buf, int64(counts[alg]), 10)
	}
	return append(buf, "}}"...)
}

// ParseUpload validates a /keys/upload body for the authenticated device and returns what to
// store. An empty body (no bytes) is read as {}.
//
// Errors (*core.Error): a body that is not JSON or not UTF-8 is M_NOT_JSON; a body that is not
// an object, duplicate keys anywhere, a device_keys, one_time_keys or fallback_keys that is not
// an object, or a key that is neither a string nor a KeyObject with a string "key" and
// "signatures" of user ID to key ID to string, or that holds a null anywhere (checkKeyObject),
// is M_BAD_JSON, naming the path;
// device_keys naming another user or device, an invalid key ID, or two fallback keys of one
// algorithm is M_INVALID_PARAM. A missing, null or empty field means "nothing new". Device keys
// must otherwise have the shape of the spec's DeviceKeys (see checkDeviceKeysShape: M_BAD_JSON
// naming the path); they are returned as the exact bytes of the body.
func ParseUpload(body []byte, id Identity) (store.Upload, error) {
	var up store.Upload
	if len(bytes.TrimSpace(body)) == 0 {
		return up, nil
	}
	// One pass reads the tree that is checked and the exact bytes of device_keys that are stored.
	v, raw, err := core.ParseObjectRaw(body)
	if err != nil {
		return up, err
	}
	if v.Kind != core.KindObject {
		return up, matrixErr(core.CodeBadJSON, "the request body must be a JSON object")
	}
	if dk, ok := v.Get("device_keys"); ok && dk.Kind != core.KindNull {
		if dk.Kind != core.KindObject {
			return up, matrixErr(core.CodeBadJSON, "device_keys must be an object")
		}
		if len(dk.Members) > 0 {
			if err := checkDeviceKeysOwner(dk, id); err != nil {
				return up, err
			}
			if err := checkDeviceKeysShape(dk); err != nil {
				return up, err
			}
			up.DeviceKeys = raw["device_keys"]
		}
	}
	if up.OneTimeKeys, err = uploadedKeys(&v, "one_time_keys"); err != nil {
		return up, err
	}
	if up.FallbackKeys, err = uploadedKeys(&v, "fallback_keys"); err != nil {
		return up, err
	}
	if len(up.FallbackKeys) > 1 {
		byAlg := map[core.Algorithm]string{}
		for id := range up.FallbackKeys {
			alg := core.KeyID(id).Algorithm()
			if other, dup := byAlg[alg]; dup {
				a, b := min(id, other), max(id, other)
				return up, matrixErr(core.CodeInvalidParam, "fallback_keys holds two keys of algorithm "+strconv.Quote(string(alg))+
					" ("+strconv.Quote(a)+" and "+strconv.Quote(b)+"); at most one per algorithm")
			}
			byAlg[alg] = id
		}
	}
	up.Checked = true // everything is checked and canonical: the store need not check again
	return up, nil
}

// checkDeviceKeysOwner checks that device_keys names the authenticated user and device.
func checkDeviceKeysOwner(dk *core.Value, id Identity) error {
	for _, f := range []struct{ name, want string }{{"user_id", string(id.User)}, {"device_id", string(id.Device)}} {
		v, ok := dk.Get(f.name)
		switch {
		case !ok:
			return matrixErr(core.CodeInvalidParam, "device_keys."+f.name+" is missing; it must be "+strconv.Quote(f.want))
		case v.Kind != core.KindString:
			return matrixErr(core.CodeInvalidParam, "device_keys."+f.name+" must be the string "+strconv.Quote(f.want))
		case v.Str != f.want:
			return matrixErr(core.CodeInvalidParam, "device_keys."+f.name+" is "+strconv.Quote(v.Str)+
				" but this access token belongs to "+strconv.Quote(f.want))
		}
	}
	return nil
}

// uploadedKeys reads one_time_keys or fallback_keys: an object of key ID to a key, which is a
// string or a KeyObject (checkKeyObject). It returns the keys as canonical JSON, except that
// numbers keep their literal text.
func uploadedKeys(v *core.Value, field string) (map[string]json.RawMessage, error) {
	keys, ok := v.Get(field)
	if !ok || keys.Kind == core.KindNull {
		return nil, nil
	}
	if keys.Kind != core.KindObject {
		return nil, matrixErr(core.CodeBadJSON, field+" must be an object of key ID to key")
	}
	if len(keys.Members) == 0 {
		return nil, nil
	}
	out := make(map[string]json.RawMessage, len(keys.Members))
	for i := range keys.Members {
		m := &keys.Members[i]
		if _, err := core.ParseKeyID(m.Key); err != nil {
			return nil, matrixErr(core.CodeInvalidParam, field+": "+err.Error())
		}
		if err := checkKeyObject(&m.Value, field+"["+strconv.Quote(m.Key)+"]"); err != nil {
			return nil, err
		}
		out[m.Key] = m.Value.AppendJSON(nil)
	}
	return out, nil
}

// checkKeyObject checks an uploaded one-time or fallback key at path against the spec's
// OneTimeKeys schema (client-server API, definitions/one_time_keys.yaml), as Synapse's upload
// servlet does: a string, or a KeyObject whose "key" is a string and whose "signatures" is an
// object of user ID to an object of key ID to string, both required; "fallback", if present, a
// boolean. Other members are allowed, as the schema allows them, but no null anywhere
// (core.IsKeyValue: clients reject null maps, and the claimed key would be lost). Anything else
// is M_BAD_JSON naming the path: such a key would be handed to claimers that cannot use it.
func checkKeyObject(v *core.Value, path string) error {
	bad := func(msg string) error { return matrixErr(core.CodeBadJSON, msg) }
	const sigShape = "an object of user ID to an object of key ID to signature string"
	switch v.Kind {
	case core.KindString:
		return nil
	case core.KindObject:
	default:
		return bad(path + " must be a string or a key object {\"key\": ..., \"signatures\": ...}")
	}
	k, ok := v.Get("key")
	switch {
	case !ok:
		return bad(path + ".key is missing; a key object needs a string key and its signatures")
	case k.Kind != core.KindString:
		return bad(path + ".key must be a string")
	}
	sigs, ok := v.Get("signatures")
	switch {
	case !ok:
		return bad(path + ".signatures is missing; it must be " + sigShape)
	case sigs.Kind != core.KindObject:
		return bad(path + ".signatures must be " + sigShape)
	}
	for i := range sigs.Members {
		m := &sigs.Members[i]
		userPath := path + ".signatures[" + strconv.Quote(m.Key) + "]"
		if _, err := core.ParseUserID(m.Key); err != nil {
			return bad(path + ".signatures: " + strconv.Quote(m.Key) + " is not a user ID (" + err.Error() + ")")
		}
		if m.Value.Kind != core.KindObject {
			return bad(userPath + " must be an object of key ID to signature string")
		}
		if err := checkStrings(&m.Value, userPath); err != nil {
			return err
		}
	}
	if f, ok := v.Get("fallback"); ok && f.Kind != core.KindBool {
		return bad(path + ".fallback must be true or false")
	}
	if !core.IsKeyValue(v) {
		return bad(path + " holds a null; a key object must not")
	}
	return nil
}

// appendJSONString appends s as a JSON string (canonical JSON escapes).
func appendJSONString(buf []byte, s string) []byte {
	v := core.Value{Kind: core.KindString, Str: s}
	return v.AppendJSON(buf)
}
