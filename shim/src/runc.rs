//! A typed client for the OCI runtime binary (`runc` or a compatible one such as `crun`).
//!
//! Every failure carries the command, its exit status and what it printed, so an error that reaches
//! kubelet explains itself. `create` and `exec` hand the container's stdio to runc (runc passes it on to
//! the container), so runc is told to write its own messages to a JSON log file (`--log`), and those
//! messages are what such a failure reports as `stderr`.
//!
//! Commands are spawned with `std::process::Command` and their exits come from the shim's [`Reaper`]:
//! nothing here calls `wait`.

use std::ffi::OsString;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio as StdStdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;

use crate::reaper::Reaper;
use crate::sys;

/// Most of a command's output kept for an error message.
const OUTPUT_LIMIT: usize = 64 * 1024;
/// How long to wait for a command's output pipes to close once it has exited.
const OUTPUT_GRACE: Duration = Duration::from_secs(2);

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot run {binary}: {source}", binary = binary.display())]
    Spawn {
        binary: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("`{binary} {command}` exited with status {status}: {}", summary(stderr, stdout), binary = binary.display())]
    CommandFailed {
        binary: PathBuf,
        /// The subcommand and its arguments, without the global options.
        command: String,
        status: u32,
        stdout: String,
        stderr: String,
    },
    #[error("`{binary} {command}`: its exit was never reported", binary = binary.display())]
    Lost { binary: PathBuf, command: String },
    #[error("{path}: {source}", path = path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// Whether runc failed because the container does not exist (already deleted).
    pub fn is_missing(&self) -> bool {
        self.stderr().is_some_and(|s| s.contains("does not exist"))
    }

    /// The command's error output (runc's log messages for `create` and `exec`), if it ran and failed.
    pub fn stderr(&self) -> Option<&str> {
        match self {
            Error::CommandFailed { stderr, .. } => Some(stderr),
            _ => None,
        }
    }
}

fn summary<'a>(stderr: &'a str, stdout: &'a str) -> &'a str {
    let s = stderr.trim();
    if s.is_empty() {
        let o = stdout.trim();
        if o.is_empty() { "no output" } else { o }
    } else {
        s
    }
}

/// The three fds a container process gets as stdin, stdout and stderr.
#[derive(Debug)]
pub struct Stdio {
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

/// What `runc checkpoint` is asked to do (containerd's `CheckpointOptions`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checkpoint {
    pub image_path: PathBuf,
    pub work_path: PathBuf,
    pub leave_running: bool,
    pub tcp_established: bool,
    pub external_unix_sockets: bool,
    pub shell_job: bool,
    pub file_locks: bool,
    pub cgroups_mode: String,
    pub empty_namespaces: Vec<String>,
}

/// Global options, from the task's runtime options (`containerd.runc.v1.Options`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The runtime binary: a name looked up on `PATH`, or a path.
    pub binary: PathBuf,
    /// runc's state directory (`--root`).
    pub root: PathBuf,
    pub systemd_cgroup: bool,
    pub no_pivot_root: bool,
    pub no_new_keyring: bool,
}

/// A runc client bound to one state root and one bundle (whose `log.json` gets runc's messages).
#[derive(Debug, Clone)]
pub struct Runc {
    config: Config,
    log: PathBuf,
    reaper: Arc<Reaper>,
}

