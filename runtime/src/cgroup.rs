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

/// One reading of a container cgroup's counters. `None`: the kernel does not account it here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    /// Cumulative CPU time, nanoseconds.
    pub cpu_ns: Option<u64>,
    pub memory_usage: Option<u64>,
    /// The memory limit, when there is one.
    pub memory_limit: Option<u64>,
    pub inactive_file: u64,
    pub rss: Option<u64>,
    pub page_faults: Option<u64>,
    pub major_page_faults: Option<u64>,
    pub swap: Option<u64>,
    pub pids: Option<u64>,
}

impl Usage {
    /// Memory in use minus the inactive page cache (what the kernel would reclaim first): the number
    /// kubelet evicts on, as cadvisor computes it.
    pub fn working_set(&self) -> Option<u64> {
        self.memory_usage.map(|u| u.saturating_sub(self.inactive_file))
    }

    /// How much more the cgroup may use before its limit.
    pub fn available(&self) -> Option<u64> {
        Some(self.memory_limit?.saturating_sub(self.working_set()?))
    }
}

fn read_u64(p: &Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

/// `key value` lines (memory.stat, cpu.stat).
fn flat_keyed(p: &Path) -> std::collections::HashMap<String, u64> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

/// Limits at or above this are "no limit" (v1 reports PAGE_COUNTER_MAX pages in bytes).
const NO_LIMIT: u64 = 1 << 62;

/// Reads the counters of the cgroup at `path` (relative to the hierarchy roots); None when the
/// cgroup does not exist (the container never started, or is gone).
pub fn usage(path: &str) -> Option<Usage> {
    if is_unified() {
        usage_v2(&Path::new(ROOT).join(path.trim_start_matches('/')))
    } else {
        usage_v1(path)
    }
}

fn usage_v2(dir: &Path) -> Option<Usage> {
    if !dir.is_dir() {
        return None;
    }
    let cpu = flat_keyed(&dir.join("cpu.stat"));
    let mem = flat_keyed(&dir.join("memory.stat"));
    let limit = std::fs::read_to_string(dir.join("memory.max"))
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    Some(Usage {
        cpu_ns: cpu.get("usage_usec").map(|u| u * 1000),
        memory_usage: read_u64(&dir.join("memory.current")),
        memory_limit: limit.filter(|l| *l < NO_LIMIT),
        inactive_file: mem.get("inactive_file").copied().unwrap_or(0),
        rss: mem.get("anon").copied(),
        page_faults: mem.get("pgfault").copied(),
        major_page_faults: mem.get("pgmajfault").copied(),
        swap: read_u64(&dir.join("memory.swap.current")),
        pids: read_u64(&dir.join("pids.current")),
    })
}

fn usage_v1(path: &str) -> Option<Usage> {
    let mem_dir = Path::new(ROOT).join("memory").join(path.trim_start_matches('/'));
    let cpu_file = file(path, "cpuacct", "cpuacct.usage");
    if !mem_dir.is_dir() && !cpu_file.exists() {
        return None;
    }
    let mem = flat_keyed(&mem_dir.join("memory.stat"));
    // The hierarchical ("total_") counters include child cgroups, as the v2 ones do.
    let stat = |k: &str| mem.get(&format!("total_{k}")).or_else(|| mem.get(k)).copied();
    let usage = read_u64(&mem_dir.join("memory.usage_in_bytes"));
    let memsw = read_u64(&mem_dir.join("memory.memsw.usage_in_bytes"));
    Some(Usage {
        cpu_ns: read_u64(&cpu_file),
        memory_usage: usage,
        memory_limit: read_u64(&mem_dir.join("memory.limit_in_bytes")).filter(|l| *l < NO_LIMIT),
        inactive_file: stat("inactive_file").unwrap_or(0),
        rss: stat("rss"),
        page_faults: stat("pgfault"),
        major_page_faults: stat("pgmajfault"),
        swap: memsw.zip(usage).map(|(sw, u)| sw.saturating_sub(u)),
        pids: read_u64(&file(path, "pids", "pids.current")),
    })
}

/// The value of a cgroup control file of the cgroup at `path` (v1: in `controller`'s hierarchy).
pub fn read(path: &str, controller: &str, name: &str) -> Option<String> {
    std::fs::read_to_string(file(path, controller, name))
        .ok()
        .map(|s| s.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_files() {
        let d = tempfile::tempdir().unwrap();
        let w = |n: &str, v: &str| std::fs::write(d.path().join(n), v).unwrap();
        w("cpu.stat", "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n");
        w("memory.current", "10485760\n");
        w("memory.max", "max\n");
        w(
            "memory.stat",
            "anon 4096000\nfile 6000000\ninactive_file 2097152\npgfault 42\npgmajfault 3\n",
        );
        w("pids.current", "4\n");
        let u = usage_v2(d.path()).unwrap();
        assert_eq!(u.cpu_ns, Some(1_500_000));
        assert_eq!(u.working_set(), Some(10485760 - 2097152));
        assert_eq!(
            (u.rss, u.page_faults, u.major_page_faults, u.pids),
            (Some(4096000), Some(42), Some(3), Some(4))
        );
        assert_eq!(u.memory_limit, None, "max is no limit");
        assert_eq!(u.available(), None);
        w("memory.max", "16777216\n");
        assert_eq!(
            usage_v2(d.path()).unwrap().available(),
            Some(16777216 - (10485760 - 2097152))
        );
        assert!(usage_v2(&d.path().join("gone")).is_none());
    }
}
