//! The gRPC edge: tonic adapters that unwrap requests, call the [`Cri`] core, and map errors
//! (through `status.rs`, the only place that does). Each request gets an id and a span; mutating
//! RPCs log at info, reads at debug.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use berth_proto::cri::image_service_server::ImageServiceServer;
use berth_proto::cri::runtime_service_server::RuntimeServiceServer;
use berth_proto::tonic;
use tokio::net::UnixListener;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::UnixListenerStream;

use crate::cri::Cri;

mod authority;
mod image;
mod runtime;
pub mod status;

static REQUEST_ID: AtomicU64 = AtomicU64::new(1);

pub(crate) fn next_request_id() -> u64 {
    REQUEST_ID.fetch_add(1, Ordering::Relaxed)
}

/// Serves the CRI on `listener` until `shutdown` completes, then finishes in-flight requests.
/// Each connection's `:authority` is normalised first (see [`authority`]), so gRPC clients that put
/// the socket path there are answered as Go servers answer them.
pub async fn serve(
    listener: UnixListener,
    cri: Arc<Cri>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_service(
            RuntimeServiceServer::new(runtime::RuntimeAdapter(cri.clone())).max_decoding_message_size(16 << 20),
        )
        .add_service(ImageServiceServer::new(image::ImageAdapter(cri)).max_decoding_message_size(16 << 20))
        .serve_with_incoming_shutdown(
            UnixListenerStream::new(listener).map(|conn| conn.map(authority::Normalized::new)),
            shutdown,
        )
        .await
}

/// Binds the CRI socket: creates its directory, replaces a stale socket file (one nobody answers
/// on), refuses to steal a live one, and makes it 0600.
pub async fn bind(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if path.exists() {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("{} is in use by a running daemon", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    // Bind in a private (0700) directory beside it, make it 0600, then rename it into place: nobody
    // else can reach it before it is 0600. (Not by changing the umask: that is process-wide, and
    // would leave files other threads create meanwhile, e.g. unpacked layers, without permissions.)
    let dir = path.parent().unwrap_or(Path::new("."));
    let private = dir.join(format!(".bind-{}-{}", std::process::id(), next_request_id()));
    std::fs::DirBuilder::new().mode(0o700).create(&private)?;
    let tmp = private.join("socket");
    let bound = UnixListener::bind(&tmp).and_then(|l| {
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&tmp, path)?;
        Ok(l)
    });
    let _ = std::fs::remove_file(&tmp);
    let _ = std::fs::remove_dir(&private);
    bound
}

/// Runs one RPC inside a span with a request id; logs its end and maps its error.
macro_rules! rpc {
    ($name:literal, $level:ident, $body:expr) => {{
        let id = $crate::server::next_request_id();
        let span = tracing::span!(tracing::Level::$level, "cri", rpc = $name, id);
        let started = std::time::Instant::now();
        let res: $crate::error::Result<_> = tracing::Instrument::instrument(async { $body }, span.clone()).await;
        let _e = span.enter();
        match res {
            Ok(v) => {
                tracing::event!(tracing::Level::$level, elapsed_us = started.elapsed().as_micros() as u64, "ok");
                Ok(tonic::Response::new(v))
            }
            Err(e) => {
                let status = tonic::Status::from(e);
                tracing::warn!(code = ?status.code(), message = status.message(), "failed");
                Err(status)
            }
        }
    }};
}
pub(crate) use rpc;
