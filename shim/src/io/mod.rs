//! A container process's stdio, from the strings in `Create`/`Exec`.
//!
//! | string | stdin | stdout / stderr |
//! |---|---|---|
//! | empty | `/dev/null` | `/dev/null` |
//! | `crilog:///abs/file.log` | refused | a pipe the shim copies into the file in CRI log format ([`crilog`]) |
//! | `file:///abs/file` | refused | the file, appended raw |
//! | `/abs/path` of a FIFO | the FIFO | the FIFO |
//! | `/abs/path` of a regular file | refused | the file, appended raw |
//!
//! A FIFO is handed to the container directly (no copy). The shim keeps the other end open too, as
//! containerd's shim does: a reader on an output FIFO, so the container never gets `EPIPE` while its
//! host (berthd) is away, only back-pressure once the pipe is full; and a writer on the stdin FIFO, so
//! the container does not see end-of-file before the host sends `CloseIO`.

pub mod console;
pub mod crilog;

use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::io::crilog::{CriLog, Stream};
use crate::runc;

/// Where a process's output goes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Sink {
    Null,
    CriLog(PathBuf),
    Fifo(PathBuf),
    File(PathBuf),
}

/// Where a process's input comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    Null,
    Fifo(PathBuf),
}

fn absolute(name: &str, path: &str) -> Result<PathBuf> {
    let p = PathBuf::from(path);
    if !p.is_absolute() {
        return Err(Error::InvalidArgument(format!(
            "{name} {path:?}: the path must be absolute"
        )));
    }
    Ok(p)
}

fn parse_sink(name: &str, s: &str) -> Result<Sink> {
    if s.is_empty() {
        return Ok(Sink::Null);
    }
    if let Some(path) = s.strip_prefix("crilog://") {
        return Ok(Sink::CriLog(absolute(name, path)?));
    }
    if let Some(path) = s.strip_prefix("file://") {
        return Ok(Sink::File(absolute(name, path)?));
    }
    if let Some((scheme, _)) = s.split_once("://") {
        return Err(Error::InvalidArgument(format!(
            "{name} {s:?}: unsupported scheme {scheme:?} (use crilog://, file:// or a FIFO path)"
        )));
    }
    let path = absolute(name, s)?;
    match std::fs::metadata(&path) {
        Ok(m) if m.file_type().is_fifo() => Ok(Sink::Fifo(path)),
        Ok(m) if m.is_file() => Ok(Sink::File(path)),
        Ok(_) => Err(Error::InvalidArgument(format!(
            "{name} {s:?} is neither a FIFO nor a regular file"
        ))),
        Err(source) => Err(Error::Io {
            context: "opening the process's",
            path,
            source,
        }),
    }
}

fn parse_source(s: &str) -> Result<Source> {
    if s.is_empty() {
        return Ok(Source::Null);
    }
    let path = absolute("stdin", s)?;
    match std::fs::metadata(&path) {
        Ok(m) if m.file_type().is_fifo() => Ok(Source::Fifo(path)),
        Ok(_) => Err(Error::InvalidArgument(format!("stdin {s:?} is not a FIFO"))),
        Err(source) => Err(Error::Io {
            context: "opening stdin",
            path,
            source,
        }),
    }
}

/// The stdio strings a process was created with, reported back by `State`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StdioPaths {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
}

/// What the shim holds for one process's stdio while the process lives.
#[derive(Debug, Default)]
pub struct ProcessIo {
    /// Our ends of the output FIFOs (readers nobody reads from, see the module docs).
    keep: Vec<OwnedFd>,
    /// Our writer on the stdin FIFO, until `CloseIO`.
    stdin_writer: Option<OwnedFd>,
    copies: Vec<JoinHandle<()>>,
    log: Option<Arc<CriLog>>,
    /// The pty master of a terminal process, and the copy of its input.
    console: Option<OwnedFd>,
    console_input: Option<JoinHandle<()>>,
}

impl Drop for ProcessIo {
    fn drop(&mut self) {
        // The input copy would otherwise wait for the end of a stdin nobody writes any more.
        if let Some(t) = self.console_input.take() {
            t.abort();
        }
    }
}

