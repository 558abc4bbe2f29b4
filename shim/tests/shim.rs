//! Root-only end-to-end tests of the berth-shim binary: real runc, real containers.
//!
//! Each test plays berthd: it serves the events API on a temporary `TTRPC_ADDRESS`, launches the shim
//! with `start` from a temporary bundle, and drives it with TTRPC over the `containerd.task.v2.Task`
//! name (as containerd 1.6 and berthd do) and once over v3. Containers run busybox (Debian's
//! `/usr/bin/busybox` and the libraries it links, copied into a temporary rootfs) with runc state in
//! the test's directory and cgroups under `/berth-test/<id>`, removed at the end.
//!
//! The test process makes itself a child subreaper, so shims (and containers of a killed shim)
//! reparent to it and it can reap exactly the processes it caused.
//!
//! `BERTH_SHIM_BIN` overrides the binary under test (e.g. a release build, to measure its RSS).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use async_trait::async_trait;
use berth_proto::TASK_SERVICE_V2;
use berth_proto::shim::api;
use berth_proto::shim::events::task::{TaskExit, TaskStart};
use berth_proto::shim::protobuf::Message;
use berth_proto::shim::protobuf::well_known_types::any::Any;
use berth_proto::shim::shim::event::Envelope;
use berth_proto::shim::shim::events::ForwardRequest;
use berth_proto::shim::shim::oci::Options;
use berth_proto::shim::shim_async::{Client, Events, TaskClient, create_events};
use berth_proto::shim::ttrpc::{self, Code, r#async::Server, r#async::TtrpcContext};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio::sync::mpsc;

const NAMESPACE: &str = "berth-test";
const HOST_ADDRESS: &str = "/run/berth-test/berth.sock";
const CGROUP_PARENT: &str = "berth-test";

/// Returns (passing) from a test when not root, after reporting it NOT TESTED.
macro_rules! require_root {
    () => {
        if !berth_test_report::root_or_not_tested("berth-shim end-to-end suite", "mounts, runc, cgroups") {
            return Ok(());
        }
    };
}

fn shim_bin() -> PathBuf {
    std::env::var_os("BERTH_SHIM_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_berth-shim").into())
}

// ---------------------------------------------------------------------------------------------
// The fake host: events server, bundles, cleanup.
// ---------------------------------------------------------------------------------------------

struct Collector(mpsc::UnboundedSender<Envelope>);

#[async_trait]
impl Events for Collector {
    async fn forward(&self, _: &TtrpcContext, req: ForwardRequest) -> ttrpc::Result<api::Empty> {
        let _ = self.0.send(req.envelope.unwrap_or_default());
        Ok(api::Empty::new())
    }
}

struct Host {
    dir: tempfile::TempDir,
    rootfs: PathBuf,
    runc_root: PathBuf,
    events: mpsc::UnboundedReceiver<Envelope>,
    _events_server: Server,
    /// Containers and shims to remove if the test fails half-way.
    containers: Vec<String>,
    shims: Vec<i32>,
}

impl Host {
    async fn new() -> Result<Host> {
        nix::sys::prctl::set_child_subreaper(true)?;
        let dir = tempfile::Builder::new().prefix("berth-shim-").tempdir_in("/tmp")?;
        let rootfs = dir.path().join("rootfs");
        build_rootfs(&rootfs)?;
        let runc_root = dir.path().join("runc");
        let (tx, events) = mpsc::unbounded_channel();
        let sock = format!("unix://{}", dir.path().join("events.sock").display());
        let mut server = Server::new()
            .bind(&sock)?
            .register_service(create_events(Arc::new(Collector(tx))));
        server.start().await?;
        Ok(Host {
            dir,
            rootfs,
            runc_root,
            events,
            _events_server: server,
            containers: vec![],
            shims: vec![],
        })
    }

