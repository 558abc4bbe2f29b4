//! A container's changes as an OCI layer: an overlayfs upper directory written back as a tar stream.
//!
//! The reverse of [`crate::unpack`]: an overlayfs whiteout (a 0:0 character device) becomes a
//! `.wh.<name>` entry, an opaque directory (`trusted.overlay.opaque=y`) gets a `.wh..wh..opq`
//! entry, a file linked more than once inside the directory is written once and then as hard links
//! to its first path. Entries go out in name order with their modes, owners and mtimes, so the same
//! tree always gives the same bytes. Extended attributes are not carried (yet).

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Writes the changes recorded in `upper` as an uncompressed layer tar to `out`; returns `out`.
pub fn write_layer<W: Write>(upper: &Path, out: W) -> Result<W> {
    let mut b = tar::Builder::new(out);
    b.follow_symlinks(false);
    let mut w = Writer {
        root: upper,
        builder: b,
        links: HashMap::new(),
    };
    w.dir(Path::new(""))?;
    w.builder.into_inner().map_err(Error::io("finish the layer of", upper))
}

struct Writer<'a, W: Write> {
    root: &'a Path,
    builder: tar::Builder<W>,
    /// (dev, inode) of files with several links → the path first written.
    links: HashMap<(u64, u64), PathBuf>,
}

impl<W: Write> Writer<'_, W> {
    /// Writes the entries of the directory `rel` (relative to the root), depth first.
    fn dir(&mut self, rel: &Path) -> Result<()> {
        let dir = self.root.join(rel);
        let mut names: Vec<_> = fs::read_dir(&dir)
            .map_err(Error::io("read dir", &dir))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()
            .map_err(Error::io("read dir", &dir))?;
        names.sort();
        for name in names {
            let path = rel.join(&name);
            let full = self.root.join(&path);
            let meta = fs::symlink_metadata(&full).map_err(Error::io("stat", &full))?;
            let kind = meta.file_type();
            if kind.is_char_device() && meta.rdev() == 0 {
                let marker = rel.join(format!(".wh.{}", name.to_string_lossy()));
                self.empty_file(&marker, &meta)?;
                continue;
            }
            self.entry(&path, &full, &meta)?;
            if kind.is_dir() {
                if xattr::get(&full, "trusted.overlay.opaque").ok().flatten().as_deref() == Some(b"y") {
                    self.empty_file(&path.join(".wh..wh..opq"), &meta)?;
                }
                self.dir(&path)?;
            }
        }
        Ok(())
    }

    fn entry(&mut self, path: &Path, full: &Path, meta: &fs::Metadata) -> Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_metadata_in_mode(meta, tar::HeaderMode::Complete);
        let err = Error::io("write the layer entry for", full);
        if meta.file_type().is_symlink() {
            let target = fs::read_link(full).map_err(Error::io("read link", full))?;
            h.set_size(0);
            return self.builder.append_link(&mut h, path, &target).map_err(err);
        }
        if meta.is_file() && meta.nlink() > 1 {
            let key = (meta.dev(), meta.ino());
            if let Some(first) = self.links.get(&key) {
                h.set_entry_type(tar::EntryType::Link);
                h.set_size(0);
                let first = first.clone();
                return self.builder.append_link(&mut h, path, &first).map_err(err);
            }
            self.links.insert(key, path.to_path_buf());
        }
        if meta.is_file() {
            let f = fs::File::open(full).map_err(Error::io("open", full))?;
            return self.builder.append_data(&mut h, path, f).map_err(err);
        }
        h.set_size(0);
        self.builder.append_data(&mut h, path, io::empty()).map_err(err)
    }

    /// An empty regular file entry (a whiteout marker), owned by root, with `like`'s mtime.
    fn empty_file(&mut self, path: &Path, like: &fs::Metadata) -> Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(like.mtime().max(0) as u64);
        h.set_size(0);
        self.builder
            .append_data(&mut h, path, io::empty())
            .map_err(Error::io("write the whiteout", path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(tar: &[u8]) -> Vec<(String, tar::EntryType, String)> {
        let mut a = tar::Archive::new(tar);
        a.entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let link = e
                    .link_name()
                    .unwrap()
                    .map(|l| l.display().to_string())
                    .unwrap_or_default();
                (e.path().unwrap().display().to_string(), e.header().entry_type(), link)
            })
            .collect()
    }

    #[test]
    fn upper_dir_becomes_a_layer_and_back() {
        let d = tempfile::tempdir().unwrap();
        let up = d.path().join("up");
        fs::create_dir_all(up.join("etc/sub")).unwrap();
        fs::write(up.join("etc/b"), b"bee").unwrap();
        fs::write(up.join("etc/a"), b"a").unwrap();
        fs::hard_link(up.join("etc/a"), up.join("etc/sub/a2")).unwrap();
        std::os::unix::fs::symlink("../b", up.join("etc/sub/l")).unwrap();
        let tar = write_layer(&up, Vec::new()).unwrap();
        assert_eq!(
            names(&tar),
            vec![
                ("etc".into(), tar::EntryType::Directory, String::new()),
                ("etc/a".into(), tar::EntryType::Regular, String::new()),
                ("etc/b".into(), tar::EntryType::Regular, String::new()),
                ("etc/sub".into(), tar::EntryType::Directory, String::new()),
                ("etc/sub/a2".into(), tar::EntryType::Link, "etc/a".into()),
                ("etc/sub/l".into(), tar::EntryType::Symlink, "../b".into()),
            ]
        );
        assert_eq!(tar, write_layer(&up, Vec::new()).unwrap(), "same tree, same bytes");

        let back = d.path().join("back");
        fs::create_dir(&back).unwrap();
        let file = d.path().join("layer.tar");
        fs::write(&file, &tar).unwrap();
        crate::unpack::apply_tar(&file, &back).unwrap();
        assert_eq!(fs::read(back.join("etc/b")).unwrap(), b"bee");
        assert_eq!(fs::read(back.join("etc/sub/a2")).unwrap(), b"a");
        assert_eq!(fs::read_link(back.join("etc/sub/l")).unwrap(), Path::new("../b"));
    }

    #[test]
    fn whiteouts_and_opaque_dirs_become_markers() {
        if !berth_test_report::root_or_not_tested("image::diff::whiteouts_and_opaque_dirs_become_markers", "mknod") {
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let up = d.path().join("up");
        fs::create_dir_all(up.join("gone-dir")).unwrap();
        crate::sys::make_whiteout(&up.join("deleted")).unwrap();
        crate::sys::set_opaque(&up.join("gone-dir")).unwrap();
        let tar = write_layer(&up, Vec::new()).unwrap();
        let got: Vec<String> = names(&tar).into_iter().map(|(n, _, _)| n).collect();
        assert_eq!(got, vec![".wh.deleted", "gone-dir", "gone-dir/.wh..wh..opq"]);

        let back = d.path().join("back");
        fs::create_dir(&back).unwrap();
        let file = d.path().join("layer.tar");
        fs::write(&file, &tar).unwrap();
        crate::unpack::apply_tar(&file, &back).unwrap();
        let m = fs::symlink_metadata(back.join("deleted")).unwrap();
        assert!(m.file_type().is_char_device() && m.rdev() == 0);
        assert_eq!(
            xattr::get(back.join("gone-dir"), "trusted.overlay.opaque")
                .unwrap()
                .as_deref(),
            Some(&b"y"[..])
        );
    }
}
