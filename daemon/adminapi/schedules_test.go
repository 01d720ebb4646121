package adminapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/corralhq/corral/api"
	"github.com/corralhq/corral/model"
)

// scheduleBackend serves the schedule routes and records the calls that
// reach it, each with the scope of its client; it answers with the
// schedule in its canonical form, as the daemon does.
type scheduleBackend struct {
	fakeBackend
	calls []string
}

func (b *scheduleBackend) call(ctx context.Context, what string) {
	if s := Scope(ctx); s != "" {
		what += " @" + s
	}
	b.calls = append(b.calls, what)
}

func canonical(text string) string {
	if text == "" {
		return ""
	}
	s, err := model.ParseSchedule(text)
	if err != nil {
		panic(err) // the route validated it
	}
	return s.String()
}

func (b *scheduleBackend) SetSnapshotSchedule(ctx context.Context, name string, req api.SnapshotScheduleRequest) (api.VM, error) {
	b.call(ctx, fmt.Sprintf("snapshot schedule %s %q", name, req.Schedule))
	return api.VM{Name: name, SnapshotSchedule: canonical(req.Schedule)}, nil
}

func (b *scheduleBackend) SetBackupSchedule(ctx context.Context, name string, req api.BackupScheduleRequest) (api.VM, error) {
	b.call(ctx, fmt.Sprintf("backup schedule %s %q to %q", name, req.Schedule, req.Target))
	v := api.VM{Name: name, BackupSchedule: canonical(req.Schedule)}
	if v.BackupSchedule != "" {
		v.BackupTarget = req.Target
	}
	return v, nil
}

// A viewer is refused both schedules (the backend never called); an
// operator, and an operator of a project (scoped), set and remove them.
func TestScheduleRoutesRoles(t *testing.T) {
	b := &scheduleBackend{}
	viewer, operator, _, scoped := serveTokens(t, b)
	ctx := context.Background()

	forbidden := map[string]error{}
	_, forbidden["snapshot schedule"] = viewer.SetSnapshotSchedule(ctx, "v1", "hourly keep 24")
	_, forbidden["snapshot schedule off"] = viewer.SetSnapshotSchedule(ctx, "v1", "")
	_, forbidden["backup schedule"] = viewer.SetBackupSchedule(ctx, "v1", "t1", "daily keep 7")
	_, forbidden["backup schedule off"] = viewer.SetBackupSchedule(ctx, "v1", "", "")
	for what, err := range forbidden {
		if !errors.Is(err, api.ErrForbidden) || !strings.Contains(err.Error(), "needs the operator role") {
			t.Errorf("viewer's %s: %v", what, err)
		}
	}
	if len(b.calls) != 0 {
		t.Fatalf("refused requests reached the backend: %v", b.calls)
	}

	v, err := operator.SetSnapshotSchedule(ctx, "v1", "HOURLY  keep 24")
	if err != nil || v.Name != "v1" || v.SnapshotSchedule != "hourly keep 24" {
		t.Fatalf("operator sets a snapshot schedule: %+v %v", v, err)
	}
	if v, err = operator.SetSnapshotSchedule(ctx, "v1", ""); err != nil || v.SnapshotSchedule != "" {
		t.Fatalf("operator removes a snapshot schedule: %+v %v", v, err)
	}
	v, err = operator.SetBackupSchedule(ctx, "v1", "t1", "daily 02:00 keep 7 daily 4 weekly")
	if err != nil || v.BackupSchedule != "daily 02:00 keep 7 daily 4 weekly" || v.BackupTarget != "t1" {
		t.Fatalf("operator sets a backup schedule: %+v %v", v, err)
	}
	if v, err = operator.SetBackupSchedule(ctx, "v1", "", ""); err != nil || v.BackupSchedule != "" {
		t.Fatalf("operator removes a backup schedule: %+v %v", v, err)
	}
	if _, err = scoped.SetSnapshotSchedule(ctx, "v1", "every 15m keep 4"); err != nil {
		t.Fatalf("a project's operator sets a snapshot schedule: %v", err)
	}
	if _, err = scoped.SetBackupSchedule(ctx, "v1", "t1", "every 6h keep 4"); err != nil {
		t.Fatalf("a project's operator sets a backup schedule: %v", err)
	}
	want := []string{
		`snapshot schedule v1 "HOURLY  keep 24"`,
		`snapshot schedule v1 ""`,
		`backup schedule v1 "daily 02:00 keep 7 daily 4 weekly" to "t1"`,
		`backup schedule v1 "" to ""`,
		`snapshot schedule v1 "every 15m keep 4" @p1`,
		`backup schedule v1 "every 6h keep 4" to "t1" @p1`,
	}
	if got := strings.Join(b.calls, "\n"); got != strings.Join(want, "\n") {
		t.Fatalf("backend calls\n%s\nwant\n%s", got, strings.Join(want, "\n"))
	}
}

