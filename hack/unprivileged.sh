#!/usr/bin/env bash
# hack/unprivileged.sh: runs every test binary of the workspace as an ordinary user (`nobody`), the
# way a contributor without root runs `cargo test`: the unit tests must pass, and every suite that
# needs root must say NOT TESTED (berth_test_report) and pass, never fail or skip silently.
#
# Runs as root (to switch to `nobody`); builds the tests first (a no-op after `cargo test`). Prints the
# NOT TESTED lines the ordinary user's run gave, and exits non-zero if any test failed.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
USER_NAME=${BERTH_UNPRIVILEGED_USER:-nobody}

if [ "$(id -u)" != 0 ]; then
  echo "hack/unprivileged.sh: run as root (it runs the tests as $USER_NAME)" >&2
  exit 2
fi
if ! id "$USER_NAME" >/dev/null 2>&1; then
  echo "NOT TESTED: the tests as an ordinary user: there is no user $USER_NAME"
  exit 0
fi

bins=$(cargo test --locked --workspace --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for l in sys.stdin:
    try: m=json.loads(l)
    except Exception: continue
    if m.get("reason")=="compiler-artifact" and m.get("profile",{}).get("test") and m.get("executable"):
        print(m["executable"])' | sort -u)

scratch=$(mktemp -d /tmp/berth-unprivileged.XXXXXX)
chmod 755 "$scratch"
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$scratch/test" "$scratch/tmp"
chown -R "$USER_NAME" "$scratch/test" "$scratch/tmp"

failed=0
for b in $bins; do
  name=$(basename "$b")
  # Each binary runs in its crate's directory, as cargo runs it.
  dir=$ROOT
  case "$name" in
    berth_shim-*|shim-*) dir=$ROOT/shim ;;
    berth_image-*) dir=$ROOT/image ;;
    berth_cni-*|bridge-*) dir=$ROOT/cni ;;
    berth_runtime-*|berthd-*) dir=$ROOT/runtime ;;
    berth_proto-*) dir=$ROOT/proto ;;
    *) dir=$ROOT/test ;;
  esac
  if ! (cd "$dir" && setpriv --reuid="$USER_NAME" --regid=nogroup --clear-groups \
      env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="$scratch/tmp" TMPDIR="$scratch/tmp" \
      BERTH_TEST_DIR="$scratch/test" "$b" --test-threads=2 -q) >"$scratch/out" 2>&1; then
    echo "FAILED as $USER_NAME: $name"
    tail -40 "$scratch/out"
    failed=1
  else
    summary=$(grep -E "^test result" "$scratch/out" | tail -1)
    echo "ok as $USER_NAME: $name: $summary"
  fi
done
echo
if [ -s "$scratch/test/NOT-TESTED" ]; then
  echo "As $USER_NAME, these said NOT TESTED (they need root):"
  sort -u "$scratch/test/NOT-TESTED" | sed 's/^/  /'
fi
exit $failed