impl Runc {
    pub fn new(config: Config, bundle: &Path, reaper: Arc<Reaper>) -> Runc {
        Runc {
            config,
            log: bundle.join("log.json"),
            reaper,
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// `runc create`: makes the container and its init process (stopped before the user's program).
    pub async fn create(
        &self,
        id: &str,
        bundle: &Path,
        pid_file: &Path,
        stdio: Stdio,
        console_socket: Option<&Path>,
    ) -> Result<()> {
        let mut args = vec![
            "create".into(),
            "--bundle".into(),
            bundle.into(),
            "--pid-file".into(),
            pid_file.into(),
        ];
        if let Some(sock) = console_socket {
            args.extend(["--console-socket".into(), sock.into()]);
        }
        if self.config.no_pivot_root {
            args.push("--no-pivot".into());
        }
        if self.config.no_new_keyring {
            args.push("--no-new-keyring".into());
        }
        args.push(id.into());
        self.run(args, Some(stdio)).await.map(drop)
    }

    /// `runc start`: runs the user's program in a created container.
    pub async fn start(&self, id: &str) -> Result<()> {
        self.run(vec!["start".into(), id.into()], None).await.map(drop)
    }

    /// `runc exec --detach`: starts the process described by the OCI process JSON in `process_file`.
    pub async fn exec(
        &self,
        id: &str,
        process_file: &Path,
        pid_file: &Path,
        stdio: Stdio,
        console_socket: Option<&Path>,
    ) -> Result<()> {
        let mut args: Vec<OsString> = vec![
            "exec".into(),
            "--process".into(),
            process_file.into(),
            "--detach".into(),
            "--pid-file".into(),
            pid_file.into(),
        ];
        if let Some(sock) = console_socket {
            args.extend(["--console-socket".into(), sock.into()]);
        }
        args.push(id.into());
        self.run(args, Some(stdio)).await.map(drop)
    }

    /// `runc kill [--all] <id> <signal>`.
    pub async fn kill(&self, id: &str, signal: u32, all: bool) -> Result<()> {
        let mut args: Vec<OsString> = vec!["kill".into()];
        if all {
            args.push("--all".into());
        }
        args.extend([id.into(), signal.to_string().into()]);
        self.run(args, None).await.map(drop)
    }

    /// `runc delete [--force] <id>`.
    pub async fn delete(&self, id: &str, force: bool) -> Result<()> {
        let mut args: Vec<OsString> = vec!["delete".into()];
        if force {
            args.push("--force".into());
        }
        args.push(id.into());
        self.run(args, None).await.map(drop)
    }

    /// `runc checkpoint`: CRIU dumps the container's processes into `how.image_path`.
    pub async fn checkpoint(&self, id: &str, how: &Checkpoint) -> Result<()> {
        let mut args: Vec<OsString> = vec![
            "checkpoint".into(),
            "--image-path".into(),
            how.image_path.clone().into(),
            "--work-path".into(),
            how.work_path.clone().into(),
        ];
        for (on, flag) in [
            (how.leave_running, "--leave-running"),
            (how.tcp_established, "--tcp-established"),
            (how.external_unix_sockets, "--ext-unix-sk"),
            (how.shell_job, "--shell-job"),
            (how.file_locks, "--file-locks"),
        ] {
            if on {
                args.push(flag.into());
            }
        }
        if !how.cgroups_mode.is_empty() {
            args.extend(["--manage-cgroups-mode".into(), how.cgroups_mode.clone().into()]);
        }
        for ns in &how.empty_namespaces {
            args.extend(["--empty-ns".into(), ns.into()]);
        }
        args.push(id.into());
        self.run(args, None).await.map(drop)
    }

    /// `runc restore --detach`: CRIU brings the processes dumped in `image_path` back as the
    /// container `id` of `bundle`, with `stdio` in place of the stdio they had.
    pub async fn restore(
        &self,
        id: &str,
        bundle: &Path,
        image_path: &Path,
        work_path: &Path,
        pid_file: &Path,
        stdio: Stdio,
    ) -> Result<()> {
        let mut args: Vec<OsString> = vec![
            "restore".into(),
            "--detach".into(),
            "--image-path".into(),
            image_path.into(),
            "--work-path".into(),
            work_path.into(),
            "--bundle".into(),
            bundle.into(),
            "--pid-file".into(),
            pid_file.into(),
        ];
        if self.config.no_pivot_root {
            args.push("--no-pivot".into());
        }
        args.push(id.into());
        self.run(args, Some(stdio)).await.map(drop)
    }

    /// `runc update --resources <file> <id>`, the file holding OCI `LinuxResources` JSON.
    pub async fn update(&self, id: &str, resources_file: &Path) -> Result<()> {
        self.run(
            vec!["update".into(), "--resources".into(), resources_file.into(), id.into()],
            None,
        )
        .await
        .map(drop)
    }

    fn global_args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            "--root".into(),
            self.config.root.clone().into(),
            "--log".into(),
            self.log.clone().into(),
            "--log-format".into(),
            "json".into(),
        ];
        if self.config.systemd_cgroup {
            args.push("--systemd-cgroup".into());
        }
        args
    }

