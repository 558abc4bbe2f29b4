use berth_proto::cri::{CgroupDriver, LinuxRuntimeConfiguration, RuntimeConfigRequest, RuntimeConfigResponse};

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
}
