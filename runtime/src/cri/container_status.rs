use std::collections::HashMap;

use berth_proto::cri::{ContainerStatus, ContainerStatusRequest, ContainerStatusResponse, ImageSpec, Mount};

use super::Cri;
use crate::error::{Error, Result};
use crate::store::container::Container;

impl Cri {
    pub(crate) fn container(&self, id: &str) -> Result<Container> {
        let store = self.containers();
        store
            .resolve(id)?
            .and_then(|id| store.get(&id).cloned())
            .ok_or_else(|| Error::NotFound(format!("container {id:?} not found")))
    }

    pub fn container_status(&self, req: ContainerStatusRequest) -> Result<ContainerStatusResponse> {
        let c = self.container(&req.container_id)?;
        let mut info = HashMap::new();
        if req.verbose {
            let doc = serde_json::json!({
                "sandboxID": c.sandbox_id,
                "pid": c.pid,
                "bundle": c.bundle,
                "runtimeHandler": c.handler,
                "shim": c.shim_address,
                "config": c.config,
            });
            info.insert("info".to_string(), doc.to_string());
        }
        Ok(ContainerStatusResponse {
            status: Some(status(&c)),
            info,
        })
    }
}

pub fn status(c: &Container) -> ContainerStatus {
    ContainerStatus {
        id: c.id.clone(),
        metadata: c.config.metadata.clone(),
        state: c.state.cri() as i32,
        created_at: c.created_at,
        started_at: c.started_at,
        finished_at: c.finished_at,
        exit_code: c.exit_code,
        image: Some(ImageSpec {
            image: c.image_ref.clone(),
            ..Default::default()
        }),
        image_ref: c.image_id.clone(),
        reason: c.reason.clone(),
        message: c.message.clone(),
        labels: c.config.labels.clone(),
        annotations: c.config.annotations.clone(),
        mounts: c
            .config
            .mounts
            .iter()
            .map(|m| Mount {
                container_path: m.container_path.clone(),
                host_path: m.host_path.clone(),
                readonly: m.readonly,
                propagation: m.propagation,
                recursive_read_only: m.recursive_read_only,
                image: m.image.clone(),
                image_sub_path: m.image_sub_path.clone(),
                ..Default::default()
            })
            .collect(),
        log_path: c.log_path.display().to_string(),
        image_id: c.image_id.clone(),
        user: c.user.as_ref().map(|u| berth_proto::cri::ContainerUser {
            linux: Some(berth_proto::cri::LinuxContainerUser {
                uid: i64::from(u.uid),
                gid: i64::from(u.gid),
                // The primary group first, then the additional ones, as the process has them.
                supplemental_groups: std::iter::once(u.gid)
                    .chain(u.additional_gids.iter().copied().filter(|g| *g != u.gid))
                    .map(i64::from)
                    .collect(),
            }),
        }),
        // The signal StopContainer sends (old records: the config's, when it named one).
        stop_signal: c
            .stop_signal
            .map(|n| super::stop_signal::to_cri(n) as i32)
            .unwrap_or(c.config.stop_signal),
        resources: c.config.linux.as_ref().and_then(|l| l.resources.clone()).map(|r| {
            berth_proto::cri::ContainerResources {
                linux: Some(r),
                windows: None,
            }
        }),
    }
}
