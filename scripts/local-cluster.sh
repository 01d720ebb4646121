#!/usr/bin/env bash
# A 3-host corral cluster on loopback (127.0.0.1-3), for trying corralctl.
# It is set up as an operator would: corrald init on h1, the others join
# with its token, so Raft, RPC and gossip run with mutual TLS and a gossip key.
# usage: scripts/local-cluster.sh up|status|down
set -euo pipefail
cd "$(dirname "$0")/.."
dir=_cluster
bin=bin
n=3
case "${1:-}" in
up)
  mkdir -p "$dir"
  write_conf() {
    umask 077
    cat > "$dir/h$1.toml" <<CONF
name = "h$1"
data_dir = "$PWD/$dir/data-h$1"
bind_addr = "127.0.0.$1"
seeds = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
bootstrap_expect = 3
socket = "$PWD/$dir/h$1.sock"
socket_group = ""
# control plane only: no guests, so no fencer to feed
fencer_socket = ""
CONF
  }
  if [ ! -f "$dir/join-token" ]; then
    write_conf 1
    "$bin/corrald" init --config "$dir/h1.toml" >/dev/null
    (umask 077; cp "$dir/data-h1/identity/join-token" "$dir/join-token")
  fi
  for i in $(seq 1 $n); do
    if [ -f "$dir/h$i.pid" ] && kill -0 "$(cat "$dir/h$i.pid")" 2>/dev/null; then
      echo "h$i already running (pid $(cat "$dir/h$i.pid"))"; continue
    fi
    write_conf "$i"
    if [ "$i" != 1 ]; then echo "join_token = \"$(cat "$dir/join-token")\"" >> "$dir/h$i.toml"; fi
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
