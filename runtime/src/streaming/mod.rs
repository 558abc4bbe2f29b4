//! The CRI streaming server: `Exec`, `Attach` and `PortForward` return a URL here with a single-use
//! token, and the client (kubelet's proxy, crictl, kubectl) upgrades an HTTP/1.1 connection on it to
//! SPDY/3.1 or WebSocket.
//!
//! | Path | Upgrade | Protocols |
//! |---|---|---|
//! | `/exec/<token>`, `/attach/<token>` | `SPDY/3.1` | `X-Stream-Protocol-Version`: `v4.channel.k8s.io`, `v3.channel.k8s.io`, `v2.channel.k8s.io`, `channel.k8s.io` |
//! | same | `websocket` | `Sec-WebSocket-Protocol`: `v5.channel.k8s.io`, `v4.channel.k8s.io`, `v4.base64.channel.k8s.io`, `channel.k8s.io`, `base64.channel.k8s.io` (or none) |
//! | `/portforward/<token>` | `SPDY/3.1` | `portforward.k8s.io` |
//! | same | `websocket` | `v4.channel.k8s.io`, `v4.base64.channel.k8s.io` (or none) with `?port=`; `v2.portforward.k8s.io` and `SPDY/3.1+portforward.k8s.io` (SPDY carried in binary messages) |
//!
//! A token is good once, for [`TOKEN_TTL`]; an unknown, used or expired token is 404.

mod exec;
mod portforward;
pub mod spdy;
pub mod ws;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use berth_proto::cri::{AttachRequest, ExecRequest, PortForwardRequest};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::config::StreamConfig;
use crate::error::{Error, Result};
use crate::shims::Shim;

/// What the streaming server needs from the runtime, which implements it (the server knows no more
/// of berthd than this).
pub trait Backend: Send + Sync + 'static {
    /// The running container a session is for; `NotFound` or `FailedPrecondition` (not running).
    fn target(&self, container_id: &str) -> impl std::future::Future<Output = Result<Target>> + Send;
    /// Whether the container still runs (an attach ends when it stops).
    fn is_running(&self, container_id: &str) -> bool;
    /// The pinned network namespace of a ready pod; `None` for a host-network pod.
    fn pod_netns(&self, sandbox_id: &str) -> Result<Option<std::path::PathBuf>>;
}

/// A running container, as an exec or attach session uses it.
#[derive(Debug, Clone)]
pub struct Target {
    pub id: String,
    pub bundle: std::path::PathBuf,
    /// Its CRI log (empty when it has none).
    pub log_path: std::path::PathBuf,
    /// Created with `stdin` / `stdin_once`.
    pub stdin: bool,
    pub stdin_once: bool,
    pub shim: Shim,
}

/// How long a URL stays good (kubelet's request cache keeps them a minute).
pub const TOKEN_TTL: Duration = Duration::from_secs(60);
/// At most this many URLs wait to be used.
const MAX_PENDING: usize = 1000;
/// How long a client has to open the streams it announced.
const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);

/// A request waiting for its client to connect.
#[derive(Debug, Clone)]
pub(crate) enum Pending {
    Exec(ExecRequest),
    Attach(AttachRequest),
    PortForward(PortForwardRequest),
}

impl Pending {
    fn kind(&self) -> &'static str {
        match self {
            Pending::Exec(_) => "exec",
            Pending::Attach(_) => "attach",
            Pending::PortForward(_) => "portforward",
        }
    }
}

/// The streaming server's shared state: its base URL and the tokens handed out.
#[derive(Debug, Default)]
pub struct Registry {
    base: OnceLock<String>,
    pending: Mutex<HashMap<String, (Instant, Pending)>>,
}

impl Registry {
    /// Hands out a single-use URL for `p`.
    pub(crate) fn url(&self, p: Pending) -> Result<String> {
        let base = self
            .base
            .get()
            .ok_or_else(|| Error::Unavailable("the streaming server is not running".into()))?;
        let token = crate::store::new_id()?[..32].to_string();
        let kind = p.kind();
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.retain(|_, (at, _)| at.elapsed() < TOKEN_TTL);
        if pending.len() >= MAX_PENDING {
            return Err(Error::Unavailable(format!(
                "{MAX_PENDING} streaming requests are already waiting for their clients"
            )));
        }
        pending.insert(token.clone(), (Instant::now(), p));
        Ok(format!("{base}/{kind}/{token}"))
    }

