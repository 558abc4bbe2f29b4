//! The task service's core: the pod's containers and their processes, driven through runc.
//!
//! Semantics follow containerd's `containerd-shim-runc-v2` (see the crate README for the contract).
//! Methods take and return the generated protobuf messages, and fail with [`Error`]; the ttrpc
//! adapter in `server::task` only forwards calls and converts errors.

pub mod options;
pub mod process;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use berth_proto::shim::api;
use berth_proto::shim::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskStart,
};
use berth_proto::shim::protobuf::well_known_types::any::Any;
use berth_proto::shim::protobuf::{Message, MessageField};
use berth_proto::shim::shim::oci::{CheckpointOptions, ProcessDetails};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::sync::Notify;

use crate::error::{Error, Result};
use crate::io::{ProcessIo, StdioPaths};
use crate::mount;
use crate::publisher::Publisher;
use crate::reaper::{Exit, Reaper};
use crate::runc::Runc;
use crate::time::timestamp;
use options::Defaults;
use process::{Process, Status};

/// `Update` annotation asking the shim to reopen the container's CRI log file (after kubelet rotated
/// it: CRI `ReopenContainerLog`).
pub const REOPEN_LOG_ANNOTATION: &str = "io.berth.shim.reopen-log";
/// How long `Delete` of a created-but-never-started container waits for its init to be reaped.
const CREATED_DELETE_WAIT: Duration = Duration::from_secs(2);

#[derive(Debug)]
struct Exec {
    process: Arc<Process>,
    /// The OCI process JSON from `Exec`, handed to `runc exec` at `Start`.
    spec: Vec<u8>,
}

/// One container of the pod.
#[derive(Debug)]
struct Container {
    id: String,
    bundle: PathBuf,
    runc: Runc,
    init: Arc<Process>,
    execs: Mutex<HashMap<String, Exec>>,
    rootfs_mounted: bool,
    /// A container created from a checkpoint: the CRIU images its `Start` restores (`runc restore`
    /// in place of `runc create` + `runc start`, as containerd's shim does).
    restore: Mutex<Option<PathBuf>>,
}

impl Container {
    fn execs(&self) -> MutexGuard<'_, HashMap<String, Exec>> {
        self.execs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn process(&self, exec_id: &str) -> Result<Arc<Process>> {
        if exec_id.is_empty() {
            return Ok(self.init.clone());
        }
        self.execs()
            .get(exec_id)
            .map(|e| e.process.clone())
            .ok_or_else(|| Error::NotFound(format!("exec {exec_id:?} of container {:?} not found", self.id)))
    }
}

#[derive(Debug)]
enum Slot {
    /// `Create` is running for this id.
    Creating,
    Ready(Arc<Container>),
}

/// The shim's state: every container it runs for its pod.
#[derive(Debug)]
pub struct Shim {
    namespace: String,
    defaults: Defaults,
    reaper: Arc<Reaper>,
    publisher: Arc<Publisher>,
    containers: Mutex<HashMap<String, Slot>>,
    shutdown: Notify,
}

/// Removes a `Creating` reservation unless the create succeeded.
struct Reservation<'a> {
    shim: &'a Shim,
    id: String,
    done: bool,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.shim.containers().remove(&self.id);
        }
    }
}

fn check_id(what: &str, id: &str) -> Result<()> {
    if id.is_empty() || id.contains('/') || id == "." || id == ".." {
        return Err(Error::InvalidArgument(format!("invalid {what} {id:?}")));
    }
    Ok(())
}

fn read_pid(path: &Path) -> Result<u32> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        context: "reading the pid file",
        path: path.into(),
        source,
    })?;
    text.trim()
        .parse()
        .map_err(|_| Error::InvalidArgument(format!("{}: not a pid: {text:?}", path.display())))
}

