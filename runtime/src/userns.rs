//! User namespaces for pods that ask for one (`hostUsers: false`: `NamespaceOption.userns_options`
//! in mode `POD`), and the ID-mapped mounts that let such a pod's root own its files.
//!
//! berthd makes the pod's user namespace itself — a short-lived process unshares it together with
//! the pod's network, IPC and UTS namespaces (so the user namespace owns them: the container can
//! mount sysfs and mqueue and set its hostname), berthd writes the maps, and the namespaces are
//! pinned by bind mounts like every other pod namespace. Containers join it by path; runc gets the
//! same maps in the spec. Debian 12's runc 1.1 cannot make ID-mapped mounts, so berthd makes them
//! before runc runs ([`crate::mounts`]).

use std::path::Path;

use berth_proto::cri::{IdMapping, NamespaceMode, NamespaceOption};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One ID range: `length` IDs from `container_id` inside are `host_id`… outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Range {
    pub container_id: u32,
    pub host_id: u32,
    pub length: u32,
}

impl Range {
    fn from_cri(what: &str, m: &[IdMapping]) -> Result<Range> {
        let [one] = m else {
            return Err(Error::InvalidArgument(format!(
                "user namespace: exactly one {what} mapping is supported, got {}",
                m.len()
            )));
        };
        if one.container_id != 0 {
            return Err(Error::InvalidArgument(format!(
                "user namespace: the {what} mapping must start at container ID 0 (root in the pod), got {}",
                one.container_id
            )));
        }
        if one.length == 0 || one.host_id.checked_add(one.length - 1).is_none() {
            return Err(Error::InvalidArgument(format!(
                "user namespace: {what} mapping {}+{} is empty or out of range",
                one.host_id, one.length
            )));
        }
        if one.host_id == 0 {
            return Err(Error::InvalidArgument(format!(
                "user namespace: the {what} mapping must not map the pod's root to the host's root"
            )));
        }
        Ok(Range {
            container_id: one.container_id,
            host_id: one.host_id,
            length: one.length,
        })
    }

    /// The line of `/proc/<pid>/uid_map` (or `gid_map`) for this range.
    pub fn map_line(&self) -> String {
        format!("{} {} {}\n", self.container_id, self.host_id, self.length)
    }
}

/// A pod's user namespace maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Maps {
    pub uids: Range,
    pub gids: Range,
}

impl Maps {
    /// The ID mapping a mount asks for (`Mount.uidMappings`/`gidMappings`): one range each.
    pub fn of_mount(m: &berth_proto::cri::Mount) -> Result<Maps> {
        let one = |what: &str, v: &[IdMapping]| -> Result<Range> {
            match v {
                [r] if r.length > 0
                    && r.host_id.checked_add(r.length - 1).is_some()
                    && r.container_id.checked_add(r.length - 1).is_some() =>
                {
                    Ok(Range {
                        container_id: r.container_id,
                        host_id: r.host_id,
                        length: r.length,
                    })
                }
                _ => Err(Error::InvalidArgument(format!(
                    "mount {:?}: exactly one valid {what} mapping is supported, got {}",
                    m.container_path,
                    v.len()
                ))),
            }
        };
        Ok(Maps {
            uids: one("UID", &m.uid_mappings)?,
            gids: one("GID", &m.gid_mappings)?,
        })
    }

    /// Writes these maps for process `pid` (which has just unshared its user namespace).
    pub fn write(&self, pid: u32) -> std::io::Result<()> {
        std::fs::write(format!("/proc/{pid}/uid_map"), self.uids.map_line())?;
        std::fs::write(format!("/proc/{pid}/gid_map"), self.gids.map_line())
    }
}

/// The user namespace a pod asks for: `None` for the node's (mode `NODE`, or no option), the maps
/// for `POD`. `CONTAINER` and `TARGET` are not modes a user namespace can have (the CRI says so).
pub fn requested(opts: &NamespaceOption) -> Result<Option<Maps>> {
    let Some(u) = &opts.userns_options else {
        return Ok(None);
    };
    match NamespaceMode::try_from(u.mode) {
        Ok(NamespaceMode::Node) => {
            if !u.uids.is_empty() || !u.gids.is_empty() {
                return Err(Error::InvalidArgument(
                    "user namespace mode NODE takes no ID mappings".into(),
                ));
            }
            Ok(None)
        }
        Ok(NamespaceMode::Pod) => {
            if opts.network == NamespaceMode::Node as i32 {
                return Err(Error::InvalidArgument(
                    "a pod with its own user namespace cannot use the node's network (berth does not \
                     support user namespaces with host networking)"
                        .into(),
                ));
            }
            if opts.pid == NamespaceMode::Node as i32 || opts.ipc == NamespaceMode::Node as i32 {
                return Err(Error::InvalidArgument(
                    "a pod with its own user namespace cannot share the node's PID or IPC namespace".into(),
                ));
            }
            Ok(Some(Maps {
                uids: Range::from_cri("UID", &u.uids)?,
                gids: Range::from_cri("GID", &u.gids)?,
            }))
        }
        Ok(m @ (NamespaceMode::Container | NamespaceMode::Target)) => Err(Error::InvalidArgument(format!(
            "user namespace mode {} is not supported (only POD and NODE are)",
            m.as_str_name()
        ))),
        Err(_) => Err(Error::InvalidArgument(format!(
            "unknown user namespace mode {}",
            u.mode
        ))),
    }
}

