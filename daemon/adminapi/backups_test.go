package adminapi

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/corralhq/corral/api"
	"github.com/corralhq/corral/api/client"
	"github.com/corralhq/corral/daemon/identity"
	"github.com/corralhq/corral/internal/testutil"
	"github.com/corralhq/corral/model"
)

// backupBackend serves the backup routes and records the calls that reach
// it, each with the scope of its client.
type backupBackend struct {
	fakeBackend
	targets []api.BackupTarget
	backups []api.Backup
	calls   []string
}

func (b *backupBackend) call(ctx context.Context, what string) {
	if s := Scope(ctx); s != "" {
		what += " @" + s
	}
	b.calls = append(b.calls, what)
}

func (b *backupBackend) BackupTargets(ctx context.Context) ([]api.BackupTarget, error) {
	b.call(ctx, "targets")
	return b.targets, nil
}

func (b *backupBackend) CreateBackupTarget(ctx context.Context, req api.BackupTargetCreateRequest) (api.BackupTarget, error) {
	b.call(ctx, "target add "+req.Name+" "+req.Dir)
	t := api.BackupTarget{Name: req.Name, Dir: req.Dir, CreatedAt: time.Now().UTC()}
	b.targets = append(b.targets, t)
	return t, nil
}

func (b *backupBackend) DeleteBackupTarget(ctx context.Context, name string, force bool) (api.BackupTarget, error) {
	b.call(ctx, fmt.Sprintf("target rm %s %v", name, force))
	return api.BackupTarget{Name: name}, nil
}

func (b *backupBackend) BackupVM(ctx context.Context, name string, req api.VMBackupRequest) (api.BackupJob, error) {
	b.call(ctx, fmt.Sprintf("backup %s to %s full=%v limit=%d", name, req.Target, req.Full, req.BytesPerSec))
	return api.BackupJob{ID: "20250101-000000-abcdef", Target: req.Target, Kind: "full", Host: "h1", StartedAt: time.Now().UTC()}, nil
}

func (b *backupBackend) Backups(ctx context.Context, vm, target string) ([]api.Backup, error) {
	b.call(ctx, "backups vm="+vm+" target="+target)
	return b.backups, nil
}

func (b *backupBackend) Backup(ctx context.Context, id string) (api.Backup, error) {
	b.call(ctx, "show "+id)
	for _, e := range b.backups {
		if e.ID == id {
			return e, nil
		}
	}
	return api.Backup{}, fmt.Errorf("backup %q: %w", id, model.ErrNotFound)
}

func (b *backupBackend) DeleteBackup(ctx context.Context, id string) (api.Backup, error) {
	b.call(ctx, "rm "+id)
	return api.Backup{ID: id}, nil
}

func (b *backupBackend) RestoreBackup(ctx context.Context, id string, req api.RestoreRequest) (api.VM, error) {
	b.call(ctx, fmt.Sprintf("restore %s as %s stopped=%v", id, req.As, req.Stopped))
	return api.VM{Name: req.As, RestoringFrom: id}, nil
}

