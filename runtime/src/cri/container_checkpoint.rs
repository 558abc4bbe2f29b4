//! CheckpointContainer (forensic container checkpointing, KEP-2008): what berth can say today.
//!
//! A checkpoint is CRIU's dump of the running container (`runc checkpoint`). Before anything is
//! attempted, berth asks CRIU itself whether it can work on this host (`criu check`, once per
//! daemon): Debian 12's CRIU 3.17 cannot initialise on kernels whose vDSO layout it does not know
//! (6.18 here), and no runtime can checkpoint where CRIU cannot, so that answer is
//! FailedPrecondition with CRIU's own reason. Writing the archive and restoring it are not built
//! yet: where CRIU works, the call answers Unimplemented, naming what is missing.

use berth_proto::cri::{CheckpointContainerRequest, CheckpointContainerResponse};

use super::Cri;
use crate::error::{Error, Result};
use crate::store::container::State;

/// `criu check`'s verdict on this host: Ok, or why CRIU cannot work here.
static CRIU: tokio::sync::OnceCell<std::result::Result<(), String>> = tokio::sync::OnceCell::const_new();

async fn criu_check() -> std::result::Result<(), String> {
    let out = tokio::process::Command::new("criu").arg("check").output().await;
    match out {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err("criu is not installed (Debian package criu)".into()),
        Err(e) => Err(format!("cannot run criu: {e}")),
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => {
            let text = String::from_utf8_lossy(&o.stderr).to_string() + &String::from_utf8_lossy(&o.stdout);
            let first = text
                .lines()
                .find(|l| l.contains("Error"))
                .or(text.lines().next())
                .unwrap_or("");
            Err(format!("`criu check` fails on this host: {}", first.trim()))
        }
    }
}

impl Cri {
    pub async fn checkpoint_container(&self, req: CheckpointContainerRequest) -> Result<CheckpointContainerResponse> {
        let c = self.container(&req.container_id)?;
        if c.state != State::Running {
            return Err(Error::FailedPrecondition(format!(
                "CheckpointContainer: container {} is not running",
                c.id
            )));
        }
        if req.location.is_empty() {
            return Err(Error::InvalidArgument(
                "CheckpointContainer: location (the archive to write) is required".into(),
            ));
        }
        if let Err(why) = CRIU.get_or_init(criu_check).await {
            return Err(Error::FailedPrecondition(format!(
                "CheckpointContainer {}: checkpoints need CRIU, and {why}",
                c.id
            )));
        }
        Err(Error::Unimplemented(
            "CheckpointContainer (CRIU works here, but berth writes no checkpoint archives yet)",
        ))
    }
}
