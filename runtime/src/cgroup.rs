//! Reading container cgroups through cgroupfs, on cgroup v2 (unified) and v1 hosts alike.

use std::path::{Path, PathBuf};

const ROOT: &str = "/sys/fs/cgroup";

/// Whether the host mounts the unified (v2) hierarchy at /sys/fs/cgroup.
pub fn is_unified() -> bool {
    Path::new(ROOT).join("cgroup.controllers").exists()
}

/// The file of `controller` (v1) holding `file`, for the cgroup at `path` (relative to the root).
fn file(path: &str, controller: &str, name: &str) -> PathBuf {
    let rel = path.trim_start_matches('/');
    if is_unified() {
        Path::new(ROOT).join(rel).join(name)
    } else {
        Path::new(ROOT).join(controller).join(rel).join(name)
    }
}

/// How many processes the kernel's OOM killer has killed in the cgroup (0 if unknown).
pub fn oom_kills(path: &str) -> u64 {
    let f = if is_unified() {
        file(path, "", "memory.events")
    } else {
        file(path, "memory", "memory.oom_control")
    };
    std::fs::read_to_string(f)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill ").and_then(|n| n.trim().parse().ok()))
        .unwrap_or(0)
}

/// The cgroup path a bundle's OCI spec gives its container.
pub fn bundle_cgroup(bundle: &Path) -> Option<String> {
    let spec: serde_json::Value = serde_json::from_slice(&std::fs::read(bundle.join("config.json")).ok()?).ok()?;
    spec["linux"]["cgroupsPath"].as_str().map(str::to_string)
}

/// Thaws a frozen cgroup (runc `kill --all` freezes it around the signal; a race can leave it
/// frozen, and runc then refuses to delete a "paused" container).
pub fn thaw(path: &str) {
    let f = if is_unified() {
        file(path, "", "cgroup.freeze")
    } else {
        file(path, "freezer", "freezer.state")
    };
    let value = if is_unified() { "0" } else { "THAWED" };
    if f.exists()
        && let Err(e) = std::fs::write(&f, value)
    {
        tracing::debug!(path = %f.display(), error = %e, "thaw");
    }
}
