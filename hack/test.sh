#!/usr/bin/env bash
# Runs berth's whole test suite on this machine, as root: installs what it needs, starts the local
# registry, builds and pushes the test images, checks formatting and lints, then runs every test and
# the CRI conformance suite (hack/critest.sh) and the VM lane (hack/vm/run.sh).
# The registry is stopped again if this script started it.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "test.sh: the suite mounts, unpacks as other users and starts daemons: run it as root" >&2
  exit 1
fi

bash hack/install-deps.sh

started_registry=0
if ! bash hack/registry.sh status >/dev/null 2>&1; then
  bash hack/registry.sh start
  started_registry=1
fi
cleanup() {
  if [ "$started_registry" = 1 ]; then bash hack/registry.sh stop || true; fi
}
trap cleanup EXIT

# The registry runs on a port of its own; the tests read its address from here.
BERTH_TEST_REGISTRY=$(bash hack/registry.sh address)
export BERTH_TEST_REGISTRY
python3 hack/test-images.py --registry "$BERTH_TEST_REGISTRY"

cargo fmt --all -- --check
cargo clippy --locked --workspace --all-targets -- -D warnings
# No module cycles, no product function over 80 lines (ARCHITECTURE.md).
python3 hack/check-shape.py
# The suites start the real berthd binary too: build every binary first.
cargo build --locked --workspace --bins
# Tests that cannot check what they are for on this host say so here (see berth_test::report_not_tested).
scratch=${BERTH_TEST_DIR:-/var/lib/berth-test}
mkdir -p "$scratch" && rm -f "$scratch/NOT-TESTED"
status=0
cargo test --locked --workspace --no-fail-fast || status=$?
# The same test binaries as an ordinary user: unit tests pass, root suites say NOT TESTED.
bash hack/unprivileged.sh || status=$?
# The CRI conformance suite (critest 1.36.0 from ../shared/tools) against a berthd of its own.
bash hack/critest.sh || status=$?
# The VM lane: berth on cgroup v2 with systemd as PID 1 (this host is neither), both cgroup drivers,
# the install command, critest's CI subset (hack/vm/run.sh).
bash hack/vm/run.sh || status=$?
if [ -s "$scratch/NOT-TESTED" ]; then
  echo
  echo "************************************************************************"
  echo "* Passed, but NOT TESTED on this host (the tests say why):"
  sed 's/^/*   /' "$scratch/NOT-TESTED"
  echo "************************************************************************"
fi
exit $status
