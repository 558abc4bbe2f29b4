use berth_proto::cri::{RemovePodSandboxRequest, RemovePodSandboxResponse};

use super::{Cri, sandbox_setup};
use crate::error::{Error, Result};

impl Cri {
    /// Removes a sandbox and everything it holds (stopping it first if needed). Removing an unknown
    /// sandbox succeeds.
    pub async fn remove_pod_sandbox(
        self: &std::sync::Arc<Self>,
        req: RemovePodSandboxRequest,
    ) -> Result<RemovePodSandboxResponse> {
        let Some(sb) = self.find_sandbox(&req.pod_sandbox_id)? else {
            return Ok(RemovePodSandboxResponse {});
        };
        let id = sb.id.clone();
        for cid in self.containers_of(&id) {
            self.stop_container_id(&cid, 0).await?;
            self.remove_container_id(&cid).await?;
        }
        berth_image::crash::point("remove_pod.containers_removed");
        let mut last = super::sandbox_status::status(&sb);
        last.state = berth_proto::cri::PodSandboxState::SandboxNotready as i32;
        self.shutdown_idle_pod_shim(&id).await;
        // If teardown fails, the record stays (NotReady) so kubelet's retry finds it again.
        let net = self.network.clone();
        tokio::task::spawn_blocking(move || sandbox_setup::release_sandbox(&sb, &net))
            .await
            .map_err(|e| Error::Internal(format!("sandbox remove task: {e}")))??;
        berth_image::crash::point("remove_pod.network_detached");
        self.delete_sandbox(&id)?;
        tracing::info!(%id, "pod sandbox removed");
        self.emit(
            &id,
            &id,
            berth_proto::cri::ContainerEventType::ContainerDeletedEvent,
            Some(last),
        );
        Ok(RemovePodSandboxResponse {})
    }
}