/// Whether the bundle's OCI spec gives the container no pid namespace of its own: then its processes
/// do not die with init, and the shim kills them all when init exits (as containerd does).
fn shares_pid_namespace(bundle: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(bundle.join("config.json")) else {
        return false;
    };
    let Ok(spec) = serde_json::from_str::<serde_json::Value>(&text) else {
        return false;
    };
    let own = spec
        .pointer("/linux/namespaces")
        .and_then(|n| n.as_array())
        .is_some_and(|ns| {
            ns.iter()
                .any(|n| n.get("type").and_then(|t| t.as_str()) == Some("pid") && n.get("path").is_none())
        });
    !own
}

impl Shim {
    pub fn new(namespace: String, defaults: Defaults, reaper: Arc<Reaper>, publisher: Arc<Publisher>) -> Shim {
        Shim {
            namespace,
            defaults,
            reaper,
            publisher,
            containers: Mutex::new(HashMap::new()),
            shutdown: Notify::new(),
        }
    }

    fn containers(&self) -> MutexGuard<'_, HashMap<String, Slot>> {
        self.containers.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn container(&self, id: &str) -> Result<Arc<Container>> {
        match self.containers().get(id) {
            Some(Slot::Ready(c)) => Ok(c.clone()),
            Some(Slot::Creating) => Err(Error::FailedPrecondition(format!("container {id:?} is being created"))),
            None => Err(Error::not_found("container", id)),
        }
    }

    /// Whether the shim runs no container (and no create is under way).
    pub fn is_empty(&self) -> bool {
        self.containers().is_empty()
    }

    /// Resolves when a `Shutdown` has been accepted.
    pub async fn shutdown_requested(&self) {
        self.shutdown.notified().await
    }

