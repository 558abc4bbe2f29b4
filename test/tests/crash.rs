//! kill -9 of the real berthd binary mid-way: after a restart every pod and container is there in
//! the right state, running containers kept running (and logging, through berth-shim), and the
//! stores are consistent.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_proto::cri::image_service_client::ImageServiceClient;
use berth_proto::cri::runtime_service_client::RuntimeServiceClient;
use berth_proto::cri::{
    ContainerConfig, ContainerMetadata, ContainerState, CreateContainerRequest, ImageSpec, LinuxContainerConfig,
    LinuxContainerSecurityContext, LinuxPodSandboxConfig, ListContainersRequest, ListImagesRequest,
    ListPodSandboxRequest, NamespaceMode, NamespaceOption, PodSandboxConfig, PodSandboxMetadata, PodSandboxState,
    PullImageRequest, RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest,
};
use berth_test::{berthd_bin, connect, mounts_under, registry, require_root, scratch_base, wait_no_processes};

struct Berthd {
    child: Child,
}

impl Berthd {
    async fn start(dir: &Path) -> Berthd {
        Berthd::start_armed(dir, None).await
    }

    /// berthd under `dir`, with the crash point `armed` (`BERTH_CRASH_AT`) if one is given.
    async fn start_armed(dir: &Path, armed: Option<&str>) -> Berthd {
        let socket = dir.join("state/berth.sock");
        let mut cmd = Command::new(berthd_bin());
        cmd.env_remove(berth_image::crash::ENV);
        if let Some(point) = armed {
            cmd.env(berth_image::crash::ENV, point);
        }
        let child = cmd
            .arg("--config")
            .arg(berth_test::write_test_config(dir))
            .arg("--root")
            .arg(dir.join("root"))
            .arg("--state")
            .arg(dir.join("state"))
            .arg("--socket")
            .arg(&socket)
            .args(["--log-level", "warn"])
            .env_remove("BERTH_CONFIG")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let t0 = Instant::now();
        while connect(&socket).await.is_err() {
            assert!(t0.elapsed() < Duration::from_secs(20), "berthd did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Berthd { child }
    }

    fn kill9(&mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
    }
}

impl Drop for Berthd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pid_ns_container() -> Option<LinuxContainerConfig> {
    Some(LinuxContainerConfig {
        security_context: Some(LinuxContainerSecurityContext {
            namespace_options: Some(NamespaceOption {
                pid: NamespaceMode::Container as i32,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// Pulls the test registry's busybox through the daemon at `socket`; its reference.
async fn pull_busybox(socket: &Path) -> String {
    let image = registry::image("busybox:latest");
    let mut im = ImageServiceClient::new(connect(socket).await.unwrap());
    im.pull_image(PullImageRequest {
        image: Some(ImageSpec {
            image: image.clone(),
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    image
}

fn lines(p: &PathBuf) -> usize {
    std::fs::read_to_string(p).map(|t| t.lines().count()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_way_loses_nothing() {
    require_root!();
    registry::require().await;
    let dir = tempfile::Builder::new()
        .prefix("crash-")
        .tempdir_in(scratch_base())
        .unwrap();
    let _cleanup = Cleanup(dir.path().to_path_buf());
    let socket = dir.path().join("state/berth.sock");
    let logs = dir.path().join("logs");
    let mut d = Berthd::start(dir.path()).await;
    let image = pull_busybox(&socket).await;
    let mut rt = RuntimeServiceClient::new(connect(&socket).await.unwrap());
    let pod_cfg = PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: "crashy".into(),
            uid: "uid-crashy".into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: "crashy".into(),
        log_directory: logs.display().to_string(),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: "/berth-test".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let pod = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod_cfg.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    let mk = |name: &str, cmd: &[&str]| ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: image.clone(),
            ..Default::default()
        }),
        command: cmd.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}.log"),
        linux: pid_ns_container(),
        ..Default::default()
    };
    let mut ids = vec![];
    for (name, cmd) in [
        (
            "ticker",
            vec![
                "sh",
                "-c",
                "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.05; done",
            ],
        ),
        ("idle", vec!["sleep", "1000"]),
    ] {
        let id = rt
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod.clone(),
                config: Some(mk(name, &cmd)),
                sandbox_config: Some(pod_cfg.clone()),
            })
            .await
            .unwrap()
            .into_inner()
            .container_id;
        ids.push(id);
    }
    rt.start_container(StartContainerRequest {
        container_id: ids[0].clone(),
    })
    .await
    .unwrap();
    let log = logs.join("ticker.log");
    let t0 = Instant::now();
    while lines(&log) < 3 {
        assert!(t0.elapsed() < Duration::from_secs(10), "ticker never logged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(rt);

    // kill -9: no chance to clean up anything.
    d.kill9();
    let at_kill = lines(&log);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        lines(&log) > at_kill,
        "the container keeps running and logging while berthd is dead"
    );

    let _d = Berthd::start(dir.path()).await;
    let mut rt = RuntimeServiceClient::new(connect(&socket).await.unwrap());
    let pods = rt
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(pods.len(), 1);
    assert_eq!(pods[0].state, PodSandboxState::SandboxReady as i32);
    let cs = rt
        .list_containers(ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers;
    let state = |id: &str| cs.iter().find(|c| c.id == id).map(|c| c.state);
    assert_eq!(state(&ids[0]), Some(ContainerState::ContainerRunning as i32));
    assert_eq!(state(&ids[1]), Some(ContainerState::ContainerCreated as i32));
    let mut im = ImageServiceClient::new(connect(&socket).await.unwrap());
    assert_eq!(
        im.list_images(ListImagesRequest::default())
            .await
            .unwrap()
            .into_inner()
            .images
            .len(),
        1
    );
    // The created container still starts; then everything goes away cleanly.
    rt.start_container(StartContainerRequest {
        container_id: ids[1].clone(),
    })
    .await
    .unwrap();
    rt.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: pod })
        .await
        .unwrap();
    let ticks: Vec<u64> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(" stdout F tick ").and_then(|(_, n)| n.parse().ok()))
        .collect();
    for (i, n) in ticks.iter().enumerate() {
        assert_eq!(*n, i as u64, "no log line lost across the crash");
    }
    assert!(
        mounts_under(dir.path()).is_empty(),
        "mounts left behind: {:?}",
        mounts_under(dir.path())
    );
    wait_no_processes(&dir.path().join("state")).await;
    for ctl in std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
        let _ = std::fs::remove_dir(ctl.path().join("berth-test"));
    }
}

/// A CreateContainer whose record never reached the disk (berthd killed before it): at the next
/// start its bundle — rootfs mount, staged host mounts (a recursive read-only bind, an image
/// volume) — and its snapshots are removed, and the name is free again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unrecorded_container_leaves_nothing_after_a_restart() {
    require_root!();
    registry::require().await;
    let dir = tempfile::Builder::new()
        .prefix("crash-")
        .tempdir_in(scratch_base())
        .unwrap();
    let _cleanup = Cleanup(dir.path().to_path_buf());
    let socket = dir.path().join("state/berth.sock");
    let mut d = Berthd::start(dir.path()).await;
    let image = pull_busybox(&socket).await;
    let mut rt = RuntimeServiceClient::new(connect(&socket).await.unwrap());
    let pod_cfg = PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: "unrecorded".into(),
            uid: "uid-unrecorded".into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: "/berth-test".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let pod = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod_cfg.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    let host = dir.path().join("host");
    std::fs::create_dir_all(&host).unwrap();
    let cfg = ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: "c".into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: image.clone(),
            ..Default::default()
        }),
        command: vec!["true".into()],
        mounts: vec![
            berth_proto::cri::Mount {
                container_path: "/host".into(),
                host_path: host.display().to_string(),
                readonly: true,
                recursive_read_only: true,
                ..Default::default()
            },
            berth_proto::cri::Mount {
                container_path: "/iv".into(),
                image: Some(ImageSpec {
                    image: image.clone(),
                    ..Default::default()
                }),
                readonly: true,
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    let create = CreateContainerRequest {
        pod_sandbox_id: pod.clone(),
        config: Some(cfg),
        sandbox_config: Some(pod_cfg),
    };
    let id = rt
        .create_container(create.clone())
        .await
        .unwrap()
        .into_inner()
        .container_id;
    let bundle = dir.path().join("state/containers").join(&id);
    let snapshots = dir.path().join("root/image/overlay/snapshots");
    let owned = |p: &Path| mounts_under(p).len();
    assert_eq!(
        owned(&bundle),
        3,
        "rootfs, the staged bind and the image volume: {:?}",
        mounts_under(&bundle)
    );
    assert!(snapshots.join(&id).is_dir() && snapshots.join(format!("{id}-iv1")).is_dir());
    // As if berthd had died before the record was written.
    d.kill9();
    std::fs::remove_file(dir.path().join("root/containers").join(format!("{id}.json"))).unwrap();
    let d = Berthd::start(dir.path()).await;
    assert!(mounts_under(&bundle).is_empty(), "{:?}", mounts_under(&bundle));
    assert!(!bundle.exists());
    assert!(!snapshots.join(&id).exists() && !snapshots.join(format!("{id}-iv1")).exists());
    // The name is free: the same container can be created again.
    let mut rt = RuntimeServiceClient::new(connect(&socket).await.unwrap());
    rt.create_container(create).await.unwrap();
    rt.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: pod })
        .await
        .unwrap();
    drop(d);
    assert!(mounts_under(dir.path()).is_empty(), "{:?}", mounts_under(dir.path()));
}

/// Ends what the daemons under a directory left, even when the test fails half-way.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        berth_test::cleanup_network_of(&self.0);
        berth_test::cleanup_dir(&self.0);
    }
}

// ---- crash points -----------------------------------------------------------------------------

const POINTS_PARENT: &str = "/berth-test-crash-points";

/// A whole pod life through the CRI as kubelet drives it — pull, run the pod, create, start, stop
/// and remove a container, remove the pod, remove the image — stopping at the first call that
/// fails (berthd killed under it): which call that was, and why.
async fn whole_life(socket: &Path, logs: &Path) -> Result<(), String> {
    use berth_proto::cri::{RemoveContainerRequest, RemoveImageRequest, StopContainerRequest};
    let ch = connect(socket).await.map_err(|e| format!("connect: {e}"))?;
    let (mut im, mut rt) = (ImageServiceClient::new(ch.clone()), RuntimeServiceClient::new(ch));
    let at = |call: &'static str| move |s: berth_proto::tonic::Status| format!("{call}: {s}");
    let image = registry::image("busybox:latest");
    let spec = Some(ImageSpec {
        image: image.clone(),
        ..Default::default()
    });
    im.pull_image(PullImageRequest {
        image: spec.clone(),
        ..Default::default()
    })
    .await
    .map_err(at("PullImage"))?;
    let pod_cfg = points_pod(logs);
    let pod = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod_cfg.clone()),
            runtime_handler: String::new(),
        })
        .await
        .map_err(at("RunPodSandbox"))?
        .into_inner()
        .pod_sandbox_id;
    let config = ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: "sleeper".into(),
            attempt: 0,
        }),
        image: spec.clone(),
        command: vec!["sleep".into(), "1000".into()],
        log_path: "sleeper.log".into(),
        linux: pid_ns_container(),
        ..Default::default()
    };
    let id = rt
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(config),
            sandbox_config: Some(pod_cfg),
        })
        .await
        .map_err(at("CreateContainer"))?
        .into_inner()
        .container_id;
    rt.start_container(StartContainerRequest {
        container_id: id.clone(),
    })
    .await
    .map_err(at("StartContainer"))?;
    rt.stop_container(StopContainerRequest {
        container_id: id.clone(),
        timeout: 0,
    })
    .await
    .map_err(at("StopContainer"))?;
    rt.remove_container(RemoveContainerRequest { container_id: id })
        .await
        .map_err(at("RemoveContainer"))?;
    rt.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: pod })
        .await
        .map_err(at("RemovePodSandbox"))?;
    im.remove_image(RemoveImageRequest { image: spec })
        .await
        .map_err(at("RemoveImage"))?;
    Ok(())
}

