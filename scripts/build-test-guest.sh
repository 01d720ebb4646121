#!/usr/bin/env bash
# Build corral's tiny test guest from Debian's cloud kernel and busybox-static:
#   OUT/vmlinuz     the kernel (direct kernel boot)
#   OUT/initrd.img  busybox + virtio/isofs/button modules + /init
#   OUT/disk.qcow2  a 16 MiB blank base image (the guest keeps a counter on it)
# The guest prints CORRAL-BOOT on its serial console, then a CORRAL-TICK line
# every second with a counter it keeps on its first disk and its uptime, so a
# test can tell a reboot (counter continues, uptime restarts) from a live
# migration (both continue). It powers off on the ACPI power button, mounts a
# NoCloud seed (iso9660, label cidata) if attached and prints its user-data,
# configures eth0 from corral.ip=ADDR/LEN on the kernel command line, and
# with corral.ping=ADDR prints CORRAL-PING ok|fail ADDR every second;
# corral.listen=PORT serves HTTP on that TCP port (busybox httpd). A shell
# reads the serial console, so what is typed there (vm console) runs. With
# corral.busy=1 it also spins a busy loop (a guest that keeps its vCPU busy,
# for tests under CPU saturation). An NMI (virsh inject-nmi) makes its kernel
# panic, which it reports through pvpanic (pvpanic_mmio drives the ISA
# device corral's domains have; pvpanic_pci the PCI one). It runs the QEMU
# guest agent (Debian's qemu-ga with the libraries it links) on the
# org.qemu.guest_agent.0 port, so health checks can run commands in it.
# A second shell reads the VGA console (tty1, what VNC shows), where it
# wrote CORRAL-DISPLAY; `vgaping WORDS` typed there prints
# CORRAL-VGA-INPUT WORDS on the serial console.
#
# usage: scripts/build-test-guest.sh OUT
set -euo pipefail
out=${1:?usage: $0 OUT}
mkdir -p "$out"
kver=$(ls /lib/modules | grep -- '-cloud-amd64$' | sort -V | tail -1)
[ -n "$kver" ] || { echo "no cloud kernel in /lib/modules (apt-get install linux-image-cloud-amd64)" >&2; exit 1; }
kernel=/boot/vmlinuz-$kver
stamp="$out/.stamp"
want="$kver $(sha256sum "$0" | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -f "$out/initrd.img" ] && [ -f "$out/disk.qcow2" ]; then
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root"/{bin,dev,proc,sys,mnt,etc/acpi/PWRF,lib/modules,tmp}
cp /bin/busybox "$root/bin/busybox"
# The QEMU guest agent, with the shared libraries and loader it needs.
[ -x /usr/sbin/qemu-ga ] || { echo "no /usr/sbin/qemu-ga (apt-get install qemu-guest-agent)" >&2; exit 1; }
mkdir -p "$root/sbin"
cp /usr/sbin/qemu-ga "$root/sbin/qemu-ga"
for lib in $(ldd /usr/sbin/qemu-ga | grep -o '/[^ ]*'); do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done

# Modules, each after its dependencies (modinfo -F depends).
order=()
seen=" "
add() {
  local m=$1 f d
  case "$seen" in *" $m "*) return ;; esac
  seen="$seen$m "
  f=$(modinfo -k "$kver" -F filename "$m" 2>/dev/null) || { echo "module $m not found" >&2; exit 1; }
  case "$f" in (builtin*) return ;; esac
  for d in $(modinfo -k "$kver" -F depends "$m" | tr ',' ' '); do add "$d"; done
  cp "$f" "$root/lib/modules/"
  order+=("$(basename "$f")")
}
for m in virtio_pci virtio_blk virtio_net virtio_console isofs evdev button pvpanic_mmio pvpanic_pci; do add "$m"; done
printf '%s\n' "${order[@]}" > "$root/lib/modules/order"

cat > "$root/etc/acpi/PWRF/00000080" <<'SH'
#!/bin/sh
echo "CORRAL-POWEROFF" > /dev/ttyS0
sync
poweroff -f
SH
chmod +x "$root/etc/acpi/PWRF/00000080"

