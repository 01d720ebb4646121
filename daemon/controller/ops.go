package controller

import (
	"context"
	"fmt"
	"strings"

	"github.com/corralhq/corral/model"
	"github.com/corralhq/corral/raftlog"
)

// The operations below run on the leader; followers forward them over the
// cluster RPC. Each checks leadership, validates against the current state,
// and writes through Raft.

// HostLabels is a label change for one host.
type HostLabels struct {
	Name   string            `json:"name"`
	Set    map[string]string `json:"set,omitempty"`
	Remove []string          `json:"remove,omitempty"`
}

// ready returns nil when this host leads and has applied everything
// committed before its term.
func (l *Leader) ready() error {
	if !l.raft.IsLeader() {
		return fmt.Errorf("this host is not the leader: %w", model.ErrNotLeader)
	}
	if !l.Leading() {
		return fmt.Errorf("leader is still catching up: %w", model.ErrNotLeader)
	}
	return nil
}

// SetHostLabels sets and removes labels of a host and returns the host.
func (l *Leader) SetHostLabels(ctx context.Context, req HostLabels) (model.Host, error) {
	if err := l.ready(); err != nil {
		return model.Host{}, err
	}
	if len(req.Set) == 0 && len(req.Remove) == 0 {
		return model.Host{}, fmt.Errorf("no labels to set or remove: %w", model.ErrInvalid)
	}
	if err := model.ValidateLabels(req.Set); err != nil {
		return model.Host{}, err
	}
	if _, err := l.store.Host(req.Name); err != nil {
		return model.Host{}, err
	}
	if _, err := l.store.Apply(ctx, raftlog.SetHostLabels{Name: req.Name, Set: req.Set, Remove: req.Remove}); err != nil {
		return model.Host{}, err
	}
	var set []string
	for _, k := range model.SortedKeys(req.Set) {
		set = append(set, k+"="+req.Set[k])
	}
	l.event(ctx, "labels", req.Name, "", "%s", capText(fmt.Sprintf("set %s; removed %s", strings.Join(set, " "), strings.Join(req.Remove, " ")), 500))
	return l.store.Host(req.Name)
}