    /// The shims' own logs (`<socket>.log` when no bundle log FIFO exists), for failure messages.
    fn shim_logs(&self) -> String {
        let mut out = String::new();
        for e in std::fs::read_dir(self.dir.path().join("s"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if e.path().extension().is_some_and(|x| x == "log") {
                out.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
            }
        }
        out
    }

    fn ttrpc_address(&self) -> PathBuf {
        self.dir.path().join("events.sock")
    }

    /// A bundle for container `id` of pod `pod` running `args`, with its own pid namespace.
    fn bundle(&self, pod: &str, id: &str, args: &[&str]) -> Result<PathBuf> {
        let bundle = self.dir.path().join("bundles").join(id);
        std::fs::create_dir_all(&bundle)?;
        let config = serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {
                "terminal": false,
                "user": {"uid": 0, "gid": 0},
                "args": args,
                "env": ["PATH=/bin"],
                "cwd": "/",
                "noNewPrivileges": true
            },
            "root": {"path": self.rootfs, "readonly": true},
            "hostname": "shimtest",
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755", "size=1m"]}
            ],
            "annotations": {"io.kubernetes.cri.sandbox-id": pod, "io.kubernetes.cri.container-type": "container"},
            "linux": {
                "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}],
                "cgroupsPath": format!("/{CGROUP_PARENT}/{id}"),
                "maskedPaths": ["/proc/kcore"],
                "readonlyPaths": ["/proc/sys"]
            }
        });
        std::fs::write(bundle.join("config.json"), serde_json::to_vec_pretty(&config)?)?;
        Ok(bundle)
    }

    /// The shim command for container `id`, as berthd runs it (cwd = bundle, TTRPC_ADDRESS).
    fn shim_command(&self, id: &str, bundle: &Path) -> Command {
        let mut cmd = Command::new(shim_bin());
        cmd.args([
            "-namespace",
            NAMESPACE,
            "-address",
            HOST_ADDRESS,
            "-publish-binary",
            "/usr/bin/false",
            "-debug",
            "-id",
            id,
        ])
        .current_dir(bundle)
        .env("TTRPC_ADDRESS", self.ttrpc_address())
        .env("BERTH_RUNTIME_ROOT", &self.runc_root)
        .env_remove("BERTH_RUNTIME_BINARY");
        cmd
    }

    /// Runs `start` and returns the address it printed.
    fn start_shim(&self, id: &str, bundle: &Path) -> Result<String> {
        let out = self
            .shim_command(id, bundle)
            .arg("start")
            .stdin(Stdio::null())
            .output()?;
        ensure!(
            out.status.success(),
            "start failed: {:?} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        ensure!(
            out.stderr.is_empty(),
            "start wrote to stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let address = String::from_utf8(out.stdout)?;
        ensure!(!address.ends_with('\n'), "address must be printed without a newline");
        ensure!(
            std::fs::read_to_string(bundle.join("address"))? == address,
            "address file differs"
        );
        Ok(address)
    }

    /// Waits for the next event with `topic`, returning it and the events skipped on the way.
    async fn event(&mut self, topic: &str) -> Result<(Envelope, Vec<String>)> {
        let mut skipped = Vec::new();
        // Generous: under a loaded CI machine the shim's first delivery may need a few retries.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(45);
        loop {
            let e = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .with_context(|| format!("no {topic} event (saw {skipped:?}); shim logs:\n{}", self.shim_logs()))?
                .context("events channel closed")?;
            if e.topic == topic {
                return Ok((e, skipped));
            }
            skipped.push(e.topic);
        }
    }

    fn runc(&self) -> Command {
        let mut cmd = Command::new("runc");
        cmd.arg("--root").arg(self.runc_root.join(NAMESPACE));
        cmd
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        for &pid in &self.shims {
            if kill(Pid::from_raw(pid), None).is_ok() {
                eprintln!("cleanup: killing shim {pid}");
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                let _ = reap(pid, Duration::from_secs(5));
            }
        }
        for id in &self.containers {
            let _ = self
                .runc()
                .args(["delete", "--force", id])
                .stderr(Stdio::null())
                .status();
            remove_cgroups(id);
        }
    }
}

