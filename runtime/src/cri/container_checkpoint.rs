//! CheckpointContainer (forensic container checkpointing, KEP-2008) and the restore half of it.
//!
//! A checkpoint is CRIU's dump of the running container (`runc checkpoint` through the shim, the
//! container left running) packed with its config, spec and root filesystem changes into the
//! archive the request names ([`crate::checkpoint`]). Before anything is attempted, berth asks
//! CRIU itself whether it can work on this host (`criu check`, once per daemon): where it cannot
//! (Debian 12's CRIU 3.17 on kernels whose vDSO layout it does not know), the answer is
//! FailedPrecondition with CRIU's own reason.
//!
//! The archive is restored by CreateContainer when its image names the archive's path, as with
//! CRI-O and containerd: the new container is made from the checkpointed config and image (with the
//! request's name, labels, annotations and log path) in the request's pod, its rootfs gets the
//! recorded changes, and StartContainer restores the processes (`runc restore`) instead of
//! starting them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_proto::cri::{CheckpointContainerRequest, CheckpointContainerResponse, ContainerConfig};

use super::Cri;
use crate::checkpoint::{self, Dump};
use crate::error::{Error, Result};
use crate::store::container::{Container, State};
use crate::store::now_ns;

/// `criu check`'s verdict on this host: Ok, or why CRIU cannot work here.
static CRIU: tokio::sync::OnceCell<std::result::Result<(), String>> = tokio::sync::OnceCell::const_new();

async fn criu_check() -> std::result::Result<(), String> {
    let out = tokio::process::Command::new("criu").arg("check").output().await;
    match out {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err("criu is not installed (Debian package criu)".into()),
        Err(e) => Err(format!("cannot run criu: {e}")),
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => {
            let text = String::from_utf8_lossy(&o.stderr).to_string() + &String::from_utf8_lossy(&o.stdout);
            let first = text
                .lines()
                .find(|l| l.contains("Error"))
                .or(text.lines().next())
                .unwrap_or("");
            Err(format!("`criu check` fails on this host: {}", first.trim()))
        }
    }
}

async fn need_criu(what: &str) -> Result<()> {
    match CRIU.get_or_init(criu_check).await {
        Ok(()) => Ok(()),
        Err(why) => Err(Error::FailedPrecondition(format!("{what} needs CRIU, and {why}"))),
    }
}

/// A container being made from a checkpoint archive.
pub(crate) struct Restore {
    pub archive: PathBuf,
    pub dump: Dump,
}

impl Cri {
    pub async fn checkpoint_container(&self, req: CheckpointContainerRequest) -> Result<CheckpointContainerResponse> {
        let c = self.container(&req.container_id)?;
        if c.state != State::Running {
            return Err(Error::FailedPrecondition(format!(
                "CheckpointContainer: container {} is not running",
                c.id
            )));
        }
        let location = archive_location(&req.location)?;
        need_criu(&format!("CheckpointContainer {}", c.id)).await?;
        let work = c.bundle.join(format!("checkpoint-{}", now_ns()));
        let (images, criu_work) = (work.join("images"), work.join("work"));
        let timeout = (req.timeout > 0).then(|| Duration::from_secs(req.timeout as u64));
        let written = async {
            let shim = self.shim(&c.shim_address, &c.id).await?;
            shim.checkpoint(&c.id, &images, &criu_work, timeout).await?;
            let dump = self.dump_of(&c);
            let upper = self.images.overlay().upper_dir(&c.snapshot)?;
            let (loc, b, w) = (location.clone(), c.bundle.clone(), work.clone());
            tokio::task::spawn_blocking(move || {
                checkpoint::write(
                    &loc,
                    &checkpoint::Parts {
                        dump: &dump,
                        images: &w.join("images"),
                        spec: &b.join("config.json"),
                        rootfs_upper: &upper,
                        dump_log: &w.join("work").join("dump.log"),
                        scratch: &w.join(checkpoint::ROOTFS_DIFF),
                    },
                )
            })
            .await
            .map_err(|e| Error::Internal(format!("checkpoint archive task: {e}")))?
        }
        .await;
        let _ = tokio::fs::remove_dir_all(&work).await;
        written?;
        tracing::info!(id = %c.id, archive = %location.display(), "container checkpointed");
        Ok(CheckpointContainerResponse {})
    }

