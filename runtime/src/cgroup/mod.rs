//! Container cgroups: how they are named for runc under each cgroup driver, and reading them (on
//! cgroup v2 and v1 hosts alike) through the `cgroups-rs` crate.
//!
//! runc creates, limits and removes the cgroups; berthd names them (`linux.cgroupsPath`) and reads
//! them: usage for stats, OOM kills for a container's exit reason, and thawing one that a race left
//! frozen. Under the `cgroupfs` driver a cgroups path is a directory below the hierarchy roots
//! (`/kubepods/burstable/pod<uid>/<id>`); under `systemd` it is runc's `slice:prefix:name`
//! (`kubepods-burstable-pod<uid>.slice:berth:<id>`), a transient scope `berth-<id>.scope` in the
//! pod's slice that systemd makes and runc fills.

use std::path::Path;

use cgroups_rs::fs::cpu::CpuController;
use cgroups_rs::fs::cpuacct::CpuAcctController;
use cgroups_rs::fs::freezer::FreezerController;
use cgroups_rs::fs::hierarchies;
use cgroups_rs::fs::memory::MemController;
use cgroups_rs::fs::pid::PidController;
use cgroups_rs::fs::{Cgroup, Controller, Hierarchy};

use crate::error::{Error, Result};

pub mod pod;
pub mod pressure;

/// The unit-name prefix of container scopes under the systemd driver (containerd's is
/// `cri-containerd`, CRI-O's `crio`).
pub const SCOPE_PREFIX: &str = "berth";
/// The slice of pods that name no cgroup parent, under the systemd driver (as containerd).
const DEFAULT_SLICE: &str = "system.slice";
/// The parent of pods that name no cgroup parent, under the cgroupfs driver.
const DEFAULT_PARENT: &str = "/berth";

/// Whether the host mounts the unified (v2) hierarchy at /sys/fs/cgroup.
pub fn is_unified() -> bool {
    hierarchies::is_cgroup2_unified_mode()
}

/// Whether systemd is this host's init (what `sd_booted` checks): the systemd driver needs it.
pub fn systemd_booted() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// How containers' cgroups are made: directly in cgroupfs, or as systemd units (runc's systemd driver).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupDriver {
    Cgroupfs,
    Systemd,
}

/// The OCI `linux.cgroupsPath` of container `id` in a pod whose config names `parent` (kubelet's
/// `cgroup_parent`, empty when it names none).
///
/// Under systemd, kubelet sends the pod slice as a path of slices
/// (`/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice`) or a bare slice
/// name; its last component is the slice (as containerd reads it). A parent that is not a slice is
/// refused: runc would fail later, less clearly.
pub fn container_path(driver: CgroupDriver, parent: &str, id: &str) -> Result<String> {
    if parent.split('/').any(|c| c == ".." || c == ".") || parent.contains('\0') {
        return Err(Error::InvalidArgument(format!(
            "cgroup_parent {parent:?} has a '.' or '..' component: it would lead out of the cgroup hierarchy"
        )));
    }
    match driver {
        CgroupDriver::Cgroupfs => {
            let parent = if parent.is_empty() { DEFAULT_PARENT } else { parent };
            Ok(format!("{}/{id}", parent.trim_end_matches('/')))
        }
        CgroupDriver::Systemd => {
            let slice = match parent.trim_end_matches('/').rsplit('/').next() {
                None | Some("") => DEFAULT_SLICE,
                Some(s) => s,
            };
            if !cgroups_rs::systemd::utils::is_slice_unit(slice)
                || cgroups_rs::systemd::utils::expand_slice(slice).is_err()
            {
                return Err(Error::InvalidArgument(format!(
                    "cgroup_parent {parent:?} is not a systemd slice (berthd runs with cgroup_driver = \
                     \"systemd\"; kubelet's cgroupDriver must be systemd too)"
                )));
            }
            Ok(format!("{slice}:{SCOPE_PREFIX}:{id}"))
        }
    }
}