impl ProcessIo {
    /// Opens the process's stdio: returns the fds to give runc and what the shim keeps.
    pub fn open(paths: &StdioPaths) -> Result<(runc::Stdio, ProcessIo)> {
        let stdout = parse_sink("stdout", &paths.stdout)?;
        let stderr = parse_sink("stderr", &paths.stderr)?;
        let stdin = parse_source(&paths.stdin)?;
        let mut io = ProcessIo::default();

        let stdin = match stdin {
            Source::Null => open_path(Path::new("/dev/null"), OFlag::O_RDONLY)?,
            Source::Fifo(path) => {
                // Open the reader without blocking (no writer yet), then our writer, then make the
                // container's reader blocking again.
                let reader = open_path(&path, OFlag::O_RDONLY | OFlag::O_NONBLOCK)?;
                io.stdin_writer = Some(open_path(&path, OFlag::O_WRONLY)?);
                set_blocking(&reader, &path)?;
                reader
            }
        };
        let stdout = io.open_sink(stdout, Stream::Stdout)?;
        let stderr = io.open_sink(stderr, Stream::Stderr)?;
        Ok((runc::Stdio { stdin, stdout, stderr }, io))
    }

    fn open_sink(&mut self, sink: Sink, stream: Stream) -> Result<OwnedFd> {
        match sink {
            Sink::Null => open_path(Path::new("/dev/null"), OFlag::O_WRONLY),
            Sink::File(path) => {
                let file = OpenOptions::new()
                    .append(true)
                    .create(true)
                    .mode(0o640)
                    .open(&path)
                    .map_err(|source| Error::Io {
                        context: "opening the output file",
                        path,
                        source,
                    })?;
                Ok(file.into())
            }
            Sink::Fifo(path) => {
                self.keep.push(open_path(&path, OFlag::O_RDONLY | OFlag::O_NONBLOCK)?);
                open_path(&path, OFlag::O_WRONLY)
            }
            Sink::CriLog(path) => {
                let log = match &self.log {
                    Some(log) if log.path() == path => log.clone(),
                    Some(_) => {
                        return Err(Error::InvalidArgument(
                            "stdout and stderr must name the same crilog:// file".to_string(),
                        ));
                    }
                    None => {
                        let log = CriLog::open(&path).map_err(|source| Error::Io {
                            context: "opening the container log",
                            path,
                            source,
                        })?;
                        let log = Arc::new(log);
                        self.log = Some(log.clone());
                        log
                    }
                };
                let (reader, writer) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::Io {
                    context: "creating a pipe for",
                    path: log.path().into(),
                    source: e.into(),
                })?;
                self.copies.push(tokio::spawn(crilog::copy(reader, stream, log)));
                Ok(writer)
            }
        }
    }

    /// stdio for runc when the process gets a terminal instead (runc ignores it then).
    pub fn null_stdio() -> Result<runc::Stdio> {
        Ok(runc::Stdio {
            stdin: open_path(Path::new("/dev/null"), OFlag::O_RDONLY)?,
            stdout: open_path(Path::new("/dev/null"), OFlag::O_WRONLY)?,
            stderr: open_path(Path::new("/dev/null"), OFlag::O_WRONLY)?,
        })
    }

    /// Makes a terminal process's pty `master` its stdio: output to `stdio.stdout`, input from
    /// `stdio.stdin` (stderr is the terminal too).
    pub fn attach_console(&mut self, master: OwnedFd, stdio: runc::Stdio) -> Result<()> {
        let (output, input) = console::pump(&master, stdio.stdin, stdio.stdout)?;
        self.copies.push(output);
        self.console_input = Some(input);
        self.console = Some(master);
        Ok(())
    }

    /// Sets the window size of the process's terminal.
    pub fn resize(&self, width: u16, height: u16) -> Result<()> {
        match &self.console {
            Some(m) => console::resize(m, width, height),
            None => Err(Error::FailedPrecondition("the process has no terminal".into())),
        }
    }

    /// Hands over the tasks copying output into the log (see [`drain`]).
    pub fn take_copies(&mut self) -> Vec<JoinHandle<()>> {
        std::mem::take(&mut self.copies)
    }

    /// Closes the shim's end of stdin, so the process reads end-of-file once the host's end closes.
    pub fn close_stdin(&mut self) {
        self.stdin_writer = None;
    }

    /// Reopens the CRI log file (after rotation). Returns whether there was one.
    pub fn reopen_log(&self) -> std::io::Result<bool> {
        match &self.log {
            Some(log) => log.reopen().map(|()| true),
            None => Ok(false),
        }
    }
}

