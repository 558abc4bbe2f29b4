#!/usr/bin/env bash
# hack/vm/run.sh — the VM test lane: berth on a node of the kind most clusters run (systemd as PID 1,
# the unified cgroup v2 hierarchy), which this host is not.
#
# Boots the Debian 12 guest of hack/vm/image.sh (built once, cached) under qemu-system-x86_64 with
# software emulation (TCG: KVM is unusable here), with three virtio disks: the cached root image
# (copy-on-write: the cache is never written), a payload tar (this build's berthd and berth-shim,
# crictl and critest 1.36.0 from ../shared/tools, hack/install.sh, hack/vm/guest.sh) and a results
# disk the guest writes a tar of its logs to. The guest reaches only the host's test registry
# (hack/registry.sh, which must run; critest's images are pushed into it by hack/critest.sh), through
# qemu's user network. What it checks: hack/vm/guest.sh.
#
# Environment: BERTH_VM_CRITEST_FOCUS (with the systemd driver) and BERTH_VM_CRITEST_FOCUS_CGROUPFS:
# ginkgo regexps of the critest specs to run ("" none, "." all: about an hour under TCG),
# BERTH_VM_TIMEOUT (seconds, default 2400), BERTH_VM_DIR (the image cache).
# Where qemu or debootstrap is absent, says NOT TESTED and why. Results: $BERTH_TEST_DIR/vm-last/.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
TOOLS=${BERTH_TOOLS:-$ROOT/../shared/tools}
SCRATCH_BASE=${BERTH_TEST_DIR:-/var/lib/berth-test}
TIMEOUT=${BERTH_VM_TIMEOUT:-2400}
# The CI subset of critest under TCG, with the systemd driver: what a cgroup driver changes (the
# container and pod lifecycle, stats, OOM, exec in the container's cgroup, namespaces) and the
# idempotence rules, and AppArmor (the guest kernel has it, this host not); with cgroupfs, the
# container lifecycle and OOM.
FOCUS_SYSTEMD=${BERTH_VM_CRITEST_FOCUS-'basic operations on (container|PodSandbox)|Container OOM|Multiple Containers|Runtime info|should support (exec with|attach)|NamespaceOption|UserNamespaces|Mount Readonly|Idempotence|AppArmor'}
FOCUS_CGROUPFS=${BERTH_VM_CRITEST_FOCUS_CGROUPFS-'basic operations on container|Container OOM'}
SKIP='should be able to pull image with digest|public image with digest'

log() { echo "vm/run.sh: $*" >&2; }
# shellcheck source=hack/lib.sh
. "$ROOT/hack/lib.sh"
lane_not_tested() { not_tested "the VM lane (cgroup v2 + systemd guest, both cgroup drivers)" "$*"; }
[ "$(id -u)" = 0 ] || { log "run as root"; exit 1; }
for t in qemu-system-x86_64 debootstrap mke2fs; do
  command -v "$t" >/dev/null || lane_not_tested "$t is not installed (hack/install-deps.sh installs it)"
done
for b in "$TOOLS/crictl-1.36.0" "$TOOLS/critest-1.36.0"; do [ -x "$b" ] || lane_not_tested "$b is not there"; done
for b in berthd berth-shim; do
  [ -x "target/debug/$b" ] || { log "target/debug/$b missing: cargo build --workspace --bins first"; exit 1; }
done
REG=$(bash hack/registry.sh address) || { log "the test registry is not running: hack/registry.sh start"; exit 1; }
REG_PORT=${REG##*:}
# critest's images (and the busybox the lifecycle checks run) in the test registry.
bash hack/critest.sh --images-only

VM_DIR=$(bash hack/vm/image.sh)
mkdir -p "$SCRATCH_BASE"
W=$(mktemp -d "$SCRATCH_BASE/vm.XXXXXX")
qpid=""
cleanup() {
  if [ -n "$qpid" ] && kill -0 "$qpid" 2>/dev/null; then kill -9 "$qpid"; fi
  rm -rf "$W"
}
trap cleanup EXIT

mkdir -p "$W/payload/bin" "$W/results"
cp target/debug/berthd target/debug/berth-shim "$W/payload/bin/"
cp "$TOOLS/crictl-1.36.0" "$W/payload/bin/crictl"
cp "$TOOLS/critest-1.36.0" "$W/payload/bin/critest"
cp hack/install.sh hack/vm/guest.sh "$W/payload/"
{
  printf 'REG=%q\n' "10.0.2.2:$REG_PORT"
  printf 'CRITEST_FOCUS_systemd=%q\n' "$FOCUS_SYSTEMD"
  printf 'CRITEST_FOCUS_cgroupfs=%q\n' "$FOCUS_CGROUPFS"
  printf 'CRITEST_SKIP=%q\n' "$SKIP"
} >"$W/payload/env"
tar -cf "$W/payload.tar" -C "$W/payload" .
truncate -s 256M "$W/results.img"

log "booting the guest under TCG (console: $W/console.log; at most ${TIMEOUT}s)"
t0=$(date +%s)
timeout "$TIMEOUT" qemu-system-x86_64 -accel tcg -smp 2 -m 3072 -no-reboot \
  -display none -monitor none -serial "file:$W/console.log" \
  -kernel "$VM_DIR/vmlinuz" -initrd "$VM_DIR/initrd.img" \
  -append "root=/dev/vda rw console=ttyS0 panic=-1 systemd.show_status=0" \
  -drive "file=$VM_DIR/rootfs.ext4,format=raw,if=virtio,snapshot=on" \
  -drive "file=$W/payload.tar,format=raw,if=virtio,readonly=on" \
  -drive "file=$W/results.img,format=raw,if=virtio" \
  -netdev user,id=n0 -device virtio-net-pci,netdev=n0 &
qpid=$!
status=0
wait "$qpid" || status=$?
qpid=""
log "guest ended after $(( $(date +%s) - t0 ))s (qemu status $status)"

rm -rf "$SCRATCH_BASE/vm-last" && mkdir -p "$SCRATCH_BASE/vm-last"
cp "$W/console.log" "$SCRATCH_BASE/vm-last/"
if ! tar -xf "$W/results.img" -C "$SCRATCH_BASE/vm-last" 2>/dev/null || [ ! -f "$SCRATCH_BASE/vm-last/failures" ]; then
  echo "---- guest console (tail) ----"; tail -60 "$W/console.log"
  log "FAILED: the guest wrote no results (timed out or did not boot)"
  exit 1
fi
cat "$SCRATCH_BASE/vm-last/results"
failures=$(cat "$SCRATCH_BASE/vm-last/failures")
if [ "$failures" != 0 ]; then
  echo "---- guest log (tail; all of it in $SCRATCH_BASE/vm-last/) ----"; tail -80 "$SCRATCH_BASE/vm-last/guest.log"
  echo "---- berthd journal (tail) ----"; tail -60 "$SCRATCH_BASE/vm-last/berthd.journal"
  log "FAILED: $failures checks failed in the guest"
  exit 1
fi
log "passed: $(grep -c '^PASS' "$SCRATCH_BASE/vm-last/results") checks in the guest (cgroup v2, systemd as PID 1)"
