//! Pod namespaces without a process to hold them: new network, IPC and UTS namespaces are created on
//! a short-lived thread of their own (never a tokio worker: `unshare` changes the calling thread) and
//! pinned by bind-mounting `/proc/thread-self/ns/<kind>` onto a file, as `ip netns` does. A pinned
//! namespace lives until its file is unmounted, whatever happens to the daemon that made it.

use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;

use crate::error::{Error, Result};

/// A namespace kind a pod can own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Net,
    Ipc,
    Uts,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Net => "net",
            Kind::Ipc => "ipc",
            Kind::Uts => "uts",
        }
    }

    fn flag(self) -> CloneFlags {
        match self {
            Kind::Net => CloneFlags::CLONE_NEWNET,
            Kind::Ipc => CloneFlags::CLONE_NEWIPC,
            Kind::Uts => CloneFlags::CLONE_NEWUTS,
        }
    }
}

/// What to create.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub kinds: Vec<Kind>,
    /// Set in the new UTS namespace (ignored without `Kind::Uts`).
    pub hostname: Option<String>,
}

/// Creates the namespaces in `req` and pins each at `<dir>/<kind>`. On failure nothing stays pinned.
/// Blocking: runs a thread of its own and waits for it.
pub fn create(dir: &Path, req: &Request) -> Result<Vec<(Kind, PathBuf)>> {
    if let Some(h) = &req.hostname {
        validate_hostname(h)?;
    }
    std::fs::create_dir_all(dir).map_err(Error::io("create", dir))?;
    let mut pins = Vec::new();
    for k in &req.kinds {
        let p = dir.join(k.name());
        std::fs::File::create(&p).map_err(Error::io("create", &p))?;
        pins.push((*k, p));
    }
    let req2 = req.clone();
    let pins2 = pins.clone();
    let res = std::thread::Builder::new()
        .name("berth-ns".into())
        .spawn(move || -> Result<()> {
            let flags = req2.kinds.iter().fold(CloneFlags::empty(), |f, k| f | k.flag());
            nix::sched::unshare(flags).map_err(Error::sys("unshare"))?;
            if req2.kinds.contains(&Kind::Net) {
                // Every pod has its loopback up before anything else runs in it, whatever wires the
                // rest (a CNI chain may have no loopback plugin), as containerd and CRI-O do.
                loopback_up()?;
            }
            if let (Some(h), true) = (&req2.hostname, req2.kinds.contains(&Kind::Uts)) {
                nix::unistd::sethostname(h).map_err(Error::sys(format!("sethostname {h:?}")))?;
            }
            for (k, p) in &pins2 {
                let src = format!("/proc/thread-self/ns/{}", k.name());
                nix::mount::mount(Some(src.as_str()), p, None::<&str>, MsFlags::MS_BIND, None::<&str>)
                    .map_err(Error::sys(format!("pin {} namespace at {}", k.name(), p.display())))?;
            }
            // The thread ends here and its namespaces live on, held by the bind mounts.
            Ok(())
        })
        .map_err(Error::io("spawn namespace thread", dir))?
        .join()
        .unwrap_or_else(|_| {
            Err(Error::Sys {
                op: "namespace thread panicked".into(),
                source: nix::errno::Errno::EIO,
            })
        });
    if let Err(e) = res {
        for (_, p) in &pins {
            let _ = remove(p);
        }
        return Err(e);
    }
    Ok(pins)
}

/// Readies namespaces made elsewhere (a pod's, unshared with its user namespace by another
/// process and pinned at `net` and `uts`): `lo` up, `hostname` set. Blocking: runs a thread of its
/// own that enters them.
pub fn prepare(net: &Path, uts: &Path, hostname: &str) -> Result<()> {
    validate_hostname(hostname)?;
    let netns = std::fs::File::open(net).map_err(Error::io("open", net))?;
    let utsns = std::fs::File::open(uts).map_err(Error::io("open", uts))?;
    let h = hostname.to_string();
    std::thread::Builder::new()
        .name("berth-ns".into())
        .spawn(move || -> Result<()> {
            nix::sched::setns(&utsns, CloneFlags::CLONE_NEWUTS).map_err(Error::sys("enter UTS namespace"))?;
            nix::unistd::sethostname(&h).map_err(Error::sys(format!("sethostname {h:?}")))?;
            nix::sched::setns(&netns, CloneFlags::CLONE_NEWNET).map_err(Error::sys("enter network namespace"))?;
            loopback_up()
        })
        .map_err(Error::io("spawn namespace thread", net))?
        .join()
        .unwrap_or_else(|_| {
            Err(Error::Sys {
                op: "namespace thread panicked".into(),
                source: nix::errno::Errno::EIO,
            })
        })
}

