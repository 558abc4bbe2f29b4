use berth_proto::cri::{ExecRequest, ExecResponse};

use super::Cri;
use crate::error::{Error, Result};
use crate::store::container::State;
use crate::streaming::Pending;

impl Cri {
    /// Hands out a streaming URL on which the client runs `cmd` in a running container.
    pub fn exec(&self, mut req: ExecRequest) -> Result<ExecResponse> {
        if req.cmd.is_empty() {
            return Err(Error::InvalidArgument("Exec: cmd is empty".into()));
        }
        if !(req.stdin || req.stdout || req.stderr) {
            return Err(Error::InvalidArgument(
                "Exec: one of stdin, stdout, or stderr must be set".into(),
            ));
        }
        if req.tty && req.stderr {
            return Err(Error::InvalidArgument(
                "Exec: tty and stderr cannot both be true (a terminal has one output)".into(),
            ));
        }
        let c = self.container(&req.container_id)?;
        if c.state != State::Running {
            return Err(Error::FailedPrecondition(format!("container {} is not running", c.id)));
        }
        req.container_id = c.id;
        Ok(ExecResponse {
            url: self.stream.url(Pending::Exec(req))?,
        })
    }
}
