#!/bin/bash
# The VM lane's guest side (run by berth-vm-test.service in the guest hack/vm/image.sh builds; the
# payload hack/vm/run.sh brings is in /opt/berth-vm). It installs berth with the README's install
# command (hack/install.sh, from the host's binaries), then for each cgroup driver (systemd, then
# cgroupfs) drives berthd through crictl 1.36: pod + container lifecycle, logs, exec, the limits in the
# container's cgroup, live UpdateContainerResources, stats, OOMKilled, kill -9 of berthd (systemd
# restarts it; the containers live on), cleanup (no scope or cgroup left); and critest 1.36.0 (the
# subset run.sh names) with each driver. Every check prints PASS or FAIL; everything goes to vdc as
# a tar when it ends.
set -uo pipefail
P=/opt/berth-vm
OUT=/var/tmp/berth-vm
mkdir -p "$OUT"
exec > >(tee -a "$OUT/guest.log") 2>&1
# shellcheck source=/dev/null
. "$P/env"
export PATH=$P/bin:$PATH
fails=0
pass() { echo "PASS $*" | tee -a "$OUT/results"; }
fail() { echo "FAIL $*" | tee -a "$OUT/results"; fails=$((fails + 1)); }
check() { # check NAME COMMAND… : PASS when the command succeeds
  local name=$1; shift
  if "$@"; then pass "$name"; else fail "$name"; fi
}
finish() {
  echo "$fails" > "$OUT/failures"
  journalctl -u berthd --no-pager > "$OUT/berthd.journal" 2>&1
  cp /var/log/berth-vm-critest-*.out "$OUT/" 2>/dev/null
  tar -cf /dev/vdc -C "$OUT" .
  sync
}
trap finish EXIT

echo "berth VM lane: $(uname -r), init $(ps -p 1 -o comm=), /sys/fs/cgroup is $(stat -fc %T /sys/fs/cgroup)"
check "host: systemd is PID 1" test "$(ps -p 1 -o comm=)" = systemd
check "host: unified cgroup v2 hierarchy" test "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs

# The registry: the host's test registry, reached through qemu's user network (10.0.2.2 is the
# host's loopback). No default route: nothing else is reachable.
nic=$(ls /sys/class/net | grep -v '^lo$' | head -1)
ip link set "$nic" up && ip addr add 10.0.2.15/24 dev "$nic"
mkdir -p /etc/berth/certs.d /etc/berth/config.d
for h in registry.k8s.io k8s.gcr.io gcr.io docker.io quay.io public.ecr.aws; do
  mkdir -p "/etc/berth/certs.d/$h"
  printf '[host."http://%s"]\n  capabilities = ["pull", "resolve"]\n' "$REG" > "/etc/berth/certs.d/$h/hosts.toml"
done
cat > /etc/crictl.yaml <<EOF
runtime-endpoint: unix:///run/berth/berth.sock
image-endpoint: unix:///run/berth/berth.sock
timeout: 120
EOF
IMAGE=registry.k8s.io/e2e-test-images/busybox:1.29-2

driver_conf() {
  printf 'cgroup_driver = "%s"\n' "$1" > /etc/berth/config.d/50-vm-lane.toml
}

# The README's install command, from the host's build (no compiler in the guest).
driver_conf systemd
if BERTH_PREBUILT=$P/bin bash "$P/install.sh"; then pass "install.sh: berthd runs as the systemd unit it writes"; else
  fail "install.sh"; systemctl status berthd --no-pager; exit 1; fi
check "berthd.service is active" systemctl is-active --quiet berthd
check "crictl pull $IMAGE" crictl pull "$IMAGE"

field() { # field JSON-TEXT KEY: the first "KEY": value in crictl's JSON
  grep -o "\"$2\": *\"\?[^,\"}]*" <<<"$1" | head -1 | sed 's/.*: *"\?//'
}
wait_state() { # wait_state ID STATE SECONDS
  for _ in $(seq "$3"); do
    [ "$(field "$(crictl inspect "$1" 2>/dev/null)" state)" = "$2" ] && return 0
    sleep 1
  done
  return 1
}
berthd_pid() { systemctl show -p MainPID --value berthd; }

