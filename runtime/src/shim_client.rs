//! berthd as a shim host: launching shim v2 binaries the way containerd 1.6 does, talking to them over
//! TTRPC (with the task service name each one speaks), and serving the events endpoint they publish to.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use berth_proto::shim::api;
use berth_proto::shim::protobuf::{self, Message as _};
use berth_proto::shim::ttrpc;
use berth_proto::shim::ttrpc::asynchronous::{Client, transport::Socket};

use crate::error::{Error, Result};

pub use berth_proto::contract::NAMESPACE;

/// The socket berth-shim serves the shim group `group` on, as `berth-shim start` names it (both
/// through [`berth_proto::contract::shim_socket`]), for the host address berthd gives its shims.
pub fn group_socket(events_socket: &Path, group: &str) -> std::path::PathBuf {
    let address = events_socket.with_extension("grpc");
    berth_proto::contract::shim_socket(
        events_socket.parent().unwrap_or(Path::new("/")),
        &address.display().to_string(),
        NAMESPACE,
        group,
    )
}

/// Whether `shim` names berth's own shim (whose sockets [`group_socket`] knows).
pub fn is_berth_shim(shim: &Path) -> bool {
    shim.file_name().is_some_and(|n| n == "berth-shim")
}

/// Starts `shim` for container `id` in `bundle` (`<shim> … -id <id> start`) and returns the address
/// it prints: a plain `unix://…` (containerd 1.6 shims) or JSON `{"address": …}` (newer ones).
/// A shim that groups containers by pod prints the running pod shim's address.
pub async fn launch(shim: &Path, bundle: &Path, id: &str, events_socket: &Path) -> Result<String> {
    let host_address = events_socket.with_extension("grpc");
    let self_exe = std::env::current_exe().unwrap_or_else(|_| "berthd".into());
    let out = tokio::process::Command::new(shim)
        .arg("-namespace")
        .arg(NAMESPACE)
        .arg("-address")
        .arg(&host_address)
        .arg("-publish-binary")
        .arg(&self_exe)
        .arg("-id")
        .arg(id)
        .arg("start")
        .current_dir(bundle)
        .env("TTRPC_ADDRESS", events_socket)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), out)
        .await
        .map_err(|_| Error::Internal(format!("{} start: no answer within 30s", shim.display())))?
        .map_err(Error::io(format!("run {}", shim.display())))?;
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() {
        return Err(Error::Internal(format!(
            "{} start failed ({}): {} {}",
            shim.display(),
            out.status,
            stdout,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    parse_start_output(&stdout)
        .ok_or_else(|| Error::Internal(format!("{} start printed no address: {stdout:?}", shim.display())))
}

fn parse_start_output(s: &str) -> Option<String> {
    if s.starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(s).ok()?;
        return v.get("address")?.as_str().map(str::to_string);
    }
    let line = s.lines().last()?.trim();
    (!line.is_empty()).then(|| line.to_string())
}

/// A TTRPC connection to one shim.
#[derive(Clone)]
pub struct ShimClient {
    client: Client,
    service: Arc<str>,
    pub address: Arc<str>,
}

impl std::fmt::Debug for ShimClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShimClient")
            .field("address", &self.address)
            .field("service", &self.service)
            .finish()
    }
}

/// The Update annotation that asks berth-shim to reopen a container's CRI log.
pub const REOPEN_LOG_ANNOTATION: &str = "io.berth.shim.reopen-log";

/// Short calls get this long; Wait has none.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

impl ShimClient {
    /// Connects to `address` and finds which task service name the shim answers to (v2 first).
    pub async fn connect(address: &str, id: &str) -> Result<ShimClient> {
        let addr = if address.starts_with("unix://") {
            address.to_string()
        } else {
            format!("unix://{address}")
        };
        let sock = Socket::connect(&addr)
            .await
            .map_err(|e| Error::Unavailable(format!("connect to shim at {address}: {e}")))?;
        let mut c = ShimClient {
            client: Client::new(sock),
            service: berth_proto::TASK_SERVICE_V2.into(),
            address: address.into(),
        };
        let mut req = api::ConnectRequest::new();
        req.id = id.to_string();
        match c
            .call::<_, api::ConnectResponse>("Connect", &req, Some(Duration::from_secs(5)))
            .await
        {
            Ok(_) => Ok(c),
            Err(Error::Unimplemented(_)) | Err(Error::InvalidArgument(_)) => {
                c.service = berth_proto::TASK_SERVICE_V3.into();
                c.call::<_, api::ConnectResponse>("Connect", &req, Some(Duration::from_secs(5)))
                    .await?;
                Ok(c)
            }
            Err(e) => Err(e),
        }
    }