/// The directory, relative to the hierarchy roots, of the cgroup an OCI `cgroupsPath` names: the
/// path itself (cgroupfs), or the scope a `slice:prefix:name` path makes (systemd).
pub fn dir_of(cgroups_path: &str) -> Option<String> {
    let parts: Vec<&str> = cgroups_path.split(':').collect();
    let rel = match parts.as_slice() {
        [path] => path.trim_start_matches('/').to_string(),
        [slice, prefix, name] => {
            let slice = if slice.is_empty() { DEFAULT_SLICE } else { slice };
            let parent = cgroups_rs::systemd::utils::expand_slice(slice).ok()?;
            let unit = if name.ends_with(".slice") {
                (*name).to_string()
            } else if prefix.is_empty() {
                format!("{name}.scope")
            } else {
                format!("{prefix}-{name}.scope")
            };
            if parent.is_empty() {
                unit
            } else {
                format!("{parent}/{unit}")
            }
        }
        _ => return None,
    };
    Some(rel)
}

/// The cgroup directory (relative to the hierarchy roots) that a bundle's OCI spec gives its
/// container.
pub fn bundle_cgroup(bundle: &Path) -> Option<String> {
    let spec = oci_spec::runtime::Spec::load(bundle.join("config.json")).ok()?;
    dir_of(spec.linux().as_ref()?.cgroups_path().as_ref()?.to_str()?)
}

fn load(hier: Box<dyn Hierarchy>, dir: &str) -> Cgroup {
    Cgroup::load(hier, Path::new(dir.trim_start_matches('/')))
}

/// How many processes the kernel's OOM killer has killed in the cgroup at `dir` (0 if unknown).
pub fn oom_kills(dir: &str) -> u64 {
    oom_kills_in(hierarchies::auto(), dir)
}