    /// Takes the request behind `token` if it is of `kind` and has not expired. Any token is used up.
    fn take(&self, kind: &str, token: &str) -> Option<Pending> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let (at, p) = pending.remove(token)?;
        (at.elapsed() < TOKEN_TTL && p.kind() == kind).then_some(p)
    }
}

/// Binds the streaming server's listener and records its URL base in `registry`.
pub async fn bind(cfg: &StreamConfig, registry: &Registry) -> std::io::Result<TcpListener> {
    let ip: std::net::IpAddr = cfg
        .address
        .parse()
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "stream.address"))?;
    let l = TcpListener::bind((ip, cfg.port)).await?;
    let addr = l.local_addr()?;
    let _ = registry.base.set(format!("http://{addr}"));
    Ok(l)
}

/// Serves streaming connections on `listener` until `stop` turns true. Sessions in progress go on.
pub async fn serve<B: Backend>(
    listener: TcpListener,
    backend: Arc<B>,
    registry: Arc<Registry>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let (conn, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "streaming server: accept");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = until(&mut stop) => return,
        };
        let _ = conn.set_nodelay(true);
        let (backend, registry) = (backend.clone(), registry.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let (backend, registry) = (backend.clone(), registry.clone());
                async move { Ok::<_, Infallible>(route(&backend, &registry, req)) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30))
                .serve_connection(hyper_util::rt::TokioIo::new(conn), service)
                .with_upgrades()
                .await
            {
                tracing::debug!(%peer, error = %e, "streaming connection");
            }
        });
    }
}

type Resp = Response<Full<Bytes>>;

fn plain(status: StatusCode, msg: impl Into<String>) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(msg.into() + "\n")));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Values of a header that may repeat and may hold comma-separated lists.
fn header_list(h: &HeaderMap, name: &str) -> Vec<String> {
    h.get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect()
}

/// The first protocol the client lists that the server supports (the client's preference wins).
fn negotiate<'a>(client: &[String], server: &[&'a str]) -> Option<&'a str> {
    client
        .iter()
        .find_map(|c| server.iter().find(|s| **s == c.as_str()).copied())
}

pub(crate) const SPDY_EXEC_PROTOCOLS: [&str; 4] = [
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];
pub(crate) const SPDY_PORTFORWARD_PROTOCOLS: [&str; 1] = ["portforward.k8s.io"];
pub(crate) const WS_EXEC_PROTOCOLS: [&str; 5] = [
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "channel.k8s.io",
    "base64.channel.k8s.io",
];
pub(crate) const WS_PORTFORWARD_PROTOCOLS: [&str; 4] = [
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "v2.portforward.k8s.io",
    "SPDY/3.1+portforward.k8s.io",
];

fn route<B: Backend>(backend: &Arc<B>, registry: &Registry, mut req: Request<Incoming>) -> Resp {
    let path = req.uri().path().to_string();
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let (kind, token) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if !matches!(kind, "exec" | "attach" | "portforward") || token.is_empty() || token.contains('/') {
        return plain(StatusCode::NOT_FOUND, "not found");
    }
    let Some(pending) = registry.take(kind, token) else {
        return plain(StatusCode::NOT_FOUND, "unknown or expired token");
    };
    let h = &req.headers().clone();
    let connection_upgrade = header_list(h, "connection")
        .iter()
        .any(|v| v.eq_ignore_ascii_case("upgrade"));
    let upgrade = h
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if !connection_upgrade || upgrade.is_empty() {
        return plain(
            StatusCode::BAD_REQUEST,
            "unable to upgrade: missing upgrade headers in request",
        );
    }
    let is_pf = matches!(pending, Pending::PortForward(_));
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    let on_upgrade = hyper::upgrade::on(&mut req);
    let upgraded = Upgraded {
        backend: backend.clone(),
        pending,
        on_upgrade,
        resp,
    };
    if upgrade.eq_ignore_ascii_case("websocket") {
        return ws_upgrade(h, req.uri().query().unwrap_or(""), is_pf, upgraded);
    }
    if !upgrade.eq_ignore_ascii_case("SPDY/3.1") {
        return plain(
            StatusCode::BAD_REQUEST,
            format!("unable to upgrade: unsupported protocol {upgrade:?} (SPDY/3.1 or websocket)"),
        );
    }
    spdy_upgrade(h, is_pf, upgraded)
}

