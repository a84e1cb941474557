package keyclaimwasm

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// Code is a Matrix error code, the errcode of an error envelope.
type Code string

// The error codes the module answers with (bindings/ABI.md, "Errors").
const (
	// CodeNotJSON: an input or body is not valid JSON.
	CodeNotJSON Code = "M_NOT_JSON"
	// CodeBadJSON: JSON of the wrong shape (unknown or missing field, wrong type, duplicate key).
	CodeBadJSON Code = "M_BAD_JSON"
	// CodeInvalidParam: a malformed identifier, a bad timeout or mode, a non-local user on the
	// federation endpoint, or too many (user, device) pairs.
	CodeInvalidParam Code = "M_INVALID_PARAM"
	// CodeTooLarge: a body above the configured limit, or an input above the module's 64 MiB.
	CodeTooLarge Code = "M_TOO_LARGE"
	// CodeUnknown: anything else: a bad pointer, length or tracker handle, a recovered panic.
	CodeUnknown Code = "M_UNKNOWN"
)

// Error is an error envelope answered by the module, {"errcode": Code, "error": Message}. Errors
// compare by code: errors.Is(err, &Error{Code: CodeBadJSON}) holds for every M_BAD_JSON error.
type Error struct {
	Code    Code
	Message string
}

// Error returns "M_CODE: message".
func (e *Error) Error() string { return string(e.Code) + ": " + e.Message }

// Is reports whether target is an *Error with the same code.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// Errors of the host side, as opposed to the envelopes the module answers with.
var (
	// ErrClosed is returned by calls on a closed Module or Tracker.
	ErrClosed = errors.New("keyclaimwasm: closed")
	// ErrNotEmbedded is returned by New when no module is configured and none is embedded: run
	// `make wasm`, which builds dist/keyclaim.wasm and copies it into bindings/go/internal/embedded.
	ErrNotEmbedded = errors.New("keyclaimwasm: keyclaim.wasm is not embedded in this build: run `make wasm`")
	// ErrTrackerLost is returned by a Tracker whose instance trapped: its state is gone.
	ErrTrackerLost = errors.New("keyclaimwasm: tracker lost: its instance trapped and was discarded")
)

// resultPrefix starts every success envelope: the module writes canonical JSON, so "result" is
// the only member and comes first.
const resultPrefix = `{"result":`

// Unwrap splits an envelope: it returns the bytes of "result", or the envelope's *Error.
func Unwrap(envelope []byte) ([]byte, error) {
	if bytes.HasPrefix(envelope, []byte(resultPrefix)) && bytes.HasSuffix(envelope, []byte("}")) {
		return envelope[len(resultPrefix) : len(envelope)-1], nil
	}
	var e struct {
		Errcode *string `json:"errcode"`
		Error   string  `json:"error"`
	}
	if err := json.Unmarshal(envelope, &e); err != nil || e.Errcode == nil {
		return nil, fmt.Errorf("keyclaimwasm: malformed envelope %.200q", envelope)
	}
	return nil, &Error{Code: Code(*e.Errcode), Message: e.Error}
}
