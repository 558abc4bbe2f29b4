//! The few kernel interfaces the image crate needs: overlay whiteouts, the opaque xattr, and mounts.

use std::path::Path;

use nix::mount::{MntFlags, MsFlags};
use nix::sys::stat::{Mode, SFlag, makedev, mknod};

use crate::error::{Error, Result};

/// An overlayfs whiteout: a character device 0:0.
pub fn make_whiteout(path: &Path) -> Result<()> {
    mknod(path, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0))
        .map_err(|e| Error::io("mknod whiteout", path)(std::io::Error::from(e)))
}

/// A device node or FIFO from a layer entry, with its owner, mode and mtime (`mknod` alone
/// would leave the umask's mode and root's ownership).
pub fn make_node(path: &Path, kind: SFlag, mode: u32, dev: (u32, u32), owner: (u32, u32), mtime: i64) -> Result<()> {
    let err = |what: &'static str| move |e: nix::errno::Errno| Error::io(what, path)(std::io::Error::from(e));
    mknod(path, kind, Mode::empty(), makedev(dev.0.into(), dev.1.into())).map_err(err("mknod"))?;
    std::os::unix::fs::lchown(path, Some(owner.0), Some(owner.1)).map_err(Error::io("chown", path))?;
    nix::sys::stat::fchmodat(
        None,
        path,
        Mode::from_bits_truncate(mode & 0o7777),
        nix::sys::stat::FchmodatFlags::FollowSymlink,
    )
    .map_err(err("chmod"))?;
    let t = nix::sys::time::TimeSpec::new(mtime, 0);
    nix::sys::stat::utimensat(None, path, &t, &t, nix::sys::stat::UtimensatFlags::NoFollowSymlink)
        .map_err(err("set the mtime of"))
}

/// Marks a directory opaque: overlayfs hides what lower layers have under it.
pub fn set_opaque(dir: &Path) -> Result<()> {
    xattr::set(dir, "trusted.overlay.opaque", b"y").map_err(Error::io("set trusted.overlay.opaque on", dir))
}

/// Mounts `fstype` from `source` on `target` with comma-separated `data` and `flags`.
pub fn mount(fstype: &str, source: &str, target: &Path, flags: MsFlags, data: &str) -> Result<()> {
    let data = (!data.is_empty()).then_some(data);
    nix::mount::mount(Some(source), target, Some(fstype), flags, data)
        .map_err(|e| Error::io("mount", target)(std::io::Error::from(e)))
}

/// Unmounts `target`, detaching it if busy. Not mounted is fine.
pub fn unmount(target: &Path) -> Result<()> {
    match nix::mount::umount2(target, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(Error::io("unmount", target)(std::io::Error::from(e))),
    }
}
