//! Hostile CRI requests against a real berthd, as root: empty and huge fields, bad paths (`..`,
//! relative) in mounts and log paths, absurd resource values, unknown enum values, names that are
//! not names. Each must be refused with the code the CRI and containerd give, write nothing
//! outside berth's own directories (a canary directory the paths aim at stays as it was), leave
//! no pod or container behind, and leave the daemon answering.

use berth_proto::cri::{
    ContainerConfig, ContainerMetadata, CreateContainerRequest, Device, ExecSyncRequest, ImageSpec,
    LinuxContainerConfig, LinuxContainerResources, LinuxPodSandboxConfig, ListContainersRequest, ListPodSandboxRequest,
    Mount, PodSandboxConfig, PodSandboxMetadata, PortMapping, PullImageRequest, RunPodSandboxRequest, VersionRequest,
};
use berth_proto::tonic::Code;
use berth_test::{Daemon, registry, require_root};

const PARENT: &str = "/berth-test-hostile";

fn pod(name: &str, logs: &std::path::Path) -> PodSandboxConfig {
    PodSandboxConfig {
        log_directory: logs.display().to_string(),
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "hostile".into(),
            attempt: 0,
        }),
        hostname: "hostile".into(),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: PARENT.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn container(name: &str, image: &str) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: vec!["sleep".into(), "60".into()],
        ..Default::default()
    }
}

fn resources(adjust: impl FnOnce(&mut LinuxContainerResources)) -> Option<LinuxContainerConfig> {
    let mut r = LinuxContainerResources::default();
    adjust(&mut r);
    Some(LinuxContainerConfig {
        resources: Some(r),
        ..Default::default()
    })
}

