//! Snapshots: unpacked layers stacked with overlayfs.
//!
//! An unpacked layer depends only on its own tar stream (whiteouts are device files and xattrs in the
//! layer itself), so each layer is stored once, under its diff ID, and shared by every image that has it:
//!
//! ```text
//! <root>/layers/<diff_id hex>/   the unpacked layer
//! <root>/l/<12 hex>              short symlink to it, keeping overlay's lowerdir option short
//! <root>/snapshots/<key>/        upper/ and work/ of a writable snapshot (a container's rootfs)
//! <root>/tmp/                    layers being unpacked; cleared at start
//! ```
//!
//! A layer appears under `layers/` only by a rename after a complete, verified unpack.

use std::path::{Path, PathBuf};

use nix::mount::MsFlags;

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::sys;

/// How to mount a snapshot: the arguments of mount(2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub fstype: String,
    pub source: String,
    pub options: Vec<String>,
}

impl Mount {
    /// Mounts this on `target` (an existing directory).
    pub fn mount(&self, target: &Path) -> Result<()> {
        let mut flags = MsFlags::empty();
        let mut data = Vec::new();
        for o in &self.options {
            match o.as_str() {
                "ro" => flags |= MsFlags::MS_RDONLY,
                "bind" => flags |= MsFlags::MS_BIND,
                "rbind" => flags |= MsFlags::MS_BIND | MsFlags::MS_REC,
                other => data.push(other),
            }
        }
        if flags.contains(MsFlags::MS_BIND) && flags.contains(MsFlags::MS_RDONLY) {
            // A read-only bind takes two steps: bind, then remount read-only.
            sys::mount(&self.fstype, &self.source, target, flags - MsFlags::MS_RDONLY, "")?;
            return sys::mount(
                "",
                "",
                target,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                "",
            );
        }
        sys::mount(&self.fstype, &self.source, target, flags, &data.join(","))
    }
}

/// What a container runtime needs from a snapshotter.
pub trait Snapshotter: Send + Sync {
    /// A writable snapshot named `key` on top of `layers` (bottom first).
    fn prepare(&self, key: &str, layers: &[Digest]) -> Result<Mount>;
    /// A read-only view of `layers` (bottom first); `key` names any state it needs.
    fn view(&self, key: &str, layers: &[Digest]) -> Result<Mount>;
    /// Removes the snapshot `key`. Removing a missing one is not an error.
    fn remove(&self, key: &str) -> Result<()>;
}

/// The overlayfs snapshotter and layer store.
#[derive(Debug)]
pub struct Overlay {
    root: PathBuf,
}

const SHORT: usize = 12;

