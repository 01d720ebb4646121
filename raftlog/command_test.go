package raftlog

import (
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/corralhq/corral/model"
)

// Every command decodes to what was encoded, under its own type byte.
func TestEveryCommandRoundTrips(t *testing.T) {
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	cmds := []Command{
		RegisterHost{Host: model.Host{Name: "h1"}}, SetHostLabels{Name: "h1", Set: map[string]string{"rack": "a"}},
		SetHostMode{Name: "h1", Mode: model.ModeMaintenance}, RemoveHost{Name: "h1", Time: now},
		CreateVM{VM: model.VM{Name: "v"}}, PlaceVM{Name: "v", Host: "h2", Generation: 3}, DeleteVM{Name: "v"},
		SetVMPower{Name: "v", Desired: model.PowerStopped}, RestartVM{Name: "v"}, ResizeVM{Name: "v", VCPUs: 2, MemoryMiB: 512},
		MarkVMDelete{Name: "v"}, ReportVMs{Host: "h1", Time: now, Reports: []VMReport{{Name: "v", Generation: 1, State: model.StateRunning, RestartTimes: []time.Time{now}}}},
		FailVM{Name: "v"}, PutImage{Image: model.Image{Name: "base"}}, DeleteImage{Name: "base"},
		AddEvents{Events: []model.Event{{Kind: "k", Time: now}}}, FenceHost{Name: "h1", Reason: "r", Time: now},
		SetHostDraining{Name: "h1", Draining: true}, SetHostStopped{Name: "h1", At: now}, StartMigration{Name: "v", Target: "h2", Time: now},
		FinishMigration{Name: "v"}, AbortMigration{Name: "v"}, SetHA{Disarmed: true, Time: now}, AddJoinToken{},
		RevokeJoinToken{}, AddAPIToken{}, RevokeAPIToken{Name: "t"}, SetProject{Create: true}, DeleteProject{Name: "p"}, SetGossipKeys{}, SetProtocol{Protocol: 2}, CreateNetwork{Network: model.Network{Name: "n"}}, DeleteNetwork{Name: "n"},
		Batch{Entries: [][]byte{MustEncode(DeleteVM{Name: "v"})}},
		SetProjectBackupPolicy{Project: "p", Target: "t1", Schedule: &model.Schedule{EverySec: 3600, KeepLast: 24}, Time: now},
		AdoptGuests{Host: "h2", Guests: []AdoptedGuest{{Name: "web", VMID: "id-web", Running: true, Layers: []uint64{3, 1, 0}}}, Time: now},
		EndRecovery{Force: true, Time: now},
	}
	seen := map[Type]bool{}
	for _, c := range cmds {
		b := MustEncode(c)
		if Type(b[0]) != c.Type() || seen[c.Type()] {
			t.Fatalf("%T: type byte %d, type %d (seen before: %v)", c, b[0], c.Type(), seen[c.Type()])
		}
		seen[c.Type()] = true
		got, err := Decode(b)
		if err != nil || !reflect.DeepEqual(got, c) {
			t.Fatalf("%T: decoded %#v, %v", c, got, err)
		}
	}
	if _, err := Decode([]byte{0x7f, '{', '}'}); !errors.Is(err, ErrUnknownType) {
		t.Fatalf("unknown type: %v", err)
	}
	if c, err := Decode([]byte{byte(IgnoreUnknown | 0x55), '{', '}'}); c != nil || err != nil {
		t.Fatalf("ignorable unknown type: %v %v", c, err)
	}
	if _, err := Decode(nil); err == nil {
		t.Fatal("empty entry decoded")
	}
}
