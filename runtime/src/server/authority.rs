//! `:authority` normalisation for the CRI socket's HTTP/2 connections.
//!
//! gRPC clients that dial a unix socket put something in `:authority` that is not a `host[:port]`:
//! the socket path (grpc-go before 1.5x, so crictl 1.26), the path percent-encoded, or nothing at
//! all (an empty value). Go servers (containerd, CRI-O) accept any of them; h2, under tonic, resets
//! such a stream with PROTOCOL_ERROR before the request reaches tonic, and offers no option to
//! relax that. [`Normalized`] sits between the socket and h2 on the read side: it decodes each
//! header block the client sends (HPACK, with the client's dynamic table), replaces an authority
//! h2 would refuse with `localhost`, and encodes the block again for h2 (with a table of its own).
//! Every other frame passes through untouched as it arrives; the write side is the socket itself.
//!
//! It also renames the client's `grpc-timeout` to [`DEADLINE_HEADER`]: tonic's server would otherwise
//! cut a call off at the deadline with CANCELLED, while gRPC (and critest) expect DEADLINE_EXCEEDED;
//! berth enforces deadlines itself (`super::Deadlines`), with the right code, and lets ExecSync and
//! PullImage clean up first.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf as _, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Where a client's `grpc-timeout` goes (see the module's documentation).
pub const DEADLINE_HEADER: &str = "berth-grpc-timeout";

/// What an unusable `:authority` becomes.
const REPLACEMENT: &[u8] = b"localhost";
/// The HTTP/2 client connection preface, passed on as it is.
const PREFACE_LEN: usize = 24;
const FRAME_HEADER_LEN: usize = 9;
const TYPE_HEADERS: u8 = 0x1;
const TYPE_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;
/// Frames berth sends to h2 stay within HTTP/2's smallest allowed maximum frame size.
const MAX_FRAME: usize = 16_384;
/// Both peers' dynamic tables are HTTP/2's default size: h2 advertises no other.
const TABLE_SIZE: usize = 4_096;
/// A header block larger than this (after its CONTINUATIONs) ends the connection.
const MAX_BLOCK: usize = 1 << 20;

/// A connection whose incoming HTTP/2 header blocks carry only authorities h2 accepts.
pub struct Normalized<S> {
    inner: S,
    rewriter: Rewriter,
}

impl<S> std::fmt::Debug for Normalized<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Normalized").finish_non_exhaustive()
    }
}

