//! A small client for the CRI streaming protocols, written from the specs (SPDY/3.1 draft, RFC 6455,
//! Kubernetes' remotecommand and portforward conventions) and independent of berthd's server code:
//! an HTTP/1.1 upgrade, a SPDY client (zlib header blocks with the SPDY/3 dictionary) and a WebSocket
//! client (masked frames, channel-prefixed messages).

use std::collections::HashMap;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use sha1::Digest as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// The SPDY/3 header dictionary, built from the draft's list: length-prefixed words, then a tail.
pub fn spdy3_dictionary() -> Vec<u8> {
    const WORDS: &[&str] = &[
        "options",
        "head",
        "post",
        "put",
        "delete",
        "trace",
        "accept",
        "accept-charset",
        "accept-encoding",
        "accept-language",
        "accept-ranges",
        "age",
        "allow",
        "authorization",
        "cache-control",
        "connection",
        "content-base",
        "content-encoding",
        "content-language",
        "content-length",
        "content-location",
        "content-md5",
        "content-range",
        "content-type",
        "date",
        "etag",
        "expect",
        "expires",
        "from",
        "host",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-range",
        "if-unmodified-since",
        "last-modified",
        "location",
        "max-forwards",
        "pragma",
        "proxy-authenticate",
        "proxy-authorization",
        "range",
        "referer",
        "retry-after",
        "server",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "vary",
        "via",
        "warning",
        "www-authenticate",
        "method",
        "get",
        "status",
        "200 OK",
        "version",
        "HTTP/1.1",
        "url",
        "public",
        "set-cookie",
        "keep-alive",
        "origin",
    ];
    const TAIL: &str = "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505\
203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized\
403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Unavailable\
Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT\
chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,\
text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.";
    let mut d = Vec::new();
    for w in WORDS {
        d.extend((w.len() as u32).to_be_bytes());
        d.extend(w.as_bytes());
    }
    d.extend(TAIL.as_bytes());
    d
}

/// The answer to an upgrade request.
#[derive(Debug)]
pub struct UpgradeResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl UpgradeResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `GET <url>` with `headers` and reads the response head (and a short body, if not 101).
pub async fn upgrade(url: &str, headers: &[(&str, &str)]) -> anyhow::Result<(UpgradeResponse, TcpStream)> {
    let rest = url.strip_prefix("http://").context("streaming URL must be http://")?;
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut s = TcpStream::connect(host)
        .await
        .with_context(|| format!("connect {host}"))?;
    s.set_nodelay(true)?;
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await?;
    // Byte by byte, so nothing after the head is consumed.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let b = s.read_u8().await.context("reading the response head")?;
        head.push(b);
        if head.len() > 64 << 10 {
            bail!("response head too long");
        }
    }
    let text = String::from_utf8_lossy(&head).to_string();
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut resp = UpgradeResponse {
        status,
        headers,
        body: String::new(),
    };
    if status != 101 {
        let len: usize = resp.header("content-length").and_then(|l| l.parse().ok()).unwrap_or(0);
        let mut body = vec![0u8; len.min(1 << 20)];
        s.read_exact(&mut body).await?;
        resp.body = String::from_utf8_lossy(&body).to_string();
    }
    Ok((resp, s))
}

/// A frame the SPDY client received.
#[derive(Debug, PartialEq, Eq)]
pub enum SpdyEvent {
    Reply(u32),
    Data { id: u32, data: Vec<u8>, fin: bool },
    Rst(u32),
    Ping(u32),
    GoAway,
    Other(u16),
}

/// The client end of a SPDY/3.1 connection.
pub struct SpdyClient {
    rd: Box<dyn tokio::io::AsyncRead + Unpin + Send>,
    wr: Box<dyn tokio::io::AsyncWrite + Unpin + Send>,
    deflate: Compress,
    inflate: Decompress,
    dict: Vec<u8>,
    next_id: u32,
    pub protocol: String,
}

