//! Resources and stats from real containers (root): the cgroup limits a container starts with,
//! UpdateContainerResources changing them live, and the stats and metrics RPCs moving when
//! containers burn CPU, fill memory, write to their rootfs and send packets.

mod support;

use std::time::{Duration, Instant};

use berth_proto::cri::{
    ContainerState, ContainerStatsFilter, ContainerStatsRequest, IoUsage, LinuxContainerResources,
    ListContainerStatsRequest, ListMetricDescriptorsRequest, ListPodSandboxMetricsRequest, ListPodSandboxStatsRequest,
    PodSandboxStatsFilter, PodSandboxStatsRequest, PodSandboxStatusRequest, PsiStats, StopContainerRequest,
    UpdateContainerResourcesRequest, UpdatePodSandboxResourcesRequest,
};
use berth_proto::tonic::Code;
use berth_test::{registry, require_root};
use support::{Pod, container};

const CGROUP_PARENT: &str = "/berth-test-secctx-res";

/// A cgroup control file under `parent`: `rel/v1` in `controller`'s hierarchy (v1), or `rel/v2`.
fn cg_file(parent: &str, rel: &str, controller: &str, v1: &str, v2: &str) -> String {
    let rel = format!("{}/{rel}", parent.trim_start_matches('/'));
    let p = if unified() {
        format!("/sys/fs/cgroup/{rel}/{v2}")
    } else {
        format!("/sys/fs/cgroup/{controller}/{rel}/{v1}")
    };
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{p}: {e}"))
        .trim()
        .to_string()
}

/// A cgroup control file of container `id` (under this suite's parent).
fn cg(id: &str, controller: &str, v1: &str, v2: &str) -> String {
    cg_file(CGROUP_PARENT, id, controller, v1, v2)
}

