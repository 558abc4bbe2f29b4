//! The CRI container log format, written by the shim itself so logging goes on while berthd is down.
//!
//! Each record is `<RFC 3339 time> <stdout|stderr> <F|P> <content>\n`, as kubelet reads it and as
//! containerd writes it: `F` ends a line (its `\n` or `\r\n` removed), `P` is part of one. A line longer
//! than [`MAX_LINE`] becomes `P` pieces of exactly that size followed by the `F` rest. Output that has
//! no newline yet when the pipe has nothing more to give (a prompt, `echo -n`) is written at once as a
//! `P` record, as CRI-O's conmon does, so readers of the log (attach, `crictl logs -f`) see it without
//! waiting for the line's end.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use tokio::io::AsyncReadExt;

/// Longest content of one record; containerd's default `max_container_log_line_size`.
pub const MAX_LINE: usize = 16 * 1024;

/// Which of the container's output streams a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Whether a record ends a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tag {
    Full,
    Partial,
}

/// Cuts a byte stream into CRI records; holds at most [`MAX_LINE`] bytes of an unfinished line.
#[derive(Debug)]
pub struct LineSplitter {
    buf: Vec<u8>,
    max: usize,
}

impl LineSplitter {
    pub fn new(max: usize) -> LineSplitter {
        LineSplitter { buf: Vec::new(), max }
    }

    /// Feeds `data`, calling `emit` for every record it completes.
    pub fn push(&mut self, mut data: &[u8], emit: &mut impl FnMut(Tag, &[u8])) {
        while let Some(i) = data.iter().position(|&b| b == b'\n') {
            self.buf.extend_from_slice(&data[..i]);
            data = &data[i + 1..];
            let mut line = self.buf.as_slice();
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            while line.len() > self.max {
                emit(Tag::Partial, &line[..self.max]);
                line = &line[self.max..];
            }
            emit(Tag::Full, line);
            self.buf.clear();
        }
        self.buf.extend_from_slice(data);
        if self.buf.len() > self.max {
            let mut rest = self.buf.as_slice();
            while rest.len() > self.max {
                emit(Tag::Partial, &rest[..self.max]);
                rest = &rest[self.max..];
            }
            let keep = rest.len();
            let start = self.buf.len() - keep;
            self.buf.drain(..start);
        }
    }

    /// Emits what is held of an unfinished line as a `P` record now, unless it ends in `\r` (maybe the
    /// first half of a `\r\n`).
    pub fn flush(&mut self, emit: &mut impl FnMut(Tag, &[u8])) {
        if !self.buf.is_empty() && self.buf.last() != Some(&b'\r') {
            emit(Tag::Partial, &self.buf);
            self.buf.clear();
        }
    }

    /// Ends the stream: a pending unfinished line becomes a `P` record.
    pub fn finish(&mut self, emit: &mut impl FnMut(Tag, &[u8])) {
        if !self.buf.is_empty() {
            emit(Tag::Partial, &self.buf);
            self.buf.clear();
        }
    }
}

/// Appends one record to `out` ([`berth_proto::crilog`], the codec berthd reads it back with).
pub fn push_record(out: &mut Vec<u8>, time: SystemTime, stream: Stream, tag: Tag, content: &[u8]) {
    berth_proto::crilog::push_record(out, time, stream.as_str(), tag == Tag::Partial, content);
}

/// A container's CRI log file, shared by its stdout and stderr copiers. Every batch of records is one
/// `write` on an `O_APPEND` file, so the two streams never interleave inside a line.
#[derive(Debug)]
pub struct CriLog {
    path: PathBuf,
    file: Mutex<File>,
}

