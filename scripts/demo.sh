#!/usr/bin/env bash
# corral demo: a 3-host lab on this machine, guests, a host killed and its
# guests recovered, a host drained by live migration. KEEP=1 leaves the lab
# up. Run as root (make demo).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/go/bin:$PATH
DIR=${LAB_DIR:-/var/lib/corral-lab}
LAB="bin/corral-lab --dir $DIR"
GUESTS=${GUESTS:-6}

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
ctl() { bin/corralctl --socket "$SOCK" "$@"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

say "installing what is missing and building"
scripts/deps.sh demo
make -s build
scripts/build-test-guest.sh _build/guest >/dev/null

if [ -f "$DIR/lab.json" ]; then
  say "taking down the lab a previous demo left"
  $LAB down
fi
say "bringing up 3 hosts (network + mount namespace, libvirtd and corrald each)"
$LAB up --hosts 3
trap '[ "${KEEP:-0}" = 1 ] || { say "tearing down"; $LAB down; }' EXIT
SHARED="$DIR/shared"
mkdir -p "$SHARED/guest"
cp _build/guest/vmlinuz _build/guest/initrd.img _build/guest/disk.qcow2 "$SHARED/guest/"

SOCK="$DIR/hosts/h1/run-corral/corral.sock"
for _ in $(seq 1 100); do
  ctl status -o json 2>/dev/null | grep -q '"lease": "held"' && break
  sleep 0.2
done
# Every host registered: the leader admits a host once it has proved its
# name (its certificate), a moment after gossip sees it.
for _ in $(seq 1 100); do
  [ "$(ctl host ls -o json 2>/dev/null | grep -c '"mode": "active"')" -ge 3 ] && break
  sleep 0.2
done
ctl status

say "importing the test guest's base image into the shared pool"
ctl image import base "$SHARED/guest/disk.qcow2"

say "creating $GUESTS guests (Debian kernel + busybox, TCG)"
for i in $(seq 1 "$GUESTS"); do
  ctl vm create "web$i" --memory 128M --image base --kernel "$SHARED/guest/vmlinuz" \
    --initrd "$SHARED/guest/initrd.img" --cmdline "console=ttyS0 quiet corral.name=web$i" >/dev/null
done
for _ in $(seq 1 300); do
  n=$(ctl vm ls -o json | grep -c '"state": "running"' || true)
  [ "$n" -ge "$GUESTS" ] && break
  sleep 0.2
done
booted() { ctl vm console-log "$1" 2>/dev/null | grep -ac CORRAL-BOOT || true; }
for i in $(seq 1 "$GUESTS"); do
  for _ in $(seq 1 300); do [ "$(booted "web$i")" -ge 1 ] && break; sleep 0.2; done
done
ctl vm ls
echo; echo "web1's serial console:"; ctl vm console-log web1 | grep -a CORRAL | tail -2 || true

VICTIM=$(ctl vm ls -o json | awk -F'"' '/"host":/ {print $4}' | sort | uniq -c | sort -rn | awk 'NR==1 {print $2}')
say "killing $VICTIM (power loss: every process of the host dies, its link goes down)"
for h in h1 h2 h3; do [ "$h" != "$VICTIM" ] && SOCK="$DIR/hosts/$h/run-corral/corral.sock" && break; done
LEADER=$(ctl status -o json | awk -F'"' '/"leader":/ {print $4}')
echo "the leader is $LEADER; $VICTIM runs: $(ctl vm ls -o json | grep -B2 "\"host\": \"$VICTIM\"" | awk -F'"' '/"name":/ {print $4}' | tr '\n' ' ')"
T0=$(now)
$LAB kill "$VICTIM"
[ "$VICTIM" = "$LEADER" ] && for h in h1 h2 h3; do [ "$h" != "$VICTIM" ] && SOCK="$DIR/hosts/$h/run-corral/corral.sock" && break; done
for _ in $(seq 1 600); do
  left=$(ctl vm ls -o json 2>/dev/null | grep -c "\"host\": \"$VICTIM\"" || true)
  notrunning=$(ctl vm ls -o json 2>/dev/null | grep -c '"state": "\(starting\|pending\|crashed\|error\)"' || true)
  [ "$left" = 0 ] && [ "$notrunning" = 0 ] && break
  sleep 0.1
done
echo "all guests running on survivors $(since "$T0")s after the kill"
for i in $(seq 1 "$GUESTS"); do
  for _ in $(seq 1 300); do [ "$(booted "web$i")" -ge 1 ] && break; sleep 0.1; done
done
echo "and every guest printed its boot marker $(since "$T0")s after the kill"
ctl events --limit 40 | grep -E "suspected|fenced|recovering|recovered|leader" | tail -12 || true
ctl vm ls

say "powering $VICTIM back on: it learns it was fenced and rejoins empty"
$LAB boot "$VICTIM"
for _ in $(seq 1 200); do
  ctl host ls -o json | grep -A30 "\"name\": \"$VICTIM\"" | grep -q '"mode": "active"' && break
  sleep 0.2
done
ctl host ls

DRAIN=$(ctl vm ls -o json | awk -F'"' '/"host":/ {print $4}' | sort | uniq -c | sort -rn | awk 'NR==1 {print $2}')
say "draining $DRAIN: every guest live-migrates away, none reboots"
ctl host drain "$DRAIN"
ctl vm ls
echo; echo "uptime kept across the migration (guest's own clock):"
for v in $(ctl vm ls -o json | awk -F'"' '/"name":/ {print $4}' | head -2); do
  echo "  $v: $(ctl vm console-log "$v" | grep -a CORRAL-TICK | tail -1 || true)"
done
ctl host restore "$DRAIN" --failback >/dev/null
echo; ctl events --limit 12

if [ "${KEEP:-0}" = 1 ]; then
  say "the lab stays up"
  echo "corralctl on a host:   $LAB exec h1 -- $PWD/bin/corralctl vm ls"
  echo "or from here:          bin/corralctl --socket $DIR/hosts/h1/run-corral/corral.sock status"
  echo "kill, partition, heal: $LAB kill h2 | partition h2 | heal h2 | boot h2"
  echo "take it down:          $LAB down"
fi
