use std::sync::Arc;

use berth_proto::cri::{RemoveContainerRequest, RemoveContainerResponse};

use super::Cri;
use crate::error::{Error, Result};
use crate::store::container::State;

impl Cri {
    /// Deletes the container's task. A cgroup left frozen by a racing `kill --all` makes runc call
    /// the container "paused" and refuse: thaw it, kill what is left, and try again.
    async fn delete_task(&self, shim: &crate::shims::Shim, c: &crate::store::container::Container) -> Result<()> {
        let mut attempt = 0;
        loop {
            match shim.delete(&c.id).await {
                Ok(_) | Err(Error::NotFound(_)) => return Ok(()),
                Err(e) if attempt < 3 => {
                    attempt += 1;
                    tracing::warn!(id = %c.id, error = %e, attempt, "task delete failed; thawing and retrying");
                    if let Some(path) = crate::cgroup::bundle_cgroup(&c.bundle) {
                        crate::cgroup::thaw(&path);
                    }
                    let _ = shim.kill(&c.id, 9, true).await;
                    if let Some(path) = crate::cgroup::bundle_cgroup(&c.bundle) {
                        crate::cgroup::thaw(&path);
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(100 * attempt)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Removes a container: its task in the shim, its rootfs snapshot, its bundle and its record. A
    /// running container is killed first (the CRI asks for a forced removal); an unknown one succeeds.
    pub async fn remove_container(self: &Arc<Self>, req: RemoveContainerRequest) -> Result<RemoveContainerResponse> {
        let Some(id) = self.containers().resolve(&req.container_id)? else {
            return Ok(RemoveContainerResponse {});
        };
        self.remove_container_id(&id).await?;
        Ok(RemoveContainerResponse {})
    }

    pub(crate) async fn remove_container_id(self: &Arc<Self>, id: &str) -> Result<()> {
        let mut c = self.container(id)?;
        if c.state == State::Running {
            // The CRI: "If the container is running, the container must be forcibly removed."
            // As containerd does, it is killed at once (no grace period) and then removed.
            tracing::info!(id, "removing a running container: killing it first");
            self.stop_container_id(id, 0).await?;
            c = self.container(id)?;
        }
        if !c.shim_address.is_empty() {
            match self.shim(&c.shim_address, id).await {
                Ok(shim) => {
                    self.delete_task(&shim, &c).await?;
                    berth_image::crash::point("remove_container.task_deleted");
                    let others = self
                        .containers()
                        .all()
                        .any(|o| o.id != id && o.shim_address == c.shim_address && o.state != State::Exited);
                    if !others {
                        let _ = shim.shutdown(id).await;
                        self.shims.forget(&c.shim_address).await;
                    }
                }
                Err(e) => tracing::warn!(id, error = %e, "shim unreachable while removing; cleaning up anyway"),
            }
        }
        self.logs.lock().await.remove(id);
        self.cleanup_bundle(&c.bundle, &c.snapshot).await;
        berth_image::crash::point("remove_container.bundle_removed");
        self.delete_container(&self.container_turn(), id)?;
        tracing::info!(id, "container removed");
        self.emit(
            id,
            &c.sandbox_id,
            berth_proto::cri::ContainerEventType::ContainerDeletedEvent,
            None,
        );
        Ok(())
    }
}