cat > "$root/init" <<'SH'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /lib/modules/order); do
  case "$m" in *.ko.xz) xz -dc "/lib/modules/$m" > /tmp/m.ko; insmod /tmp/m.ko ;; *) insmod "/lib/modules/$m" ;; esac 2>/dev/null
done
exec >/dev/ttyS0 2>&1
echo 1 > /proc/sys/kernel/unknown_nmi_panic
arg() { tr ' ' '\n' < /proc/cmdline | sed -n "s/^$1=//p"; }
name=$(arg corral.name)
hostname "${name:-guest}"
acpid -d -c /etc/acpi &  # in the foreground: as a daemon it needs /var/log
ip link set lo up
# The guest agent on its virtio port (udev would name it; there is none).
for p in /sys/class/virtio-ports/vport*; do
  [ "$(cat "$p/name" 2>/dev/null)" = org.qemu.guest_agent.0 ] || continue
  /sbin/qemu-ga -m virtio-serial -p "/dev/${p##*/}" -f /tmp/qemu-ga.pid -t /tmp &
done
ip=$(arg corral.ip)
if [ -n "$ip" ]; then
  ip link set eth0 up && ip addr add "$ip" dev eth0 && echo "CORRAL-NET eth0 $ip"
fi
# corral.listen=PORT: something to connect to (TCP health checks).
port=$(arg corral.listen)
[ -n "$port" ] && mkdir -p /tmp/www && httpd -p "$port" -h /tmp/www
# corral.ping=ADDR: ping ADDR every second and say how it went.
peer=$(arg corral.ping)
if [ -n "$peer" ]; then
  (while true; do
    if ping -c 1 -W 1 "$peer" >/dev/null 2>&1; then echo "CORRAL-PING ok $peer"; else echo "CORRAL-PING fail $peer"; fi
    sleep 1
  done) &
fi
[ -n "$(arg corral.busy)" ] && (while true; do :; done) &
for d in /dev/vd[b-z]; do
  [ -b "$d" ] || continue
  if mount -t iso9660 -o ro "$d" /mnt 2>/dev/null; then
    [ -f /mnt/user-data ] && echo "CORRAL-USERDATA $(head -c 200 /mnt/user-data | tr '\n' ' ')"
    umount /mnt
  fi
done
# A shell on the serial console, in a session of its own (ttyS0 becomes
# its controlling terminal).
(setsid sh -c 'exec sh -i </dev/ttyS0 >/dev/ttyS0 2>&1') &
# And one on the VGA screen (tty1, the graphical console). vgaping says on
# the serial console what was typed there: tests type it through VNC.
cat > /bin/vgaping <<'VGA'
#!/bin/sh
echo "CORRAL-VGA-INPUT $*" > /dev/ttyS0
VGA
chmod +x /bin/vgaping
echo "CORRAL-DISPLAY $(hostname)" > /dev/tty1
(setsid sh -c 'exec sh -i </dev/tty1 >/dev/tty1 2>&1') &
n=$(dd if=/dev/vda bs=16 count=1 2>/dev/null | tr -dc 0-9)
n=${n:-0}
echo "CORRAL-BOOT host=$(hostname) counter=$n"
# Kept cheap (builtins, one dd and one sleep a tick): idle guests under TCG
# cost host CPU, and tests run dozens of them on two cores.
while true; do
  n=$((n+1))
  printf '%-16s' "$n" > /tmp/counter
  dd if=/tmp/counter of=/dev/vda bs=16 count=1 conv=notrunc,fsync 2>/dev/null
  read up idle < /proc/uptime
  echo "CORRAL-TICK counter=$n uptime=$up"
  sleep 1
done
SH
chmod +x "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) > "$out/initrd.img.tmp"
mv "$out/initrd.img.tmp" "$out/initrd.img"
cp "$kernel" "$out/vmlinuz"
rm -f "$out/disk.qcow2"
qemu-img create -q -f qcow2 "$out/disk.qcow2" 16M
echo "$want" > "$stamp"
echo "test guest: $out (kernel $kver, modules: ${order[*]})"
