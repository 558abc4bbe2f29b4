//! The shims service (containerd's "task service" client side): launching shims, connecting to
//! them once and sharing the connection, launching a pod's berth-shim ahead of its first container,
//! and ending an idle one. The RPCs reach shims only through [`ShimApi`], and shims are launched and
//! connected only through a [`Launcher`], so tests put a fake at this boundary.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use berth_proto::shim::api;

use crate::error::Result;
use crate::shim_client::ShimClient;

/// The task API of one shim connection, as berthd uses it.
#[async_trait::async_trait]
pub trait ShimApi: Send + Sync + std::fmt::Debug {
    async fn create(&self, req: &api::CreateTaskRequest) -> Result<api::CreateTaskResponse>;
    async fn start(&self, id: &str, exec_id: &str) -> Result<api::StartResponse>;
    /// Blocks until the process exits.
    async fn wait(&self, id: &str, exec_id: &str) -> Result<api::WaitResponse>;
    async fn exec(&self, req: &api::ExecProcessRequest) -> Result<()>;
    async fn kill_exec(&self, id: &str, exec_id: &str, signal: u32) -> Result<()>;
    async fn delete_exec(&self, id: &str, exec_id: &str) -> Result<api::DeleteResponse>;
    async fn close_io(&self, id: &str, exec_id: &str) -> Result<()>;
    async fn resize_pty(&self, id: &str, exec_id: &str, width: u32, height: u32) -> Result<()>;
    async fn reopen_log(&self, id: &str) -> Result<()>;
    async fn update_resources(&self, id: &str, resources: Vec<u8>) -> Result<()>;
    async fn kill(&self, id: &str, signal: u32, all: bool) -> Result<()>;
    /// CRIU dumps the running task into `images`, leaving it running (CRIU's log in `work`).
    async fn checkpoint(
        &self,
        id: &str,
        images: &Path,
        work: &Path,
        timeout: Option<std::time::Duration>,
    ) -> Result<()>;
    async fn delete(&self, id: &str) -> Result<api::DeleteResponse>;
    async fn state(&self, id: &str) -> Result<api::StateResponse>;
    async fn shutdown(&self, id: &str) -> Result<()>;
}

/// A shared connection to a shim.
pub type Shim = Arc<dyn ShimApi>;

#[async_trait::async_trait]
impl ShimApi for ShimClient {
    async fn create(&self, req: &api::CreateTaskRequest) -> Result<api::CreateTaskResponse> {
        ShimClient::create(self, req).await
    }
    async fn start(&self, id: &str, exec_id: &str) -> Result<api::StartResponse> {
        ShimClient::start(self, id, exec_id).await
    }
    async fn wait(&self, id: &str, exec_id: &str) -> Result<api::WaitResponse> {
        ShimClient::wait(self, id, exec_id).await
    }
    async fn exec(&self, req: &api::ExecProcessRequest) -> Result<()> {
        ShimClient::exec(self, req).await
    }
    async fn kill_exec(&self, id: &str, exec_id: &str, signal: u32) -> Result<()> {
        ShimClient::kill_exec(self, id, exec_id, signal).await
    }
    async fn delete_exec(&self, id: &str, exec_id: &str) -> Result<api::DeleteResponse> {
        ShimClient::delete_exec(self, id, exec_id).await
    }
    async fn close_io(&self, id: &str, exec_id: &str) -> Result<()> {
        ShimClient::close_io(self, id, exec_id).await
    }
    async fn resize_pty(&self, id: &str, exec_id: &str, width: u32, height: u32) -> Result<()> {
        ShimClient::resize_pty(self, id, exec_id, width, height).await
    }
    async fn reopen_log(&self, id: &str) -> Result<()> {
        ShimClient::reopen_log(self, id).await
    }
    async fn update_resources(&self, id: &str, resources: Vec<u8>) -> Result<()> {
        ShimClient::update_resources(self, id, resources).await
    }
    async fn kill(&self, id: &str, signal: u32, all: bool) -> Result<()> {
        ShimClient::kill(self, id, signal, all).await
    }
    async fn checkpoint(
        &self,
        id: &str,
        images: &Path,
        work: &Path,
        timeout: Option<std::time::Duration>,
    ) -> Result<()> {
        ShimClient::checkpoint(self, id, images, work, timeout).await
    }
    async fn delete(&self, id: &str) -> Result<api::DeleteResponse> {
        ShimClient::delete(self, id).await
    }
    async fn state(&self, id: &str) -> Result<api::StateResponse> {
        ShimClient::state(self, id).await
    }
    async fn shutdown(&self, id: &str) -> Result<()> {
        ShimClient::shutdown(self, id).await
    }
}

