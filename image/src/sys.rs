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
