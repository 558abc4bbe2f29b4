//! Shared pieces of the container RPCs: finding handlers and shims, waiting for exits.

use std::path::PathBuf;
use std::sync::Arc;

use super::Cri;
use crate::config::Handler;
use crate::error::{Error, Result};
use crate::shims::Shim;
use crate::store::container::{Container, State};
use crate::store::now_ns;

impl Cri {
    /// The sandbox an ID (or unique prefix) names, if any.
    pub(crate) fn find_sandbox(&self, id: &str) -> Result<Option<crate::store::sandbox::Sandbox>> {
        let store = self.sandboxes();
        Ok(store.resolve(id)?.and_then(|id| store.get(&id).cloned()))
    }

    /// IDs of the containers of a sandbox.
    pub(crate) fn containers_of(&self, sandbox_id: &str) -> Vec<String> {
        self.containers()
            .all()
            .filter(|c| c.sandbox_id == sandbox_id)
            .map(|c| c.id.clone())
            .collect()
    }

    /// The handler for a pod's `runtime_handler` (empty: the default).
    pub(crate) fn handler(&self, name: &str) -> Result<(String, Handler)> {
        let name = if name.is_empty() {
            self.config.runtime.default_handler.as_str()
        } else {
            name
        };
        self.config
            .runtime
            .handlers
            .get(name)
            .map(|h| (name.to_string(), h.clone()))
            .ok_or_else(|| Error::NotFound(format!("runtime handler {name:?} is not configured")))
    }

    /// Finds a shim binary: an absolute path as is, else beside berthd (and one level up, where
    /// cargo puts binaries next to test executables), else on PATH.
    pub(crate) fn shim_binary(&self, shim: &str) -> Result<PathBuf> {
        let p = PathBuf::from(shim);
        if p.is_absolute() {
            return Ok(p);
        }
        if let Ok(exe) = std::env::current_exe() {
            for dir in exe.ancestors().skip(1).take(2) {
                let c = dir.join(shim);
                if c.is_file() {
                    return Ok(c);
                }
            }
        }
        for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
            let c = dir.join(shim);
            if c.is_file() {
                return Ok(c);
            }
        }
        Err(Error::FailedPrecondition(format!(
            "shim binary {shim:?} not found beside berthd or on PATH"
        )))
    }

    /// A connection to the shim at `address`, made once and shared.
    pub(crate) async fn shim(&self, address: &str, id: &str) -> Result<Shim> {
        self.shims.get(address, id).await
    }

    /// Launches the pod's berth-shim in the background, so that its first container finds it
    /// running. Its bundle is `<pod dir>/shim`, holding only the grouping annotation. Other shims
    /// are launched with their first container, as containerd does.
    pub(crate) fn prelaunch_pod_shim(&self, handler: &str, pod_dir: &std::path::Path, sandbox_id: &str) {
        let Ok((_, h)) = self.handler(handler) else { return };
        let Ok(bin) = self.shim_binary(&h.shim) else { return };
        if !crate::shim_client::is_berth_shim(&bin) {
            return;
        }
        let bundle = pod_dir.join("shim");
        let config = serde_json::json!({"annotations": {"io.kubernetes.cri.sandbox-id": sandbox_id}});
        if std::fs::create_dir_all(&bundle)
            .and_then(|()| std::fs::write(bundle.join("config.json"), config.to_string()))
            .is_err()
        {
            return;
        }
        self.shims.prelaunch(bin, bundle, sandbox_id);
    }

    /// Ends the pod's berth-shim if it runs no container.
    pub(crate) async fn shutdown_idle_pod_shim(&self, sandbox_id: &str) {
        self.shims.shutdown_idle_pod_shim(sandbox_id).await
    }

    pub(crate) fn events_socket(&self) -> PathBuf {
        self.shims.events_socket().to_path_buf()
    }

    /// Records an exit once (the waiter and the shim's event may both report it). A process the
    /// OOM killer ended is reported with reason `OOMKilled`, read from its cgroup, whichever shim ran it.
    pub(crate) fn record_exit(&self, id: &str, status: u32, at_ns: i64) {
        let bundle = match self.containers().get(id) {
            Some(c) if c.state != State::Exited => c.bundle.clone(),
            _ => return,
        };
        // berth-shim records a kill it saw (cgroup v2: the cgroup may be gone by now); otherwise the
        // cgroup, whichever shim ran the container, says.
        let oom = bundle.join(berth_proto::contract::OOM_MARKER).exists()
            || crate::cgroup::bundle_cgroup(&bundle).is_some_and(|p| crate::cgroup::oom_kills(&p) > 0);
        let sandbox_id = self
            .containers()
            .get(id)
            .map(|c| c.sandbox_id.clone())
            .unwrap_or_default();
        let pod_status = self.pod_status_for_event(&sandbox_id);
        let turn = self.container_turn();
        let rec = self.containers().get(id).cloned();
        let Some(mut c) = rec else { return };
        if c.state == State::Exited {
            return;
        }
        if oom && c.reason.is_empty() {
            c.reason = "OOMKilled".into();
        }
        let was_running = c.state == State::Running;
        let sandbox = c.sandbox_id.clone();
        c.exited(status, if at_ns > 0 { at_ns } else { now_ns() });
        tracing::info!(id, exit_code = c.exit_code, "container exited");
        let store = match self.save_container(&turn, c) {
            Ok(store) => store,
            Err(e) => {
                tracing::error!(id, error = %e, "cannot record container exit");
                return;
            }
        };
        // A container not yet recorded Running gets its event from StartContainer, after STARTED.
        if was_running {
            self.emit_locked(
                &store,
                id,
                &sandbox,
                berth_proto::cri::ContainerEventType::ContainerStoppedEvent,
                pod_status,
            );
        }
    }

    /// Waits in the background for the container's process to exit and records it.
    pub(crate) fn watch_exit(self: &Arc<Self>, c: &Container, shim: Shim) {
        let this = self.clone();
        let id = c.id.clone();
        tokio::spawn(async move {
            match shim.wait(&id, "").await {
                Ok(w) => {
                    let at = w
                        .exited_at
                        .as_ref()
                        .map(|t| t.seconds * 1_000_000_000 + i64::from(t.nanos))
                        .unwrap_or(0);
                    this.record_exit(&id, w.exit_status, at);
                }
                Err(e) => {
                    tracing::warn!(%id, error = %e, "lost the wait on a container; its shim will report the exit")
                }
            }
        });
    }
}