impl Overlay {
    /// Opens (creating) the store at `root`, dropping unfinished unpacks.
    pub fn open(root: &Path) -> Result<Overlay> {
        for d in ["layers", "l", "snapshots", "empty"] {
            let p = root.join(d);
            std::fs::create_dir_all(&p).map_err(Error::io("create", &p))?;
        }
        let tmp = root.join("tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(Error::io("clear", &tmp))?;
        }
        std::fs::create_dir_all(&tmp).map_err(Error::io("create", &tmp))?;
        Ok(Overlay {
            root: root.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn layer_dir(&self, diff_id: &Digest) -> PathBuf {
        self.root.join("layers").join(diff_id.hex())
    }

    fn link(&self, diff_id: &Digest) -> PathBuf {
        self.root.join("l").join(&diff_id.hex()[..SHORT])
    }

    pub fn has_layer(&self, diff_id: &Digest) -> bool {
        self.layer_dir(diff_id).is_dir() && self.link(diff_id).exists()
    }

    /// All unpacked layers.
    pub fn layers(&self) -> Result<Vec<Digest>> {
        crate::digest::list_dir(&self.root.join("layers"))
    }

    /// Runs `fill` on a fresh temporary directory and, if it succeeds, installs that directory as the
    /// layer `diff_id`. On failure nothing is left behind. Blocking: call from a blocking thread.
    pub fn add_layer<T>(&self, diff_id: &Digest, fill: impl FnOnce(&Path) -> Result<T>) -> Result<Option<T>> {
        if self.has_layer(diff_id) {
            return Ok(None);
        }
        let tmp = self.root.join("tmp").join(format!(
            "{}-{}-{}",
            &diff_id.hex()[..SHORT],
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        std::fs::create_dir(&tmp).map_err(Error::io("create", &tmp))?;
        let filled = match fill(&tmp) {
            Ok(v) => v,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&tmp);
                return Err(e);
            }
        };
        let dst = self.layer_dir(diff_id);
        if let Err(e) = std::fs::rename(&tmp, &dst) {
            let _ = std::fs::remove_dir_all(&tmp);
            // Another unpack of the same layer won the race: theirs is as good as ours.
            if !dst.is_dir() {
                return Err(Error::io("rename", &dst)(e));
            }
        }
        self.ensure_link(diff_id)?;
        Ok(Some(filled))
    }

    fn ensure_link(&self, diff_id: &Digest) -> Result<()> {
        let link = self.link(diff_id);
        let target = PathBuf::from("../layers").join(diff_id.hex());
        match std::fs::read_link(&link) {
            Ok(t) if t == target => return Ok(()),
            Ok(t) => {
                return Err(Error::Config {
                    path: link.clone(),
                    detail: format!("short layer link collision: points to {}", t.display()),
                });
            }
            Err(_) => {}
        }
        let tmp = self.root.join("tmp").join(format!("link-{}", diff_id.hex()));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&target, &tmp).map_err(Error::io("symlink", &tmp))?;
        std::fs::rename(&tmp, &link).map_err(Error::io("rename", &link))
    }

    /// Deletes a layer. Blocking.
    pub fn remove_layer(&self, diff_id: &Digest) -> Result<()> {
        let link = self.link(diff_id);
        if let Err(e) = std::fs::remove_file(&link)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            return Err(Error::io("remove", &link)(e));
        }
        let dir = self.layer_dir(diff_id);
        // Rename first, so a crash mid-delete never leaves a half layer under its real name.
        let doomed = self.root.join("tmp").join(format!("rm-{}", diff_id.hex()));
        match std::fs::rename(&dir, &doomed) {
            Ok(()) => std::fs::remove_dir_all(&doomed).map_err(Error::io("remove", &doomed)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("rename", &dir)(e)),
        }
    }

    /// The keys of every snapshot (writable or a view).
    pub fn snapshot_keys(&self) -> Vec<String> {
        std::fs::read_dir(self.root.join("snapshots"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect()
    }

    /// Every layer some snapshot (writable or a view) stands on.
    pub fn layers_in_use(&self) -> Result<std::collections::HashSet<Digest>> {
        let dir = self.root.join("snapshots");
        let mut out = std::collections::HashSet::new();
        for e in std::fs::read_dir(&dir).map_err(Error::io("read dir", &dir))? {
            let e = e.map_err(Error::io("read dir", &dir))?;
            let text = std::fs::read_to_string(e.path().join("parents")).unwrap_or_default();
            out.extend(text.lines().filter_map(|l| Digest::parse(l).ok()));
        }
        Ok(out)
    }

    /// The upper (writable) directory of the snapshot `key`: what its container changed.
    pub fn upper_dir(&self, key: &str) -> Result<PathBuf> {
        Ok(self.snapshot_dir(key)?.join("upper"))
    }

    fn lowerdir(&self, layers: &[Digest]) -> Result<String> {
        let mut parts = Vec::with_capacity(layers.len());
        for l in layers.iter().rev() {
            if !self.has_layer(l) {
                return Err(Error::NotFound {
                    what: format!("layer {l}"),
                });
            }
            parts.push(self.link(l).display().to_string());
        }
        Ok(parts.join(":"))
    }

    fn snapshot_dir(&self, key: &str) -> Result<PathBuf> {
        let ok = !key.is_empty()
            && key.len() <= 128
            && key != "."
            && key != ".."
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !ok {
            return Err(Error::bad("snapshot key", format!("{key:?} is not a valid name")));
        }
        Ok(self.root.join("snapshots").join(key))
    }
}

impl Snapshotter for Overlay {
    fn prepare(&self, key: &str, layers: &[Digest]) -> Result<Mount> {
        let dir = self.snapshot_dir(key)?;
        let lower = if layers.is_empty() {
            self.root.join("empty").display().to_string()
        } else {
            self.lowerdir(layers)?
        };
        for d in ["upper", "work"] {
            let p = dir.join(d);
            std::fs::create_dir_all(&p).map_err(Error::io("create", &p))?;
        }
        // The layers a snapshot stands on are kept by image collection while it exists.
        let parents: String = layers.iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(dir.join("parents"), parents).map_err(Error::io("write", dir.join("parents")))?;
        Ok(Mount {
            fstype: "overlay".into(),
            source: "overlay".into(),
            options: vec![
                format!("lowerdir={lower}"),
                format!("upperdir={}", dir.join("upper").display()),
                format!("workdir={}", dir.join("work").display()),
            ],
        })
    }

    fn view(&self, key: &str, layers: &[Digest]) -> Result<Mount> {
        let dir = self.snapshot_dir(key)?;
        // Its layers are kept by image collection while the view exists, as a writable snapshot's.
        std::fs::create_dir_all(&dir).map_err(Error::io("create", &dir))?;
        let parents: String = layers.iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(dir.join("parents"), parents).map_err(Error::io("write", dir.join("parents")))?;
        match layers {
            [] => Ok(Mount {
                fstype: "none".into(),
                source: self.root.join("empty").display().to_string(),
                options: vec!["bind".into(), "ro".into()],
            }),
            [one] => {
                let lower = self.lowerdir(std::slice::from_ref(one))?;
                Ok(Mount {
                    fstype: "none".into(),
                    source: lower,
                    options: vec!["bind".into(), "ro".into()],
                })
            }
            many => Ok(Mount {
                fstype: "overlay".into(),
                source: "overlay".into(),
                options: vec![format!("lowerdir={}", self.lowerdir(many)?), "ro".into()],
            }),
        }
    }

    fn remove(&self, key: &str) -> Result<()> {
        let dir = self.snapshot_dir(key)?;
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("remove", &dir)(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_install_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let o = Overlay::open(dir.path()).unwrap();
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        assert!(o.add_layer(&a, |_| Err::<(), _>(Error::bad("x", "fail"))).is_err());
        assert!(!o.has_layer(&a));
        assert_eq!(std::fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
        o.add_layer(&a, |p| std::fs::write(p.join("f"), b"1").map_err(Error::io("w", p)))
            .unwrap();
        o.add_layer(&b, |_| Ok(())).unwrap();
        assert!(o.has_layer(&a) && o.has_layer(&b));
        assert_eq!(o.add_layer(&a, |_| Ok(())).unwrap(), None, "second add is a no-op");
        let m = o.prepare("c1", &[a.clone(), b.clone()]).unwrap();
        let lower = &m.options[0];
        assert!(
            lower.starts_with("lowerdir=") && lower.find(&b.hex()[..12]) < lower.find(&a.hex()[..12]),
            "top layer first: {lower}"
        );
        assert!(o.prepare("../x", std::slice::from_ref(&a)).is_err());
        assert!(o.prepare("c2", &[Digest::of(b"missing")]).is_err());
        assert_eq!(
            o.view("v", std::slice::from_ref(&a)).unwrap().options,
            vec!["bind", "ro"]
        );
        assert_eq!(o.layers_in_use().unwrap().len(), 2);
        o.remove("c1").unwrap();
        o.remove("c1").unwrap();
        assert_eq!(
            o.layers_in_use().unwrap(),
            [a.clone()].into(),
            "the view keeps its layer"
        );
        o.remove("v").unwrap();
        assert!(o.layers_in_use().unwrap().is_empty());
        o.remove_layer(&a).unwrap();
        assert!(!o.has_layer(&a));
        assert_eq!(o.layers().unwrap(), vec![b]);
    }
}
