#!/usr/bin/env bash
# Makes sure `criu` works on this host, for CheckpointContainer (runc checkpoint/restore).
#
# Debian 12's CRIU 3.17 cannot initialise on kernels whose vDSO layout it does not know (`criu check`:
# "kerndat_vdso_fill_symtable failed" on 6.18). Where the packaged one fails, this builds CRIU 4.1.1
# from Debian's own source package (trixie's, fetched from the mirror apt uses, checksum pinned)
# and installs it as /usr/local/sbin/criu, which comes before /usr/sbin on root's PATH — the place
# Debian keeps for locally built programs. Idempotent; run as root. About a minute on 2 cores.
set -euo pipefail

VERSION=4.1.1
SHA256=f80a66cb3726bb2116266d4759ce3bcbfab7abdb6b6d430bf20dd41911717afe
PREFIX=/usr/local/sbin

if criu check >/dev/null 2>&1; then
  echo "criu: $(criu --version | head -1) works here"
  exit 0
fi
if [ -x "$PREFIX/criu" ] && "$PREFIX/criu" check >/dev/null 2>&1; then
  echo "criu: $PREFIX/criu works here ($PREFIX must come before /usr/sbin on PATH)"
  exit 0
fi

mirror=$(sed -n 's/^URIs: *\(http[^ ]*\/debian\)\/* *$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
mirror=${mirror:-http://deb.debian.org/debian}
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq --no-install-recommends gcc make pkgconf libbsd-dev libcap-dev libnet1-dev \
  libnl-3-dev libprotobuf-c-dev libprotobuf-dev protobuf-c-compiler protobuf-compiler \
  libnftables-dev libgnutls28-dev uuid-dev python3-protobuf >/dev/null

work=$(mktemp -d /tmp/berth-criu.XXXXXX)
trap 'rm -rf "$work"' EXIT
tarball="criu_${VERSION}.orig.tar.xz"
curl -fsS -o "$work/$tarball" "$mirror/pool/main/c/criu/$tarball"
echo "$SHA256  $work/$tarball" | sha256sum -c --quiet
tar -xJf "$work/$tarball" -C "$work"
make -C "$work/criu-$VERSION" -j"$(nproc)" criu >"$work/build.log" 2>&1 || {
  tail -20 "$work/build.log" >&2
  echo "criu.sh: building CRIU $VERSION failed" >&2
  exit 1
}
install -m 0755 "$work/criu-$VERSION/criu/criu" "$PREFIX/criu"
if ! "$PREFIX/criu" check >"$work/check.log" 2>&1; then
  cat "$work/check.log" >&2
  echo "criu.sh: CRIU $VERSION was built but \`criu check\` fails on this host" >&2
  exit 1
fi
echo "criu: built and installed $PREFIX/criu ($VERSION)"
