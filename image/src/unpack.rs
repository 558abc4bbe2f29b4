//! Unpacking a layer tarball into a directory of its own, in overlayfs form.
//!
//! Safety rules: every entry must stay inside the layer directory. Absolute paths and `..` components
//! are refused, and so is any entry whose parent path passes through a symlink, or a hardlink whose
//! target does so or is missing. Symlinks themselves are kept verbatim: they resolve inside the
//! container's root at run time. An existing entry is removed before it is replaced, so a write never
//! follows a symlink the same layer planted. OCI whiteouts become overlayfs whiteouts: `.wh.name` a
//! 0:0 character device, `.wh..wh..opq` the `trusted.overlay.opaque` xattr on its directory. Extended
//! attributes in the `trusted.overlay.` namespace are never taken from a layer.

use std::cell::RefCell;
use std::fs;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

use crate::digest::{Digest, Hasher};
use crate::error::{Error, Result};
use crate::manifest::Compression;
use crate::sys;

const WHITEOUT_PREFIX: &str = ".wh.";
const WHITEOUT_META_PREFIX: &str = ".wh..wh.";
const WHITEOUT_OPAQUE: &str = ".wh..wh..opq";

/// What a finished unpack measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unpacked {
    /// Size of the uncompressed tar stream.
    pub tar_size: u64,
}

struct Tee<R> {
    inner: R,
    hasher: Rc<RefCell<Hasher>>,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.borrow_mut().update(&buf[..n]);
        Ok(n)
    }
}

/// Unpacks the layer blob at `blob` into the empty directory `dest`, checking that the compressed bytes
/// hash to `blob_digest` and the uncompressed tar stream to `diff_id`.
pub fn unpack_layer(
    blob: &Path,
    compression: Compression,
    blob_digest: &Digest,
    diff_id: &Digest,
    dest: &Path,
) -> Result<Unpacked> {
    let file = fs::File::open(blob).map_err(Error::io("open", blob))?;
    let mut rest = file.try_clone().map_err(Error::io("open", blob))?;
    let compressed_hash = Rc::new(RefCell::new(Hasher::default()));
    let compressed = io::BufReader::with_capacity(
        128 << 10,
        Tee {
            inner: file,
            hasher: compressed_hash.clone(),
        },
    );
    let decompressed: Box<dyn Read> = match compression {
        Compression::None => Box::new(compressed),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(compressed)),
        Compression::Zstd => {
            Box::new(zstd::stream::read::Decoder::with_buffer(compressed).map_err(|e| bad_stream(blob_digest, e))?)
        }
    };
    let tar_hash = Rc::new(RefCell::new(Hasher::default()));
    let mut archive = tar::Archive::new(Tee {
        inner: decompressed,
        hasher: tar_hash.clone(),
    });
    archive.set_preserve_permissions(true);
    archive.set_preserve_mtime(true);
    archive.set_preserve_ownerships(true);
    archive.set_unpack_xattrs(false);
    archive.set_overwrite(true);
    archive.set_ignore_zeros(false);

    let layer = blob_digest.to_string();
    let entries = archive.entries().map_err(|e| bad_stream(blob_digest, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| bad_stream(blob_digest, e))?;
        unpack_entry(entry, dest, &layer)?;
    }
    // Read what follows the end-of-archive marker so both digests cover whole streams.
    let mut inner = archive.into_inner();
    io::copy(&mut inner, &mut io::sink()).map_err(|e| bad_stream(blob_digest, e))?;
    drop(inner);
    let mut tail = Vec::new();
    rest.read_to_end(&mut tail).map_err(Error::io("read", blob))?;
    compressed_hash.borrow_mut().update(&tail);

    let (tar_digest, tar_size) = tar_hash.take().finish();
    if &tar_digest != diff_id {
        return Err(Error::DigestMismatch {
            what: format!("uncompressed layer {blob_digest} (diff_id)"),
            expected: diff_id.to_string(),
            actual: tar_digest.to_string(),
        });
    }
    let (blob_actual, _) = compressed_hash.take().finish();
    if &blob_actual != blob_digest {
        return Err(Error::DigestMismatch {
            what: format!("layer blob {}", blob.display()),
            expected: blob_digest.to_string(),
            actual: blob_actual.to_string(),
        });
    }
    Ok(Unpacked { tar_size })
}

