package model

import "errors"

// The error vocabulary shared across corral. Packages wrap these with the
// identifiers involved (fmt.Errorf("host %q: %w", name, ErrNotFound)); the
// admin API and the cluster RPC map them to codes in one place each, and
// their clients map the codes back, so errors.Is works across a socket.
var (
	ErrNotFound    = errors.New("not found")
	ErrInvalid     = errors.New("invalid")
	ErrConflict    = errors.New("conflict")
	ErrNoCapacity  = errors.New("no capacity")
	ErrNotLeader   = errors.New("not the leader")
	ErrUnavailable = errors.New("unavailable")
	// ErrForbidden: the caller is not allowed this (a host speaking for
	// another, a request without a cluster certificate, a bad join token).
	ErrForbidden = errors.New("forbidden")
	// ErrUnauthenticated: the caller did not say who it is, or said it
	// with a credential that is unknown, expired or revoked.
	ErrUnauthenticated = errors.New("unauthenticated")
	// ErrQuota: the change would take a project past one of its quotas
	// (QuotaError says which).
	ErrQuota = errors.New("quota exceeded")
)
