use std::sync::Arc;
use std::time::Duration;

use berth_proto::cri::{ExecSyncRequest, ExecSyncResponse};
use tokio::io::AsyncReadExt as _;

use super::Cri;
use crate::error::{Error, Result};
use crate::store::container::State;
use crate::store::new_id;

/// Output kept per stream; more is dropped (kubelet probes print little).
const MAX_OUTPUT: usize = 16 << 20;

impl Cri {
    /// Runs a command in a running container and returns its output and exit code. With a timeout
    /// (the request's, or the client's gRPC deadline, whichever ends first), a command still running
    /// when it expires is killed and the call fails with DeadlineExceeded. The exec runs in a task of
    /// its own, so a client that goes away still leaves it cleaned up when it ends.
    pub async fn exec_sync(
        self: &Arc<Self>,
        req: ExecSyncRequest,
        deadline: Option<Duration>,
    ) -> Result<ExecSyncResponse> {
        if req.cmd.is_empty() {
            return Err(Error::InvalidArgument("ExecSync: cmd is empty".into()));
        }
        let c = self.container(&req.container_id)?;
        if c.state != State::Running {
            return Err(Error::FailedPrecondition(format!("container {} is not running", c.id)));
        }
        let shim = self.shim(&c.shim_address, &c.id).await?;
        let exec_id = format!("exec-{}", &new_id()?[..16]);
        let dir = c.bundle.join(&exec_id);
        std::fs::create_dir_all(&dir).map_err(Error::io(format!("create {}", dir.display())))?;
        let timeout = (req.timeout > 0).then(|| Duration::from_secs(req.timeout as u64));
        let limit = match (timeout, deadline) {
            (Some(t), Some(d)) => Some(t.min(d)),
            (t, d) => t.or(d),
        };
        let this = self.clone();
        tokio::spawn(async move {
            let res = this.exec_in(&shim, &c, &exec_id, &dir, &req, limit).await;
            let _ = shim.delete_exec(&c.id, &exec_id).await;
            let _ = std::fs::remove_dir_all(&dir);
            res
        })
        .await
        .map_err(|e| Error::Internal(format!("exec task: {e}")))?
    }

    async fn exec_in(
        &self,
        shim: &crate::shims::Shim,
        c: &crate::store::container::Container,
        exec_id: &str,
        dir: &std::path::Path,
        req: &ExecSyncRequest,
        limit: Option<Duration>,
    ) -> Result<ExecSyncResponse> {
        let id = c.id.as_str();
        // The exec runs as the container's process does: same user, env, cwd and capabilities.
        let spec = crate::oci::load_bundle_spec(&c.bundle)?;
        let process = crate::oci::exec_process(&spec, &req.cmd, false)?;
        let (out, err) = (dir.join("stdout"), dir.join("stderr"));
        for f in [&out, &err] {
            nix::unistd::mkfifo(f.as_path(), nix::sys::stat::Mode::from_bits_truncate(0o600))
                .map_err(|e| Error::Internal(format!("mkfifo {}: {e}", f.display())))?;
        }
        let read_out = tokio::spawn(read_fifo(out.clone()));
        let read_err = tokio::spawn(read_fifo(err.clone()));
        let stdio = crate::shim_client::ExecStdio {
            stdin: None,
            stdout: Some(out),
            stderr: Some(err),
        };
        let exec = crate::shim_client::exec_request(id, exec_id, &process, stdio)?;
        shim.exec(&exec).await?;
        shim.start(id, exec_id).await?;
        let wait = shim.wait(id, exec_id);
        let waited = if let Some(limit) = limit {
            match tokio::time::timeout(limit, wait).await {
                Ok(w) => w?,
                Err(_) => {
                    let _ = shim.kill_exec(id, exec_id, 9).await;
                    read_out.abort();
                    read_err.abort();
                    return Err(Error::DeadlineExceeded(format!(
                        "command {:?} timed out after {limit:?}",
                        req.cmd
                    )));
                }
            }
        } else {
            wait.await?
        };
        let stdout = tokio::time::timeout(Duration::from_secs(5), read_out)
            .await
            .ok()
            .and_then(|r| r.ok())
            .unwrap_or_default();
        let stderr = tokio::time::timeout(Duration::from_secs(5), read_err)
            .await
            .ok()
            .and_then(|r| r.ok())
            .unwrap_or_default();
        Ok(ExecSyncResponse {
            stdout,
            stderr,
            exit_code: waited.exit_status as i32,
        })
    }
}

/// Everything written to a FIFO until its writers close it.
async fn read_fifo(path: std::path::PathBuf) -> Vec<u8> {
    let Ok(rx) = tokio::net::unix::pipe::OpenOptions::new().open_receiver(&path) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let _ = rx.take(MAX_OUTPUT as u64).read_to_end(&mut out).await;
    out
}