fn listing(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_are_refused_with_the_right_code() {
    require_root!();
    registry::require().await;
    let d = Daemon::start().await.unwrap();
    let image = registry::image("busybox:latest");
    d.pull(&image).await;
    let logs = d.dir.path().join("logs");
    let canary = d.dir.path().join("canary");
    std::fs::create_dir_all(canary.join("dir")).unwrap();
    std::fs::write(canary.join("file"), b"canary").unwrap();
    let before = listing(&canary);
    let mut rt = d.runtime().await.unwrap();
    let mut im = d.images().await.unwrap();
    let pod_id = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod("target", &logs)),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;

    let mut pods: Vec<(&str, Option<PodSandboxConfig>, &str, Code)> = Vec::new();
    let mut with = |name: &'static str, adjust: &dyn Fn(&mut PodSandboxConfig), handler: &'static str, code| {
        let mut p = pod(name, &logs);
        adjust(&mut p);
        pods.push((name, Some(p), handler, code));
    };
    with(
        "no-name",
        &|p| p.metadata.as_mut().unwrap().name.clear(),
        "",
        Code::InvalidArgument,
    );
    with(
        "bad-hostname",
        &|p| p.hostname = "a/b\0c".into(),
        "",
        Code::InvalidArgument,
    );
    with(
        "long-hostname",
        &|p| p.hostname = "h".repeat(300),
        "",
        Code::InvalidArgument,
    );
    with("unknown-handler", &|_| {}, "no-such-handler", Code::NotFound);
    let port = |m: PortMapping| move |p: &mut PodSandboxConfig| p.port_mappings = vec![m.clone()];
    with(
        "port-too-big",
        &port(PortMapping {
            container_port: 70000,
            host_port: 8080,
            ..Default::default()
        }),
        "",
        Code::InvalidArgument,
    );
    with(
        "port-protocol-unknown",
        &port(PortMapping {
            protocol: 99,
            container_port: 80,
            host_port: 8081,
            ..Default::default()
        }),
        "",
        Code::InvalidArgument,
    );
    with(
        "port-host-ip-bad",
        &port(PortMapping {
            container_port: 80,
            host_port: 8082,
            host_ip: "not-an-ip".into(),
            ..Default::default()
        }),
        "",
        Code::InvalidArgument,
    );
    with(
        "namespace-mode-unknown",
        &|p| {
            p.linux.as_mut().unwrap().security_context = Some(berth_proto::cri::LinuxSandboxSecurityContext {
                namespace_options: Some(berth_proto::cri::NamespaceOption {
                    network: 42,
                    ..Default::default()
                }),
                ..Default::default()
            })
        },
        "",
        Code::InvalidArgument,
    );
    with(
        "sysctl-path",
        &|p| {
            p.linux
                .as_mut()
                .unwrap()
                .sysctls
                .insert("kernel/../../etc/passwd".into(), "1".into());
        },
        "",
        Code::InvalidArgument,
    );
    with(
        "cgroup-parent-escape",
        &|p| p.linux.as_mut().unwrap().cgroup_parent = "/../../escape".into(),
        "",
        Code::InvalidArgument,
    );
    with(
        "huge-name",
        &|p| p.metadata.as_mut().unwrap().name = "n".repeat(1 << 20),
        "",
        Code::InvalidArgument,
    );
    pods.push(("no-config", None, "", Code::InvalidArgument));

    let (mut tried, mut wrong) = (0, Vec::new());
    for (name, config, handler, code) in pods {
        let got = rt
            .run_pod_sandbox(RunPodSandboxRequest {
                config,
                runtime_handler: handler.into(),
            })
            .await;
        match got {
            Err(e) if e.code() == code => {}
            other => wrong.push(format!("RunPodSandbox {name}: want {code:?}, got {other:?}")),
        }
        tried += 1;
    }

    let n = std::cell::Cell::new(0);
    let ctr = |adjust: &dyn Fn(&mut ContainerConfig)| {
        n.set(n.get() + 1);
        let mut c = container(&format!("c{}", n.get()), &image);
        adjust(&mut c);
        c
    };
    let mount = |host: &str, ctr: &str| {
        let (h, c) = (host.to_string(), ctr.to_string());
        move |c2: &mut ContainerConfig| {
            c2.mounts = vec![Mount {
                host_path: h.clone(),
                container_path: c.clone(),
                ..Default::default()
            }]
        }
    };
    let canary_file = canary.join("file").display().to_string();
    let cases: Vec<(&str, Option<ContainerConfig>, &str, Code)> = vec![
        ("no config", None, &pod_id, Code::InvalidArgument),
        ("unknown pod", Some(ctr(&|_| {})), "no-such-pod", Code::NotFound),
        (
            "no name",
            Some(ctr(&|c| c.metadata = None)),
            &pod_id,
            Code::InvalidArgument,
        ),
        (
            "no image",
            Some(ctr(&|c| c.image = None)),
            &pod_id,
            Code::InvalidArgument,
        ),
        (
            "empty image",
            Some(ctr(&|c| c.image.as_mut().unwrap().image.clear())),
            &pod_id,
            Code::InvalidArgument,
        ),
        (
            "malformed image",
            Some(ctr(&|c| c.image.as_mut().unwrap().image = "UPPER::Case@@".into())),
            &pod_id,
            Code::InvalidArgument,
        ),
        (
            "image not pulled",
            Some(ctr(&|c| {
                c.image.as_mut().unwrap().image = "example.invalid/none:1".into()
            })),
            &pod_id,
            Code::NotFound,
        ),
        (
            "relative mount target",
            Some(ctr(&mount(&canary_file, "etc/x"))),
            &pod_id,
            Code::InvalidArgument,
        ),
        (
            "relative mount source",
            Some(ctr(&mount("canary/file", "/x"))),
            &pod_id,
            Code::InvalidArgument,
        ),
        (
            "mount target with '..'",
            Some(ctr(&mount(&canary_file, "/../../x"))),
            &pod_id,
            Code::InvalidArgument,
        ),
        (
            "huge name",
            Some(ctr(&|c| c.metadata.as_mut().unwrap().name = "n".repeat(1 << 20))),
            &pod_id,
            Code::InvalidArgument,
        ),
        (
            "control characters in the name",
            Some(ctr(&|c| c.metadata.as_mut().unwrap().name = "a\nb\u{7}".into())),
            &pod_id,
            Code::InvalidArgument,
        ),
        (
            "log path escaping the pod's log directory",
            Some(ctr(&|c| c.log_path = "../../escape.log".into())),
            &pod_id,
            Code::InvalidArgument,
        ),
        (
            "negative memory limit",
            Some(ctr(&|c| c.linux = resources(|r| r.memory_limit_in_bytes = -5))),
            &pod_id,
            Code::InvalidArgument,
        ),
        (
            "negative CPU quota",
            Some(ctr(&|c| c.linux = resources(|r| r.cpu_quota = -7))),
            &pod_id,
            Code::InvalidArgument,
        ),
        (
            "absurd oom_score_adj",
            Some(ctr(&|c| c.linux = resources(|r| r.oom_score_adj = 5000))),
            &pod_id,
            Code::InvalidArgument,
        ),
        (
            "missing device",
            Some(ctr(&|c| {
                c.devices = vec![Device {
                    host_path: "/dev/berth-no-such-device".into(),
                    container_path: "/dev/x".into(),
                    permissions: "rwm".into(),
                }]
            })),
            &pod_id,
            Code::NotFound,
        ),
        (
            "unknown stop signal",
            Some(ctr(&|c| c.stop_signal = 999)),
            &pod_id,
            Code::InvalidArgument,
        ),
    ];
    for (name, config, in_pod, code) in cases {
        let got = rt
            .create_container(CreateContainerRequest {
                pod_sandbox_id: in_pod.into(),
                config,
                sandbox_config: Some(pod("target", &logs)),
            })
            .await;
        match got {
            Err(e) if e.code() == code => {}
            other => wrong.push(format!("CreateContainer {name}: want {code:?}, got {other:?}")),
        }
        tried += 1;
    }

    let err = rt
        .exec_sync(ExecSyncRequest {
            container_id: "../../etc".into(),
            cmd: vec!["true".into()],
            timeout: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    tried += 1;
    for (name, reference, code) in [
        ("empty reference", "", Code::InvalidArgument),
        ("malformed reference", "UPPER::Case@@", Code::InvalidArgument),
        ("bad digest", "busybox@sha256:nothex", Code::InvalidArgument),
    ] {
        let err = im
            .pull_image(PullImageRequest {
                image: Some(ImageSpec {
                    image: reference.into(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), code, "PullImage {name}: {err:?}");
        tried += 1;
    }

    assert!(wrong.is_empty(), "{wrong:#?}");
    // Alive, nothing made, nothing outside touched.
    rt.version(VersionRequest::default()).await.unwrap();
    let pods = rt
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(
        pods.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
        [pod_id.as_str()]
    );
    let cs = rt
        .list_containers(ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert!(cs.is_empty(), "{cs:?}");
    assert_eq!(listing(&canary), before);
    assert_eq!(std::fs::read(canary.join("file")).unwrap(), b"canary");
    assert!(!d.dir.path().join("escape.log").exists());
    assert!(tried >= 30, "{tried} hostile requests");
    eprintln!("hostile requests: {tried} refused with the right code");
    drop(rt);
    drop(d);
    for ctl in std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
        let _ = std::fs::remove_dir(ctl.path().join(PARENT.trim_start_matches('/')));
    }
}
