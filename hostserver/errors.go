package hostserver

import (
	"errors"
	"net/http"

	"github.com/keyclaim/keyclaim/core"
	"github.com/keyclaim/keyclaim/hostserver/federation"
	"github.com/keyclaim/keyclaim/hostserver/internal/matrixhttp"
	"github.com/labstack/echo/v4"
)

// Matrix error codes that the HTTP layer produces beyond those of core (client-server API,
// "Standard error response").
const (
	// CodeUnrecognized is M_UNRECOGNIZED: an unknown path (404) or method (405).
	CodeUnrecognized = matrixhttp.CodeUnrecognized
	// CodeMissingToken is M_MISSING_TOKEN: no access token was given (401).
	CodeMissingToken = matrixhttp.CodeMissingToken
	// CodeUnknownToken is M_UNKNOWN_TOKEN: the access token is not recognised (401).
	CodeUnknownToken = matrixhttp.CodeUnknownToken
	// CodeForbidden is M_FORBIDDEN: the caller may not do this (403).
	CodeForbidden = matrixhttp.CodeForbidden
	// CodeNotFound is M_NOT_FOUND: a resource that does not exist here (404), such as the
	// playground of a binary built without it.
	CodeNotFound = matrixhttp.CodeNotFound
	// CodeUnauthorized is M_UNAUTHORIZED: a federation request whose X-Matrix authorization
	// fails (401; server-server API, "Request Authentication").
	CodeUnauthorized = federation.CodeUnauthorized
)

// reason says why the HTTP layer failed a request when the errcode alone does not decide the
// status: M_UNKNOWN is 500, 502 or 503. (M_UNRECOGNIZED is 404 or 405: echo's router says which.)
type reason uint8

const (
	reasonNone        reason = iota // the status follows from the errcode
	reasonUpstream                  // a service we depend on answered badly: 502
	reasonUnavailable               // a service we depend on is unreachable: 503
	reasonInternal                  // a bug or a store failure: 500, details only in the log
)

// hostError is an error of the HTTP layer: the Matrix error to answer, why, and the underlying
// cause (logged, never sent).
type hostError struct {
	matrix *core.Error
	why    reason
	cause  error
	// retryAfter, when not 0, is sent as the Retry-After header (seconds).
	retryAfter int
}

// Error returns the Matrix error and the cause, for logs.
func (e *hostError) Error() string {
	if e.cause != nil {
		return e.matrix.Error() + ": " + e.cause.Error()
	}
	return e.matrix.Error()
}

// Unwrap returns the cause.
func (e *hostError) Unwrap() error { return e.cause }

// matrixErr returns a Matrix error whose status follows from its code.
func matrixErr(code core.Code, msg string) error {
	return &core.Error{Code: code, Message: msg}
}

// upstreamErr is a failure of a service we depend on (the homeserver of --homeserver) that
// answered but not usefully: 502 M_UNKNOWN.
func upstreamErr(msg string, cause error) error {
	return &hostError{matrix: &core.Error{Code: core.CodeUnknown, Message: msg}, why: reasonUpstream, cause: cause}
}

// unavailableErr is a service we depend on that cannot be reached: 503 M_UNKNOWN.
func unavailableErr(msg string, cause error) error {
	return &hostError{matrix: &core.Error{Code: core.CodeUnknown, Message: msg}, why: reasonUnavailable, cause: cause}
}

// storeUnavailableErr is a key store that stayed unreachable for the request's time budget
// (store.ErrUnavailable): 503 M_UNKNOWN with Retry-After, as nothing was done and the same
// request may be sent again (a claim whose transaction never committed handed out nothing).
func storeUnavailableErr(cause error) error {
	return &hostError{
		matrix:     &core.Error{Code: core.CodeUnknown, Message: "the key store is temporarily unavailable; try again later"},
		why:        reasonUnavailable,
		cause:      cause,
		retryAfter: storeRetryAfterSeconds,
	}
}

// storeRetryAfterSeconds is the Retry-After of a 503 for an unreachable store: about the time a
// database restart or failover takes.
const storeRetryAfterSeconds = 5

// retryAfterOf returns the Retry-After (seconds) of err, 0 for none.
func retryAfterOf(err error) int {
	var he *hostError
	if errors.As(err, &he) {
		return he.retryAfter
	}
	return 0
}

// internalErr is a failure whose details must not leak (a store error): 500 M_UNKNOWN with a
// generic message; the cause is logged.
func internalErr(what string, cause error) error {
	return &hostError{matrix: &core.Error{Code: core.CodeUnknown, Message: "internal error while " + what}, why: reasonInternal, cause: cause}
}

// toHTTP turns any error of a request into the HTTP status and the Matrix error body to answer.
// It is the ONE place where errcodes are mapped to HTTP statuses.
func toHTTP(err error) (int, *core.Error) {
	var he *hostError
	if errors.As(err, &he) {
		switch he.why {
		case reasonUpstream:
			return http.StatusBadGateway, he.matrix
		case reasonUnavailable:
			return http.StatusServiceUnavailable, he.matrix
		case reasonInternal:
			return http.StatusInternalServerError, he.matrix
		}
		err = he.matrix
	}
	var ee *echo.HTTPError
	if errors.As(err, &ee) {
		switch ee.Code {
		case http.StatusNotFound:
			return http.StatusNotFound, &core.Error{Code: CodeUnrecognized, Message: "unrecognized request: no such endpoint"}
		case http.StatusMethodNotAllowed:
			return http.StatusMethodNotAllowed, &core.Error{Code: CodeUnrecognized, Message: "unrecognized request: method not allowed on this endpoint"}
		case http.StatusRequestEntityTooLarge:
			return http.StatusRequestEntityTooLarge, &core.Error{Code: core.CodeTooLarge, Message: "request body too large"}
		}
		if ee.Code >= 400 && ee.Code < 500 {
			return ee.Code, &core.Error{Code: CodeUnrecognized, Message: http.StatusText(ee.Code)}
		}
		return http.StatusInternalServerError, &core.Error{Code: core.CodeUnknown, Message: "internal error"}
	}
	var ce *core.Error
	if errors.As(err, &ce) {
		return matrixhttp.StatusOf(ce.Code), ce
	}
	return http.StatusInternalServerError, &core.Error{Code: core.CodeUnknown, Message: "internal error"}
}
