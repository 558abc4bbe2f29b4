//! Exec and Attach on streams that SPDY or WebSocket set up.
//!
//! Exec runs a new process through the container's shim with FIFOs in a directory of the bundle:
//! `stdin` (the shim holds a writer too, until berthd sends CloseIO at the client's end of stdin),
//! `stdout`, `stderr`. A TTY exec gets one output FIFO (the terminal) and resize messages become
//! ResizePty. Should the client vanish, the process is killed, and the FIFOs and the exec record go.
//!
//! Attach follows the container's CRI log from its current end (decoding `F`/`P` entries back to
//! the raw stdout and stderr bytes) until the container exits, and writes stdin into the stdin FIFO
//! the shim was given for a container created with `stdin = true`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use berth_proto::cri::{AttachRequest, ExecRequest};
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _, AsyncWriteExt as _};
use tokio::sync::{mpsc, watch};

use super::{Backend, Out, Pending, Target, until};
use crate::error::{Error, Result};
use crate::shim_client::ExecStdio;
use crate::shims::Shim;

/// How long output may keep coming after the process exited (children holding its stdout).
const DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// The streams of one exec or attach session.
#[derive(Debug)]
pub(crate) struct StreamIo {
    pub stdout: Option<Out>,
    pub stderr: Option<Out>,
    pub error: Out,
    /// v4 and later: the error stream carries a metav1.Status JSON; before, only an error's text.
    pub status_v4: bool,
    pub stdin: Option<mpsc::Receiver<Vec<u8>>>,
    pub resize: Option<mpsc::Receiver<Vec<u8>>>,
    pub gone: watch::Receiver<bool>,
}

/// How a session ended.
#[derive(Debug)]
enum Outcome {
    Exited(i32),
    Failed(Error),
}

pub(crate) async fn run<B: Backend>(backend: &Arc<B>, pending: Pending, mut io: StreamIo) {
    let outcome = match pending {
        Pending::Exec(req) => match stream_exec(backend.as_ref(), &req, &mut io).await {
            Ok(code) => Outcome::Exited(code),
            Err(e) => Outcome::Failed(e),
        },
        Pending::Attach(req) => match stream_attach(backend.as_ref(), &req, &mut io).await {
            Ok(()) => Outcome::Exited(0),
            Err(e) => Outcome::Failed(e),
        },
        Pending::PortForward(_) => return,
    };
    match &outcome {
        Outcome::Failed(e) => tracing::info!(error = %e, "exec/attach stream failed"),
        Outcome::Exited(code) => tracing::info!(exit_code = code, "exec/attach stream done"),
    }
    let status = status_message(&outcome, io.status_v4);
    if !status.is_empty() {
        io.error.write(&status).await;
    }
    for out in [&io.stdout, &io.stderr].into_iter().flatten() {
        out.fin().await;
    }
    io.error.fin().await;
}

/// What the error stream carries at the end: v4 a metav1.Status as kubelet writes it, before v4 the
/// error's text (nothing on success).
fn status_message(outcome: &Outcome, v4: bool) -> Vec<u8> {
    let doc = match outcome {
        Outcome::Exited(0) => serde_json::json!({"metadata": {}, "status": "Success"}),
        Outcome::Exited(code) => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("command terminated with non-zero exit code: exit status {code}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        Outcome::Failed(e) => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("Internal error occurred: error executing command in container: {e}"),
            "reason": "InternalError",
            "details": {"causes": [{"message": format!("error executing command in container: {e}")}]},
            "code": 500,
        }),
    };
    if v4 {
        return serde_json::to_vec(&doc).unwrap_or_default();
    }
    match outcome {
        Outcome::Exited(0) => Vec::new(),
        _ => doc["message"].as_str().unwrap_or_default().as_bytes().to_vec(),
    }
}

/// A terminal size message from the resize stream.
#[derive(Debug, serde::Deserialize)]
struct Size {
    #[serde(rename = "Width")]
    width: u16,
    #[serde(rename = "Height")]
    height: u16,
}

/// Forwards resize messages (JSON objects, back to back) to the shim until the stream ends.
async fn forward_resizes(mut rx: mpsc::Receiver<Vec<u8>>, shim: Shim, id: String, exec_id: String) {
    let mut buf: Vec<u8> = Vec::new();
    while let Some(chunk) = rx.recv().await {
        buf.extend(chunk);
        let mut used = 0;
        let mut it = serde_json::Deserializer::from_slice(&buf).into_iter::<Size>();
        loop {
            match it.next() {
                Some(Ok(s)) => {
                    used = it.byte_offset();
                    if let Err(e) = shim.resize_pty(&id, &exec_id, s.width.into(), s.height.into()).await {
                        tracing::debug!(error = %e, "ResizePty");
                    }
                }
                Some(Err(e)) if e.is_eof() => break,
                Some(Err(_)) => {
                    // Not a size: drop what is buffered and go on.
                    used = buf.len();
                    break;
                }
                None => break,
            }
        }
        buf.drain(..used);
    }
}

