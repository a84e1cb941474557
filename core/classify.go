package core

// Outcome is what a claim response means for one requested device (BRIEF section 7).
type Outcome string

const (
	// OutcomeClaimed: the device gave a key of the requested algorithm.
	OutcomeClaimed Outcome = "claimed"
	// OutcomeNoKeys: the device has no key ({}), or is absent from the answer (a legacy server).
	OutcomeNoKeys Outcome = "no_keys"
	// OutcomeServerFailed: the device's server is in failures and no key came back for it.
	OutcomeServerFailed Outcome = "server_failed"
)

// DeviceOutcome is the classification of one requested device.
type DeviceOutcome struct {
	User    UserID
	Device  DeviceID
	Outcome Outcome
	Key     ClaimedKey // set when Outcome is OutcomeClaimed
}

// Classification is a claim response classified per requested device, in request order.
type Classification struct {
	Devices []DeviceOutcome
}

// ClassifyClaim classifies the answer body of a client claim request, for client SDKs. The
// answer is read as completion reads a remote answer: only requested users and devices, only a
// key of the requested algorithm whose value is a key (IsKeyValue: a string or an object with a
// string "key", no null in it). A device with such a key is claimed (even if its server is also
// in failures, as some servers answer); otherwise it is server_failed if its server is in
// failures, and no_keys if not. A missing or null one_time_keys or failures is read as empty. A
// body that is not JSON is M_NOT_JSON; one that is not an object, has ill-typed maps or
// duplicate keys is M_BAD_JSON.
func ClassifyClaim(req *ClaimRequest, body []byte) (*Classification, error) {
	resp := newResponse(req, ModeMSC4072, false)
	failed := map[ServerName]bool{}
	err := resp.readClientAnswer(body, "the claim response must be a JSON object", func(d *decoder, server string) error {
		failed[ServerName(server)] = true
		return d.skip()
	})
	if err != nil {
		return nil, err
	}
	c := &Classification{Devices: make([]DeviceOutcome, 0, req.Pairs())}
	for i := range resp.Users {
		u := &resp.Users[i]
		serverFailed := failed[u.User.Server()]
		for j := range u.Devices {
			dr := &u.Devices[j]
			o := DeviceOutcome{User: u.User, Device: dr.Device, Outcome: OutcomeNoKeys}
			switch {
			case dr.Claimed:
				o.Outcome, o.Key = OutcomeClaimed, dr.Key
			case serverFailed:
				o.Outcome = OutcomeServerFailed
			}
			c.Devices = append(c.Devices, o)
		}
	}
	return c, nil
}

// AppendJSON appends {"outcomes":{user:{device:{"key":...,"key_id":...,"outcome":"claimed"}}}};
// devices that were not claimed carry only "outcome".
func (c *Classification) AppendJSON(buf []byte) []byte {
	buf = append(buf, `{"outcomes":{`...)
	for i := range c.Devices {
		o := &c.Devices[i]
		newUser := i == 0 || c.Devices[i-1].User != o.User
		if newUser {
			if i > 0 {
				buf = append(buf, "},"...)
			}
			buf = appendString(buf, string(o.User))
			buf = append(buf, ":{"...)
		} else {
			buf = append(buf, ',')
		}
		buf = appendString(buf, string(o.Device))
		buf = append(buf, ":{"...)
		if o.Outcome == OutcomeClaimed {
			buf = append(buf, `"key":`...)
			buf = append(buf, o.Key.Key...)
			buf = append(buf, `,"key_id":`...)
			buf = appendString(buf, string(o.Key.KeyID))
			buf = append(buf, ',')
		}
		buf = append(buf, `"outcome":`...)
		buf = appendString(buf, string(o.Outcome))
		buf = append(buf, '}')
	}
	if len(c.Devices) > 0 {
		buf = append(buf, '}')
	}
	return append(buf, "}}"...)
}