/// Applies an uncompressed layer tar that comes with no digest (a container's changes: a
/// checkpoint's `rootfs-diff.tar`) onto `dest`, an overlay upper directory not mounted, by the rules
/// of [`unpack_layer`].
pub fn apply_tar(tar: &Path, dest: &Path) -> Result<()> {
    let file = fs::File::open(tar).map_err(Error::io("open", tar))?;
    let mut archive = tar::Archive::new(io::BufReader::with_capacity(128 << 10, file));
    archive.set_preserve_permissions(true);
    archive.set_preserve_mtime(true);
    archive.set_preserve_ownerships(true);
    archive.set_unpack_xattrs(false);
    archive.set_overwrite(true);
    let label = tar.display().to_string();
    let bad = |e: io::Error| Error::BadContent {
        what: format!("layer {label}"),
        detail: e.to_string(),
    };
    for entry in archive.entries().map_err(bad)? {
        unpack_entry(entry.map_err(bad)?, dest, &label)?;
    }
    Ok(())
}

fn bad_stream(layer: &Digest, e: io::Error) -> Error {
    Error::BadContent {
        what: format!("layer {layer}"),
        detail: e.to_string(),
    }
}

fn unsafe_entry(layer: &str, entry: &Path, reason: impl Into<String>) -> Error {
    Error::UnsafeLayer {
        layer: layer.to_string(),
        entry: entry.display().to_string(),
        reason: reason.into(),
    }
}

/// Turns an archive path into a clean relative path, refusing absolute paths and `..`.
/// Returns `None` for the archive root itself (`./`).
fn clean_path(layer: &str, raw: &Path) -> Result<Option<PathBuf>> {
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => return Err(unsafe_entry(layer, raw, "path contains '..'")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(unsafe_entry(layer, raw, "absolute path"));
            }
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

/// Makes sure every directory on the way to `rel`'s parent exists as a real directory inside `dest`,
/// creating missing ones; a symlink or a file on the way is refused.
fn ensure_parents(dest: &Path, rel: &Path, layer: &str, create: bool) -> Result<()> {
    let Some(parent) = rel.parent() else {
        return Ok(());
    };
    let mut cur = dest.to_path_buf();
    for c in parent.components() {
        cur.push(c);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(unsafe_entry(
                    layer,
                    rel,
                    format!("parent {:?} is a symlink", strip(dest, &cur)),
                ));
            }
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(unsafe_entry(
                    layer,
                    rel,
                    format!("parent {:?} is not a directory", strip(dest, &cur)),
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                fs::create_dir(&cur).map_err(Error::io("create", &cur))?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(unsafe_entry(
                    layer,
                    rel,
                    format!("parent {:?} does not exist", strip(dest, &cur)),
                ));
            }
            Err(e) => return Err(Error::io("stat", &cur)(e)),
        }
    }
    Ok(())
}

fn strip(dest: &Path, p: &Path) -> PathBuf {
    p.strip_prefix(dest).unwrap_or(p).to_path_buf()
}

/// Removes whatever is at `path` (never following a symlink), so the next write creates it afresh.
fn remove_existing(path: &Path, keep_dir: bool) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() && !m.file_type().is_symlink() => {
            if !keep_dir {
                fs::remove_dir_all(path).map_err(Error::io("remove", path))?;
            }
            Ok(())
        }
        Ok(_) => fs::remove_file(path).map_err(Error::io("remove", path)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("stat", path)(e)),
    }
}

