//! Checkpoint archives (forensic container checkpointing, KEP-2008): what CheckpointContainer
//! writes and what CreateContainer restores from.
//!
//! One uncompressed tar, laid out as CRI-O's and containerd's are (and as `checkpointctl` reads):
//! - `checkpoint/` — CRIU's images of the container's processes (`runc checkpoint`);
//! - `config.dump` — JSON: the container's ID, name, image (`rootfsImageName`, `rootfsImageRef`),
//!   runtime and times, and berth's `containerConfig`: the CRI `ContainerConfig` it was made from;
//! - `spec.dump` — the OCI spec it ran with;
//! - `rootfs-diff.tar` — what it changed in its root filesystem, as an OCI layer (whiteouts for
//!   deletions);
//! - `dump.log` — CRIU's log of the dump.
//!
//! Reading an archive trusts nothing in it: only those names are taken, CRIU's images only as
//! plain files directly under `checkpoint/`, and the root filesystem changes by the image
//! unpacker's rules (nothing may land outside the container's upper directory).

use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use berth_proto::cri::ContainerConfig;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub const IMAGES_DIR: &str = "checkpoint";
pub const CONFIG_DUMP: &str = "config.dump";
pub const SPEC_DUMP: &str = "spec.dump";
pub const ROOTFS_DIFF: &str = "rootfs-diff.tar";
pub const DUMP_LOG: &str = "dump.log";
/// Longest `config.dump` read: it is a few kilobytes of JSON.
const CONFIG_LIMIT: u64 = 4 << 20;

/// `config.dump`: checkpointctl's fields, and the CRI config berth restores from.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Dump {
    pub id: String,
    pub name: String,
    pub rootfs_image: String,
    pub rootfs_image_ref: String,
    pub rootfs_image_name: String,
    #[serde(rename = "runtime")]
    pub oci_runtime: String,
    pub created_time: String,
    pub checkpointed_time: String,
    /// The CRI config the container was created with (berth's archives only).
    #[serde(default)]
    pub container_config: Option<ContainerConfig>,
    /// Whether it ran in its pod's own user namespace (berth's archives only).
    #[serde(default)]
    pub user_namespace: bool,
}

/// RFC 3339 (nanoseconds, UTC) for `ns` since the epoch.
pub fn rfc3339(ns: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ns.max(0) as u64);
    let mut out = Vec::new();
    berth_proto::crilog::push_timestamp(&mut out, t);
    String::from_utf8_lossy(&out).into_owned()
}

/// What goes into an archive, all on disk already.
pub struct Parts<'a> {
    pub dump: &'a Dump,
    pub images: &'a Path,
    pub spec: &'a Path,
    pub rootfs_upper: &'a Path,
    pub dump_log: &'a Path,
    /// A scratch file for the rootfs diff (its size must be known before it goes into the tar).
    pub scratch: &'a Path,
}

/// Writes the archive at `location`, whole or not at all (a temporary file renamed into place).
pub fn write(location: &Path, parts: &Parts<'_>) -> Result<()> {
    let diff =
        std::fs::File::create(parts.scratch).map_err(Error::io(format!("create {}", parts.scratch.display())))?;
    let diff = berth_image::diff::write_layer(parts.rootfs_upper, std::io::BufWriter::new(diff))?;
    diff.into_inner()
        .map_err(|e| Error::Internal(format!("write {}: {e}", parts.scratch.display())))?
        .sync_all()
        .map_err(Error::io(format!("write {}", parts.scratch.display())))?;

    let tmp = location.with_file_name(format!(
        ".{}.tmp-{}",
        location.file_name().and_then(|n| n.to_str()).unwrap_or("checkpoint"),
        std::process::id()
    ));
    let written = (|| -> std::io::Result<()> {
        let f = std::fs::File::create(&tmp)?;
        let mut b = tar::Builder::new(std::io::BufWriter::new(f));
        b.follow_symlinks(false);
        b.append_dir_all(IMAGES_DIR, parts.images)?;
        let config = serde_json::to_vec_pretty(parts.dump).map_err(std::io::Error::other)?;
        append_bytes(&mut b, CONFIG_DUMP, &config)?;
        b.append_path_with_name(parts.spec, SPEC_DUMP)?;
        b.append_path_with_name(parts.scratch, ROOTFS_DIFF)?;
        if parts.dump_log.is_file() {
            b.append_path_with_name(parts.dump_log, DUMP_LOG)?;
        }
        let f = b.into_inner()?.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()
    })();
    let _ = std::fs::remove_file(parts.scratch);
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, location)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(format!(
            "write the checkpoint archive {}",
            location.display()
        ))(e));
    }
    Ok(())
}