fn unified() -> bool {
    std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// (quota, period) of container `id`.
fn cpu_max(id: &str) -> (String, String) {
    if unified() {
        let v = cg(id, "", "", "cpu.max");
        let (q, p) = v.split_once(' ').unwrap();
        (q.to_string(), p.to_string())
    } else {
        (
            cg(id, "cpu", "cpu.cfs_quota_us", ""),
            cg(id, "cpu", "cpu.cfs_period_us", ""),
        )
    }
}

/// PSI in a stats answer: present, with `some` readings, on cgroup v2; absent on v1.
fn check_pressure(what: &str, cpu: Option<&PsiStats>, memory: Option<&PsiStats>, io: Option<&IoUsage>) {
    if unified() {
        for (r, p) in [
            ("cpu", cpu),
            ("memory", memory),
            ("io", io.and_then(|i| i.psi.as_ref())),
        ] {
            assert!(
                p.is_some_and(|p| p.some.is_some()),
                "{what} {r} pressure on cgroup v2: {p:?}"
            );
        }
        assert!(io.unwrap().timestamp > 0);
    } else {
        assert_eq!(
            (cpu, memory, io),
            (None, None, None),
            "{what}: no pressure on cgroup v1"
        );
    }
}

fn memory_limit(id: &str) -> String {
    cg(id, "memory", "memory.limit_in_bytes", "memory.max")
}

/// Polls `f` until it gives Some, failing after a minute (a generous bound, not a timing check).
async fn eventually<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "never: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const RESIZE_PARENT: &str = "/berth-test-pod-resize";

/// A control file of the pod cgroup RESIZE_PARENT (`rel` below it; "." for the pod's own).
fn pod_cg(rel: &str, controller: &str, v1: &str, v2: &str) -> String {
    cg_file(RESIZE_PARENT, rel, controller, v1, v2)
}

/// In-place pod resize as kubelet 1.35+ sends it: UpdatePodSandboxResources with the containers'
/// new sum and the pod overhead; their total lands in the running pod's own cgroup, and the pod's
/// recorded config follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_resize_reaches_the_pod_cgroup() {
    require_root!();
    registry::require().await;
    let p = Pod::start(RESIZE_PARENT, |_| {}, |_| {}).await;
    let mut rt = p.d.runtime().await.unwrap();
    let app = p.create(container("app", &p.image, "sleep 1000")).await.unwrap();
    p.start_container(&app).await.unwrap();
    p.wait_state(&app, ContainerState::ContainerRunning).await;

    let resize = |mem: i64, quota: i64| UpdatePodSandboxResourcesRequest {
        pod_sandbox_id: p.id.clone(),
        resources: Some(LinuxContainerResources {
            cpu_shares: 512,
            cpu_quota: quota,
            cpu_period: 100_000,
            memory_limit_in_bytes: mem,
            ..Default::default()
        }),
        overhead: Some(LinuxContainerResources {
            cpu_shares: 10,
            memory_limit_in_bytes: 1 << 20,
            ..Default::default()
        }),
    };
    rt.update_pod_sandbox_resources(resize(64 << 20, 50_000)).await.unwrap();
    let memory = || pod_cg(".", "memory", "memory.limit_in_bytes", "memory.max");
    assert_eq!(memory(), (65u64 << 20).to_string(), "the sum plus the overhead");
    if unified() {
        assert_eq!(pod_cg(".", "", "", "cpu.max"), "50000 100000");
        // 522 shares as a v2 weight (kubelet's formula).
        assert_eq!(pod_cg(".", "", "", "cpu.weight"), "60");
    } else {
        assert_eq!(pod_cg(".", "cpu", "cpu.cfs_quota_us", ""), "50000");
        assert_eq!(pod_cg(".", "cpu", "cpu.cfs_period_us", ""), "100000");
        assert_eq!(pod_cg(".", "cpu", "cpu.shares", ""), "522");
    }
    // Shrunk again (kubelet resizes containers first, then the pod): the cgroup follows.
    rt.update_pod_sandbox_resources(resize(32 << 20, 20_000)).await.unwrap();
    assert_eq!(memory(), (33u64 << 20).to_string());
    // The pod's record has the new totals (crictl inspectp shows them).
    let st = rt
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: p.id.clone(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let info: serde_json::Value = serde_json::from_str(&st.info["info"]).unwrap();
    assert_eq!(
        info["config"]["linux"]["resources"]["memory_limit_in_bytes"],
        32 << 20,
        "{info}"
    );
    assert_eq!(info["config"]["linux"]["overhead"]["cpu_shares"], 10);
    // The container's own limit is untouched (none): this call is about the pod.
    let own = pod_cg(&app, "memory", "memory.limit_in_bytes", "memory.max");
    assert!(
        own == "max" || own.parse::<u64>().is_ok_and(|v| v > 1 << 40),
        "container limit {own}"
    );

    let mut bad = resize(-1, 0);
    let err = rt.update_pod_sandbox_resources(bad.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    bad.pod_sandbox_id = "no-such-pod".into();
    bad.resources = None;
    let err = rt.update_pod_sandbox_resources(bad).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    p.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_update_and_stats() {
    require_root!();
    registry::require().await;
    let p = Pod::start(CGROUP_PARENT, |_| {}, |_| {}).await;
    let mut rt = p.d.runtime().await.unwrap();

    // A CPU burner with limits.
    let mut burner = container("burner", &p.image, "while :; do :; done");
    burner.labels.insert("role".into(), "burner".into());
    burner.linux.as_mut().unwrap().resources = Some(LinuxContainerResources {
        cpu_shares: 512,
        cpu_quota: 50_000,
        cpu_period: 100_000,
        memory_limit_in_bytes: 64 << 20,
        ..Default::default()
    });
    let burner = p.create(burner).await.unwrap();
    p.start_container(&burner).await.unwrap();
    p.wait_state(&burner, ContainerState::ContainerRunning).await;
    assert_eq!(cpu_max(&burner), ("50000".to_string(), "100000".to_string()));
    assert_eq!(memory_limit(&burner), (64u64 << 20).to_string());
    if !unified() {
        assert_eq!(cg(&burner, "cpu", "cpu.shares", ""), "512");
    }

    // Live update: the cgroup changes, status and the bundle's spec follow.
    rt.update_container_resources(UpdateContainerResourcesRequest {
        container_id: burner.clone(),
        linux: Some(LinuxContainerResources {
            cpu_quota: 20_000,
            memory_limit_in_bytes: 128 << 20,
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(cpu_max(&burner).0, "20000");
    assert_eq!(memory_limit(&burner), (128u64 << 20).to_string());
    let r = p.status(&burner).await.resources.unwrap().linux.unwrap();
    assert_eq!(
        (r.cpu_quota, r.cpu_period, r.cpu_shares, r.memory_limit_in_bytes),
        (20_000, 100_000, 512, 128 << 20),
        "the update merged into what was there"
    );
    let spec: serde_json::Value = serde_json::from_slice(
        &std::fs::read(p.d.config.state.join("containers").join(&burner).join("config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(spec["linux"]["resources"]["cpu"]["quota"], 20_000);
    assert!(
        spec["linux"]["resources"]["devices"]
            .as_array()
            .is_some_and(|d| !d.is_empty()),
        "device rules kept"
    );
    if !unified() {
        let err = rt
            .update_container_resources(UpdateContainerResourcesRequest {
                container_id: burner.clone(),
                linux: Some(LinuxContainerResources {
                    unified: [("memory.high".to_string(), "1000000".to_string())]
                        .into_iter()
                        .collect(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "v2 keys on a v1 host: {err:?}");
    }
    let err = rt
        .update_container_resources(UpdateContainerResourcesRequest {
            container_id: "no-such-container".into(),
            linux: Some(LinuxContainerResources::default()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    // CPU: the cumulative counter grows, and a second reading gives nano-cores.
    let stats = |id: String| {
        let mut rt = rt.clone();
        async move {
            rt.container_stats(ContainerStatsRequest { container_id: id })
                .await
                .unwrap()
                .into_inner()
                .stats
                .unwrap()
        }
    };
    let first = stats(burner.clone()).await;
    let cpu0 = first.cpu.unwrap().usage_core_nano_seconds.unwrap().value;
    let cores = eventually("the burner's CPU counter grows and gives a rate", async || {
        let s = stats(burner.clone()).await;
        let cpu = s.cpu.unwrap();
        (cpu.usage_core_nano_seconds.unwrap().value > cpu0).then_some(cpu.usage_nano_cores?.value)
    })
    .await;
    assert!(
        cores > 0 && cores <= 1_000_000_000,
        "nano-cores between 0 and the 0.2-1 CPU the quota allows: {cores}"
    );

    // Memory and the writable layer: a container fills 32 MiB of the pod's /dev/shm (charged to
    // it) and writes 1 MiB into its rootfs.
    // Its pings on the pod's loopback (up: berthd wires the pod's network) show in the pod's
    // network counters.
    let filler = container(
        "filler",
        &p.image,
        "head -c 33554432 /dev/zero > /dev/shm/fill; head -c 1048576 /dev/zero > /big; \
         ping -c 3 -i 0.2 127.0.0.1 >/dev/null; sleep 1000",
    );
    let filler = p.create(filler).await.unwrap();
    p.start_container(&filler).await.unwrap();
    let s = eventually("the filler's writes show", async || {
        let s = stats(filler.clone()).await;
        let layer = s.writable_layer.as_ref()?.used_bytes?.value;
        let ws = s.memory.as_ref()?.working_set_bytes?.value;
        (layer >= 1 << 20 && ws >= 32 << 20 && p.status(&filler).await.state == ContainerState::ContainerRunning as i32)
            .then_some(s)
    })
    .await;
    let mem = s.memory.unwrap();
    assert!(mem.usage_bytes.unwrap().value >= mem.working_set_bytes.unwrap().value);
    assert!(mem.page_faults.unwrap().value > 0);
    assert!(mem.rss_bytes.is_some());
    assert!(s.writable_layer.unwrap().inodes_used.unwrap().value >= 2);
    // Pressure (PSI): the cgroup v2 pressure files' readings; on v1 there are none, and none is made up.
    check_pressure(
        "container",
        s.cpu.as_ref().unwrap().psi.as_ref(),
        mem.psi.as_ref(),
        s.io.as_ref(),
    );

    // Listing with filters.
    let list = |filter: ContainerStatsFilter| {
        let mut rt = rt.clone();
        async move {
            rt.list_container_stats(ListContainerStatsRequest { filter: Some(filter) })
                .await
                .unwrap()
                .into_inner()
                .stats
        }
    };
    assert_eq!(
        list(ContainerStatsFilter {
            pod_sandbox_id: p.id.clone(),
            ..Default::default()
        })
        .await
        .len(),
        2
    );
    let by_label = list(ContainerStatsFilter {
        label_selector: [("role".to_string(), "burner".to_string())].into_iter().collect(),
        ..Default::default()
    })
    .await;
    assert_eq!(by_label.len(), 1);
    assert_eq!(by_label[0].attributes.as_ref().unwrap().id, burner);
    assert!(
        list(ContainerStatsFilter {
            id: "no-such-container".into(),
            ..Default::default()
        })
        .await
        .is_empty()
    );

    // The pod: sums, processes, and the loopback traffic of the ping, read in its netns.
    let ps = eventually("the ping's packets are counted", async || {
        let ps = rt
            .pod_sandbox_stats(PodSandboxStatsRequest {
                pod_sandbox_id: p.id.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .stats
            .unwrap();
        let lo = ps
            .linux
            .as_ref()?
            .network
            .as_ref()?
            .interfaces
            .iter()
            .find(|i| i.name == "lo")?
            .rx_bytes?
            .value;
        (lo > 0).then_some(ps)
    })
    .await;
    let l = ps.linux.unwrap();
    check_pressure(
        "pod",
        l.cpu.as_ref().unwrap().psi.as_ref(),
        l.memory.as_ref().unwrap().psi.as_ref(),
        l.io.as_ref(),
    );
    assert_eq!(l.containers.len(), 2);
    assert!(l.process.unwrap().process_count.unwrap().value >= 2);
    assert!(l.memory.unwrap().working_set_bytes.unwrap().value >= 32 << 20);
    assert!(l.cpu.unwrap().usage_core_nano_seconds.unwrap().value > cpu0);
    let all = rt
        .list_pod_sandbox_stats(ListPodSandboxStatsRequest {
            filter: Some(PodSandboxStatsFilter {
                id: p.id.clone(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .stats;
    assert_eq!(all.len(), 1);
    let err = rt
        .pod_sandbox_stats(PodSandboxStatsRequest {
            pod_sandbox_id: "no-such-pod".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    // Metrics: descriptors, and values for our pod and containers.
    let descs = rt
        .list_metric_descriptors(ListMetricDescriptorsRequest {})
        .await
        .unwrap()
        .into_inner()
        .descriptors;
    for name in [
        "container_cpu_usage_seconds_total",
        "container_memory_working_set_bytes",
        "container_network_receive_bytes_total",
    ] {
        assert!(descs.iter().any(|d| d.name == name), "{name} described");
    }
    let pm = rt
        .list_pod_sandbox_metrics(ListPodSandboxMetricsRequest {})
        .await
        .unwrap()
        .into_inner()
        .pod_metrics;
    let ours = pm.iter().find(|m| m.pod_sandbox_id == p.id).unwrap();
    assert!(
        ours.metrics
            .iter()
            .any(|m| m.name == "container_network_receive_bytes_total" && m.label_values.last().unwrap() == "lo")
    );
    let fm = ours
        .container_metrics
        .iter()
        .find(|c| c.container_id == filler)
        .unwrap();
    let ws = fm
        .metrics
        .iter()
        .find(|m| m.name == "container_memory_working_set_bytes")
        .unwrap();
    assert!(ws.value.unwrap().value >= 32 << 20);
    let desc = descs.iter().find(|d| d.name == ws.name).unwrap();
    assert_eq!(desc.label_keys.len(), ws.label_values.len());

    // An exited container's resources no longer change.
    rt.stop_container(StopContainerRequest {
        container_id: burner.clone(),
        timeout: 0,
    })
    .await
    .unwrap();
    let err = rt
        .update_container_resources(UpdateContainerResourcesRequest {
            container_id: burner.clone(),
            linux: Some(LinuxContainerResources {
                cpu_quota: 30_000,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    p.finish().await;
}

/// The same live update through containerd's own shim (containerd-shim-runc-v2), which decodes the
/// resources by their type URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_through_containerd_shim() {
    require_root!();
    registry::require().await;
    let p = Pod::start(
        CGROUP_PARENT,
        |c| c.runtime.default_handler = "runc-containerd".into(),
        |_| {},
    )
    .await;
    let mut c = container("limited", &p.image, "sleep 1000");
    c.linux.as_mut().unwrap().resources = Some(LinuxContainerResources {
        cpu_quota: 50_000,
        cpu_period: 100_000,
        memory_limit_in_bytes: 64 << 20,
        ..Default::default()
    });
    let id = p.create(c).await.unwrap();
    p.start_container(&id).await.unwrap();
    p.wait_state(&id, ContainerState::ContainerRunning).await;
    p.d.runtime()
        .await
        .unwrap()
        .update_container_resources(UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: Some(LinuxContainerResources {
                cpu_quota: 25_000,
                memory_limit_in_bytes: 96 << 20,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(cpu_max(&id).0, "25000");
    assert_eq!(memory_limit(&id), (96u64 << 20).to_string());
    p.finish().await;
}

/// An update before the start lands in the spec the container starts with; cpuset and
/// oom_score_adj reach the cgroup and the process (a negative score is raised to this host's floor).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_before_start_cpuset_and_oom_score() {
    require_root!();
    registry::require().await;
    let p = Pod::start(CGROUP_PARENT, |_| {}, |_| {}).await;
    let mut c = container(
        "scored",
        &p.image,
        "echo oom=$(cat /proc/self/oom_score_adj); echo END; sleep 1000",
    );
    c.linux.as_mut().unwrap().resources = Some(LinuxContainerResources {
        cpuset_cpus: "0".into(),
        oom_score_adj: 500,
        memory_limit_in_bytes: 64 << 20,
        ..Default::default()
    });
    let id = p.create(c).await.unwrap();
    p.d.runtime()
        .await
        .unwrap()
        .update_container_resources(UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: Some(LinuxContainerResources {
                memory_limit_in_bytes: 80 << 20,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    p.start_container(&id).await.unwrap();
    p.wait_state(&id, ContainerState::ContainerRunning).await;
    assert_eq!(
        memory_limit(&id),
        (80u64 << 20).to_string(),
        "the update made before the start"
    );
    assert_eq!(cg(&id, "cpuset", "cpuset.cpus", "cpuset.cpus"), "0");
    let log = p.logs.join("scored.log");
    let text = eventually("the container prints its score", async || {
        let t = std::fs::read_to_string(&log).unwrap_or_default();
        t.contains("END").then_some(t)
    })
    .await;
    assert!(text.contains("oom=500"), "{text}");

    // kubelet's -997 for a guaranteed pod: raised to what this host allows berthd (its own score).
    let own: i32 = std::fs::read_to_string("/proc/self/oom_score_adj")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut c = container(
        "guaranteed",
        &p.image,
        "echo oom=$(cat /proc/self/oom_score_adj); echo END",
    );
    c.linux.as_mut().unwrap().resources = Some(LinuxContainerResources {
        oom_score_adj: -997,
        ..Default::default()
    });
    let (_, out) = p.run(c).await;
    let got: i32 = out
        .lines()
        .find_map(|l| l.strip_prefix("oom="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        got == -997 || got == own,
        "either granted or this host's floor ({own}): {out}"
    );
    p.finish().await;
}
