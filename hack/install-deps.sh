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
  pkg-config ca-certificates curl python3 python3-venv util-linux
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

# A reference streaming client for test/tests/interop.rs: the official Kubernetes Python client
# (PyPI `kubernetes`) and the WebSocket library it speaks through, pinned, in a venv of their own.
# Debian's python3 (not whichever python3 comes first in PATH) builds it.
VENV=/opt/berth-test-venv
K8S_PY=37.0.2 WS_PY=1.9.2
if ! "$VENV/bin/python3" -c "import kubernetes as k, websocket as w, sys; sys.exit((k.__version__, w.__version__) != ('$K8S_PY', '$WS_PY'))" 2>/dev/null; then
  /usr/bin/python3 -m venv --clear "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "kubernetes==$K8S_PY" "websocket-client==$WS_PY"
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
