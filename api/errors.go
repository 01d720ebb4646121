package api

import "net/http"

// ErrorCode names a class of failure. Clients branch on it, never on text.
type ErrorCode string

const (
	CodeNotFound    ErrorCode = "not_found"
	CodeInvalid     ErrorCode = "invalid"
	CodeConflict    ErrorCode = "conflict"
	CodeNoCapacity  ErrorCode = "no_capacity"
	CodeNotLeader   ErrorCode = "not_leader"
	CodeUnavailable ErrorCode = "unavailable"
	CodeInternal    ErrorCode = "internal"
	CodeForbidden   ErrorCode = "forbidden"
	// CodeUnauthenticated: no credential, or one that is unknown, expired
	// or revoked (401).
	CodeUnauthenticated ErrorCode = "unauthenticated"
	// CodeQuotaExceeded: the change would take a project past a quota;
	// Details names it, its limit and its use (403, as a refusal).
	CodeQuotaExceeded ErrorCode = "quota_exceeded"
	// CodeRateLimited: the caller sent more requests than its rate allows;
	// the answer's Retry-After header says when to try again.
	CodeRateLimited ErrorCode = "rate_limited"
)

// Status returns the HTTP status that carries code.
func (c ErrorCode) Status() int {
	switch c {
	case CodeNotFound:
		return http.StatusNotFound
	case CodeInvalid:
		return http.StatusBadRequest
	case CodeConflict:
		return http.StatusConflict
	case CodeNoCapacity:
		return http.StatusUnprocessableEntity
	case CodeForbidden, CodeQuotaExceeded:
		return http.StatusForbidden
	case CodeUnauthenticated:
		return http.StatusUnauthorized
	case CodeRateLimited:
		return http.StatusTooManyRequests
	case CodeNotLeader, CodeUnavailable:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// Error is the body of every failed request.
type Error struct {
	Code    ErrorCode `json:"code"`
	Message string    `json:"message"`
	// Details carries structured context when a code needs it, e.g. why
	// each host was rejected when nothing could place a VM.
	Details any `json:"details,omitempty"`
}

func (e *Error) Error() string {
	if e.Message == "" {
		return string(e.Code)
	}
	return e.Message
}

// Is matches a sentinel of the same code, so errors.Is(err, api.ErrNotFound)
// works on errors returned by the client.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Message == "" && t.Code == e.Code
}

// Sentinels for errors.Is.
var (
	ErrNotFound        = &Error{Code: CodeNotFound}
	ErrInvalid         = &Error{Code: CodeInvalid}
	ErrConflict        = &Error{Code: CodeConflict}
	ErrNoCapacity      = &Error{Code: CodeNoCapacity}
	ErrNotLeader       = &Error{Code: CodeNotLeader}
	ErrUnavailable     = &Error{Code: CodeUnavailable}
	ErrInternal        = &Error{Code: CodeInternal}
	ErrForbidden       = &Error{Code: CodeForbidden}
	ErrUnauthenticated = &Error{Code: CodeUnauthenticated}
	ErrQuotaExceeded   = &Error{Code: CodeQuotaExceeded}
	ErrRateLimited     = &Error{Code: CodeRateLimited}
)
