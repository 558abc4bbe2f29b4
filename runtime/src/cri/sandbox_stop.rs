use berth_proto::cri::{StopPodSandboxRequest, StopPodSandboxResponse};

use super::{Cri, sandbox_setup};
use crate::error::{Error, Result};

impl Cri {
    /// Stops a sandbox: tears its network down and marks it NotReady. Stopping a stopped or unknown
    /// sandbox succeeds, as kubelet expects.
    pub async fn stop_pod_sandbox(
        self: &std::sync::Arc<Self>,
        req: StopPodSandboxRequest,
    ) -> Result<StopPodSandboxResponse> {
        let Some(mut sb) = self.find_sandbox(&req.pod_sandbox_id)? else {
            return Ok(StopPodSandboxResponse {});
        };
        let id = sb.id.clone();
        // Its containers are stopped first (kubelet has usually done so; this is the forced path).
        for cid in self.containers_of(&id) {
            self.stop_container_id(&cid, 0).await?;
        }
        self.shutdown_idle_pod_shim(&id).await;
        let sb2 = sb.clone();
        let net = self.network.clone();
        tokio::task::spawn_blocking(move || sandbox_setup::release_network(&sb2, &net))
            .await
            .map_err(|e| Error::Internal(format!("sandbox stop task: {e}")))??;
        let was_ready = sb.state == crate::store::sandbox::State::Ready;
        sb.stop();
        sb.network = None;
        self.save_sandbox(sb)?;
        tracing::info!(%id, "pod sandbox stopped");
        if was_ready {
            self.emit(
                &id,
                &id,
                berth_proto::cri::ContainerEventType::ContainerStoppedEvent,
                None,
            );
        }
        Ok(StopPodSandboxResponse {})
    }
}
