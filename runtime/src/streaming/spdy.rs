//! The server side of SPDY/3.1 as Kubernetes' streaming clients speak it (moby/spdystream): the
//! client opens streams with SYN_STREAM, the server answers each with SYN_REPLY, data flows in DATA
//! frames and FIN half-closes a stream. Header blocks are zlib streams (one per direction and
//! connection) primed with the SPDY/3 dictionary and sync-flushed after each block. Flow control
//! (WINDOW_UPDATE) is not enforced, as spdystream does not enforce it either.

use std::collections::HashMap;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::{mpsc, watch};

use super::{Encoded, NewStream, Session, WriteCmd, write_loop};

/// The SPDY/3 header compression dictionary (1423 bytes, from the SPDY/3 draft).
pub const DICTIONARY: &[u8] = include_bytes!("spdy3.dict");

const VERSION: u16 = 3;
const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const FLAG_FIN: u8 = 0x01;
/// Largest frame accepted from a client.
const MAX_FRAME: usize = 1 << 20;
/// Largest DATA frame sent.
const MAX_DATA: usize = 32 << 10;
/// How long the server waits for the client to close after the server closed its side.
const LINGER: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs a SPDY session on `io`: returns the handle to write with and the streams the client opens.
pub(crate) fn start<IO>(io: IO) -> (Session, mpsc::Receiver<NewStream>)
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (rd, wr) = tokio::io::split(io);
    let (tx, rx) = mpsc::channel::<WriteCmd>(64);
    let (gone_tx, gone) = watch::channel(false);
    let (streams_tx, streams_rx) = mpsc::channel(16);
    let (closed_tx, closed_rx) = watch::channel(false);
    let mut deflater = Deflater::default();
    tokio::spawn(write_loop(wr, rx, closed_tx, move |cmd| encode(&mut deflater, cmd)));
    let reader_tx = tx.clone();
    tokio::spawn(async move {
        let read = read_loop(rd, reader_tx, streams_tx);
        tokio::pin!(read);
        let mut closed_rx = closed_rx;
        // Once the server closed its side, the client gets a while to close its own.
        tokio::select! {
            r = &mut read => if let Err(e) = r { tracing::debug!(error = %e, "SPDY session") },
            _ = async {
                let _ = closed_rx.wait_for(|c| *c).await;
                tokio::time::sleep(LINGER).await;
            } => {}
        }
        let _ = gone_tx.send(true);
    });
    (Session { tx, gone }, streams_rx)
}

fn control_header(kind: u16, flags: u8, len: usize) -> [u8; 8] {
    let mut h = [0u8; 8];
    h[..2].copy_from_slice(&(0x8000 | VERSION).to_be_bytes());
    h[2..4].copy_from_slice(&kind.to_be_bytes());
    h[4..8].copy_from_slice(&((u32::from(flags) << 24) | len as u32).to_be_bytes());
    h
}

fn data_header(id: u32, flags: u8, len: usize) -> [u8; 8] {
    let mut h = [0u8; 8];
    h[..4].copy_from_slice(&(id & 0x7fff_ffff).to_be_bytes());
    h[4..8].copy_from_slice(&((u32::from(flags) << 24) | len as u32).to_be_bytes());
    h
}

/// Encodes a header block: count, then length-prefixed names and values.
pub fn encode_headers(headers: &[(&str, &str)]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend((headers.len() as u32).to_be_bytes());
    for (k, v) in headers {
        b.extend((k.len() as u32).to_be_bytes());
        b.extend(k.to_ascii_lowercase().as_bytes());
        b.extend((v.len() as u32).to_be_bytes());
        b.extend(v.as_bytes());
    }
    b
}

/// Decodes a header block; values holding several (NUL-separated) become several pairs.
pub fn decode_headers(b: &[u8]) -> std::io::Result<Vec<(String, String)>> {
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "malformed SPDY header block");
    let mut pos = 0usize;
    let u32_at = |pos: &mut usize| -> std::io::Result<usize> {
        let v = b.get(*pos..*pos + 4).ok_or_else(bad)?;
        *pos += 4;
        Ok(u32::from_be_bytes([v[0], v[1], v[2], v[3]]) as usize)
    };
    let n = u32_at(&mut pos)?;
    let mut out = Vec::new();
    for _ in 0..n.min(1024) {
        let kl = u32_at(&mut pos)?;
        let k = b.get(pos..pos + kl).ok_or_else(bad)?;
        pos += kl;
        let vl = u32_at(&mut pos)?;
        let v = b.get(pos..pos + vl).ok_or_else(bad)?;
        pos += vl;
        let k = String::from_utf8_lossy(k).to_string();
        for v in v.split(|c| *c == 0) {
            out.push((k.clone(), String::from_utf8_lossy(v).to_string()));
        }
    }
    Ok(out)
}

/// A zlib stream that decompresses header blocks, asking for the dictionary when the stream does.
#[derive(Debug)]
pub struct Inflater(Decompress);

impl Default for Inflater {
    fn default() -> Self {
        Inflater(Decompress::new(true))
    }
}

impl Inflater {
    pub fn inflate(&mut self, input: &[u8]) -> std::io::Result<Vec<u8>> {
        let err = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("SPDY headers: {e}"));
        let mut out = Vec::with_capacity(input.len() * 4 + 256);
        let mut pos = 0;
        loop {
            if out.len() > MAX_FRAME {
                return Err(err("header block too large".into()));
            }
            if out.capacity() - out.len() < 256 {
                out.reserve(4096);
            }
            let before = self.0.total_in();
            let r = self.0.decompress_vec(&input[pos..], &mut out, FlushDecompress::Sync);
            pos += (self.0.total_in() - before) as usize;
            match r {
                Ok(flate2::Status::StreamEnd) => break,
                Ok(_) => {
                    if pos >= input.len() && out.len() < out.capacity() {
                        break;
                    }
                }
                Err(e) if e.needs_dictionary().is_some() => {
                    self.0.set_dictionary(DICTIONARY).map_err(|e| err(e.to_string()))?;
                }
                Err(e) => return Err(err(e.to_string())),
            }
        }
        Ok(out)
    }
}

