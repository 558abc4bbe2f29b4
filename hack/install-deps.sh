#!/usr/bin/env bash
# Installs everything a fresh Debian 12 machine needs to build, run and test berth.
# Idempotent; run as root.
set -euo pipefail

if [ "$(id -u)" != 0 ]; then
  echo "install-deps.sh: must run as root (apt-get, /usr/local/bin)" >&2
  exit 1
fi

PKGS=(
  runc crun                        # OCI runtimes
  containernetworking-plugins      # CNI plugins in /usr/lib/cni
  docker-registry                  # distribution v2 registry for tests
  busybox                          # applets for test images (dynamic, with libc)
  protobuf-compiler                # k8s-cri's build script needs protoc
  iptables iproute2 zstd           # host ports, debugging, zstd layers
  containerd                       # peer runtime for hack/bench
  pkg-config ca-certificates curl python3 util-linux
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The Debian packages start their daemons; berth's tests and bench run their own instances.
for svc in docker-registry containerd; do
  if command -v systemctl >/dev/null && systemctl is-active -q "$svc" 2>/dev/null; then
    systemctl stop "$svc" || true
    systemctl disable "$svc" 2>/dev/null || true
  fi
done
# Without systemd the package's init scripts may have started the registry: stop only that pid.
if [ -f /var/run/docker-registry.pid ]; then
  kill "$(cat /var/run/docker-registry.pid)" 2>/dev/null || true
fi
echo "install-deps: ok"
