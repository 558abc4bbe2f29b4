use std::path::PathBuf;

use berth_image::Snapshotter as _;
use berth_proto::cri::{CreateContainerRequest, CreateContainerResponse};

use super::Cri;
use crate::error::{Error, Result};
use crate::oci;
use crate::store::container::{Container, State, name_key};
use crate::store::sandbox::State as SandboxState;
use crate::store::{new_id, write_json};

impl Cri {
    /// Creates a container: its name, a writable overlay snapshot on the image's layers mounted as
    /// the bundle's rootfs, and the OCI spec. The process starts in StartContainer.
    pub async fn create_container(&self, req: CreateContainerRequest) -> Result<CreateContainerResponse> {
        let config = req
            .config
            .ok_or_else(|| Error::InvalidArgument("CreateContainer: config is required".into()))?;
        let name = config.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default();
        if name.is_empty() {
            return Err(Error::InvalidArgument(
                "CreateContainer: metadata.name is required".into(),
            ));
        }
        let sandbox = self
            .find_sandbox(&req.pod_sandbox_id)?
            .ok_or_else(|| Error::NotFound(format!("pod sandbox {:?} not found", req.pod_sandbox_id)))?;
        if sandbox.state != SandboxState::Ready {
            return Err(Error::FailedPrecondition(format!(
                "pod sandbox {} is not ready",
                sandbox.id
            )));
        }
        let image_ref = super::image_ref(config.image.clone(), "CreateContainer")?;
        let image = self
            .images
            .get(&image_ref)?
            .ok_or_else(|| Error::NotFound(format!("image {image_ref:?} not found: pull it first")))?;
        let (handler, _) = self.handler(&sandbox.runtime_handler)?;
        let image_stop = image.config.config.as_ref().and_then(|r| r.stop_signal.as_deref());
        let stop_signal = super::stop_signal::resolve(config.stop_signal, image_stop)?;

        let id = new_id()?;
        self.containers()
            .reserve(&name_key(&config, &sandbox.name_key()), &id)?;
        let bundle = self.bundle_dir(&id);
        // A container that names no log (kubelet always names one; crictl and critest may not)
        // logs into its bundle, removed with it: attach follows the log, and `crictl logs` works.
        let log_path = match (sandbox.config.log_directory.as_str(), config.log_path.as_str()) {
            (_, "") => bundle.join("container.log"),
            ("", p) => PathBuf::from(p),
            (d, p) => PathBuf::from(d).join(p),
        };
        let made = self.make_bundle(&bundle, &id, &image, &sandbox, &config).await;
        let user = match made {
            Ok(u) => u,
            Err(e) => {
                self.cleanup_bundle(&bundle, &id).await;
                self.containers().release_name(&id);
                return Err(e);
            }
        };
        let c = Container {
            image_ref,
            image_id: image.id.to_string(),
            bundle: bundle.clone(),
            log_path,
            handler,
            user: Some(user),
            stop_signal: Some(stop_signal),
            ..Container::created(&id, &sandbox.id, config)
        };
        let put = self.save_container(&self.container_turn(), c).map(drop);
        if let Err(e) = put {
            self.cleanup_bundle(&bundle, &id).await;
            self.containers().release_name(&id);
            return Err(e);
        }
        tracing::info!(%id, container = %name, sandbox = %sandbox.id, "container created");
        self.emit(
            &id,
            &sandbox.id,
            berth_proto::cri::ContainerEventType::ContainerCreatedEvent,
            None,
        );
        Ok(CreateContainerResponse { container_id: id })
    }

    /// Mounts the container's rootfs (a fresh snapshot over the image's layers) in `bundle` and
    /// writes its OCI spec there; returns the user the spec runs the process as.
    async fn make_bundle(
        &self,
        bundle: &std::path::Path,
        id: &str,
        image: &berth_image::Image,
        sandbox: &crate::store::sandbox::Sandbox,
        config: &berth_proto::cri::ContainerConfig,
    ) -> Result<crate::store::container::User> {
        let target_pid = self.pid_target(config, &sandbox.id)?;
        let unset_seccomp = self.config.runtime.unset_seccomp_profile.clone();
        let (cgroup_driver, host) = (self.config.cgroup_driver, self.host.clone());
        let overlay = self.images.overlay().clone();
        let (b, i, s, cfg, idc) = (
            bundle.to_path_buf(),
            image.clone(),
            sandbox.clone(),
            config.clone(),
            id.to_string(),
        );
        tokio::task::spawn_blocking(move || -> Result<crate::store::container::User> {
            let rootfs = b.join("rootfs");
            std::fs::create_dir_all(&rootfs).map_err(Error::io(format!("create {}", rootfs.display())))?;
            overlay.prepare(&idc, &i.diff_ids())?.mount(&rootfs)?;
            let spec = oci::build(&oci::SpecInput {
                id: &idc,
                sandbox: &s,
                config: &cfg,
                image: &i,
                rootfs: &rootfs,
                host: &host,
                unset_seccomp: &unset_seccomp,
                target_pid,
                cgroup_driver,
            })?;
            write_json(&b.join("config.json"), &spec)?;
            let u = spec.process().as_ref().map(|p| p.user().clone()).unwrap_or_default();
            Ok(crate::store::container::User {
                uid: u.uid(),
                gid: u.gid(),
                additional_gids: u.additional_gids().clone().unwrap_or_default(),
            })
        })
        .await
        .map_err(|e| Error::Internal(format!("container create task: {e}")))?
    }

    /// For a container asking for the PID namespace of another (`TARGET`): the target's init PID. The
    /// target must be a running container of the same pod.
    fn pid_target(&self, config: &berth_proto::cri::ContainerConfig, sandbox_id: &str) -> Result<Option<u32>> {
        let opts = config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.as_ref());
        let Some(o) = opts.filter(|o| o.pid == berth_proto::cri::NamespaceMode::Target as i32) else {
            return Ok(None);
        };
        if o.target_id.is_empty() {
            return Err(Error::InvalidArgument(
                "PID namespace mode TARGET needs a target_id".into(),
            ));
        }
        let t = self
            .container(&o.target_id)
            .map_err(|_| Error::NotFound(format!("PID namespace target container {:?} not found", o.target_id)))?;
        if t.sandbox_id != sandbox_id {
            return Err(Error::InvalidArgument(format!(
                "PID namespace target {} is in another pod",
                t.id
            )));
        }
        if t.state != State::Running || t.pid == 0 {
            return Err(Error::FailedPrecondition(format!(
                "PID namespace target {} is not running",
                t.id
            )));
        }
        Ok(Some(t.pid))
    }

    /// Unmounts and deletes a container's rootfs snapshot and bundle. Idempotent.
    pub(crate) async fn cleanup_bundle(&self, bundle: &std::path::Path, snapshot: &str) {
        let overlay = self.images.overlay().clone();
        let (b, s) = (bundle.to_path_buf(), snapshot.to_string());
        let res = tokio::task::spawn_blocking(move || -> Result<()> {
            berth_image::sys::unmount(&b.join("rootfs"))?;
            overlay.remove(&s)?;
            match std::fs::remove_dir_all(&b) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(Error::io(format!("remove {}", b.display()))(e)),
            }
        })
        .await;
        if let Ok(Err(e)) | Err(e) = res.map_err(|e| Error::Internal(e.to_string())) {
            tracing::error!(bundle = %bundle.display(), error = %e, "container cleanup failed");
        }
    }
}
