//! The CRI core: one file per RPC (`<object>_<verb>.rs`), each adding a method to [`Cri`].
//! These methods take and return CRI messages and the runtime's [`Error`](crate::error::Error);
//! the tonic adapters in `server/` only unwrap requests and map errors.

use std::sync::{Arc, Mutex, MutexGuard};

use berth_image::Images;

use crate::config::Config;
use crate::store::container::{Container, ContainerFiles, ContainerStore, State as ContainerState};
use crate::store::sandbox::SandboxStore;

mod container_attach;
mod container_checkpoint;
mod container_create;
mod container_events;
mod container_exec;
mod container_exec_sync;
mod container_list;
mod container_remove;
mod container_reopen_log;
mod container_start;
mod container_stats;
pub mod container_status;
mod container_stop;
mod container_support;
mod container_update;
mod image_convert;
mod image_fs_info;
mod image_list;
mod image_pull;
mod image_remove;
mod image_status;
mod metrics;
mod runtime_config;
mod runtime_status;
mod sandbox_list;
mod sandbox_port_forward;
mod sandbox_remove;
mod sandbox_run;
pub mod sandbox_setup;
mod sandbox_stats;
mod sandbox_status;
mod sandbox_stop;
mod sandbox_update;
mod stop_signal;
mod streams;
#[cfg(test)]
mod tests;
mod version;

/// The image reference of a request's `ImageSpec`; `InvalidArgument` when missing or empty.
pub(crate) fn image_ref(spec: Option<berth_proto::cri::ImageSpec>, rpc: &str) -> crate::error::Result<String> {
    match spec {
        Some(s) if !s.image.is_empty() => Ok(s.image),
        Some(_) => Err(crate::error::Error::InvalidArgument(format!(
            "{rpc}: image reference is empty"
        ))),
        None => Err(crate::error::Error::InvalidArgument(format!(
            "{rpc}: image spec is required"
        ))),
    }
}

/// Longest metadata name, namespace or uid taken: Kubernetes' own limit for object names (a DNS
/// subdomain); longer ones are no kubelet's.
pub(crate) const MAX_NAME: usize = 253;

/// A pod's or container's metadata field: at most [`MAX_NAME`] bytes, no control characters.
pub(crate) fn check_name_field(rpc: &str, what: &str, v: &str) -> crate::error::Result<()> {
    if v.len() > MAX_NAME || v.chars().any(char::is_control) {
        return Err(crate::error::Error::InvalidArgument(format!(
            "{rpc}: metadata.{what} must be at most {MAX_NAME} bytes without control characters (got {} bytes)",
            v.len()
        )));
    }
    Ok(())
}

/// Everything the CRI services need: configuration and the stores.
#[derive(Debug)]
pub struct Cri {
    pub(crate) config: Config,
    pub(crate) images: Arc<Images>,
    sandboxes: Mutex<SandboxStore>,
    containers: Mutex<ContainerStore>,
    container_files: ContainerFiles,
    /// Held by whoever changes a container record, from reading it to publishing it: changes take
    /// turns (none is lost) while reads, which take only `containers`, never wait on the disk.
    container_writes: Mutex<()>,
    /// The same for pod records: writers take turns, reads never wait on the disk.
    sandbox_writes: Mutex<()>,
    /// Launching and reaching shims.
    pub(crate) shims: crate::shims::Shims,
    /// Open CRI log files berthd writes (for shims that hand it FIFOs), by container ID.
    pub(crate) logs: tokio::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<tokio::fs::File>>>>,
    /// The host's facts that containers' specs depend on (read at start).
    pub(crate) host: Arc<crate::oci::Host>,
    /// Pod networking.
    pub(crate) network: Arc<berth_cni::Network>,
    /// The node's pod CIDRs, as kubelet last set them (UpdateRuntimeConfig).
    pub(crate) pod_cidrs: Mutex<Vec<String>>,
    /// The kept CPU reading of each container (time ns, cumulative CPU ns, the rate it gave), for
    /// nano-cores.
    pub(crate) cpu_samples: Mutex<std::collections::HashMap<String, container_stats::CpuSample>>,
    /// Lifecycle events for GetContainerEvents subscribers.
    pub(crate) events: crate::events::Events,
    /// Streaming URLs handed out and waiting for their clients.
    pub(crate) stream: Arc<crate::streaming::Registry>,
}