fn append_bytes<W: Write>(b: &mut tar::Builder<W>, name: &str, data: &[u8]) -> std::io::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o600);
    h.set_size(data.len() as u64);
    h.set_mtime(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    );
    b.append_data(&mut h, name, data)
}

/// Whether a CreateContainer image names a checkpoint archive (a file on this node, by absolute
/// path, as CRI-O and containerd take it) rather than an image.
pub fn archive_named(image: &str) -> Option<PathBuf> {
    let p = Path::new(image);
    (p.is_absolute() && p.is_file()).then(|| p.to_path_buf())
}

fn bad(archive: &Path, why: impl std::fmt::Display) -> Error {
    Error::InvalidArgument(format!("checkpoint archive {}: {why}", archive.display()))
}

/// Reads `config.dump` from the archive.
pub fn read_dump(archive: &Path) -> Result<Dump> {
    let f = std::fs::File::open(archive).map_err(|e| bad(archive, e))?;
    let mut a = tar::Archive::new(std::io::BufReader::new(f));
    for entry in a.entries().map_err(|e| bad(archive, e))? {
        let entry = entry.map_err(|e| bad(archive, e))?;
        if clean_name(&entry).as_deref() != Some(Path::new(CONFIG_DUMP)) {
            continue;
        }
        let mut text = Vec::new();
        entry
            .take(CONFIG_LIMIT)
            .read_to_end(&mut text)
            .map_err(|e| bad(archive, e))?;
        return serde_json::from_slice(&text).map_err(|e| bad(archive, format!("{CONFIG_DUMP}: {e}")));
    }
    Err(bad(
        archive,
        format!("no {CONFIG_DUMP} in it: not a checkpoint archive"),
    ))
}

fn clean_name<R: Read>(entry: &tar::Entry<'_, R>) -> Option<PathBuf> {
    let raw = entry.path().ok()?;
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(out)
}

/// Unpacks an archive for a restore into the new container's bundle (CRIU's images in
/// [`IMAGES_DIR`]) and its snapshot's upper directory `upper`.
pub fn unpack_into_bundle(archive: &Path, bundle: &Path, upper: &Path) -> Result<()> {
    unpack(archive, &bundle.join(IMAGES_DIR), upper, &bundle.join(ROOTFS_DIFF))
}

