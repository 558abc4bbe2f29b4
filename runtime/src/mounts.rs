//! Mounts berthd makes on the host before runc runs, for what Debian 12's runc 1.1 cannot make:
//! recursive read-only bind mounts, ID-mapped bind mounts, the ID-mapped rootfs of a pod with its
//! own user namespace, and image volumes. Each is built as a detached mount tree (open_tree(2),
//! mount_setattr(2)) and attached in the container's bundle under `mounts/`; the spec then binds
//! it from there (a bind of a mount keeps its read-only flags and its ID mapping). Everything under
//! `mounts/` is unmounted when the container is removed ([`unmount_staged`]).

use std::os::fd::AsFd as _;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::sys;

/// Where a container's staged mounts live in its bundle.
pub fn staging_dir(bundle: &Path) -> PathBuf {
    bundle.join("mounts")
}

/// An empty mount point at `target` of the same kind (directory or file) as `src`.
fn mount_point(src: &Path, target: &Path) -> Result<()> {
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).map_err(Error::io(format!("create {}", parent.display())))?;
    }
    let is_dir = std::fs::metadata(src)
        .map_err(Error::io(format!("mount source {}", src.display())))?
        .is_dir();
    if is_dir {
        std::fs::create_dir_all(target)
    } else {
        std::fs::File::create(target).map(drop)
    }
    .map_err(Error::io(format!("create mount point {}", target.display())))
}

/// How [`bind`] presents a mount.
#[derive(Debug, Default, Clone, Copy)]
pub struct Bind<'a> {
    /// `src` and every mount below it read-only: a recursive read-only bind (`mount_setattr` with
    /// `AT_RECURSIVE`), which a plain `ro` bind is not (its submounts stay writable).
    pub recursive_readonly: bool,
    /// ID-mapped through this user namespace: a file owned by host ID `h` appears owned by the ID
    /// `h` has inside that namespace, seen from the host — so a pod's root sees the host's
    /// root-owned files as its own, and what it writes lands owned by host root.
    pub idmap: Option<&'a std::fs::File>,
}

/// Mounts `src` at `target` as `how` says (a detached clone, changed, then attached).
pub fn bind(src: &Path, target: &Path, how: Bind<'_>) -> Result<()> {
    mount_point(src, target)?;
    let tree = sys::open_tree_clone(src, how.recursive_readonly)
        .map_err(Error::io(format!("clone the mount at {}", src.display())))?;
    sys::make_private(tree.as_fd()).map_err(Error::io(format!("make the clone of {} private", src.display())))?;
    if let Some(ns) = how.idmap {
        sys::mount_setattr(tree.as_fd(), false, sys::MOUNT_ATTR_IDMAP, Some(ns.as_fd()))
            .map_err(Error::io(format!("ID-map the mount at {}", src.display())))?;
    }
    if how.recursive_readonly {
        sys::mount_setattr(tree.as_fd(), true, sys::MOUNT_ATTR_RDONLY, None).map_err(Error::io(format!(
            "make the mounts at {} read-only, recursively",
            src.display()
        )))?;
    }
    sys::move_mount(tree.as_fd(), target).map_err(Error::io(format!("attach {}", target.display())))
}

/// Whether a mount of `dir`'s filesystem can be ID-mapped to `userns` (nothing is attached).
pub fn probe_idmap(dir: &Path, userns: &std::fs::File) -> std::io::Result<()> {
    let tree = sys::open_tree_clone(dir, false)?;
    sys::mount_setattr(tree.as_fd(), false, sys::MOUNT_ATTR_IDMAP, Some(userns.as_fd()))
}

/// Whether recursive read-only mounts can be made here (the kernel has mount_setattr(2), 5.12+).
pub fn recursive_readonly_supported() -> bool {
    sys::open_tree_clone(Path::new("/"), false)
        .and_then(|t| sys::mount_setattr(t.as_fd(), true, sys::MOUNT_ATTR_RDONLY, None))
        .is_ok()
}

