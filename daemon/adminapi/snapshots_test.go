package adminapi

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/corralhq/corral/api"
)

// snapBackend serves the snapshot routes for VM v1 and counts the calls
// that reach it.
type snapBackend struct {
	fakeBackend
	snaps []api.Snapshot
	calls []string
}

func (b *snapBackend) Snapshots(ctx context.Context, name string) ([]api.Snapshot, error) {
	b.calls = append(b.calls, "list "+name)
	return b.snaps, nil
}

func (b *snapBackend) CreateSnapshot(ctx context.Context, name string, req api.SnapshotCreateRequest) (api.Snapshot, error) {
	b.calls = append(b.calls, "create "+name+" "+req.Name)
	s := api.Snapshot{Name: req.Name, CreatedAt: time.Now().UTC(), State: "creating"}
	b.snaps = append(b.snaps, s)
	return s, nil
}

func (b *snapBackend) RevertSnapshot(ctx context.Context, name, snapshot string) (api.VM, error) {
	b.calls = append(b.calls, "revert "+name+" "+snapshot)
	return api.VM{Name: name, Snapshots: b.snaps}, nil
}

func (b *snapBackend) DeleteSnapshot(ctx context.Context, name, snapshot string) (api.VM, error) {
	b.calls = append(b.calls, "delete "+name+" "+snapshot)
	return api.VM{Name: name}, nil
}

// A viewer lists a VM's snapshots and is refused the changes (the backend
// never called); an operator makes them.
func TestSnapshotRoutesRoles(t *testing.T) {
	b := &snapBackend{}
	viewer, operator, _, _ := serveTokens(t, b)
	ctx := context.Background()

	if got, err := viewer.Snapshots(ctx, "v1"); err != nil || len(got) != 0 {
		t.Fatalf("viewer lists: %v %v", got, err)
	}
	forbidden := map[string]error{}
	_, forbidden["create"] = viewer.CreateSnapshot(ctx, "v1", "s1")
	_, forbidden["revert"] = viewer.RevertSnapshot(ctx, "v1", "s1")
	_, forbidden["rm"] = viewer.DeleteSnapshot(ctx, "v1", "s1")
	for what, err := range forbidden {
		if !errors.Is(err, api.ErrForbidden) || !strings.Contains(err.Error(), "needs the operator role") {
			t.Errorf("viewer's %s: %v", what, err)
		}
	}
	if len(b.calls) != 1 {
		t.Fatalf("refused requests reached the backend: %v", b.calls)
	}

	s, err := operator.CreateSnapshot(ctx, "v1", "s1")
	if err != nil || s.Name != "s1" || s.State != "creating" {
		t.Fatalf("operator creates: %+v %v", s, err)
	}
	if got, err := viewer.Snapshots(ctx, "v1"); err != nil || len(got) != 1 || got[0].Name != "s1" {
		t.Fatalf("viewer lists: %v %v", got, err)
	}
	if v, err := operator.RevertSnapshot(ctx, "v1", "s1"); err != nil || v.Name != "v1" || len(v.Snapshots) != 1 {
		t.Fatalf("operator reverts: %+v %v", v, err)
	}
	if _, err := operator.DeleteSnapshot(ctx, "v1", "s1"); err != nil {
		t.Fatalf("operator removes: %v", err)
	}
	want := "list v1,create v1 s1,list v1,revert v1 s1,delete v1 s1"
	if got := strings.Join(b.calls, ","); got != want {
		t.Fatalf("backend calls %s, want %s", got, want)
	}
}

// Bad snapshot names, in the path or the body, are refused at the edge
// with 400 and never reach the backend.
func TestSnapshotRoutesRefuseBadNames(t *testing.T) {
	b := &snapBackend{}
	c := serve(t, b)
	ctx := context.Background()
	for _, name := range []string{"A", "a b", "../x", "-x", ".x", "x/y", strings.Repeat("s", 64), "s\x00"} {
		if _, err := c.CreateSnapshot(ctx, "v1", name); !errors.Is(err, api.ErrInvalid) || !strings.Contains(err.Error(), "snapshot name") {
			t.Errorf("create %q: %v", name, err)
		}
		if _, err := c.RevertSnapshot(ctx, "v1", name); !errors.Is(err, api.ErrInvalid) || !strings.Contains(err.Error(), "snapshot name") {
			t.Errorf("revert %q: %v", name, err)
		}
		if _, err := c.DeleteSnapshot(ctx, "v1", name); !errors.Is(err, api.ErrInvalid) || !strings.Contains(err.Error(), "snapshot name") {
			t.Errorf("rm %q: %v", name, err)
		}
	}
	if _, err := c.CreateSnapshot(ctx, "v1", ""); !errors.Is(err, api.ErrInvalid) {
		t.Errorf("create without a name: %v", err)
	}
	// A bad VM name is refused first.
	if _, err := c.DeleteSnapshot(ctx, "V1", "s1"); !errors.Is(err, api.ErrInvalid) || !strings.Contains(err.Error(), "vm name") {
		t.Errorf("rm of a bad VM's: %v", err)
	}
	for _, body := range []string{`{`, `{"name":"s1","colour":"red"}`, `{"name":5}`} {
		if err := c.Do(ctx, http.MethodPost, "/v1/vms/v1/snapshots", strings.NewReader(body), nil); !errors.Is(err, api.ErrInvalid) {
			t.Errorf("body %s: %v", body, err)
		}
	}
	if len(b.calls) != 0 {
		t.Fatalf("bad requests reached the backend: %v", b.calls)
	}
}
