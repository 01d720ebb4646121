#!/bin/sh
# Before removal (deb: remove; rpm: 0), not before an upgrade. Stopping
# corrald leaves this host's guests running; drain the host first
# ("corralctl host drain NAME") to move them away.
set -e
if [ "$1" = "remove" ] || [ "$1" = "0" ]; then
  if [ -d /run/systemd/system ]; then
    systemctl disable --now corrald.service >/dev/null 2>&1 || true
    # After corrald: its clean stop released the fencer.
    systemctl disable --now corral-fencer.service >/dev/null 2>&1 || true
  fi
fi
exit 0
