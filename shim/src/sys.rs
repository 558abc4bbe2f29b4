//! The shim's only unsafe code: work done between `fork` and `exec`, and adopting an inherited fd.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// The fd on which the daemon inherits its listening socket (as containerd's shims do).
pub const LISTENER_FD: RawFd = 3;

/// Makes `cmd`'s child a session leader (so it leaves the caller's session and process group and
/// survives their death) and gives it `listener` as fd 3, inheritable.
///
/// `listener` must stay open until `cmd` has been spawned.
pub fn daemonize_on_exec(cmd: &mut Command, listener: RawFd) {
    let setup = move || -> io::Result<()> {
        // Between fork and exec only async-signal-safe functions may run; setsid, dup2 and fcntl are,
        // and the closure allocates nothing.
        // SAFETY: setsid takes no arguments and is async-signal-safe.
        if unsafe { libc::setsid() } < 0 {
            return Err(io::Error::last_os_error());
        }
        // dup2(fd, fd) is a no-op that would leave FD_CLOEXEC set, so clear the flag in that case.
        let r = if listener == LISTENER_FD {
            // SAFETY: async-signal-safe fcntl on an fd this process owns.
            unsafe { libc::fcntl(LISTENER_FD, libc::F_SETFD, 0) }
        } else {
            // SAFETY: async-signal-safe dup2 between fds this process owns; the copy has no FD_CLOEXEC.
            unsafe { libc::dup2(listener, LISTENER_FD) }
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    };
    // SAFETY: the closure only calls async-signal-safe functions (see inside).
    unsafe {
        cmd.pre_exec(setup);
    }
}

/// Has `cmd`'s child killed when the shim dies (as containerd does for runc), so a `runc` command
/// never outlives the shim that would have reaped it and read its result.
pub fn kill_with_parent(cmd: &mut Command) {
    let setup = || -> io::Result<()> {
        // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and takes no pointers.
        if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    };
    // SAFETY: the closure only calls prctl, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(setup);
    }
}

/// Takes ownership of the listening socket inherited on fd 3, after checking that fd 3 is an open
/// socket (so a daemon started by hand fails with a clear error instead of adopting a random fd).
pub fn inherited_listener() -> io::Result<UnixListener> {
    let stat = nix::sys::stat::fstat(LISTENER_FD).map_err(|e| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("no listening socket on fd {LISTENER_FD}: {e}"),
        )
    })?;
    if stat.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("fd {LISTENER_FD} is not a socket"),
        ));
    }
    // SAFETY: fd 3 is open (fstat succeeded), is a socket, and nothing else in this process uses or
    // closes it: `start` passed it to us for exactly this purpose.
    let fd = unsafe { OwnedFd::from_raw_fd(LISTENER_FD) };
    nix::fcntl::fcntl(
        LISTENER_FD,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )?;
    Ok(UnixListener::from(fd))
}

/// Receives one fd sent with SCM_RIGHTS on the connected unix socket `sock` (runc's
/// `--console-socket` protocol: a short message carrying the pty master).
pub fn receive_fd(sock: RawFd) -> io::Result<OwnedFd> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    let mut buf = [0u8; 4096];
    let mut iov = [io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(sock, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)?;
    let mut received = None;
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            for fd in fds {
                // SAFETY: the kernel just installed `fd` in this process for this message; nothing
                // else knows it, so taking ownership (and closing extras at drop) is sound.
                let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                if received.is_none() {
                    received = Some(owned);
                }
            }
        }
    }
    received.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no fd in the console socket message"))
}

/// TIOCSWINSZ on a terminal fd.
pub fn set_window_size(fd: RawFd, width: u16, height: u16) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: height,
        ws_col: width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one `winsize` from the pointer, which points to a live local.
    if unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Registers an owned fd with the tokio reactor; gives the fd back if it cannot be polled (files).
pub fn async_fd(fd: OwnedFd) -> Result<tokio::io::unix::AsyncFd<OwnedFd>, OwnedFd> {
    // SAFETY: an `OwnedFd` is a valid open descriptor that nothing else closes, and it always
    // returns the same raw fd; the `AsyncFd` owns it until it is dropped.
    unsafe { tokio::io::unix::AsyncFd::register(fd) }.map_err(|e| e.into_parts().0)
}