/// Copies a FIFO to an output stream until every writer closed it.
async fn copy_out(fifo: PathBuf, out: Out) {
    let Ok(mut rx) = tokio::net::unix::pipe::OpenOptions::new().open_receiver(&fifo) else {
        return;
    };
    let mut buf = vec![0u8; 32 << 10];
    loop {
        match rx.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if !out.write(&buf[..n]).await {
                    return;
                }
            }
        }
    }
}

/// How long the stdin FIFO may wait for its reader: containerd's shim opens it in the background.
const STDIN_READER_WAIT: Duration = Duration::from_secs(10);

/// Copies the client's stdin into a FIFO; returns at the end of the client's stdin.
async fn copy_in(mut rx: mpsc::Receiver<Vec<u8>>, fifo: &Path) -> Result<()> {
    let since = std::time::Instant::now();
    let mut tx = loop {
        match tokio::net::unix::pipe::OpenOptions::new().open_sender(fifo) {
            Ok(tx) => break tx,
            // No reader yet (ENXIO): the shim is still opening its end.
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) && since.elapsed() < STDIN_READER_WAIT => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => return Err(Error::io(format!("open {}", fifo.display()))(e)),
        }
    };
    while let Some(data) = rx.recv().await {
        if tx.write_all(&data).await.is_err() {
            break;
        }
    }
    Ok(())
}

fn mkfifo(p: &Path) -> Result<()> {
    nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .map_err(|e| Error::Internal(format!("mkfifo {}: {e}", p.display())))
}

/// Runs `req.cmd` in the container with the session's streams; returns its exit code.
async fn stream_exec<B: Backend>(backend: &B, req: &ExecRequest, io: &mut StreamIo) -> Result<i32> {
    let t = backend.target(&req.container_id).await?;
    let exec_id = format!("exec-{}", &crate::store::new_id()?[..16]);
    let dir = t.bundle.join(&exec_id);
    std::fs::create_dir_all(&dir).map_err(Error::io(format!("create {}", dir.display())))?;
    let res = exec_streams(&t, &exec_id, &dir, req, io).await;
    let _ = t.shim.delete_exec(&t.id, &exec_id).await;
    let _ = std::fs::remove_dir_all(&dir);
    res
}

/// The exec's FIFOs in `dir`, one copy task per output, wired to the session's streams.
fn exec_fifos(dir: &Path, io: &StreamIo) -> Result<(ExecStdio, Vec<tokio::task::JoinHandle<()>>)> {
    let mut stdio = ExecStdio::default();
    let mut copies = Vec::new();
    for (name, out) in [("stdout", io.stdout.clone()), ("stderr", io.stderr.clone())] {
        let Some(out) = out else { continue };
        let fifo = dir.join(name);
        mkfifo(&fifo)?;
        copies.push(tokio::spawn(copy_out(fifo.clone(), out)));
        if name == "stdout" {
            stdio.stdout = Some(fifo);
        } else {
            stdio.stderr = Some(fifo);
        }
    }
    if io.stdin.is_some() {
        let fifo = dir.join("stdin");
        mkfifo(&fifo)?;
        stdio.stdin = Some(fifo);
    }
    Ok((stdio, copies))
}

async fn exec_streams(t: &Target, exec_id: &str, dir: &Path, req: &ExecRequest, io: &mut StreamIo) -> Result<i32> {
    let (shim, id) = (&t.shim, t.id.as_str());
    let spec = crate::oci::load_bundle_spec(&t.bundle)?;
    let process = crate::oci::exec_process(&spec, &req.cmd, req.tty)?;
    let (stdio, copies) = exec_fifos(dir, io)?;
    let stdin_fifo = stdio.stdin.clone();
    shim.exec(&crate::shim_client::exec_request(id, exec_id, &process, stdio)?)
        .await?;
    // The shim opens the FIFOs (and holds a stdin writer of its own) at Start.
    shim.start(id, exec_id).await?;
    if let (Some(rx), Some(fifo)) = (io.stdin.take(), stdin_fifo) {
        let (shim, id, exec_id) = (shim.clone(), id.to_string(), exec_id.to_string());
        tokio::spawn(async move {
            match copy_in(rx, &fifo).await {
                Ok(()) => {
                    let _ = shim.close_io(&id, &exec_id).await;
                }
                Err(e) => tracing::debug!(error = %e, "exec stdin"),
            }
        });
    }
    if let Some(rx) = io.resize.take() {
        tokio::spawn(forward_resizes(rx, shim.clone(), id.to_string(), exec_id.to_string()));
    }
    let mut gone = io.gone.clone();
    let waited = tokio::select! {
        w = shim.wait(id, exec_id) => w?,
        _ = until(&mut gone) => {
            tracing::info!(id, exec_id, "exec client went away: killing the process");
            let _ = shim.kill_exec(id, exec_id, 9).await;
            let w = shim.wait(id, exec_id).await?;
            for c in &copies {
                c.abort();
            }
            return Ok(w.exit_status as i32);
        }
    };
    let drain = async {
        for c in copies {
            let _ = c.await;
        }
    };
    if tokio::time::timeout(DRAIN_LIMIT, drain).await.is_err() {
        tracing::info!(id, exec_id, "exec output still open after the process exited");
    }
    Ok(waited.exit_status as i32)
}

