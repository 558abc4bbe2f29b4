//! Containers for real, as root: runc driven through a shim v2 binary, CRI logs, exit codes, stop
//! with timeout then SIGKILL, removal leaving nothing behind.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_proto::cri::{
    ContainerConfig, ContainerMetadata, ContainerState, ContainerStatusRequest, CreateContainerRequest,
    ExecSyncRequest, ImageSpec, LinuxContainerConfig, LinuxContainerSecurityContext, LinuxPodSandboxConfig,
    ListContainersRequest, NamespaceMode, NamespaceOption, PodSandboxConfig, PodSandboxMetadata,
    RemoveContainerRequest, RemovePodSandboxRequest, ReopenContainerLogRequest, RunPodSandboxRequest,
    StartContainerRequest, StopContainerRequest, StopPodSandboxRequest,
};
use berth_proto::tonic::Code;
use berth_test::{Daemon, mounts_under, registry, require_root, wait_no_processes};

const CGROUP_PARENT: &str = "/berth-test";

fn pod(name: &str, logs: &Path) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: logs.display().to_string(),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: CGROUP_PARENT.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn container(name: &str, image: &str, cmd: &[&str]) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: cmd.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}.log"),
        // kubelet's default: a PID namespace of the container's own.
        linux: Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext {
                namespace_options: Some(NamespaceOption {
                    pid: NamespaceMode::Container as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

struct Setup {
    d: Daemon,
    pod_id: String,
    pod_cfg: PodSandboxConfig,
    logs: PathBuf,
    image: String,
}

async fn setup(handler: &str) -> Setup {
    setup_pod(handler, |_| {}).await
}

/// A daemon with busybox pulled and one pod, whose config `adjust` may change.
async fn setup_pod(handler: &str, adjust: impl FnOnce(&mut PodSandboxConfig)) -> Setup {
    let d = Daemon::start().await.unwrap();
    let image = registry::image("busybox:latest");
    d.pull(&image).await;
    let logs = d.dir.path().join("logs");
    let mut pod_cfg = pod("app", &logs);
    adjust(&mut pod_cfg);
    let pod_id = d
        .runtime()
        .await
        .unwrap()
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod_cfg.clone()),
            runtime_handler: handler.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    Setup {
        d,
        pod_id,
        pod_cfg,
        logs,
        image,
    }
}

impl Setup {
    async fn create(&self, cfg: ContainerConfig) -> Result<String, berth_proto::tonic::Status> {
        self.d
            .runtime()
            .await
            .unwrap()
            .create_container(CreateContainerRequest {
                pod_sandbox_id: self.pod_id.clone(),
                config: Some(cfg),
                sandbox_config: Some(self.pod_cfg.clone()),
            })
            .await
            .map(|r| r.into_inner().container_id)
    }

    async fn status(&self, id: &str) -> berth_proto::cri::ContainerStatus {
        self.d
            .runtime()
            .await
            .unwrap()
            .container_status(ContainerStatusRequest {
                container_id: id.into(),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap()
    }

    /// Creates and starts a container; its ID.
    async fn run(&self, cfg: ContainerConfig) -> String {
        let id = self.create(cfg).await.unwrap();
        self.d
            .runtime()
            .await
            .unwrap()
            .start_container(StartContainerRequest {
                container_id: id.clone(),
            })
            .await
            .unwrap();
        id
    }

    /// Removes the pod and its containers, waits for their processes to end, removes the cgroups.
    async fn finish(self) {
        self.d
            .runtime()
            .await
            .unwrap()
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: self.pod_id.clone(),
            })
            .await
            .unwrap();
        wait_no_processes(&self.d.config.state).await;
        remove_test_cgroups();
    }

    async fn wait_state(&self, id: &str, state: ContainerState) -> berth_proto::cri::ContainerStatus {
        let t0 = Instant::now();
        loop {
            let s = self.status(id).await;
            if s.state == state as i32 {
                return s;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "container {id} never reached {state:?}: {s:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn remove_test_cgroups() {
    for ctl in std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
        let _ = std::fs::remove_dir(ctl.path().join(CGROUP_PARENT.trim_start_matches('/')));
    }
}

async fn lifecycle(handler: &str) {
    let s = setup(handler).await;
    let mut rt = s.d.runtime().await.unwrap();

    // A container that prints to both streams and exits 3.
    let id = s
        .create(container(
            "printer",
            &s.image,
            &["sh", "-c", "echo hello; echo oops >&2; exit 3"],
        ))
        .await
        .unwrap();
    let st = s.status(&id).await;
    assert_eq!(st.state, ContainerState::ContainerCreated as i32);
    assert!(st.created_at > 0 && st.started_at == 0);
    rt.start_container(StartContainerRequest {
        container_id: id.clone(),
    })
    .await
    .unwrap();
    let st = s.wait_state(&id, ContainerState::ContainerExited).await;
    assert_eq!(st.exit_code, 3);
    assert_eq!(st.reason, "Error");
    assert!(
        st.started_at >= st.created_at && st.finished_at >= st.started_at,
        "{st:?}"
    );
    assert_eq!(st.log_path, s.logs.join("printer.log").display().to_string());
    assert_eq!(st.image.unwrap().image, s.image);
    assert!(st.image_ref.starts_with("sha256:"));
    let log = wait_for_log(&s.logs.join("printer.log"), 2).await;
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines.iter().any(|l| l.ends_with(" stdout F hello")), "{log}");
    assert!(lines.iter().any(|l| l.ends_with(" stderr F oops")), "{log}");
    for l in &lines {
        let ts = l.split(' ').next().unwrap();
        assert!(
            ts.len() == 30 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T',
            "RFC3339Nano timestamp: {l}"
        );
    }
    // Starting it again is refused.
    let err = rt
        .start_container(StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);

    // A long runner: refused removal while running; stop with timeout, then SIGKILL (sh as PID 1
    // ignores SIGTERM); exit 137.
    let sleeper = s
        .create(container("sleeper", &s.image, &["sleep", "1000"]))
        .await
        .unwrap();
    rt.start_container(StartContainerRequest {
        container_id: sleeper.clone(),
    })
    .await
    .unwrap();
    let st = s.wait_state(&sleeper, ContainerState::ContainerRunning).await;
    assert!(st.started_at > 0);

    // A running container is removed forcibly (the CRI says so): killed, then gone with its process.
    let doomed = s
        .create(container("doomed", &s.image, &["sleep", "4243"]))
        .await
        .unwrap();
    rt.start_container(StartContainerRequest {
        container_id: doomed.clone(),
    })
    .await
    .unwrap();
    s.wait_state(&doomed, ContainerState::ContainerRunning).await;
    rt.remove_container(RemoveContainerRequest {
        container_id: doomed.clone(),
    })
    .await
    .expect("a running container is removed forcibly");
    let err = rt
        .container_status(ContainerStatusRequest {
            container_id: doomed.clone(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let left: Vec<_> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == b"sleep\x004243\x00"))
        .collect();
    assert!(left.is_empty(), "the removed container's process is gone: {left:?}");

    // ExecSync: output, exit code, the container's view, timeouts.
    let exec = |cmd: &[&str], timeout: i64| ExecSyncRequest {
        container_id: sleeper.clone(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        timeout,
    };
    let r = rt
        .exec_sync(exec(&["sh", "-c", "echo hi; echo err >&2; exit 4"], 10))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (r.stdout.as_slice(), r.stderr.as_slice(), r.exit_code),
        (&b"hi\n"[..], &b"err\n"[..], 4)
    );
    let r = rt.exec_sync(exec(&["hostname"], 0)).await.unwrap().into_inner();
    assert_eq!(
        String::from_utf8_lossy(&r.stdout).trim(),
        "app",
        "exec sees the pod's UTS namespace"
    );
    let r = rt
        .exec_sync(exec(&["cat", "/etc/berth-release"], 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        String::from_utf8_lossy(&r.stdout).trim(),
        "layer3",
        "exec sees the container's rootfs"
    );
    let r = rt
        .exec_sync(exec(&["sh", "-c", "ps -o pid,comm | grep -c sleep"], 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        String::from_utf8_lossy(&r.stdout).trim(),
        "1",
        "the container's own PID namespace"
    );
    let t0 = Instant::now();
    let err = rt.exec_sync(exec(&["sleep", "30"], 1)).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(t0.elapsed() < Duration::from_secs(10));
    let missing = rt.exec_sync(exec(&["/no/such/binary"], 5)).await;
    assert!(
        missing.map(|r| r.into_inner().exit_code != 0).unwrap_or(true),
        "a missing binary fails"
    );
    let err = rt
        .exec_sync(ExecSyncRequest {
            container_id: id.clone(),
            cmd: vec!["true".into()],
            timeout: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::FailedPrecondition,
        "exec into an exited container: {err:?}"
    );
    let t0 = Instant::now();
    rt.stop_container(StopContainerRequest {
        container_id: sleeper.clone(),
        timeout: 1,
    })
    .await
    .unwrap();
    assert!(t0.elapsed() >= Duration::from_millis(900), "waited the grace period");
    let st = s.status(&sleeper).await;
    assert_eq!((st.state, st.exit_code), (ContainerState::ContainerExited as i32, 137));

    // Names are unique per pod.
    let err = s.create(container("sleeper", &s.image, &["true"])).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    let all = rt
        .list_containers(ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert_eq!(all.len(), 2);
    assert!(all.iter().all(|c| c.pod_sandbox_id == s.pod_id));

    for id in [&id, &sleeper] {
        rt.remove_container(RemoveContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap();
        rt.remove_container(RemoveContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap();
    }
    let err = rt
        .container_status(ContainerStatusRequest {
            container_id: id.clone(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: s.pod_id.clone(),
    })
    .await
    .unwrap();
    rt.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: s.pod_id.clone(),
    })
    .await
    .unwrap();
    assert!(
        mounts_under(s.d.dir.path()).is_empty(),
        "mounts left: {:?}",
        mounts_under(s.d.dir.path())
    );
    wait_no_processes(&s.d.config.state).await;
    assert!(!s.d.config.state.join("containers").join(&id).exists());
    remove_test_cgroups();
}

async fn wait_for_log(path: &Path, lines: usize) -> String {
    let t0 = Instant::now();
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.lines().count() >= lines || t0.elapsed() > Duration::from_secs(10) {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_with_containerd_shim_runc_v2() {
    require_root!();
    registry::require().await;
    lifecycle("runc-containerd").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_with_berth_shim() {
    require_root!();
    registry::require().await;
    lifecycle("").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_errors_leave_nothing() {
    require_root!();
    registry::require().await;
    let s = setup("runc-containerd").await;
    let err = s
        .create(container("x", &registry::image("not-pulled:latest"), &["true"]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let mut bad = container("y", &s.image, &["true"]);
    bad.metadata = None;
    assert_eq!(s.create(bad).await.unwrap_err().code(), Code::InvalidArgument);
    let mut user = container("z", &s.image, &["true"]);
    user.linux
        .as_mut()
        .unwrap()
        .security_context
        .as_mut()
        .unwrap()
        .run_as_username = "nobody-in-this-image".into();
    assert_eq!(s.create(user).await.unwrap_err().code(), Code::InvalidArgument);
    let containers = s.d.config.state.join("containers");
    assert_eq!(
        std::fs::read_dir(&containers).map(|r| r.count()).unwrap_or(0),
        0,
        "no bundle left"
    );
    assert!(mounts_under(&containers).is_empty());
    // The failed names are free again.
    let id = s.create(container("z", &s.image, &["true"])).await.unwrap();
    let mut rt = s.d.runtime().await.unwrap();
    rt.remove_container(RemoveContainerRequest { container_id: id })
        .await
        .unwrap();
    rt.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: s.pod_id.clone(),
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_survive_a_daemon_restart_containerd_shim() {
    require_root!();
    registry::require().await;
    survive_restart("runc-containerd").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_survive_a_daemon_restart_berth_shim() {
    require_root!();
    registry::require().await;
    survive_restart("").await;
}

async fn survive_restart(handler: &str) {
    let mut s = setup(handler).await;
    let long = s.create(container("long", &s.image, &["sleep", "1000"])).await.unwrap();
    let short = s
        .create(container(
            "short",
            &s.image,
            &["sh", "-c", "sleep 1; echo done; exit 7"],
        ))
        .await
        .unwrap();
    let mut rt = s.d.runtime().await.unwrap();
    for id in [&long, &short] {
        rt.start_container(StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap();
    }
    let pid_before = s.wait_state(&long, ContainerState::ContainerRunning).await.started_at;
    drop(rt);
    // berthd goes away while both run; "short" exits while it is gone.
    s.d.stop().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    s.d.restart().await.unwrap();
    let st = s.wait_state(&short, ContainerState::ContainerExited).await;
    assert_eq!(
        st.exit_code, 7,
        "an exit that happened while berthd was down is reported"
    );
    let st = s.status(&long).await;
    assert_eq!(
        st.state,
        ContainerState::ContainerRunning as i32,
        "still running after the restart"
    );
    assert_eq!(st.started_at, pid_before);
    let mut rt = s.d.runtime().await.unwrap();
    rt.stop_container(StopContainerRequest {
        container_id: long.clone(),
        timeout: 0,
    })
    .await
    .unwrap();
    assert_eq!(s.status(&long).await.exit_code, 137);
    rt.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: s.pod_id.clone(),
    })
    .await
    .unwrap();
    assert!(mounts_under(s.d.dir.path()).is_empty());
    wait_no_processes(&s.d.config.state).await;
    remove_test_cgroups();
}

/// The numbers of `line N` entries in CRI log text.
fn counted_lines(text: &str) -> Vec<u64> {
    text.lines()
        .filter_map(|l| l.split_once(" stdout F line ").and_then(|(_, n)| n.trim().parse().ok()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_rotation_and_restart_with_containerd_shim() {
    require_root!();
    registry::require().await;
    log_rotation_and_restart("runc-containerd").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_rotation_and_restart_with_berth_shim() {
    require_root!();
    registry::require().await;
    log_rotation_and_restart("").await;
}

/// kubelet's log rotation loses no line, and logging goes on across a berthd restart.
async fn log_rotation_and_restart(handler: &str) {
    let mut s = setup(handler).await;
    let counter = [
        "sh",
        "-c",
        "i=0; while true; do echo line $i; i=$((i+1)); sleep 0.02; done",
    ];
    let id = s.create(container("counter", &s.image, &counter)).await.unwrap();
    let mut rt = s.d.runtime().await.unwrap();
    rt.start_container(StartContainerRequest {
        container_id: id.clone(),
    })
    .await
    .unwrap();
    let log = s.logs.join("counter.log");
    wait_for_log(&log, 5).await;
    // kubelet's rotation: rename, then ask the runtime to reopen.
    let rotated = s.logs.join("counter.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    rt.reopen_container_log(ReopenContainerLogRequest {
        container_id: id.clone(),
    })
    .await
    .unwrap();
    wait_for_log(&log, 5).await;
    // berthd goes away and comes back: the output waits in the FIFO and is copied afterwards.
    drop(rt);
    s.d.restart().await.unwrap();
    let before = std::fs::read_to_string(&log).unwrap().lines().count();
    let t0 = Instant::now();
    while std::fs::read_to_string(&log).unwrap().lines().count() < before + 5 {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "logging did not resume after the restart"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut rt = s.d.runtime().await.unwrap();
    rt.stop_container(StopContainerRequest {
        container_id: id.clone(),
        timeout: 0,
    })
    .await
    .unwrap();
    let mut all = counted_lines(&std::fs::read_to_string(&rotated).unwrap());
    let first_len = all.len();
    all.extend(counted_lines(&std::fs::read_to_string(&log).unwrap()));
    assert!(
        first_len >= 5 && all.len() > first_len + 5,
        "{first_len} then {}",
        all.len()
    );
    for (i, n) in all.iter().enumerate() {
        assert_eq!(*n, i as u64, "lines are consecutive across rotation and restart");
    }
    let err = rt
        .reopen_container_log(ReopenContainerLogRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "not running any more");
    rt.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: s.pod_id.clone(),
    })
    .await
    .unwrap();
    wait_no_processes(&s.d.config.state).await;
    remove_test_cgroups();
}

/// The same lifecycle with crun as the OCI runtime. crun 1.8 (Debian 12) refuses cgroup v1 "hybrid"
/// hosts; there this test says so loudly and stops, instead of passing as if crun worked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_with_crun() {
    require_root!();
    registry::require().await;
    let s = {
        let mut s = setup("runc-containerd").await;
        // Re-point the daemon at a config with the crun handler, on the same directories.
        s.d.stop().await.unwrap();
        s.d.config.runtime.handlers.insert(
            "runc-containerd".into(),
            berth_runtime::config::Handler {
                shim: "containerd-shim-runc-v2".into(),
                runtime: "crun".into(),
                log_writer: berth_runtime::config::LogWriter::Berthd,
            },
        );
        s.d.restart().await.unwrap();
        s
    };
    let id = s
        .create(container("hello", &s.image, &["sh", "-c", "echo hello from crun"]))
        .await
        .unwrap();
    let mut rt = s.d.runtime().await.unwrap();
    match rt
        .start_container(StartContainerRequest {
            container_id: id.clone(),
        })
        .await
    {
        Ok(_) => {
            let st = s.wait_state(&id, ContainerState::ContainerExited).await;
            assert_eq!(st.exit_code, 0);
            let log = wait_for_log(&s.logs.join("hello.log"), 1).await;
            assert!(log.contains("stdout F hello from crun"), "{log}");
        }
        Err(e) if e.message().contains("cgroup") => {
            berth_test::report_not_tested(
                "lifecycle_with_crun",
                &format!(
                    "crun cannot run containers on this host (cgroup v1 hybrid, which crun 1.8 refuses): {}",
                    e.message()
                ),
            );
        }
        Err(e) => panic!("crun failed for another reason: {e:?}"),
    }
    rt.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: s.pod_id.clone(),
    })
    .await
    .unwrap();
    assert!(mounts_under(s.d.dir.path()).is_empty());
    wait_no_processes(&s.d.config.state).await;
    remove_test_cgroups();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oom_killed_is_reported() {
    require_root!();
    registry::require().await;
    let s = setup("").await;
    let mut cfg = container(
        "hog",
        &s.image,
        &["dd", "if=/dev/zero", "of=/dev/null", "bs=256M", "count=1"],
    );
    cfg.linux.as_mut().unwrap().resources = Some(berth_proto::cri::LinuxContainerResources {
        memory_limit_in_bytes: 32 << 20,
        ..Default::default()
    });
    let id = s.create(cfg).await.unwrap();
    let mut rt = s.d.runtime().await.unwrap();
    rt.start_container(StartContainerRequest {
        container_id: id.clone(),
    })
    .await
    .unwrap();
    let st = s.wait_state(&id, ContainerState::ContainerExited).await;
    assert_eq!((st.reason.as_str(), st.exit_code), ("OOMKilled", 137), "{st:?}");
    rt.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: s.pod_id.clone(),
    })
    .await
    .unwrap();
    wait_no_processes(&s.d.config.state).await;
    remove_test_cgroups();
}

/// A pod that shares one PID namespace (CRI `POD`): its containers see each other's processes, and
/// PID 1 is berth's tiny init, which reaps orphans.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_pid_namespace() {
    require_root!();
    registry::require().await;
    let s = setup_pod("", |p| {
        p.linux.as_mut().unwrap().security_context = Some(berth_proto::cri::LinuxSandboxSecurityContext {
            namespace_options: Some(NamespaceOption {
                pid: NamespaceMode::Pod as i32,
                ..Default::default()
            }),
            ..Default::default()
        });
    })
    .await;
    let (d, image, pod_id, pod_cfg) = (&s.d, s.image.clone(), s.pod_id.clone(), s.pod_cfg.clone());
    // This pod's holder (other tests' pods, running at the same time, have their own).
    let ours: Vec<i32> = pod_inits()
        .into_iter()
        .filter(|p| is_child_of_pod(*p, &s.d.config.state))
        .collect();
    assert_eq!(ours.len(), 1, "one pod-init holds the pod's PID namespace");
    let mut rt = d.runtime().await.unwrap();
    let shared = |name: &str, cmd: &[&str]| {
        let mut c = container(name, &image, cmd);
        c.linux
            .as_mut()
            .unwrap()
            .security_context
            .as_mut()
            .unwrap()
            .namespace_options = Some(NamespaceOption {
            pid: NamespaceMode::Pod as i32,
            ..Default::default()
        });
        // A device from the host, readable only.
        c.devices = vec![berth_proto::cri::Device {
            container_path: "/dev/berth-zero".into(),
            host_path: "/dev/zero".into(),
            permissions: "r".into(),
        }];
        c
    };
    let mut ids = vec![];
    for (name, cmd) in [("one", ["sleep", "1001"]), ("two", ["sleep", "1002"])] {
        let id = rt
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod_id.clone(),
                config: Some(shared(name, &cmd)),
                sandbox_config: Some(pod_cfg.clone()),
            })
            .await
            .unwrap()
            .into_inner()
            .container_id;
        rt.start_container(StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap();
        ids.push(id);
    }
    let exec = |cmd: &str| ExecSyncRequest {
        container_id: ids[0].clone(),
        cmd: vec!["sh".into(), "-c".into(), cmd.into()],
        timeout: 10,
    };
    let ps = rt.exec_sync(exec("ps -o pid,args")).await.unwrap().into_inner();
    let ps = String::from_utf8_lossy(&ps.stdout).to_string();
    assert!(
        ps.contains("sleep 1001") && ps.contains("sleep 1002"),
        "both containers' processes: {ps}"
    );
    let dev = rt
        .exec_sync(exec("head -c 3 /dev/berth-zero | wc -c"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        String::from_utf8_lossy(&dev.stdout).trim(),
        "3",
        "the device is there and readable: {dev:?}"
    );
    let init = rt
        .exec_sync(exec("tr '\\0' ' ' < /proc/1/cmdline"))
        .await
        .unwrap()
        .into_inner();
    assert!(
        String::from_utf8_lossy(&init.stdout).contains("pod-init"),
        "PID 1 is berth's init: {init:?}"
    );
    // An orphan whose parent exits is reaped by the init: no zombie stays.
    rt.exec_sync(exec("sh -c 'sleep 0.2 &' ; sleep 0.5")).await.unwrap();
    let z = rt
        .exec_sync(exec("ps -o stat | grep -c '^Z' || true"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(String::from_utf8_lossy(&z.stdout).trim(), "0", "no zombies");
    rt.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: pod_id.clone(),
    })
    .await
    .unwrap();
    assert!(mounts_under(d.dir.path()).is_empty());
    wait_no_processes(&d.config.state).await;
    let t0 = Instant::now();
    while pod_inits().contains(&ours[0]) {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the PID namespace holder is gone with the pod"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    remove_test_cgroups();
}

/// PIDs of running `berth-shim pod-init` processes.
fn pod_inits() -> Vec<i32> {
    let mut v: Vec<i32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.split(|b| *b == 0).any(|a| a == b"pod-init") && !c.starts_with(b"unshare"))
        })
        .collect();
    v.sort();
    v
}

/// Whether `pid` holds the PID namespace pinned under `state` (a pod of this test's daemon).
fn is_child_of_pod(pid: i32, state: &Path) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(ns) = std::fs::metadata(format!("/proc/{pid}/ns/pid")) else {
        return false;
    };
    std::fs::read_dir(state.join("pods"))
        .into_iter()
        .flatten()
        .flatten()
        .any(|p| std::fs::metadata(p.path().join("ns/pid")).is_ok_and(|m| m.ino() == ns.ino()))
}

/// A container's stop signal (Kubernetes' `lifecycle.stopSignal`, CRI 1.33+): the config's is sent
/// by StopContainer over the image's StopSignal, the image's over SIGTERM, and ContainerStatus
/// reports the one that will be sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_signal_from_config_then_image() {
    use berth_proto::cri::Signal;
    require_root!();
    registry::require().await;
    let s = setup("").await;
    let stopsignal = registry::image("stopsignal:latest");
    s.d.pull(&stopsignal).await;
    let mut rt = s.d.runtime().await.unwrap();
    // Each traps the signals it may get and says which arrived; none dies of SIGTERM's default.
    let script = "for g in TERM USR1 USR2; do trap \"echo got-$g; exit 0\" $g; done; echo ready; \
                  while :; do sleep 0.1; done";
    let cases = [
        ("config", &stopsignal, Signal::Sigusr1, Signal::Sigusr1, "got-USR1"),
        (
            "image",
            &stopsignal,
            Signal::RuntimeDefault,
            Signal::Sigusr2,
            "got-USR2",
        ),
        ("default", &s.image, Signal::RuntimeDefault, Signal::Sigterm, "got-TERM"),
    ];
    for (name, image, asked, sent, says) in cases {
        let mut cfg = container(name, image, &["sh", "-c", script]);
        cfg.stop_signal = asked as i32;
        let id = s.run(cfg).await;
        wait_for_log(&s.logs.join(format!("{name}.log")), 1).await;
        assert_eq!(
            s.status(&id).await.stop_signal(),
            sent,
            "{name}: the signal StopContainer will send"
        );
        rt.stop_container(StopContainerRequest {
            container_id: id.clone(),
            timeout: 30,
        })
        .await
        .unwrap();
        let st = s.wait_state(&id, ContainerState::ContainerExited).await;
        assert_eq!(
            st.exit_code, 0,
            "{name}: it exited from its trap, not by SIGKILL: {st:?}"
        );
        let log = wait_for_log(&s.logs.join(format!("{name}.log")), 2).await;
        assert!(log.contains(says), "{name}: {log}");
    }
    let mut bad = container("bad", &s.image, &["true"]);
    bad.stop_signal = 99;
    let err = s.create(bad).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    s.finish().await;
}

/// gRPC deadlines (kubelet gives every call one): an ExecSync or PullImage still going when the
/// client's deadline passes answers DeadlineExceeded, in time, and the exec is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_answer_deadline_exceeded() {
    require_root!();
    registry::require().await;
    let s = setup("").await;
    let mut rt = s.d.runtime().await.unwrap();
    let id = s.run(container("app", &s.image, &["sleep", "1000"])).await;
    let exec = |cmd: &[&str], deadline: Option<Duration>| {
        let mut req = berth_proto::tonic::Request::new(ExecSyncRequest {
            container_id: id.clone(),
            cmd: cmd.iter().map(|c| c.to_string()).collect(),
            timeout: 0,
        });
        if let Some(d) = deadline {
            req.set_timeout(d);
        }
        req
    };
    let t0 = Instant::now();
    let err = rt
        .exec_sync(exec(&["sleep", "30"], Some(Duration::from_secs(2))))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "answered in time: {:?}",
        t0.elapsed()
    );
    let left = rt
        .exec_sync(exec(&["sh", "-c", "ps -o args | grep -c '^sleep 30$'"], None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        String::from_utf8_lossy(&left.stdout).trim(),
        "0",
        "the timed-out exec was killed"
    );

    // A registry that accepts and never answers: the pull cannot finish, the deadline ends the call.
    let hang = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = hang.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = hang.accept().await {
            conns.push(c);
        }
    });
    let mut images = s.d.images().await.unwrap();
    let mut req = berth_proto::tonic::Request::new(berth_proto::cri::PullImageRequest {
        image: Some(ImageSpec {
            image: format!("{addr}/hangs/forever:1"),
            ..Default::default()
        }),
        ..Default::default()
    });
    req.set_timeout(Duration::from_secs(1));
    let t0 = Instant::now();
    let err = images.pull_image(req).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "answered in time: {:?}",
        t0.elapsed()
    );
    held.abort();

    s.finish().await;
}

/// The Stream* RPCs (CRI list streaming, 1.36) give what their List* twins give; Status lists every
/// configured runtime handler by name and the default once more under the empty name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_streams_and_handlers() {
    use berth_proto::cri::*;
    require_root!();
    registry::require().await;
    let s = setup("").await;
    let mut rt = s.d.runtime().await.unwrap();
    let mut images = s.d.images().await.unwrap();
    let id = s.run(container("app", &s.image, &["sleep", "1000"])).await;

    async fn all<T>(mut s: berth_proto::tonic::Streaming<T>) -> Vec<T> {
        let mut out = Vec::new();
        while let Some(m) = s.message().await.unwrap() {
            out.push(m);
        }
        out
    }
    let pods = all(rt
        .stream_pod_sandboxes(StreamPodSandboxesRequest { filter: None })
        .await
        .unwrap()
        .into_inner())
    .await;
    let pods: Vec<String> = pods.into_iter().flat_map(|p| p.pod_sandboxes).map(|p| p.id).collect();
    assert_eq!(pods, vec![s.pod_id.clone()]);
    let filter = ContainerFilter {
        pod_sandbox_id: s.pod_id.clone(),
        ..Default::default()
    };
    let cs = all(rt
        .stream_containers(StreamContainersRequest {
            filter: Some(filter.clone()),
        })
        .await
        .unwrap()
        .into_inner())
    .await;
    let listed = rt
        .list_containers(ListContainersRequest { filter: Some(filter) })
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert_eq!(cs.into_iter().flat_map(|c| c.containers).collect::<Vec<_>>(), listed);
    let stats = all(rt
        .stream_container_stats(StreamContainerStatsRequest { filter: None })
        .await
        .unwrap()
        .into_inner())
    .await;
    let stats: Vec<_> = stats.into_iter().flat_map(|s| s.container_stats).collect();
    assert_eq!(stats.len(), 1);
    assert_eq!(stats[0].attributes.as_ref().unwrap().id, id);
    let pod_stats = all(rt
        .stream_pod_sandbox_stats(StreamPodSandboxStatsRequest { filter: None })
        .await
        .unwrap()
        .into_inner())
    .await;
    assert_eq!(pod_stats.iter().map(|p| p.pod_sandbox_stats.len()).sum::<usize>(), 1);
    let metrics = all(rt
        .stream_pod_sandbox_metrics(StreamPodSandboxMetricsRequest {})
        .await
        .unwrap()
        .into_inner())
    .await;
    let metrics: Vec<_> = metrics.into_iter().flat_map(|m| m.pod_sandbox_metrics).collect();
    assert_eq!(metrics.len(), 1);
    assert_eq!(metrics[0].pod_sandbox_id, s.pod_id);
    let imgs = all(images
        .stream_images(StreamImagesRequest { filter: None })
        .await
        .unwrap()
        .into_inner())
    .await;
    let listed = images
        .list_images(ListImagesRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .images;
    assert_eq!(imgs.into_iter().flat_map(|i| i.images).collect::<Vec<_>>(), listed);

    let st = rt.status(StatusRequest { verbose: false }).await.unwrap().into_inner();
    let names: Vec<&str> = st.runtime_handlers.iter().map(|h| h.name.as_str()).collect();
    let mut want = vec![""];
    want.extend(s.d.config.runtime.handlers.keys().map(String::as_str));
    assert_eq!(names, want);
    for h in &st.runtime_handlers {
        let f = h.features.unwrap();
        // berthd makes both itself (this kernel has mount_setattr and ID-mapped mounts).
        assert!(
            f.user_namespaces && f.recursive_read_only_mounts,
            "{h:?}: made by berthd, so advertised"
        );
    }
    let f = st.features.unwrap();
    assert!(f.supplemental_groups_policy && !f.user_namespaces_host_network);

    s.finish().await;
}

/// CheckpointContainer's refusals: unknown → NotFound, no or a relative location →
/// InvalidArgument; a CreateContainer naming a file that is no checkpoint archive → InvalidArgument;
/// and where CRIU cannot work on this host (`criu check` fails, as Debian 12's CRIU 3.17 does on
/// kernel 6.18) both a clear FailedPrecondition with CRIU's reason. A checkpoint written and
/// restored: clients::crictl_checkpoints_and_restores_a_container.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_says_what_criu_can_do_here() {
    use berth_proto::cri::CheckpointContainerRequest;
    require_root!();
    registry::require().await;
    let s = setup("").await;
    let mut rt = s.d.runtime().await.unwrap();
    let err = rt
        .checkpoint_container(CheckpointContainerRequest {
            container_id: "no-such-container".into(),
            location: "/tmp/x.tar".into(),
            timeout: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let id = s.run(container("ckpt", &s.image, &["sleep", "60"])).await;
    s.wait_state(&id, ContainerState::ContainerRunning).await;
    let err = rt
        .checkpoint_container(CheckpointContainerRequest {
            container_id: id.clone(),
            location: String::new(),
            timeout: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let err = rt
        .checkpoint_container(CheckpointContainerRequest {
            container_id: id.clone(),
            location: "relative/ckpt.tar".into(),
            timeout: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    // A file that is not a checkpoint archive, named as a container's image.
    let not_archive = s.d.dir.path().join("not-a-checkpoint.tar");
    std::fs::write(&not_archive, b"plain bytes").unwrap();
    let mut from_file = container("from-file", &s.image, &[]);
    from_file.image = Some(berth_proto::cri::ImageSpec {
        image: not_archive.display().to_string(),
        ..Default::default()
    });
    let archive = s.d.dir.path().join("ckpt.tar");
    let criu_works = std::process::Command::new("criu")
        .arg("check")
        .output()
        .is_ok_and(|o| o.status.success());
    if criu_works {
        let err = s.create(from_file).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains("checkpoint archive"), "{err:?}");
        // A checkpoint written and restored: clients::crictl_checkpoints_and_restores_a_container.
    } else {
        let err = rt
            .checkpoint_container(CheckpointContainerRequest {
                container_id: id.clone(),
                location: archive.display().to_string(),
                timeout: 0,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
        assert!(err.message().contains("CRIU"), "{err:?}");
        let err = s.create(from_file).await.unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
        berth_test::report_not_tested(
            "containers::checkpoint_says_what_criu_can_do_here (a checkpoint restored)",
            "`criu check` fails on this host, so no runtime can checkpoint here",
        );
    }
    assert!(!archive.exists());
    s.finish().await;
}