impl SpdyClient {
    /// Upgrades `url` to SPDY/3.1 offering `protocols`; fails unless the server switches.
    pub async fn connect(url: &str, protocols: &[&str]) -> anyhow::Result<SpdyClient> {
        let mut h = vec![("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1")];
        for p in protocols {
            h.push(("X-Stream-Protocol-Version", p));
        }
        let (resp, s) = upgrade(url, &h).await?;
        if resp.status != 101 {
            bail!("SPDY upgrade refused: {} {}", resp.status, resp.body);
        }
        let protocol = resp.header("x-stream-protocol-version").unwrap_or("").to_string();
        SpdyClient::over(s, protocol)
    }

    /// A SPDY client on an already upgraded byte stream.
    pub fn over(
        s: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
        protocol: String,
    ) -> anyhow::Result<SpdyClient> {
        let dict = spdy3_dictionary();
        let mut deflate = Compress::new(Compression::default(), true);
        deflate.set_dictionary(&dict)?;
        let (rd, wr) = tokio::io::split(s);
        Ok(SpdyClient {
            rd: Box::new(rd),
            wr: Box::new(wr),
            deflate,
            inflate: Decompress::new(true),
            dict,
            next_id: 1,
            protocol,
        })
    }

    fn header_block(&mut self, headers: &[(&str, &str)]) -> anyhow::Result<Vec<u8>> {
        let mut raw = (headers.len() as u32).to_be_bytes().to_vec();
        for (k, v) in headers {
            raw.extend((k.len() as u32).to_be_bytes());
            raw.extend(k.to_ascii_lowercase().as_bytes());
            raw.extend((v.len() as u32).to_be_bytes());
            raw.extend(v.as_bytes());
        }
        let mut out = Vec::with_capacity(raw.len() + 128);
        let mut pos = 0;
        loop {
            out.reserve(256);
            let before = self.deflate.total_in();
            self.deflate.compress_vec(&raw[pos..], &mut out, FlushCompress::Sync)?;
            pos += (self.deflate.total_in() - before) as usize;
            if pos == raw.len() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }

    /// Opens a stream (SYN_STREAM) with `headers`; `fin` makes it half-closed from the start.
    pub async fn open(&mut self, headers: &[(&str, &str)], fin: bool) -> anyhow::Result<u32> {
        let id = self.next_id;
        self.next_id += 2;
        let block = self.header_block(headers)?;
        let mut f = vec![0x80, 3, 0, 1, u8::from(fin)];
        f.extend(&((10 + block.len()) as u32).to_be_bytes()[1..]);
        f.extend(id.to_be_bytes());
        f.extend(0u32.to_be_bytes());
        f.extend([0, 0]);
        f.extend(block);
        self.wr.write_all(&f).await?;
        Ok(id)
    }

    /// Sends DATA on a stream; `fin` closes the client's side of it.
    pub async fn send(&mut self, id: u32, data: &[u8], fin: bool) -> anyhow::Result<()> {
        let mut f = id.to_be_bytes().to_vec();
        f.push(u8::from(fin));
        f.extend(&(data.len() as u32).to_be_bytes()[1..]);
        f.extend(data);
        self.wr.write_all(&f).await?;
        Ok(())
    }

    pub async fn ping(&mut self, n: u32) -> anyhow::Result<()> {
        let mut f = vec![0x80, 3, 0, 6, 0, 0, 0, 4];
        f.extend(n.to_be_bytes());
        self.wr.write_all(&f).await?;
        Ok(())
    }

    /// The next frame, or None once the server closed the connection.
    pub async fn next(&mut self) -> anyhow::Result<Option<SpdyEvent>> {
        let mut head = [0u8; 8];
        match self.rd.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let flags = head[4];
        let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
        let mut body = vec![0u8; len];
        self.rd.read_exact(&mut body).await?;
        if head[0] & 0x80 == 0 {
            let id = u32::from_be_bytes([head[0] & 0x7f, head[1], head[2], head[3]]);
            return Ok(Some(SpdyEvent::Data {
                id,
                data: body,
                fin: flags & 1 != 0,
            }));
        }
        let version = u16::from_be_bytes([head[0] & 0x7f, head[1]]);
        if version != 3 {
            bail!("SPDY version {version} from the server");
        }
        let kind = u16::from_be_bytes([head[2], head[3]]);
        let id_at = |b: &[u8]| u32::from_be_bytes([b[0] & 0x7f, b[1], b[2], b[3]]);
        Ok(Some(match kind {
            2 => {
                let id = id_at(&body);
                self.inflate_block(&body[4..])?;
                SpdyEvent::Reply(id)
            }
            3 => SpdyEvent::Rst(id_at(&body)),
            6 => SpdyEvent::Ping(u32::from_be_bytes([body[0], body[1], body[2], body[3]])),
            7 => SpdyEvent::GoAway,
            k => SpdyEvent::Other(k),
        }))
    }

    fn inflate_block(&mut self, input: &[u8]) -> anyhow::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(1024);
        let mut pos = 0;
        loop {
            out.reserve(1024);
            let before = self.inflate.total_in();
            let r = self
                .inflate
                .decompress_vec(&input[pos..], &mut out, FlushDecompress::Sync);
            pos += (self.inflate.total_in() - before) as usize;
            match r {
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate.set_dictionary(&self.dict)?;
                }
                Err(e) => return Err(e.into()),
                Ok(_) if pos == input.len() && out.len() < out.capacity() => return Ok(out),
                Ok(_) => {}
            }
        }
    }
}

