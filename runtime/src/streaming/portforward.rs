//! PortForward: TCP connections to `127.0.0.1:<port>` inside the pod's network namespace.
//!
//! The socket is made by a short-lived thread that enters the pod's pinned netns (`setns` is per
//! thread, so no tokio worker ever changes namespace) and then hands the connected socket back; a
//! socket stays in the namespace it was created in. Each SPDY stream pair (`streamType` data and
//! error, same `requestID`) or each WebSocket port (channels 2n and 2n+1) is one connection. When the
//! pod closes, the client's stream gets FIN; when the client closes, the pod's socket is shut down
//! for writing; a connection failure is written on the error stream.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use berth_proto::cri::PortForwardRequest;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

use super::{Backend, NewStream, Out, Session, until};
use crate::error::Result;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects to 127.0.0.1:`port` in `netns` (the caller's namespace when None).
pub(crate) async fn connect(netns: Option<PathBuf>, port: u16) -> std::io::Result<TcpStream> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("berth-portforward".into())
        .spawn(move || {
            let r = (|| -> std::io::Result<std::net::TcpStream> {
                if let Some(ns) = netns {
                    let f = std::fs::File::open(&ns)?;
                    nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)
                        .map_err(|e| std::io::Error::other(format!("enter {}: {e}", ns.display())))?;
                }
                let s = std::net::TcpStream::connect_timeout(
                    &(std::net::Ipv4Addr::LOCALHOST, port).into(),
                    CONNECT_TIMEOUT,
                )?;
                s.set_nonblocking(true)?;
                Ok(s)
            })();
            let _ = tx.send(r);
        })?;
    let s = rx
        .await
        .map_err(|_| std::io::Error::other("port-forward thread ended without an answer"))??;
    TcpStream::from_std(s)
}

/// Forwards one connection: client input ↔ pod socket. Writes a failure on `error`.
async fn forward(
    netns: Result<Option<PathBuf>>,
    port: u16,
    mut input: mpsc::Receiver<Vec<u8>>,
    data: Out,
    error: Out,
    mut gone: watch::Receiver<bool>,
) {
    let conn = match netns {
        Ok(ns) => connect(ns, port).await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    let conn = match conn {
        Ok(c) => c,
        Err(e) => {
            tracing::info!(port, error = %e, "port forward");
            error
                .write(format!("error forwarding port {port} to pod: {e}").as_bytes())
                .await;
            error.fin().await;
            data.fin().await;
            return;
        }
    };
    let (mut rd, mut wr) = conn.into_split();
    // The client's end of input half-closes the pod socket; the forward ends when the pod closes.
    let to_pod = tokio::spawn(async move {
        while let Some(d) = input.recv().await {
            if wr.write_all(&d).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    let from_pod = async {
        let mut buf = vec![0u8; 32 << 10];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if !data.write(&buf[..n]).await {
                        break;
                    }
                }
            }
        }
    };
    tokio::select! {
        _ = from_pod => {}
        _ = until(&mut gone) => {}
    }
    to_pod.abort();
    data.fin().await;
    error.fin().await;
}

/// Serves a SPDY port-forward session: pairs streams by `requestID` and forwards each pair.
pub(crate) async fn serve_spdy<B: Backend>(
    backend: Arc<B>,
    req: PortForwardRequest,
    session: Session,
    mut streams: mpsc::Receiver<NewStream>,
) {
    let mut pairs: HashMap<String, (Option<NewStream>, Option<NewStream>)> = HashMap::new();
    while let Some(s) = streams.recv().await {
        let kind = s.header("streamType").unwrap_or("").to_string();
        let key = match s.header("requestID") {
            Some(r) => r.to_string(),
            // Old clients: the error stream comes right before its data stream.
            None if kind == "data" => s.id.saturating_sub(2).to_string(),
            None => s.id.to_string(),
        };
        let entry = pairs.entry(key.clone()).or_default();
        match kind.as_str() {
            "data" => entry.0 = Some(s),
            "error" => entry.1 = Some(s),
            _ => {
                tracing::debug!(kind, "port forward: unknown stream type");
                let out = Out::new(session.tx.clone(), s.id);
                out.fin().await;
                continue;
            }
        }
        if !matches!(pairs.get(&key), Some((Some(_), Some(_)))) {
            continue;
        }
        if let Some((Some(data), Some(error))) = pairs.remove(&key) {
            let port = data.header("port").and_then(|p| p.parse::<u16>().ok());
            let data_out = Out::new(session.tx.clone(), data.id);
            let error_out = Out::new(session.tx.clone(), error.id);
            let Some(port) = port.filter(|p| *p > 0) else {
                error_out
                    .write(format!("invalid port header {:?}", data.header("port")).as_bytes())
                    .await;
                error_out.fin().await;
                data_out.fin().await;
                continue;
            };
            let netns = backend.pod_netns(&req.pod_sandbox_id);
            tokio::spawn(forward(
                netns,
                port,
                data.input,
                data_out,
                error_out,
                session.gone.clone(),
            ));
        }
    }
    session.close().await;
}

/// Serves a WebSocket port-forward session: one connection per port in the query.
pub(crate) async fn serve_ws<B: Backend>(
    backend: Arc<B>,
    req: PortForwardRequest,
    session: Session,
    ports: Vec<u16>,
    inputs: Vec<mpsc::Receiver<Vec<u8>>>,
) {
    let mut tasks = Vec::new();
    for (i, (port, input)) in ports.into_iter().zip(inputs).enumerate() {
        let data = Out::new(session.tx.clone(), 2 * i as u32);
        let error = Out::new(session.tx.clone(), 2 * i as u32 + 1);
        // Each channel starts with its port, little-endian.
        data.write(&port.to_le_bytes()).await;
        error.write(&port.to_le_bytes()).await;
        let netns = backend.pod_netns(&req.pod_sandbox_id);
        tasks.push(tokio::spawn(forward(
            netns,
            port,
            input,
            data,
            error,
            session.gone.clone(),
        )));
    }
    for t in tasks {
        let _ = t.await;
    }
    session.close().await;
}