fn unpack_entry<R: Read>(mut entry: tar::Entry<'_, R>, dest: &Path, layer: &str) -> Result<()> {
    let raw = entry
        .path()
        .map_err(|e| unsafe_entry(layer, Path::new("?"), format!("unreadable path: {e}")))?
        .into_owned();
    let kind = entry.header().entry_type();
    if matches!(kind, tar::EntryType::XGlobalHeader | tar::EntryType::XHeader) {
        return Ok(());
    }
    let Some(rel) = clean_path(layer, &raw)? else {
        return Ok(()); // the root of the layer: its attributes belong to the container's root
    };
    ensure_parents(dest, &rel, layer, true)?;
    let full = dest.join(&rel);
    let name = rel.file_name().and_then(|n| n.to_str()).unwrap_or_default();

    if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
        return whiteout(dest, &full, name, hidden, layer, &raw);
    }

    let xattrs = entry_xattrs(&mut entry);
    match kind {
        tar::EntryType::Link => {
            let link = entry
                .link_name()
                .map_err(|e| unsafe_entry(layer, &raw, format!("unreadable link target: {e}")))?
                .ok_or_else(|| unsafe_entry(layer, &raw, "hardlink without target"))?
                .into_owned();
            return hard_link(dest, &full, &link, layer, &raw);
        }
        // The tar crate writes these as empty regular files: make them for real, as containerd does.
        tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
            remove_existing(&full, false)?;
            return special_file(&entry, &full, layer, &raw);
        }
        tar::EntryType::Directory => remove_existing(&full, true)?,
        _ => remove_existing(&full, false)?,
    }
    entry.unpack(&full).map_err(|e| Error::BadContent {
        what: format!("layer {layer} entry {raw:?}"),
        detail: e.to_string(),
    })?;
    if kind != tar::EntryType::Symlink {
        for (k, v) in xattrs {
            if k.starts_with("trusted.overlay.") {
                continue;
            }
            // Filesystems without xattr support (or a namespace we may not set) should not sink a pull.
            if let Err(e) = xattr::set(&full, &k, &v) {
                tracing::debug!(path = %full.display(), xattr = %k, error = %e, "xattr not set");
            }
        }
    }
    Ok(())
}

/// A character or block device or a FIFO, as the entry describes it.
fn special_file<R: Read>(entry: &tar::Entry<'_, R>, full: &Path, layer: &str, raw: &Path) -> Result<()> {
    let h = entry.header();
    let bad = |what: &str| unsafe_entry(layer, raw, format!("unreadable {what}"));
    let kind = match h.entry_type() {
        tar::EntryType::Char => nix::sys::stat::SFlag::S_IFCHR,
        tar::EntryType::Block => nix::sys::stat::SFlag::S_IFBLK,
        _ => nix::sys::stat::SFlag::S_IFIFO,
    };
    let dev = if kind == nix::sys::stat::SFlag::S_IFIFO {
        (0, 0)
    } else {
        (
            h.device_major().map_err(|_| bad("device major"))?.unwrap_or(0),
            h.device_minor().map_err(|_| bad("device minor"))?.unwrap_or(0),
        )
    };
    let owner = (
        u32::try_from(h.uid().map_err(|_| bad("uid"))?).map_err(|_| bad("uid"))?,
        u32::try_from(h.gid().map_err(|_| bad("gid"))?).map_err(|_| bad("gid"))?,
    );
    let mode = h.mode().map_err(|_| bad("mode"))?;
    let mtime = i64::try_from(h.mtime().map_err(|_| bad("mtime"))?).unwrap_or(0);
    sys::make_node(full, kind, mode, dev, owner, mtime)
}

/// An overlayfs whiteout for a `.wh.` entry: `.wh..wh..opq` makes the directory opaque, `.wh.<name>`
/// hides `<name>` of the layers below.
fn whiteout(dest: &Path, full: &Path, name: &str, hidden: &str, layer: &str, raw: &Path) -> Result<()> {
    let parent = full.parent().unwrap_or(dest);
    if name == WHITEOUT_OPAQUE {
        sys::set_opaque(parent)?;
    } else if !name.starts_with(WHITEOUT_META_PREFIX) {
        if hidden.is_empty() || hidden == "." || hidden == ".." {
            return Err(unsafe_entry(layer, raw, "bad whiteout name"));
        }
        let target = parent.join(hidden);
        remove_existing(&target, false)?;
        sys::make_whiteout(&target)?;
    }
    Ok(())
}

