//! A registry front that demands credentials, for testing berth's auth flows against the real test
//! registry behind it. It answers 401 with a Bearer or Basic challenge, issues tokens at `/token`,
//! and passes authorized `/v2/` requests on to the registry. One request per connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy asks of clients.
#[derive(Debug, Clone)]
pub enum Mode {
    /// Token auth, as docker.io does. `creds`: what the token endpoint requires (None = anonymous).
    Bearer { creds: Option<(String, String)> },
    /// Basic auth on every request.
    Basic { user: String, pass: String },
}

#[derive(Debug)]
pub struct AuthProxy {
    pub addr: SocketAddr,
    /// Requests served by the token endpoint (granted or not).
    pub token_requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

const TOKEN: &str = "berth-test-token";

impl AuthProxy {
    /// Starts on a free loopback port, in front of `upstream` (`host:port`).
    pub async fn start(mode: Mode, upstream: String) -> anyhow::Result<AuthProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let token_requests = Arc::new(AtomicUsize::new(0));
        let counter = token_requests.clone();
        let task = tokio::spawn(async move {
            let client = reqwest::Client::new();
            while let Ok((conn, _)) = listener.accept().await {
                let (mode, upstream, client, counter) =
                    (mode.clone(), upstream.clone(), client.clone(), counter.clone());
                tokio::spawn(async move {
                    let _ = serve(conn, addr, &mode, &upstream, &client, &counter).await;
                });
            }
        });
        Ok(AuthProxy {
            addr,
            token_requests,
            task,
        })
    }

    /// `127.0.0.1:<port>`, to put in image references.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for AuthProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn basic(user: &str, pass: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

async fn serve(
    mut conn: TcpStream,
    me: SocketAddr,
    mode: &Mode,
    upstream: &str,
    client: &reqwest::Client,
    token_requests: &AtomicUsize,
) -> anyhow::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        anyhow::ensure!(buf.len() < 64 << 10, "request head too large");
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split_whitespace();
    let (method, path) = (
        first.next().unwrap_or("GET").to_string(),
        first.next().unwrap_or("/").to_string(),
    );
    let mut headers = Vec::new();
    for l in lines.take_while(|l| !l.is_empty()) {
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let header = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let auth = header("authorization").unwrap_or_default();

    if path.starts_with("/token") {
        token_requests.fetch_add(1, Ordering::SeqCst);
        let ok = match mode {
            Mode::Bearer { creds: Some((u, p)) } => auth == basic(u, p),
            _ => true,
        };
        return if ok {
            respond(
                &mut conn,
                200,
                &[("Content-Type", "application/json".into())],
                format!("{{\"token\":\"{TOKEN}\"}}").as_bytes(),
            )
            .await
        } else {
            respond(
                &mut conn,
                401,
                &[],
                b"{\"errors\":[{\"code\":\"UNAUTHORIZED\",\"message\":\"bad credentials\"}]}",
            )
            .await
        };
    }
    let (authorized, challenge) = match mode {
        Mode::Bearer { .. } => (
            auth == format!("Bearer {TOKEN}"),
            format!(
                "Bearer realm=\"http://{me}/token\",service=\"berth-test\",scope=\"repository:berth/busybox:pull\""
            ),
        ),
        Mode::Basic { user, pass } => (auth == basic(user, pass), "Basic realm=\"berth-test\"".to_string()),
    };
    if !authorized {
        return respond(
            &mut conn,
            401,
            &[("WWW-Authenticate", challenge)],
            b"{\"errors\":[{\"code\":\"UNAUTHORIZED\",\"message\":\"authentication required\"}]}",
        )
        .await;
    }
    let mut req = client.request(method.parse()?, format!("http://{upstream}{path}"));
    if let Some(a) = header("accept") {
        req = req.header("Accept", a);
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let mut out_headers = Vec::new();
    for name in ["content-type", "docker-content-digest"] {
        if let Some(v) = resp.headers().get(name).and_then(|v| v.to_str().ok()) {
            out_headers.push((name, v.to_string()));
        }
    }
    let body = resp.bytes().await?;
    respond(&mut conn, status, &out_headers, &body).await
}

async fn respond(conn: &mut TcpStream, status: u16, headers: &[(&str, String)], body: &[u8]) -> anyhow::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes()).await?;
    conn.write_all(body).await?;
    conn.shutdown().await?;
    Ok(())
}
