# hack/lib.sh: shell helpers the test lanes share (sourced, not run).

# not_tested LANE WHY: the lane could not run its checks on this host. Says NOT TESTED and why,
# adds the line to $BERTH_TEST_DIR/NOT-TESTED (hack/test.sh prints that list at the end, as the
# cargo suites' berth_test_report does) and ends the lane with success: it checked nothing, and
# said so.
not_tested() {
  local lane=$1 why=$2 scratch=${BERTH_TEST_DIR:-/var/lib/berth-test}
  echo "NOT TESTED: $lane: $why"
  mkdir -p "$scratch" && echo "NOT TESTED $lane: $why" >>"$scratch/NOT-TESTED"
  exit 0
}