/// A hard link at `full` to `link`, which must be a file this layer (or one below) put in `dest`.
fn hard_link(dest: &Path, full: &Path, link: &Path, layer: &str, raw: &Path) -> Result<()> {
    let target_rel = clean_path(layer, link)?.ok_or_else(|| unsafe_entry(layer, raw, "hardlink to the layer root"))?;
    ensure_parents(dest, &target_rel, layer, false).map_err(|e| match e {
        Error::UnsafeLayer { reason, .. } if reason.contains("symlink") => unsafe_entry(
            layer,
            raw,
            format!("hardlink target {link:?} leads outside the layer: {reason}"),
        ),
        Error::UnsafeLayer { reason, .. } => unsafe_entry(
            layer,
            raw,
            format!("hardlink target {link:?} is not in this layer: {reason}"),
        ),
        other => other,
    })?;
    let target = dest.join(&target_rel);
    match fs::symlink_metadata(&target) {
        Ok(m) if m.is_dir() => {
            return Err(unsafe_entry(layer, raw, "hardlink to a directory"));
        }
        Ok(_) => {}
        Err(_) => {
            return Err(unsafe_entry(
                layer,
                raw,
                format!("hardlink target {link:?} is not in this layer"),
            ));
        }
    }
    if target == *full {
        return Ok(());
    }
    remove_existing(full, false)?;
    fs::hard_link(&target, full).map_err(Error::io("link", full))
}

