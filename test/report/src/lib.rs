//! The one way berth's tests report that they could not check their subject on this host: a
//! `NOT TESTED <test>: <why>` line, printed at once and appended to `<scratch>/NOT-TESTED`, which
//! `hack/test.sh` prints at the end of the run (cargo hides a passing test's output). Every crate's
//! tests use it, so a test that needs root says so the same way wherever it lives.

use std::io::Write as _;
use std::path::PathBuf;

/// Where tests keep their data and the NOT-TESTED list: `$BERTH_TEST_DIR`, else /var/lib/berth-test.
pub fn scratch_dir() -> PathBuf {
    std::env::var_os("BERTH_TEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/berth-test"))
}

/// Records that `test` could not check what it is for, and why.
pub fn not_tested(test: &str, why: &str) {
    let line = format!("NOT TESTED {test}: {why}");
    eprintln!("\n*** {line}\n");
    let dir = scratch_dir();
    let _ = std::fs::create_dir_all(&dir);
    match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("NOT-TESTED"))
    {
        Ok(mut f) => {
            // One write per line: tests in parallel append to the same file.
            let _ = f.write_all(format!("{}\n", line.replace('\n', " ")).as_bytes());
        }
        Err(e) => eprintln!("(cannot add this to {}: {e})", dir.join("NOT-TESTED").display()),
    }
}

/// Whether the tests run as root (what mounts, namespaces, netlink and mknod need).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    #[allow(unsafe_code)]
    unsafe {
        libc::geteuid() == 0
    }
}

/// True when running as root; otherwise reports `test` NOT TESTED for `needs` and returns false,
/// so the test returns at once (and passes: it checked nothing, and said so).
pub fn root_or_not_tested(test: &str, needs: &str) -> bool {
    if is_root() {
        return true;
    }
    not_tested(test, &format!("needs root ({needs})"));
    false
}