    pub async fn create(&self, req: api::CreateTaskRequest) -> Result<api::CreateTaskResponse> {
        check_id("container id", &req.id)?;
        let restore = checkpoint_to_restore(&req)?;
        let bundle = PathBuf::from(&req.bundle);
        if !bundle.is_absolute() {
            return Err(Error::InvalidArgument(format!(
                "bundle {:?} must be an absolute path",
                req.bundle
            )));
        }
        let mut reservation = self.reserve(&req.id)?;

        let opts = options::decode(req.options.as_ref())?;
        let config = options::resolve(&opts, &self.defaults, &self.namespace);
        std::fs::create_dir_all(&config.root).map_err(|source| Error::Io {
            context: "creating the runtime root",
            path: config.root.clone(),
            source,
        })?;
        let rootfs_mounted = !req.rootfs.is_empty();
        options::save(&bundle, &opts, rootfs_mounted)?;
        let rootfs = bundle.join("rootfs");
        if rootfs_mounted {
            mount::mount_all(&req.rootfs, &rootfs)?;
        }
        let stdio = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
        };
        let runc = Runc::new(config, &bundle, self.reaper.clone());
        let init = if restore.is_some() {
            // Nothing runs until Start restores the checkpoint.
            Process::new(&req.id, "", stdio, Status::Created, 0)
        } else {
            match self.create_init(&req.id, &bundle, &runc, &stdio, req.terminal).await {
                Ok((pid, io, exit_rx)) => {
                    let init = Process::new(&req.id, "", stdio, Status::Created, pid);
                    self.monitor_init(&init, &bundle, &runc, (pid, io, exit_rx));
                    init
                }
                Err(e) => {
                    if rootfs_mounted {
                        mount::unmount(&rootfs);
                    }
                    return Err(e);
                }
            }
        };
        let pid = init.pid();
        let container = Arc::new(Container {
            id: req.id.clone(),
            bundle,
            runc,
            init,
            execs: Mutex::new(HashMap::new()),
            rootfs_mounted,
            restore: Mutex::new(restore),
        });
        self.containers().insert(req.id.clone(), Slot::Ready(container));
        reservation.done = true;
        log::info!("created container {} (pid {pid})", req.id);
        self.publish_create(&req, pid);
        Ok(api::CreateTaskResponse {
            pid,
            ..Default::default()
        })
    }

    /// Claims `id` while its create is under way (released on drop unless done).
    fn reserve(&self, id: &str) -> Result<Reservation<'_>> {
        let mut map = self.containers();
        if map.contains_key(id) {
            return Err(Error::AlreadyExists(format!("container {id:?} already exists")));
        }
        map.insert(id.to_string(), Slot::Creating);
        Ok(Reservation {
            shim: self,
            id: id.to_string(),
            done: false,
        })
    }

    /// The init process, watched: its exit (after the OOM look) is published, and in a shared PID
    /// namespace whatever it leaves behind is killed.
    fn monitor_init(
        &self,
        init: &Arc<Process>,
        bundle: &Path,
        runc: &Runc,
        (pid, io, exit_rx): (u32, ProcessIo, tokio::sync::oneshot::Receiver<Exit>),
    ) {
        let exit_rx = crate::oom::guard(crate::oom::watch(pid, bundle), exit_rx);
        init.set_io(io);
        let publisher = self.publisher.clone();
        let kill_all = shares_pid_namespace(bundle).then(|| runc.clone());
        init.monitor(exit_rx, move |p, exit| {
            publish_exit(&publisher, p, exit);
            if let Some(runc) = kill_all {
                let id = p.container_id.clone();
                tokio::spawn(async move {
                    if let Err(e) = runc.kill(&id, Signal::SIGKILL as u32, true).await {
                        log::debug!("killing what is left of {id}: {e}");
                    }
                });
            }
        });
    }

    /// The TaskCreate event of a created container.
    fn publish_create(&self, req: &api::CreateTaskRequest, pid: u32) {
        self.publisher.publish(&TaskCreate {
            container_id: req.id.clone(),
            bundle: req.bundle.clone(),
            rootfs: req.rootfs.clone(),
            io: MessageField::some(TaskIO {
                stdin: req.stdin.clone(),
                stdout: req.stdout.clone(),
                stderr: req.stderr.clone(),
                terminal: req.terminal,
                ..Default::default()
            }),
            checkpoint: req.checkpoint.clone(),
            pid,
            ..Default::default()
        });
    }

    /// Opens the stdio and runs `runc create`; returns the init's pid, its stdio and its exit.
    async fn create_init(
        &self,
        id: &str,
        bundle: &Path,
        runc: &Runc,
        stdio: &StdioPaths,
        terminal: bool,
    ) -> Result<(u32, ProcessIo, tokio::sync::oneshot::Receiver<Exit>)> {
        let pid_file = bundle.join("init.pid");
        let _ = std::fs::remove_file(&pid_file);
        let since = Instant::now();
        let pid_path = pid_file.as_path();
        let created = run_with_stdio(stdio, terminal, |fds, console| async move {
            runc.create(id, bundle, pid_path, fds, console.as_deref())
                .await
                .map_err(Error::from)
        })
        .await;
        let pid = created.and_then(|io| read_pid(&pid_file).map(|pid| (pid, io)));
        match pid {
            Ok((pid, io)) => {
                let exit = self.reaper.subscribe(pid as i32, since);
                Ok((pid, io, exit))
            }
            Err(e) => {
                if let Err(d) = runc.delete(id, true).await {
                    log::debug!("cleaning up failed create of {id}: {d}");
                }
                Err(e)
            }
        }
    }

    pub async fn start(&self, req: api::StartRequest) -> Result<api::StartResponse> {
        let c = self.container(&req.id)?;
        if req.exec_id.is_empty() {
            let p = c.init.clone();
            let _op = p.op.lock().await;
            p.status().start()?;
            let _starting = p.begin_start();
            let restore = c.restore.lock().unwrap_or_else(|e| e.into_inner()).take();
            let pid = match restore {
                Some(images) => self.restore_init(&c, &images).await?,
                None => {
                    c.runc.start(&c.id).await?;
                    p.pid()
                }
            };
            p.set_started(pid)?;
            log::info!("started container {}", c.id);
            self.publisher.publish(&TaskStart {
                container_id: c.id.clone(),
                pid,
                ..Default::default()
            });
            return Ok(api::StartResponse {
                pid,
                ..Default::default()
            });
        }

        let (p, spec) = {
            let execs = c.execs();
            let e = execs
                .get(&req.exec_id)
                .ok_or_else(|| Error::NotFound(format!("exec {:?} of container {:?} not found", req.exec_id, c.id)))?;
            (e.process.clone(), e.spec.clone())
        };
        let _op = p.op.lock().await;
        p.status().start()?;
        if c.init.status() != Status::Running {
            return Err(Error::FailedPrecondition(format!(
                "container {:?} is not running",
                c.id
            )));
        }
        let (pid, io, exit) = self.exec_process(&c, &p.exec_id, &spec, &p.stdio).await?;
        p.set_io(io);
        p.set_started(pid)?;
        let publisher = self.publisher.clone();
        p.monitor(exit, move |p, exit| publish_exit(&publisher, p, exit));
        log::info!("started exec {} in container {} (pid {pid})", p.exec_id, c.id);
        self.publisher.publish(&TaskExecStarted {
            container_id: c.id.clone(),
            exec_id: p.exec_id.clone(),
            pid,
            ..Default::default()
        });
        Ok(api::StartResponse {
            pid,
            ..Default::default()
        })
    }

    /// Restores the container's init from the CRIU images `images` (`runc restore`), watched as a
    /// created init is; returns its pid.
    async fn restore_init(&self, c: &Container, images: &Path) -> Result<u32> {
        let pid_file = c.bundle.join("init.pid");
        let work = c.bundle.join("criu-restore");
        let _ = std::fs::remove_file(&pid_file);
        std::fs::create_dir_all(&work).map_err(|source| Error::Io {
            context: "creating CRIU's work dir",
            path: work.clone(),
            source,
        })?;
        let since = Instant::now();
        let (bundle, pid_path, work_path) = (c.bundle.as_path(), pid_file.as_path(), work.as_path());
        let restored = run_with_stdio(&c.init.stdio, false, |fds, _| async move {
            c.runc
                .restore(&c.id, bundle, images, work_path, pid_path, fds)
                .await
                .map_err(|e| criu_failure(e, &work_path.join("restore.log")))
        })
        .await;
        let (pid, io) = match restored.and_then(|io| read_pid(&pid_file).map(|pid| (pid, io))) {
            Ok(v) => v,
            Err(e) => {
                if let Err(d) = c.runc.delete(&c.id, true).await {
                    log::debug!("cleaning up failed restore of {}: {d}", c.id);
                }
                return Err(e);
            }
        };
        let exit = self.reaper.subscribe(pid as i32, since);
        self.monitor_init(&c.init, &c.bundle, &c.runc, (pid, io, exit));
        log::info!("restored container {} from {} (pid {pid})", c.id, images.display());
        Ok(pid)
    }

    /// `Checkpoint`: CRIU dumps the running container (`runc checkpoint`) into the request's path
    /// (or the `CheckpointOptions` image path), leaving it running unless the options say exit.
    pub async fn checkpoint(&self, req: api::CheckpointTaskRequest) -> Result<()> {
        let c = self.container(&req.id)?;
        let how = checkpoint_options(&req, &c.bundle)?;
        let _op = c.init.op.lock().await;
        if c.init.status() != Status::Running {
            return Err(Error::FailedPrecondition(format!(
                "container {:?} is not running",
                c.id
            )));
        }
        for dir in [&how.image_path, &how.work_path] {
            std::fs::create_dir_all(dir).map_err(|source| Error::Io {
                context: "creating the checkpoint dir",
                path: dir.clone(),
                source,
            })?;
        }
        c.runc
            .checkpoint(&c.id, &how)
            .await
            .map_err(|e| criu_failure(e, &how.work_path.join("dump.log")))?;
        log::info!("checkpointed container {} into {}", c.id, how.image_path.display());
        Ok(())
    }

    /// Runs `runc exec` for an added exec; returns its pid, stdio and exit.
    async fn exec_process(
        &self,
        c: &Container,
        exec_id: &str,
        spec: &[u8],
        stdio: &StdioPaths,
    ) -> Result<(u32, ProcessIo, tokio::sync::oneshot::Receiver<Exit>)> {
        let spec_file = c.bundle.join(format!("exec-{exec_id}.json"));
        let pid_file = c.bundle.join(format!("exec-{exec_id}.pid"));
        std::fs::write(&spec_file, spec).map_err(|source| Error::Io {
            context: "writing the exec process spec",
            path: spec_file.clone(),
            source,
        })?;
        let terminal =
            serde_json::from_slice::<serde_json::Value>(spec).is_ok_and(|v| v["terminal"].as_bool() == Some(true));
        let (spec_path, pid_path) = (spec_file.as_path(), pid_file.as_path());
        let result = async {
            let since = Instant::now();
            let io = run_with_stdio(stdio, terminal, |fds, console| async move {
                c.runc
                    .exec(&c.id, spec_path, pid_path, fds, console.as_deref())
                    .await
                    .map_err(Error::from)
            })
            .await?;
            let pid = read_pid(pid_path)?;
            Ok((pid, io, self.reaper.subscribe(pid as i32, since)))
        }
        .await;
        let _ = std::fs::remove_file(&spec_file);
        let _ = std::fs::remove_file(&pid_file);
        result
    }

    pub async fn exec(&self, req: api::ExecProcessRequest) -> Result<()> {
        check_id("exec id", &req.exec_id)?;
        let c = self.container(&req.id)?;
        let spec = req.spec.as_ref().map(|a| a.value.clone()).unwrap_or_default();
        if !serde_json::from_slice::<serde_json::Value>(&spec).is_ok_and(|v| v.is_object()) {
            return Err(Error::InvalidArgument(
                "exec spec must be an OCI process as JSON".into(),
            ));
        }
        if let Status::Stopped(_) = c.init.status() {
            return Err(Error::FailedPrecondition(format!("container {:?} has exited", c.id)));
        }
        {
            let mut execs = c.execs();
            if execs.contains_key(&req.exec_id) {
                return Err(Error::AlreadyExists(format!("exec {:?} already exists", req.exec_id)));
            }
            let stdio = StdioPaths {
                stdin: req.stdin.clone(),
                stdout: req.stdout.clone(),
                stderr: req.stderr.clone(),
            };
            let process = Process::new(&c.id, &req.exec_id, stdio, Status::Added, 0);
            execs.insert(req.exec_id.clone(), Exec { process, spec });
        }
        self.publisher.publish(&TaskExecAdded {
            container_id: c.id.clone(),
            exec_id: req.exec_id.clone(),
            ..Default::default()
        });
        Ok(())
    }

    pub async fn wait(&self, req: api::WaitRequest) -> Result<api::WaitResponse> {
        let p = self.container(&req.id)?.process(&req.exec_id)?;
        let exit = p.wait().await;
        Ok(api::WaitResponse {
            exit_status: exit.status,
            exited_at: MessageField::some(timestamp(exit.at)),
            ..Default::default()
        })
    }

    pub async fn kill(&self, req: api::KillRequest) -> Result<()> {
        let c = self.container(&req.id)?;
        let p = c.process(&req.exec_id)?;
        p.status().check_kill()?;
        let finished = || Error::NotFound(format!("process {:?} already finished", p.id()));
        if req.exec_id.is_empty() {
            if let Err(e) = c.runc.kill(&c.id, req.signal, req.all).await {
                let gone = matches!(p.status(), Status::Stopped(_))
                    || e.is_missing()
                    || e.stderr()
                        .is_some_and(|s| s.contains("not running") || s.contains("process already finished"));
                return Err(if gone { finished() } else { e.into() });
            }
        } else {
            let signal = Signal::try_from(req.signal as i32)
                .map_err(|_| Error::InvalidArgument(format!("invalid signal {}", req.signal)))?;
            match kill(Pid::from_raw(p.pid() as i32), signal) {
                Ok(()) => {}
                Err(nix::errno::Errno::ESRCH) => return Err(finished()),
                Err(e) => {
                    return Err(Error::Io {
                        context: "signalling exec",
                        path: p.exec_id.clone().into(),
                        source: e.into(),
                    });
                }
            }
        }
        log::info!("sent signal {} to {}", req.signal, p.id());
        Ok(())
    }

    pub async fn delete(&self, req: api::DeleteRequest) -> Result<api::DeleteResponse> {
        let c = self.container(&req.id)?;
        if !req.exec_id.is_empty() {
            let p = c.process(&req.exec_id)?;
            let _op = p.op.lock().await;
            p.status().check_delete()?;
            c.execs().remove(&req.exec_id);
            p.close_io();
            let exit = p.exit_or_now();
            return Ok(delete_response(p.pid(), exit));
        }

        let p = c.init.clone();
        let _op = p.op.lock().await;
        p.status().check_delete()?;
        let force = p.status() == Status::Created;
        match c.runc.delete(&c.id, force).await {
            Err(e) if !e.is_missing() => return Err(e.into()),
            _ => {}
        }
        let never_ran = c.restore.lock().unwrap_or_else(|e| e.into_inner()).is_some();
        if force && !never_ran {
            p.wait_timeout(CREATED_DELETE_WAIT).await;
        }
        if c.rootfs_mounted {
            mount::unmount(&c.bundle.join("rootfs"));
        }
        for (_, e) in c.execs().drain() {
            e.process.close_io();
        }
        p.close_io();
        self.containers().remove(&c.id);
        let exit = p.exit_or_now();
        let pid = p.pid();
        log::info!("deleted container {}", c.id);
        self.publisher.publish(&TaskDelete {
            container_id: c.id.clone(),
            id: c.id.clone(),
            pid,
            exit_status: exit.status,
            exited_at: MessageField::some(timestamp(exit.at)),
            ..Default::default()
        });
        Ok(delete_response(pid, exit))
    }

    pub async fn state(&self, req: api::StateRequest) -> Result<api::StateResponse> {
        let c = self.container(&req.id)?;
        let p = c.process(&req.exec_id)?;
        Ok(p.state_response(&c.bundle.to_string_lossy()))
    }

    pub async fn pids(&self, req: api::PidsRequest) -> Result<api::PidsResponse> {
        let c = self.container(&req.id)?;
        let mut processes = Vec::new();
        let running = |p: &Process| matches!(p.status(), Status::Created | Status::Running);
        if running(&c.init) {
            processes.push(api::ProcessInfo {
                pid: c.init.pid(),
                ..Default::default()
            });
        }
        for (exec_id, e) in c.execs().iter() {
            if !running(&e.process) || e.process.pid() == 0 {
                continue;
            }
            let details = ProcessDetails {
                exec_id: exec_id.clone(),
                ..Default::default()
            };
            let info = Any {
                type_url: "containerd.runc.v1.ProcessDetails".into(),
                value: details.write_to_bytes().unwrap_or_default(),
                ..Default::default()
            };
            processes.push(api::ProcessInfo {
                pid: e.process.pid(),
                info: MessageField::some(info),
                ..Default::default()
            });
        }
        Ok(api::PidsResponse {
            processes,
            ..Default::default()
        })
    }

    /// Sets the window size of a terminal process.
    pub async fn resize_pty(&self, req: api::ResizePtyRequest) -> Result<()> {
        let p = self.container(&req.id)?.process(&req.exec_id)?;
        let (w, h) = (
            req.width.min(u16::MAX.into()) as u16,
            req.height.min(u16::MAX.into()) as u16,
        );
        p.with_io(|io| io.resize(w, h))
            .unwrap_or_else(|| Err(Error::FailedPrecondition("the process has exited".into())))
    }

    pub async fn close_io(&self, req: api::CloseIORequest) -> Result<()> {
        let p = self.container(&req.id)?.process(&req.exec_id)?;
        if req.stdin {
            p.with_io(ProcessIo::close_stdin);
        }
        Ok(())
    }

    pub async fn update(&self, req: api::UpdateTaskRequest) -> Result<()> {
        let c = self.container(&req.id)?;
        if req.annotations.contains_key(REOPEN_LOG_ANNOTATION) {
            let reopened = c.init.with_io(|io| io.reopen_log()).unwrap_or(Ok(false));
            match reopened {
                Ok(true) => log::info!("reopened the log of container {}", c.id),
                Ok(false) => {
                    return Err(Error::FailedPrecondition(format!(
                        "container {:?} has no crilog:// log",
                        c.id
                    )));
                }
                Err(source) => {
                    return Err(Error::Io {
                        context: "reopening the log of",
                        path: c.id.clone().into(),
                        source,
                    });
                }
            }
        }
        let Some(resources) = req.resources.as_ref().filter(|r| !r.value.is_empty()) else {
            return Ok(());
        };
        let _op = c.init.op.lock().await;
        let file = c.bundle.join("update-resources.json");
        std::fs::write(&file, &resources.value).map_err(|source| Error::Io {
            context: "writing resources",
            path: file.clone(),
            source,
        })?;
        let updated = c.runc.update(&c.id, &file).await;
        let _ = std::fs::remove_file(&file);
        updated?;
        log::info!("updated resources of container {}", c.id);
        Ok(())
    }

    pub async fn connect(&self, req: api::ConnectRequest) -> Result<api::ConnectResponse> {
        let task_pid = self.container(&req.id).map(|c| c.init.pid()).unwrap_or(0);
        Ok(api::ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            version: concat!("berth-shim ", env!("CARGO_PKG_VERSION")).into(),
            ..Default::default()
        })
    }

    /// Exits the shim once it runs no container; with containers left it does nothing (as containerd's
    /// shim, which the host asks after every `Delete`).
    pub async fn shutdown(&self, _req: api::ShutdownRequest) -> Result<()> {
        if self.is_empty() {
            log::info!("shutdown requested with no container left");
            self.shutdown.notify_one();
        }
        Ok(())
    }
}

