package hostserver

import (
	"bytes"
	"context"
	"encoding/json"
	"slices"
	"strconv"
	"time"

	"github.com/keyclaim/keyclaim/core"
	"github.com/keyclaim/keyclaim/hostserver/federation"
	"github.com/labstack/echo/v4"
)

// KeyQuery is a validated /keys/query request: users sorted by user ID, each with the device IDs
// asked for (empty: all devices).
type KeyQuery struct {
	Users   []QueryUser
	Timeout time.Duration // the client's timeout for remote servers, clamped; 0 for federation
}

// QueryUser is one user of a key query.
type QueryUser struct {
	User    core.UserID
	Devices []string // sorted, without repeats; empty means all devices
}

// ParseKeyQuery validates a /keys/query body ({"device_keys": {user ID: [device ID, ...]}}).
// With federation set, every user must be local to server. Errors (*core.Error): not JSON is
// M_NOT_JSON; not an object, a missing or ill-typed device_keys, a device list that is not an
// array of strings, or a duplicate key is M_BAD_JSON; an invalid or (federation) non-local user
// ID, a bad timeout, or more than maxEntries users and device IDs is M_INVALID_PARAM.
func ParseKeyQuery(body []byte, federation bool, server core.ServerName, maxEntries int, defaultTimeout, maxTimeout time.Duration) (*KeyQuery, error) {
	v, err := core.ParseValue(body)
	if err != nil {
		return nil, err
	}
	if v.Kind != core.KindObject {
		return nil, matrixErr(core.CodeBadJSON, "the request body must be a JSON object")
	}
	dk, ok := v.Get("device_keys")
	if !ok {
		return nil, matrixErr(core.CodeBadJSON, "device_keys is required")
	}
	if dk.Kind != core.KindObject {
		return nil, matrixErr(core.CodeBadJSON, "device_keys must be an object of user ID to a list of device IDs")
	}
	q := &KeyQuery{Users: make([]QueryUser, 0, len(dk.Members))}
	entries := 0
	for i := range dk.Members {
		m := &dk.Members[i]
		user, err := core.ParseUserID(m.Key)
		if err != nil {
			return nil, matrixErr(core.CodeInvalidParam, "invalid user ID in device_keys: "+err.Error())
		}
		if federation && user.Server() != server {
			return nil, matrixErr(core.CodeInvalidParam, "user "+strconv.Quote(m.Key)+" is not local to this server ("+strconv.Quote(string(server))+")")
		}
		path := "device_keys[" + strconv.Quote(m.Key) + "]"
		if m.Value.Kind != core.KindArray {
			return nil, matrixErr(core.CodeBadJSON, path+" must be a list of device IDs")
		}
		devices := make([]string, 0, len(m.Value.Items))
		for j := range m.Value.Items {
			if m.Value.Items[j].Kind != core.KindString {
				return nil, matrixErr(core.CodeBadJSON, path+"["+strconv.Itoa(j)+"] must be a string (a device ID)")
			}
			devices = append(devices, m.Value.Items[j].Str)
		}
		slices.Sort(devices)
		devices = slices.Compact(devices)
		if entries += 1 + len(devices); entries > maxEntries {
			return nil, matrixErr(core.CodeInvalidParam, "the request names more than "+strconv.Itoa(maxEntries)+" users and devices")
		}
		q.Users = append(q.Users, QueryUser{User: user, Devices: devices})
	}
	// Members of a core.Value are sorted by key, so q.Users is sorted by user ID.
	if !federation {
		q.Timeout = defaultTimeout
		if t, ok := v.Get("timeout"); ok && t.Kind != core.KindNull {
			// An integer by value, as for claims (core.ParseMillis: 1000.0 and 1e3 are 1000).
			ms, good := core.ParseMillis(t.Str)
			if t.Kind != core.KindNumber || !good {
				return nil, matrixErr(core.CodeInvalidParam, "timeout must be a non-negative integer number of milliseconds")
			}
			q.Timeout = time.Duration(min(ms, maxTimeout.Milliseconds())) * time.Millisecond
		}
		q.Timeout = min(q.Timeout, maxTimeout)
	}
	return q, nil
}