/// An accepted upgrade: the session's request and backend, the connection to come, the 101 answer.
struct Upgraded<B> {
    backend: Arc<B>,
    pending: Pending,
    on_upgrade: hyper::upgrade::OnUpgrade,
    resp: Resp,
}

/// Negotiates a WebSocket session and starts it once the connection is upgraded.
fn ws_upgrade<B: Backend>(h: &HeaderMap, query: &str, is_pf: bool, u: Upgraded<B>) -> Resp {
    let Upgraded {
        backend,
        pending,
        on_upgrade,
        mut resp,
    } = u;
    let Some(key) = h.get("sec-websocket-key").and_then(|v| v.to_str().ok()) else {
        return plain(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key");
    };
    if h.get("sec-websocket-version").and_then(|v| v.to_str().ok()) != Some("13") {
        let mut r = plain(StatusCode::BAD_REQUEST, "unsupported WebSocket version");
        r.headers_mut()
            .insert("sec-websocket-version", HeaderValue::from_static("13"));
        return r;
    }
    let offered = header_list(h, "sec-websocket-protocol");
    let server: &[&str] = if is_pf {
        &WS_PORTFORWARD_PROTOCOLS
    } else {
        &WS_EXEC_PROTOCOLS
    };
    let protocol = if offered.is_empty() {
        ""
    } else {
        match negotiate(&offered, server) {
            Some(p) => p,
            None => {
                return plain(
                    StatusCode::FORBIDDEN,
                    format!("requested protocol(s) are not supported: {offered:?}; supports {server:?}"),
                );
            }
        }
    };
    let ports = if is_pf && !protocol.contains("portforward") {
        match query_ports(query) {
            Ok(p) => p,
            Err(m) => return plain(StatusCode::BAD_REQUEST, m),
        }
    } else {
        Vec::new()
    };
    resp.headers_mut()
        .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(&ws::accept_key(key)) {
        resp.headers_mut().insert("sec-websocket-accept", v);
    }
    if !protocol.is_empty() {
        resp.headers_mut()
            .insert("sec-websocket-protocol", HeaderValue::from_static(protocol));
    }
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(io) => ws_session(backend, pending, protocol, ports, hyper_util::rt::TokioIo::new(io)).await,
            Err(e) => tracing::debug!(error = %e, "websocket upgrade"),
        }
    });
    resp
}

/// Negotiates a SPDY/3.1 session and starts it once the connection is upgraded.
fn spdy_upgrade<B: Backend>(h: &HeaderMap, is_pf: bool, u: Upgraded<B>) -> Resp {
    let Upgraded {
        backend,
        pending,
        on_upgrade,
        mut resp,
    } = u;
    let offered = header_list(h, "x-stream-protocol-version");
    if offered.is_empty() {
        return plain(
            StatusCode::BAD_REQUEST,
            "unable to upgrade: X-Stream-Protocol-Version is required",
        );
    }
    let server: &[&str] = if is_pf {
        &SPDY_PORTFORWARD_PROTOCOLS
    } else {
        &SPDY_EXEC_PROTOCOLS
    };
    let Some(protocol) = negotiate(&offered, server) else {
        let mut r = plain(
            StatusCode::FORBIDDEN,
            format!(
                "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server accepts {server:?}"
            ),
        );
        for s in server {
            r.headers_mut()
                .append("x-accepted-stream-protocol-versions", HeaderValue::from_static(s));
        }
        return r;
    };
    resp.headers_mut()
        .insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
    resp.headers_mut()
        .insert("x-stream-protocol-version", HeaderValue::from_static(protocol));
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(io) => spdy_session(backend, pending, protocol, hyper_util::rt::TokioIo::new(io)).await,
            Err(e) => tracing::debug!(error = %e, "SPDY upgrade"),
        }
    });
    resp
}

