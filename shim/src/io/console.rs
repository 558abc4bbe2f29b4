//! Terminals: `runc --console-socket` hands the shim the pty master of a `terminal: true` process over
//! a unix socket (SCM_RIGHTS). The shim copies the master's output into the process's stdout sink
//! and the stdin source into the master, as tasks on its one-threaded runtime (a pty read ends with
//! EIO once every process holding the slave has exited), and sets the window size on `ResizePty`.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
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

/// Starts copying between `master` and the process's stdio on the shim's runtime (no threads):
/// returns the output copy, which ends once every process holding the terminal has exited, and the
/// input copy, which ends at the end of stdin.
pub fn pump(master: &OwnedFd, stdin: OwnedFd, stdout: OwnedFd) -> Result<(JoinHandle<()>, JoinHandle<()>)> {
    let io_err = |source: std::io::Error| Error::Io {
        context: "setting up the copies of the pty master",
        path: PathBuf::from("/dev/ptmx"),
        source,
    };
    let polled = |fd: &OwnedFd| -> Result<AsyncFd<OwnedFd>> {
        let fd = nonblocking(fd.try_clone().map_err(io_err)?).map_err(io_err)?;
        crate::sys::async_fd(fd).map_err(|_| io_err(std::io::Error::other("the pty master cannot be polled")))
    };
    let (out_master, in_master) = (polled(master)?, polled(master)?);
    // Pipes and FIFOs are polled; files and /dev/null cannot be, and never block.
    let sink = nonblocking(stdout).map_err(io_err)?;
    let sink = crate::sys::async_fd(sink).map_or_else(Sink::Plain, Sink::Polled);
    let source = nonblocking(stdin).map_err(io_err)?;
    let source = crate::sys::async_fd(source).ok();
    let output = tokio::spawn(async move {
        let mut buf = vec![0u8; 8192];
        while let Ok(n) = read(&out_master, &mut buf).await {
            if n == 0 || sink.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    });
    let input = tokio::spawn(async move {
        let Some(source) = source else { return };
        let mut buf = vec![0u8; 8192];
        while let Ok(n) = read(&source, &mut buf).await {
            if n == 0 || write_all(&in_master, &buf[..n]).await.is_err() {
                break;
            }
        }
    });
    Ok((output, input))
}

fn nonblocking(fd: OwnedFd) -> std::io::Result<OwnedFd> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let flags = OFlag::from_bits_truncate(fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL)?);
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(fd)
}

/// Where terminal output goes.
enum Sink {
    Polled(AsyncFd<OwnedFd>),
    Plain(OwnedFd),
}

impl Sink {
    async fn write_all(&self, buf: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::Polled(fd) => write_all(fd, buf).await,
            Sink::Plain(fd) => {
                let mut off = 0;
                while off < buf.len() {
                    off += nix::unistd::write(fd, &buf[off..])?;
                }
                Ok(())
            }
        }
    }
}

/// One read; 0 at end of file. A pty master reads EIO once no process holds the terminal.
async fn read(fd: &AsyncFd<OwnedFd>, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        let mut ready = fd.readable().await?;
        match ready.try_io(|fd| nix::unistd::read(fd.as_raw_fd(), buf).map_err(std::io::Error::from)) {
            Ok(r) => return r,
            Err(_would_block) => continue,
        }
    }
}

async fn write_all(fd: &AsyncFd<OwnedFd>, mut buf: &[u8]) -> std::io::Result<()> {
    while !buf.is_empty() {
        let mut ready = fd.writable().await?;
        match ready.try_io(|fd| nix::unistd::write(fd.get_ref(), buf).map_err(std::io::Error::from)) {
            Ok(Ok(n)) => buf = &buf[n..],
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => continue,
        }
    }
    Ok(())
}

/// Sets a terminal's window size.
pub fn resize(master: &OwnedFd, width: u16, height: u16) -> Result<()> {
    crate::sys::set_window_size(master.as_raw_fd(), width, height).map_err(|source| Error::Io {
        context: "setting the window size of",
        path: PathBuf::from("/dev/ptmx"),
        source,
    })
}
