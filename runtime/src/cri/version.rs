use berth_proto::cri::{VersionRequest, VersionResponse};

use super::Cri;

/// The CRI API version berth speaks.
pub const CRI_API_VERSION: &str = "v1";
pub const RUNTIME_NAME: &str = "berth";

impl Cri {
    pub fn version(&self, _req: VersionRequest) -> VersionResponse {
        VersionResponse {
            // `version` is the version of the kubelet runtime API, which is "0.1.0" for every runtime.
            version: "0.1.0".into(),
            runtime_name: RUNTIME_NAME.into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            runtime_api_version: CRI_API_VERSION.into(),
        }
    }
}
