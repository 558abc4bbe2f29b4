//! Terminals: `runc --console-socket` hands the shim the pty master of a `terminal: true` process over
//! a unix socket (SCM_RIGHTS). The shim copies the master's output into the process's stdout sink
//! and the stdin source into the master, on two small threads (blocking I/O; a pty read ends with
//! EIO once every process holding the slave has exited), and sets the window size on `ResizePty`.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::error::{Error, Result};

/// How long runc has to connect and send the master after it was started.
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// A listening socket for one process's console.
#[derive(Debug)]
pub struct ConsoleSocket {
    path: PathBuf,
    listener: tokio::net::UnixListener,
}

impl ConsoleSocket {
    /// Binds a socket with a short path (a unix socket path must fit 108 bytes) in the temp dir.
    pub fn new() -> Result<ConsoleSocket> {
        static N: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "berth-pty-{}-{}.sock",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_file(&path);
        let listener = tokio::net::UnixListener::bind(&path).map_err(|source| Error::Io {
            context: "binding the console socket",
            path: path.clone(),
            source,
        })?;
        Ok(ConsoleSocket { path, listener })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts runc's connection and takes the pty master it sends.
    pub async fn receive(&self) -> Result<OwnedFd> {
        let io_err = |source: std::io::Error| Error::Io {
            context: "receiving the pty master on",
            path: self.path.clone(),
            source,
        };
        let (conn, _) = tokio::time::timeout(RECEIVE_TIMEOUT, self.listener.accept())
            .await
            .map_err(|_| io_err(std::io::Error::from(std::io::ErrorKind::TimedOut)))?
            .map_err(io_err)?;
        let conn = conn.into_std().map_err(io_err)?;
        conn.set_nonblocking(false).map_err(io_err)?;
        conn.set_read_timeout(Some(RECEIVE_TIMEOUT)).map_err(io_err)?;
        crate::sys::receive_fd(conn.as_raw_fd()).map_err(io_err)
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Starts copying between `master` and the process's stdio; the handle ends with the output.
pub fn pump(master: &OwnedFd, stdin: OwnedFd, stdout: OwnedFd) -> Result<JoinHandle<()>> {
    let dup = |fd: &OwnedFd| {
        fd.try_clone().map_err(|source| Error::Io {
            context: "duplicating the pty master",
            path: PathBuf::from("/dev/ptmx"),
            source,
        })
    };
    let (out_master, in_master) = (dup(master)?, dup(master)?);
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
        std::thread::Builder::new()
            .name(name.into())
            .stack_size(64 << 10)
            .spawn(f)
            .map_err(|source| Error::Io {
                context: "starting a terminal copy thread for",
                path: PathBuf::from("/dev/ptmx"),
                source,
            })
    };
    spawn(
        "pty-out",
        Box::new(move || {
            copy(out_master.as_fd(), stdout.as_fd());
            let _ = done_tx.send(());
        }),
    )?;
    spawn(
        "pty-in",
        Box::new(move || {
            copy(stdin.as_fd(), in_master.as_fd());
        }),
    )?;
    Ok(tokio::spawn(async move {
        let _ = done_rx.await;
    }))
}

/// Copies until end of file or an error on either side.
fn copy(from: std::os::fd::BorrowedFd<'_>, to: std::os::fd::BorrowedFd<'_>) {
    let mut buf = [0u8; 8192];
    loop {
        let n = match nix::unistd::read(from.as_raw_fd(), &mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return,
        };
        let mut off = 0;
        while off < n {
            match nix::unistd::write(to, &buf[off..n]) {
                Ok(w) => off += w,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return,
            }
        }
    }
}

/// Sets a terminal's window size.
pub fn resize(master: &OwnedFd, width: u16, height: u16) -> Result<()> {
    crate::sys::set_window_size(master.as_raw_fd(), width, height).map_err(|source| Error::Io {
        context: "setting the window size of",
        path: PathBuf::from("/dev/ptmx"),
        source,
    })
}
