//! The CRI log (`<RFC3339Nano> <stream> <F|P> <text>`, [`berth_proto::crilog`]), written by berthd for
//! shims that hand container output to FIFOs (containerd's). berth-shim writes the same records itself.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};

/// Longest line written as one entry; longer lines are split into `P` (partial) entries.
pub const MAX_LINE: usize = 16 * 1024;

/// One CRI log entry for a chunk read from `stream`; `full` when the chunk ended a line.
pub fn entry(stream: &str, chunk: &[u8], full: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(chunk.len() + 48);
    berth_proto::crilog::push_record(&mut out, std::time::SystemTime::now(), stream, !full, chunk);
    out
}

/// Copies a FIFO of container output into the shared log file until the writer closes it.
pub async fn copy_fifo(fifo: PathBuf, stream: &'static str, log: Arc<tokio::sync::Mutex<tokio::fs::File>>) {
    let rx = match tokio::net::unix::pipe::OpenOptions::new().open_receiver(&fifo) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(fifo = %fifo.display(), error = %e, "cannot open container output fifo");
            return;
        }
    };
    let mut reader = tokio::io::BufReader::with_capacity(MAX_LINE, rx);
    let mut buf = Vec::with_capacity(1024);
    loop {
        buf.clear();
        let n = match (&mut reader).take(MAX_LINE as u64).read_until(b'\n', &mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(fifo = %fifo.display(), error = %e, "container output ended");
                break;
            }
        };
        let full = buf[n - 1] == b'\n';
        let text = if full { &buf[..n - 1] } else { &buf[..n] };
        let mut f = log.lock().await;
        if let Err(e) = f.write_all(&entry(stream, text, full)).await {
            tracing::warn!(error = %e, "writing the container log failed");
        }
    }
}

/// Opens (creating) a CRI log file for appending, with its directory.
pub async fn open_log(path: &Path) -> std::io::Result<tokio::fs::File> {
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await?;
    }
    tokio::fs::OpenOptions::new().create(true).append(true).open(path).await
}

use tokio::io::AsyncReadExt as _;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries() {
        let e = String::from_utf8(entry("stdout", b"hello", true)).unwrap();
        assert!(e.ends_with(" stdout F hello\n"), "{e}");
        let e = String::from_utf8(entry("stderr", b"part", false)).unwrap();
        assert!(e.ends_with(" stderr P part\n"), "{e}");
    }
}
