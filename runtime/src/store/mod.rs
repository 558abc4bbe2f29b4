//! Pod and container state kept on disk: one JSON record per object, written atomically (temporary
//! file, fsync, rename, fsync of the directory), loaded at start.

use std::io::Write as _;
use std::path::Path;

use crate::error::{Error, Result};

pub mod container;
pub mod sandbox;

/// Writes `value` as JSON to `path` so that a crash leaves the old or the new file, never a mix.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| Error::Internal(format!("no parent for {}", path.display())))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let data = serde_json::to_vec(value).map_err(|e| Error::Internal(format!("encode {}: {e}", path.display())))?;
    let res = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res.map_err(Error::io(format!("write {}", path.display())))
}

/// Removes a record file; a missing one is fine.
pub fn remove_file(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("remove {}", path.display()))(e)),
    }
}

/// Reads every `*.json` record in `dir` (creating it), skipping and reporting unreadable ones and
/// removing leftovers of interrupted writes.
pub fn load_all<T: serde::de::DeserializeOwned>(dir: &Path) -> Result<Vec<T>> {
    std::fs::create_dir_all(dir).map_err(Error::io(format!("create {}", dir.display())))?;
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(Error::io(format!("read {}", dir.display())))? {
        let Ok(e) = e else { continue };
        let path = e.path();
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with('.') {
            let _ = std::fs::remove_file(&path);
            continue;
        }
        if !name.ends_with(".json") {
            continue;
        }
        match std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        {
            Ok(v) => out.push(v),
            Err(err) => tracing::error!(path = %path.display(), %err, "unreadable record; ignored"),
        }
    }
    Ok(out)
}

/// The full ID for `id` or a unique prefix of one among `ids` (crictl shows truncated IDs).
pub fn resolve_prefix<'a>(ids: impl Iterator<Item = &'a String>, id: &str, what: &str) -> Result<Option<String>> {
    if id.is_empty() {
        return Err(Error::InvalidArgument(format!("{what} id is empty")));
    }
    let mut hits = ids.filter(|k| k.starts_with(id));
    match (hits.next(), hits.next()) {
        (Some(one), None) => Ok(Some(one.clone())),
        (None, _) => Ok(None),
        (Some(a), Some(b)) if a == id || b == id => Ok(Some(id.to_string())),
        (Some(_), Some(_)) => Err(Error::InvalidArgument(format!("{what} id prefix {id:?} is ambiguous"))),
    }
}

/// A new random 64-hex-digit ID, as containerd makes them.
pub fn new_id() -> Result<String> {
    let mut buf = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut buf))
        .map_err(Error::io("read /dev/urandom"))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// Nanoseconds since the epoch, as the CRI reports times.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        write_json(&dir.path().join("a.json"), &vec![1, 2]).unwrap();
        write_json(&dir.path().join("a.json"), &vec![3]).unwrap();
        std::fs::write(dir.path().join("bad.json"), b"{").unwrap();
        std::fs::write(dir.path().join(".x.json.tmp"), b"partial").unwrap();
        let all: Vec<Vec<i32>> = load_all(dir.path()).unwrap();
        assert_eq!(all, vec![vec![3]]);
        assert!(!dir.path().join(".x.json.tmp").exists());
        remove_file(&dir.path().join("a.json")).unwrap();
        remove_file(&dir.path().join("a.json")).unwrap();
        let id = new_id().unwrap();
        assert_eq!(id.len(), 64);
        assert_ne!(id, new_id().unwrap());
    }
}