// Bad schedules (400, naming the problem as model.ParseSchedule does), bad
// or missing targets, bad VM names and bodies are refused at the edge and
// never reach the backend.
func TestScheduleRoutesRefuseBadInput(t *testing.T) {
	b := &scheduleBackend{}
	c := serve(t, b)
	ctx := context.Background()
	invalid := func(what string, err error, text string) {
		t.Helper()
		if !errors.Is(err, api.ErrInvalid) || !strings.Contains(err.Error(), text) {
			t.Errorf("%s: %v, want invalid with %q", what, err, text)
		}
	}
	for text, problem := range map[string]string{
		"weekly keep 4":               `starts with "weekly", not hourly, daily or every`,
		"hourly":                      "no keep",
		"hourly keep":                 "no keep",
		"hourly keep 0":               `"0" is not a count from 1 to 1000`,
		"hourly keep 24 monthly":      `keep 24 "monthly": the unit is last, daily or weekly`,
		"hourly keep 2 daily 3 daily": "keep ... daily given twice",
		"daily 25:00 keep 7":          `time of day "25:00" is not HH:MM`,
		"every 1.5s keep 3":           `"1.5s" is not a duration in whole seconds`,
		"every 5s keep 3":             "every 5s out of range 10..2592000",
		"every 60d keep 3":            `"60d" is not a duration`,
	} {
		_, err := c.SetSnapshotSchedule(ctx, "v1", text)
		invalid("snapshot schedule "+text, err, problem)
		_, err = c.SetBackupSchedule(ctx, "v1", "t1", text)
		invalid("backup schedule "+text, err, problem)
	}
	_, err := c.SetSnapshotSchedule(ctx, "v1", "weekly keep 4")
	invalid("the example in the message", err, `(want e.g. "hourly keep 24"`)

	_, err = c.SetBackupSchedule(ctx, "v1", "", "daily keep 7")
	invalid("backup schedule without a target", err, "a backup schedule needs a target")
	for _, name := range []string{"A", "a b", "-x", strings.Repeat("t", 64)} {
		_, err = c.SetBackupSchedule(ctx, "v1", name, "daily keep 7")
		invalid("backup schedule to "+name, err, "backup target name")
		_, err = c.SetBackupSchedule(ctx, "v1", name, "")
		invalid("backup schedule off, to "+name, err, "backup target name")
	}
	_, err = c.SetSnapshotSchedule(ctx, "V1", "hourly keep 24")
	invalid("snapshot schedule of a bad VM name", err, "vm name")
	_, err = c.SetBackupSchedule(ctx, "V1", "t1", "hourly keep 24")
	invalid("backup schedule of a bad VM name", err, "vm name")
	for path, body := range map[string]string{
		"/v1/vms/v1/snapshot-schedule": `{"schedule":"hourly keep 24","colour":"red"}`,
		"/v1/vms/v1/backup-schedule":   `{"schedule":5}`,
	} {
		if err := c.Do(ctx, http.MethodPut, path, strings.NewReader(body), nil); !errors.Is(err, api.ErrInvalid) {
			t.Errorf("PUT %s %s: %v", path, body, err)
		}
	}
	if len(b.calls) != 0 {
		t.Fatalf("bad requests reached the backend: %v", b.calls)
	}
}
