// Package errcode maps corral's error vocabulary (model.Err*) to the wire
// codes of package api and back. The admin API and the cluster RPC both use
// it, so an error keeps its class across every hop: follower -> leader ->
// follower -> corralctl.
package errcode

import (
	"context"
	"errors"

	"github.com/corralhq/corral/api"
	"github.com/corralhq/corral/model"
)

var table = []struct {
	err  error
	code api.ErrorCode
}{
	{model.ErrNotFound, api.CodeNotFound},
	{model.ErrInvalid, api.CodeInvalid},
	{model.ErrConflict, api.CodeConflict},
	{model.ErrNoCapacity, api.CodeNoCapacity},
	{model.ErrNotLeader, api.CodeNotLeader},
	{model.ErrUnavailable, api.CodeUnavailable},
	{model.ErrForbidden, api.CodeForbidden},
	{model.ErrUnauthenticated, api.CodeUnauthenticated},
	{model.ErrQuota, api.CodeQuotaExceeded},
	{context.DeadlineExceeded, api.CodeUnavailable},
}

// Of returns the wire code for err.
func Of(err error) api.ErrorCode {
	for _, e := range table {
		if errors.Is(err, e.err) {
			return e.code
		}
	}
	var ae *api.Error
	if errors.As(err, &ae) {
		return ae.Code
	}
	return api.CodeInternal
}

// ToAPI turns err into the wire error, keeping structured details when err
// carries them.
func ToAPI(err error) *api.Error {
	out := &api.Error{Code: Of(err), Message: err.Error()}
	var d interface{ ErrorDetails() any }
	if errors.As(err, &d) {
		out.Details = d.ErrorDetails()
	}
	return out
}

// FromAPI turns a wire error back into an error that matches both the
// model sentinel (errors.Is(err, model.ErrNotFound)) and the api sentinel.
func FromAPI(e *api.Error) error {
	for _, t := range table {
		if t.code == e.Code && t.err != context.DeadlineExceeded {
			return &wrapped{api: e, sentinel: t.err}
		}
	}
	return e
}

type wrapped struct {
	api      *api.Error
	sentinel error
}

func (w *wrapped) Error() string     { return w.api.Error() }
func (w *wrapped) Unwrap() []error   { return []error{w.api, w.sentinel} }
func (w *wrapped) ErrorDetails() any { return w.api.Details }
