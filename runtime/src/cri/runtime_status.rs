use std::collections::HashMap;

use berth_proto::cri::{
    RuntimeCondition, RuntimeFeatures, RuntimeHandler, RuntimeHandlerFeatures, RuntimeStatus, StatusRequest,
    StatusResponse,
};

use super::Cri;

pub const RUNTIME_READY: &str = "RuntimeReady";
pub const NETWORK_READY: &str = "NetworkReady";

impl Cri {
    /// Runtime conditions, reported as they are: berth cannot run pods or give them networks yet,
    /// so both conditions are false, with the reason.
    pub fn status(&self, req: StatusRequest) -> StatusResponse {
        let conditions = vec![
            RuntimeCondition {
                r#type: RUNTIME_READY.into(),
                status: false,
                reason: "ContainersNotImplemented".into(),
                message: "berth serves images and pod sandboxes; containers are not implemented yet".into(),
            },
            RuntimeCondition {
                r#type: NETWORK_READY.into(),
                status: false,
                reason: "NetworkPluginNotReady".into(),
                message: "berth: pod networking is not implemented yet".into(),
            },
        ];
        let mut info = HashMap::new();
        if req.verbose {
            info.insert(
                "config".to_string(),
                serde_json::to_string(&self.config).unwrap_or_default(),
            );
        }
        StatusResponse {
            status: Some(RuntimeStatus { conditions }),
            info,
            runtime_handlers: vec![RuntimeHandler {
                name: String::new(),
                features: Some(RuntimeHandlerFeatures {
                    recursive_read_only_mounts: false,
                    user_namespaces: false,
                }),
            }],
            features: Some(RuntimeFeatures {
                supplemental_groups_policy: false,
            }),
        }
    }
}
