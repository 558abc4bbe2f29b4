//! The pod's own cgroup (its `cgroup_parent`), resized in place: UpdatePodSandboxResources writes the
//! pod's new totals there. kubelet owns that cgroup and writes it too (before it calls the CRI when a
//! pod grows, after when it shrinks), so berth's write is best effort: it writes only what the
//! request names, and a value the kernel refuses is reported back, not retried.

use cgroups_rs::fs::cpu::CpuController;
use cgroups_rs::fs::cpuset::CpuSetController;
use cgroups_rs::fs::hierarchies;
use cgroups_rs::fs::memory::MemController;
use cgroups_rs::fs::{Cgroup, Hierarchy};

/// What a pod's cgroup is limited to. `None`: not named, left as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    /// cgroup v1 `cpu.shares` (2-262144); written as `cpu.weight` on v2.
    pub cpu_shares: Option<u64>,
    /// CFS quota and period, microseconds.
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<u64>,
    pub memory_bytes: Option<i64>,
    pub cpuset_cpus: Option<String>,
    pub cpuset_mems: Option<String>,
}

/// cgroup v2's `cpu.weight` (1-10000) for v1 shares (2-262144), by the formula kubelet (1.36) and runc
/// (1.3.2 on) use, which keeps 1024 shares at the default weight of 100: berth writes a pod cgroup that
/// kubelet writes too, so they must agree. (Debian 12's runc 1.1.5 converts containers' shares with the
/// older linear formula; containers are runc's business.)
pub fn shares_to_weight(shares: u64) -> u64 {
    match shares {
        0 => 0,
        1..=2 => 1,
        262_144.. => 10_000,
        s => {
            let l = (s as f64).log2();
            let exponent = (l * l + 125.0 * l) / 612.0 - 7.0 / 34.0;
            (10f64.powf(exponent).ceil() as u64).clamp(1, 10_000)
        }
    }
}

/// Writes `limits` to the cgroup at `dir` (relative to the hierarchy roots). Returns what could not
/// be written, one line each; a cgroup that does not exist (yet) is one such line.
pub fn apply(dir: &str, limits: &Limits) -> Vec<String> {
    apply_in(hierarchies::auto(), dir, limits)
}

pub(crate) fn apply_in(hier: Box<dyn Hierarchy>, dir: &str, limits: &Limits) -> Vec<String> {
    let v2 = hier.v2();
    let cg = Cgroup::load(hier, std::path::Path::new(dir.trim_start_matches('/')));
    let mut failed = Vec::new();
    if !cg.exists() {
        failed.push(format!("pod cgroup {dir} does not exist"));
        return failed;
    }
    let mut check = |what: &str, r: cgroups_rs::fs::error::Result<()>| {
        if let Err(e) = r {
            failed.push(format!("{what}: {e}"));
        }
    };
    if let Some(cpu) = cg.controller_of::<CpuController>() {
        if let Some(s) = limits.cpu_shares {
            let value = if v2 { shares_to_weight(s) } else { s };
            check("cpu shares", cpu.set_shares(value));
        }
        if limits.cpu_quota.is_some() || limits.cpu_period.is_some() {
            check(
                "cpu quota",
                cpu.set_cfs_quota_and_period(limits.cpu_quota, limits.cpu_period),
            );
        }
    }
    if let (Some(m), Some(mem)) = (limits.memory_bytes, cg.controller_of::<MemController>()) {
        check("memory limit", mem.set_limit(m));
    }
    if let Some(cs) = cg.controller_of::<CpuSetController>() {
        if let Some(c) = &limits.cpuset_cpus {
            check("cpuset cpus", cs.set_cpus(c));
        }
        if let Some(m) = &limits.cpuset_mems {
            check("cpuset mems", cs.set_mems(m));
        }
    }
    failed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::testing::RootedV2;

    #[test]
    fn weights_from_shares() {
        assert_eq!(shares_to_weight(0), 0);
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 100, "the defaults meet");
        assert_eq!(shares_to_weight(2000), 170);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(522), 60);
    }

    #[test]
    fn writes_v2_files() {
        let root = tempfile::tempdir().unwrap();
        let d = root.path().join("kubepods/pod1");
        std::fs::create_dir_all(&d).unwrap();
        for (f, v) in [
            ("cpu.weight", "100"),
            ("cpu.max", "max 100000"),
            ("memory.max", "max"),
            ("cpuset.cpus", ""),
            ("cpuset.mems", ""),
        ] {
            std::fs::write(d.join(f), v).unwrap();
        }
        let hier = || {
            Box::new(RootedV2 {
                root: root.path().into(),
            }) as Box<dyn Hierarchy>
        };
        let limits = Limits {
            cpu_shares: Some(522),
            cpu_quota: Some(70_000),
            cpu_period: Some(100_000),
            memory_bytes: Some(65 << 20),
            cpuset_cpus: Some("0".into()),
            cpuset_mems: None,
        };
        assert_eq!(apply_in(hier(), "/kubepods/pod1", &limits), Vec::<String>::new());
        let read = |f: &str| std::fs::read_to_string(d.join(f)).unwrap();
        assert_eq!(read("cpu.weight"), "60");
        assert_eq!(read("cpu.max"), "70000 100000");
        assert_eq!(read("memory.max"), (65u64 << 20).to_string());
        assert_eq!(read("cpuset.cpus"), "0");
        assert_eq!(read("cpuset.mems"), "", "not named, not written");
        // Only what is named is written; a missing cgroup is reported, not created.
        std::fs::write(d.join("memory.max"), "max").unwrap();
        let only_cpu = Limits {
            cpu_quota: Some(-1),
            ..Default::default()
        };
        assert!(apply_in(hier(), "kubepods/pod1", &only_cpu).is_empty());
        assert_eq!(read("cpu.max"), "max 100000");
        assert_eq!(read("memory.max"), "max");
        let failed = apply_in(hier(), "kubepods/gone", &limits);
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert!(!root.path().join("kubepods/gone").exists());
    }
}
