#!/usr/bin/env bash
# hack/critest.sh [-- CRITEST-ARGS…]
# hack/critest.sh --images-only      (only make sure critest's images are in the test registry)
#
# Runs the CRI conformance suite, critest 1.36.0 (../shared/tools/critest-1.36.0, what containerd
# and CRI-O run in their CI), against a berthd of its own, as root:
#   * the images critest pulls are built by ../shared/tools/critest-images.sh from Debian's busybox
#     and pushed into the test registry (hack/registry.sh, which must be running); rebuilt only when
#     the script changes or the registry lost them;
#   * berthd (target/debug/berthd unless $BERTHD) runs on a scratch root/state/socket under
#     $BERTH_TEST_DIR (/var/lib/berth-test), pods wired by a CNI chain of Debian's plugins (bridge +
#     host-local + portmap, no loopback plugin: berth brings lo up itself) on a bridge and subnet of
#     its own, and hosts.toml mirrors that send registry.k8s.io, gcr.io, docker.io, quay.io, … to the
#     test registry;
#   * every spec runs except the one that needs the internet (a public image pinned by its upstream
#     digest, which no runtime can pull here); any failure fails this script.
# Where critest or crictl is absent, it says NOT TESTED and why, and exits 0.
# Everything it made (daemon, pods, mounts, bridge, scratch dir) is gone when it ends.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TOOLS=${BERTH_TOOLS:-$ROOT/../shared/tools}
CRITEST=$TOOLS/critest-1.36.0
CRICTL=$TOOLS/crictl-1.36.0
BERTHD=${BERTHD:-$ROOT/target/debug/berthd}
SCRATCH_BASE=${BERTH_TEST_DIR:-/var/lib/berth-test}
REGDIR=${BERTH_REGISTRY_DIR:-/var/lib/berth-test-registry}
# The one spec that needs the internet, for any runtime.
SKIP='should be able to pull image with digest|public image with digest'
BRIDGE=bcritest0 SUBNET=10.88.213.0/24

images_only=0
if [ "${1:-}" = "--images-only" ]; then images_only=1; shift; fi
[ "${1:-}" = "--" ] && shift
log() { echo "critest.sh: $*" >&2; }
# shellcheck source=hack/lib.sh
. "$ROOT/hack/lib.sh"
lane_not_tested() { not_tested "critest-1.36.0 against berthd" "$*"; }
[ "$(id -u)" = 0 ] || { log "run as root"; exit 1; }
for b in "$CRITEST" "$CRICTL"; do [ -x "$b" ] || lane_not_tested "$b is not there"; done
[ -x "$BERTHD" ] || { log "$BERTHD missing: cargo build --workspace --bins first"; exit 1; }
REG=$(bash hack/registry.sh address) || { log "the test registry is not running: hack/registry.sh start"; exit 1; }
for p in 12000 12001 12002 12003; do
  [ "$images_only" = 1 ] && break
  if ss -Hltn "sport = :$p" | grep -q .; then log "host port $p (critest's) is taken by another process"; exit 1; fi
done

# ---- images ----
stamp="$REGDIR/critest-images.sha256"
want=$(sha256sum "$TOOLS/critest-images.sh" | cut -d' ' -f1)
have_busybox=$(curl -s -o /dev/null -w '%{http_code}' -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
  "http://$REG/v2/e2e-test-images/busybox/manifests/1.29-2" || true)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || [ "$have_busybox" != 200 ]; then
  log "building critest's images into $REG (critest-images.sh)"
  GO=$(/opt/berth-test-venv/bin/python3 -c 'import go, os; print(os.path.join(os.path.dirname(go.__file__), "bin", "go"))')
  REG=$REG GO=$GO bash "$TOOLS/critest-images.sh" >"$REGDIR/critest-images.log" 2>&1 || {
    tail -20 "$REGDIR/critest-images.log" >&2; log "critest-images.sh failed"; exit 1; }
  echo "$want" >"$stamp"
fi
[ "$images_only" = 1 ] && exit 0

