//! The server side of WebSocket (RFC 6455) with Kubernetes' channel framing: each message starts
//! with its channel number (a byte, or an ASCII digit with a base64 payload for the base64
//! protocols). `v5.channel.k8s.io` adds channel 255, on which the client closes one of its channels.

use std::collections::HashMap;

use base64::Engine as _;
use sha1::Digest as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

use super::{Encoded, Session, WriteCmd, write_loop};

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
const OP_CONT: u8 = 0;
const OP_TEXT: u8 = 1;
const OP_BINARY: u8 = 2;
const OP_CLOSE: u8 = 8;
const OP_PING: u8 = 9;
const OP_PONG: u8 = 10;
/// Largest message accepted from a client.
const MAX_MESSAGE: usize = 1 << 20;
/// The v5 channel that carries "close channel N" from the client.
const CLOSE_CHANNEL: u8 = 255;
const LINGER: std::time::Duration = std::time::Duration::from_secs(10);

/// `Sec-WebSocket-Accept` for a client's key.
pub fn accept_key(key: &str) -> String {
    let mut h = sha1::Sha1::new();
    h.update(key.trim().as_bytes());
    h.update(GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// How channel messages are framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// Binary messages: channel byte, then the data.
    Binary,
    /// Text messages: channel digit, then the data in base64.
    Base64,
    /// Binary messages carrying a byte stream, no channels (the SPDY tunnel).
    Raw,
}

/// Runs a WebSocket session on `io`. Messages on a channel in `inputs` go to its sender (for
/// `Codec::Raw`, every message goes to channel 0); `v5` enables the close channel.
pub(crate) fn start<IO>(io: IO, codec: Codec, inputs: HashMap<u8, mpsc::Sender<Vec<u8>>>, v5: bool) -> Session
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (rd, wr) = tokio::io::split(io);
    let (tx, rx) = mpsc::channel::<WriteCmd>(64);
    let (gone_tx, gone) = watch::channel(false);
    let (closed_tx, mut closed_rx) = watch::channel(false);
    tokio::spawn(write_loop(wr, rx, closed_tx, move |cmd| encode(codec, cmd)));
    let reader_tx = tx.clone();
    tokio::spawn(async move {
        let read = read_loop(rd, reader_tx, codec, inputs, v5);
        tokio::pin!(read);
        tokio::select! {
            r = &mut read => if let Err(e) = r { tracing::debug!(error = %e, "WebSocket session") },
            _ = async {
                let _ = closed_rx.wait_for(|c| *c).await;
                tokio::time::sleep(LINGER).await;
            } => {}
        }
        let _ = gone_tx.send(true);
    });
    Session { tx, gone }
}

/// Joins a raw-codec session to `stream`: messages from `input` (the session's channel 0) are
/// written to it, and what it yields goes out as binary messages.
pub(crate) fn tunnel(session: Session, mut input: mpsc::Receiver<Vec<u8>>, stream: tokio::io::DuplexStream) {
    let (mut rd, mut wr) = tokio::io::split(stream);
    tokio::spawn(async move {
        while let Some(m) = input.recv().await {
            if wr.write_all(&m).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    tokio::spawn(async move {
        let mut buf = vec![0u8; 32 << 10];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if session.tx.send(WriteCmd::Data(0, buf[..n].to_vec())).await.is_err() {
                        return;
                    }
                }
            }
        }
        session.close().await;
    });
}

fn frame(op: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(payload.len() + 10);
    f.push(0x80 | op);
    match payload.len() {
        n if n < 126 => f.push(n as u8),
        n if n <= 0xffff => {
            f.push(126);
            f.extend((n as u16).to_be_bytes());
        }
        n => {
            f.push(127);
            f.extend((n as u64).to_be_bytes());
        }
    }
    f.extend(payload);
    f
}

