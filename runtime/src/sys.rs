//! The runtime's only unsafe code: calls into libc that have no safe wrapper.
#![allow(unsafe_code)]

/// Gives freed heap memory back to the kernel. A pull allocates buffers on several threads; without
/// this, glibc keeps those pages and the idle daemon stays several megabytes larger than it needs.
pub fn release_free_memory() {
    // SAFETY: malloc_trim only walks glibc's own allocator state and takes its locks; it has no
    // preconditions and touches no memory the caller owns.
    unsafe {
        libc::malloc_trim(0);
    }
}

use std::os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd};
use std::path::Path;

/// `struct mount_attr` of mount_setattr(2).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const OPEN_TREE_CLONE: libc::c_uint = 1;
const AT_RECURSIVE: libc::c_uint = 0x8000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
/// mount_setattr(2)'s read-only attribute.
pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
/// mount_setattr(2)'s ID-mapping attribute (needs a user namespace fd).
pub const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

fn c_path(p: &Path) -> std::io::Result<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt as _;
    std::ffi::CString::new(p.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "path has a NUL byte"))
}

/// open_tree(2) with `OPEN_TREE_CLONE`: a detached copy of the mount at `path` (with the mounts below
/// it when `recursive`), attached nowhere until [`move_mount`] places it.
pub fn open_tree_clone(path: &Path, recursive: bool) -> std::io::Result<OwnedFd> {
    let p = c_path(path)?;
    let mut flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint;
    if recursive {
        flags |= AT_RECURSIVE;
    }
    // SAFETY: `p` is a valid NUL-terminated string that outlives the call; the kernel returns a new
    // file descriptor or -1 and touches no memory of ours besides reading the path.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, p.as_ptr(), flags) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor to us, and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// mount_setattr(2) on the detached tree `tree`: sets the attributes `set` (on every mount in it
/// when `recursive`); `userns` is the user namespace of a `MOUNT_ATTR_IDMAP`.
pub fn mount_setattr(
    tree: BorrowedFd<'_>,
    recursive: bool,
    set: u64,
    userns: Option<BorrowedFd<'_>>,
) -> std::io::Result<()> {
    let attr = MountAttr {
        attr_set: set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.map(|f| f.as_raw_fd() as u64).unwrap_or(0),
    };
    let mut flags = libc::AT_EMPTY_PATH as libc::c_uint;
    if recursive {
        flags |= AT_RECURSIVE;
    }
    // SAFETY: `attr` is a properly laid out `struct mount_attr` that lives across the call, its size
    // is passed with it, and the empty path is a static NUL-terminated string.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Makes every mount of the detached tree `tree` private (mount_setattr(2)'s propagation), so it
/// is no peer of the mounts it was cloned from: what later happens to it (an unmount, on a shared
/// host) does not propagate back to them.
pub fn make_private(tree: BorrowedFd<'_>) -> std::io::Result<()> {
    let attr = MountAttr {
        attr_set: 0,
        attr_clr: 0,
        propagation: libc::MS_PRIVATE,
        userns_fd: 0,
    };
    // SAFETY: as in `mount_setattr`: a valid `struct mount_attr` with its size, a static empty path.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint | AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// move_mount(2): attaches the detached tree `tree` at `target`.
pub fn move_mount(tree: BorrowedFd<'_>, target: &Path) -> std::io::Result<()> {
    let t = c_path(target)?;
    // SAFETY: both strings are valid and NUL-terminated for the duration of the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Spawns `cmd` in new namespaces, `CLONE_NEWUSER` with the others of `flags` (created in that
/// order, so the user namespace owns them). Before the child execs, `map` runs in this process
/// with the child's PID (to write its `uid_map`/`gid_map`); then the child becomes root of its
/// namespace (uid and gid 0, no supplementary groups), so the program keeps its capabilities there.
pub fn spawn_in_user_namespace(
    cmd: &mut std::process::Command,
    flags: nix::sched::CloneFlags,
    map: impl FnOnce(u32) -> std::io::Result<()> + Send + 'static,
) -> std::io::Result<std::process::Child> {
    use std::io::{Read as _, Write as _};
    use std::os::unix::process::CommandExt as _;
    let (ready_r, ready_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let (go_r, go_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let mapper = std::thread::Builder::new().name("berth-userns".into()).spawn(move || {
        let mut ready = std::fs::File::from(ready_r);
        let mut go = std::fs::File::from(go_w);
        let mut pid = [0u8; 4];
        if ready.read_exact(&mut pid).is_err() {
            return; // the child failed before it unshared; spawn reports why
        }
        let ok = map(u32::from_ne_bytes(pid)).is_ok();
        let _ = go.write_all(&[u8::from(!ok)]);
    })?;
    let flags = flags | nix::sched::CloneFlags::CLONE_NEWUSER;
    let (rw, gr) = (ready_w.as_raw_fd(), go_r.as_raw_fd());
    // SAFETY: the closure runs in the forked child before exec and only makes async-signal-safe
    // system calls (unshare, getpid, write, read, setgroups, setresgid, setresuid) on descriptors
    // this function owns; it allocates nothing and takes no lock.
    unsafe {
        cmd.pre_exec(move || {
            nix::sched::unshare(flags)?;
            let pid = (libc::getpid() as u32).to_ne_bytes();
            if libc::write(rw, pid.as_ptr().cast(), 4) != 4 {
                return Err(std::io::Error::last_os_error());
            }
            let mut ok = [1u8; 1];
            if libc::read(gr, ok.as_mut_ptr().cast(), 1) != 1 || ok[0] != 0 {
                return Err(std::io::Error::other("the user namespace's ID maps were not written"));
            }
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setresgid(0, 0, 0) != 0
                || libc::setresuid(0, 0, 0) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn();
    // The child holds its own copies; with ours closed, the mapper sees EOF if the child died early.
    drop(ready_w);
    drop(go_r);
    let _ = mapper.join();
    child
}
