use berth_proto::cri::{RunPodSandboxRequest, RunPodSandboxResponse};

use super::{Cri, sandbox_setup};
use crate::error::{Error, Result};
use crate::store::sandbox::{Sandbox, State, name_key};
use crate::store::{new_id, now_ns};

impl Cri {
    /// Creates a pod sandbox: reserves its name, makes its namespaces and files, records it Ready.
    /// Any failure undoes what was done and releases the name.
    pub async fn run_pod_sandbox(&self, req: RunPodSandboxRequest) -> Result<RunPodSandboxResponse> {
        let cfg = req
            .config
            .ok_or_else(|| Error::InvalidArgument("RunPodSandbox: config is required".into()))?;
        let meta = cfg
            .metadata
            .clone()
            .ok_or_else(|| Error::InvalidArgument("RunPodSandbox: config.metadata is required".into()))?;
        if meta.name.is_empty() {
            return Err(Error::InvalidArgument(
                "RunPodSandbox: metadata.name is required".into(),
            ));
        }
        self.handler(&req.runtime_handler)?;
        // Pod sysctls go into each container's spec (there is no infra container); refuse bad ones
        // before anything is made.
        let ns = sandbox_setup::namespace_options(&cfg);
        if let Some(l) = &cfg.linux {
            crate::oci::sysctl::validate(
                &l.sysctls,
                ns.ipc != berth_proto::cri::NamespaceMode::Node as i32,
                ns.network != berth_proto::cri::NamespaceMode::Node as i32,
            )?;
        }
        let id = new_id()?;
        let key = name_key(&meta);
        self.sandboxes().reserve(&key, &id)?;
        let dir = self.config.state.join("pods").join(&id);
        let shm_size = self.config.pod.shm_size;
        let cfg2 = cfg.clone();
        let dir2 = dir.clone();
        let pod_init = self.shim_binary("berth-shim").ok();
        let created =
            tokio::task::spawn_blocking(move || sandbox_setup::create(&dir2, &cfg2, shm_size, pod_init.as_deref()))
                .await
                .map_err(|e| Error::Internal(format!("sandbox setup task: {e}")));
        let res = match created {
            Ok(Ok(r)) => r,
            Ok(Err(e)) | Err(e) => {
                self.sandboxes().release(&key, &id);
                return Err(e);
            }
        };
        let sb = Sandbox {
            id: id.clone(),
            config: cfg,
            runtime_handler: req.runtime_handler,
            state: State::Ready,
            created_at: now_ns(),
            dir,
            namespaces: res.namespaces,
            shm: res.shm,
            pid_holder: res.pid_holder,
        };
        if let Err(e) = self.sandboxes().put(sb.clone()) {
            let _ = sandbox_setup::release_sandbox(&sb);
            self.sandboxes().release(&key, &id);
            return Err(e);
        }
        tracing::info!(pod = %key, %id, "pod sandbox ready");
        // As containerd: a pod is created and started in one step.
        self.emit(
            &id,
            &id,
            berth_proto::cri::ContainerEventType::ContainerCreatedEvent,
            None,
        );
        self.emit(
            &id,
            &id,
            berth_proto::cri::ContainerEventType::ContainerStartedEvent,
            None,
        );
        Ok(RunPodSandboxResponse { pod_sandbox_id: id })
    }
}
