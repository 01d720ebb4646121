package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/corralhq/corral/model"
	"github.com/corralhq/corral/raftlog"
)

// BackupReporter sends a backup job's progress and end to the leader.
type BackupReporter interface {
	BackupProgress(ctx context.Context, r BackupProgressRequest) error
	BackupDone(ctx context.Context, r BackupResult) error
}

// BackupRunner runs the backup jobs the state gives this host, each in
// its own goroutine (a job can take hours; the host loop's operations go
// on meanwhile). A job reads frozen layers only (its anchor snapshot's
// and those under it, which nothing merges while it runs), so the guest
// runs, migrates or is recovered elsewhere meanwhile. A corrald that
// restarts runs its jobs again from the start; chunks already in the
// target are not sent twice.
type BackupRunner struct {
	Self  string
	Store HostStore
	// Volumes is the pool: a job creates the layers its anchor snapshot
	// freezes that do not exist yet (a VM that has never run has none).
	Volumes  Volumes
	Engine   BackupEngine
	Reporter BackupReporter
	Clock    Clock
	Log      *slog.Logger

	mu      sync.Mutex
	running map[string]context.CancelFunc // by job attempt
	ended   map[string]bool               // attempts reported, until the state moves on
}

// attemptKey names an attempt of a job.
func attemptKey(j model.BackupJob) string { return j.ID + "#" + strconv.Itoa(j.Attempts) }

// Run runs jobs until ctx ends.
func (r *BackupRunner) Run(ctx context.Context) error {
	changes, stop := r.Store.Watch()
	defer stop()
	tick := r.Clock.NewTicker(5 * time.Second)
	defer tick.Stop()
	r.mu.Lock()
	r.running, r.ended = map[string]context.CancelFunc{}, map[string]bool{}
	r.mu.Unlock()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		r.sync(ctx, &wg)
		select {
		case <-ctx.Done():
			return nil
		case <-changes:
		case <-tick.C():
		}
	}
}