// handleClientQuery serves POST /_matrix/client/v3/keys/query (BRIEF section 6): every requested
// local user appears ({} without devices), a non-empty device list limits the answer, device keys
// come back exactly as uploaded; remote servers are asked in parallel and a server that fails is
// recorded in failures, which is always present.
func (s *Server) handleClientQuery(c echo.Context) error {
	ctx := c.Request().Context()
	if _, err := s.authenticate(c); err != nil {
		return err
	}
	body, err := s.readBody(c)
	if err != nil {
		return err
	}
	q, err := ParseKeyQuery(body, false, s.serverName, s.cfg.MaxPairs, s.cfg.DefaultTimeout, s.cfg.MaxTimeout)
	if err != nil {
		return err
	}
	var local []QueryUser
	var servers []core.ServerName
	byServer := map[core.ServerName][]QueryUser{}
	for _, u := range q.Users {
		srv := u.User.Server()
		if srv == s.serverName {
			local = append(local, u)
			continue
		}
		if _, ok := byServer[srv]; !ok {
			servers = append(servers, srv)
		}
		byServer[srv] = append(byServer[srv], u)
	}
	found, err := s.queryLocal(ctx, local)
	if err != nil {
		return err
	}
	s.nameDevices(found)
	slices.Sort(servers)
	reqs := make([]federation.Request, len(servers))
	for i, srv := range servers {
		reqs[i] = federation.Request{Destination: srv, Body: appendQueryBody(nil, byServer[srv])}
	}
	outcomes := s.fanOut(ctx, s.fed.QueryKeys, reqs, s.fanoutTimeout(q.Timeout))
	var failures []serverFailure
	for _, srv := range servers {
		devs, f := judgeRemoteQuery(byServer[srv], outcomes[srv])
		if f != nil {
			failures = append(failures, serverFailure{srv, *f})
			continue
		}
		for u, d := range devs {
			found[u] = d
		}
	}
	users := make([]QueryUser, 0, len(q.Users))
	failed := map[core.ServerName]bool{}
	for _, f := range failures {
		failed[f.server] = true
	}
	for _, u := range q.Users {
		if !failed[u.User.Server()] {
			users = append(users, u)
		}
	}
	buf := appendDeviceKeys([]byte(`{"device_keys":`), users, found)
	buf = append(buf, `,"failures":{`...)
	for i, f := range failures {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = appendJSONString(buf, string(f.server))
		buf = append(buf, ':')
		buf = f.failure.AppendJSON(buf)
	}
	return writeJSON(c, append(buf, "}}"...))
}

// handleFederationQuery serves POST /_matrix/federation/v1/user/keys/query: X-Matrix
// authorization required (else 401 M_UNAUTHORIZED); local users only (400 M_INVALID_PARAM
// otherwise), answered as the client endpoint answers them.
func (s *Server) handleFederationQuery(c echo.Context) error {
	ctx := c.Request().Context()
	body, err := s.readBody(c)
	if err != nil {
		return err
	}
	if _, err := s.authenticateFederation(c, body); err != nil {
		return err
	}
	q, err := ParseKeyQuery(body, true, s.serverName, s.cfg.MaxPairs, 0, 0)
	if err != nil {
		return err
	}
	found, err := s.queryLocal(ctx, q.Users)
	if err != nil {
		return err
	}
	buf := appendDeviceKeys([]byte(`{"device_keys":`), q.Users, found)
	return writeJSON(c, append(buf, '}'))
}

// nameDevices gives the local devices in found the display names the authenticator knows
// (a [DeviceNamer]: the token file's display_name) as unsigned.device_display_name, as Synapse
// answers a client's /keys/query. The federation endpoint does not (Synapse's default,
// allow_device_name_lookup_over_federation: false): a device's name is for its owner's contacts
// on this server to see, not for every server that asks.
func (s *Server) nameDevices(found map[core.UserID]map[string]json.RawMessage) {
	namer, ok := s.auth.(DeviceNamer)
	if !ok {
		return
	}
	for user, devs := range found {
		for dev, keys := range devs {
			if name, ok := namer.DeviceDisplayName(user, dev); ok {
				devs[dev] = withDisplayName(keys, name)
			}
		}
	}
}

// withDisplayName returns the device keys raw with unsigned set to {"device_display_name": name}
// as Synapse sets it (an uploaded unsigned is replaced: the server, not the client, speaks
// there). unsigned is outside what the device signed, so the signatures still verify. Keys
// without an unsigned member keep their bytes: the member is put first. Others are written
// again in canonical form (what signatures are computed over anyway).
func withDisplayName(raw json.RawMessage, name string) json.RawMessage {
	v, err := core.ParseValue(raw)
	if err != nil || v.Kind != core.KindObject || len(v.Members) == 0 {
		return raw // stored objects are never so; leave anything else alone
	}
	unsigned := core.Value{Kind: core.KindObject, Members: []core.Member{{Key: "device_display_name", Value: core.Value{Kind: core.KindString, Str: name}}}}
	if _, has := v.Get("unsigned"); !has {
		i := bytes.IndexByte(raw, '{')
		out := make([]byte, 0, len(raw)+len(name)+40)
		out = append(out, raw[:i+1]...)
		out = append(out, `"unsigned":`...)
		out = unsigned.AppendJSON(out)
		out = append(out, ',')
		return append(out, raw[i+1:]...)
	}
	for i := range v.Members {
		if v.Members[i].Key == "unsigned" {
			v.Members[i].Value = unsigned
		}
	}
	return v.AppendJSON(nil)
}