impl<S> Normalized<S> {
    pub fn new(inner: S) -> Self {
        Normalized {
            inner,
            rewriter: Rewriter::new(),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Normalized<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.rewriter.out.is_empty() {
                let n = this.rewriter.out.len().min(buf.remaining());
                buf.put_slice(&this.rewriter.out[..n]);
                this.rewriter.out.advance(n);
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; 8192];
            let mut rb = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
            if rb.filled().is_empty() {
                return Poll::Ready(Ok(())); // end of stream
            }
            this.rewriter.feed(rb.filled())?;
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Normalized<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl berth_proto::tonic::transport::server::Connected for Normalized<tokio::net::UnixStream> {
    type ConnectInfo = <tokio::net::UnixStream as berth_proto::tonic::transport::server::Connected>::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

/// The client-to-server byte stream, frame by frame.
struct Rewriter {
    /// Bytes from the client not yet handled (at most one incomplete frame header or header frame).
    raw: BytesMut,
    /// Bytes for h2.
    out: BytesMut,
    preface_left: usize,
    /// Payload bytes of a frame that passes through untouched, still to come.
    pass_left: usize,
    /// The header block being collected (a HEADERS frame without END_HEADERS, then CONTINUATIONs).
    block: Option<Block>,
    decoder: loona_hpack::Decoder<'static>,
    encoder: loona_hpack::Encoder<'static>,
}

struct Block {
    stream: u32,
    end_stream: bool,
    fragments: Vec<u8>,
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

impl Rewriter {
    fn new() -> Self {
        let mut decoder = loona_hpack::Decoder::new();
        decoder.set_max_allowed_table_size(TABLE_SIZE);
        Rewriter {
            raw: BytesMut::new(),
            out: BytesMut::new(),
            preface_left: PREFACE_LEN,
            pass_left: 0,
            block: None,
            decoder,
            encoder: loona_hpack::Encoder::new(),
        }
    }

    /// Takes bytes read from the client; what is ready for h2 lands in `out`.
    fn feed(&mut self, mut data: &[u8]) -> io::Result<()> {
        if self.preface_left > 0 {
            let n = self.preface_left.min(data.len());
            self.out.extend_from_slice(&data[..n]);
            self.preface_left -= n;
            data = &data[n..];
        }
        if self.pass_left > 0 {
            let n = self.pass_left.min(data.len());
            self.out.extend_from_slice(&data[..n]);
            self.pass_left -= n;
            data = &data[n..];
        }
        self.raw.extend_from_slice(data);
        self.drain()
    }

    fn drain(&mut self) -> io::Result<()> {
        while self.pass_left == 0 && self.raw.len() >= FRAME_HEADER_LEN {
            let h = &self.raw[..FRAME_HEADER_LEN];
            let len = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
            let (ty, flags) = (h[3], h[4]);
            let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
            if ty != TYPE_HEADERS && ty != TYPE_CONTINUATION {
                if self.block.is_some() {
                    return Err(invalid("HTTP/2: a frame other than CONTINUATION inside a header block"));
                }
                // Passed on as it comes, however large: only its header is needed here.
                let n = (FRAME_HEADER_LEN + len).min(self.raw.len());
                self.out.extend_from_slice(&self.raw[..n]);
                self.raw.advance(n);
                self.pass_left = FRAME_HEADER_LEN + len - n;
                continue;
            }
            if self.block.as_ref().map_or(0, |b| b.fragments.len()) + len > MAX_BLOCK {
                return Err(invalid("HTTP/2: header block too large"));
            }
            if self.raw.len() < FRAME_HEADER_LEN + len {
                break;
            }
            let frame = self.raw.split_to(FRAME_HEADER_LEN + len);
            self.header_frame(ty, flags, stream, &frame[FRAME_HEADER_LEN..])?;
        }
        Ok(())
    }

    fn header_frame(&mut self, ty: u8, flags: u8, stream: u32, payload: &[u8]) -> io::Result<()> {
        match (ty, self.block.as_mut()) {
            (TYPE_HEADERS, None) => {
                let fragment = headers_fragment(flags, payload)?;
                self.block = Some(Block {
                    stream,
                    end_stream: flags & FLAG_END_STREAM != 0,
                    fragments: fragment.to_vec(),
                });
            }
            (TYPE_CONTINUATION, Some(b)) if b.stream == stream => b.fragments.extend_from_slice(payload),
            _ => {
                return Err(invalid(
                    "HTTP/2: CONTINUATION out of place, or HEADERS inside a header block",
                ));
            }
        }
        if flags & FLAG_END_HEADERS != 0
            && let Some(block) = self.block.take()
        {
            self.reencode(&block)?;
        }
        Ok(())
    }

    /// Decodes a whole header block, mends its authority and writes it out as HEADERS (+ CONTINUATION).
    fn reencode(&mut self, block: &Block) -> io::Result<()> {
        let mut fields = self
            .decoder
            .decode(&block.fragments)
            .map_err(|e| invalid(format!("HTTP/2: header block does not decode (HPACK): {e:?}")))?;
        for (name, value) in &mut fields {
            if name == b":authority" && !acceptable_authority(value) {
                tracing::trace!(authority = %String::from_utf8_lossy(value), "replacing an :authority h2 refuses");
                *value = REPLACEMENT.to_vec();
            } else if name == b"grpc-timeout" {
                *name = DEADLINE_HEADER.as_bytes().to_vec();
            }
        }
        let encoded = self.encoder.encode(fields.iter().map(|(n, v)| (&n[..], &v[..])));
        let mut chunks = encoded.chunks(MAX_FRAME).peekable();
        let mut first = true;
        // An empty block is still one HEADERS frame.
        let empty: &[u8] = &[];
        if chunks.peek().is_none() {
            self.frame(TYPE_HEADERS, block.end_stream, true, block.stream, empty);
        }
        while let Some(chunk) = chunks.next() {
            let last = chunks.peek().is_none();
            let ty = if first { TYPE_HEADERS } else { TYPE_CONTINUATION };
            self.frame(ty, first && block.end_stream, last, block.stream, chunk);
            first = false;
        }
        Ok(())
    }

    fn frame(&mut self, ty: u8, end_stream: bool, end_headers: bool, stream: u32, payload: &[u8]) {
        let len = payload.len();
        let mut flags = 0;
        if end_stream {
            flags |= FLAG_END_STREAM;
        }
        if end_headers {
            flags |= FLAG_END_HEADERS;
        }
        self.out
            .extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, ty, flags]);
        self.out.extend_from_slice(&stream.to_be_bytes());
        self.out.extend_from_slice(payload);
    }
}

/// The header block fragment of a HEADERS frame's payload (without padding and priority fields).
fn headers_fragment(flags: u8, payload: &[u8]) -> io::Result<&[u8]> {
    let mut start = 0;
    let mut pad = 0;
    if flags & FLAG_PADDED != 0 {
        pad = usize::from(
            *payload
                .first()
                .ok_or_else(|| invalid("HTTP/2: padded HEADERS without a pad length"))?,
        );
        start = 1;
    }
    if flags & FLAG_PRIORITY != 0 {
        start += 5;
    }
    if start + pad > payload.len() {
        return Err(invalid("HTTP/2: HEADERS padding or priority longer than the frame"));
    }
    Ok(&payload[start..payload.len() - pad])
}

/// Would h2 take this as `:authority`? (It parses it with `http`'s URI authority rules.)
fn acceptable_authority(value: &[u8]) -> bool {
    http::uri::Authority::try_from(value).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    fn frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, ty, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// Frames of an output stream after the preface: (type, flags, stream, payload).
    fn frames(mut b: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
        assert!(b.starts_with(PREFACE));
        b = &b[PREFACE.len()..];
        let mut v = Vec::new();
        while !b.is_empty() {
            let len = usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]);
            let stream = u32::from_be_bytes([b[5], b[6], b[7], b[8]]);
            v.push((b[3], b[4], stream, b[9..9 + len].to_vec()));
            b = &b[9 + len..];
        }
        v
    }

    fn request(authority: Option<&[u8]>) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut h: Vec<(Vec<u8>, Vec<u8>)> = vec![
            (b":method".to_vec(), b"POST".to_vec()),
            (b":scheme".to_vec(), b"http".to_vec()),
            (b":path".to_vec(), b"/runtime.v1.RuntimeService/Version".to_vec()),
        ];
        if let Some(a) = authority {
            h.push((b":authority".to_vec(), a.to_vec()));
        }
        h.push((b"content-type".to_vec(), b"application/grpc".to_vec()));
        h
    }