fn points_pod(logs: &Path) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: "crash-point".into(),
            uid: "uid-crash-point".into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: "crash-point".into(),
        log_directory: logs.display().to_string(),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: POINTS_PARENT.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// After a restart: every pod answers its status, every container berthd calls running runs (an
/// exec in it succeeds), and everything can be removed — pods, then images.
async fn check_and_clear(socket: &Path, point: &str) {
    use berth_proto::cri::{ExecSyncRequest, PodSandboxStatusRequest, RemoveImageRequest};
    let ch = connect(socket).await.unwrap();
    let (mut im, mut rt) = (ImageServiceClient::new(ch.clone()), RuntimeServiceClient::new(ch));
    let cs = rt
        .list_containers(ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers;
    for c in cs.iter().filter(|c| c.state == ContainerState::ContainerRunning as i32) {
        let out = rt
            .exec_sync(ExecSyncRequest {
                container_id: c.id.clone(),
                cmd: vec!["echo".into(), "alive".into()],
                timeout: 10,
            })
            .await;
        assert!(
            out.as_ref().is_ok_and(|o| o.get_ref().stdout == b"alive\n"),
            "{point}: container {} is reported running but does not answer: {out:?}",
            c.id
        );
    }
    let pods = rt
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    for p in pods {
        rt.pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: p.id.clone(),
            verbose: false,
        })
        .await
        .unwrap_or_else(|e| panic!("{point}: pod {} listed but its status fails: {e}", p.id));
        rt.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: p.id })
            .await
            .unwrap_or_else(|e| panic!("{point}: removing the pod after the restart: {e}"));
    }
    let images = im
        .list_images(ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images;
    for i in images {
        im.remove_image(RemoveImageRequest {
            image: Some(ImageSpec {
                image: i.id,
                ..Default::default()
            }),
        })
        .await
        .unwrap_or_else(|e| panic!("{point}: removing an image after the restart: {e}"));
    }
}