/// Copies busybox and the libraries it links into `rootfs` (as hack/test-images.py does).
fn build_rootfs(rootfs: &Path) -> Result<()> {
    for d in ["bin", "proc", "dev", "tmp"] {
        std::fs::create_dir_all(rootfs.join(d))?;
    }
    let ldd = Command::new("ldd").arg("/usr/bin/busybox").output()?;
    let text = String::from_utf8(ldd.stdout)?;
    let libs = text.split_whitespace().filter(|w| w.starts_with('/'));
    for lib in libs.chain(["/usr/bin/busybox"]) {
        let dest = if lib == "/usr/bin/busybox" {
            rootfs.join("bin/busybox")
        } else {
            rootfs.join(&lib[1..])
        };
        std::fs::create_dir_all(dest.parent().unwrap())?;
        std::fs::copy(lib, &dest).with_context(|| format!("copying {lib}"))?;
    }
    for applet in ["sh", "echo", "sleep", "cat"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet))?;
    }
    Ok(())
}

fn remove_cgroups(id: &str) {
    let Ok(controllers) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    for c in controllers.flatten() {
        let _ = std::fs::remove_dir(c.path().join(CGROUP_PARENT).join(id));
        // Fails while another test still has a container there; the last one removes it.
        let _ = std::fs::remove_dir(c.path().join(CGROUP_PARENT));
    }
}

