package core

import (
	"slices"
	"strings"
)

// FanoutPlan splits a client claim request into the part answered from this server's store and
// one federation request body per remote server (BRIEF section 4).
type FanoutPlan struct {
	// Local holds the local users that name at least one device.
	Local []UserClaim
	// Remote holds one destination per remote server with at least one device to claim, sorted
	// by server name. Users with an empty device map cause no federation request.
	Remote []Destination
}

// Destination is one remote server and the users of it to ask about.
type Destination struct {
	Server ServerName
	Users  []UserClaim
}

// PlanFanout partitions req into local users and per-destination federation bodies. Users with
// an empty device map are left out everywhere: completion answers them {} without asking anyone.
func PlanFanout(req *ClaimRequest, local ServerName) *FanoutPlan {
	plan := &FanoutPlan{Local: []UserClaim{}, Remote: []Destination{}}
	index := map[ServerName]int{}
	for _, u := range req.Users {
		if len(u.Devices) == 0 {
			continue
		}
		server := u.User.Server()
		if server == local {
			plan.Local = append(plan.Local, u)
			continue
		}
		i, ok := index[server]
		if !ok {
			i = len(plan.Remote)
			index[server] = i
			plan.Remote = append(plan.Remote, Destination{Server: server})
		}
		plan.Remote[i].Users = append(plan.Remote[i].Users, u)
	}
	slices.SortFunc(plan.Remote, func(a, b Destination) int { return strings.Compare(string(a.Server), string(b.Server)) })
	return plan
}

// AppendBody appends the body of the federation claim request for this destination,
// {"one_time_keys":{...}}.
func (d *Destination) AppendBody(buf []byte) []byte {
	buf = append(buf, `{"one_time_keys":`...)
	buf = appendUserClaims(buf, d.Users)
	return append(buf, '}')
}

// AppendJSON appends {"local":{"one_time_keys":{...}},"remote":{"server":{"one_time_keys":{...}},...}}.
func (p *FanoutPlan) AppendJSON(buf []byte) []byte {
	buf = append(buf, `{"local":{"one_time_keys":`...)
	buf = appendUserClaims(buf, p.Local)
	buf = append(buf, `},"remote":{`...)
	for i := range p.Remote {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = appendString(buf, string(p.Remote[i].Server))
		buf = append(buf, ':')
		buf = p.Remote[i].AppendBody(buf)
	}
	return append(buf, "}}"...)
}
