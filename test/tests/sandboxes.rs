//! Pod sandboxes for real, as root: namespaces pinned without a pause process, per-pod files and
//! /dev/shm, name reservation, status and list filters, stop and remove leaving nothing behind,
//! and sandboxes surviving a daemon restart.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

use berth_proto::cri::{
    DnsConfig, LinuxPodSandboxConfig, LinuxSandboxSecurityContext, ListPodSandboxRequest, NamespaceMode,
    NamespaceOption, PodSandboxConfig, PodSandboxFilter, PodSandboxMetadata, PodSandboxState, PodSandboxStateValue,
    PodSandboxStatusRequest, RemovePodSandboxRequest, RunPodSandboxRequest, StopPodSandboxRequest,
};
use berth_proto::tonic::Code;
use berth_test::{Daemon, mounts_under, require_root};

fn pod(name: &str, labels: &[(&str, &str)]) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        annotations: HashMap::from([("a".to_string(), "b".to_string())]),
        dns_config: Some(DnsConfig {
            servers: vec!["10.96.0.10".into()],
            searches: vec!["default.svc.cluster.local".into()],
            options: vec!["ndots:5".into()],
        }),
        ..Default::default()
    }
}

fn host_network(mut cfg: PodSandboxConfig) -> PodSandboxConfig {
    cfg.linux = Some(LinuxPodSandboxConfig {
        security_context: Some(LinuxSandboxSecurityContext {
            namespace_options: Some(NamespaceOption {
                network: NamespaceMode::Node as i32,
                ipc: NamespaceMode::Node as i32,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    cfg
}

async fn run(d: &Daemon, cfg: PodSandboxConfig) -> Result<String, berth_proto::tonic::Status> {
    let mut rt = d.runtime().await.unwrap();
    rt.run_pod_sandbox(RunPodSandboxRequest {
        config: Some(cfg),
        runtime_handler: String::new(),
    })
    .await
    .map(|r| r.into_inner().pod_sandbox_id)
}

fn pod_dir(d: &Daemon, id: &str) -> std::path::PathBuf {
    d.config.state.join("pods").join(id)
}

fn nsenter(ns: &str, file: &Path, cmd: &[&str]) -> String {
    let out = std::process::Command::new("nsenter")
        .arg(format!("--{ns}={}", file.display()))
        .args(cmd)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nsenter {cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_lifecycle_leaves_nothing_behind() {
    require_root!();
    let d = Daemon::start().await.unwrap();
    let id = run(&d, pod("web-0", &[("app", "web")])).await.unwrap();
    assert_eq!(id.len(), 64);
    let dir = pod_dir(&d, &id);

    // Namespaces: new ones, pinned by bind mounts, no process holding them.
    for kind in ["net", "ipc", "uts"] {
        let pin = dir.join("ns").join(kind);
        let host = std::fs::metadata(format!("/proc/self/ns/{kind}")).unwrap().ino();
        assert_ne!(
            std::fs::metadata(&pin).unwrap().ino(),
            host,
            "{kind} namespace is the pod's own"
        );
    }
    assert_eq!(nsenter("uts", &dir.join("ns/uts"), &["hostname"]).trim(), "web-0");
    let links = nsenter("net", &dir.join("ns/net"), &["ip", "-o", "link"]);
    assert_eq!(links.lines().count(), 2, "lo and the pod's eth0: {links}");
    assert!(links.contains(" eth0@"), "{links}");
    assert_eq!(std::fs::read_to_string(dir.join("hostname")).unwrap(), "web-0\n");
    let resolv = std::fs::read_to_string(dir.join("resolv.conf")).unwrap();
    assert_eq!(
        resolv,
        "search default.svc.cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"
    );
    assert!(
        std::fs::read_to_string(dir.join("hosts"))
            .unwrap()
            .contains("localhost")
    );
    let shm = nix::sys::statfs::statfs(&dir.join("shm")).unwrap();
    assert_eq!(
        shm.filesystem_type(),
        nix::sys::statfs::TMPFS_MAGIC,
        "/dev/shm is a tmpfs"
    );
    assert_eq!(
        shm.blocks() * shm.block_size() as u64,
        d.config.pod.shm_size,
        "sized /dev/shm"
    );
    assert_eq!(mounts_under(&dir).len(), 5, "net, ipc, uts, pid pins and shm");
    // The pod's shared PID namespace (the CRI default, POD) is held by berth's tiny init; the
    // container tests look at it from inside.
    assert!(berth_cni::ns::is_pinned(&dir.join("ns/pid")));

    // Status carries what kubelet reads.
    let mut rt = d.runtime().await.unwrap();
    let st = rt
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: id.clone(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let s = st.status.unwrap();
    assert_eq!(s.id, id);
    assert_eq!(s.state, PodSandboxState::SandboxReady as i32);
    assert_eq!(s.metadata.unwrap().name, "web-0");
    assert!(s.created_at > 0);
    assert_eq!(s.labels["app"], "web");
    assert_eq!(s.annotations["a"], "b");
    assert_eq!(
        s.linux.unwrap().namespaces.unwrap().options.unwrap().network,
        NamespaceMode::Pod as i32
    );
    assert!(st.info.contains_key("info"));
    // A short ID prefix works as crictl uses it.
    let st = rt
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: id[..13].to_string(),
            verbose: false,
        })
        .await
        .unwrap();
    assert_eq!(st.into_inner().status.unwrap().id, id);

    // Stop: NotReady, network gone, idempotent.
    for _ in 0..2 {
        rt.stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: id.clone(),
        })
        .await
        .unwrap();
    }
    let s = rt
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: id.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(s.state, PodSandboxState::SandboxNotready as i32);
    assert!(!dir.join("ns/net").exists(), "network namespace released on stop");

    // Remove: nothing left; idempotent; status then NotFound.
    for _ in 0..2 {
        rt.remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: id.clone(),
        })
        .await
        .unwrap();
    }
    assert!(!dir.exists(), "pod dir removed");
    assert!(
        mounts_under(&d.config.state).is_empty(),
        "no mounts left: {:?}",
        mounts_under(&d.config.state)
    );
    let err = rt
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: id.clone(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    // The name is free again.
    let again = run(&d, pod("web-0", &[])).await.unwrap();
    rt.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: again })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_are_unique_and_bad_requests_are_refused() {
    require_root!();
    let d = Daemon::start().await.unwrap();
    let id = run(&d, pod("dup", &[])).await.unwrap();
    let err = run(&d, pod("dup", &[])).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    assert!(err.message().contains(&id), "names the owner: {}", err.message());
    // Another attempt of the same pod is another name.
    let mut next = pod("dup", &[]);
    next.metadata.as_mut().unwrap().attempt = 1;
    let id2 = run(&d, next).await.unwrap();

    let mut bad = pod("bad-host", &[]);
    bad.hostname = "not_a_hostname".into();
    let err = run(&d, bad).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let err = run(&d, PodSandboxConfig::default()).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let mut rt = d.runtime().await.unwrap();
    let err = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod("handler", &[])),
            runtime_handler: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "unknown runtime handler: {err:?}");
    // Failed runs leave no pod dir and no mount, and release their names.
    let pods = d.config.state.join("pods");
    let dirs: Vec<_> = std::fs::read_dir(&pods)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(dirs.len(), 2, "only the two good pods: {dirs:?}");
    assert_eq!(mounts_under(&pods).len(), 10);
    let mut ok = pod("bad-host", &[]);
    ok.hostname = "fine".into();
    let id3 = run(&d, ok).await.unwrap();
    for id in [id, id2, id3] {
        rt.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id })
            .await
            .unwrap();
    }
    assert!(mounts_under(&pods).is_empty());
    // Unknown IDs: stop/remove succeed, status is NotFound.
    rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: "f00".into(),
    })
    .await
    .unwrap();
    rt.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: "f00".into(),
    })
    .await
    .unwrap();
    let err = rt
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: "f00".into(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_network_pods_share_the_node() {
    require_root!();
    let d = Daemon::start().await.unwrap();
    let id = run(&d, host_network(pod("hostnet", &[]))).await.unwrap();
    let dir = pod_dir(&d, &id);
    assert!(!dir.join("ns/net").exists() && !dir.join("ns/uts").exists() && !dir.join("ns/ipc").exists());
    assert!(!dir.join("shm").exists(), "host IPC uses the node's /dev/shm");
    let host = nix::unistd::gethostname().unwrap().to_string_lossy().to_string();
    assert_eq!(std::fs::read_to_string(dir.join("hostname")).unwrap().trim(), host);
    let mut rt = d.runtime().await.unwrap();
    rt.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id })
        .await
        .unwrap();
    assert!(!dir.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_filters_and_restart() {
    require_root!();
    let mut d = Daemon::start().await.unwrap();
    let a = run(&d, pod("a", &[("tier", "front"), ("x", "1")])).await.unwrap();
    let b = run(&d, pod("b", &[("tier", "back")])).await.unwrap();
    let c = run(&d, pod("c", &[("tier", "front")])).await.unwrap();
    let mut rt = d.runtime().await.unwrap();
    rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: c.clone(),
    })
    .await
    .unwrap();

    async fn ids(d: &Daemon, filter: Option<PodSandboxFilter>) -> Vec<String> {
        let mut rt = d.runtime().await.unwrap();
        let mut v: Vec<String> = rt
            .list_pod_sandbox(ListPodSandboxRequest { filter })
            .await
            .unwrap()
            .into_inner()
            .items
            .into_iter()
            .map(|s| s.id)
            .collect();
        v.sort();
        v
    }
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(ids(&d, None).await, sorted(vec![a.clone(), b.clone(), c.clone()]));
    let ready = Some(PodSandboxFilter {
        state: Some(PodSandboxStateValue {
            state: PodSandboxState::SandboxReady as i32,
        }),
        ..Default::default()
    });
    assert_eq!(ids(&d, ready.clone()).await, sorted(vec![a.clone(), b.clone()]));
    let front = Some(PodSandboxFilter {
        label_selector: HashMap::from([("tier".to_string(), "front".to_string())]),
        ..Default::default()
    });
    assert_eq!(ids(&d, front).await, sorted(vec![a.clone(), c.clone()]));
    let by_id = Some(PodSandboxFilter {
        id: b[..10].to_string(),
        ..Default::default()
    });
    assert_eq!(ids(&d, by_id).await, vec![b.clone()]);

    // A restart keeps every sandbox, its state and its namespaces.
    drop(rt);
    let before = ids(&d, ready.clone()).await;
    d.restart().await.unwrap();
    assert_eq!(ids(&d, None).await.len(), 3);
    assert_eq!(ids(&d, ready).await, before);
    assert!(berth_cni::ns::is_pinned(&pod_dir(&d, &a).join("ns/net")));
    let err = run(&d, pod("a", &[])).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "names are reserved across restarts");
    let mut rt = d.runtime().await.unwrap();
    for id in [a, b, c] {
        rt.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id })
            .await
            .unwrap();
    }
    assert!(mounts_under(&d.config.state).is_empty());
}
