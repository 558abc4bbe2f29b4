//! The image service core: pull, list, look up, remove and measure images. Knows nothing of CRI.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::StreamExt as _;
use tracing::{debug, info, warn};

use crate::content::{ContentStore, KeyedLocks};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::hosts;
use crate::manifest::{self, Descriptor, Fetched, ImageConfig, Manifest, Platform};
use crate::reference::Reference;
use crate::registry::{Credentials, Repository, Transport};
use crate::snapshot::Overlay;
use crate::store::{Image, ImageStore, Layer};
use crate::unpack;

/// Where and how an [`Images`] keeps its data.
#[derive(Debug, Clone)]
pub struct Options {
    /// Root of the image data: `content/`, `overlay/`, `images/` go under it.
    pub root: PathBuf,
    /// Directory of containerd-style `<host>/hosts.toml` files, if any.
    pub hosts_dir: Option<PathBuf>,
    /// Layers downloaded at once per pull.
    pub max_concurrent_downloads: usize,
    /// The platform to pick from indexes; the host's by default.
    pub platform: Platform,
}

impl Options {
    pub fn new(root: impl Into<PathBuf>) -> Options {
        Options {
            root: root.into(),
            hosts_dir: None,
            max_concurrent_downloads: 3,
            platform: Platform::host(),
        }
    }
}

/// Disk usage of the image filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub bytes: u64,
    pub inodes: u64,
}

/// Images on this node.
#[derive(Debug)]
pub struct Images {
    opts: Options,
    transport: Transport,
    content: Arc<ContentStore>,
    overlay: Arc<Overlay>,
    store: Mutex<ImageStore>,
    /// Pulls hold it shared; collection holds it exclusively, so it never deletes what a pull just fetched.
    gc: tokio::sync::RwLock<()>,
    layer_locks: KeyedLocks,
}

impl Images {
    /// Opens the image store under `opts.root`, clearing interrupted work and unreferenced content.
    pub fn open(opts: Options) -> Result<Images> {
        let content = Arc::new(ContentStore::open(&opts.root.join("content"))?);
        let overlay = Arc::new(Overlay::open(&opts.root.join("overlay"))?);
        let store = ImageStore::open(&opts.root.join("images"))?;
        let images = Images {
            opts,
            transport: Transport::new(),
            content,
            overlay,
            store: Mutex::new(store),
            gc: tokio::sync::RwLock::new(()),
            layer_locks: KeyedLocks::default(),
        };
        images.collect_garbage()?;
        Ok(images)
    }

    pub fn overlay(&self) -> &Arc<Overlay> {
        &self.overlay
    }

    pub fn content(&self) -> &ContentStore {
        &self.content
    }

    fn store(&self) -> std::sync::MutexGuard<'_, ImageStore> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Pulls `reference` and records it. Returns the image.
    pub async fn pull(&self, reference: &str, creds: Credentials) -> Result<Image> {
        let r = Reference::parse(reference)?;
        let started = std::time::Instant::now();
        let _pulling = self.gc.read().await;
        let endpoints = hosts::endpoints(self.opts.hosts_dir.as_deref(), &r.domain)?;
        let repo = Repository::new(self.transport.clone(), &r.domain, &r.path, endpoints, creds);

        let (top, manifest_digest, manifest, mut blobs) = self.resolve_manifest(&repo, &r).await?;
        crate::crash::point("pull.manifest_stored");
        let (config, config_bytes) = self.fetch_config(&repo, &manifest).await?;
        blobs.push(manifest.config.digest.clone());
        let layers = layers_of(&manifest, &config)?;
        blobs.extend(layers.iter().map(|l| l.blob.clone()));
        let work: Vec<(Descriptor, Digest)> = manifest
            .layers
            .iter()
            .cloned()
            .zip(config.rootfs.diff_ids.iter().cloned())
            .collect();
        let (this, repo_ref) = (self, &repo);
        futures_util::stream::iter(work)
            .map(move |(desc, diff_id)| async move { this.fetch_layer(repo_ref, &desc, &diff_id).await })
            .buffer_unordered(self.opts.max_concurrent_downloads.max(1))
            // Let every layer finish (or fail) before answering, so a failed pull leaves no unpack
            // running behind it; the first error is the answer.
            .collect::<Vec<Result<()>>>()
            .await
            .into_iter()
            .collect::<Result<Vec<()>>>()?;

        let size = manifest.config.size + manifest.layers.iter().map(|l| l.size).sum::<u64>();
        let image = Image {
            id: manifest.config.digest.clone(),
            repo_tags: vec![],
            repo_digests: vec![],
            manifest: manifest_digest,
            blobs,
            layers,
            size,
            config,
            pulled_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            pinned: false,
        };
        drop(config_bytes);
        let tag = if r.digest.is_none() { r.tagged() } else { None };
        let image = self.store().add(image, tag, r.with_digest(&top.digest))?;
        crate::crash::point("pull.image_recorded");
        info!(image = %r, id = %image.id, elapsed_ms = started.elapsed().as_millis() as u64, "pulled image");
        Ok(image)
    }