impl std::fmt::Debug for SpdyClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpdyClient").field("protocol", &self.protocol).finish()
    }
}

/// What an exec/attach session produced.
#[derive(Debug, Default)]
pub struct ExecOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The error stream (v4: the status JSON).
    pub error: Vec<u8>,
    /// Streams the server answered.
    pub replies: usize,
}

impl ExecOutput {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).to_string()
    }

    /// The v4 status document.
    pub fn status(&self) -> serde_json::Value {
        serde_json::from_slice(&self.error).unwrap_or(serde_json::Value::Null)
    }
}

/// The streams of a SPDY exec, by type.
#[derive(Debug, Default)]
pub struct SpdyExecStreams {
    pub ids: HashMap<u32, &'static str>,
    pub stdin: Option<u32>,
    pub resize: Option<u32>,
}

/// Opens the exec streams the way kubectl does: error first, then stdin, stdout, stderr, resize.
pub async fn spdy_exec_streams(
    c: &mut SpdyClient,
    stdin: bool,
    stdout: bool,
    stderr: bool,
    resize: bool,
) -> anyhow::Result<SpdyExecStreams> {
    let mut s = SpdyExecStreams::default();
    let id = c.open(&[("streamType", "error")], false).await?;
    s.ids.insert(id, "error");
    if stdin {
        let id = c.open(&[("streamType", "stdin")], false).await?;
        s.ids.insert(id, "stdin");
        s.stdin = Some(id);
    }
    if stdout {
        let id = c.open(&[("streamType", "stdout")], false).await?;
        s.ids.insert(id, "stdout");
    }
    if stderr {
        let id = c.open(&[("streamType", "stderr")], false).await?;
        s.ids.insert(id, "stderr");
    }
    if resize {
        let id = c.open(&[("streamType", "resize")], false).await?;
        s.ids.insert(id, "resize");
        s.resize = Some(id);
    }
    Ok(s)
}

/// Reads frames until the server closes, sorting data by stream type.
pub async fn spdy_collect(c: &mut SpdyClient, s: &SpdyExecStreams, out: &mut ExecOutput) -> anyhow::Result<()> {
    while let Some(ev) = tokio::time::timeout(HANG_GUARD, c.next())
        .await
        .context("the server sent nothing for a minute")??
    {
        spdy_record(&ev, s, out);
    }
    Ok(())
}

/// How long the collecting helpers wait for the next frame before calling it a hang.
const HANG_GUARD: std::time::Duration = std::time::Duration::from_secs(60);

