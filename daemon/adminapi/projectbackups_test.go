package adminapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/corralhq/corral/api"
)

func (b *scheduleBackend) SetProjectBackupSchedule(ctx context.Context, name string, req api.BackupScheduleRequest) (api.Project, error) {
	b.call(ctx, fmt.Sprintf("project backup schedule %s %q to %q", name, req.Schedule, req.Target))
	p := api.Project{Name: name, BackupSchedule: canonical(req.Schedule)}
	if p.BackupSchedule != "" {
		p.BackupTarget = req.Target
	}
	return p, nil
}

// A project's backup schedule is an operator's, as a VM's: a viewer is
// refused (the backend never called); an operator, and an operator of a
// project (scoped: the backend confines it), set and remove it; bad input
// is refused at the edge.
func TestProjectBackupScheduleRoute(t *testing.T) {
	b := &scheduleBackend{}
	viewer, operator, admin, scoped := serveTokens(t, b)
	ctx := context.Background()

	for what, err := range map[string]error{
		"set": func() error { _, err := viewer.SetProjectBackupSchedule(ctx, "p1", "t1", "daily keep 7"); return err }(),
		"off": func() error { _, err := viewer.SetProjectBackupSchedule(ctx, "p1", "", ""); return err }(),
	} {
		if !errors.Is(err, api.ErrForbidden) || !strings.Contains(err.Error(), "needs the operator role") {
			t.Errorf("viewer's %s: %v", what, err)
		}
	}
	if len(b.calls) != 0 {
		t.Fatalf("refused requests reached the backend: %v", b.calls)
	}
	p, err := operator.SetProjectBackupSchedule(ctx, "p1", "t1", "DAILY 02:00 keep 7  daily 4 weekly")
	if err != nil || p.Name != "p1" || p.BackupSchedule != "daily 02:00 keep 7 daily 4 weekly" || p.BackupTarget != "t1" {
		t.Fatalf("operator sets a project's backup schedule: %+v %v", p, err)
	}
	if p, err = operator.SetProjectBackupSchedule(ctx, "p1", "", ""); err != nil || p.BackupSchedule != "" {
		t.Fatalf("operator removes it: %+v %v", p, err)
	}
	if _, err = admin.SetProjectBackupSchedule(ctx, "default", "t1", "hourly keep 24"); err != nil {
		t.Fatalf("admin sets the default project's: %v", err)
	}
	if _, err = scoped.SetProjectBackupSchedule(ctx, "p1", "t1", "every 6h keep 4"); err != nil {
		t.Fatalf("a project's operator sets its project's: %v", err)
	}
	// Other project routes stay an admin's.
	if _, err = operator.SetProjectQuota(ctx, "p1", api.Quota{VMs: 1}); !errors.Is(err, api.ErrForbidden) {
		t.Fatalf("operator sets a quota: %v", err)
	}
	if _, err = scoped.SetProjectQuota(ctx, "p1", api.Quota{VMs: 1}); !errors.Is(err, api.ErrForbidden) {
		t.Fatalf("a project's operator sets a quota: %v", err)
	}

	invalid := func(what string, err error, text string) {
		t.Helper()
		if !errors.Is(err, api.ErrInvalid) || !strings.Contains(err.Error(), text) {
			t.Errorf("%s: %v, want invalid with %q", what, err, text)
		}
	}
	_, err = operator.SetProjectBackupSchedule(ctx, "p1", "t1", "weekly keep 4")
	invalid("bad schedule", err, `starts with "weekly", not hourly, daily or every`)
	_, err = operator.SetProjectBackupSchedule(ctx, "p1", "", "daily keep 7")
	invalid("no target", err, "a backup schedule needs a target")
	_, err = operator.SetProjectBackupSchedule(ctx, "p1", strings.Repeat("t", 64), "daily keep 7")
	invalid("bad target", err, "backup target name")
	_, err = operator.SetProjectBackupSchedule(ctx, "P1", "t1", "daily keep 7")
	invalid("bad project name", err, "project name")
	if err := operator.Do(ctx, http.MethodPut, "/v1/projects/p1/backup-schedule", strings.NewReader(`{"schedule":"daily keep 7","target":"t1","colour":"red"}`), nil); !errors.Is(err, api.ErrInvalid) {
		t.Errorf("unknown field: %v", err)
	}

	want := []string{
		`project backup schedule p1 "DAILY 02:00 keep 7  daily 4 weekly" to "t1"`,
		`project backup schedule p1 "" to ""`,
		`project backup schedule default "hourly keep 24" to "t1"`,
		`project backup schedule p1 "every 6h keep 4" to "t1" @p1`,
	}
	if got := strings.Join(b.calls, "\n"); got != strings.Join(want, "\n") {
		t.Fatalf("backend calls\n%s\nwant\n%s", got, strings.Join(want, "\n"))
	}
}
