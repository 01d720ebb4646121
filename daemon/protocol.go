package daemon

import "github.com/corralhq/corral/raftlog"

// protocol is the cluster protocol this corrald speaks.
func (d *Daemon) protocol() int {
	if d.cfg.Tuning.Protocol != 0 {
		return d.cfg.Tuning.Protocol
	}
	return raftlog.Protocol
}
