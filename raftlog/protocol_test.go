package raftlog

import (
	"errors"
	"strings"
	"testing"

	"github.com/corralhq/corral/model"
)

// A feature opens with the protocol recorded in state, not with the
// hosts' own: 0 reads as 1, and Check names the hosts that hold it back.
func TestFeatureGates(t *testing.T) {
	f := Feature{Name: "frobnication", Since: 2}
	hosts := []model.Host{{Name: "h1", Protocol: 2, Version: "v2"}, {Name: "h3", Version: "v1"}, {Name: "h2", Protocol: 1}}
	for _, tc := range []struct {
		cluster model.Cluster
		want    bool
	}{
		{model.Cluster{}, false},
		{model.Cluster{Protocol: 1}, false},
		{model.Cluster{Protocol: 2}, true},
		{model.Cluster{Protocol: 3}, true},
	} {
		if got := f.Enabled(tc.cluster); got != tc.want {
			t.Errorf("cluster protocol %d: enabled %v, want %v", tc.cluster.Protocol, got, tc.want)
		}
		err := f.Check(tc.cluster, hosts)
		if (err == nil) != tc.want {
			t.Errorf("cluster protocol %d: check %v", tc.cluster.Protocol, err)
		}
	}
	err := f.Check(model.Cluster{}, hosts)
	if !errors.Is(err, model.ErrConflict) {
		t.Fatalf("check: %v", err)
	}
	for _, want := range []string{"frobnication needs cluster protocol 2", "at protocol 1", "h2 (protocol 1, version unknown), h3 (protocol 1, version v1)", "upgrade them first"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("check says %q, want %q in it", err, want)
		}
	}
	if strings.Contains(err.Error(), "h1") {
		t.Errorf("check names a host that runs protocol 2: %v", err)
	}
	// Every host is new, but the leader has not recorded it yet.
	if err := f.Check(model.Cluster{}, hosts[:1]); err == nil || !strings.Contains(err.Error(), "not raised it yet") {
		t.Errorf("check with every host at 2: %v", err)
	}
	for _, feat := range []Feature{FeatureRestartTimes, FeatureForceRemove} {
		if feat.Since > Protocol || feat.Since < 2 || feat.Name == "" {
			t.Errorf("%+v: a feature must be newer than protocol 1 and no newer than this build's %d", feat, Protocol)
		}
	}
}

// A corrald may run on a state whose cluster protocol is at most its own.
func TestCheckProtocol(t *testing.T) {
	if err := CheckProtocol(2, model.Cluster{}); err != nil {
		t.Fatal(err)
	}
	if err := CheckProtocol(2, model.Cluster{Protocol: 2}); err != nil {
		t.Fatal(err)
	}
	if err := CheckProtocol(1, model.Cluster{}); err != nil {
		t.Fatal(err)
	}
	err := CheckProtocol(2, model.Cluster{Protocol: 3})
	if !errors.Is(err, ErrProtocol) {
		t.Fatalf("older corrald: %v", err)
	}
	for _, want := range []string{"speaks cluster protocol 2", "records protocol 3", "protocol 3 or later"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q lacks %q", err, want)
		}
	}
}