// sync starts the attempts the state gives this host and stops those it
// no longer does.
func (r *BackupRunner) sync(ctx context.Context, wg *sync.WaitGroup) {
	want := map[string]model.VM{}
	for _, v := range r.Store.VMs() {
		j := v.Backup
		if j == nil || j.Host != r.Self || v.Deleting {
			continue
		}
		if s, ok := v.Chain.Snapshot(j.Snapshot()); ok && s.State == model.SnapshotReady {
			want[attemptKey(*j)] = v
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for key, cancel := range r.running {
		if _, ok := want[key]; !ok {
			cancel()
			delete(r.running, key)
		}
	}
	for key := range r.ended {
		if _, ok := want[key]; !ok {
			delete(r.ended, key)
		}
	}
	for key, v := range want {
		if r.running[key] != nil || r.ended[key] {
			continue
		}
		jctx, cancel := context.WithCancel(ctx)
		r.running[key] = cancel
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.run(jctx, v)
			r.mu.Lock()
			if r.running[key] != nil {
				r.running[key]()
				delete(r.running, key)
				r.ended[key] = true
			}
			r.mu.Unlock()
		}()
	}
}

// run makes one attempt of v's job and reports how it ended.
func (r *BackupRunner) run(ctx context.Context, v model.VM) {
	j := *v.Backup
	start := r.Clock.Now()
	r.Log.Info("backup starting", "vm", v.Name, "backup", j.ID, "kind", j.Kind, "target", j.Target, "attempt", j.Attempts+1)
	stats, err := r.backup(ctx, v, j)
	if ctx.Err() != nil {
		r.Log.Info("backup stopped: the job left this host", "vm", v.Name, "backup", j.ID)
		return
	}
	res := BackupResult{Name: v.Name, ID: j.ID, Host: r.Self, Stats: stats}
	if err != nil {
		res.Error = err.Error()
		r.Log.Warn("backup failed", "vm", v.Name, "backup", j.ID, "err", err)
	} else {
		r.Log.Info("backup done", "vm", v.Name, "backup", j.ID, "read", stats.Read, "stored", stats.Stored,
			"took", r.Clock.Now().Sub(start).Round(time.Millisecond))
	}
	// Until the leader knows, the job looks under way here: retry.
	for {
		err := r.Reporter.BackupDone(ctx, res)
		if err == nil || errors.Is(err, model.ErrConflict) || errors.Is(err, model.ErrNotFound) || ctx.Err() != nil {
			return
		}
		r.Log.Warn("report backup result", "vm", v.Name, "backup", j.ID, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-r.Clock.After(time.Second):
		}
	}
}

func (r *BackupRunner) backup(ctx context.Context, v model.VM, j model.BackupJob) (model.BackupStats, error) {
	c := r.Store.Cluster()
	i := slices.IndexFunc(c.BackupTargets, func(t model.BackupTarget) bool { return t.Name == j.Target })
	if i < 0 {
		return model.BackupStats{}, fmt.Errorf("backup target %q is gone", j.Target)
	}
	anchor, _ := v.Chain.Snapshot(j.Snapshot())
	w := BackupWork{ID: j.ID, Parent: j.Parent, Kind: j.Kind, VM: v.Name, VMID: v.ID, Spec: v.Spec, BytesPerSec: j.BytesPerSec}
	var from model.Snapshot
	if j.Kind == model.BackupIncremental {
		var ok bool
		if from, ok = v.Chain.Snapshot(model.BackupSnapshotPrefix + j.Parent); !ok {
			return model.BackupStats{}, fmt.Errorf("the snapshot of backup %s, which this incremental builds on, is gone", j.Parent)
		}
	}
	for d := range v.Spec.Disks {
		top, err := ensureLayers(ctx, r.Volumes, r.Store, v, d, anchor.Layer)
		if err != nil {
			return model.BackupStats{}, fmt.Errorf("disk %d: %w", d, err)
		}
		w.Tops = append(w.Tops, top)
		stop := ""
		if j.Kind == model.BackupIncremental {
			stop = r.Volumes.VolumePath(v.LayerVolume(d, from.Layer))
		}
		w.StopAt = append(w.StopAt, stop)
	}
	var last time.Time
	progress := func(done, total int64) {
		if now := r.Clock.Now(); now.Sub(last) >= 2*time.Second || done == total {
			last = now
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			r.Reporter.BackupProgress(pctx, BackupProgressRequest{Name: v.Name, ID: j.ID, Host: r.Self, Done: done, Total: total})
		}
	}
	return r.Engine.Backup(ctx, c.BackupTargets[i], w, progress)
}

// restoreDisks restores a new VM's disks from its backup before its first
// start (a disk restored already is kept), reporting progress as the
// VM's message.
func (h *HostLoop) restoreDisks(ctx context.Context, v model.VM) error {
	if h.cfg.Backups == nil {
		return errors.New("this host cannot restore backups")
	}
	c := h.store.Cluster()
	i := slices.IndexFunc(c.BackupTargets, func(t model.BackupTarget) bool { return t.Name == v.Restore.Target })
	if i < 0 {
		return fmt.Errorf("backup target %q is gone", v.Restore.Target)
	}
	chain, err := model.BackupChain(c.Backups, v.Restore.Backup)
	if err != nil {
		return err
	}
	var ids []string
	for _, b := range chain {
		ids = append(ids, b.ID)
	}
	for d := range v.Spec.Disks {
		var last time.Time
		err := h.cfg.Backups.Restore(ctx, c.BackupTargets[i], ids, d, h.drv.VolumePath(v.DiskVolume(d)), func(done, total int64) {
			if now := h.clock.Now(); now.Sub(last) >= 2*time.Second {
				last = now
				msg := fmt.Sprintf("restoring disk %d of %d from backup %s: %d%%", d+1, len(v.Spec.Disks), v.Restore.Backup, done*100/max(total, 1))
				h.rep.Report(ctx, raftlog.ReportVMs{Host: h.cfg.Self, Time: now.UTC(), Reports: []raftlog.VMReport{
					{Name: v.Name, Generation: v.Generation, State: model.StateStarting, Since: v.Actual.Since, Message: msg}}})
			}
		})
		if err != nil {
			return fmt.Errorf("restore disk %d from backup %s: %w", d, v.Restore.Backup, err)
		}
	}
	h.log.Info("disks restored", "vm", v.Name, "backup", v.Restore.Backup, "chain", len(ids))
	return nil
}