/// Waits (at most `limit`) until the copies have moved everything the process wrote into its log.
/// They end when every holder of the pipes' write ends has exited; a process that left children
/// holding them keeps its copies going in the background after the limit.
pub async fn drain(copies: Vec<JoinHandle<()>>, limit: Duration) {
    if copies.is_empty() {
        return;
    }
    let all = async {
        for c in copies {
            let _ = c.await;
        }
    };
    if tokio::time::timeout(limit, all).await.is_err() {
        log::info!("process output still open {limit:?} after its exit; copying goes on in the background");
    }
}

fn open_path(path: &Path, flags: OFlag) -> Result<OwnedFd> {
    let mut opts = OpenOptions::new();
    let access = flags & OFlag::O_ACCMODE;
    opts.read(access == OFlag::O_RDONLY).write(access == OFlag::O_WRONLY);
    opts.custom_flags((flags & !OFlag::O_ACCMODE).bits());
    let file: File = opts.open(path).map_err(|source| Error::Io {
        context: "opening",
        path: path.into(),
        source,
    })?;
    Ok(file.into())
}

fn set_blocking(fd: &OwnedFd, path: &Path) -> Result<()> {
    let io_err = |e: nix::Error| Error::Io {
        context: "setting flags of",
        path: path.into(),
        source: e.into(),
    };
    let flags = OFlag::from_bits_truncate(fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL).map_err(io_err)?);
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags & !OFlag::O_NONBLOCK)).map_err(io_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sinks() {
        assert_eq!(parse_sink("stdout", "").unwrap(), Sink::Null);
        assert_eq!(
            parse_sink("stdout", "crilog:///var/log/pods/x/0.log").unwrap(),
            Sink::CriLog("/var/log/pods/x/0.log".into())
        );
        assert_eq!(
            parse_sink("stdout", "file:///tmp/out").unwrap(),
            Sink::File("/tmp/out".into())
        );
        assert!(matches!(
            parse_sink("stdout", "crilog://relative.log"),
            Err(Error::InvalidArgument(_))
        ));
        assert!(
            matches!(parse_sink("stdout", "binary:///usr/bin/logger"), Err(Error::InvalidArgument(m)) if m.contains("\"binary\""))
        );
        assert!(matches!(
            parse_sink("stdout", "/nonexistent/fifo"),
            Err(Error::Io { .. })
        ));
        assert!(matches!(parse_sink("stdout", "/"), Err(Error::InvalidArgument(_))));
    }

    #[test]
    fn fifo_paths() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("out");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let s = fifo.to_str().unwrap();
        assert_eq!(parse_sink("stdout", s).unwrap(), Sink::Fifo(fifo.clone()));
        assert_eq!(parse_source(s).unwrap(), Source::Fifo(fifo.clone()));
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        assert!(matches!(
            parse_source(file.to_str().unwrap()),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[tokio::test]
    async fn fifo_stdio_opens_without_a_host_reader_and_never_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let paths: Vec<_> = ["in", "out", "err"].iter().map(|n| dir.path().join(n)).collect();
        for p in &paths {
            nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        }
        let s = |i: usize| paths[i].to_str().unwrap().to_string();
        let (stdio, mut io) = ProcessIo::open(&StdioPaths {
            stdin: s(0),
            stdout: s(1),
            stderr: s(2),
        })
        .unwrap();
        // The container's stdin must be blocking even though it was opened O_NONBLOCK.
        let fl = OFlag::from_bits_truncate(fcntl(stdio.stdin.as_raw_fd(), FcntlArg::F_GETFL).unwrap());
        assert!(!fl.contains(OFlag::O_NONBLOCK));
        assert!(io.stdin_writer.is_some());
        io.close_stdin();
        assert!(io.stdin_writer.is_none());
        assert_eq!(io.keep.len(), 2);
    }

    #[tokio::test]
    async fn crilog_stdio_shares_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let log = format!("crilog://{}", dir.path().join("0.log").display());
        let (stdio, mut io) = ProcessIo::open(&StdioPaths {
            stdin: String::new(),
            stdout: log.clone(),
            stderr: log,
        })
        .unwrap();
        nix::unistd::write(&stdio.stdout, b"out\n").unwrap();
        nix::unistd::write(&stdio.stderr, b"err").unwrap();
        drop(stdio);
        drain(io.take_copies(), Duration::from_secs(5)).await;
        let text = std::fs::read_to_string(dir.path().join("0.log")).unwrap();
        let mut lines: Vec<_> = text.lines().map(|l| l.split_once(' ').unwrap().1.to_string()).collect();
        lines.sort();
        assert_eq!(lines, vec!["stderr P err", "stdout F out"]);
    }
}