/// The frame of one write command in `codec` (FIN and SYN_REPLY have no WebSocket equivalent).
fn encode(codec: Codec, cmd: WriteCmd) -> Encoded {
    Encoded::Send(match cmd {
        WriteCmd::Data(ch, data) => match codec {
            Codec::Binary => {
                let mut p = Vec::with_capacity(data.len() + 1);
                p.push(ch as u8);
                p.extend(data);
                frame(OP_BINARY, &p)
            }
            Codec::Base64 => {
                let mut p = vec![b'0' + ch as u8];
                p.extend(base64::engine::general_purpose::STANDARD.encode(data).as_bytes());
                frame(OP_TEXT, &p)
            }
            Codec::Raw => frame(OP_BINARY, &data),
        },
        WriteCmd::Pong(p) => frame(OP_PONG, &p),
        WriteCmd::Fin(_) | WriteCmd::Reply(_) => return Encoded::Skip,
        WriteCmd::Close => return Encoded::Last(frame(OP_CLOSE, &1000u16.to_be_bytes())),
    })
}

fn bad(m: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string())
}

/// One frame: FIN, opcode and the unmasked payload; `None` at the end of the connection. `held` is
/// what the message so far holds (the limit is on the whole message).
async fn read_frame<R: AsyncRead + Unpin>(rd: &mut R, held: usize) -> std::io::Result<Option<(bool, u8, Vec<u8>)>> {
    let mut h = [0u8; 2];
    match rd.read_exact(&mut h).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let fin = h[0] & 0x80 != 0;
    let op = h[0] & 0x0f;
    let masked = h[1] & 0x80 != 0;
    let len = match h[1] & 0x7f {
        126 => u64::from(rd.read_u16().await?),
        127 => rd.read_u64().await?,
        n => u64::from(n),
    } as usize;
    if len > MAX_MESSAGE || held + len > MAX_MESSAGE {
        return Err(bad("WebSocket message too large"));
    }
    let mut mask = [0u8; 4];
    if masked {
        rd.read_exact(&mut mask).await?;
    }
    let mut payload = vec![0u8; len];
    rd.read_exact(&mut payload).await?;
    if masked {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
    }
    Ok(Some((fin, op, payload)))
}

/// Splits a whole message into its channel and data (`None`: nothing to deliver).
fn channel_message(codec: Codec, msg: &[u8]) -> std::io::Result<Option<(u8, Vec<u8>)>> {
    let Some((&first, rest)) = msg.split_first() else {
        return Ok(None);
    };
    Ok(Some(match codec {
        Codec::Base64 => match base64::engine::general_purpose::STANDARD.decode(rest) {
            Ok(d) => (first.wrapping_sub(b'0'), d),
            Err(_) => return Err(bad("invalid base64 in a channel message")),
        },
        Codec::Binary | Codec::Raw => (first, rest.to_vec()),
    }))
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut rd: R,
    tx: mpsc::Sender<WriteCmd>,
    codec: Codec,
    mut inputs: HashMap<u8, mpsc::Sender<Vec<u8>>>,
    v5: bool,
) -> std::io::Result<()> {
    let mut message: Vec<u8> = Vec::new();
    while let Some((fin, op, payload)) = read_frame(&mut rd, message.len()).await? {
        match op {
            OP_PING => {
                let _ = tx.send(WriteCmd::Pong(payload)).await;
                continue;
            }
            OP_PONG => continue,
            OP_CLOSE => return Ok(()),
            OP_TEXT | OP_BINARY | OP_CONT => message.extend(payload),
            _ => return Err(bad("unknown WebSocket opcode")),
        }
        if !fin {
            continue;
        }
        let msg = std::mem::take(&mut message);
        if codec == Codec::Raw {
            if let Some(input) = inputs.get(&0) {
                let _ = input.send(msg).await;
            }
            continue;
        }
        let Some((ch, data)) = channel_message(codec, &msg)? else {
            continue;
        };
        if v5 && ch == CLOSE_CHANNEL {
            if let Some(c) = data.first() {
                inputs.remove(c);
            }
            continue;
        }
        if let Some(input) = inputs.get(&ch)
            && !data.is_empty()
        {
            let _ = input.send(data).await;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_of_rfc6455() {
        assert_eq!(accept_key("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn frame_lengths() {
        assert_eq!(frame(OP_BINARY, &[1, 2]), vec![0x82, 2, 1, 2]);
        assert_eq!(&frame(OP_BINARY, &[0; 200])[..4], &[0x82, 126, 0, 200]);
        assert_eq!(&frame(OP_TEXT, &[0; 70000])[..2], &[0x81, 127]);
    }
}