fn delete_response(pid: u32, exit: Exit) -> api::DeleteResponse {
    api::DeleteResponse {
        pid,
        exit_status: exit.status,
        exited_at: MessageField::some(timestamp(exit.at)),
        ..Default::default()
    }
}

fn publish_exit(publisher: &Publisher, p: &Process, exit: Exit) {
    log::info!(
        "{} {} exited with status {}",
        if p.exec_id.is_empty() { "container" } else { "exec" },
        p.id(),
        exit.status
    );
    publisher.publish(&TaskExit {
        container_id: p.container_id.clone(),
        id: p.id().to_string(),
        pid: p.pid(),
        exit_status: exit.status,
        exited_at: MessageField::some(timestamp(exit.at)),
        ..Default::default()
    });
}

/// The CRIU images a `Create` asks to restore (`checkpoint`), checked; None for a plain create.
fn checkpoint_to_restore(req: &api::CreateTaskRequest) -> Result<Option<PathBuf>> {
    if !req.parent_checkpoint.is_empty() {
        return Err(Error::InvalidArgument(
            "restoring from a parent checkpoint (incremental checkpoints) is not supported".into(),
        ));
    }
    if req.checkpoint.is_empty() {
        return Ok(None);
    }
    let images = PathBuf::from(&req.checkpoint);
    if !images.is_absolute() || !images.is_dir() {
        return Err(Error::InvalidArgument(format!(
            "checkpoint {:?} must be an absolute path to a directory of CRIU images",
            req.checkpoint
        )));
    }
    if req.terminal {
        return Err(Error::InvalidArgument(
            "a container with a terminal cannot be restored from a checkpoint".into(),
        ));
    }
    Ok(Some(images))
}