/// What a node with nothing on it may still hold under `dir`: nothing, but empty directories.
fn leftovers(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = mounts_under(dir).into_iter().map(|m| format!("mount {m}")).collect();
    for sub in [
        "state/containers",
        "state/pods",
        "root/pods",
        "root/containers",
        "root/image/overlay/snapshots",
        "root/image/overlay/layers",
    ] {
        for e in std::fs::read_dir(dir.join(sub)).into_iter().flatten().flatten() {
            out.push(format!("{sub}/{}", e.file_name().to_string_lossy()));
        }
    }
    for range in std::fs::read_dir(dir.join("state/network/ipam"))
        .into_iter()
        .flatten()
        .flatten()
    {
        for e in std::fs::read_dir(range.path()).into_iter().flatten().flatten() {
            if e.file_name() != "last" {
                out.push(format!("IP address {}", e.file_name().to_string_lossy()));
            }
        }
    }
    let config = std::fs::read_to_string(dir.join("config.toml")).unwrap_or_default();
    if let Some(bridge) = config
        .lines()
        .find_map(|l| l.strip_prefix("name = ").map(|n| n.trim_matches('"').to_string()))
    {
        for port in std::fs::read_dir(format!("/sys/class/net/{bridge}/brif"))
            .into_iter()
            .flatten()
            .flatten()
        {
            out.push(format!("veth {} on {bridge}", port.file_name().to_string_lossy()));
        }
    }
    for ctl in std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
        let parent = ctl.path().join(POINTS_PARENT.trim_start_matches('/'));
        for e in std::fs::read_dir(&parent).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                out.push(format!("cgroup {}", e.path().display()));
            }
        }
    }
    out
}