/// Mounts an overlay snapshot (`lowerdir=…,upperdir=…,workdir=…`) at `rootfs` for a container in
/// the user namespace `userns`: each lower layer through an ID-mapped mount (staged under
/// `staging`, detached again once overlayfs holds it), the upper directory's root owned by the
/// pod's root (`root_uid`/`root_gid` on the host). What the container writes lands owned by its
/// host IDs; the image's files keep their IDs on disk and appear inside as the image has them.
pub fn overlay_idmapped(
    snapshot: &berth_image::Mount,
    rootfs: &Path,
    staging: &Path,
    userns: &std::fs::File,
    root: (u32, u32),
) -> Result<()> {
    let mut opts = Vec::new();
    let mut staged = Vec::new();
    let mut upper = None;
    for o in &snapshot.options {
        if let Some(lowers) = o.strip_prefix("lowerdir=") {
            let mut mapped = Vec::new();
            for (i, l) in lowers.split(':').enumerate() {
                let t = staging.join(format!("l{i}"));
                let r = bind(
                    Path::new(l),
                    &t,
                    Bind {
                        idmap: Some(userns),
                        ..Bind::default()
                    },
                );
                staged.push(t.clone());
                if let Err(e) = r {
                    detach_all(&staged);
                    return Err(e);
                }
                mapped.push(t.display().to_string());
            }
            opts.push(format!("lowerdir={}", mapped.join(":")));
        } else {
            if let Some(u) = o.strip_prefix("upperdir=") {
                upper = Some(PathBuf::from(u));
            }
            opts.push(o.clone());
        }
    }
    let res = (|| -> Result<()> {
        if let Some(u) = &upper {
            nix::unistd::chown(u, Some(root.0.into()), Some(root.1.into()))
                .map_err(|e| Error::Internal(format!("chown {} to the pod's root: {e}", u.display())))?;
        }
        berth_image::sys::mount(
            "overlay",
            "overlay",
            rootfs,
            nix::mount::MsFlags::empty(),
            &opts.join(","),
        )
        .map_err(Error::from)
    })();
    // overlayfs keeps private clones of its layers: the staged ones can go now, mounted or not.
    detach_all(&staged);
    res
}

fn detach_all(paths: &[PathBuf]) {
    for p in paths {
        let _ = berth_image::sys::unmount(p);
        let _ = std::fs::remove_dir(p).or_else(|_| std::fs::remove_file(p));
    }
}

/// Unmounts whatever is staged in `bundle`'s `mounts/` (each entry, deepest first). Idempotent.
pub fn unmount_staged(bundle: &Path) -> Result<()> {
    let dir = staging_dir(bundle);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(format!("read {}", dir.display()))(e)),
    };
    for e in entries.flatten() {
        berth_image::sys::unmount(&e.path())?;
    }
    Ok(())
}

/// For a container in a user namespace: each bind mount of `spec` also asks for the flags its
/// source mount has that a user namespace may not clear (`nosuid`, `nodev`, `noexec`, `ro` and the
/// atime flags: the kernel locks them). runc 1.1 remounts a bind with only the options it is given,
/// which would try to clear them and fail (EPERM) — e.g. for the pod's files on a `noexec` /run.
pub fn keep_locked_flags(spec: &mut oci_spec::runtime::Spec) {
    use nix::sys::statvfs::FsFlags;
    let Some(mounts) = spec.mounts().clone() else { return };
    let kept = mounts
        .into_iter()
        .map(|mut m| {
            let is_bind = m.typ().as_deref() == Some("bind");
            let flags = m
                .source()
                .as_ref()
                .filter(|_| is_bind)
                .and_then(|src| nix::sys::statvfs::statvfs(src.as_path()).ok())
                .map(|v| v.flags());
            if let Some(f) = flags {
                let mut opts = m.options().clone().unwrap_or_default();
                for (flag, opt) in [
                    (FsFlags::ST_NOSUID, "nosuid"),
                    (FsFlags::ST_NODEV, "nodev"),
                    (FsFlags::ST_NOEXEC, "noexec"),
                    (FsFlags::ST_RDONLY, "ro"),
                    (FsFlags::ST_NOATIME, "noatime"),
                    (FsFlags::ST_NODIRATIME, "nodiratime"),
                    (FsFlags::ST_RELATIME, "relatime"),
                ] {
                    if f.contains(flag) && !opts.iter().any(|o| o == opt) {
                        opts.push(opt.to_string());
                    }
                }
                m.set_options(Some(opts));
            }
            m
        })
        .collect();
    spec.set_mounts(Some(kept));
}