    /// Runs one command. With `stdio`, the command gets those fds (and its messages are taken from the
    /// log file); without, its output is captured. Returns what it printed on stdout.
    async fn run(&self, args: Vec<OsString>, stdio: Option<Stdio>) -> Result<String> {
        let command = args.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" ");
        let binary = self.config.binary.clone();
        let mut cmd = Command::new(&binary);
        cmd.args(self.global_args()).args(&args);
        sys::kill_with_parent(&mut cmd);
        let log_offset = std::fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0);
        let captured = match stdio {
            Some(s) => {
                cmd.stdin(StdStdio::from(s.stdin))
                    .stdout(StdStdio::from(s.stdout))
                    .stderr(StdStdio::from(s.stderr));
                None
            }
            None => {
                let io_err = |source| Error::Io {
                    path: "pipe".into(),
                    source,
                };
                let (out_r, out_w) = pipe().map_err(io_err)?;
                let (err_r, err_w) = pipe().map_err(io_err)?;
                cmd.stdin(StdStdio::null())
                    .stdout(StdStdio::from(out_w))
                    .stderr(StdStdio::from(err_w));
                Some((out_r, err_r))
            }
        };

        // No await between spawning and subscribing: the reaper cannot run in between.
        let since = Instant::now();
        let child = cmd.spawn().map_err(|source| Error::Spawn {
            binary: binary.clone(),
            source,
        })?;
        let exit = self.reaper.subscribe(child.id() as i32, since);
        // Close our copies of the child's ends, so the pipes reach EOF when it exits.
        drop(cmd);
        drop(child);

        let (status, stdout, stderr) = match captured {
            None => {
                let exit = exit.await.map_err(|_| Error::Lost {
                    binary: binary.clone(),
                    command: command.clone(),
                })?;
                let stderr = if exit.status == 0 {
                    String::new()
                } else {
                    read_log_messages(&self.log, log_offset)
                };
                (exit.status, String::new(), stderr)
            }
            Some((out_r, err_r)) => {
                let (status, stdout, mut stderr) =
                    captured_output(exit, out_r, err_r).await.map_err(|_| Error::Lost {
                        binary: binary.clone(),
                        command: command.clone(),
                    })?;
                if status != 0 && stderr.trim().is_empty() {
                    stderr = read_log_messages(&self.log, log_offset);
                }
                (status, stdout, stderr)
            }
        };
        if status != 0 {
            return Err(Error::CommandFailed {
                binary,
                command,
                status,
                stdout,
                stderr,
            });
        }
        Ok(stdout)
    }
}

/// A command's exit status with what it wrote on stdout and stderr (output still open after the exit,
/// a child holding the pipes, is waited for at most OUTPUT_GRACE). Err: its exit was lost.
async fn captured_output<E>(
    exit: impl std::future::Future<Output = std::result::Result<crate::reaper::Exit, E>> + Unpin,
    out_r: OwnedFd,
    err_r: OwnedFd,
) -> std::result::Result<(u32, String, String), E> {
    let mut exit = exit;
    let reading = async { tokio::join!(read_limited(out_r), read_limited(err_r)) };
    tokio::pin!(reading);
    let mut output = None;
    let exit = tokio::select! {
        e = &mut exit => e,
        o = &mut reading => {
            output = Some(o);
            (&mut exit).await
        }
    }?;
    let (stdout, stderr) = match output {
        Some(o) => o,
        None => tokio::time::timeout(OUTPUT_GRACE, reading).await.unwrap_or_default(),
    };
    Ok((exit.status, stdout, stderr))
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?)
}

/// Reads a pipe to EOF, keeping at most [`OUTPUT_LIMIT`] bytes.
async fn read_limited(fd: OwnedFd) -> String {
    let Ok(mut rx) = tokio::net::unix::pipe::Receiver::from_owned_fd(fd) else {
        return String::new();
    };
    let mut kept = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match rx.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = OUTPUT_LIMIT.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    String::from_utf8_lossy(&kept).into_owned()
}

/// The messages runc appended to its JSON log file after `offset`, one per line.
fn read_log_messages(path: &Path, offset: u64) -> String {
    let mut text = String::new();
    let Ok(mut f) = std::fs::File::open(path) else {
        return text;
    };
    if f.seek(SeekFrom::Start(offset)).is_err() || f.take(OUTPUT_LIMIT as u64).read_to_string(&mut text).is_err() {
        return String::new();
    }
    log_messages(&text)
}

/// Extracts `msg` from runc's JSON log lines (`{"level":"error","msg":"...","time":"..."}`); lines that
/// are not JSON are kept as they are.
fn log_messages(text: &str) -> String {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| match serde_json::from_str::<serde_json::Value>(line) {
            Ok(v) => v.get("msg").and_then(|m| m.as_str()).unwrap_or(line).to_string(),
            Err(_) => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_become_messages() {
        let text = "{\"level\":\"error\",\"msg\":\"container_linux.go:380: starting container process caused: exec: \\\"nope\\\": executable file not found in $PATH\",\"time\":\"2024-01-01T00:00:00Z\"}\nplain text\n\n";
        assert_eq!(
            log_messages(text),
            "container_linux.go:380: starting container process caused: exec: \"nope\": executable file not found in $PATH\nplain text"
        );
    }

    #[test]
    fn failure_message_names_command_status_and_output() {
        let e = Error::CommandFailed {
            binary: "runc".into(),
            command: "kill c1 9".into(),
            status: 1,
            stdout: String::new(),
            stderr: "container not running\n".into(),
        };
        assert_eq!(
            e.to_string(),
            "`runc kill c1 9` exited with status 1: container not running"
        );
        let e = Error::CommandFailed {
            binary: "runc".into(),
            command: "start c1".into(),
            status: 2,
            stdout: String::new(),
            stderr: String::new(),
        };
        assert_eq!(e.to_string(), "`runc start c1` exited with status 2: no output");
    }
}