/// `?port=80&port=8080,9090` as kubelet parses it for WebSocket port forwarding.
fn query_ports(query: &str) -> std::result::Result<Vec<u16>, String> {
    let mut ports = Vec::new();
    for (k, v) in query.split('&').filter_map(|kv| kv.split_once('=')) {
        if k != "port" {
            continue;
        }
        for p in v.split("%2C").flat_map(|s| s.split(',')) {
            match p.parse::<u16>() {
                Ok(n) if n > 0 => ports.push(n),
                _ => return Err(format!("unable to parse {p:?} as a port")),
            }
        }
    }
    if ports.is_empty() {
        return Err("query parameter \"port\" is required".into());
    }
    Ok(ports)
}

/// What a connection's reader sends its writer, and what handlers send to the client.
#[derive(Debug)]
pub(crate) enum WriteCmd {
    /// Data on a stream (SPDY stream id, WebSocket channel).
    Data(u32, Vec<u8>),
    /// The server is done writing on a stream (SPDY FIN; no WebSocket equivalent).
    Fin(u32),
    /// SPDY SYN_REPLY.
    Reply(u32),
    /// SPDY PING echo, WebSocket pong.
    Pong(Vec<u8>),
    /// Close the connection (after what is queued).
    Close,
}

/// The server's writing end of one stream or channel.
#[derive(Debug, Clone)]
pub(crate) struct Out {
    tx: mpsc::Sender<WriteCmd>,
    id: u32,
}

impl Out {
    pub(crate) fn new(tx: mpsc::Sender<WriteCmd>, id: u32) -> Out {
        Out { tx, id }
    }

    /// Sends `data`; false once the connection is gone.
    pub(crate) async fn write(&self, data: &[u8]) -> bool {
        self.tx.send(WriteCmd::Data(self.id, data.to_vec())).await.is_ok()
    }

    pub(crate) async fn fin(&self) {
        let _ = self.tx.send(WriteCmd::Fin(self.id)).await;
    }
}

/// A stream the client opened on a SPDY connection.
#[derive(Debug)]
pub(crate) struct NewStream {
    pub id: u32,
    pub headers: Vec<(String, String)>,
    /// What the client sends on it; closed at its FIN.
    pub input: mpsc::Receiver<Vec<u8>>,
}

