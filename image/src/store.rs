//! Image metadata, one JSON file per image under `<root>/images/`, each written to a temporary name,
//! synced and renamed, so a crash leaves either the old record or the new one.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::manifest::ImageConfig;

/// A layer of an image: its blob and what it unpacks to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Layer {
    pub blob: Digest,
    pub diff_id: Digest,
    pub size: u64,
    pub media_type: String,
}

/// A pulled image.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Image {
    /// The config digest: the image ID.
    pub id: Digest,
    /// `registry/repo:tag` names pointing at this image.
    pub repo_tags: Vec<String>,
    /// `registry/repo@digest` names, with the digest the registry resolved (index or manifest).
    pub repo_digests: Vec<String>,
    /// The platform manifest the image was built from.
    pub manifest: Digest,
    /// Every blob the image needs kept: index, manifest, config and layer blobs.
    pub blobs: Vec<Digest>,
    pub layers: Vec<Layer>,
    /// Config plus layer blob sizes, as containerd reports it.
    pub size: u64,
    pub config: ImageConfig,
    /// Unix seconds of the last pull.
    pub pulled_at: u64,
    #[serde(default)]
    pub pinned: bool,
}

impl Image {
    pub fn diff_ids(&self) -> Vec<Digest> {
        self.layers.iter().map(|l| l.diff_id.clone()).collect()
    }
}

#[derive(Debug)]
pub struct ImageStore {
    dir: PathBuf,
    images: HashMap<Digest, Image>,
}

impl ImageStore {
    /// Loads every record under `dir`. An unreadable record is reported and skipped, not fatal:
    /// its content stays until the next collection, and a new pull restores it.
    pub fn open(dir: &Path) -> Result<ImageStore> {
        std::fs::create_dir_all(dir).map_err(Error::io("create", dir))?;
        let mut images = HashMap::new();
        for e in std::fs::read_dir(dir).map_err(Error::io("read dir", dir))? {
            let e = e.map_err(Error::io("read dir", dir))?;
            let path = e.path();
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') {
                let _ = std::fs::remove_file(&path); // an interrupted write
                continue;
            }
            let Some(hex) = name.strip_suffix(".json") else {
                continue;
            };
            let parsed = std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Image>(&b).map_err(|e| e.to_string()));
            match parsed {
                Ok(img) if img.id.hex() == hex => {
                    images.insert(img.id.clone(), img);
                }
                Ok(_) => {
                    tracing::warn!(path = %path.display(), "image record names another image; ignored")
                }
                Err(err) => {
                    tracing::warn!(path = %path.display(), %err, "unreadable image record; ignored")
                }
            }
        }
        Ok(ImageStore {
            dir: dir.to_path_buf(),
            images,
        })
    }

    pub fn get(&self, id: &Digest) -> Option<&Image> {
        self.images.get(id)
    }

    pub fn all(&self) -> impl Iterator<Item = &Image> {
        self.images.values()
    }

    /// Finds an image by ID (`sha256:…` or bare hex), repo tag or repo digest (already normalised).
    pub fn find(&self, id: Option<&Digest>, names: &[String]) -> Option<&Image> {
        if let Some(id) = id
            && let Some(i) = self.images.get(id)
        {
            return Some(i);
        }
        self.images.values().find(|i| {
            names
                .iter()
                .any(|n| i.repo_tags.contains(n) || i.repo_digests.contains(n))
        })
    }

    /// Records a pull of `image` under `tag` and `repo_digest`: merges with an existing record of
    /// the same ID and moves the tag off any other image that had it.
    pub fn add(&mut self, mut image: Image, tag: Option<String>, repo_digest: String) -> Result<Image> {
        if let Some(tag) = &tag {
            let others: Vec<Digest> = self
                .images
                .values()
                .filter(|i| i.id != image.id && i.repo_tags.contains(tag))
                .map(|i| i.id.clone())
                .collect();
            for id in others {
                let mut other = self.images[&id].clone();
                other.repo_tags.retain(|t| t != tag);
                self.write(&other)?;
                self.images.insert(id, other);
            }
        }
        if let Some(old) = self.images.get(&image.id) {
            image.repo_tags = old.repo_tags.clone();
            image.repo_digests = old.repo_digests.clone();
            image.pinned = old.pinned;
            for b in &old.blobs {
                if !image.blobs.contains(b) {
                    image.blobs.push(b.clone());
                }
            }
        }
        if let Some(tag) = tag
            && !image.repo_tags.contains(&tag)
        {
            image.repo_tags.push(tag);
        }
        if !image.repo_digests.contains(&repo_digest) {
            image.repo_digests.push(repo_digest);
        }
        image.repo_tags.sort();
        image.repo_digests.sort();
        self.write(&image)?;
        self.images.insert(image.id.clone(), image.clone());
        Ok(image)
    }

    /// Deletes a record; the content it used is left for collection.
    pub fn remove(&mut self, id: &Digest) -> Result<Option<Image>> {
        let path = self.dir.join(format!("{}.json", id.hex()));
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove", &path)(e)),
        }
        sync_dir(&self.dir);
        Ok(self.images.remove(id))
    }

    fn write(&self, image: &Image) -> Result<()> {
        let path = self.dir.join(format!("{}.json", image.id.hex()));
        let tmp = self.dir.join(format!(".{}.json.tmp", image.id.hex()));
        let data = serde_json::to_vec_pretty(image).map_err(|e| Error::bad("image record", e))?;
        let res = (|| {
            let mut f = std::fs::File::create(&tmp).map_err(Error::io("create", &tmp))?;
            f.write_all(&data).map_err(Error::io("write", &tmp))?;
            f.sync_all().map_err(Error::io("sync", &tmp))?;
            std::fs::rename(&tmp, &path).map_err(Error::io("rename", &tmp))
        })();
        if res.is_err() {
            let _ = std::fs::remove_file(&tmp);
        } else {
            sync_dir(&self.dir);
        }
        res
    }
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}
