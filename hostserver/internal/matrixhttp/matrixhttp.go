// Package matrixhttp holds the HTTP helpers that the keys server and the claim proxy share:
// the Matrix errcodes of the HTTP layer and their statuses, JSON and error answers, the
// bounded request body, the CORS headers of the client-server API. One copy, so that both
// answer the same way.
package matrixhttp

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strconv"

	"github.com/keyclaim/keyclaim/core"
)

// Matrix error codes that the HTTP layer produces beyond those of core (client-server API,
// "Standard error response").
const (
	// CodeUnrecognized is M_UNRECOGNIZED: an unknown path (404) or method (405).
	CodeUnrecognized core.Code = "M_UNRECOGNIZED"
	// CodeMissingToken is M_MISSING_TOKEN: no access token was given (401).
	CodeMissingToken core.Code = "M_MISSING_TOKEN"
	// CodeUnknownToken is M_UNKNOWN_TOKEN: the access token is not recognised (401).
	CodeUnknownToken core.Code = "M_UNKNOWN_TOKEN"
	// CodeForbidden is M_FORBIDDEN: the caller may not do this (403).
	CodeForbidden core.Code = "M_FORBIDDEN"
	// CodeNotFound is M_NOT_FOUND: a resource that does not exist here (404).
	CodeNotFound core.Code = "M_NOT_FOUND"
	// CodeUnauthorized is M_UNAUTHORIZED: a federation request whose X-Matrix authorization
	// fails (401; server-server API, "Request Authentication").
	CodeUnauthorized core.Code = "M_UNAUTHORIZED"
)

// StatusOf is the HTTP status of a Matrix error by its errcode: 400 for a request that is not
// valid JSON or not a valid request, 413 too large, 401 for authentication, 403, 404, and 500
// for anything else.
func StatusOf(code core.Code) int {
	switch code {
	case core.CodeNotJSON, core.CodeBadJSON, core.CodeInvalidParam:
		return http.StatusBadRequest
	case core.CodeTooLarge:
		return http.StatusRequestEntityTooLarge
	case CodeMissingToken, CodeUnknownToken, CodeUnauthorized:
		return http.StatusUnauthorized
	case CodeForbidden:
		return http.StatusForbidden
	case CodeUnrecognized, CodeNotFound:
		return http.StatusNotFound
	}
	return http.StatusInternalServerError
}

// WriteJSON answers status with a JSON body built by the caller. The length is known, so it is
// sent as Content-Length: without it net/http sends any body over 2 KiB (a claim of more than a
// few devices) chunked, in more write calls. The error is the write's (a client that went away).
func WriteJSON(w http.ResponseWriter, status int, body []byte) error {
	h := w.Header()
	h["Content-Type"] = []string{"application/json"}
	h["Content-Length"] = []string{strconv.Itoa(len(body))}
	w.WriteHeader(status)
	_, err := w.Write(body)
	return err
}

// WriteError answers a Matrix error {"errcode", "error"} with status.
func WriteError(w http.ResponseWriter, status int, code core.Code, msg string) error {
	e := core.Error{Code: code, Message: msg}
	return WriteJSON(w, status, e.AppendJSON(nil))
}

// ReadBody reads the body of r, at most limit bytes: a larger body is M_TOO_LARGE, found
// without reading more than the limit plus one byte; a body that cannot be read is M_NOT_JSON.
// The error is a *core.Error. w, when not nil, is told to close the connection after a body
// larger than the limit (http.MaxBytesReader).
func ReadBody(w http.ResponseWriter, r *http.Request, limit int) ([]byte, error) {
	tooLarge := func(n string) error {
		return &core.Error{Code: core.CodeTooLarge, Message: "request body is " + n + " bytes; the limit is " + strconv.Itoa(limit)}
	}
	if r.ContentLength > int64(limit) {
		return nil, tooLarge(strconv.FormatInt(r.ContentLength, 10))
	}
	var buf bytes.Buffer
	if r.ContentLength > 0 {
		buf.Grow(int(r.ContentLength) + 1)
	}
	var body io.Reader = io.LimitReader(r.Body, int64(limit)+1)
	if w != nil {
		body = http.MaxBytesReader(w, r.Body, int64(limit))
	}
	_, err := buf.ReadFrom(body)
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe) || err == nil && buf.Len() > limit:
		return nil, tooLarge("more than " + strconv.Itoa(limit))
	case err != nil:
		return nil, &core.Error{Code: core.CodeNotJSON, Message: "could not read the request body: " + err.Error()}
	}
	return buf.Bytes(), nil
}

// CORS headers of the client-server API ("Web Browser Clients").
const (
	CORSAllowOrigin  = "*"
	CORSAllowMethods = "GET, POST, PUT, DELETE, OPTIONS"
	CORSAllowHeaders = "X-Requested-With, Content-Type, Authorization"
)

// SetCORS sets the CORS headers of the client-server API on h.
func SetCORS(h http.Header) {
	h.Set("Access-Control-Allow-Origin", CORSAllowOrigin)
	h.Set("Access-Control-Allow-Methods", CORSAllowMethods)
	h.Set("Access-Control-Allow-Headers", CORSAllowHeaders)
}
