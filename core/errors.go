package core

import (
	"fmt"
	"strconv"
)

// Code is a Matrix error code, the errcode field of a Matrix error body.
type Code string

// The error codes that core produces. Their HTTP statuses are assigned by the host (hostserver
// keeps that mapping in one place); core never speaks HTTP.
const (
	// CodeNotJSON: the body is not valid JSON (HTTP 400).
	CodeNotJSON Code = "M_NOT_JSON"
	// CodeBadJSON: the body is JSON but not of the required shape (HTTP 400).
	CodeBadJSON Code = "M_BAD_JSON"
	// CodeInvalidParam: a parameter has an invalid value: a malformed user ID, an empty device ID
	// or algorithm, a bad timeout, a non-local user on the federation endpoint, or more
	// (user, device) pairs than the configured limit (HTTP 400).
	CodeInvalidParam Code = "M_INVALID_PARAM"
	// CodeTooLarge: the body is larger than the configured limit (HTTP 413).
	CodeTooLarge Code = "M_TOO_LARGE"
	// CodeUnknown: an operation failed for a reason not covered above, such as an unknown
	// operation name or a recovered panic (HTTP 500 when it reaches HTTP at all).
	CodeUnknown Code = "M_UNKNOWN"
)

// Error is the one error type of core: a Matrix errcode and a human-readable message. Its JSON
// form is the Matrix error body {"errcode": ..., "error": ...}. Errors compare by code, so
// errors.Is(err, &Error{Code: CodeBadJSON}) holds for any M_BAD_JSON error.
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

// AppendJSON appends the Matrix error body {"errcode":...,"error":...} to buf.
func (e *Error) AppendJSON(buf []byte) []byte {
	buf = append(buf, `{"errcode":`...)
	buf = appendString(buf, string(e.Code))
	buf = append(buf, `,"error":`...)
	buf = appendString(buf, e.Message)
	return append(buf, '}')
}

// MarshalJSON returns the Matrix error body.
func (e *Error) MarshalJSON() ([]byte, error) { return e.AppendJSON(nil), nil }

func errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// quote returns s as a JSON string literal, for naming values in error messages.
func quote(s string) string { return string(appendString(nil, s)) }

func itoa(n int) string { return strconv.Itoa(n) }