    /// Fetches the manifest `r` names (through an index, the one for this platform) into the
    /// content store. Returns the top manifest or index, the image manifest's digest and the
    /// manifest, and the blobs fetched so far.
    async fn resolve_manifest(
        &self,
        repo: &Repository,
        r: &Reference,
    ) -> Result<(crate::registry::FetchedManifest, Digest, Manifest, Vec<Digest>)> {
        let top = repo.manifest(&r.manifest_ref()).await?;
        self.content.write_bytes(&top.digest, &top.body)?;
        let mut blobs = vec![top.digest.clone()];
        let (manifest_digest, manifest) = match manifest::parse_manifest(&top.content_type, &top.body)? {
            Fetched::Manifest(m) => (top.digest.clone(), m),
            Fetched::Index(index) => {
                let desc = manifest::select_platform(&index, &self.opts.platform).ok_or_else(|| {
                    Error::NoMatchingPlatform {
                        reference: r.to_string(),
                        platform: self.opts.platform.to_string(),
                    }
                })?;
                let m = repo.manifest(&desc.digest.to_string()).await?;
                self.content.write_bytes(&m.digest, &m.body)?;
                blobs.push(m.digest.clone());
                match manifest::parse_manifest(&m.content_type, &m.body)? {
                    Fetched::Manifest(man) => (m.digest, man),
                    Fetched::Index(_) => {
                        return Err(Error::bad("image index", "an index entry points at another index"));
                    }
                }
            }
        };
        Ok((top, manifest_digest, manifest, blobs))
    }

    async fn fetch_config(&self, repo: &Repository, manifest: &Manifest) -> Result<(ImageConfig, Vec<u8>)> {
        let d = &manifest.config.digest;
        let bytes = if self.content.contains(d) {
            self.content.read(d)?
        } else {
            let b = repo.small_blob(d).await?;
            self.content.write_bytes(d, &b)?;
            b
        };
        let config: ImageConfig = serde_json::from_slice(&bytes).map_err(|e| Error::bad("image config", e))?;
        Ok((config, bytes))
    }

    async fn fetch_layer(&self, repo: &Repository, desc: &Descriptor, diff_id: &Digest) -> Result<()> {
        let _layer = self.layer_locks.lock(diff_id).await;
        if self.overlay.has_layer(diff_id) {
            debug!(%diff_id, "layer already unpacked");
            return Ok(());
        }
        {
            let _blob = self.content.lock(&desc.digest).await;
            if !self.content.contains(&desc.digest) {
                let (url, resp) = repo.blob(&desc.digest).await?;
                self.content
                    .write_response(&desc.digest, Some(desc.size), &url, resp)
                    .await?;
                crate::crash::point("pull.blob_committed");
            }
        }
        let compression = manifest::layer_compression(&desc.media_type)
            .ok_or_else(|| Error::bad("layer", format!("unsupported media type {:?}", desc.media_type)))?;
        let overlay = self.overlay.clone();
        let blob_path = self.content.path(&desc.digest);
        let blob = desc.digest.clone();
        let diff = diff_id.clone();
        let started = std::time::Instant::now();
        tokio::task::spawn_blocking(move || {
            overlay.add_layer(&diff, |dir| {
                unpack::unpack_layer(&blob_path, compression, &blob, &diff, dir)
            })
        })
        .await
        .map_err(|e| Error::bad("layer unpack", e))??;
        crate::crash::point("pull.layer_unpacked");
        debug!(%diff_id, blob = %desc.digest, elapsed_ms = started.elapsed().as_millis() as u64, "layer unpacked");
        Ok(())
    }

    /// All images.
    pub fn list(&self) -> Vec<Image> {
        let mut v: Vec<Image> = self.store().all().cloned().collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// Finds an image by ID, `sha256:` ID, name or name with digest. `Ok(None)` if there is none;
    /// an error only when `reference` is malformed.
    pub fn get(&self, reference: &str) -> Result<Option<Image>> {
        let (id, names) = lookup_keys(reference)?;
        Ok(self.store().find(id.as_ref(), &names).cloned())
    }

    /// Removes an image with all its names and frees content no other image uses.
    /// Removing an image that does not exist succeeds.
    pub async fn remove(self: &Arc<Self>, reference: &str) -> Result<Option<Image>> {
        let (id, names) = lookup_keys(reference)?;
        let _exclusive = self.gc.write().await;
        let removed = {
            let mut store = self.store();
            let Some(img) = store.find(id.as_ref(), &names).cloned() else {
                return Ok(None);
            };
            store.remove(&img.id)?
        };
        crate::crash::point("remove_image.record_removed");
        if let Some(img) = &removed {
            info!(id = %img.id, tags = ?img.repo_tags, "removed image");
        }
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.collect_garbage())
            .await
            .map_err(|e| Error::bad("garbage collection", e))??;
        Ok(removed)
    }