impl CriLog {
    /// Opens (creating if needed, mode 0640) the log file. Its directory must exist (kubelet makes it).
    pub fn open(path: &Path) -> io::Result<CriLog> {
        Ok(CriLog {
            path: path.to_path_buf(),
            file: Mutex::new(open_append(path)?),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the path again, after kubelet has rotated (renamed) the file.
    pub fn reopen(&self) -> io::Result<()> {
        let file = open_append(&self.path)?;
        *self.file.lock().unwrap_or_else(|e| e.into_inner()) = file;
        Ok(())
    }

    fn write(&self, bytes: &[u8]) -> io::Result<()> {
        self.file.lock().unwrap_or_else(|e| e.into_inner()).write_all(bytes)
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().append(true).create(true).mode(0o640).open(path)
}

/// Copies one of the container's output pipes into the log until the pipe closes. A failing write
/// is reported once and the output is still drained, so the container never blocks on a full pipe.
pub async fn copy(pipe: OwnedFd, stream: Stream, log: std::sync::Arc<CriLog>) {
    let mut rx = match tokio::net::unix::pipe::Receiver::from_owned_fd(pipe) {
        Ok(rx) => rx,
        Err(e) => {
            log::error!(
                "{}: cannot read the container's {}: {e}",
                log.path().display(),
                stream.as_str()
            );
            return;
        }
    };
    let mut splitter = LineSplitter::new(MAX_LINE);
    let mut buf = vec![0u8; 32 * 1024];
    let mut out = Vec::with_capacity(4096);
    let mut failed = false;
    loop {
        let n = match rx.read(&mut buf).await {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                log::warn!(
                    "{}: reading the container's {}: {e}",
                    log.path().display(),
                    stream.as_str()
                );
                0
            }
        };
        let now = SystemTime::now();
        let mut emit = |tag: Tag, content: &[u8]| push_record(&mut out, now, stream, tag, content);
        if n == 0 {
            splitter.finish(&mut emit);
        } else {
            splitter.push(&buf[..n], &mut emit);
            splitter.flush(&mut emit);
        }
        if !out.is_empty() {
            if let Err(e) = log.write(&out)
                && !failed
            {
                failed = true;
                log::error!("{}: writing the container log: {e}", log.path().display());
            }
            out.clear();
            if out.capacity() > 64 * 1024 {
                out.shrink_to(4096);
            }
        }
        if n == 0 {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(max: usize, chunks: &[&[u8]]) -> Vec<(Tag, String)> {
        let mut s = LineSplitter::new(max);
        let mut got = Vec::new();
        let mut emit = |t: Tag, c: &[u8]| got.push((t, String::from_utf8_lossy(c).into_owned()));
        for c in chunks {
            s.push(c, &mut emit);
        }
        s.finish(&mut emit);
        got
    }

    #[test]
    fn flushed_partial_lines_are_written_at_once() {
        let mut s = LineSplitter::new(MAX_LINE);
        let mut got = Vec::new();
        let mut emit = |t: Tag, c: &[u8]| got.push((t, String::from_utf8_lossy(c).into_owned()));
        for chunk in [&b"hello"[..], b" world\nprompt> ", b"a\r", b"\nb"] {
            s.push(chunk, &mut emit);
            s.flush(&mut emit);
        }
        s.finish(&mut emit);
        assert_eq!(
            got,
            vec![p("hello"), f(" world"), p("prompt> "), f("a"), p("b")],
            "a \\r waits for its \\n"
        );
    }

    fn f(s: &str) -> (Tag, String) {
        (Tag::Full, s.into())
    }
    fn p(s: &str) -> (Tag, String) {
        (Tag::Partial, s.into())
    }

    #[test]
    fn full_lines_and_crlf() {
        assert_eq!(split(16, &[b"hello\nworld\r\n\n"]), vec![f("hello"), f("world"), f("")]);
    }

    #[test]
    fn lines_across_reads() {
        assert_eq!(split(16, &[b"hel", b"lo\nwor", b"ld\n"]), vec![f("hello"), f("world")]);
    }

    #[test]
    fn trailing_chunk_without_newline_is_partial() {
        assert_eq!(split(16, &[b"done\nno newline"]), vec![f("done"), p("no newline")]);
        assert_eq!(split(16, &[b""]), vec![]);
    }

    #[test]
    fn long_lines_split_at_max() {
        // Exactly max bytes is still one full record; one more byte splits it.
        assert_eq!(split(4, &[b"abcd\n"]), vec![f("abcd")]);
        assert_eq!(split(4, &[b"abcde\n"]), vec![p("abcd"), f("e")]);
        assert_eq!(split(4, &[b"abcdefghij\n"]), vec![p("abcd"), p("efgh"), f("ij")]);
        // Without the newline yet, pieces go out as soon as more than max bytes are pending.
        assert_eq!(
            split(4, &[b"abc", b"defgh", b"ij"]),
            vec![p("abcd"), p("efgh"), p("ij")]
        );
        assert_eq!(
            split(4, &[b"abc", b"defgh", b"ij\n"]),
            vec![p("abcd"), p("efgh"), f("ij")]
        );
    }

    #[test]
    fn memory_is_bounded() {
        let mut s = LineSplitter::new(8);
        let mut n = 0;
        for _ in 0..1000 {
            s.push(b"0123456789", &mut |_, _| n += 1);
            assert!(s.buf.len() <= 8);
        }
        assert!(n > 1000);
    }

    #[test]
    fn record_format() {
        let mut out = Vec::new();
        let t = std::time::UNIX_EPOCH + std::time::Duration::new(1_704_067_200, 123);
        push_record(&mut out, t, Stream::Stderr, Tag::Partial, b"oops");
        push_record(&mut out, t, Stream::Stdout, Tag::Full, b"");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2024-01-01T00:00:00.000000123Z stderr P oops\n2024-01-01T00:00:00.000000123Z stdout F \n"
        );
    }

    #[test]
    fn reopen_follows_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let log = CriLog::open(&path).unwrap();
        log.write(b"a\n").unwrap();
        std::fs::rename(&path, dir.path().join("0.log.1")).unwrap();
        log.reopen().unwrap();
        log.write(b"b\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "b\n");
        assert_eq!(std::fs::read_to_string(dir.path().join("0.log.1")).unwrap(), "a\n");
    }
}