/// What a `Checkpoint` request asks of `runc checkpoint` (`containerd.runc.v1.CheckpointOptions`,
/// if any): the image path defaults to the request's path, the work path to one in the bundle.
fn checkpoint_options(req: &api::CheckpointTaskRequest, bundle: &Path) -> Result<crate::runc::Checkpoint> {
    const TYPE: &str = "containerd.runc.v1.CheckpointOptions";
    let opts = match req
        .options
        .as_ref()
        .filter(|a| !a.type_url.is_empty() || !a.value.is_empty())
    {
        None => CheckpointOptions::default(),
        Some(any) if any.type_url.rsplit('/').next() == Some(TYPE) => {
            CheckpointOptions::parse_from_bytes(&any.value)
                .map_err(|e| Error::InvalidArgument(format!("decoding {TYPE}: {e}")))?
        }
        Some(any) => {
            return Err(Error::InvalidArgument(format!(
                "unsupported checkpoint options type {:?} (expected {TYPE})",
                any.type_url
            )));
        }
    };
    let image_path = PathBuf::from(if opts.image_path.is_empty() {
        &req.path
    } else {
        &opts.image_path
    });
    if !image_path.is_absolute() {
        return Err(Error::InvalidArgument(format!(
            "checkpoint path {:?} must be absolute",
            image_path
        )));
    }
    let work_path = match opts.work_path.as_str() {
        "" => bundle.join("criu-dump"),
        w => PathBuf::from(w),
    };
    Ok(crate::runc::Checkpoint {
        image_path,
        work_path,
        leave_running: !opts.exit,
        tcp_established: opts.open_tcp,
        external_unix_sockets: opts.external_unix_sockets,
        shell_job: opts.terminal,
        file_locks: opts.file_locks,
        cgroups_mode: opts.cgroups_mode,
        empty_namespaces: opts.empty_namespaces,
    })
}

