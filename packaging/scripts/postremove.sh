#!/bin/sh
# After removal. Nothing under /var/lib/corral is deleted, not even on purge:
# it holds this host's Raft state and, by default, the storage pool with
# guest disks. Remove it by hand once the host has left the cluster.
set -e
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload || true
fi
exit 0