lifecycle() {
  local driver=$1 uid parent dir
  uid=$(printf '%08x_%04x' $RANDOM$RANDOM $RANDOM)
  if [ "$driver" = systemd ]; then
    # kubelet's spelling under the systemd driver: the pod slice as a path of slices.
    parent=/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod$uid.slice
  else
    parent=/kubepods/burstable/pod$uid
  fi
  cat > "$OUT/pod-$driver.json" <<EOF
{"metadata": {"name": "vm-$driver", "namespace": "default", "uid": "$uid", "attempt": 0},
 "log_directory": "/var/log/pods/vm-$uid", "linux": {"cgroup_parent": "$parent"}}
EOF
  cat > "$OUT/c1-$driver.json" <<EOF
{"metadata": {"name": "c1"}, "image": {"image": "$IMAGE"}, "log_path": "c1.log",
 "command": ["sh", "-c", "echo hello-from-$driver; exec sleep 3600"],
 "linux": {"resources": {"memory_limit_in_bytes": 67108864, "cpu_period": 100000, "cpu_quota": 50000}}}
EOF
  cat > "$OUT/c2-$driver.json" <<EOF
{"metadata": {"name": "oom"}, "image": {"image": "$IMAGE"}, "log_path": "oom.log",
 "command": ["sh", "-c", "x=\$(tr '\\\\0' a < /dev/zero | head -c 400000000); echo survived"],
 "linux": {"resources": {"memory_limit_in_bytes": 33554432}}}
EOF
  local pod c1 c2
  pod=$(crictl runp "$OUT/pod-$driver.json") || { fail "$driver: RunPodSandbox"; return; }
  pass "$driver: RunPodSandbox"
  c1=$(crictl create "$pod" "$OUT/c1-$driver.json" "$OUT/pod-$driver.json") || { fail "$driver: CreateContainer"; return; }
  check "$driver: StartContainer" crictl start "$c1"
  check "$driver: container running" wait_state "$c1" CONTAINER_RUNNING 30
  local logs=""
  for _ in $(seq 20); do logs=$(crictl logs "$c1" 2>&1); grep -q "hello-from-$driver" <<<"$logs" && break; sleep 0.5; done
  check "$driver: crictl logs" grep -q "hello-from-$driver" <<<"$logs"
  check "$driver: crictl exec" test "$(crictl exec "$c1" echo exec-ok 2>&1)" = exec-ok

  if [ "$driver" = systemd ]; then
    dir=/sys/fs/cgroup/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod$uid.slice/berth-$c1.scope
    check "systemd: the container is berth-<id>.scope, active" \
      test "$(systemctl show -p ActiveState --value "berth-$c1.scope")" = active
    check "systemd: the scope is in kubelet's pod slice" \
      test "$(systemctl show -p Slice --value "berth-$c1.scope")" = "kubepods-burstable-pod$uid.slice"
  else
    dir=/sys/fs/cgroup/kubepods/burstable/pod$uid/$c1
  fi
  echo "$driver: container cgroup $dir"
  check "$driver: the container's processes are in its cgroup" \
    grep -q "sleep" <(for p in $(cat "$dir/cgroup.procs" 2>/dev/null); do cat "/proc/$p/comm"; done)
  check "$driver: memory limit in the cgroup (64 MiB)" test "$(cat "$dir/memory.max" 2>&1)" = 67108864
  check "$driver: CPU quota in the cgroup (50000 100000)" test "$(cat "$dir/cpu.max" 2>&1)" = "50000 100000"
  check "$driver: UpdateContainerResources" crictl update --memory 100663296 --cpu-quota 20000 "$c1"
  check "$driver: memory limit updated live (96 MiB)" test "$(cat "$dir/memory.max" 2>&1)" = 100663296
  check "$driver: CPU quota updated live" test "$(cat "$dir/cpu.max" 2>&1)" = "20000 100000"
  local stats
  stats=$(crictl stats -o json "$c1" 2>&1)
  check "$driver: stats: working set from the cgroup" test "$(field "$stats" value)" -gt 0 2>/dev/null
  local ws_cg ws
  ws=$(grep -A1 '"workingSetBytes"' <<<"$stats" | field "$(cat)" value)
  ws_cg=$(cat "$dir/memory.current")
  check "$driver: stats: working set $ws is at most memory.current $ws_cg" test "${ws:-0}" -gt 0 -a "${ws:-0}" -le $((ws_cg + 1048576))
  check "$driver: stats: CPU time" test "$(grep -A1 '"usageCoreNanoSeconds"' <<<"$stats" | field "$(cat)" value)" -gt 0
  # Pressure (PSI, CRI 1.36): cgroup v2's pressure files in container stats, and the pod cgroup's in
  # pod stats (whose JSON also holds its container's three).
  if [ -e "$dir/cpu.pressure" ]; then
    check "$driver: stats: CPU, memory and IO pressure (PSI)" test "$(grep -c '"psi"' <<<"$stats")" -ge 3
    local pstats
    pstats=$(crictl statsp -o json "$pod" 2>&1)
    check "$driver: pod stats: the pod cgroup's pressure (PSI)" test "$(grep -c '"psi"' <<<"$pstats")" -ge 6
  else
    fail "$driver: the guest kernel has no PSI ($dir/cpu.pressure missing)"
  fi

  c2=$(crictl create "$pod" "$OUT/c2-$driver.json" "$OUT/pod-$driver.json") && crictl start "$c2" >/dev/null
  if wait_state "$c2" CONTAINER_EXITED 120; then
    local st; st=$(crictl inspect "$c2")
    check "$driver: OOMKilled (reason $(field "$st" reason), exit $(field "$st" exitCode))" \
      test "$(field "$st" reason)" = OOMKilled
  else
    fail "$driver: the memory hog did not exit"
  fi

  # kill -9 of berthd: systemd restarts it; the container lives on and answers.
  local old new
  old=$(berthd_pid)
  kill -9 "$old"
  for _ in $(seq 60); do
    new=$(berthd_pid)
    [ "$new" != 0 ] && [ "$new" != "$old" ] && crictl version >/dev/null 2>&1 && break
    sleep 1
  done
  check "$driver: systemd restarted berthd after kill -9 ($old -> $new)" test "$new" != "$old" -a "$new" != 0
  check "$driver: container still running after the restart" wait_state "$c1" CONTAINER_RUNNING 10
  check "$driver: exec after the restart" test "$(crictl exec "$c1" echo still-here 2>&1)" = still-here

  check "$driver: StopPodSandbox" crictl stopp "$pod"
  check "$driver: RemovePodSandbox" crictl rmp "$pod"
  check "$driver: the container's cgroup is gone" test ! -e "$dir"
  if [ "$driver" = systemd ]; then
    local left; left=$(systemctl list-units --all --plain --no-legend 'berth-*.scope')
    check "systemd: no berth scope left ($left)" test -z "$left"
    # A cgroupfs-style parent under the systemd driver: refused clearly, with the pod.
    sed "s|\"cgroup_parent\": \"[^\"]*\"|\"cgroup_parent\": \"/kubepods/burstable/pod$uid\"|; s|vm-$driver|vm-badparent|" \
      "$OUT/pod-$driver.json" > "$OUT/pod-badparent.json"
    local err
    err=$(crictl runp "$OUT/pod-badparent.json" 2>&1)
    check "systemd: a parent that is no slice is InvalidArgument ($err)" grep -q "InvalidArgument.*not a systemd slice" <<<"$err"
  fi
}

