use berth_proto::cri::{PortForwardRequest, PortForwardResponse};

use super::Cri;
use crate::error::{Error, Result};
use crate::store::sandbox::State;
use crate::streaming::Pending;

impl Cri {
    /// Hands out a streaming URL that forwards TCP ports of a ready pod.
    pub fn port_forward(&self, mut req: PortForwardRequest) -> Result<PortForwardResponse> {
        if let Some(p) = req.port.iter().find(|p| !(1..=65535).contains(*p)) {
            return Err(Error::InvalidArgument(format!("PortForward: invalid port {p}")));
        }
        let sb = self
            .find_sandbox(&req.pod_sandbox_id)?
            .ok_or_else(|| Error::NotFound(format!("pod sandbox {:?} not found", req.pod_sandbox_id)))?;
        if sb.state != State::Ready {
            return Err(Error::FailedPrecondition(format!("pod sandbox {} is not ready", sb.id)));
        }
        req.pod_sandbox_id = sb.id;
        Ok(PortForwardResponse {
            url: self.stream.url(Pending::PortForward(req))?,
        })
    }
}
