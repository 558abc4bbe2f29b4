use berth_proto::cri::{
    CgroupDriver, LinuxRuntimeConfiguration, RuntimeConfigRequest, RuntimeConfigResponse, UpdateRuntimeConfigRequest,
    UpdateRuntimeConfigResponse,
};

use super::Cri;
use crate::config;

impl Cri {
    pub fn runtime_config(&self, _req: RuntimeConfigRequest) -> RuntimeConfigResponse {
        let driver = match self.config.cgroup_driver {
            config::CgroupDriver::Cgroupfs => CgroupDriver::Cgroupfs,
            config::CgroupDriver::Systemd => CgroupDriver::Systemd,
        };
        RuntimeConfigResponse {
            linux: Some(LinuxRuntimeConfiguration {
                cgroup_driver: driver as i32,
            }),
        }
    }

    /// Takes the node's pod CIDR(s) from kubelet (comma-separated for dual-stack); CNI plugins that
    /// declare the `ipRanges` capability get them for new pods.
    pub fn update_runtime_config(
        &self,
        req: UpdateRuntimeConfigRequest,
    ) -> crate::error::Result<UpdateRuntimeConfigResponse> {
        let cidr = req
            .runtime_config
            .and_then(|c| c.network_config)
            .map(|n| n.pod_cidr)
            .unwrap_or_default();
        let mut cidrs = Vec::new();
        for c in cidr.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            c.parse::<berth_cni::Cidr>()
                .map_err(|e| crate::error::Error::InvalidArgument(format!("UpdateRuntimeConfig: pod_cidr: {e}")))?;
            cidrs.push(c.to_string());
        }
        if !cidrs.is_empty() {
            tracing::info!(?cidrs, "pod CIDR from kubelet");
            *self.pod_cidrs.lock().unwrap_or_else(|e| e.into_inner()) = cidrs;
        }
        Ok(UpdateRuntimeConfigResponse {})
    }
}