run_critest() {
  local driver=$1 focus=$2
  local out=/var/log/berth-vm-critest-$driver.out
  echo "critest-1.36.0 with the $driver driver: focus '$focus'"
  if critest --runtime-endpoint unix:///run/berth/berth.sock --image-endpoint unix:///run/berth/berth.sock \
      --ginkgo.no-color --ginkgo.v --ginkgo.focus "$focus" --ginkgo.skip "$CRITEST_SKIP" > "$out" 2>&1; then
    pass "$driver: critest-1.36.0 ($(grep -E '^Ran ' "$out"))"
  else
    grep -E '\[FAIL\]|^Ran ' "$out"
    fail "$driver: critest-1.36.0 ($(grep -E '^Ran ' "$out"))"
  fi
  crictl rmp -a -f > /dev/null 2>&1
}

for driver in systemd cgroupfs; do
  driver_conf "$driver"
  systemctl restart berthd
  for _ in $(seq 60); do crictl version > /dev/null 2>&1 && break; sleep 1; done
  # RuntimeConfig (what kubelet checks its cgroupDriver against), as crictl prints it.
  check "$driver: RuntimeConfig reports the $driver driver" \
    grep -qiE "cgroup driver: *$driver\$" <(crictl runtime-config 2>/dev/null)
  lifecycle "$driver"
  focus_var=CRITEST_FOCUS_$driver
  [ -n "${!focus_var}" ] && run_critest "$driver" "${!focus_var}"
done
echo "berth VM lane: $fails failed"
