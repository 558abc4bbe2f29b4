//! The `start` action: find the pod's shim daemon, or launch it, and print its address.
//!
//! Runs with no async runtime and no threads, so forking is safe. One daemon serves every container
//! of a pod: containers are grouped by the `io.kubernetes.cri.sandbox-id` annotation of the bundle's
//! `config.json` (or `io.containerd.runc.v2.group`, or else the container id), and the group names a
//! socket `<dir of TTRPC_ADDRESS>/s/<32 hex digits of sha256("<address>/<namespace>/<group>")>`.
//! If a live daemon listens there, `start` just reports it. Otherwise it binds the socket, re-executes
//! itself as the daemon (new session, listener on fd 3) and reports the new socket.
//!
//! `start` prints `unix://<socket>` (no newline) and writes the same to `<bundle>/address`. It prints
//! nothing else on success: containerd reads the combined output as the address.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::fcntl::{Flock, FlockArg};

use crate::args::Flags;
use crate::sys;

pub use berth_proto::contract::GROUP_ANNOTATIONS;
/// Longest unix socket path (`sun_path` is 108 bytes, with the NUL).
const MAX_SOCKET_PATH: usize = 107;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("TTRPC_ADDRESS is not set: berth-shim needs the host's events socket")]
    NoTtrpcAddress,
    #[error("socket path {0} is longer than {MAX_SOCKET_PATH} bytes")]
    SocketPathTooLong(String),
    #[error("{context} {path}: {source}", path = path.display())]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err<'a>(context: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StartError + 'a {
    move |source| StartError::Io {
        context,
        path: path.to_path_buf(),
        source,
    }
}

/// The shim group of a bundle: the first grouping annotation in its `config.json`, else `id`.
pub fn group(config_json: &Path, id: &str) -> String {
    let spec = std::fs::read_to_string(config_json)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
    let annotations = spec.as_ref().and_then(|s| s.get("annotations"));
    GROUP_ANNOTATIONS
        .iter()
        .find_map(|k| {
            annotations
                .and_then(|a| a.get(k))
                .and_then(|v| v.as_str())
                .filter(|v| !v.is_empty())
        })
        .unwrap_or(id)
        .to_string()
}

/// The socket of the shim for `group`: `<dir of ttrpc_address>/s/<hash>`.
pub fn socket_path(ttrpc_address: &str, address: &str, namespace: &str, group: &str) -> Result<PathBuf, StartError> {
    let events = Path::new(ttrpc_address.strip_prefix("unix://").unwrap_or(ttrpc_address));
    let dir = events.parent().unwrap_or(Path::new("/"));
    let path = berth_proto::contract::shim_socket(dir, address, namespace, group);
    if path.as_os_str().len() > MAX_SOCKET_PATH {
        return Err(StartError::SocketPathTooLong(path.display().to_string()));
    }
    Ok(path)
}

/// Runs `start`; returns the address to print.
pub fn run(flags: &Flags) -> Result<String, StartError> {
    let bundle = if flags.bundle.is_empty() {
        std::env::current_dir().map_err(io_err("reading the current directory", Path::new(".")))?
    } else {
        PathBuf::from(&flags.bundle)
    };
    let ttrpc_address = std::env::var("TTRPC_ADDRESS")
        .ok()
        .filter(|a| !a.is_empty())
        .ok_or(StartError::NoTtrpcAddress)?;
    let group = group(&bundle.join("config.json"), &flags.id);
    let socket = socket_path(&ttrpc_address, &flags.address, &flags.namespace, &group)?;
    let address = format!("unix://{}", socket.display());
    let dir = socket.parent().expect("a socket path has a parent");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(dir)
        .map_err(io_err("creating the socket directory", dir))?;

    // Two `start`s for one pod must not both launch a daemon. One lock for the whole directory:
    // `start` takes milliseconds, and a lock file per pod would pile up.
    let lock_path = dir.join(".start.lock");
    let lock_file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock_path)
        .map_err(io_err("opening the lock", &lock_path))?;
    let _lock = Flock::lock(lock_file, FlockArg::LockExclusive).map_err(|(_, e)| StartError::Io {
        context: "locking",
        path: lock_path.clone(),
        source: e.into(),
    })?;

    if UnixStream::connect(&socket).is_ok() {
        write_address(&bundle, &address)?;
        return Ok(address);
    }
    match std::fs::remove_file(&socket) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err("removing the stale socket", &socket)(e)),
        _ => {}
    }
    let listener = UnixListener::bind(&socket).map_err(io_err("binding", &socket))?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600)).map_err(io_err("chmod", &socket))?;

    if let Err(e) = launch(flags, &bundle, &socket, &listener) {
        let _ = std::fs::remove_file(&socket);
        return Err(e);
    }
    write_address(&bundle, &address)?;
    Ok(address)
}

