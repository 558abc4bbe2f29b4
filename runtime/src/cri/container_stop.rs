use std::sync::Arc;
use std::time::Duration;

use berth_proto::cri::{StopContainerRequest, StopContainerResponse};

use super::Cri;
use crate::error::{Error, Result};
use crate::store::container::State;

const SIGKILL: u32 = 9;

impl Cri {
    /// Stops a running container: its stop signal (its config's, else its image's, else SIGTERM), then SIGKILL after
    /// `timeout` seconds. Stopping a container that is not running, or unknown, succeeds.
    pub async fn stop_container(self: &Arc<Self>, req: StopContainerRequest) -> Result<StopContainerResponse> {
        let Some(id) = self.containers().resolve(&req.container_id)? else {
            return Ok(StopContainerResponse {});
        };
        self.stop_container_id(&id, req.timeout).await?;
        Ok(StopContainerResponse {})
    }

    pub(crate) async fn stop_container_id(self: &Arc<Self>, id: &str, timeout_s: i64) -> Result<()> {
        let c = self.container(id)?;
        if c.state != State::Running {
            return Ok(());
        }
        let shim = self.shim(&c.shim_address, id).await?;
        let signal = self.stop_signal(&c);
        if timeout_s > 0 {
            if let Err(e) = shim.kill(id, signal, false).await {
                tracing::debug!(id, error = %e, "stop signal not delivered");
            }
            if self.wait_exited(id, Duration::from_secs(timeout_s as u64)).await {
                return Ok(());
            }
        }
        // Killing the init of a container with its own PID namespace ends everything in it; only a
        // shared (pod or host) PID namespace needs runc's `kill --all`, which freezes the cgroup.
        let all = !self.own_pid_namespace(&c);
        match shim.kill(id, SIGKILL, all).await {
            Ok(()) | Err(Error::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        berth_image::crash::point("stop.signalled");
        if !self.wait_exited(id, Duration::from_secs(30)).await {
            return Err(Error::Internal(format!("container {id} did not exit after SIGKILL")));
        }
        Ok(())
    }

    fn own_pid_namespace(&self, c: &crate::store::container::Container) -> bool {
        let mode = c
            .config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.as_ref())
            .map(|n| n.pid)
            .unwrap_or(berth_proto::cri::NamespaceMode::Pod as i32);
        mode == berth_proto::cri::NamespaceMode::Container as i32
    }

    /// The container's stop signal; for records from before it was resolved at creation, the
    /// image's (else SIGTERM), as berth did then.
    fn stop_signal(&self, c: &crate::store::container::Container) -> u32 {
        if let Some(n) = c.stop_signal {
            return n;
        }
        let image = self.images.get(&c.image_id).ok().flatten();
        let named = image
            .as_ref()
            .and_then(|i| i.config.config.as_ref())
            .and_then(|r| r.stop_signal.as_deref());
        super::stop_signal::resolve(c.config.stop_signal, named).unwrap_or(super::stop_signal::SIGTERM)
    }

    /// Polls until the container is recorded Exited, up to `limit`.
    async fn wait_exited(&self, id: &str, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if self.containers().get(id).is_none_or(|c| c.state == State::Exited) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