type serverFailure struct {
	server  core.ServerName
	failure core.Failure
}

// queryLocal reads the device keys of local users from the store.
func (s *Server) queryLocal(ctx context.Context, users []QueryUser) (map[core.UserID]map[string]json.RawMessage, error) {
	found := make(map[core.UserID]map[string]json.RawMessage, len(users))
	if len(users) == 0 {
		return found, nil
	}
	req := make(map[string][]string, len(users))
	for _, u := range users {
		req[string(u.User)] = u.Devices
	}
	res, err := s.store.QueryDevices(ctx, req)
	if err != nil {
		return nil, s.storeFailed("query", err)
	}
	for _, u := range users {
		found[u.User] = res[string(u.User)]
	}
	return found, nil
}

// appendDeviceKeys appends {user: {device: keys}} for users in order, devices sorted, the keys
// written as the exact bytes stored (or received).
func appendDeviceKeys(buf []byte, users []QueryUser, found map[core.UserID]map[string]json.RawMessage) []byte {
	buf = append(buf, '{')
	for i, u := range users {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = appendJSONString(buf, string(u.User))
		buf = append(buf, ":{"...)
		devs := found[u.User]
		ids := make([]string, 0, len(devs))
		for d := range devs {
			ids = append(ids, d)
		}
		slices.Sort(ids)
		for j, d := range ids {
			if j > 0 {
				buf = append(buf, ',')
			}
			buf = appendJSONString(buf, d)
			buf = append(buf, ':')
			buf = append(buf, devs[d]...)
		}
		buf = append(buf, '}')
	}
	return append(buf, '}')
}

// appendQueryBody appends the federation query body {"device_keys": {user: [devices]}}.
func appendQueryBody(buf []byte, users []QueryUser) []byte {
	buf = append(buf, `{"device_keys":{`...)
	for i, u := range users {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = appendJSONString(buf, string(u.User))
		buf = append(buf, ":["...)
		for j, d := range u.Devices {
			if j > 0 {
				buf = append(buf, ',')
			}
			buf = appendJSONString(buf, d)
		}
		buf = append(buf, ']')
	}
	return append(buf, "}}"...)
}

// judgeRemoteQuery reads a remote server's answer to a key query without trusting it: only the
// requested users of that server, only the requested devices (all when the list was empty), only
// device keys that are objects naming that user and device. Anything else is dropped. A failure
// before an answer, a non-2xx answer, or an answer that is not a JSON object with a device_keys
// object is a failure of the server.
func judgeRemoteQuery(users []QueryUser, o core.RemoteOutcome) (map[core.UserID]map[string]json.RawMessage, *core.Failure) {
	if o.Failure != nil {
		return nil, o.Failure
	}
	if o.Status < 200 || o.Status > 299 {
		return nil, core.RemoteErrorFailure(o.Status, o.Body) // as for claims
	}
	bad := func(msg string) (map[core.UserID]map[string]json.RawMessage, *core.Failure) {
		return nil, &core.Failure{Status: core.StatusBadRemoteAnswer, Message: msg}
	}
	// One pass: the tree to judge, and the text of each device's keys (device_keys, user,
	// device: three deep) to pass on byte for byte.
	texts := map[string]map[string][]byte{}
	tree, err := core.ParseValueRaw(o.Body, 3, func(path []string, text []byte) {
		if path[0] != "device_keys" {
			return
		}
		devs := texts[path[1]]
		if devs == nil {
			devs = map[string][]byte{}
			texts[path[1]] = devs
		}
		devs[path[2]] = text
	})
	if err != nil {
		return bad("the remote answer is not valid JSON")
	}
	dkTree, ok := tree.Get("device_keys")
	if tree.Kind != core.KindObject || !ok || dkTree.Kind != core.KindObject {
		return bad("the remote answer is not of the required shape: device_keys must be an object")
	}
	out := make(map[core.UserID]map[string]json.RawMessage, len(users))
	for _, u := range users {
		kept := map[string]json.RawMessage{}
		out[u.User] = kept
		userTree, ok := dkTree.Get(string(u.User))
		if !ok || userTree.Kind != core.KindObject {
			continue
		}
		devs := texts[string(u.User)]
		for _, m := range userTree.Members {
			if len(u.Devices) > 0 {
				if _, asked := slices.BinarySearch(u.Devices, m.Key); !asked {
					continue
				}
			}
			uid, ok1 := m.Value.Get("user_id")
			did, ok2 := m.Value.Get("device_id")
			if !ok1 || !ok2 || uid.Kind != core.KindString || did.Kind != core.KindString ||
				uid.Str != string(u.User) || did.Str != m.Key {
				continue
			}
			kept[m.Key] = devs[m.Key]
		}
	}
	return out, nil
}
