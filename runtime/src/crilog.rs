//! The CRI log format (`<RFC3339Nano> <stream> <F|P> <text>`), written by berthd for shims that hand
//! container output to FIFOs (containerd's). berth-shim writes the same format itself.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};

/// Longest line written as one entry; longer lines are split into `P` (partial) entries.
pub const MAX_LINE: usize = 16 * 1024;

/// RFC 3339 with nanoseconds in UTC, as kubelet parses it.
pub fn timestamp(now: std::time::SystemTime) -> String {
    let d = now.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, dd) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{dd:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        d.subsec_nanos()
    )
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// One CRI log entry for a chunk read from `stream`; `full` when the chunk ended a line.
pub fn entry(stream: &str, chunk: &[u8], full: bool) -> Vec<u8> {
    let mut out = format!(
        "{} {stream} {} ",
        timestamp(std::time::SystemTime::now()),
        if full { "F" } else { "P" }
    )
    .into_bytes();
    out.extend_from_slice(chunk);
    out.push(b'\n');
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
    fn timestamps() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::new(1_700_000_000, 123_456_789);
        assert_eq!(timestamp(t), "2023-11-14T22:13:20.123456789Z");
        assert_eq!(timestamp(std::time::UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        let leap = std::time::UNIX_EPOCH + std::time::Duration::from_secs(951_782_400); // 2000-02-29
        assert!(timestamp(leap).starts_with("2000-02-29T00:00:00"));
    }

    #[test]
    fn entries() {
        let e = String::from_utf8(entry("stdout", b"hello", true)).unwrap();
        assert!(e.ends_with(" stdout F hello\n"), "{e}");
        let e = String::from_utf8(entry("stderr", b"part", false)).unwrap();
        assert!(e.ends_with(" stderr P part\n"), "{e}");
    }
}
