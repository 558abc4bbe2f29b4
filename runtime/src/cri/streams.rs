//! The core's side of the streaming server: what an exec, attach or port-forward session needs.

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::store::container::State;
use crate::store::sandbox::{State as SandboxState, host_network};
use crate::streaming::{Backend, Target};

use super::Cri;

impl Backend for Cri {
    async fn target(&self, container_id: &str) -> Result<Target> {
        let c = self.container(container_id)?;
        if c.state != State::Running {
            return Err(Error::FailedPrecondition(format!("container {} is not running", c.id)));
        }
        let shim = self.shim(&c.shim_address, &c.id).await?;
        Ok(Target {
            stdin: c.config.stdin,
            stdin_once: c.config.stdin_once,
            id: c.id,
            bundle: c.bundle,
            log_path: c.log_path,
            shim,
        })
    }

    fn is_running(&self, container_id: &str) -> bool {
        self.container(container_id).is_ok_and(|c| c.state == State::Running)
    }

    fn pod_netns(&self, sandbox_id: &str) -> Result<Option<PathBuf>> {
        let sb = self
            .find_sandbox(sandbox_id)?
            .ok_or_else(|| Error::NotFound(format!("pod sandbox {sandbox_id:?} not found")))?;
        if sb.state != SandboxState::Ready {
            return Err(Error::FailedPrecondition(format!("pod sandbox {} is not ready", sb.id)));
        }
        if host_network(&sb.config) {
            return Ok(None);
        }
        sb.namespace_path("net")
            .map(|p| Some(p.to_path_buf()))
            .ok_or_else(|| Error::FailedPrecondition(format!("pod sandbox {} has no network namespace", sb.id)))
    }
}