/// Reaps `pid` (our child, or an orphan reparented to us) within `limit`; returns its exit code.
fn reap(pid: i32, limit: Duration) -> Result<i32> {
    let deadline = Instant::now() + limit;
    loop {
        match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG))? {
            WaitStatus::Exited(_, code) => return Ok(code),
            WaitStatus::Signaled(_, sig, _) => return Ok(128 + sig as i32),
            _ if Instant::now() > deadline => bail!("pid {pid} still running after {limit:?}"),
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

fn proc_status_kb(pid: u32, field: &str) -> Option<u64> {
    let file = if field == "Pss:" { "smaps_rollup" } else { "status" };
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn no_mounts_under(dir: &Path) -> Result<()> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    let d = dir.to_string_lossy();
    let left: Vec<_> = mountinfo.lines().filter(|l| l.contains(d.as_ref())).collect();
    ensure!(left.is_empty(), "mounts left under {d}: {left:?}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The task API over the v2 service name.
// ---------------------------------------------------------------------------------------------

struct Task {
    client: Client,
}

impl Task {
    async fn connect(address: &str) -> Result<Task> {
        Ok(Task {
            client: Client::connect(address).await?,
        })
    }

    async fn call<Q: Message, R: Message>(&self, method: &str, req: &Q) -> ttrpc::Result<R> {
        let mut r = ttrpc::Request::new();
        r.service = TASK_SERVICE_V2.to_string();
        r.method = method.to_string();
        r.timeout_nano = Duration::from_secs(60).as_nanos() as i64;
        r.payload = req.write_to_bytes().expect("encode");
        let resp = self.client.request(r).await?;
        Ok(R::parse_from_bytes(&resp.payload).expect("decode"))
    }

    async fn create(&self, id: &str, bundle: &Path, stdout: &str, stderr: &str, options: Option<Any>) -> Result<u32> {
        let req = api::CreateTaskRequest {
            id: id.into(),
            bundle: bundle.to_string_lossy().into(),
            stdout: stdout.into(),
            stderr: stderr.into(),
            options: options.into(),
            ..Default::default()
        };
        let r: api::CreateTaskResponse = self.call("Create", &req).await?;
        Ok(r.pid)
    }

    async fn start(&self, id: &str, exec_id: &str) -> ttrpc::Result<u32> {
        let r: api::StartResponse = self
            .call(
                "Start",
                &api::StartRequest {
                    id: id.into(),
                    exec_id: exec_id.into(),
                    ..Default::default()
                },
            )
            .await?;
        Ok(r.pid)
    }

    async fn wait(&self, id: &str, exec_id: &str) -> ttrpc::Result<api::WaitResponse> {
        self.call(
            "Wait",
            &api::WaitRequest {
                id: id.into(),
                exec_id: exec_id.into(),
                ..Default::default()
            },
        )
        .await
    }

    async fn state(&self, id: &str, exec_id: &str) -> ttrpc::Result<api::StateResponse> {
        self.call(
            "State",
            &api::StateRequest {
                id: id.into(),
                exec_id: exec_id.into(),
                ..Default::default()
            },
        )
        .await
    }

    async fn kill(&self, id: &str, signal: u32) -> ttrpc::Result<api::Empty> {
        self.call(
            "Kill",
            &api::KillRequest {
                id: id.into(),
                signal,
                ..Default::default()
            },
        )
        .await
    }

    async fn delete(&self, id: &str, exec_id: &str) -> ttrpc::Result<api::DeleteResponse> {
        self.call(
            "Delete",
            &api::DeleteRequest {
                id: id.into(),
                exec_id: exec_id.into(),
                ..Default::default()
            },
        )
        .await
    }

    async fn connect_rpc(&self, id: &str) -> ttrpc::Result<api::ConnectResponse> {
        self.call(
            "Connect",
            &api::ConnectRequest {
                id: id.into(),
                ..Default::default()
            },
        )
        .await
    }

    async fn shutdown(&self) -> ttrpc::Result<api::Empty> {
        self.call("Shutdown", &api::ShutdownRequest::default()).await
    }
}

fn code(r: ttrpc::Result<impl std::fmt::Debug>) -> Code {
    match r {
        Err(ttrpc::Error::RpcStatus(s)) => s.code(),
        other => panic!("expected an RPC status, got {other:?}"),
    }
}

fn runc_options(root: &Path) -> Any {
    let o = Options {
        binary_name: "runc".into(),
        root: root.to_string_lossy().into(),
        ..Default::default()
    };
    Any {
        type_url: "containerd.runc.v1.Options".into(),
        value: o.write_to_bytes().unwrap(),
        ..Default::default()
    }
}

fn unique(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// Create → Start → Wait of a container writing to stdout and stderr: exit status, CRI log lines,
/// events, State, Delete (twice), Shutdown, and nothing left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_lifecycle_with_cri_log_and_events() -> Result<()> {
    require_root!();
    let mut host = Host::new().await?;
    let (pod, id) = (unique("pod-a"), unique("hello"));
    let bundle = host.bundle(
        &pod,
        &id,
        // Exits at once, usually before the shim has answered Start: the start event must still come
        // before the exit event.
        &["sh", "-c", "echo hello; echo oops >&2; printf tail; exit 3"],
    )?;
    let address = host.start_shim(&id, &bundle)?;
    let socket = address.strip_prefix("unix://").context("unix:// address")?.to_string();
    ensure!(
        socket.starts_with(&host.dir.path().join("s").to_string_lossy().to_string()),
        "socket {socket} not under <TTRPC dir>/s"
    );

    let task = Task::connect(&address).await?;
    let conn = task.connect_rpc(&id).await?;
    host.shims.push(conn.shim_pid as i32);
    host.containers.push(id.clone());

    let log = host.dir.path().join("hello.log");
    let crilog = format!("crilog://{}", log.display());
    let pid = task
        .create(&id, &bundle, &crilog, &crilog, Some(runc_options(&host.runc_root)))
        .await?;
    ensure!(pid > 0);
    let st = task.state(&id, "").await?;
    assert_eq!(st.status.enum_value(), Ok(api::Status::CREATED));
    assert_eq!(
        (st.pid, st.stdout.as_str(), st.bundle.as_str()),
        (pid, crilog.as_str(), bundle.to_str().unwrap())
    );
    let (create, _) = host.event("/tasks/create").await?;
    assert_eq!(
        (create.namespace.as_str(), create.event.type_url.as_str()),
        (NAMESPACE, "containerd.events.TaskCreate")
    );

    assert_eq!(task.start(&id, "").await?, pid);
    let (start, _) = host.event("/tasks/start").await?;
    assert_eq!(TaskStart::parse_from_bytes(&start.event.value)?.pid, pid);

    let waited = task.wait(&id, "").await?;
    assert_eq!(waited.exit_status, 3);
    assert!(waited.exited_at.seconds > 0);

    let (exit, _) = host.event("/tasks/exit").await?;
    let exit = TaskExit::parse_from_bytes(&exit.event.value)?;
    assert_eq!(
        (exit.container_id.as_str(), exit.id.as_str(), exit.pid, exit.exit_status),
        (id.as_str(), id.as_str(), pid, 3)
    );

    // The log is complete when Wait returns.
    let text = std::fs::read_to_string(&log)?;
    let mut records: Vec<String> = text
        .lines()
        .map(|l| {
            let (ts, rest) = l.split_once(' ').expect("a timestamp");
            assert!(
                ts.len() == 30 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T',
                "timestamp {ts:?}"
            );
            rest.to_string()
        })
        .collect();
    records.sort();
    assert_eq!(
        records,
        vec!["stderr F oops", "stdout F hello", "stdout P tail"],
        "log:\n{text}"
    );
    println!("CRI log of {id}:\n{text}");

    let st = task.state(&id, "").await?;
    assert_eq!((st.status.enum_value(), st.exit_status), (Ok(api::Status::STOPPED), 3));
    assert_eq!(code(task.kill(&id, 9).await), Code::NOT_FOUND);
    // Shutdown with a container left does nothing.
    task.shutdown().await?;
    task.connect_rpc(&id).await?;

    let deleted = task.delete(&id, "").await?;
    assert_eq!((deleted.pid, deleted.exit_status), (pid, 3));
    let (del, _) = host.event("/tasks/delete").await?;
    assert_eq!(del.event.type_url, "containerd.events.TaskDelete");
    assert_eq!(code(task.delete(&id, "").await), Code::NOT_FOUND);
    assert_eq!(code(task.state(&id, "").await), Code::NOT_FOUND);
    let gone = host.runc().args(["state", &id]).output()?;
    ensure!(!gone.status.success(), "runc still knows {id}");

    let _ = task.shutdown().await;
    let shim = conn.shim_pid as i32;
    assert_eq!(reap(shim, Duration::from_secs(10))?, 0, "shim exit code");
    host.shims.clear();
    ensure!(!Path::new(&socket).exists(), "socket {socket} left behind");
    ensure!(!alive(pid), "container init {pid} still alive");
    no_mounts_under(host.dir.path())?;
    remove_cgroups(&id);
    host.containers.clear();
    Ok(())
}

/// A shim launched by a process group that then dies keeps running; a second container of the pod
/// reuses it; Kill, Exec (FIFO stdout), the v3 name, idle RSS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_exec_survival_and_rss() -> Result<()> {
    require_root!();
    let mut host = Host::new().await?;
    let (pod, id) = (unique("pod-b"), unique("sleeper"));
    let bundle = host.bundle(&pod, &id, &["sleep", "1000"])?;

    // berthd stand-in: a process group that runs `start`, then lingers until we kill the whole group.
    let program = shim_bin();
    let mut launcher = Command::new("sh");
    launcher
        .arg("-c")
        .arg(r#""$0" "$@" start >/dev/null && exec sleep 1000"#)
        .arg(&program)
        .args([
            "-namespace",
            NAMESPACE,
            "-address",
            HOST_ADDRESS,
            "-publish-binary",
            "/usr/bin/false",
            "-id",
            &id,
        ])
        .current_dir(&bundle)
        .env("TTRPC_ADDRESS", host.ttrpc_address())
        .env("BERTH_RUNTIME_ROOT", &host.runc_root)
        .process_group(0);
    let mut launcher = launcher.spawn()?;
    let address_file = bundle.join("address");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !address_file.exists() {
        ensure!(
            Instant::now() < deadline,
            "start never wrote {}",
            address_file.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let address = std::fs::read_to_string(&address_file)?;
    let task = Task::connect(&address).await?;
    let shim_pid = task.connect_rpc(&id).await?.shim_pid;
    host.shims.push(shim_pid as i32);
    host.containers.push(id.clone());

    let group = launcher.id() as i32;
    kill(Pid::from_raw(-group), Signal::SIGKILL)?;
    launcher.wait()?;
    let after = task
        .connect_rpc(&id)
        .await
        .context("shim died with its launcher's process group")?;
    assert_eq!(after.shim_pid, shim_pid);
    let sid = nix::unistd::getsid(Some(Pid::from_raw(shim_pid as i32)))?;
    assert_eq!(sid.as_raw(), shim_pid as i32, "the shim leads its own session");

    // Runtime root from BERTH_RUNTIME_ROOT (no options), output discarded.
    let pid = task.create(&id, &bundle, "", "", None).await?;
    task.start(&id, "").await?;
    assert_eq!(task.state(&id, "").await?.status.enum_value(), Ok(api::Status::RUNNING));
    ensure!(
        host.runc().args(["state", &id]).output()?.status.success(),
        "runc root is not BERTH_RUNTIME_ROOT/<ns>"
    );

    // A second container of the same pod gets the same shim.
    let id2 = unique("second");
    let bundle2 = host.bundle(&pod, &id2, &["true"])?;
    assert_eq!(host.start_shim(&id2, &bundle2)?, address);

    // Exec, containerd style: stdout into a FIFO the host reads.
    let fifo = host.dir.path().join("exec-stdout");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))?;
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read_to_string(fifo))
    };
    let process = serde_json::json!({
        "args": ["sh", "-c", "echo from-exec; exit 7"], "cwd": "/", "env": ["PATH=/bin"],
        "user": {"uid": 0, "gid": 0}, "terminal": false
    });
    let exec = api::ExecProcessRequest {
        id: id.clone(),
        exec_id: "e1".into(),
        stdout: fifo.to_string_lossy().into(),
        spec: Some(Any {
            type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process".into(),
            value: serde_json::to_vec(&process)?,
            ..Default::default()
        })
        .into(),
        ..Default::default()
    };
    task.call::<_, api::Empty>("Exec", &exec).await?;
    assert_eq!(
        code(task.call::<_, api::Empty>("Exec", &exec).await),
        Code::ALREADY_EXISTS
    );
    assert_eq!(
        task.state(&id, "e1").await?.status.enum_value(),
        Ok(api::Status::CREATED)
    );
    let exec_pid = task.start(&id, "e1").await?;
    ensure!(exec_pid > 0 && exec_pid != pid);
    assert_eq!(task.wait(&id, "e1").await?.exit_status, 7);
    assert_eq!(reader.join().unwrap()?, "from-exec\n");
    let (exit, _) = host.event("/tasks/exit").await?;
    let exit = TaskExit::parse_from_bytes(&exit.event.value)?;
    assert_eq!((exit.id.as_str(), exit.exit_status), ("e1", 7));
    let del = task.delete(&id, "e1").await?;
    assert_eq!((del.pid, del.exit_status), (exec_pid, 7));
    assert_eq!(code(task.state(&id, "e1").await), Code::NOT_FOUND);

    // The v3 name serves the same handlers (the generated client speaks TASK_SERVICE_V3).
    let v3 = TaskClient::new(task.client.clone());
    let st = v3
        .state(
            ttrpc::context::with_timeout(5_000_000_000),
            &api::StateRequest {
                id: id.clone(),
                ..Default::default()
            },
        )
        .await?;
    assert_eq!((st.pid, st.status.enum_value()), (pid, Ok(api::Status::RUNNING)));

    // Idle: one running container.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss = proc_status_kb(shim_pid, "VmRSS:").unwrap_or(0);
    let pss = proc_status_kb(shim_pid, "Pss:").unwrap_or(0);
    let anon = proc_status_kb(shim_pid, "RssAnon:").unwrap_or(0);
    let file = proc_status_kb(shim_pid, "RssFile:").unwrap_or(0);
    let threads = proc_status_kb(shim_pid, "Threads:").unwrap_or(0);
    println!(
        "idle shim {} with one container: VmRSS {rss} kB (anon {anon} kB, file {file} kB), Pss {pss} kB, threads {threads}",
        shim_bin().display()
    );
    if let Ok(dir) = std::env::var("BERTH_SHIM_SMAPS") {
        std::fs::copy(format!("/proc/{shim_pid}/smaps"), dir)?;
    }
    assert_eq!(threads, 1, "the shim runs one thread");

    // Running → Delete refused; Kill → 137.
    assert_eq!(code(task.delete(&id, "").await), Code::FAILED_PRECONDITION);
    task.kill(&id, Signal::SIGKILL as u32).await?;
    assert_eq!(task.wait(&id, "").await?.exit_status, 137);
    let (exit, _) = host.event("/tasks/exit").await?;
    assert_eq!(TaskExit::parse_from_bytes(&exit.event.value)?.exit_status, 137);
    assert_eq!(task.delete(&id, "").await?.exit_status, 137);

    task.shutdown().await.ok();
    assert_eq!(reap(shim_pid as i32, Duration::from_secs(10))?, 0, "shim exit code");
    host.shims.clear();
    ensure!(!alive(pid) && !alive(exec_pid), "container processes left");
    no_mounts_under(host.dir.path())?;
    remove_cgroups(&id);
    host.containers.clear();
    Ok(())
}

/// `delete` after the shim was killed: force-deletes the container and answers 137.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_action_after_shim_death() -> Result<()> {
    require_root!();
    let mut host = Host::new().await?;
    let (pod, id) = (unique("pod-c"), unique("orphan"));
    let bundle = host.bundle(&pod, &id, &["sleep", "1000"])?;
    let address = host.start_shim(&id, &bundle)?;
    let task = Task::connect(&address).await?;
    let shim_pid = task.connect_rpc(&id).await?.shim_pid as i32;
    host.shims.push(shim_pid);
    host.containers.push(id.clone());
    let pid = task
        .create(&id, &bundle, "", "", Some(runc_options(&host.runc_root)))
        .await?;
    task.start(&id, "").await?;

    kill(Pid::from_raw(shim_pid), Signal::SIGKILL)?;
    reap(shim_pid, Duration::from_secs(5))?;
    host.shims.clear();
    ensure!(alive(pid), "the container dies with its shim");

    // A new `start` finds the dead shim's socket and replaces it.
    let id2 = unique("after");
    let bundle2 = host.bundle(&pod, &id2, &["true"])?;
    let address2 = host.start_shim(&id2, &bundle2)?;
    assert_eq!(address2, address);
    let task2 = Task::connect(&address2).await?;
    let shim2 = task2.connect_rpc(&id2).await?.shim_pid as i32;
    host.shims.push(shim2);
    ensure!(shim2 != shim_pid);

    let out = host
        .shim_command(&id, &bundle)
        .args(["-bundle", bundle.to_str().unwrap(), "delete"])
        .output()?;
    ensure!(
        out.status.success(),
        "delete failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let resp = api::DeleteResponse::parse_from_bytes(&out.stdout)?;
    assert_eq!((resp.pid, resp.exit_status), (pid, 137));
    // The container's init reparented to us when its shim died.
    assert_eq!(reap(pid as i32, Duration::from_secs(10))?, 137);
    ensure!(
        !host.runc().args(["state", &id]).output()?.status.success(),
        "runc still knows {id}"
    );

    task2.shutdown().await.ok();
    assert_eq!(reap(shim2, Duration::from_secs(10))?, 0);
    host.shims.clear();
    remove_cgroups(&id);
    host.containers.clear();
    Ok(())
}
