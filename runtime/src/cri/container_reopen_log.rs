use berth_proto::cri::{ReopenContainerLogRequest, ReopenContainerLogResponse};

use super::Cri;
use crate::crilog;
use crate::error::{Error, Result};
use crate::store::container::State;

impl Cri {
    /// kubelet rotated the log (renamed it): open a new file at the path and write there from now
    /// on. No line is lost: the switch happens between two entries.
    pub async fn reopen_container_log(&self, req: ReopenContainerLogRequest) -> Result<ReopenContainerLogResponse> {
        let c = self.container(&req.container_id)?;
        if c.state != State::Running {
            return Err(Error::FailedPrecondition(format!("container {} is not running", c.id)));
        }
        let Some(handle) = self.logs.lock().await.get(&c.id).cloned() else {
            // The shim writes this log: it reopens it.
            let shim = self.shim(&c.shim_address, &c.id).await?;
            shim.reopen_log(&c.id).await?;
            return Ok(ReopenContainerLogResponse {});
        };
        let fresh = crilog::open_log(&c.log_path)
            .await
            .map_err(Error::io(format!("reopen log {}", c.log_path.display())))?;
        *handle.lock().await = fresh;
        Ok(ReopenContainerLogResponse {})
    }
}
