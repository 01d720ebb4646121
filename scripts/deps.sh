#!/usr/bin/env bash
# Install the Debian packages a corral target needs, when they are missing.
# usage: scripts/deps.sh test|demo
set -euo pipefail
what=${1:-test}
# iproute2 and util-linux (ip, unshare, nsenter) build the lab's namespaces;
# nftables (nft) cuts lab hosts apart, iptables queues their packets for
# latency (NFQUEUE) and iputils-ping checks both;
# libvirt, QEMU and virtlockd run the guests; busybox-static, the cloud kernel,
# cpio, kmod (modinfo) and qemu-guest-agent build the test guest; genisoimage writes cloud-init
# seeds; dpkg, rpm and systemd (systemd-analyze) check the packages.
pkgs=(iproute2 util-linux nftables iptables iputils-ping libvirt-daemon-system libvirt-clients qemu-system-x86 qemu-utils
      busybox-static linux-image-cloud-amd64 cpio kmod qemu-guest-agent genisoimage dpkg rpm systemd)
case "$what" in
  # the portal's browser tests (chromedp; Firefox over WebDriver BiDi; certutil,
  # pk12util and openssl give Firefox's profile a client certificate)
  test) pkgs+=(chromium firefox-esr libnss3-tools openssl) ;;
  demo) ;;
  *) echo "usage: $0 test|demo" >&2; exit 2 ;;
esac
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ! command -v go >/dev/null && [ ! -x /usr/local/go/bin/go ]; then
  echo "deps: Go is not installed (expected /usr/local/go/bin/go)" >&2
  exit 1
fi
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "deps: missing Debian packages: ${missing[*]}; run as root or install them" >&2
  exit 1
fi
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