fn oom_kills_in(hier: Box<dyn Hierarchy>, dir: &str) -> u64 {
    let v2 = hier.v2();
    let cg = load(hier, dir);
    let Some(mem) = cg.controller_of::<MemController>() else {
        return 0;
    };
    if v2 {
        // cgroups-rs reads memory.events for no counter of it; the file is one `key value` a line.
        std::fs::read_to_string(mem.path().join("memory.events"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("oom_kill ").and_then(|n| n.trim().parse().ok()))
            .unwrap_or(0)
    } else {
        mem.memory_stat().oom_control.oom_kill
    }
}

/// Thaws a frozen cgroup (runc `kill --all` freezes it around the signal; a race can leave it
/// frozen, and runc then refuses to delete a "paused" container).
pub fn thaw(dir: &str) {
    let cg = load(hierarchies::auto(), dir);
    if let Some(f) = cg.controller_of::<FreezerController>()
        && f.exists()
        && let Err(e) = f.thaw()
    {
        tracing::debug!(cgroup = dir, error = %e, "thaw");
    }
}

/// One reading of a container cgroup's counters. `None`: the kernel does not account it here.
#[derive(Debug, Clone, Default, PartialEq)]
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
    /// CPU, memory and IO pressure (cgroup v2 only).
    pub pressure: pressure::Pressures,
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

/// Limits at or above this are "no limit" (v1 reports PAGE_COUNTER_MAX pages in bytes, v2 `max`).
const NO_LIMIT: u64 = 1 << 62;

/// Reads the counters of the cgroup at `dir` (relative to the hierarchy roots); None when the
/// cgroup does not exist (the container never started, or is gone).
pub fn usage(dir: &str) -> Option<Usage> {
    usage_in(hierarchies::auto(), dir)
}

fn usage_in(hier: Box<dyn Hierarchy>, dir: &str) -> Option<Usage> {
    let v2 = hier.v2();
    let root = hier.root();
    let cg = load(hier, dir);
    if !cg.exists() {
        return None;
    }
    let mut u = Usage::default();
    if let Some(mem) = cg.controller_of::<MemController>().filter(|m| m.exists()) {
        let m = mem.memory_stat();
        let raw = &m.stat.raw;
        // v1's hierarchical ("total_") counters include child cgroups, as the v2 ones do.
        let stat = |k: &str| raw.get(&format!("total_{k}")).or_else(|| raw.get(k)).copied();
        u.memory_usage = Some(m.usage_in_bytes);
        u.memory_limit = u64::try_from(m.limit_in_bytes).ok().filter(|l| *l > 0 && *l < NO_LIMIT);
        u.inactive_file = stat("inactive_file").unwrap_or(0);
        u.rss = stat(if v2 { "anon" } else { "rss" });
        u.page_faults = stat("pgfault");
        u.major_page_faults = stat("pgmajfault");
        let sw = mem.memswap();
        u.swap = if v2 {
            mem.path()
                .join("memory.swap.current")
                .exists()
                .then_some(sw.usage_in_bytes)
        } else {
            // memsw counts memory and swap together.
            mem.path()
                .join("memory.memsw.usage_in_bytes")
                .exists()
                .then(|| sw.usage_in_bytes.saturating_sub(m.usage_in_bytes))
        };
    }
    u.cpu_ns = if v2 {
        cg.controller_of::<CpuController>()
            .filter(|c| c.exists())
            .and_then(|c| {
                c.cpu()
                    .stat
                    .lines()
                    .find_map(|l| l.strip_prefix("usage_usec ")?.trim().parse::<u64>().ok())
                    .map(|us| us * 1000)
            })
    } else {
        cg.controller_of::<CpuAcctController>()
            .filter(|c| c.exists())
            .map(|c| c.cpuacct().usage)
    };
    u.pids = cg
        .controller_of::<PidController>()
        .filter(|p| p.exists())
        .and_then(|p| p.get_pid_current().ok());
    if v2 {
        u.pressure = pressure::read(&root.join(dir.trim_start_matches('/')));
    }
    Some(u)
}

/// The pressure of the cgroup at `dir` (relative to the hierarchy root); nothing on cgroup v1.
pub fn pressures(dir: &str) -> pressure::Pressures {
    let hier = hierarchies::auto();
    if !hier.v2() {
        return pressure::Pressures::default();
    }
    pressure::read(&hier.root().join(dir.trim_start_matches('/')))
}

/// The cgroup directory (relative to the hierarchy roots) of a pod whose config names `parent` as
/// its cgroup parent: the directory itself (cgroupfs) or the slice's (systemd). None when it names
/// none: such pods share berth's default parent, which is no one pod's.
pub fn pod_dir(driver: CgroupDriver, parent: &str) -> Option<String> {
    let parent = parent.trim_end_matches('/');
    if parent.is_empty() {
        return None;
    }
    match driver {
        CgroupDriver::Cgroupfs => Some(parent.trim_start_matches('/').to_string()),
        CgroupDriver::Systemd => {
            let slice = parent.rsplit('/').next()?;
            cgroups_rs::systemd::utils::expand_slice(slice).ok()
        }
    }
}

/// Test helpers: a cgroup v2 hierarchy made of plain files in a directory.
#[cfg(test)]
pub(crate) mod testing {
    use std::path::{Path, PathBuf};

    use cgroups_rs::fs::cpu::CpuController;
    use cgroups_rs::fs::cpuset::CpuSetController;
    use cgroups_rs::fs::freezer::FreezerController;
    use cgroups_rs::fs::memory::MemController;
    use cgroups_rs::fs::pid::PidController;
    use cgroups_rs::fs::{Cgroup, Hierarchy};

    /// A cgroup v2 hierarchy rooted somewhere else than /sys/fs/cgroup (tests: a directory of files).
    #[derive(Debug)]
    pub(crate) struct RootedV2 {
        pub(crate) root: PathBuf,
    }

    impl Hierarchy for RootedV2 {
        fn subsystems(&self) -> Vec<cgroups_rs::fs::Subsystem> {
            use cgroups_rs::fs::Subsystem;
            let r = || self.root.clone();
            vec![
                Subsystem::Cpu(CpuController::new(r(), PathBuf::new(), true)),
                Subsystem::Mem(MemController::new(r(), PathBuf::new(), true)),
                Subsystem::Pid(PidController::new(r(), PathBuf::new(), true)),
                Subsystem::Freezer(FreezerController::new(r(), PathBuf::new(), true)),
                Subsystem::CpuSet(CpuSetController::new(r(), PathBuf::new(), true)),
            ]
        }
        fn root(&self) -> PathBuf {
            self.root.clone()
        }
        fn root_control_group(&self) -> Cgroup {
            Cgroup::load(
                Box::new(RootedV2 {
                    root: self.root.clone(),
                }),
                "",
            )
        }
        fn parent_control_group(&self, path: &str) -> Cgroup {
            let parent = Path::new(path).parent().unwrap_or(Path::new(""));
            Cgroup::load(
                Box::new(RootedV2 {
                    root: self.root.clone(),
                }),
                parent,
            )
        }
        fn v2(&self) -> bool {
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use testing::RootedV2;

    #[test]
    fn v2_files() {
        let root = tempfile::tempdir().unwrap();
        let hier = || {
            Box::new(RootedV2 {
                root: root.path().into(),
            }) as Box<dyn Hierarchy>
        };
        let d = root.path().join("kubepods/pod1/c1");
        std::fs::create_dir_all(&d).unwrap();
        let w = |n: &str, v: &str| std::fs::write(d.join(n), v).unwrap();
        w("cpu.stat", "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n");
        w("memory.current", "10485760\n");
        w("memory.max", "max\n");
        w("memory.low", "0\n");
        w("memory.high", "max\n");
        w("memory.min", "0\n");
        w(
            "memory.stat",
            "anon 4096000\nfile 6000000\ninactive_file 2097152\npgfault 42\npgmajfault 3\n",
        );
        w("pids.current", "4\n");
        w("memory.events", "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n");
        w(
            "io.pressure",
            "some avg10=2.00 avg60=1.00 avg300=0.50 total=40\nfull avg10=1.00 avg60=0.50 avg300=0.25 total=20\n",
        );
        let u = usage_in(hier(), "/kubepods/pod1/c1").unwrap();
        assert_eq!(u.pressure.io.unwrap().full.unwrap().total_ns, 20_000);
        assert_eq!(u.pressure.cpu, None);
        assert_eq!(u.cpu_ns, Some(1_500_000));
        assert_eq!(u.working_set(), Some(10485760 - 2097152));
        assert_eq!(
            (u.rss, u.page_faults, u.major_page_faults, u.pids),
            (Some(4096000), Some(42), Some(3), Some(4))
        );
        assert_eq!(u.memory_limit, None, "max is no limit");
        assert_eq!(u.swap, None, "no swap accounting here");
        assert_eq!(u.available(), None);
        w("memory.max", "16777216\n");
        assert_eq!(
            usage_in(hier(), "kubepods/pod1/c1").unwrap().available(),
            Some(16777216 - (10485760 - 2097152))
        );
        assert_eq!(oom_kills_in(hier(), "kubepods/pod1/c1"), 1);
        assert!(usage_in(hier(), "kubepods/pod1/gone").is_none());
        assert_eq!(oom_kills_in(hier(), "kubepods/pod1/gone"), 0);
    }

    #[test]
    fn pod_dirs() {
        let fs = CgroupDriver::Cgroupfs;
        assert_eq!(
            pod_dir(fs, "/kubepods/burstable/pod12/").as_deref(),
            Some("kubepods/burstable/pod12")
        );
        assert_eq!(pod_dir(fs, ""), None, "the shared default parent is no pod's");
        assert_eq!(
            pod_dir(
                CgroupDriver::Systemd,
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod3.slice"
            )
            .as_deref(),
            Some("kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod3.slice")
        );
        assert_eq!(pod_dir(CgroupDriver::Systemd, ""), None);
    }

    #[test]
    fn cgroupfs_paths() {
        let p = container_path(CgroupDriver::Cgroupfs, "/kubepods/burstable/pod12/", "abc").unwrap();
        assert_eq!(p, "/kubepods/burstable/pod12/abc");
        assert_eq!(dir_of(&p).unwrap(), "kubepods/burstable/pod12/abc");
        assert_eq!(container_path(CgroupDriver::Cgroupfs, "", "abc").unwrap(), "/berth/abc");
    }

    #[test]
    fn systemd_paths() {
        // kubelet's two spellings of one pod slice.
        for parent in [
            "kubepods-burstable-pod12.slice",
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod12.slice",
        ] {
            let p = container_path(CgroupDriver::Systemd, parent, "abc").unwrap();
            assert_eq!(p, "kubepods-burstable-pod12.slice:berth:abc");
            assert_eq!(
                dir_of(&p).unwrap(),
                "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod12.slice/berth-abc.scope"
            );
        }
        let p = container_path(CgroupDriver::Systemd, "", "abc").unwrap();
        assert_eq!(p, "system.slice:berth:abc");
        assert_eq!(dir_of(&p).unwrap(), "system.slice/berth-abc.scope");
        assert_eq!(dir_of("-.slice:berth:abc").unwrap(), "berth-abc.scope");
        for bad in ["/kubepods/burstable/pod12", "kubepods--x.slice", ".slice"] {
            let e = container_path(CgroupDriver::Systemd, bad, "abc").unwrap_err();
            assert!(matches!(e, Error::InvalidArgument(_)), "{bad}: {e:?}");
        }
        assert_eq!(dir_of("a:b"), None);
    }
}
