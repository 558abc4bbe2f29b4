//! The CRI core: one file per RPC (`<object>_<verb>.rs`), each adding a method to [`Cri`].
//! These methods take and return CRI messages and the runtime's [`Error`](crate::error::Error);
//! the tonic adapters in `server/` only unwrap requests and map errors.

use std::sync::Arc;

use berth_image::Images;

use crate::config::Config;

mod image_convert;
mod image_fs_info;
mod image_list;
mod image_pull;
mod image_remove;
mod image_status;
mod runtime_config;
mod runtime_status;
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
}

impl Cri {
    /// Opens the stores under the configured root. Blocking (it scans the stores).
    pub fn open(config: Config) -> crate::error::Result<Cri> {
        let mut opts = berth_image::Options::new(config.root.join("image"));
        opts.hosts_dir = Some(config.registry.config_path.clone());
        opts.max_concurrent_downloads = config.registry.max_concurrent_downloads;
        let images = Arc::new(Images::open(opts)?);
        Ok(Cri { config, images })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn images(&self) -> &Arc<Images> {
        &self.images
    }
}
