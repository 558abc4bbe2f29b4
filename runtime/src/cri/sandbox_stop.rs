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
        let Some(id) = self.sandboxes().resolve(&req.pod_sandbox_id)? else {
            return Ok(StopPodSandboxResponse {});
        };
        let Some(mut sb) = self.sandboxes().get(&id).cloned() else {
            return Ok(StopPodSandboxResponse {});
        };
        // Its containers are stopped first (kubelet has usually done so; this is the forced path).
        let ids: Vec<String> = self
            .containers()
            .all()
            .filter(|c| c.sandbox_id == id)
            .map(|c| c.id.clone())
            .collect();
        for cid in ids {
            self.stop_container_id(&cid, 0).await?;
        }
        let sb2 = sb.clone();
        tokio::task::spawn_blocking(move || sandbox_setup::release_network(&sb2))
            .await
            .map_err(|e| Error::Internal(format!("sandbox stop task: {e}")))??;
        sb.stop();
        self.sandboxes().put(sb)?;
        tracing::info!(%id, "pod sandbox stopped");
        Ok(StopPodSandboxResponse {})
    }
}
