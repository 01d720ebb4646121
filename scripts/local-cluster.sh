#!/usr/bin/env bash
# A 3-host corral cluster on loopback (127.0.0.1-3), for trying corralctl.
# usage: scripts/local-cluster.sh up|status|down
set -euo pipefail
cd "$(dirname "$0")/.."
dir=_cluster
bin=bin
n=3
case "${1:-}" in
up)
  mkdir -p "$dir"
  for i in $(seq 1 $n); do
    if [ -f "$dir/h$i.pid" ] && kill -0 "$(cat "$dir/h$i.pid")" 2>/dev/null; then
      echo "h$i already running (pid $(cat "$dir/h$i.pid"))"; continue
    fi
    cat > "$dir/h$i.toml" <<CONF
name = "h$i"
data_dir = "$PWD/$dir/data-h$i"
bind_addr = "127.0.0.$i"
seeds = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
bootstrap_expect = 3
socket = "$PWD/$dir/h$i.sock"
socket_group = ""
# control plane only: no guests, so no fencer to feed
fencer_socket = ""
CONF
    "$bin/corrald" --config "$dir/h$i.toml" >"$dir/h$i.log" 2>&1 &
    echo $! > "$dir/h$i.pid"
    echo "started h$i (pid $!, log $dir/h$i.log)"
  done
  for _ in $(seq 1 100); do
    if "$bin/corralctl" --socket "$dir/h1.sock" --timeout 1s status -o json 2>/dev/null | grep -q '"leader": "h'; then
      "$bin/corralctl" --socket "$dir/h1.sock" host ls
      echo
      echo "try:  $bin/corralctl --socket $dir/h2.sock status"
      echo "stop: make cluster-down"
      exit 0
    fi
    sleep 0.2
  done
  echo "no leader after 20s; see $dir/*.log" >&2
  exit 1
  ;;
status)
  for i in $(seq 1 $n); do
    echo "== h$i"; "$bin/corralctl" --socket "$dir/h$i.sock" status || true
  done
  "$bin/corralctl" --socket "$dir/h1.sock" host ls || true
  ;;
down)
  for i in $(seq 1 $n); do
    if [ -f "$dir/h$i.pid" ]; then
      pid=$(cat "$dir/h$i.pid")
      kill "$pid" 2>/dev/null && while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
      echo "stopped h$i"
    fi
  done
  rm -rf "$dir"
  ;;
*) echo "usage: $0 up|status|down" >&2; exit 2 ;;
esac