    async fn call<Req: protobuf::Message, Resp: protobuf::Message>(
        &self,
        method: &str,
        req: &Req,
        timeout: Option<Duration>,
    ) -> Result<Resp> {
        let mut r = ttrpc::Request::new();
        r.service = self.service.to_string();
        r.method = method.to_string();
        r.payload = req
            .write_to_bytes()
            .map_err(|e| Error::Internal(format!("encode {method}: {e}")))?;
        r.timeout_nano = timeout.map(|t| t.as_nanos() as i64).unwrap_or(0);
        let resp = self
            .client
            .request(r)
            .await
            .map_err(|e| shim_error(method, &self.address, e))?;
        Resp::parse_from_bytes(&resp.payload).map_err(|e| Error::Internal(format!("decode {method} reply: {e}")))
    }

    pub async fn create(&self, req: &api::CreateTaskRequest) -> Result<api::CreateTaskResponse> {
        self.call("Create", req, Some(CALL_TIMEOUT)).await
    }

    pub async fn start(&self, id: &str, exec_id: &str) -> Result<api::StartResponse> {
        let mut req = api::StartRequest::new();
        req.id = id.into();
        req.exec_id = exec_id.into();
        self.call("Start", &req, Some(CALL_TIMEOUT)).await
    }

    /// Blocks until the process exits.
    pub async fn wait(&self, id: &str, exec_id: &str) -> Result<api::WaitResponse> {
        let mut req = api::WaitRequest::new();
        req.id = id.into();
        req.exec_id = exec_id.into();
        self.call("Wait", &req, None).await
    }

    pub async fn exec(&self, req: &api::ExecProcessRequest) -> Result<()> {
        self.call::<_, api::Empty>("Exec", req, Some(CALL_TIMEOUT))
            .await
            .map(|_| ())
    }

    pub async fn kill_exec(&self, id: &str, exec_id: &str, signal: u32) -> Result<()> {
        let mut req = api::KillRequest::new();
        req.id = id.into();
        req.exec_id = exec_id.into();
        req.signal = signal;
        self.call::<_, api::Empty>("Kill", &req, Some(CALL_TIMEOUT))
            .await
            .map(|_| ())
    }

    pub async fn delete_exec(&self, id: &str, exec_id: &str) -> Result<api::DeleteResponse> {
        let mut req = api::DeleteRequest::new();
        req.id = id.into();
        req.exec_id = exec_id.into();
        self.call("Delete", &req, Some(CALL_TIMEOUT)).await
    }

    /// Closes the shim's end of a process's stdin, so it reads end-of-file once the host's end closes.
    pub async fn close_io(&self, id: &str, exec_id: &str) -> Result<()> {
        let mut req = api::CloseIORequest::new();
        req.id = id.into();
        req.exec_id = exec_id.into();
        req.stdin = true;
        self.call::<_, api::Empty>("CloseIO", &req, Some(CALL_TIMEOUT))
            .await
            .map(|_| ())
    }

    /// Sets the terminal size of a TTY process.
    pub async fn resize_pty(&self, id: &str, exec_id: &str, width: u32, height: u32) -> Result<()> {
        let mut req = api::ResizePtyRequest::new();
        req.id = id.into();
        req.exec_id = exec_id.into();
        req.width = width;
        req.height = height;
        self.call::<_, api::Empty>("ResizePty", &req, Some(CALL_TIMEOUT))
            .await
            .map(|_| ())
    }

    /// berth-shim's log rotation: an Update carrying this annotation makes it reopen the CRI log.
    pub async fn reopen_log(&self, id: &str) -> Result<()> {
        let mut req = api::UpdateTaskRequest::new();
        req.id = id.into();
        req.annotations.insert(REOPEN_LOG_ANNOTATION.into(), "1".into());
        self.call::<_, api::Empty>("Update", &req, Some(CALL_TIMEOUT))
            .await
            .map(|_| ())
    }

