//! The `delete` action: clean up a container whose shim is gone.
//!
//! The host runs it with the container's bundle as cwd (or `-bundle`). It force-deletes the container
//! with runc (state root from the bundle's `options.json`), unmounts `rootfs/` if the shim had mounted
//! it, and prints a protobuf `DeleteResponse` on stdout: the init pid from `init.pid`, exit status 137
//! (killed), exited now — what containerd's runc shim answers.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use berth_proto::shim::api::DeleteResponse;
use berth_proto::shim::protobuf::MessageField;

use crate::args::Flags;
use crate::error::{Error, Result};
use crate::reaper::Reaper;
use crate::runc::Runc;
use crate::task::options::{self, Defaults};
use crate::{mount, time};

/// The exit status reported for a container whose shim died: 128 + SIGKILL.
const KILLED: u32 = 137;

/// Runs `delete`; returns the response to print.
pub fn run(flags: &Flags) -> Result<DeleteResponse> {
    let bundle = if flags.bundle.is_empty() {
        std::env::current_dir().map_err(|source| Error::Io {
            context: "reading",
            path: ".".into(),
            source,
        })?
    } else {
        PathBuf::from(&flags.bundle)
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| Error::Io {
            context: "starting the runtime for",
            path: bundle.clone(),
            source,
        })?;
    rt.block_on(delete(flags, &bundle))
}

async fn delete(flags: &Flags, bundle: &Path) -> Result<DeleteResponse> {
    let (opts, rootfs_mounted) = options::load(bundle)?;
    let config = options::resolve(&opts, &Defaults::from_env(), &flags.namespace);
    let reaper = Reaper::start().map_err(|source| Error::Io {
        context: "watching children for",
        path: bundle.into(),
        source,
    })?;
    let runc = Runc::new(config, bundle, reaper);
    match runc.delete(&flags.id, true).await {
        Err(e) if !e.is_missing() => return Err(e.into()),
        _ => {}
    }
    if rootfs_mounted {
        mount::unmount(&bundle.join("rootfs"));
    }
    let pid = std::fs::read_to_string(bundle.join("init.pid"))
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0);
    Ok(DeleteResponse {
        pid,
        exit_status: KILLED,
        exited_at: MessageField::some(time::timestamp(SystemTime::now())),
        ..Default::default()
    })
}
