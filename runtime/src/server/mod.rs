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
        .layer(DeadlinesLayer)
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

/// How long the client gave a call (its `grpc-timeout`, as the socket's front renames it), less a
/// margin in which berth ends the work itself (kills a timed-out exec, answers DeadlineExceeded)
/// before [`Deadlines`] ends the call. None: no deadline.
pub(crate) fn deadline<T>(req: &tonic::Request<T>) -> Option<std::time::Duration> {
    let m = req.metadata();
    let v = m
        .get(authority::DEADLINE_HEADER)
        .or_else(|| m.get("grpc-timeout"))?
        .to_str()
        .ok()?;
    let given = parse_grpc_timeout(v)?;
    Some(given.saturating_sub((given / 10).min(std::time::Duration::from_millis(100))))
}

/// Ends every call still unanswered when its client's deadline passes with DEADLINE_EXCEEDED, as a
/// gRPC server must (tonic's own timer, which never sees the renamed header, would say CANCELLED).
/// A streaming answer's stream is not cut: the deadline is for its first answer.
#[derive(Debug, Clone)]
pub(crate) struct Deadlines<S>(S);

#[derive(Debug, Clone)]
pub(crate) struct DeadlinesLayer;

impl<S> tower::Layer<S> for DeadlinesLayer {
    type Service = Deadlines<S>;
    fn layer(&self, inner: S) -> Deadlines<S> {
        Deadlines(inner)
    }
}

impl<S, B> tower::Service<http::Request<B>> for Deadlines<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let limit = req
            .headers()
            .get(authority::DEADLINE_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout);
        let answer = self.0.call(req);
        Box::pin(async move {
            let Some(limit) = limit else { return answer.await };
            match tokio::time::timeout(limit, answer).await {
                Ok(r) => r,
                Err(_) => Ok(
                    tonic::Status::deadline_exceeded(format!("the client's deadline ({limit:?}) passed")).into_http(),
                ),
            }
        })
    }
}

/// `grpc-timeout`: at most 8 digits and a unit (H, M, S, m, u, n), as the gRPC HTTP/2 spec has it.
fn parse_grpc_timeout(v: &str) -> Option<std::time::Duration> {
    use std::time::Duration;
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// A Stream* RPC's answer (CRI list streaming, Kubernetes 1.36): the List* answer's items sent in
/// pages of [`PAGE`], so that no one message nears gRPC's size limit however many there are.
pub(crate) type Pages<T> = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<T, tonic::Status>> + Send>>;

/// Items per Stream* message (containerd's batch).
pub(crate) const PAGE: usize = 5000;

/// `items` as a stream of pages, each made by `page`; no message at all when there are none.
pub(crate) fn pages<I: Send + 'static, T: Send + 'static>(items: Vec<I>, page: impl Fn(Vec<I>) -> T) -> Pages<T> {
    let mut out = Vec::with_capacity(items.len().div_ceil(PAGE));
    let mut rest = items.into_iter().peekable();
    while rest.peek().is_some() {
        out.push(Ok(page(rest.by_ref().take(PAGE).collect())));
    }
    Box::pin(tokio_stream::iter(out))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;
    use tokio_stream::StreamExt as _;

    #[test]
    fn grpc_timeouts() {
        assert_eq!(super::parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(super::parse_grpc_timeout("1500m"), Some(Duration::from_millis(1500)));
        assert_eq!(super::parse_grpc_timeout("3H"), Some(Duration::from_secs(3 * 3600)));
        assert_eq!(
            super::parse_grpc_timeout("99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
        for bad in ["", "S", "123456789S", "12x", "-1S", "1.5S"] {
            assert_eq!(super::parse_grpc_timeout(bad), None, "{bad:?}");
        }
        let mut req = berth_proto::tonic::Request::new(());
        assert_eq!(super::deadline(&req), None);
        req.set_timeout(Duration::from_secs(2));
        assert_eq!(
            super::deadline(&req),
            Some(Duration::from_millis(1900)),
            "a tenth kept back"
        );
        req.set_timeout(Duration::from_secs(60));
        assert_eq!(
            super::deadline(&req),
            Some(Duration::from_millis(59_900)),
            "at most 100 ms kept back"
        );
    }

    #[tokio::test]
    async fn pages_split_at_the_page_size() {
        let sizes = |n: usize| async move {
            super::pages((0..n).collect::<Vec<_>>(), |p| p.len())
                .map(|r| r.unwrap())
                .collect::<Vec<_>>()
                .await
        };
        assert_eq!(sizes(0).await, Vec::<usize>::new());
        assert_eq!(sizes(3).await, vec![3]);
        assert_eq!(sizes(super::PAGE).await, vec![super::PAGE]);
        assert_eq!(sizes(2 * super::PAGE + 1).await, vec![super::PAGE, super::PAGE, 1]);
    }
}