/// Re-executes this binary as the daemon, in its own session, with `listener` as fd 3.
fn launch(flags: &Flags, bundle: &Path, socket: &Path, listener: &UnixListener) -> Result<(), StartError> {
    let exe = std::env::current_exe().map_err(io_err("finding this executable", Path::new("/proc/self/exe")))?;
    let mut cmd = Command::new(&exe);
    cmd.args([
        "-namespace",
        &flags.namespace,
        "-id",
        &flags.id,
        "-address",
        &flags.address,
    ]);
    if !flags.publish_binary.is_empty() {
        cmd.args(["-publish-binary", &flags.publish_binary]);
    }
    cmd.arg("-socket").arg(socket);
    if flags.debug {
        cmd.arg("-debug");
    }
    cmd.current_dir(bundle)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(daemon_log(bundle, socket)?);
    sys::daemonize_on_exec(&mut cmd, listener.as_raw_fd());
    let child = cmd.spawn().map_err(io_err("starting", &exe))?;
    adjust_oom_score(child.id());
    // Not waited for: once `start` exits, the daemon belongs to init.
    drop(child);
    Ok(())
}

/// Where the daemon's own log goes: the bundle's `log` FIFO if the host made one (containerd does,
/// and drains it), else `<socket>.log`, which the daemon removes when it exits cleanly.
fn daemon_log(bundle: &Path, socket: &Path) -> Result<File, StartError> {
    let fifo = bundle.join("log");
    if std::fs::metadata(&fifo).is_ok_and(|m| m.file_type().is_fifo()) {
        // Non-blocking: a host that stops draining the FIFO must cost log lines, not stall the shim.
        if let Ok(f) = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
        {
            return Ok(f);
        }
    }
    let path = log_path(socket);
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(&path)
        .map_err(io_err("opening the shim log", &path))
}

/// The daemon's log file when the host gives it no FIFO.
pub fn log_path(socket: &Path) -> PathBuf {
    socket.with_extension("log")
}

/// Makes the daemon one point more killable than its host (as containerd does), so the OOM killer
/// takes a shim before the host. Best effort: lowering a score needs CAP_SYS_RESOURCE, raising does not.
fn adjust_oom_score(pid: u32) {
    let Ok(own) = std::fs::read_to_string("/proc/self/oom_score_adj") else {
        return;
    };
    let Ok(own) = own.trim().parse::<i32>() else { return };
    let _ = std::fs::write(format!("/proc/{pid}/oom_score_adj"), (own + 1).min(1000).to_string());
}

/// Writes `<bundle>/address` atomically.
fn write_address(bundle: &Path, address: &str) -> Result<(), StartError> {
    let path = bundle.join("address");
    let tmp = bundle.join(".address.tmp");
    let mut f = File::create(&tmp).map_err(io_err("writing", &tmp))?;
    f.write_all(address.as_bytes()).map_err(io_err("writing", &tmp))?;
    std::fs::rename(&tmp, &path).map_err(io_err("renaming into", &path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_path_is_containerd_hash_under_ttrpc_dir() {
        // sha256("/run/berth/berth.sock/k8s.io/pod1") starts 1848d04bd152f12f556e873b5728c19a (measured
        // with containerd-shim-runc-v2 1.6, which uses the whole digest under /run/containerd/s).
        let p = socket_path("/run/berth/events.sock", "/run/berth/berth.sock", "k8s.io", "pod1").unwrap();
        assert_eq!(p, PathBuf::from("/run/berth/s/1848d04bd152f12f556e873b5728c19a"));
        let q = socket_path(
            "unix:///run/berth/events.sock",
            "/run/berth/berth.sock",
            "k8s.io",
            "pod1",
        )
        .unwrap();
        assert_eq!(p, q);
        let other = socket_path("/run/berth/events.sock", "/run/berth/berth.sock", "k8s.io", "pod2").unwrap();
        assert_ne!(p, other);
    }

    #[test]
    fn overlong_socket_path_is_refused() {
        let long = format!("/{}/events.sock", "d".repeat(90));
        assert!(matches!(
            socket_path(&long, "a", "n", "g"),
            Err(StartError::SocketPathTooLong(_))
        ));
    }

    #[test]
    fn grouping() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("config.json");
        assert_eq!(group(&cfg, "c1"), "c1");
        std::fs::write(&cfg, r#"{"annotations":{"io.kubernetes.cri.sandbox-id":"pod1"}}"#).unwrap();
        assert_eq!(group(&cfg, "c1"), "pod1");
        std::fs::write(
            &cfg,
            r#"{"annotations":{"io.kubernetes.cri.sandbox-id":"pod1","io.containerd.runc.v2.group":"g"}}"#,
        )
        .unwrap();
        assert_eq!(group(&cfg, "c1"), "g");
        std::fs::write(&cfg, r#"{"annotations":{"io.kubernetes.cri.sandbox-id":""}}"#).unwrap();
        assert_eq!(group(&cfg, "c1"), "c1");
    }

    #[test]
    fn address_file() {
        let dir = tempfile::tempdir().unwrap();
        write_address(dir.path(), "unix:///run/berth/s/x").unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("address")).unwrap(),
            "unix:///run/berth/s/x"
        );
    }
}