/// A process berthd started in a new user namespace (with `maps`) and the other namespaces of
/// `flags`, running `cmd`.
pub fn spawn(
    maps: Maps,
    flags: nix::sched::CloneFlags,
    cmd: &mut std::process::Command,
) -> Result<std::process::Child> {
    crate::sys::spawn_in_user_namespace(cmd, flags, move |pid| maps.write(pid))
        .map_err(Error::io("start a process in a new user namespace"))
}

/// A user namespace with `maps`, open as a file (for `MOUNT_ATTR_IDMAP`): made by a short-lived
/// process that is gone when this returns.
pub fn temporary(maps: Maps) -> Result<std::fs::File> {
    let mut child = spawn(
        maps,
        nix::sched::CloneFlags::empty(),
        std::process::Command::new("sleep")
            .arg("60")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    )?;
    let f = std::fs::File::open(format!("/proc/{}/ns/user", child.id()));
    let _ = child.kill();
    let _ = child.wait();
    f.map_err(Error::io("open the new user namespace"))
}

/// Whether pods can have user namespaces here: a user namespace can be made, a mount on the
/// filesystem of `dir` (where rootfs layers live) can be ID-mapped to it, and every directory on
/// the way to `state` (where bundles live) is searchable by others — the pod's root is an
/// unprivileged ID on the host, and runc, in the pod's user namespace, reaches the rootfs by path.
pub fn supported(dir: &Path, state: &Path) -> std::result::Result<(), String> {
    searchable_by_all(state)?;
    let maps = Maps {
        uids: Range {
            container_id: 0,
            host_id: 65536,
            length: 65536,
        },
        gids: Range {
            container_id: 0,
            host_id: 65536,
            length: 65536,
        },
    };
    let ns = temporary(maps).map_err(|e| e.to_string())?;
    crate::mounts::probe_idmap(dir, &ns).map_err(|e| format!("ID-mapped mounts on {}: {e}", dir.display()))
}

/// Every directory from `/` to `path` has the search (x) bit for others.
fn searchable_by_all(path: &Path) -> std::result::Result<(), String> {
    use std::os::unix::fs::PermissionsExt as _;
    let real = std::fs::canonicalize(path).map_err(|e| format!("{}: {e}", path.display()))?;
    for d in real.ancestors() {
        let mode = std::fs::metadata(d)
            .map_err(|e| format!("{}: {e}", d.display()))?
            .permissions()
            .mode();
        if mode & 0o001 == 0 {
            return Err(format!(
                "{} (mode {:o}) is not searchable by other users, so the root of a pod with its own user \
                 namespace cannot reach its bundle in {}: chmod o+x it (0711 is enough)",
                d.display(),
                mode & 0o7777,
                real.display()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::cri::UserNamespace;

    fn opt(mode: NamespaceMode, uids: Vec<IdMapping>) -> NamespaceOption {
        NamespaceOption {
            userns_options: Some(UserNamespace {
                mode: mode as i32,
                gids: uids.clone(),
                uids,
            }),
            ..Default::default()
        }
    }

    fn m(c: u32, h: u32, l: u32) -> IdMapping {
        IdMapping {
            container_id: c,
            host_id: h,
            length: l,
        }
    }

    #[test]
    fn bundles_must_be_reachable_by_the_pods_root() {
        use std::os::unix::fs::PermissionsExt as _;
        let d = tempfile::tempdir().unwrap();
        let state = d.path().join("state");
        std::fs::create_dir(&state).unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let e = searchable_by_all(&state).unwrap_err();
        assert!(e.contains("mode 700"), "{e}");
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        // The temporary directory's own parents (/tmp) are searchable.
        searchable_by_all(&state).unwrap();
    }

    #[test]
    fn modes_and_mappings_as_the_cri_says() {
        assert_eq!(requested(&NamespaceOption::default()).unwrap(), None);
        assert_eq!(requested(&opt(NamespaceMode::Node, vec![])).unwrap(), None);
        let got = requested(&opt(NamespaceMode::Pod, vec![m(0, 1000, 100000)]))
            .unwrap()
            .unwrap();
        assert_eq!(got.uids.map_line(), "0 1000 100000\n");
        for bad in [
            opt(NamespaceMode::Container, vec![]),
            opt(NamespaceMode::Target, vec![]),
            opt(NamespaceMode::Pod, vec![]),
            opt(NamespaceMode::Pod, vec![m(0, 1000, 100000), m(0, 2000, 100000)]),
            opt(NamespaceMode::Pod, vec![m(1, 1000, 100000)]),
            opt(NamespaceMode::Pod, vec![m(0, 0, 100000)]),
            opt(NamespaceMode::Pod, vec![m(0, u32::MAX, 2)]),
            opt(NamespaceMode::Node, vec![m(0, 1000, 1)]),
        ] {
            let e = requested(&bad).unwrap_err();
            assert_eq!(e.kind(), crate::error::Kind::InvalidArgument, "{bad:?}: {e}");
        }
        let mut host_net = opt(NamespaceMode::Pod, vec![m(0, 1000, 100000)]);
        host_net.network = NamespaceMode::Node as i32;
        assert!(requested(&host_net).is_err());
    }
}