/// Unpacks an archive for a restore: CRIU's images into `images` (created), the root filesystem
/// changes onto `upper` (a fresh snapshot's upper directory, not mounted). `scratch` holds the
/// changes meanwhile.
pub fn unpack(archive: &Path, images: &Path, upper: &Path, scratch: &Path) -> Result<()> {
    std::fs::create_dir_all(images).map_err(Error::io(format!("create {}", images.display())))?;
    let f = std::fs::File::open(archive).map_err(|e| bad(archive, e))?;
    let mut a = tar::Archive::new(std::io::BufReader::new(f));
    let (mut found_images, mut found_diff) = (false, false);
    for entry in a.entries().map_err(|e| bad(archive, e))? {
        let mut entry = entry.map_err(|e| bad(archive, e))?;
        let Some(name) = clean_name(&entry) else {
            return Err(bad(archive, "an entry's path is absolute or has '..'"));
        };
        let kind = entry.header().entry_type();
        let target = if name == Path::new(ROOTFS_DIFF) && kind.is_file() {
            found_diff = true;
            scratch.to_path_buf()
        } else if let Ok(file) = name.strip_prefix(IMAGES_DIR) {
            match (file.components().count(), kind) {
                (0, tar::EntryType::Directory) => continue,
                (1, k) if k.is_file() => {
                    found_images = true;
                    images.join(file)
                }
                _ => return Err(bad(archive, format!("{name:?}: CRIU's images are plain files"))),
            }
        } else {
            continue;
        };
        let mut out = std::fs::File::create(&target).map_err(Error::io(format!("create {}", target.display())))?;
        std::io::copy(&mut entry, &mut out).map_err(|e| bad(archive, format!("{name:?}: {e}")))?;
    }
    if !found_images {
        return Err(bad(archive, format!("no CRIU images under {IMAGES_DIR}/")));
    }
    if found_diff {
        let applied = berth_image::unpack::apply_tar(scratch, upper);
        let _ = std::fs::remove_file(scratch);
        applied?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o644);
            h.set_size(data.len() as u64);
            // set_path refuses `..`; write the raw name as a hostile archive would.
            h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn an_archive_goes_out_and_comes_back() {
        let d = tempfile::tempdir().unwrap();
        let p = |n: &str| d.path().join(n);
        for dir in ["images", "upper/etc", "new-upper"] {
            std::fs::create_dir_all(p(dir)).unwrap();
        }
        std::fs::write(p("images/core-1.img"), b"core").unwrap();
        std::fs::write(p("spec.json"), b"{}").unwrap();
        std::fs::write(p("upper/etc/motd"), b"changed").unwrap();
        let dump = Dump {
            id: "c1".into(),
            rootfs_image_name: "busybox:latest".into(),
            created_time: rfc3339(1_700_000_000_123_456_789),
            ..Default::default()
        };
        assert_eq!(dump.created_time, "2023-11-14T22:13:20.123456789Z");
        let archive = p("c.tar");
        let parts = Parts {
            dump: &dump,
            images: &p("images"),
            spec: &p("spec.json"),
            rootfs_upper: &p("upper"),
            dump_log: &p("no-log"),
            scratch: &p("diff.tar"),
        };
        write(&archive, &parts).unwrap();
        assert!(!p("diff.tar").exists());
        assert_eq!(read_dump(&archive).unwrap().rootfs_image_name, "busybox:latest");
        assert_eq!(archive_named(archive.to_str().unwrap()), Some(archive.clone()));
        assert_eq!(archive_named("busybox:latest"), None);

        unpack(&archive, &p("restored"), &p("new-upper"), &p("scratch")).unwrap();
        assert_eq!(std::fs::read(p("restored/core-1.img")).unwrap(), b"core");
        assert_eq!(std::fs::read(p("new-upper/etc/motd")).unwrap(), b"changed");
    }

    #[test]
    fn hostile_archives_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let try_unpack = |entries: &[(&str, &[u8])]| {
            let a = d.path().join("a.tar");
            std::fs::write(&a, tar_of(entries)).unwrap();
            unpack(&a, &d.path().join("img"), &d.path().join("up"), &d.path().join("s"))
                .unwrap_err()
                .to_string()
        };
        assert!(try_unpack(&[("checkpoint/../../x", b"")]).contains("'..'"));
        assert!(try_unpack(&[("checkpoint/sub/x.img", b"")]).contains("plain files"));
        assert!(try_unpack(&[("config.dump", b"{}")]).contains("no CRIU images"));
        assert!(!d.path().join("x").exists());
        let a = d.path().join("b.tar");
        std::fs::write(&a, tar_of(&[("spec.dump", b"{}")])).unwrap();
        assert!(
            read_dump(&a)
                .unwrap_err()
                .to_string()
                .contains("not a checkpoint archive")
        );
    }
}
