use std::path::PathBuf;

use berth_image::Snapshotter as _;
use berth_image::crash::point as crash_point;
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
        let name = container_name(&config)?;
        let sandbox = self.ready_sandbox(&req.pod_sandbox_id)?;
        let (config, restore) = match self.restore_request(&config, &sandbox).await? {
            Some((restored, r)) => (restored, Some(r)),
            None => (config, None),
        };
        let image_ref = super::image_ref(config.image.clone(), "CreateContainer")?;
        let image = self
            .images
            .get(&image_ref)?
            .ok_or_else(|| Error::NotFound(format!("image {image_ref:?} not found: pull it first")))?;
        let (handler, _) = self.handler(&sandbox.runtime_handler)?;
        let image_stop = image.config.config.as_ref().and_then(|r| r.stop_signal.as_deref());
        let stop_signal = super::stop_signal::resolve(config.stop_signal, image_stop)?;

        let id = new_id()?;
        let bundle = self.bundle_dir(&id);
        let log_path = log_path(&sandbox, &config, &bundle)?;
        self.containers()
            .reserve(&name_key(&config, &sandbox.name_key()), &id)?;
        let archive = restore.as_ref().map(|r| r.archive.clone());
        let made = match self.image_volumes(&config).await {
            Ok(image_volumes) => {
                let from = Sources {
                    image: &image,
                    image_volumes,
                    archive: archive.clone(),
                };
                self.make_bundle(&bundle, &id, &sandbox, &config, from).await
            }
            Err(e) => Err(e),
        };
        let (user, image_volumes) = match made {
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
            image_volumes,
            checkpoint: archive.map(|_| bundle.join(crate::checkpoint::IMAGES_DIR)),
            ..Container::created(&id, &sandbox.id, config)
        };
        let put = self.save_container(&self.container_turn(), c).map(drop);
        if let Err(e) = put {
            self.cleanup_bundle(&bundle, &id).await;
            self.containers().release_name(&id);
            return Err(e);
        }
        crash_point("container.record_written");
        let restored_from = restore
            .as_ref()
            .map(|r| (r.archive.display().to_string(), r.dump.id.clone()));
        tracing::info!(%id, container = %name, sandbox = %sandbox.id, ?restored_from, "container created");
        self.emit(
            &id,
            &sandbox.id,
            berth_proto::cri::ContainerEventType::ContainerCreatedEvent,
            None,
        );
        Ok(CreateContainerResponse { container_id: id })
    }

    /// The pod a container is created in: there, and Ready.
    fn ready_sandbox(&self, id: &str) -> Result<crate::store::sandbox::Sandbox> {
        let sandbox = self
            .find_sandbox(id)?
            .ok_or_else(|| Error::NotFound(format!("pod sandbox {id:?} not found")))?;
        if sandbox.state != SandboxState::Ready {
            return Err(Error::FailedPrecondition(format!(
                "pod sandbox {} is not ready",
                sandbox.id
            )));
        }
        Ok(sandbox)
    }

    /// The images the request mounts as image volumes, by mount index, pulled first where they
    /// are not here yet (with no credentials but what hosts.toml gives), as kubelet expects.
    async fn image_volumes(
        &self,
        config: &berth_proto::cri::ContainerConfig,
    ) -> Result<Vec<(usize, berth_image::Image)>> {
        let mut out = Vec::new();
        for (i, m) in config.mounts.iter().enumerate() {
            let Some(spec) = &m.image else { continue };
            oci::spec::check_mount(m)?;
            let r = super::image_ref(Some(spec.clone()), "CreateContainer (image volume)")?;
            let img = match self.images.get(&r)? {
                Some(img) => img,
                None => {
                    tracing::info!(image = %r, "pulling the image of an image volume");
                    self.images.pull(&r, berth_image::Credentials::default()).await?
                }
            };
            out.push((i, img));
        }
        Ok(out)
    }

    /// Mounts the container's rootfs (a fresh snapshot over the image's layers; ID-mapped in a pod
    /// with its own user namespace) in `bundle`, makes the host mounts its request needs
    /// (`crate::mounts`) and writes its OCI spec there; returns the user the spec runs the process
    /// as and the IDs of the images mounted as volumes.
    async fn make_bundle(
        &self,
        bundle: &std::path::Path,
        id: &str,
        sandbox: &crate::store::sandbox::Sandbox,
        config: &berth_proto::cri::ContainerConfig,
        from: Sources<'_>,
    ) -> Result<(crate::store::container::User, Vec<String>)> {
        let Sources {
            image,
            image_volumes,
            archive,
        } = from;
        let target_pid = self.pid_target(config, &sandbox.id)?;
        let unset_seccomp = self.config.runtime.unset_seccomp_profile.clone();
        let (cgroup_driver, host) = (self.config.cgroup_driver, self.host.clone());
        let overlay = self.images.overlay().clone();
        let cdi_dirs = self.config.runtime.cdi_spec_dirs.clone();
        let (b, i, s, cfg, idc) = (
            bundle.to_path_buf(),
            image.clone(),
            sandbox.clone(),
            config.clone(),
            id.to_string(),
        );
        tokio::task::spawn_blocking(move || -> Result<(crate::store::container::User, Vec<String>)> {
            let rootfs = b.join("rootfs");
            std::fs::create_dir_all(&rootfs).map_err(Error::io(format!("create {}", rootfs.display())))?;
            let staging = crate::mounts::staging_dir(&b);
            let maps = oci::spec::pod_maps(&s)?;
            let userns = match (maps, s.namespace_path("user")) {
                (Some(m), Some(p)) => Some((
                    m,
                    std::fs::File::open(p)
                        .map_err(Error::io(format!("open the pod's user namespace {}", p.display())))?,
                )),
                _ => None,
            };
            let snapshot = overlay.prepare(&idc, &i.diff_ids())?;
            if let Some(a) = &archive {
                crate::checkpoint::unpack_into_bundle(a, &b, &overlay.upper_dir(&idc)?)?;
            }
            match &userns {
                Some((m, ns)) => {
                    let root = (m.uids.host_id, m.gids.host_id);
                    crate::mounts::overlay_idmapped(&snapshot, &rootfs, &staging, ns, root)?
                }
                None => snapshot.mount(&rootfs)?,
            }
            let staged = stage_mounts(&cfg, &staging, &idc, &overlay, &image_volumes, userns.as_ref())?;
            let mut spec = oci::build(&oci::SpecInput {
                id: &idc,
                sandbox: &s,
                config: &cfg,
                image: &i,
                rootfs: &rootfs,
                host: &host,
                unset_seccomp: &unset_seccomp,
                target_pid,
                cgroup_driver,
                staged: &staged,
            })?;
            let cdi: Vec<String> = cfg.cdi_devices.iter().map(|d| d.name.clone()).collect();
            crate::cdi::apply(&mut spec, &cdi, &cdi_dirs)?;
            if userns.is_some() {
                crate::mounts::keep_locked_flags(&mut spec);
            }
            write_json(&b.join("config.json"), &spec)?;
            crash_point("container.bundle_made");
            let u = spec.process().as_ref().map(|p| p.user().clone()).unwrap_or_default();
            let user = crate::store::container::User {
                uid: u.uid(),
                gid: u.gid(),
                additional_gids: u.additional_gids().clone().unwrap_or_default(),
            };
            Ok((user, image_volumes.iter().map(|(_, img)| img.id.to_string()).collect()))
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

    /// Unmounts and deletes a container's rootfs snapshot, its staged host mounts (and their
    /// image-volume views) and its bundle. Idempotent.
    pub(crate) async fn cleanup_bundle(&self, bundle: &std::path::Path, snapshot: &str) {
        let overlay = self.images.overlay().clone();
        let (b, s) = (bundle.to_path_buf(), snapshot.to_string());
        let res = tokio::task::spawn_blocking(move || remove_bundle(&overlay, &b, &s)).await;
        if let Ok(Err(e)) | Err(e) = res.map_err(|e| Error::Internal(e.to_string())) {
            tracing::error!(bundle = %bundle.display(), error = %e, "container cleanup failed");
        }
    }
}

/// Where a container's CRI log goes. One that names none (kubelet always names one; crictl and
/// critest may not) logs into its bundle, removed with it: attach follows the log, and `crictl
/// logs` works.
/// The container's name: there, and a name.
fn container_name(config: &berth_proto::cri::ContainerConfig) -> Result<String> {
    let name = config.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default();
    if name.is_empty() {
        return Err(Error::InvalidArgument(
            "CreateContainer: metadata.name is required".into(),
        ));
    }
    super::check_name_field("CreateContainer", "name", &name)?;
    Ok(name)
}

/// A log path with `..` in it (which could lead out of the pod's log directory) is refused.
fn log_path(
    sandbox: &crate::store::sandbox::Sandbox,
    config: &berth_proto::cri::ContainerConfig,
    bundle: &std::path::Path,
) -> Result<PathBuf> {
    if config.log_path.split('/').any(|c| c == "..") {
        return Err(Error::InvalidArgument(format!(
            "CreateContainer: log_path {:?} must not have '..' in it",
            config.log_path
        )));
    }
    Ok(
        match (sandbox.config.log_directory.as_str(), config.log_path.as_str()) {
            (_, "") => bundle.join("container.log"),
            ("", p) => PathBuf::from(p),
            (d, p) => PathBuf::from(d).join(p),
        },
    )
}

/// What a container's filesystems come from: its image, the images mounted as volumes (by mount
/// index) and, for a restore, the checkpoint archive whose root filesystem changes it starts with.
struct Sources<'a> {
    image: &'a berth_image::Image,
    image_volumes: Vec<(usize, berth_image::Image)>,
    archive: Option<PathBuf>,
}

/// Makes the host mounts the request's mounts need (see `crate::mounts`), under `staging`, and
/// returns their paths by mount index: image volumes (a read-only view of the image's layers, or
/// one path in it), recursive read-only binds, ID-mapped binds (a mount's own `uidMappings`, through
/// the pod's user namespace when they are its maps). Blocking.
fn stage_mounts(
    cfg: &berth_proto::cri::ContainerConfig,
    staging: &std::path::Path,
    snapshot: &str,
    overlay: &berth_image::Overlay,
    image_volumes: &[(usize, berth_image::Image)],
    userns: Option<&(crate::userns::Maps, std::fs::File)>,
) -> Result<std::collections::HashMap<usize, PathBuf>> {
    let mut staged = std::collections::HashMap::new();
    for (i, m) in cfg.mounts.iter().enumerate() {
        oci::spec::check_mount(m)?;
        if let Some((_, img)) = image_volumes.iter().find(|(n, _)| *n == i) {
            let name = format!("iv{i}");
            let target = staging.join(&name);
            std::fs::create_dir_all(&target).map_err(Error::io(format!("create {}", target.display())))?;
            overlay
                .view(&format!("{snapshot}-{name}"), &img.diff_ids())?
                .mount(&target)?;
            staged.insert(i, sub_path(&target, &m.image_sub_path)?);
            continue;
        }
        let mapped = !m.uid_mappings.is_empty() || !m.gid_mappings.is_empty();
        if !m.recursive_read_only && !mapped {
            continue;
        }
        let host = oci::spec::host_source(m)?;
        let temporary;
        let idmap = if mapped {
            let want = crate::userns::Maps::of_mount(m)?;
            match userns {
                Some((maps, ns)) if *maps == want => Some(ns),
                _ => {
                    temporary = crate::userns::temporary(want)?;
                    Some(&temporary)
                }
            }
        } else {
            None
        };
        let target = staging.join(format!("m{i}"));
        crate::mounts::bind(
            &host,
            &target,
            crate::mounts::Bind {
                recursive_readonly: m.recursive_read_only,
                idmap,
            },
        )?;
        staged.insert(i, target);
    }
    Ok(staged)
}

/// `sub` inside the image volume mounted at `root`: relative, staying inside, and there.
fn sub_path(root: &std::path::Path, sub: &str) -> Result<PathBuf> {
    if sub.is_empty() {
        return Ok(root.to_path_buf());
    }
    let rel = std::path::Path::new(sub);
    let ok = rel.is_relative()
        && rel
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_) | std::path::Component::CurDir));
    if !ok {
        return Err(Error::InvalidArgument(format!(
            "image_sub_path {sub:?} must be a relative path without '..'"
        )));
    }
    let p = root.join(rel);
    // A symlink in the image must not lead out of it.
    let real = std::fs::canonicalize(&p)
        .map_err(|_| Error::NotFound(format!("image_sub_path {sub:?} does not exist in the image")))?;
    let real_root = std::fs::canonicalize(root).map_err(Error::io(format!("resolve {}", root.display())))?;
    if !real.starts_with(&real_root) {
        return Err(Error::InvalidArgument(format!(
            "image_sub_path {sub:?} leads out of the image"
        )));
    }
    Ok(real)
}