    /// Deletes every blob and layer no image references. Caller holds `gc` exclusively (or is `open`).
    fn collect_garbage(&self) -> Result<()> {
        let (blobs, mut layers): (HashSet<Digest>, HashSet<Digest>) = {
            let store = self.store();
            (
                store.all().flat_map(|i| i.blobs.iter().cloned()).collect(),
                store.all().flat_map(|i| i.diff_ids()).collect(),
            )
        };
        // Containers' rootfs snapshots keep their layers even when their image is removed.
        layers.extend(self.overlay.layers_in_use()?);
        for b in self.content.list()? {
            if !blobs.contains(&b) {
                debug!(blob = %b, "collecting blob");
                self.content.remove(&b)?;
            }
        }
        for l in self.overlay.layers()? {
            if !layers.contains(&l) {
                debug!(layer = %l, "collecting layer");
                if let Err(e) = self.overlay.remove_layer(&l) {
                    warn!(layer = %l, error = %e, "could not remove layer");
                }
            }
        }
        Ok(())
    }

    /// Bytes and inodes used by image content and unpacked layers. Blocking.
    pub fn usage(&self) -> Result<Usage> {
        let mut seen = HashSet::new();
        let mut u = Usage::default();
        for dir in [
            self.opts.root.join("content"),
            self.opts.root.join("overlay/layers"),
            self.opts.root.join("images"),
        ] {
            walk_usage(&dir, &mut seen, &mut u)?;
        }
        Ok(u)
    }

    /// The directory whose filesystem holds the images.
    pub fn fs_root(&self) -> &Path {
        &self.opts.root
    }
}

/// The ways `reference` can name an image: as an ID, and as normalised names.
fn lookup_keys(reference: &str) -> Result<(Option<Digest>, Vec<String>)> {
    if let Some(d) = Digest::from_hex(reference) {
        return Ok((Some(d), vec![]));
    }
    if reference.starts_with("sha256:") {
        return Ok((Some(Digest::parse(reference)?), vec![]));
    }
    let r = Reference::parse(reference)?;
    let mut names = Vec::new();
    if let Some(d) = &r.digest {
        names.push(r.with_digest(d));
    } else if let Some(t) = r.tagged() {
        names.push(t);
    }
    Ok((None, names))
}

fn walk_usage(dir: &Path, seen: &mut HashSet<(u64, u64)>, u: &mut Usage) -> Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("read dir", dir)(e)),
    };
    for e in rd {
        let Ok(e) = e else { continue };
        let Ok(m) = e.path().symlink_metadata() else {
            continue;
        };
        if seen.insert((m.dev(), m.ino())) {
            u.bytes += m.blocks() * 512;
            u.inodes += 1;
        }
        if m.is_dir() {
            walk_usage(&e.path(), seen, u)?;
        }
    }
    Ok(())
}

/// The image's layers: each manifest layer with its diff_id from the config; the counts must agree
/// and each media type must be one berth unpacks.
fn layers_of(manifest: &Manifest, config: &ImageConfig) -> Result<Vec<Layer>> {
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(Error::bad(
            "image config",
            format!(
                "{} layers in the manifest but {} diff_ids in the config",
                manifest.layers.len(),
                config.rootfs.diff_ids.len()
            ),
        ));
    }
    let mut layers = Vec::with_capacity(manifest.layers.len());
    for (desc, diff_id) in manifest.layers.iter().zip(&config.rootfs.diff_ids) {
        if manifest::layer_compression(&desc.media_type).is_none() {
            return Err(Error::bad(
                "image manifest",
                format!("unsupported layer media type {:?}", desc.media_type),
            ));
        }
        layers.push(Layer {
            blob: desc.digest.clone(),
            diff_id: diff_id.clone(),
            size: desc.size,
            media_type: desc.media_type.clone(),
        });
    }
    Ok(layers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        let hex = "a".repeat(64);
        assert_eq!(lookup_keys(&hex).unwrap().0.unwrap().hex(), hex);
        assert_eq!(lookup_keys(&format!("sha256:{hex}")).unwrap().0.unwrap().hex(), hex);
        assert_eq!(
            lookup_keys("busybox").unwrap().1,
            vec!["docker.io/library/busybox:latest"]
        );
        assert_eq!(
            lookup_keys(&format!("x.io/a:1@sha256:{hex}")).unwrap().1,
            vec![format!("x.io/a@sha256:{hex}")]
        );
        assert!(lookup_keys("BAD").is_err());
    }
}