/// A writer's turn on the container records ([`Cri::container_turn`]).
pub(crate) struct WriteTurn<'a>(#[allow(dead_code)] MutexGuard<'a, ()>);

impl Cri {
    /// Opens the stores under the configured root. Blocking (it scans the stores).
    pub fn open(config: Config) -> crate::error::Result<Cri> {
        Cri::open_with(config, Arc::new(crate::shims::Binaries))
    }

    /// [`Cri::open`] with shims launched and reached through `launcher` (tests give a fake).
    pub fn open_with(config: Config, launcher: Arc<dyn crate::shims::Launcher>) -> crate::error::Result<Cri> {
        let mut opts = berth_image::Options::new(config.root.join("image"));
        opts.hosts_dir = Some(config.registry.config_path.clone());
        opts.max_concurrent_downloads = config.registry.max_concurrent_downloads;
        let images = Arc::new(Images::open(opts)?);
        let sandboxes = SandboxStore::open(&config.root.join("pods"))?;
        let containers = ContainerStore::open(&config.root.join("containers"), |sid| {
            sandboxes.get(sid).map(|s| s.name_key())
        })?;
        let network = Arc::new(berth_cni::Network::new(config.network.clone(), &config.state)?);
        sandbox_setup::remove_orphans(&config.state.join("pods"), &|id| sandboxes.get(id).is_some(), &network);
        // Addresses left by a crash between allocation and the pod record are freed.
        network.ipam().gc(&|owner| {
            sandboxes
                .get(owner)
                .is_some_and(|sb| matches!(sb.network, Some(berth_cni::Attachment::Bridge(_))))
        });
        container_create::remove_orphan_bundles(&config.state.join("containers"), images.overlay(), &|id| {
            containers.get(id).is_some()
        });
        let container_files = ContainerFiles::new(&config.root.join("containers"));
        let host = crate::oci::Host::probe(&config.root, &config.state);
        if let Err(why) = &host.user_namespaces {
            tracing::warn!(%why, "pods cannot have user namespaces on this host (hostUsers: false is refused)");
        }
        let shims = crate::shims::Shims::new(launcher, config.state.join("events.sock"));
        Ok(Cri {
            container_files,
            network,
            pod_cidrs: Mutex::new(Vec::new()),
            config,
            images,
            sandboxes: Mutex::new(sandboxes),
            containers: Mutex::new(containers),
            container_writes: Mutex::new(()),
            sandbox_writes: Mutex::new(()),
            shims,
            logs: tokio::sync::Mutex::new(std::collections::HashMap::new()),
            host: Arc::new(host),
            cpu_samples: Mutex::new(std::collections::HashMap::new()),
            events: Default::default(),
            stream: Default::default(),
        })
    }

    /// Starts what runs beside the RPCs: the shims' events endpoint, and a watch on every container
    /// that was running when berthd last stopped (its exit, if it happened meanwhile, is recorded).
    /// Returns the events server, which serves until dropped.
    pub async fn start_background(
        self: &Arc<Self>,
    ) -> crate::error::Result<berth_proto::shim::ttrpc::asynchronous::Server> {
        let (mut server, mut exits) = crate::shim_client::serve_events(&self.events_socket(), &self.bundles_dir())?;
        server
            .start()
            .await
            .map_err(|e| crate::error::Error::Internal(format!("start events server: {e}")))?;
        let this = self.clone();
        tokio::spawn(async move {
            while let Some(e) = exits.recv().await {
                if e.exec_id.is_empty() || e.exec_id == e.container_id {
                    this.record_exit(&e.container_id, e.exit_status, e.exited_at_ns);
                }
            }
        });
        let running: Vec<_> = self
            .containers()
            .all()
            .filter(|c| c.state == ContainerState::Running)
            .cloned()
            .collect();
        for c in running {
            match self.shim(&c.shim_address, &c.id).await {
                Ok(shim) => match shim.state(&c.id).await {
                    Ok(st) if st.status.value() == 3 => {
                        let at = st
                            .exited_at
                            .as_ref()
                            .map(|t| t.seconds * 1_000_000_000 + i64::from(t.nanos))
                            .unwrap_or(0);
                        self.record_exit(&c.id, st.exit_status, at);
                    }
                    Ok(_) => {
                        if self
                            .handler(&c.handler)
                            .is_ok_and(|(_, h)| h.log_writer == crate::config::LogWriter::Berthd)
                        {
                            self.drain_shim_log(&c);
                            if !c.log_path.as_os_str().is_empty()
                                && let Err(e) = self.copy_output(&c).await
                            {
                                tracing::warn!(id = %c.id, error = %e, "cannot resume copying container output");
                            }
                        }
                        self.watch_exit(&c, shim)
                    }
                    Err(e) => {
                        tracing::warn!(id = %c.id, error = %e, "running container unknown to its shim");
                        self.record_exit(&c.id, 255, 0);
                    }
                },
                Err(e) => {
                    tracing::warn!(id = %c.id, error = %e, "shim of a running container is gone");
                    self.record_exit(&c.id, 255, 0);
                }
            }
        }
        Ok(server)
    }