    /// Applies new cgroup limits to a running container (`runc update`): `resources` is OCI
    /// `LinuxResources` JSON, under the type URL containerd's shims decode it by.
    pub async fn update_resources(&self, id: &str, resources: Vec<u8>) -> Result<()> {
        let mut req = api::UpdateTaskRequest::new();
        req.id = id.into();
        let mut any = berth_proto::shim::protobuf::well_known_types::any::Any::new();
        any.type_url = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources".into();
        any.value = resources;
        req.resources = Some(any).into();
        self.call::<_, api::Empty>("Update", &req, Some(CALL_TIMEOUT))
            .await
            .map(|_| ())
    }

    pub async fn kill(&self, id: &str, signal: u32, all: bool) -> Result<()> {
        let mut req = api::KillRequest::new();
        req.id = id.into();
        req.signal = signal;
        req.all = all;
        self.call::<_, api::Empty>("Kill", &req, Some(CALL_TIMEOUT))
            .await
            .map(|_| ())
    }

    /// CRIU dumps the running task into `images` (`runc checkpoint`), leaving it running; CRIU's
    /// log goes to `work`.
    pub async fn checkpoint(&self, id: &str, images: &Path, work: &Path, timeout: Option<Duration>) -> Result<()> {
        let mut opts = berth_proto::shim::shim::oci::CheckpointOptions::new();
        opts.image_path = images.display().to_string();
        opts.work_path = work.display().to_string();
        let mut any = berth_proto::shim::protobuf::well_known_types::any::Any::new();
        any.type_url = "containerd.runc.v1.CheckpointOptions".into();
        any.value = opts
            .write_to_bytes()
            .map_err(|e| Error::Internal(format!("encode checkpoint options: {e}")))?;
        let mut req = api::CheckpointTaskRequest::new();
        req.id = id.into();
        req.path = images.display().to_string();
        req.options = Some(any).into();
        self.call::<_, api::Empty>("Checkpoint", &req, Some(timeout.unwrap_or(CALL_TIMEOUT)))
            .await
            .map(|_| ())
    }

    pub async fn delete(&self, id: &str) -> Result<api::DeleteResponse> {
        let mut req = api::DeleteRequest::new();
        req.id = id.into();
        self.call("Delete", &req, Some(CALL_TIMEOUT)).await
    }

    pub async fn state(&self, id: &str) -> Result<api::StateResponse> {
        let mut req = api::StateRequest::new();
        req.id = id.into();
        self.call("State", &req, Some(CALL_TIMEOUT)).await
    }