pub fn spdy_record(ev: &SpdyEvent, s: &SpdyExecStreams, out: &mut ExecOutput) {
    match ev {
        SpdyEvent::Reply(_) => out.replies += 1,
        SpdyEvent::Data { id, data, .. } => match s.ids.get(id) {
            Some(&"stdout") => out.stdout.extend(data),
            Some(&"stderr") => out.stderr.extend(data),
            Some(&"error") => out.error.extend(data),
            _ => {}
        },
        _ => {}
    }
}

/// Runs a whole SPDY exec: opens the streams, sends `stdin` (then closes it), collects the rest.
pub async fn spdy_exec(url: &str, protocols: &[&str], stdin: Option<&[u8]>, tty: bool) -> anyhow::Result<ExecOutput> {
    let mut c = SpdyClient::connect(url, protocols).await?;
    let s = spdy_exec_streams(&mut c, stdin.is_some(), true, !tty, tty).await?;
    if let (Some(id), Some(data)) = (s.stdin, stdin) {
        c.send(id, data, true).await?;
    }
    let mut out = ExecOutput::default();
    spdy_collect(&mut c, &s, &mut out).await?;
    Ok(out)
}

/// The client end of a WebSocket connection.
#[derive(Debug)]
pub struct WsClient {
    rd: OwnedReadHalf,
    wr: OwnedWriteHalf,
    pub protocol: String,
}

/// A WebSocket message (after reassembly) or control frame.
#[derive(Debug, PartialEq, Eq)]
pub enum WsMessage {
    Binary(Vec<u8>),
    Text(String),
    Close,
    Ping(Vec<u8>),
    Pong(Vec<u8>),
}

impl WsClient {
    /// Upgrades `url` to WebSocket offering `protocols`; checks the accept key.
    pub async fn connect(url: &str, protocols: &[&str]) -> anyhow::Result<WsClient> {
        let key = base64::engine::general_purpose::STANDARD.encode(rand_bytes::<16>());
        let list = protocols.join(", ");
        let mut h = vec![
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", key.as_str()),
        ];
        if !protocols.is_empty() {
            h.push(("Sec-WebSocket-Protocol", list.as_str()));
        }
        let (resp, s) = upgrade(url, &h).await?;
        if resp.status != 101 {
            bail!("WebSocket upgrade refused: {} {}", resp.status, resp.body);
        }
        let mut sha = sha1::Sha1::new();
        sha.update(key.as_bytes());
        sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
        let want = base64::engine::general_purpose::STANDARD.encode(sha.finalize());
        if resp.header("sec-websocket-accept") != Some(want.as_str()) {
            bail!("bad Sec-WebSocket-Accept: {:?}", resp.header("sec-websocket-accept"));
        }
        let (rd, wr) = s.into_split();
        Ok(WsClient {
            rd,
            wr,
            protocol: resp.header("sec-websocket-protocol").unwrap_or("").to_string(),
        })
    }

    /// Sends one masked frame.
    pub async fn send_frame(&mut self, opcode: u8, payload: &[u8]) -> anyhow::Result<()> {
        write_frame(&mut self.wr, opcode, payload).await
    }

    /// Sends `data` on `channel` in binary framing.
    pub async fn send_channel(&mut self, channel: u8, data: &[u8]) -> anyhow::Result<()> {
        let mut p = vec![channel];
        p.extend(data);
        self.send_frame(2, &p).await
    }

    pub async fn close(&mut self) -> anyhow::Result<()> {
        self.send_frame(8, &1000u16.to_be_bytes()).await
    }

    /// The next message, or None at the end of the connection.
    pub async fn next(&mut self) -> anyhow::Result<Option<WsMessage>> {
        read_message(&mut self.rd).await
    }

