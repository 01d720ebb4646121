package daemon

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/corralhq/corral/raftlog"
)

// protocol is the cluster protocol this corrald speaks.
func (d *Daemon) protocol() int {
	if d.cfg.Tuning.Protocol != 0 {
		return d.cfg.Tuning.Protocol
	}
	return raftlog.Protocol
}

// checkProtocol refuses a state whose cluster protocol is newer than this
// corrald's (raftlog.ErrProtocol), naming the versions the other hosts
// run.
func (d *Daemon) checkProtocol() error {
	cl := d.store.Cluster()
	err := raftlog.CheckProtocol(d.protocol(), cl)
	if err == nil {
		return nil
	}
	var versions []string
	for _, h := range d.store.Hosts() {
		if h.Name != d.cfg.Name && raftlog.HostProtocol(h) >= raftlog.ClusterProtocol(cl) && h.Version != "" && !slices.Contains(versions, h.Version) {
			versions = append(versions, h.Version)
		}
	}
	if len(versions) > 0 {
		slices.Sort(versions)
		err = fmt.Errorf("%w (other hosts run %s)", err, strings.Join(versions, ", "))
	}
	return err
}

// watchProtocol stops the daemon (as a failed component) when an entry it
// applies raises the cluster's protocol above its own: it would misread
// what follows. Its guests keep running; the stop is clean.
func (d *Daemon) watchProtocol(ctx context.Context) error {
	changes, stop := d.store.Watch()
	defer stop()
	for {
		if err := d.checkProtocol(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changes:
		}
	}
}