impl NewStream {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

async fn spdy_session<B: Backend, IO>(backend: Arc<B>, pending: Pending, protocol: &'static str, io: IO)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    tracing::info!(kind = pending.kind(), protocol, transport = "spdy", "streaming session");
    let (session, mut streams) = spdy::start(io);
    match pending {
        Pending::PortForward(req) => portforward::serve_spdy(backend, req, session, streams).await,
        Pending::Exec(_) | Pending::Attach(_) => {
            let tty = match &pending {
                Pending::Exec(r) => r.tty,
                Pending::Attach(r) => r.tty,
                Pending::PortForward(_) => false,
            };
            let (stdin, stdout, stderr) = match &pending {
                Pending::Exec(r) => (r.stdin, r.stdout, r.stderr),
                Pending::Attach(r) => (r.stdin, r.stdout, r.stderr),
                Pending::PortForward(_) => (false, false, false),
            };
            let stderr = stderr && !tty;
            let resize = tty && protocol != "channel.k8s.io" && protocol != "v2.channel.k8s.io";
            let expected = 1 + usize::from(stdin) + usize::from(stdout) + usize::from(stderr) + usize::from(resize);
            let mut got: HashMap<String, NewStream> = HashMap::new();
            let deadline = tokio::time::sleep(STREAM_CREATION_TIMEOUT);
            tokio::pin!(deadline);
            while got.len() < expected {
                tokio::select! {
                    s = streams.recv() => match s {
                        Some(s) => {
                            let t = s.header("streamType").unwrap_or("").to_string();
                            got.insert(t, s);
                        }
                        None => return,
                    },
                    _ = &mut deadline => {
                        tracing::warn!("exec/attach: the client did not open its streams in time");
                        session.close().await;
                        return;
                    }
                }
            }
            let out = |t: &str| got.get(t).map(|s| Out::new(session.tx.clone(), s.id));
            let Some(error) = out("error") else {
                session.close().await;
                return;
            };
            let io = exec::StreamIo {
                stdout: out("stdout"),
                stderr: out("stderr"),
                error,
                status_v4: protocol == "v4.channel.k8s.io",
                stdin: got.remove("stdin").map(|s| s.input),
                resize: got.remove("resize").map(|s| s.input),
                gone: session.gone.clone(),
            };
            // Streams opened later are answered by the session and otherwise ignored.
            tokio::spawn(async move { while streams.recv().await.is_some() {} });
            exec::run(&backend, pending, io).await;
            session.close().await;
        }
    }
}

async fn ws_session<B: Backend, IO>(backend: Arc<B>, pending: Pending, protocol: &'static str, ports: Vec<u16>, io: IO)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    tracing::info!(
        kind = pending.kind(),
        protocol,
        transport = "websocket",
        "streaming session"
    );
    if protocol.contains("portforward") {
        // SPDY inside binary WebSocket messages: tunnel the bytes to a SPDY session.
        let Pending::PortForward(req) = pending else { return };
        let (mine, theirs) = tokio::io::duplex(64 << 10);
        let (tx, rx) = mpsc::channel(16);
        let session = ws::start(io, ws::Codec::Raw, HashMap::from([(0u8, tx)]), false);
        ws::tunnel(session, rx, mine);
        let (session, streams) = spdy::start(theirs);
        portforward::serve_spdy(backend, req, session, streams).await;
        return;
    }
    let codec = if protocol.contains("base64") {
        ws::Codec::Base64
    } else {
        ws::Codec::Binary
    };
    match pending {
        Pending::PortForward(req) => {
            let mut inputs = HashMap::new();
            let mut rxs = Vec::new();
            for i in 0..ports.len() {
                let (tx, rx) = mpsc::channel(16);
                inputs.insert((2 * i) as u8, tx);
                rxs.push(rx);
            }
            let session = ws::start(io, codec, inputs, false);
            portforward::serve_ws(backend, req, session, ports, rxs).await;
        }
        Pending::Exec(_) | Pending::Attach(_) => {
            let (stdin, stdout, stderr, tty) = match &pending {
                Pending::Exec(r) => (r.stdin, r.stdout, r.stderr, r.tty),
                Pending::Attach(r) => (r.stdin, r.stdout, r.stderr, r.tty),
                Pending::PortForward(_) => return,
            };
            let stderr = stderr && !tty;
            let mut inputs = HashMap::new();
            let (stdin_tx, stdin_rx) = mpsc::channel(16);
            let (resize_tx, resize_rx) = mpsc::channel(16);
            if stdin {
                inputs.insert(0u8, stdin_tx);
            }
            if tty {
                inputs.insert(4u8, resize_tx);
            }
            let session = ws::start(io, codec, inputs, protocol == "v5.channel.k8s.io");
            let out = |ch: u32| Out::new(session.tx.clone(), ch);
            // An empty message on the lowest channel the client reads tells it the streams are up.
            let first = if stdout {
                1
            } else if stderr {
                2
            } else {
                3
            };
            out(first).write(&[]).await;
            let io = exec::StreamIo {
                stdout: stdout.then(|| out(1)),
                stderr: stderr.then(|| out(2)),
                error: out(3),
                status_v4: protocol.starts_with("v4.") || protocol.starts_with("v5."),
                stdin: stdin.then_some(stdin_rx),
                resize: tty.then_some(resize_rx),
                gone: session.gone.clone(),
            };
            exec::run(&backend, pending, io).await;
            session.close().await;
        }
    }
}

/// What a transport makes of one write command.
pub(crate) enum Encoded {
    Send(Vec<u8>),
    /// Nothing to send for it.
    Skip,
    /// These bytes, then the end of the connection.
    Last(Vec<u8>),
}