    /// Where the containers' bundles are: `<state>/containers/<id>`.
    pub(crate) fn bundles_dir(&self) -> std::path::PathBuf {
        self.config.state.join("containers")
    }

    pub(crate) fn bundle_dir(&self, id: &str) -> std::path::PathBuf {
        self.bundles_dir().join(id)
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub(crate) fn containers(&self) -> MutexGuard<'_, ContainerStore> {
        self.containers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The turn to change container records (see `container_writes`). Taken before, never while,
    /// holding [`Cri::containers`].
    pub(crate) fn container_turn(&self) -> WriteTurn<'_> {
        WriteTurn(self.container_writes.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Writes `c`'s record, then publishes it; returns the store, still locked, so an event about
    /// the change goes out in order.
    pub(crate) fn save_container(
        &self,
        _turn: &WriteTurn<'_>,
        c: Container,
    ) -> crate::error::Result<MutexGuard<'_, ContainerStore>> {
        self.container_files.write(&c)?;
        let mut store = self.containers();
        store.insert(c);
        Ok(store)
    }

    /// Removes container `id`'s record from disk, then from the store.
    pub(crate) fn delete_container(&self, _turn: &WriteTurn<'_>, id: &str) -> crate::error::Result<()> {
        self.container_files.remove(id)?;
        self.containers().remove(id);
        Ok(())
    }

    /// Writes a pod record, then publishes it (writers in turn; readers never wait on the disk).
    /// Changes the pod `id`'s record in place: read, changed and written in one writer's turn, so
    /// no other writer's change in between is lost. Returns the record as written.
    pub(crate) fn update_sandbox(
        &self,
        id: &str,
        change: impl FnOnce(&mut crate::store::sandbox::Sandbox),
    ) -> crate::error::Result<crate::store::sandbox::Sandbox> {
        let _turn = self.sandbox_writes.lock().unwrap_or_else(|e| e.into_inner());
        let mut sb = self
            .sandboxes()
            .get(id)
            .cloned()
            .ok_or_else(|| crate::error::Error::NotFound(format!("pod sandbox {id:?} not found")))?;
        change(&mut sb);
        let file = self.sandboxes().file(&sb.id);
        crate::store::write_json(&file, &sb)?;
        self.sandboxes().insert(sb.clone());
        Ok(sb)
    }

    pub(crate) fn save_sandbox(&self, sb: crate::store::sandbox::Sandbox) -> crate::error::Result<()> {
        let _turn = self.sandbox_writes.lock().unwrap_or_else(|e| e.into_inner());
        let file = self.sandboxes().file(&sb.id);
        crate::store::write_json(&file, &sb)?;
        self.sandboxes().insert(sb);
        Ok(())
    }

    /// Removes a pod record from disk, then from the store.
    pub(crate) fn delete_sandbox(&self, id: &str) -> crate::error::Result<()> {
        let _turn = self.sandbox_writes.lock().unwrap_or_else(|e| e.into_inner());
        let file = self.sandboxes().file(id);
        crate::store::remove_file(&file)?;
        self.sandboxes().remove(id);
        Ok(())
    }

    pub(crate) fn sandboxes(&self) -> MutexGuard<'_, SandboxStore> {
        self.sandboxes.lock().unwrap_or_else(|e| e.into_inner())
    }
}
