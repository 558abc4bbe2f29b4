use std::collections::HashMap;

use berth_proto::cri::{
    LinuxPodSandboxStatus, Namespace, PodIp, PodSandboxNetworkStatus, PodSandboxState, PodSandboxStatus,
    PodSandboxStatusRequest, PodSandboxStatusResponse,
};

use super::Cri;
use crate::error::{Error, Result};
use crate::store::now_ns;
use crate::store::sandbox::{Sandbox, State};

pub fn cri_state(s: State) -> PodSandboxState {
    match s {
        State::Ready => PodSandboxState::SandboxReady,
        State::NotReady => PodSandboxState::SandboxNotready,
    }
}

impl Cri {
    pub fn pod_sandbox_status(&self, req: PodSandboxStatusRequest) -> Result<PodSandboxStatusResponse> {
        let sb = self
            .find_sandbox(&req.pod_sandbox_id)?
            .ok_or_else(|| Error::NotFound(format!("pod sandbox {:?} not found", req.pod_sandbox_id)))?;
        let mut info = HashMap::new();
        if req.verbose {
            let doc = serde_json::json!({
                "config": sb.config,
                "namespaces": sb.namespaces,
                "dir": sb.dir,
                "shm": sb.shm,
                "network": sb.network,
                "infraContainer": null,
            });
            info.insert("info".to_string(), doc.to_string());
        }
        Ok(PodSandboxStatusResponse {
            status: Some(status(&sb)),
            info,
            containers_statuses: vec![],
            timestamp: now_ns(),
        })
    }
}

/// The pod's primary IP (IPv4 when it has one) and the others.
fn network_status(sb: &Sandbox) -> PodSandboxNetworkStatus {
    let ips = sb.network.as_ref().map(|n| n.ips()).unwrap_or_default();
    let mut it = ips.iter().map(|ip| ip.to_string());
    PodSandboxNetworkStatus {
        ip: it.next().unwrap_or_default(),
        additional_ips: it.map(|ip| PodIp { ip }).collect(),
    }
}

pub(crate) fn status(sb: &Sandbox) -> PodSandboxStatus {
    PodSandboxStatus {
        id: sb.id.clone(),
        metadata: sb.config.metadata.clone(),
        state: cri_state(sb.state) as i32,
        created_at: sb.created_at,
        network: Some(network_status(sb)),
        linux: Some(LinuxPodSandboxStatus {
            namespaces: Some(Namespace {
                options: Some(crate::store::sandbox::namespace_options(&sb.config)),
            }),
        }),
        labels: sb.config.labels.clone(),
        annotations: sb.config.annotations.clone(),
        runtime_handler: sb.runtime_handler.clone(),
    }
}