    /// Turns a `v2.portforward.k8s.io` connection into the byte stream it tunnels: binary messages
    /// in, binary messages out.
    pub fn tunnel(self) -> tokio::io::DuplexStream {
        let (mine, theirs) = tokio::io::duplex(64 << 10);
        let (mut mrd, mut mwr) = tokio::io::split(mine);
        let (mut rd, mut wr) = (self.rd, self.wr);
        tokio::spawn(async move {
            while let Ok(Some(m)) = read_message(&mut rd).await {
                match m {
                    WsMessage::Binary(b) if mwr.write_all(&b).await.is_err() => break,
                    WsMessage::Close => break,
                    _ => {}
                }
            }
            let _ = mwr.shutdown().await;
        });
        tokio::spawn(async move {
            let mut buf = vec![0u8; 32 << 10];
            while let Ok(n) = mrd.read(&mut buf).await {
                if n == 0 || write_frame(&mut wr, 2, &buf[..n]).await.is_err() {
                    break;
                }
            }
            let _ = write_frame(&mut wr, 8, &1000u16.to_be_bytes()).await;
        });
        theirs
    }
}

async fn write_frame(wr: &mut OwnedWriteHalf, opcode: u8, payload: &[u8]) -> anyhow::Result<()> {
    let mut f = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n <= 0xffff => {
            f.push(0x80 | 126);
            f.extend((n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend((n as u64).to_be_bytes());
        }
    }
    let mask = rand_bytes::<4>();
    f.extend(mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    wr.write_all(&f).await?;
    Ok(())
}

async fn read_message(rd: &mut OwnedReadHalf) -> anyhow::Result<Option<WsMessage>> {
    let mut msg = Vec::new();
    let mut first_op = None;
    loop {
        let mut h = [0u8; 2];
        match rd.read_exact(&mut h).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        if h[1] & 0x80 != 0 {
            bail!("the server masked a frame");
        }
        let len = match h[1] & 0x7f {
            126 => rd.read_u16().await? as usize,
            127 => rd.read_u64().await? as usize,
            n => n as usize,
        };
        let mut p = vec![0u8; len];
        rd.read_exact(&mut p).await?;
        let op = h[0] & 0x0f;
        match op {
            8 => return Ok(Some(WsMessage::Close)),
            9 => return Ok(Some(WsMessage::Ping(p))),
            10 => return Ok(Some(WsMessage::Pong(p))),
            _ => {}
        }
        if op != 0 {
            first_op = Some(op);
        }
        msg.extend(p);
        if h[0] & 0x80 != 0 {
            return Ok(Some(match first_op {
                Some(1) => WsMessage::Text(String::from_utf8(msg)?),
                _ => WsMessage::Binary(msg),
            }));
        }
    }
}

/// Decodes a channel message of the binary or base64 channel protocols.
pub fn ws_channel(m: &WsMessage) -> Option<(u8, Vec<u8>)> {
    match m {
        WsMessage::Binary(b) => b.split_first().map(|(c, d)| (*c, d.to_vec())),
        WsMessage::Text(t) => {
            let (c, d) = t.as_bytes().split_first()?;
            let data = base64::engine::general_purpose::STANDARD.decode(d).ok()?;
            Some((c - b'0', data))
        }
        _ => None,
    }
}

/// Runs a whole WebSocket exec: sends `stdin` (and, with v5, closes it), collects channels 1–3 until
/// the server closes.
pub async fn ws_exec(url: &str, protocols: &[&str], stdin: Option<&[u8]>) -> anyhow::Result<ExecOutput> {
    let mut c = WsClient::connect(url, protocols).await?;
    if let Some(data) = stdin {
        c.send_channel(0, data).await?;
        if c.protocol == "v5.channel.k8s.io" {
            c.send_channel(255, &[0]).await?;
        }
    }
    let mut out = ExecOutput::default();
    while let Some(m) = tokio::time::timeout(HANG_GUARD, c.next())
        .await
        .context("the server sent nothing for a minute")??
    {
        if m == WsMessage::Close {
            break;
        }
        match ws_channel(&m) {
            Some((1, d)) => out.stdout.extend(d),
            Some((2, d)) => out.stderr.extend(d),
            Some((3, d)) => out.error.extend(d),
            _ => {}
        }
    }
    Ok(out)
}

fn rand_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut b);
    }
    b
}
