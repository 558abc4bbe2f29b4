//! A content-addressed blob store: `blobs/sha256/<hex>`, written through `ingest/` and renamed into
//! place only after the bytes hashed to the expected digest and reached the disk. A blob that exists
//! under its name is therefore whole and correct; a crash leaves at most a stray file in `ingest/`,
//! which `open` clears.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::AsyncWriteExt as _;

use crate::digest::{Digest, Hasher};
use crate::error::{Error, Result};

/// One async lock per digest, created on demand and dropped when no one holds or waits for it.
#[derive(Debug, Default)]
pub struct KeyedLocks(Mutex<HashMap<Digest, Arc<tokio::sync::Mutex<()>>>>);

impl KeyedLocks {
    pub async fn lock(&self, k: &Digest) -> tokio::sync::OwnedMutexGuard<()> {
        let m = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(k.clone())
            .or_default()
            .clone();
        let guard = m.lock_owned().await;
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, v| Arc::strong_count(v) > 1);
        guard
    }
}

#[derive(Debug)]
pub struct ContentStore {
    root: PathBuf,
    /// One lock per digest being written, so concurrent pulls download a blob once.
    writers: KeyedLocks,
    seq: AtomicU64,
}

impl ContentStore {
    /// Opens (creating) the store at `root` and removes interrupted downloads.
    pub fn open(root: &Path) -> Result<ContentStore> {
        let blobs = root.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).map_err(Error::io("create", &blobs))?;
        let ingest = root.join("ingest");
        if ingest.exists() {
            std::fs::remove_dir_all(&ingest).map_err(Error::io("clear", &ingest))?;
        }
        std::fs::create_dir_all(&ingest).map_err(Error::io("create", &ingest))?;
        Ok(ContentStore {
            root: root.to_path_buf(),
            writers: KeyedLocks::default(),
            seq: AtomicU64::new(0),
        })
    }

    pub fn path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(d.hex())
    }

    pub fn contains(&self, d: &Digest) -> bool {
        self.path(d).is_file()
    }

    pub fn read(&self, d: &Digest) -> Result<Vec<u8>> {
        let p = self.path(d);
        std::fs::read(&p).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::NotFound {
                    what: format!("blob {d}"),
                }
            } else {
                Error::io("read", &p)(e)
            }
        })
    }

    pub fn remove(&self, d: &Digest) -> Result<()> {
        let p = self.path(d);
        match std::fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("remove", &p)(e)),
        }
    }

    /// All blobs in the store.
    pub fn list(&self) -> Result<Vec<Digest>> {
        crate::digest::list_dir(&self.root.join("blobs/sha256"))
    }

    /// Holds the writer lock for `d`; while held no one else writes that blob.
    pub async fn lock(&self, d: &Digest) -> tokio::sync::OwnedMutexGuard<()> {
        self.writers.lock(d).await
    }

    fn ingest_path(&self, d: &Digest) -> PathBuf {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        self.root
            .join("ingest")
            .join(format!("{}.{}.{n}", d.hex(), std::process::id()))
    }

    /// Writes a small blob held in memory, after checking its digest.
    pub fn write_bytes(&self, d: &Digest, data: &[u8]) -> Result<()> {
        let actual = Digest::of(data);
        if &actual != d {
            return Err(Error::DigestMismatch {
                what: "blob".into(),
                expected: d.to_string(),
                actual: actual.to_string(),
            });
        }
        if self.contains(d) {
            return Ok(());
        }
        let tmp = self.ingest_path(d);
        let res = (|| {
            let mut f = std::fs::File::create(&tmp).map_err(Error::io("create", &tmp))?;
            f.write_all(data).map_err(Error::io("write", &tmp))?;
            f.sync_all().map_err(Error::io("sync", &tmp))?;
            std::fs::rename(&tmp, self.path(d)).map_err(Error::io("rename", &tmp))
        })();
        if res.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        res
    }

    /// Streams a download into the store, verifying size and digest before it becomes visible.
    /// Nothing is kept when the check fails.
    pub async fn write_response(
        &self,
        d: &Digest,
        size: Option<u64>,
        url: &str,
        mut resp: reqwest::Response,
    ) -> Result<()> {
        let tmp = self.ingest_path(d);
        let res = async {
            let mut f = tokio::fs::File::create(&tmp).await.map_err(Error::io("create", &tmp))?;
            let mut hasher = Hasher::default();
            while let Some(chunk) = resp.chunk().await.map_err(|e| Error::Http {
                url: url.to_string(),
                source: e,
            })? {
                hasher.update(&chunk);
                if let Some(s) = size
                    && hasher.len() > s
                {
                    return Err(Error::SizeMismatch {
                        digest: d.to_string(),
                        expected: s,
                        actual: hasher.len(),
                    });
                }
                f.write_all(&chunk).await.map_err(Error::io("write", &tmp))?;
            }
            let (actual, len) = hasher.finish();
            if let Some(s) = size
                && len != s
            {
                return Err(Error::SizeMismatch {
                    digest: d.to_string(),
                    expected: s,
                    actual: len,
                });
            }
            if &actual != d {
                return Err(Error::DigestMismatch {
                    what: format!("blob from {url}"),
                    expected: d.to_string(),
                    actual: actual.to_string(),
                });
            }
            f.sync_all().await.map_err(Error::io("sync", &tmp))?;
            drop(f);
            let dst = self.path(d);
            tokio::fs::rename(&tmp, &dst).await.map_err(Error::io("rename", &tmp))?;
            Ok(())
        }
        .await;
        if res.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_verifies_and_open_clears_ingest() {
        let dir = tempfile::tempdir().unwrap();
        let s = ContentStore::open(dir.path()).unwrap();
        let d = Digest::of(b"hello");
        assert!(s.write_bytes(&Digest::of(b"other"), b"hello").is_err());
        assert!(!s.contains(&Digest::of(b"other")));
        s.write_bytes(&d, b"hello").unwrap();
        assert_eq!(s.read(&d).unwrap(), b"hello");
        assert_eq!(s.list().unwrap(), vec![d.clone()]);
        std::fs::write(dir.path().join("ingest/partial"), b"x").unwrap();
        drop(s);
        let s = ContentStore::open(dir.path()).unwrap();
        assert!(!dir.path().join("ingest/partial").exists());
        s.remove(&d).unwrap();
        s.remove(&d).unwrap();
        assert!(matches!(s.read(&d), Err(Error::NotFound { .. })));
    }
}