/// berthd killed (SIGKILL, from inside: `BERTH_CRASH_AT`) at every crash point of a pod's life in
/// turn, each in a node of its own: it must die there; restarted, every pod and running container
/// it reports must be real, and all of it removable; a whole pod life must then succeed again
/// (every interrupted call retried), and leave no mount, snapshot, layer, bundle, record, IP
/// address, veth, cgroup or process behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_crash_point_leaves_a_consistent_node() {
    require_root!();
    registry::require().await;
    let mut tried = 0;
    for &point in berth_image::crash::POINTS {
        let dir = tempfile::Builder::new()
            .prefix("crash-point-")
            .tempdir_in(scratch_base())
            .unwrap();
        let _cleanup = Cleanup(dir.path().to_path_buf());
        let socket = dir.path().join("state/berth.sock");
        let logs = dir.path().join("logs");
        let mut d = Berthd::start_armed(dir.path(), Some(point)).await;
        let failed = whole_life(&socket, &logs).await;
        assert!(
            failed.is_err(),
            "crash point {point} was never reached in a pod's whole life"
        );
        let t0 = Instant::now();
        let status = loop {
            if let Some(s) = d.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "{point}: berthd did not die ({failed:?})"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        use std::os::unix::process::ExitStatusExt as _;
        assert_eq!(
            status.signal(),
            Some(9),
            "{point}: berthd ended otherwise: {status:?} ({failed:?})"
        );
        drop(d);

        let d = Berthd::start(dir.path()).await;
        check_and_clear(&socket, point).await;
        if let Err(e) = whole_life(&socket, &logs).await {
            panic!("{point}: a whole pod life after the restart failed at {e}");
        }
        drop(d);
        wait_no_processes(&dir.path().join("state")).await;
        let left = leftovers(dir.path());
        assert!(left.is_empty(), "{point}: left behind: {left:#?}");
        tried += 1;
    }
    for ctl in std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
        let _ = std::fs::remove_dir(ctl.path().join(POINTS_PARENT.trim_start_matches('/')));
    }
    eprintln!("crash points: {tried} tried, each reached, restarted and checked");
}
