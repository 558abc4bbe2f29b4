use berth_proto::cri::{AttachRequest, AttachResponse};

use super::Cri;
use crate::error::{Error, Result};
use crate::store::container::State;
use crate::streaming::Pending;

impl Cri {
    /// Hands out a streaming URL on which the client attaches to a running container's main process.
    pub fn attach(&self, mut req: AttachRequest) -> Result<AttachResponse> {
        if !(req.stdin || req.stdout || req.stderr) {
            return Err(Error::InvalidArgument(
                "Attach: one of stdin, stdout, or stderr must be set".into(),
            ));
        }
        let c = self.container(&req.container_id)?;
        if c.state != State::Running {
            return Err(Error::FailedPrecondition(format!("container {} is not running", c.id)));
        }
        if req.stdin && !c.config.stdin {
            return Err(Error::FailedPrecondition(format!(
                "container {} was not created with stdin",
                c.id
            )));
        }
        req.tty = c.config.tty;
        if req.tty {
            req.stderr = false;
        }
        req.container_id = c.id;
        Ok(AttachResponse {
            url: self.stream.url(Pending::Attach(req))?,
        })
    }
}