/// A zlib stream that compresses header blocks with the dictionary, sync-flushing each.
#[derive(Debug)]
pub struct Deflater(Compress);

impl Default for Deflater {
    fn default() -> Self {
        let mut c = Compress::new(Compression::default(), true);
        // The dictionary is a constant a fresh stream always accepts.
        let _ = c.set_dictionary(DICTIONARY);
        Deflater(c)
    }
}

impl Deflater {
    pub fn deflate(&mut self, input: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(input.len() + 64);
        let mut pos = 0;
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(1024);
            }
            let before = self.0.total_in();
            self.0
                .compress_vec(&input[pos..], &mut out, FlushCompress::Sync)
                .map_err(|e| std::io::Error::other(format!("SPDY headers: {e}")))?;
            pos += (self.0.total_in() - before) as usize;
            if pos >= input.len() && out.len() < out.capacity() {
                break;
            }
        }
        Ok(out)
    }
}

/// The bytes of one write command (a data frame, FIN, SYN_REPLY or PING echo).
fn encode(deflater: &mut Deflater, cmd: WriteCmd) -> Encoded {
    let mut buf = Vec::new();
    match cmd {
        WriteCmd::Data(id, data) => {
            for chunk in data.chunks(MAX_DATA) {
                buf.extend(data_header(id, 0, chunk.len()));
                buf.extend(chunk);
            }
            if data.is_empty() {
                buf.extend(data_header(id, 0, 0));
            }
        }
        WriteCmd::Fin(id) => buf.extend(data_header(id, FLAG_FIN, 0)),
        WriteCmd::Reply(id) => {
            let Ok(block) = deflater.deflate(&encode_headers(&[])) else {
                return Encoded::Last(Vec::new());
            };
            buf.extend(control_header(SYN_REPLY, 0, 4 + block.len()));
            buf.extend((id & 0x7fff_ffff).to_be_bytes());
            buf.extend(block);
        }
        WriteCmd::Pong(id) => {
            buf.extend(control_header(PING, 0, id.len()));
            buf.extend(id);
        }
        WriteCmd::Close => return Encoded::Last(Vec::new()),
    }
    Encoded::Send(buf)
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut rd: R,
    tx: mpsc::Sender<WriteCmd>,
    streams: mpsc::Sender<NewStream>,
) -> std::io::Result<()> {
    let mut inflater = Inflater::default();
    let mut inputs: HashMap<u32, mpsc::Sender<Vec<u8>>> = HashMap::new();
    loop {
        let mut head = [0u8; 8];
        match rd.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let flags = head[4];
        let len = (u32::from_be_bytes([0, head[5], head[6], head[7]])) as usize;
        if len > MAX_FRAME {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("SPDY frame of {len} bytes"),
            ));
        }
        let mut body = vec![0u8; len];
        rd.read_exact(&mut body).await?;
        if head[0] & 0x80 == 0 {
            let id = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) & 0x7fff_ffff;
            if let Some(input) = inputs.get(&id) {
                // A handler that dropped its end does not want the data.
                if !body.is_empty() {
                    let _ = input.send(body).await;
                }
            }
            if flags & FLAG_FIN != 0 {
                inputs.remove(&id);
            }
            continue;
        }
        let kind = u16::from_be_bytes([head[2], head[3]]);
        match kind {
            SYN_STREAM if body.len() >= 10 => {
                let id = u32::from_be_bytes([body[0], body[1], body[2], body[3]]) & 0x7fff_ffff;
                let headers = decode_headers(&inflater.inflate(&body[10..])?)?;
                let (in_tx, in_rx) = mpsc::channel(16);
                if flags & FLAG_FIN == 0 {
                    inputs.insert(id, in_tx);
                }
                if tx.send(WriteCmd::Reply(id)).await.is_err() {
                    return Ok(());
                }
                let s = NewStream {
                    id,
                    headers,
                    input: in_rx,
                };
                if streams.send(s).await.is_err() {
                    tracing::debug!(id, "SPDY stream opened after its handler finished");
                }
            }
            RST_STREAM if body.len() >= 4 => {
                let id = u32::from_be_bytes([body[0], body[1], body[2], body[3]]) & 0x7fff_ffff;
                inputs.remove(&id);
            }
            PING => {
                let _ = tx.send(WriteCmd::Pong(body)).await;
            }
            GOAWAY => return Ok(()),
            // SETTINGS, WINDOW_UPDATE, HEADERS, NOOP: nothing to do.
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dictionary_is_the_spdy3_one() {
        assert_eq!(DICTIONARY.len(), 1423);
        assert!(DICTIONARY.starts_with(b"\0\0\0\x07options"));
        assert!(DICTIONARY.ends_with(b"enq=0."));
    }

    #[test]
    fn header_blocks_round_trip_through_zlib_with_the_dictionary() {
        let mut d = Deflater::default();
        let mut i = Inflater::default();
        for n in 0..3 {
            let port = n.to_string();
            let block = encode_headers(&[("streamType", "data"), ("port", &port)]);
            let wire = d.deflate(&block).unwrap();
            let back = decode_headers(&i.inflate(&wire).unwrap()).unwrap();
            assert_eq!(
                back,
                vec![("streamtype".to_string(), "data".to_string()), ("port".into(), port)]
            );
        }
        assert!(decode_headers(&[0, 0, 0, 1, 0, 0, 0, 9]).is_err());
    }
}