    fn dump_of(&self, c: &Container) -> Dump {
        Dump {
            id: c.id.clone(),
            name: c.name().to_string(),
            rootfs_image: c.image_ref.clone(),
            rootfs_image_ref: c.image_id.clone(),
            rootfs_image_name: c.image_ref.clone(),
            oci_runtime: self
                .handler(&c.handler)
                .map(|(_, h)| h.runtime.clone())
                .unwrap_or_default(),
            created_time: checkpoint::rfc3339(c.created_at),
            checkpointed_time: checkpoint::rfc3339(now_ns()),
            container_config: Some(c.config.clone()),
            user_namespace: self
                .find_sandbox(&c.sandbox_id)
                .ok()
                .flatten()
                .is_some_and(|s| s.namespace_path("user").is_some()),
        }
    }

    /// For a CreateContainer whose image names a checkpoint archive: the config to create the
    /// container from (the checkpointed one, with the request's name, labels, annotations and log
    /// path) and what the restore needs. None for an ordinary image.
    pub(crate) async fn restore_request(
        &self,
        config: &ContainerConfig,
        sandbox: &crate::store::sandbox::Sandbox,
    ) -> Result<Option<(ContainerConfig, Restore)>> {
        let image = config.image.as_ref().map(|i| i.image.as_str()).unwrap_or_default();
        let Some(archive) = checkpoint::archive_named(image) else {
            return Ok(None);
        };
        need_criu("CreateContainer from a checkpoint").await?;
        let a = archive.clone();
        let dump = tokio::task::spawn_blocking(move || checkpoint::read_dump(&a))
            .await
            .map_err(|e| Error::Internal(format!("checkpoint read task: {e}")))??;
        let Some(mut restored) = dump.container_config.clone() else {
            return Err(Error::InvalidArgument(format!(
                "checkpoint archive {}: its config.dump has no containerConfig (not written by berth)",
                archive.display()
            )));
        };
        // runc 1.1 hands CRIU the pod's network and PID namespaces but not a user namespace: CRIU
        // would make a new one, which may not enter the pod's namespaces.
        if dump.user_namespace || sandbox.namespace_path("user").is_some() {
            return Err(Error::FailedPrecondition(format!(
                "checkpoint archive {}: restoring into or out of a pod with its own user namespace \
                 (hostUsers: false) is not supported",
                archive.display()
            )));
        }
        if restored.tty {
            return Err(Error::InvalidArgument(format!(
                "checkpoint archive {}: a container with a terminal cannot be restored",
                archive.display()
            )));
        }
        restored.metadata = config.metadata.clone();
        restored.labels = config.labels.clone();
        restored.annotations = config.annotations.clone();
        restored.log_path = config.log_path.clone();
        let image_name = if dump.rootfs_image_name.is_empty() {
            &dump.rootfs_image_ref
        } else {
            &dump.rootfs_image_name
        };
        restored.image = Some(berth_proto::cri::ImageSpec {
            image: image_name.clone(),
            ..Default::default()
        });
        let image_name = super::image_ref(restored.image.clone(), "CreateContainer (checkpoint's image)")?;
        if self.images.get(&image_name)?.is_none() {
            tracing::info!(image = %image_name, "pulling the image a checkpoint was made from");
            self.images
                .pull(&image_name, berth_image::Credentials::default())
                .await?;
        }
        Ok(Some((restored, Restore { archive, dump })))
    }
}

/// The archive path of a CheckpointContainer request: absolute, in a directory that exists.
fn archive_location(location: &str) -> Result<PathBuf> {
    if location.is_empty() {
        return Err(Error::InvalidArgument(
            "CheckpointContainer: location (the archive to write) is required".into(),
        ));
    }
    let p = Path::new(location);
    let dir_ok = p.parent().is_some_and(|d| d.is_dir());
    if !p.is_absolute() || p.file_name().is_none() || !dir_ok || p.is_dir() {
        return Err(Error::InvalidArgument(format!(
            "CheckpointContainer: location {location:?} must be an absolute file path in an existing directory"
        )));
    }
    Ok(p.to_path_buf())
}