/// Starting shims and connecting to them.
#[async_trait::async_trait]
pub trait Launcher: Send + Sync + std::fmt::Debug {
    /// Runs `shim start` for container `id` in `bundle`; returns the address the shim serves on.
    async fn launch(&self, shim: &Path, bundle: &Path, id: &str, events_socket: &Path) -> Result<String>;
    /// Connects to the shim at `address` (for container or pod `id`).
    async fn connect(&self, address: &str, id: &str) -> Result<Shim>;
    /// Whether a shim listens on `socket`.
    async fn listening(&self, socket: &Path) -> bool;
}

/// Real shim binaries over ttrpc.
#[derive(Debug, Default)]
pub struct Binaries;

#[async_trait::async_trait]
impl Launcher for Binaries {
    async fn launch(&self, shim: &Path, bundle: &Path, id: &str, events_socket: &Path) -> Result<String> {
        crate::shim_client::launch(shim, bundle, id, events_socket).await
    }
    async fn connect(&self, address: &str, id: &str) -> Result<Shim> {
        Ok(Arc::new(ShimClient::connect(address, id).await?))
    }
    async fn listening(&self, socket: &Path) -> bool {
        tokio::net::UnixStream::connect(socket).await.is_ok()
    }
}

/// The shims berthd talks to.
#[derive(Debug)]
pub struct Shims {
    launcher: Arc<dyn Launcher>,
    /// Where shims send their events (berthd serves it).
    events_socket: PathBuf,
    /// Connections, by address.
    connections: tokio::sync::Mutex<HashMap<String, Shim>>,
    /// Pod shims being launched ahead of their first container, by sandbox ID.
    prelaunches: Mutex<HashMap<String, tokio::task::JoinHandle<()>>>,
}

impl Shims {
    pub fn new(launcher: Arc<dyn Launcher>, events_socket: PathBuf) -> Shims {
        Shims {
            launcher,
            events_socket,
            connections: Default::default(),
            prelaunches: Default::default(),
        }
    }

    pub fn events_socket(&self) -> &Path {
        &self.events_socket
    }

    /// A connection to the shim at `address`, made once and shared.
    pub async fn get(&self, address: &str, id: &str) -> Result<Shim> {
        if let Some(c) = self.connections.lock().await.get(address) {
            return Ok(c.clone());
        }
        let c = self.launcher.connect(address, id).await?;
        self.connections.lock().await.insert(address.to_string(), c.clone());
        Ok(c)
    }

    /// Drops the connection to a shim that is gone (or going).
    pub async fn forget(&self, address: &str) {
        self.connections.lock().await.remove(address);
    }

    /// Launches a shim for container `id`; returns its address.
    pub async fn launch(&self, shim: &Path, bundle: &Path, id: &str) -> Result<String> {
        self.launcher.launch(shim, bundle, id, &self.events_socket).await
    }

    /// The address of the pod's berth-shim if it is running (none for other shims).
    pub async fn running_pod_shim(&self, shim: &Path, sandbox_id: &str) -> Option<String> {
        if !crate::shim_client::is_berth_shim(shim) {
            return None;
        }
        // Still being launched: wait for it rather than start a second launch.
        self.await_prelaunch(sandbox_id).await;
        let socket = crate::shim_client::group_socket(&self.events_socket, sandbox_id);
        self.launcher
            .listening(&socket)
            .await
            .then(|| format!("unix://{}", socket.display()))
    }

    /// Launches the pod's berth-shim in the background (`bundle` holds only the grouping
    /// annotation), so that its first container finds it running.
    pub fn prelaunch(&self, shim: PathBuf, bundle: PathBuf, sandbox_id: &str) {
        let (launcher, events, id) = (
            self.launcher.clone(),
            self.events_socket.clone(),
            sandbox_id.to_string(),
        );
        let task = tokio::spawn(async move {
            if let Err(e) = launcher.launch(&shim, &bundle, &id, &events).await {
                tracing::warn!(pod = %id, error = %e, "could not launch the pod's shim ahead (its first container will)");
            }
        });
        self.prelaunches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(sandbox_id.to_string(), task);
    }

    /// Waits for the ahead-of-time launch of the pod's shim, if one is under way.
    async fn await_prelaunch(&self, sandbox_id: &str) {
        let pending = self
            .prelaunches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(sandbox_id);
        if let Some(task) = pending {
            let _ = task.await;
        }
    }

    /// Ends the pod's berth-shim if it runs no container (one launched ahead whose pod never got
    /// a container, or got none that is left). A shim with containers refuses and stays.
    pub async fn shutdown_idle_pod_shim(&self, sandbox_id: &str) {
        // A launch still under way would otherwise bring up a shim after this.
        self.await_prelaunch(sandbox_id).await;
        let socket = crate::shim_client::group_socket(&self.events_socket, sandbox_id);
        let address = format!("unix://{}", socket.display());
        if !self.launcher.listening(&socket).await {
            return;
        }
        if let Ok(shim) = self.launcher.connect(&address, sandbox_id).await {
            let _ = shim.shutdown(sandbox_id).await;
        }
        self.forget(&address).await;
    }
}
