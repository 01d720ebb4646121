#!/usr/bin/env bash
# Build corral's .deb and .rpm into OUT (default dist/): corrald,
# corralctl and corral-fencer (static, CGO_ENABLED=0), their systemd units, and
# /etc/corral/corral.toml as printed by "corrald example-config".
#
# Version: a tag vX.Y.Z on HEAD gives X.Y.Z; otherwise the newest tag (or
# 0.0.0) with the commit time and hash as a pre-release, so that later
# commits sort later: 0.0.0~git.20261127224500.eb425fa in the .deb.
#
# usage: scripts/package.sh [OUT]   (OUT defaults to the repository's dist/)
set -euo pipefail
out=$(realpath -m "${1:-$(dirname "$0")/../dist}")
cd "$(dirname "$0")/.."
export PATH=/usr/local/go/bin:$PATH
nfpm=github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.2

if ! git rev-parse --git-dir >/dev/null 2>&1; then
  pkgver=0.0.0-dev # not a git checkout
elif tag=$(git describe --tags --exact-match --match 'v[0-9]*' 2>/dev/null); then
  pkgver=${tag#v}
else
  base=$(git describe --tags --abbrev=0 --match 'v[0-9]*' 2>/dev/null || echo v0.0.0)
  pkgver="${base#v}-git.$(TZ=UTC git log -1 --format=%cd --date=format-local:%Y%m%d%H%M%S).$(git rev-parse --short=7 HEAD)"
fi
goversion=$(git describe --tags --always --dirty 2>/dev/null || echo dev)
export GOARCH=${GOARCH:-$(go env GOARCH)} CORRAL_PKG_VERSION=$pkgver

stage=_build/package
rm -rf "$stage"
mkdir -p "$stage" "$out"
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X github.com/corralhq/corral/internal/version.Version=$goversion" \
  -o "$stage/" ./cmd/corrald ./cmd/corralctl ./cmd/corral-fencer
"$stage/corrald" example-config > "$stage/corral.toml"
for p in deb rpm; do
  go run "$nfpm" package --config packaging/nfpm.yaml --packager "$p" --target "$out/"
done
ls -l "$out"/corral*