/// A failed `runc checkpoint`/`restore`, with the errors CRIU wrote to its log (runc only names it).
fn criu_failure(e: crate::runc::Error, log: &Path) -> Error {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let errors: Vec<&str> = text.lines().filter(|l| l.contains("Error (")).collect();
    let tail = errors[errors.len().saturating_sub(4)..].join("; ");
    if tail.is_empty() {
        return e.into();
    }
    Error::FailedPrecondition(format!("{e}; CRIU: {}", tail.trim()))
}

/// Runs `run` (a `runc create` or `exec`) with the process's stdio; for a terminal process, with
/// a console socket instead, whose pty master then carries the process's stdio.
async fn run_with_stdio<F, Fut>(stdio: &StdioPaths, terminal: bool, run: F) -> Result<ProcessIo>
where
    F: FnOnce(crate::runc::Stdio, Option<PathBuf>) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let (fds, mut io) = ProcessIo::open(stdio)?;
    if !terminal {
        run(fds, None).await?;
        return Ok(io);
    }
    let console = crate::io::console::ConsoleSocket::new()?;
    run(ProcessIo::null_stdio()?, Some(console.path().to_path_buf())).await?;
    let master = console.receive().await?;
    io.attach_console(master, fds)?;
    Ok(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(check_id("id", "abc-123").is_ok());
        for bad in ["", "a/b", ".", ".."] {
            assert!(matches!(check_id("id", bad), Err(Error::InvalidArgument(_))));
        }
    }

    #[test]
    fn pid_namespace_detection() {
        let dir = tempfile::tempdir().unwrap();
        let write = |v: serde_json::Value| std::fs::write(dir.path().join("config.json"), v.to_string()).unwrap();
        write(serde_json::json!({"linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}]}}));
        assert!(!shares_pid_namespace(dir.path()));
        write(serde_json::json!({"linux": {"namespaces": [{"type": "pid", "path": "/proc/1/ns/pid"}]}}));
        assert!(shares_pid_namespace(dir.path()));
        write(serde_json::json!({"linux": {"namespaces": [{"type": "mount"}]}}));
        assert!(shares_pid_namespace(dir.path()));
    }

    #[test]
    fn pid_files() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("init.pid");
        std::fs::write(&f, "1234").unwrap();
        assert_eq!(read_pid(&f).unwrap(), 1234);
        std::fs::write(&f, "x").unwrap();
        assert!(matches!(read_pid(&f), Err(Error::InvalidArgument(_))));
        assert!(matches!(read_pid(&dir.path().join("none")), Err(Error::Io { .. })));
    }
}
