use std::collections::HashMap;

use berth_proto::cri::{
    RuntimeCondition, RuntimeFeatures, RuntimeHandler, RuntimeHandlerFeatures, RuntimeStatus, StatusRequest,
    StatusResponse,
};

use super::Cri;

pub const RUNTIME_READY: &str = "RuntimeReady";
pub const NETWORK_READY: &str = "NetworkReady";

impl Cri {
    fn runtime_condition(&self) -> RuntimeCondition {
        let problem = match self.handler("") {
            Ok((name, h)) => match self.shim_binary(&h.shim) {
                Err(e) => Some(format!("default runtime handler {name:?}: {e}")),
                Ok(_) if !on_path(&h.runtime) => Some(format!(
                    "default runtime handler {name:?}: OCI runtime {:?} not found",
                    h.runtime
                )),
                Ok(_) => None,
            },
            Err(e) => Some(e.to_string()),
        };
        RuntimeCondition {
            r#type: RUNTIME_READY.into(),
            status: problem.is_none(),
            reason: if problem.is_some() {
                "RuntimeNotInstalled".into()
            } else {
                String::new()
            },
            message: problem.unwrap_or_default(),
        }
    }

    /// RuntimeReady when the default handler's shim and OCI runtime are installed; NetworkReady when
    /// pods can get a network (with CNI: a usable configuration exists, read afresh on each call).
    pub fn status(&self, req: StatusRequest) -> StatusResponse {
        let conditions = vec![
            self.runtime_condition(),
            match self.network.ready() {
                Ok(()) => RuntimeCondition {
                    r#type: NETWORK_READY.into(),
                    status: true,
                    reason: String::new(),
                    message: String::new(),
                },
                Err(message) => RuntimeCondition {
                    r#type: NETWORK_READY.into(),
                    status: false,
                    reason: "NetworkPluginNotReady".into(),
                    message: format!("Network plugin returns error: {message}"),
                },
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
            runtime_handlers: self.runtime_handlers(),
            features: Some(RuntimeFeatures {
                // Strict and Merge are honoured, and ContainerStatus reports the user.
                supplemental_groups_policy: true,
                // A pod with its own user namespace has its own network namespace too.
                user_namespaces_host_network: false,
            }),
        }
    }
}

impl Cri {
    /// Every configured runtime handler by name, and the default one once more under the empty
    /// name (what a pod that names no RuntimeClass gets), as containerd lists them. Features are
    /// what berth makes itself for every handler (the mounts before runc runs): recursive read-only
    /// mounts where the kernel has mount_setattr(2), user namespaces where mounts on berth's root
    /// can be ID-mapped (kubelet then neither asks for them nor admits pods that need them).
    fn runtime_handlers(&self) -> Vec<RuntimeHandler> {
        let features = || {
            Some(RuntimeHandlerFeatures {
                recursive_read_only_mounts: self.host.recursive_readonly,
                user_namespaces: self.host.user_namespaces.is_ok(),
            })
        };
        std::iter::once(String::new())
            .chain(self.config.runtime.handlers.keys().cloned())
            .map(|name| RuntimeHandler {
                name,
                features: features(),
            })
            .collect()
    }
}

fn on_path(bin: &str) -> bool {
    let p = std::path::Path::new(bin);
    if p.is_absolute() {
        return p.is_file();
    }
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).any(|d| d.join(bin).is_file())
}