    /// Asks the shim to exit; it does only once it holds no container.
    pub async fn shutdown(&self, id: &str) -> Result<()> {
        let mut req = api::ShutdownRequest::new();
        req.id = id.into();
        match self
            .call::<_, api::Empty>("Shutdown", &req, Some(Duration::from_secs(5)))
            .await
        {
            // A shim that exits while answering closes the connection first.
            Ok(_) | Err(Error::Unavailable(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

fn shim_error(method: &str, address: &str, e: ttrpc::Error) -> Error {
    match e {
        ttrpc::Error::RpcStatus(s) => {
            let msg = format!("shim {method}: {}", s.message);
            match s.code() {
                ttrpc::Code::NOT_FOUND => Error::NotFound(msg),
                ttrpc::Code::ALREADY_EXISTS => Error::AlreadyExists(msg),
                ttrpc::Code::INVALID_ARGUMENT => Error::InvalidArgument(msg),
                ttrpc::Code::FAILED_PRECONDITION => Error::FailedPrecondition(msg),
                ttrpc::Code::UNIMPLEMENTED => Error::Unimplemented("a shim task method"),
                ttrpc::Code::UNAVAILABLE => Error::Unavailable(msg),
                _ => Error::Internal(msg),
            }
        }
        other => Error::Unavailable(format!("shim at {address}, {method}: {other}")),
    }
}

/// An exit a shim reported.
#[derive(Debug, Clone)]
pub struct ExitEvent {
    pub container_id: String,
    pub exec_id: String,
    pub exit_status: u32,
    pub exited_at_ns: i64,
}

/// What shims publish to berthd: exits (and OOM kills) arrive here; everything else is logged.
struct EventSink {
    exits: tokio::sync::mpsc::UnboundedSender<ExitEvent>,
    /// Where container bundles are (`<state>/containers`): an OOM kill is recorded in its bundle.
    bundles: PathBuf,
}

#[async_trait::async_trait]
impl berth_proto::shim::shim_async::Events for EventSink {
    async fn forward(
        &self,
        _ctx: &ttrpc::asynchronous::TtrpcContext,
        req: api::ForwardRequest,
    ) -> ttrpc::Result<api::Empty> {
        let env = req.envelope;
        tracing::debug!(topic = %env.topic, namespace = %env.namespace, "shim event");
        // containerd's shims report OOM kills as events (berth-shim records them itself): kept as
        // berth-shim's marker, so the exit that follows is OOMKilled even if the cgroup is gone.
        if env.topic == berth_proto::shim::topics::TASK_OOM_EVENT_TOPIC
            && let Ok(e) = berth_proto::shim::events::task::TaskOOM::parse_from_bytes(&env.event.value)
            && !e.container_id.is_empty()
            && !e.container_id.contains(['/', '.'])
        {
            let bundle = self.bundles.join(&e.container_id);
            if bundle.is_dir()
                && let Err(err) = std::fs::write(bundle.join(berth_proto::contract::OOM_MARKER), "1")
            {
                tracing::warn!(container = %e.container_id, error = %err, "recording an OOM kill");
            }
        }
        if env.topic == berth_proto::shim::topics::TASK_EXIT_EVENT_TOPIC
            && let Ok(e) = berth_proto::shim::events::task::TaskExit::parse_from_bytes(&env.event.value)
        {
            let at = e
                .exited_at
                .as_ref()
                .map(|t| t.seconds * 1_000_000_000 + i64::from(t.nanos))
                .unwrap_or(0);
            let _ = self.exits.send(ExitEvent {
                container_id: e.container_id,
                exec_id: e.id,
                exit_status: e.exit_status,
                exited_at_ns: at,
            });
        }
        Ok(api::Empty::new())
    }
}

/// The FIFOs of an exec's stdio (absent: not wired).
#[derive(Debug, Default, Clone)]
pub struct ExecStdio {
    pub stdin: Option<PathBuf>,
    pub stdout: Option<PathBuf>,
    pub stderr: Option<PathBuf>,
}

/// The shim request that adds exec `exec_id` running `process` to container `id`.
pub fn exec_request(
    id: &str,
    exec_id: &str,
    process: &oci_spec::runtime::Process,
    stdio: ExecStdio,
) -> Result<api::ExecProcessRequest> {
    let mut any = protobuf::well_known_types::any::Any::new();
    any.type_url = "types.containerd.io/opencontainers/runtime-spec/1/Process".into();
    any.value = serde_json::to_vec(process).map_err(|e| Error::Internal(format!("encode exec spec: {e}")))?;
    let path = |p: Option<PathBuf>| p.map(|p| p.display().to_string()).unwrap_or_default();
    let mut exec = api::ExecProcessRequest::new();
    exec.id = id.into();
    exec.exec_id = exec_id.into();
    exec.terminal = process.terminal().unwrap_or(false);
    exec.stdin = path(stdio.stdin);
    exec.stdout = path(stdio.stdout);
    exec.stderr = path(stdio.stderr);
    exec.spec = Some(any).into();
    Ok(exec)
}

/// Serves the events endpoint on `socket` until dropped.
pub fn serve_events(
    socket: &Path,
    bundles: &Path,
) -> Result<(
    ttrpc::asynchronous::Server,
    tokio::sync::mpsc::UnboundedReceiver<ExitEvent>,
)> {
    let _ = std::fs::remove_file(socket);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let service = berth_proto::shim::shim_async::create_events(Arc::new(EventSink {
        exits: tx,
        bundles: bundles.to_path_buf(),
    }));
    let server = ttrpc::asynchronous::Server::new()
        .bind(&format!("unix://{}", socket.display()))
        .map_err(|e| Error::Internal(format!("bind events socket {}: {e}", socket.display())))?
        .register_service(service);
    Ok((server, rx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_output_forms() {
        assert_eq!(
            parse_start_output("unix:///run/x/s/abc\n").as_deref(),
            Some("unix:///run/x/s/abc")
        );
        assert_eq!(
            parse_start_output(r#"{"version":3,"address":"unix:///s/1","protocol":"ttrpc"}"#).as_deref(),
            Some("unix:///s/1")
        );
        assert_eq!(parse_start_output(""), None);
    }
}