    /// Runs client bytes through the rewriter in pieces of `step` bytes; returns what h2 would read.
    fn run(input: &[u8], step: usize) -> Vec<u8> {
        let mut r = Rewriter::new();
        for piece in input.chunks(step) {
            r.feed(piece).unwrap();
        }
        r.out.to_vec()
    }

    fn authority_seen(input: &[u8], step: usize) -> Vec<Option<Vec<u8>>> {
        let out = run(input, step);
        let mut dec = loona_hpack::Decoder::new();
        frames(&out)
            .into_iter()
            .filter(|f| f.0 == TYPE_HEADERS)
            .map(|f| {
                assert_ne!(f.1 & FLAG_END_HEADERS, 0);
                let fields = dec.decode(&f.3).unwrap();
                fields.into_iter().find(|(n, _)| n == b":authority").map(|(_, v)| v)
            })
            .collect()
    }

    #[test]
    fn grpc_timeout_is_renamed_for_berth_to_enforce() {
        let mut fields = request(Some(b"localhost"));
        fields.push((b"grpc-timeout".to_vec(), b"1500m".to_vec()));
        let block = loona_hpack::Encoder::new().encode(fields.iter().map(|(n, v)| (&n[..], &v[..])));
        let mut input = PREFACE.to_vec();
        input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &block));
        let out = run(&input, 7);
        let f = frames(&out).into_iter().find(|f| f.0 == TYPE_HEADERS).unwrap();
        let seen = loona_hpack::Decoder::new().decode(&f.3).unwrap();
        assert!(seen.iter().all(|(n, _)| n != b"grpc-timeout"), "{seen:?}");
        assert!(
            seen.iter()
                .any(|(n, v)| n == DEADLINE_HEADER.as_bytes() && v == b"1500m"),
            "{seen:?}"
        );
    }

    #[test]
    fn authorities_h2_refuses_become_localhost_and_good_ones_stay() {
        /// (what the client sends, what h2 gets; `None` for "what h2 accepts, kept as it is").
        type Case = (Option<&'static [u8]>, Option<&'static [u8]>);
        let cases: [Case; 6] = [
            (Some(b"/run/berth/berth.sock"), Some(b"localhost")),
            (Some(b"%2Frun%2Fberth%2Fberth.sock"), None), // whatever h2 takes, kept as it is
            (Some(b"localhost"), Some(b"localhost")),
            (Some(b"127.0.0.1:1234"), Some(b"127.0.0.1:1234")),
            (Some(b""), Some(b"localhost")),
            (None, None),
        ];
        for (given, want) in cases {
            let mut enc = loona_hpack::Encoder::new();
            let mut input = PREFACE.to_vec();
            input.extend(frame(0x4, 0, 0, &[])); // SETTINGS
            // Twice on two streams: the second block leans on the client's dynamic table.
            for stream in [1, 3] {
                let block = enc.encode(request(given).iter().map(|(n, v)| (&n[..], &v[..])));
                input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, stream, &block));
                input.extend(frame(0x0, FLAG_END_STREAM, stream, b"\0\0\0\0\0"));
            }
            for step in [1, 7, input.len()] {
                let seen = authority_seen(&input, step);
                let want = match (given, want) {
                    (Some(g), None) if acceptable_authority(g) => Some(g.to_vec()),
                    (Some(_), None) => Some(REPLACEMENT.to_vec()),
                    (_, w) => w.map(<[u8]>::to_vec),
                };
                assert_eq!(seen, vec![want.clone(), want], "authority {given:?}, step {step}");
            }
        }
    }

    #[test]
    fn other_frames_pass_untouched_and_continuations_are_joined() {
        let mut enc = loona_hpack::Encoder::new();
        let block = enc.encode(request(Some(b"/a/socket")).iter().map(|(n, v)| (&n[..], &v[..])));
        let (a, b) = block.split_at(block.len() / 2);
        let mut padded = vec![3u8];
        padded.extend_from_slice(&[0, 0, 0, 0, 16]); // priority
        padded.extend_from_slice(a);
        padded.extend_from_slice(&[0, 0, 0]);
        let data = frame(0x0, FLAG_END_STREAM, 1, &[7u8; 20_000]);
        let mut input = PREFACE.to_vec();
        input.extend(frame(TYPE_HEADERS, FLAG_PADDED | FLAG_PRIORITY, 1, &padded));
        input.extend(frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 1, b));
        input.extend(&data);
        let out = run(&input, 5);
        let f = frames(&out);
        assert_eq!(f.len(), 2);
        assert_eq!((f[0].0, f[0].1, f[0].2), (TYPE_HEADERS, FLAG_END_HEADERS, 1));
        assert!(out.ends_with(&data));
        let fields = loona_hpack::Decoder::new().decode(&f[0].3).unwrap();
        assert!(fields.contains(&(b":authority".to_vec(), b"localhost".to_vec())));
        assert!(fields.contains(&(b":path".to_vec(), b"/runtime.v1.RuntimeService/Version".to_vec())));
    }

    #[test]
    fn broken_framing_ends_the_connection() {
        let mut r = Rewriter::new();
        r.feed(PREFACE).unwrap();
        // DATA inside a header block.
        let mut input = frame(TYPE_HEADERS, 0, 1, &[0x82]);
        input.extend(frame(0x0, 0, 1, b"x"));
        assert!(r.feed(&input).is_err());
        // A header block that does not decode (index 70 is in no table).
        let mut r = Rewriter::new();
        r.feed(PREFACE).unwrap();
        assert!(r.feed(&frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &[0xc6])).is_err());
    }
}