fn entry_xattrs<R: Read>(entry: &mut tar::Entry<'_, R>) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    if let Ok(Some(exts)) = entry.pax_extensions() {
        for ext in exts.flatten() {
            if let Ok(key) = ext.key()
                && let Some(name) = key.strip_prefix("SCHILY.xattr.")
            {
                out.push((name.to_string(), ext.value_bytes().to_vec()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_paths() {
        let l = "x";
        assert_eq!(clean_path(l, Path::new("./a/b")).unwrap(), Some(PathBuf::from("a/b")));
        assert_eq!(clean_path(l, Path::new("a/./b/")).unwrap(), Some(PathBuf::from("a/b")));
        assert_eq!(clean_path(l, Path::new("./")).unwrap(), None);
        assert!(clean_path(l, Path::new("/etc/passwd")).is_err());
        assert!(clean_path(l, Path::new("a/../../b")).is_err());
        assert!(clean_path(l, Path::new("a/..")).is_err());
    }
}

#[cfg(test)]
mod layer_tests {
    use super::*;

    enum E<'a> {
        Dir(&'a str),
        File(&'a str, &'a [u8]),
        Symlink(&'a str, &'a str),
        Hardlink(&'a str, &'a str),
    }

    /// A tar with raw names (the tar crate's builder would refuse the malicious ones).
    fn tar(entries: &[E<'_>]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let uid = nix::unistd::Uid::effective().as_raw() as u64;
        let gid = nix::unistd::Gid::effective().as_raw() as u64;
        for e in entries {
            let mut h = tar::Header::new_gnu();
            let (name, kind, data, link): (&str, tar::EntryType, &[u8], Option<&str>) = match e {
                E::Dir(n) => (n, tar::EntryType::Directory, b"", None),
                E::File(n, d) => (n, tar::EntryType::Regular, d, None),
                E::Symlink(n, t) => (n, tar::EntryType::Symlink, b"", Some(t)),
                E::Hardlink(n, t) => (n, tar::EntryType::Link, b"", Some(t)),
            };
            let raw = &mut h.as_old_mut().name;
            raw[..name.len()].copy_from_slice(name.as_bytes());
            if let Some(l) = link {
                h.as_old_mut().linkname[..l.len()].copy_from_slice(l.as_bytes());
            }
            h.set_entry_type(kind);
            h.set_size(data.len() as u64);
            h.set_mode(if kind == tar::EntryType::Directory {
                0o755
            } else {
                0o644
            });
            h.set_uid(uid);
            h.set_gid(gid);
            h.set_cksum();
            b.append(&h, data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn run(entries: &[E<'_>]) -> (tempfile::TempDir, Result<Unpacked>) {
        let dir = tempfile::tempdir().unwrap();
        let data = tar(entries);
        let blob = dir.path().join("blob");
        std::fs::write(&blob, &data).unwrap();
        let dest = dir.path().join("layer");
        std::fs::create_dir(&dest).unwrap();
        let d = Digest::of(&data);
        let res = unpack_layer(&blob, Compression::None, &d, &d, &dest);
        (dir, res)
    }

    fn refused(entries: &[E<'_>]) -> String {
        match run(entries).1 {
            Err(e @ Error::UnsafeLayer { .. }) => e.to_string(),
            other => panic!("expected refusal, got {other:?}"),
        }
    }

    #[test]
    fn plain_layer_unpacks_and_is_verified() {
        let (dir, res) = run(&[
            E::Dir("etc"),
            E::File("etc/a", b"hello"),
            E::Symlink("abs", "/etc/a"),
            E::Hardlink("etc/b", "etc/a"),
        ]);
        res.unwrap();
        let l = dir.path().join("layer");
        assert_eq!(std::fs::read(l.join("etc/a")).unwrap(), b"hello");
        assert_eq!(
            std::fs::read_link(l.join("abs")).unwrap(),
            PathBuf::from("/etc/a"),
            "symlinks are kept verbatim"
        );
        assert_eq!(std::fs::read(l.join("etc/b")).unwrap(), b"hello");

        // A wrong diff_id is caught.
        let data = tar(&[E::File("x", b"1")]);
        let blob = dir.path().join("blob2");
        std::fs::write(&blob, &data).unwrap();
        let dest = dir.path().join("layer2");
        std::fs::create_dir(&dest).unwrap();
        let err = unpack_layer(
            &blob,
            Compression::None,
            &Digest::of(&data),
            &Digest::of(b"other"),
            &dest,
        )
        .unwrap_err();
        assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
    }

    #[test]
    fn escapes_are_refused() {
        assert!(refused(&[E::File("../../escaped", b"x")]).contains(".."));
        assert!(refused(&[E::File("/escaped", b"x")]).contains("absolute"));
        assert!(refused(&[E::Symlink("link", "/tmp"), E::File("link/escaped", b"x")]).contains("symlink"));
        assert!(refused(&[E::Symlink("up", "../.."), E::Dir("up/x")]).contains("symlink"));
        assert!(refused(&[E::Hardlink("hl", "../../../etc/passwd")]).contains(".."));
        assert!(refused(&[E::Symlink("l", "/etc"), E::Hardlink("hl", "l/passwd")]).contains("outside"));
        assert!(refused(&[E::Hardlink("hl", "etc/missing")]).contains("not in this layer"));
    }

    #[test]
    fn a_file_replacing_a_symlink_does_not_follow_it() {
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("victim");
        std::fs::write(&target, b"original").unwrap();
        let t = target.to_str().unwrap().to_string();
        let (dir, res) = run(&[E::Symlink("f", &t), E::File("f", b"overwritten")]);
        res.unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"original");
        assert_eq!(std::fs::read(dir.path().join("layer/f")).unwrap(), b"overwritten");
    }

    #[test]
    fn whiteouts_become_overlay_whiteouts() {
        if !berth_test_report::root_or_not_tested("image::unpack::whiteouts_become_overlay_whiteouts", "mknod") {
            return;
        }
        use std::os::unix::fs::FileTypeExt as _;
        use std::os::unix::fs::MetadataExt as _;
        let (dir, res) = run(&[
            E::File("a/.wh.gone", b""),
            E::File("o/.wh..wh..opq", b""),
            E::File("o/new", b"1"),
        ]);
        res.unwrap();
        let l = dir.path().join("layer");
        let m = std::fs::symlink_metadata(l.join("a/gone")).unwrap();
        assert!(m.file_type().is_char_device() && m.rdev() == 0, "0:0 char device");
        assert!(!l.join("a/.wh.gone").exists());
        assert_eq!(
            xattr::get(l.join("o"), "trusted.overlay.opaque").unwrap(),
            Some(b"y".to_vec())
        );
        assert!(!l.join("o/.wh..wh..opq").exists());
        assert!(refused(&[E::File(".wh..", b"")]).contains("whiteout"));
    }
}