// serveTokens serves b on the HTTPS API on loopback and returns a client
// for each of a viewer's, an operator's, an admin's token and an
// operator's of project p1.
func serveTokens(t *testing.T, b Backend) (viewer, operator, admin, scoped *client.Client) {
	t.Helper()
	secret := func(c string) string { return model.APITokenPrefix + strings.Repeat(c, 64) }
	toks := []model.APIToken{
		{Name: "v", Role: model.RoleViewer, Hash: model.APITokenHash(secret("1"))},
		{Name: "o", Role: model.RoleOperator, Hash: model.APITokenHash(secret("2"))},
		{Name: "a", Role: model.RoleAdmin, Hash: model.APITokenHash(secret("3"))},
		{Name: "p", Role: model.RoleOperator, Project: "p1", Hash: model.APITokenHash(secret("4"))},
	}
	s := New(b, testutil.Logger(t))
	s.RateLimit = 0
	s.Tokens = func(sec string) (model.APIToken, bool) { return model.FindAPIToken(toks, sec) }
	cert, err := identity.APICertificate(t.TempDir(), "h1", []string{"127.0.0.1"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := tls.NewListener(tcp, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.ServeAPI(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	url, fp := "https://"+tcp.Addr().String(), identity.Fingerprint(cert.Leaf)
	return client.NewRemote(url, secret("1"), fp), client.NewRemote(url, secret("2"), fp), client.NewRemote(url, secret("3"), fp), client.NewRemote(url, secret("4"), fp)
}

const testBackupID = "20250101-000000-abcdef"

// A viewer lists backups and targets and is refused every change; an
// operator backs VMs up, removes and restores backups but does not add or
// remove targets, which an admin does. None of the refused requests reach
// the backend.
func TestBackupRoutesRoles(t *testing.T) {
	b := &backupBackend{backups: []api.Backup{{ID: testBackupID, VM: "v1", Target: "t1", Kind: "full", Project: "default"}}}
	viewer, operator, admin, _ := serveTokens(t, b)
	ctx := context.Background()

	if _, err := viewer.BackupTargets(ctx); err != nil {
		t.Fatalf("viewer lists targets: %v", err)
	}
	if got, err := viewer.Backups(ctx, "v1", "t1"); err != nil || len(got) != 1 || got[0].ID != testBackupID {
		t.Fatalf("viewer lists backups: %+v %v", got, err)
	}
	if got, err := viewer.Backup(ctx, testBackupID); err != nil || got.VM != "v1" {
		t.Fatalf("viewer shows a backup: %+v %v", got, err)
	}
	if _, err := viewer.Backup(ctx, "20250101-000000-ffffff"); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("missing backup: %v", err)
	}
	calls := len(b.calls)

	refused := func(who string, c *client.Client, role string) {
		t.Helper()
		forbidden := map[string]error{}
		_, forbidden["target add"] = c.CreateBackupTarget(ctx, api.BackupTargetCreateRequest{Name: "t2", Dir: "/srv/b"})
		_, forbidden["target rm"] = c.DeleteBackupTarget(ctx, "t1", true)
		for what, err := range forbidden {
			if !errors.Is(err, api.ErrForbidden) || !strings.Contains(err.Error(), "needs the admin role") {
				t.Errorf("%s's %s: %v", who, what, err)
			}
		}
		if role != "viewer" {
			return
		}
		forbidden = map[string]error{}
		_, forbidden["backup"] = c.BackupVM(ctx, "v1", api.VMBackupRequest{Target: "t1"})
		_, forbidden["rm"] = c.DeleteBackup(ctx, testBackupID)
		_, forbidden["restore"] = c.RestoreBackup(ctx, testBackupID, api.RestoreRequest{As: "v2"})
		for what, err := range forbidden {
			if !errors.Is(err, api.ErrForbidden) || !strings.Contains(err.Error(), "needs the operator role") {
				t.Errorf("%s's %s: %v", who, what, err)
			}
		}
	}
	refused("viewer", viewer, "viewer")
	refused("operator", operator, "operator")
	if len(b.calls) != calls {
		t.Fatalf("refused requests reached the backend: %v", b.calls[calls:])
	}

	if j, err := operator.BackupVM(ctx, "v1", api.VMBackupRequest{Target: "t1", Full: true, BytesPerSec: 50 << 20}); err != nil || j.ID != testBackupID || j.Target != "t1" {
		t.Fatalf("operator backs up: %+v %v", j, err)
	}
	if v, err := operator.RestoreBackup(ctx, testBackupID, api.RestoreRequest{As: "v2", Stopped: true}); err != nil || v.Name != "v2" || v.RestoringFrom != testBackupID {
		t.Fatalf("operator restores: %+v %v", v, err)
	}
	if _, err := operator.DeleteBackup(ctx, testBackupID); err != nil {
		t.Fatalf("operator removes: %v", err)
	}
	if tg, err := admin.CreateBackupTarget(ctx, api.BackupTargetCreateRequest{Name: "t2", Dir: "/srv/b"}); err != nil || tg.Name != "t2" || tg.Dir != "/srv/b" {
		t.Fatalf("admin adds a target: %+v %v", tg, err)
	}
	if _, err := admin.DeleteBackupTarget(ctx, "t2", true); err != nil {
		t.Fatalf("admin removes a target: %v", err)
	}
	want := "backup v1 to t1 full=true limit=52428800,restore " + testBackupID + " as v2 stopped=true,rm " + testBackupID + ",target add t2 /srv/b,target rm t2 true"
	if got := strings.Join(b.calls[calls:], ","); got != want {
		t.Fatalf("backend calls\n%s, want\n%s", got, want)
	}
}

// A client confined to a project reaches the backups (the backend filters
// them by its scope) and lists the targets, but adds none.
func TestBackupRoutesForAProjectsClient(t *testing.T) {
	b := &backupBackend{}
	_, _, _, scoped := serveTokens(t, b)
	ctx := context.Background()
	if _, err := scoped.Backups(ctx, "", ""); err != nil {
		t.Fatalf("list: %v", err)
	}
	if _, err := scoped.BackupTargets(ctx); err != nil {
		t.Fatalf("targets: %v", err)
	}
	if _, err := scoped.BackupVM(ctx, "v1", api.VMBackupRequest{Target: "t1"}); err != nil {
		t.Fatalf("backup: %v", err)
	}
	if _, err := scoped.RestoreBackup(ctx, testBackupID, api.RestoreRequest{As: "v2"}); err != nil {
		t.Fatalf("restore: %v", err)
	}
	if _, err := scoped.CreateBackupTarget(ctx, api.BackupTargetCreateRequest{Name: "t2", Dir: "/srv/b"}); !errors.Is(err, api.ErrForbidden) {
		t.Fatalf("target add: %v", err)
	}
	want := "backups vm= target= @p1,targets @p1,backup v1 to t1 full=false limit=0 @p1,restore " + testBackupID + " as v2 stopped=false @p1"
	if got := strings.Join(b.calls, ","); got != want {
		t.Fatalf("backend calls\n%s, want\n%s", got, want)
	}
}

// Bad backup ids, target names, directories, VM names and bodies are
// refused at the edge with 400 and never reach the backend.
func TestBackupRoutesRefuseBadInput(t *testing.T) {
	b := &backupBackend{}
	c := serve(t, b)
	ctx := context.Background()
	invalid := func(what string, err error, text string) {
		t.Helper()
		if !errors.Is(err, api.ErrInvalid) || !strings.Contains(err.Error(), text) {
			t.Errorf("%s: %v, want invalid with %q", what, err, text)
		}
	}
	for _, id := range []string{"A", "a b", "a_b", "x.y", strings.Repeat("1", 41), "a\x00"} {
		_, err := c.Backup(ctx, id)
		invalid("show "+id, err, "backup id")
		_, err = c.DeleteBackup(ctx, id)
		invalid("rm "+id, err, "backup id")
		_, err = c.RestoreBackup(ctx, id, api.RestoreRequest{As: "v2"})
		invalid("restore "+id, err, "backup id")
	}
	for _, name := range []string{"A", "a b", "-x", strings.Repeat("t", 64)} {
		_, err := c.DeleteBackupTarget(ctx, name, false)
		invalid("target rm "+name, err, "backup target name")
		_, err = c.CreateBackupTarget(ctx, api.BackupTargetCreateRequest{Name: name, Dir: "/srv/b"})
		invalid("target add "+name, err, "backup target name")
		_, err = c.BackupVM(ctx, "v1", api.VMBackupRequest{Target: name})
		invalid("backup to "+name, err, "backup target name")
		_, err = c.Backups(ctx, "", name)
		invalid("list of "+name, err, "backup target name")
	}
	for _, dir := range []string{"srv/b", "/", "/srv/../b", "/srv/b/"} {
		_, err := c.CreateBackupTarget(ctx, api.BackupTargetCreateRequest{Name: "t1", Dir: dir})
		invalid("target dir "+dir, err, "clean absolute path")
	}
	_, err := c.CreateBackupTarget(ctx, api.BackupTargetCreateRequest{Name: "t1"})
	invalid("target without a place", err, "give a directory or an S3 bucket")
	s3 := func(mod func(*api.S3)) *api.S3 {
		x := &api.S3{Endpoint: "10.0.0.1:9000", Bucket: "backups", AccessKey: "ak", SecretKey: "sk"}
		mod(x)
		return x
	}
	for what, bad := range map[string]*api.S3{
		"s3 endpoint": s3(func(x *api.S3) { x.Endpoint = "http://h/" }),
		"s3 bucket":   s3(func(x *api.S3) { x.Bucket = "UP" }),
		"s3 prefix":   s3(func(x *api.S3) { x.Prefix = "/abs" }),
		"secret key":  s3(func(x *api.S3) { x.SecretKey = "" }),
	} {
		_, err := c.CreateBackupTarget(ctx, api.BackupTargetCreateRequest{Name: "t1", S3: bad})
		invalid("target "+what, err, what)
	}
	_, err = c.CreateBackupTarget(ctx, api.BackupTargetCreateRequest{Name: "t1", Dir: "/srv/b", S3: s3(func(*api.S3) {})})
	invalid("target with both", err, "give a directory or an S3 bucket")
	_, err = c.BackupVM(ctx, "V1", api.VMBackupRequest{Target: "t1"})
	invalid("backup of a bad VM name", err, "vm name")
	_, err = c.BackupVM(ctx, "v1", api.VMBackupRequest{Target: "t1", BytesPerSec: -1})
	invalid("negative limit", err, "bytes_per_s")
	_, err = c.Backups(ctx, "V1", "")
	invalid("list of a bad VM name", err, "vm name")
	_, err = c.RestoreBackup(ctx, testBackupID, api.RestoreRequest{As: "V 2"})
	invalid("restore as a bad name", err, "vm name")
	_, err = c.RestoreBackup(ctx, testBackupID, api.RestoreRequest{})
	invalid("restore as nothing", err, "vm name is empty")
	for path, body := range map[string]string{
		"/v1/vms/v1/backup":                        `{"target":"t1","colour":"red"}`,
		"/v1/backup-targets":                       `{"name":"t1"`,
		"/v1/backups/" + testBackupID + "/restore": `{"as":5}`,
	} {
		if err := c.Do(ctx, http.MethodPost, path, strings.NewReader(body), nil); !errors.Is(err, api.ErrInvalid) {
			t.Errorf("POST %s %s: %v", path, body, err)
		}
	}
	if err := c.Do(ctx, http.MethodDelete, "/v1/backup-targets/t1?force=maybe", nil, nil); !errors.Is(err, api.ErrInvalid) {
		t.Errorf("force=maybe: %v", err)
	}
	if len(b.calls) != 0 {
		t.Fatalf("bad requests reached the backend: %v", b.calls)
	}
}