/// Writes what the session's handlers queue, encoded by the transport, until a close or a write
/// error; flushes when nothing else is queued (bursts go out together), then shuts the connection
/// down and turns `closed` true.
pub(crate) async fn write_loop<W: tokio::io::AsyncWrite + Unpin>(
    mut wr: W,
    mut rx: mpsc::Receiver<WriteCmd>,
    closed: watch::Sender<bool>,
    mut encode: impl FnMut(WriteCmd) -> Encoded + Send,
) {
    use tokio::io::AsyncWriteExt as _;
    while let Some(cmd) = rx.recv().await {
        let (bytes, last) = match encode(cmd) {
            Encoded::Send(b) => (b, false),
            Encoded::Skip => continue,
            Encoded::Last(b) => (b, true),
        };
        if !bytes.is_empty() && wr.write_all(&bytes).await.is_err() {
            break;
        }
        if last || (rx.is_empty() && wr.flush().await.is_err()) {
            break;
        }
    }
    let _ = wr.flush().await;
    let _ = wr.shutdown().await;
    let _ = closed.send(true);
}

/// Resolves once `flag` turns true (or its sender is gone).
pub(crate) async fn until(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|f| *f).await;
}

/// A connection's handle for handlers: its writer, and whether the client is gone.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub tx: mpsc::Sender<WriteCmd>,
    /// Turns true when the client's side of the connection ends.
    pub gone: watch::Receiver<bool>,
}

impl Session {
    /// Flushes what is queued and closes the connection.
    pub async fn close(&self) {
        let _ = self.tx.send(WriteCmd::Close).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_prefers_the_client_order() {
        let c = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            negotiate(&c(&["v4.channel.k8s.io", "channel.k8s.io"]), &SPDY_EXEC_PROTOCOLS),
            Some("v4.channel.k8s.io")
        );
        assert_eq!(
            negotiate(&c(&["v9.x", "v2.channel.k8s.io"]), &SPDY_EXEC_PROTOCOLS),
            Some("v2.channel.k8s.io")
        );
        assert_eq!(negotiate(&c(&["v9.x"]), &SPDY_EXEC_PROTOCOLS), None);
    }

    #[test]
    fn ports_from_the_query() {
        assert_eq!(query_ports("port=80&port=8080,9090").unwrap(), vec![80, 8080, 9090]);
        assert!(query_ports("").is_err());
        assert!(query_ports("port=0").is_err());
        assert!(query_ports("port=x").is_err());
    }

    #[test]
    fn tokens_are_single_use_and_typed() {
        let r = Registry::default();
        assert!(r.url(Pending::Exec(ExecRequest::default())).is_err(), "no server yet");
        r.base.set("http://127.0.0.1:1".into()).unwrap();
        let url = r.url(Pending::Exec(ExecRequest::default())).unwrap();
        let token = url.rsplit('/').next().unwrap().to_string();
        assert_eq!(token.len(), 32);
        assert!(url.starts_with("http://127.0.0.1:1/exec/"));
        assert!(r.take("exec", &token).is_some());
        assert!(r.take("exec", &token).is_none(), "used once");
        let url = r.url(Pending::Exec(ExecRequest::default())).unwrap();
        let token = url.rsplit('/').next().unwrap().to_string();
        assert!(r.take("attach", &token).is_none(), "wrong kind");
        assert!(r.take("exec", &token).is_none(), "a wrong-kind try uses it up");
        // Expired: refused, and pruned by the next URL handed out.
        let Some(old) = Instant::now().checked_sub(TOKEN_TTL) else {
            return;
        };
        r.pending
            .lock()
            .unwrap()
            .insert("old".into(), (old, Pending::Exec(ExecRequest::default())));
        assert!(r.take("exec", "old").is_none());
        r.pending
            .lock()
            .unwrap()
            .insert("old".into(), (old, Pending::Exec(ExecRequest::default())));
        r.url(Pending::Exec(ExecRequest::default())).unwrap();
        assert!(!r.pending.lock().unwrap().contains_key("old"));
    }
}
