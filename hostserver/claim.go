package hostserver

import (
	"context"
	"time"

	"github.com/keyclaim/keyclaim/core"
	"github.com/keyclaim/keyclaim/hostserver/federation"
	"github.com/keyclaim/keyclaim/hostserver/store"
	"github.com/labstack/echo/v4"
)

// handleClientClaim serves POST /_matrix/client/v3/keys/claim (BRIEF sections 2, 3 and 4):
// validate, claim local users' keys in one store transaction, ask every remote server in
// parallel within the request's timeout, and complete the answer so that every requested device
// is answered (in the shape the compatibility policy gives this client's User-Agent).
func (s *Server) handleClientClaim(c echo.Context) error {
	ctx := c.Request().Context()
	if _, err := s.authenticate(c); err != nil {
		return err
	}
	body, err := s.readBody(c)
	if err != nil {
		return err
	}
	req, err := s.engine.ParseClaim(ctx, core.FlavourClient, body, c.QueryParam("timeout"))
	if err != nil {
		return err
	}
	plan := core.PlanFanout(req, s.serverName)
	local, counts, err := s.claimLocal(ctx, plan.Local)
	if err != nil {
		return err
	}

	timeout := s.fanoutTimeout(time.Duration(req.TimeoutMS) * time.Millisecond)
	remote := s.fanOut(ctx, s.fed.ClaimKeys, federation.ClaimRequests(plan.Remote), timeout)

	mode := s.policy.ModeFor(c.Request().UserAgent())
	out, tally, err := s.engine.CompleteClient(ctx, req, local, remote, mode)
	if err != nil {
		return err
	}
	counts.add(remoteCounts(tally, counts))
	s.metrics.addClaims(counts)
	s.metrics.addAnswer(endpointClient, mode)
	return writeJSON(c, out)
}

// handleFederationClaim serves POST /_matrix/federation/v1/user/keys/claim (BRIEF section 5):
// the request must carry a valid X-Matrix authorization (else 401 M_UNAUTHORIZED); every
// requested user must be local (else 400 M_INVALID_PARAM); the answer has no failures and is
// shaped by --federation-answers (legacy by default: BRIEF 1 and 5).
func (s *Server) handleFederationClaim(c echo.Context) error {
	ctx := c.Request().Context()
	body, err := s.readBody(c)
	if err != nil {
		return err
	}
	if _, err := s.authenticateFederation(c, body); err != nil {
		return err
	}
	req, err := s.engine.ParseClaim(ctx, core.FlavourFederation, body, "")
	if err != nil {
		return err
	}
	local, counts, err := s.claimLocal(ctx, req.Users)
	if err != nil {
		return err
	}
	out, err := s.engine.CompleteFederation(ctx, req, local, s.fedMode)
	if err != nil {
		return err
	}
	s.metrics.addClaims(counts)
	s.metrics.addAnswer(endpointFederation, s.fedMode)
	return writeJSON(c, out)
}

// claimLocal claims one key for every requested device of local users, in one store
// transaction, and tallies what the devices gave.
func (s *Server) claimLocal(ctx context.Context, users []core.UserClaim) (core.LocalResults, claimCounts, error) {
	n := 0
	for i := range users {
		n += len(users[i].Devices)
	}
	local := make(core.LocalResults, len(users))
	if n == 0 {
		return local, claimCounts{}, nil
	}
	wants := make([]store.Want, 0, n)
	for i := range users {
		u := &users[i]
		for _, d := range u.Devices {
			wants = append(wants, store.Want{User: string(u.User), Device: string(d.Device), Algorithm: string(d.Algorithm)})
		}
	}
	claimed, err := s.store.Claim(ctx, wants)
	if err != nil {
		return nil, claimCounts{}, s.storeFailed("claim", err)
	}
	// Each user's map is made at its final size, the number of devices requested of that user
	// (map growth showed in the CPU profile of 100-device claims).
	requested := make(map[core.UserID]int, len(users))
	for i := range users {
		requested[users[i].User] += len(users[i].Devices)
	}
	var counts claimCounts
	for _, k := range claimed {
		user := core.UserID(k.User)
		devs := local[user]
		if devs == nil {
			devs = make(map[core.DeviceID]core.ClaimedKey, requested[user])
			local[user] = devs
		}
		devs[core.DeviceID(k.Device)] = core.ClaimedKey{KeyID: core.KeyID(k.KeyID), Key: k.Key, Fallback: k.Fallback}
		if k.Fallback {
			counts.fallback++
		} else {
			counts.oneTime++
		}
	}
	counts.empty = n - len(claimed)
	return local, counts, nil
}

// remoteCounts returns the outcomes of the devices of remote users: the tally completion kept
// of every requested device (claimed, no keys, server failed), less what the local devices gave
// (local, from the store). The completed answer is not read again (issue 13). A remote key counts
// as one_time_key (the answer does not say which kind it is).
func remoteCounts(t core.Tally, local claimCounts) claimCounts {
	return claimCounts{
		oneTime: max(0, t.Claimed-local.oneTime-local.fallback),
		empty:   max(0, t.NoKeys-local.empty),
		failed:  t.ServerFailed, // our own server never fails
	}
}

func (c *claimCounts) add(o claimCounts) {
	c.oneTime += o.oneTime
	c.fallback += o.fallback
	c.empty += o.empty
	c.failed += o.failed
}
