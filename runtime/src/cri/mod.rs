//! The CRI core: one file per RPC (`<object>_<verb>.rs`), each adding a method to [`Cri`].
//! These methods take and return CRI messages and the runtime's [`Error`](crate::error::Error);
//! the tonic adapters in `server/` only unwrap requests and map errors.

use std::sync::{Arc, Mutex, MutexGuard};

use berth_image::Images;

use crate::config::Config;
use crate::store::sandbox::SandboxStore;

mod image_convert;
mod image_fs_info;
mod image_list;
mod image_pull;
mod image_remove;
mod image_status;
mod runtime_config;
mod runtime_status;
mod sandbox_list;
mod sandbox_remove;
mod sandbox_run;
pub mod sandbox_setup;
mod sandbox_status;
mod sandbox_stop;
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

/// Everything the CRI services need: configuration and the stores.
#[derive(Debug)]
pub struct Cri {
    pub(crate) config: Config,
    pub(crate) images: Arc<Images>,
    sandboxes: Mutex<SandboxStore>,
}

impl Cri {
    /// Opens the stores under the configured root. Blocking (it scans the stores).
    pub fn open(config: Config) -> crate::error::Result<Cri> {
        let mut opts = berth_image::Options::new(config.root.join("image"));
        opts.hosts_dir = Some(config.registry.config_path.clone());
        opts.max_concurrent_downloads = config.registry.max_concurrent_downloads;
        let images = Arc::new(Images::open(opts)?);
        let sandboxes = Mutex::new(SandboxStore::open(&config.root.join("pods"))?);
        Ok(Cri {
            config,
            images,
            sandboxes,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub(crate) fn sandboxes(&self) -> MutexGuard<'_, SandboxStore> {
        self.sandboxes.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn images(&self) -> &Arc<Images> {
        &self.images
    }
}