/// Streams the container's output (from its CRI log) and stdin until it exits or the client goes.
async fn stream_attach<B: Backend>(backend: &B, req: &AttachRequest, io: &mut StreamIo) -> Result<()> {
    let t = backend.target(&req.container_id).await?;
    if (io.stdout.is_some() || io.stderr.is_some()) && t.log_path.as_os_str().is_empty() {
        return Err(Error::FailedPrecondition(format!(
            "container {} has no log to attach to",
            t.id
        )));
    }
    // Output from here on: open the log at its end before any of the client's input goes in.
    let log = open_at_end(&t.log_path).await;
    if let Some(rx) = io.stdin.take() {
        let fifo = t.bundle.join("stdin");
        if !t.stdin || !fifo.exists() {
            return Err(Error::FailedPrecondition(format!(
                "container {} was not created with stdin",
                t.id
            )));
        }
        let (shim, id, once) = (t.shim.clone(), t.id.clone(), t.stdin_once);
        tokio::spawn(async move {
            if copy_in(rx, &fifo).await.is_ok() && once {
                let _ = shim.close_io(&id, "").await;
            }
        });
    }
    if let Some(rx) = io.resize.take() {
        tokio::spawn(forward_resizes(rx, t.shim.clone(), t.id.clone(), String::new()));
    }
    let follow = follow_log(t.log_path.clone(), log, io.stdout.clone(), io.stderr.clone());
    tokio::pin!(follow);
    let mut gone = io.gone.clone();
    loop {
        tokio::select! {
            _ = &mut follow => return Ok(()),
            _ = until(&mut gone) => return Ok(()),
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                if !backend.is_running(&t.id) {
                    // Let the last lines of the log through.
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    let _ = tokio::time::timeout(Duration::from_millis(10), &mut follow).await;
                    return Ok(());
                }
            }
        }
    }
}

/// The log file, positioned at its end, with its inode (to notice rotation).
async fn open_at_end(path: &Path) -> Option<(tokio::fs::File, u64)> {
    open_at(path, std::io::SeekFrom::End(0)).await
}

async fn open_at(path: &Path, pos: std::io::SeekFrom) -> Option<(tokio::fs::File, u64)> {
    let mut f = tokio::fs::File::open(path).await.ok()?;
    f.seek(pos).await.ok()?;
    let ino = f
        .metadata()
        .await
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .ok()?;
    Some((f, ino))
}

/// Follows a CRI log from `file` (or from the start of the file at `path`, once there is one),
/// writing entries' content to stdout or stderr. Picks up a rotated log (a new file at the path).
/// Returns only when the outputs are gone.
async fn follow_log(path: PathBuf, mut file: Option<(tokio::fs::File, u64)>, stdout: Option<Out>, stderr: Option<Out>) {
    if stdout.is_none() && stderr.is_none() {
        return std::future::pending().await;
    }
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 32 << 10];
    loop {
        if file.is_none() {
            // There was no log when the attach began (a shim creates it at the first output): all
            // of it is new, so it is read from its start.
            file = open_at(&path, std::io::SeekFrom::Start(0)).await;
            if file.is_none() {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        }
        let Some((f, ino)) = file.as_mut() else { continue };
        let n = f.read(&mut buf).await.unwrap_or(0);
        if n == 0 {
            // At the end: a rotation leaves a new file at the path.
            let rotated = tokio::fs::metadata(&path)
                .await
                .map(|m| std::os::unix::fs::MetadataExt::ino(&m) != *ino)
                .unwrap_or(false);
            if rotated {
                if let Ok(f) = tokio::fs::File::open(&path).await {
                    let ino = f
                        .metadata()
                        .await
                        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
                        .unwrap_or(0);
                    file = Some((f, ino));
                }
                continue;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        pending.extend(&buf[..n]);
        while let Some(nl) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=nl).collect();
            let Some((stream, content)) = berth_proto::crilog::decode_record(&line[..line.len() - 1]) else {
                continue;
            };
            let out = if stream == "stderr" { &stderr } else { &stdout };
            if let Some(out) = out
                && !out.write(&content).await
            {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        let v: serde_json::Value = serde_json::from_slice(&status_message(&Outcome::Exited(3), true)).unwrap();
        assert_eq!(v["status"], "Failure");
        assert_eq!(v["reason"], "NonZeroExitCode");
        assert_eq!(v["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(v["details"]["causes"][0]["message"], "3");
        let v: serde_json::Value = serde_json::from_slice(&status_message(&Outcome::Exited(0), true)).unwrap();
        assert_eq!(v["status"], "Success");
        assert!(status_message(&Outcome::Exited(0), false).is_empty());
        let m = status_message(&Outcome::Failed(Error::NotFound("container x".into())), false);
        assert!(String::from_utf8(m).unwrap().contains("container x"));
    }
}