# ---- berthd of its own ----
mkdir -p "$SCRATCH_BASE"
S=$(mktemp -d "$SCRATCH_BASE/critest.XXXXXX")
# Searchable by all (not readable): the root of a pod with its own user namespace, an unprivileged
# ID on the host, must reach its bundle, as containerd keeps its state dirs 0711 for.
chmod 711 "$S"
pid=""
cleanup() {
  set +e
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    # Pods first, so their networks are torn down through the daemon.
    "$CRICTL" --runtime-endpoint "unix://$S/berth.sock" rmp -a -f >/dev/null 2>&1
    kill -TERM "$pid"; wait "$pid"
  fi
  # Whatever a daemon that died left: its shims (their containers go with them), mounts, the bridge.
  for pp in $(pgrep -f "berth-shim.*$S" || true); do kill -9 "$pp" 2>/dev/null; done
  grep -o " $S[^ ]*" /proc/mounts | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
  ip link del "$BRIDGE" 2>/dev/null
  # critest's pods name no cgroup parent, so their containers went under berth's default, /berth:
  # remove it where it is empty (a berthd of someone else's keeps a busy one, which rmdir leaves).
  for d in /sys/fs/cgroup/berth /sys/fs/cgroup/*/berth; do [ -d "$d" ] && rmdir "$d" 2>/dev/null; done
  rm -rf "$S"
}
trap cleanup EXIT

mkdir -p "$S/certs.d" "$S/cni" "$S/ipam"
for h in registry.k8s.io k8s.gcr.io gcr.io docker.io quay.io public.ecr.aws; do
  mkdir -p "$S/certs.d/$h"
  printf '[host."http://%s"]\n  capabilities = ["pull", "resolve"]\n' "$REG" >"$S/certs.d/$h/hosts.toml"
done
cat >"$S/cni/10-critest.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "critest",
  "plugins": [
    {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": "$S/ipam", "ranges": [[{"subnet": "$SUBNET"}]],
              "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
JSON
cat >"$S/config.toml" <<TOML
root = "$S/root"
state = "$S/state"
socket = "$S/berth.sock"
[registry]
config_path = "$S/certs.d"
[network]
mode = "cni"
cni_conf_dir = "$S/cni"
TOML
"$BERTHD" --config "$S/config.toml" >"$S/berthd.log" 2>&1 &
pid=$!
for _ in $(seq 100); do [ -S "$S/berth.sock" ] && break; sleep 0.1; done
[ -S "$S/berth.sock" ] || { tail -20 "$S/berthd.log" >&2; log "berthd did not start"; exit 1; }
EP="unix://$S/berth.sock"
"$CRICTL" --runtime-endpoint "$EP" --image-endpoint "$EP" pull registry.k8s.io/e2e-test-images/busybox:1.29-2 >/dev/null

log "running critest-1.36.0 against berthd (log: $S/berthd.log while it runs)"
status=0
"$CRITEST" --runtime-endpoint "$EP" --image-endpoint "$EP" --ginkgo.no-color --ginkgo.v \
  --ginkgo.skip "$SKIP" "$@" >"$S/critest.out" 2>&1 || status=$?
# What was skipped and why (features berth does not advertise yet, the internet spec), every failure,
# the summary, then the verdict.
echo "critest specs skipped:"
grep -A1 -E '^S \[SKIPPED\]' "$S/critest.out" | grep -vE '^S \[SKIPPED\]|^--$' | sed 's/^ */  /' | sort -u || true
grep -E '\[FAIL\]|^Ran |Passed \|' "$S/critest.out" || true
# Kept after the run (the scratch dir goes): what critest printed and berthd's log.
cp "$S/critest.out" "$SCRATCH_BASE/critest-last.out"; cp "$S/berthd.log" "$SCRATCH_BASE/critest-last-berthd.log"
if [ "$status" != 0 ]; then
  echo "---- critest output (tail) ----"; tail -150 "$S/critest.out"
  echo "---- berthd log (tail; all of it in $SCRATCH_BASE/critest-last-berthd.log) ----"; tail -60 "$S/berthd.log"
  log "critest-1.36.0 FAILED against berthd"
  exit 1
fi
log "critest-1.36.0 passed against berthd"
