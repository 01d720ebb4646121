#!/usr/bin/env bash
# Time clean corrald restarts on a 3-host lab: SIGTERM to h2's corrald, start
# it again at once, and measure until h2 holds a lease again and h1 no longer
# shows the clean-stop mark. Prints each run and the mean; tears the lab down.
#
# usage: scripts/bench-restart.sh [RUNS]   (root; make build first)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-6}
dir=$(mktemp -d /tmp/corral-bench-restart.XXXXXX)
lab() { bin/corral-lab --dir "$dir" "$@"; }
trap 'lab down >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
lab up --hosts 3 --corrald bin/corrald >/dev/null
sock=$dir/hosts/h1/run-corral/corral.sock
h2sock=$dir/hosts/h2/run-corral/corral.sock
held() { bin/corralctl --socket "$h2sock" -o json status 2>/dev/null | grep -q '"lease": "held"'; }
for _ in $(seq 600); do held && break; sleep 0.05; done
held || { echo "h2 never got a lease" >&2; exit 1; }
total=0
for i in $(seq "$runs"); do
  t0=$(date +%s.%N)
  lab stop-daemon h2
  t1=$(date +%s.%N)
  marked=no
  bin/corralctl --socket "$sock" -o json host show h2 2>/dev/null | grep -q stopped_at && marked=yes
  lab start-daemon h2
  for _ in $(seq 1000); do
    out=$(bin/corralctl --socket "$sock" -o json host show h2 2>/dev/null || true)
    if held && [ -n "$out" ] && ! grep -q stopped_at <<<"$out"; then break; fi
    sleep 0.02
  done
  t2=$(date +%s.%N)
  awk -v i="$i" -v m="$marked" -v a="$t0" -v b="$t1" -v c="$t2" 'BEGIN { printf "run %d: stopped in %.2fs (clean stop recorded: %s), lease renewed %.2fs after SIGTERM\n", i, b-a, m, c-a }'
  total=$(awk -v t="$total" -v a="$t0" -v c="$t2" 'BEGIN { print t + c - a }')
done
awk -v t="$total" -v n="$runs" 'BEGIN { printf "mean: %.2fs from SIGTERM to a renewed lease over %d restarts\n", t/n, n }'
bin/corralctl --socket "$sock" events | grep -cE 'fencing|fenced' | sed 's/^/fence events: /' || true
