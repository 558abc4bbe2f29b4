//! What berthd knows of its host that a container's spec depends on: read once when berthd starts
//! ([`Host::probe`]) and handed to the spec builder, so the builder reads no host file itself and
//! tests give it the host they mean.

/// The host facts a spec depends on.
#[derive(Debug, Clone)]
pub struct Host {
    /// The capabilities berthd holds: a privileged container gets these, an added one must be one.
    pub caps: Vec<String>,
    /// The lowest oom_score_adj the host lets berth set (see `oom::floor`).
    pub oom_floor: i32,
    /// The unified (v2) cgroup hierarchy is at /sys/fs/cgroup.
    pub cgroup_v2: bool,
    /// The v1 memory controller accounts swap (`memory.memsw.*`): a memory limit also limits swap.
    pub swap_accounting: bool,
    /// AppArmor is on (containers get a profile).
    pub apparmor: bool,
    /// Recursive read-only mounts can be made (mount_setattr(2)).
    pub recursive_readonly: bool,
    /// Pods can have user namespaces (ID-mapped mounts on berth's root filesystem), or why not.
    pub user_namespaces: Result<(), String>,
}

impl Host {
    /// This host, as berthd sees it now; `root` is where berth keeps images and rootfs layers,
    /// `state` where it keeps bundles.
    pub fn probe(root: &std::path::Path, state: &std::path::Path) -> Host {
        let cgroup_v2 = crate::cgroup::is_unified();
        Host {
            caps: held_caps(),
            oom_floor: crate::oom::floor(),
            cgroup_v2,
            swap_accounting: cgroup_v2
                || std::path::Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists(),
            apparmor: super::apparmor::host_supports(),
            recursive_readonly: crate::mounts::recursive_readonly_supported(),
            user_namespaces: crate::userns::supported(root, state),
        }
    }
}

/// The effective capabilities of this process, by name (every one when /proc says nothing).
fn held_caps() -> Vec<String> {
    let mask = std::fs::read_to_string("/proc/self/status").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
    });
    super::spec::all_caps()
        .into_iter()
        .enumerate()
        .filter(|(bit, _)| mask.is_none_or(|m| m & (1u64 << bit) != 0))
        .map(|(_, c)| c)
        .collect()
}