/// Unmounts and deletes a container's rootfs snapshot, its staged host mounts (and their
/// image-volume views) and its bundle. Idempotent. Blocking.
fn remove_bundle(overlay: &berth_image::Overlay, b: &std::path::Path, snapshot: &str) -> Result<()> {
    berth_image::sys::unmount(&b.join("rootfs"))?;
    let staging = crate::mounts::staging_dir(b);
    crate::mounts::unmount_staged(b)?;
    for e in std::fs::read_dir(&staging).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with("iv") {
            overlay.remove(&format!("{snapshot}-{name}"))?;
        }
    }
    overlay.remove(snapshot)?;
    match std::fs::remove_dir_all(b) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("remove {}", b.display()))(e)),
    }
}

/// At start: removes the bundles (their mounts) and snapshots that no container record owns — what
/// a CreateContainer cut off by a crash before its record was written leaves. Blocking.
pub(crate) fn remove_orphan_bundles(
    bundles: &std::path::Path,
    overlay: &berth_image::Overlay,
    known: &dyn Fn(&str) -> bool,
) {
    for e in std::fs::read_dir(bundles).into_iter().flatten().flatten() {
        let id = e.file_name().to_string_lossy().to_string();
        if known(&id) || !e.path().is_dir() {
            continue;
        }
        tracing::warn!(container = %id, "removing the bundle of a CreateContainer that did not finish");
        if let Err(err) = remove_bundle(overlay, &e.path(), &id) {
            tracing::warn!(container = %id, error = %err, "cleanup of an unfinished container");
        }
    }
    for key in overlay.snapshot_keys() {
        let owner = key.split_once("-iv").map_or(key.as_str(), |(id, _)| id);
        if !known(owner) {
            tracing::warn!(snapshot = %key, "removing a snapshot no container owns");
            if let Err(err) = overlay.remove(&key) {
                tracing::warn!(snapshot = %key, error = %err, "snapshot cleanup");
            }
        }
    }
}