/// Sets `lo` up in the calling thread's network namespace.
fn loopback_up() -> Result<()> {
    let mut nl = crate::netlink::Netlink::open()?;
    let lo = nl
        .link_index("lo")?
        .ok_or_else(|| Error::Config("a new network namespace has no lo".into()))?;
    nl.set_up(lo, None)
}

/// Runs `f` on a thread of its own inside the network namespace pinned at `netns` (sockets it opens
/// stay in that namespace), and returns what `f` returns. Blocking.
pub fn run_in<T: Send + 'static>(netns: &Path, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    let ns = std::fs::File::open(netns).map_err(Error::io("open", netns))?;
    std::thread::Builder::new()
        .name("berth-netns".into())
        .spawn(move || -> Result<T> {
            nix::sched::setns(&ns, CloneFlags::CLONE_NEWNET).map_err(Error::sys("enter network namespace"))?;
            Ok(f())
        })
        .map_err(Error::io("spawn namespace thread", netns))?
        .join()
        .unwrap_or_else(|_| {
            Err(Error::Sys {
                op: "network namespace thread panicked".into(),
                source: nix::errno::Errno::EIO,
            })
        })
}

/// Pins an existing namespace (`/proc/<pid>/ns/<kind>`) at `dst`.
pub fn pin(src: &Path, dst: &Path) -> Result<()> {
    std::fs::File::create(dst).map_err(Error::io("create", dst))?;
    nix::mount::mount(Some(src), dst, None::<&str>, MsFlags::MS_BIND, None::<&str>).map_err(Error::sys(format!(
        "pin {} at {}",
        src.display(),
        dst.display()
    )))
}

/// Unpins and deletes a namespace file. A missing or unpinned file is fine.
pub fn remove(path: &Path) -> Result<()> {
    match nix::mount::umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(Error::sys(format!("unpin {}", path.display()))(e)),
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", path)(e)),
    }
}

/// Whether `path` holds a pinned namespace (an nsfs mount).
pub fn is_pinned(path: &Path) -> bool {
    const NSFS_MAGIC: nix::sys::statfs::FsType = nix::sys::statfs::FsType(0x6e73_6673);
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type() == NSFS_MAGIC)
        .unwrap_or(false)
}

/// RFC 1123 hostname, as kubelet sends them; at most 64 bytes (the kernel's limit).
pub fn validate_hostname(h: &str) -> Result<()> {
    let ok = !h.is_empty()
        && h.len() <= 64
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    if ok {
        Ok(())
    } else {
        Err(Error::BadHostname(h.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames() {
        assert!(validate_hostname("web-0").is_ok());
        assert!(validate_hostname("a.b.c").is_ok());
        assert!(validate_hostname("").is_err());
        assert!(validate_hostname("-a").is_err());
        assert!(validate_hostname("a_b").is_err());
        assert!(validate_hostname(&"a".repeat(65)).is_err());
    }

    #[test]
    fn pinned_namespaces_outlive_their_thread() {
        if !berth_test_report::root_or_not_tested("cni::ns::pinned_namespaces_outlive_their_thread", "unshare, mount") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let pins = create(
            dir.path(),
            &Request {
                kinds: vec![Kind::Net, Kind::Ipc, Kind::Uts],
                hostname: Some("pod-a".into()),
            },
        )
        .unwrap();
        use std::os::unix::fs::MetadataExt as _;
        for (k, p) in &pins {
            assert!(is_pinned(p), "{k:?} pinned");
            let host = std::fs::metadata(format!("/proc/self/ns/{}", k.name())).unwrap().ino();
            assert_ne!(std::fs::metadata(p).unwrap().ino(), host, "{k:?} is a new namespace");
        }
        // The hostname was set inside the pinned UTS namespace, not here.
        let out = std::process::Command::new("nsenter")
            .arg(format!("--uts={}", pins[2].1.display()))
            .arg("hostname")
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "pod-a");
        assert_ne!(nix::unistd::gethostname().unwrap().to_string_lossy(), "pod-a");
        for (_, p) in &pins {
            remove(p).unwrap();
            assert!(!p.exists());
            remove(p).unwrap();
        }
        assert!(
            create(
                dir.path(),
                &Request {
                    kinds: vec![Kind::Uts],
                    hostname: Some("bad_name".into())
                }
            )
            .is_err()
        );
    }
}
