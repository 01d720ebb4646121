#!/bin/sh
# After install or upgrade (deb: configure; rpm: 1 or 2). The socket's group:
# members of "corral" may use corralctl without root.
set -e
if [ "$1" = "configure" ] || [ "$1" = "1" ] || [ "$1" = "2" ] || [ -z "$1" ]; then
  getent group corral >/dev/null 2>&1 || groupadd --system corral
  if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
    # An upgrade restarts a running corrald: guests keep running and are
    # adopted. A fresh install starts nothing: set seeds first, then
    # "systemctl enable --now corral-fencer corrald". The fencer is
    # restarted first; it keeps its deadline across the restart
    # (/run/corral-fencer/fencer.state).
    systemctl try-restart corral-fencer.service || true
    systemctl try-restart corrald.service || true
  fi
fi
exit 0
