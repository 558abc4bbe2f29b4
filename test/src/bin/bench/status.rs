//! Status calls while containers start: the latency of ListContainers and ContainerStatus (what
//! kubelet polls every second) on a daemon that is idle, then while a burst of pods starts at once.
//! A daemon that writes its records under the lock its readers take answers late during the burst.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use berth_proto::cri::runtime_service_client::RuntimeServiceClient;
use berth_proto::cri::{
    ContainerStatusRequest, CreateContainerRequest, ListContainersRequest, RemovePodSandboxRequest,
    RunPodSandboxRequest, StartContainerRequest, StopPodSandboxRequest,
};
use berth_proto::tonic::transport::Channel;

use super::{CONTAINER_NAME, POD_NAMESPACE, PodTarget, PodsOpts, container_config, ms, pod_config, rpc};

/// Percentiles of one set of call latencies, in milliseconds.
#[derive(Debug, Clone, Default)]
pub(super) struct Summary {
    pub calls: usize,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Summary {
    fn of(mut v: Vec<f64>) -> Summary {
        if v.is_empty() {
            return Summary::default();
        }
        v.sort_by(f64::total_cmp);
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        Summary {
            calls: v.len(),
            p50: at(0.5),
            p99: at(0.99),
            max: v[v.len() - 1],
        }
    }

    pub fn line(&self) -> String {
        format!(
            "p50 {:>9}  p99 {:>9}  max {:>9}  ({} calls)",
            ms(self.p50),
            ms(self.p99),
            ms(self.max),
            self.calls
        )
    }
}

/// What one target measured.
#[derive(Debug, Clone, Default)]
pub(super) struct StatusLatency {
    pub idle: Summary,
    pub burst: Summary,
    pub burst_pods: usize,
    pub burst_ms: f64,
}

/// Polls ListContainers then ContainerStatus of `probe` until `stop`; returns each call's latency.
async fn poll(mut rt: RuntimeServiceClient<Channel>, probe: String, stop: Arc<AtomicBool>) -> anyhow::Result<Vec<f64>> {
    let mut out = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        rpc(
            "ListContainers".into(),
            rt.list_containers(ListContainersRequest::default()),
        )
        .await?;
        out.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        rpc(
            "ContainerStatus".into(),
            rt.container_status(ContainerStatusRequest {
                container_id: probe.clone(),
                verbose: false,
            }),
        )
        .await?;
        out.push(t.elapsed().as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(out)
}

/// RunPodSandbox + CreateContainer + StartContainer of burst pod `i`, on a client of its own.
async fn start_one(
    mut rt: RuntimeServiceClient<Channel>,
    o: PodsOpts,
    who: String,
    i: usize,
) -> anyhow::Result<String> {
    let name = format!("burst-{i}");
    let uid = format!("{}-{who}-burst-{i}", o.run_id);
    let log_dir = o.log_dir.join(&who).join(format!("{POD_NAMESPACE}_{name}_{uid}"));
    std::fs::create_dir_all(log_dir.join(CONTAINER_NAME)).with_context(|| format!("create {}", log_dir.display()))?;
    let pod = pod_config(&o, &name, &uid, &log_dir);
    let ctr = container_config(&o, &pod);
    let id = rpc(
        format!("{who}: RunPodSandbox {name}"),
        rt.run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod.clone()),
            runtime_handler: String::new(),
        }),
    )
    .await?
    .pod_sandbox_id;
    let cid = rpc(
        format!("{who}: CreateContainer in {name}"),
        rt.create_container(CreateContainerRequest {
            pod_sandbox_id: id.clone(),
            config: Some(ctr),
            sandbox_config: Some(pod),
        }),
    )
    .await?
    .container_id;
    rpc(
        format!("{who}: StartContainer in {name}"),
        rt.start_container(StartContainerRequest { container_id: cid }),
    )
    .await?;
    Ok(id)
}

/// Measures the target's status latency idle (for `idle`), then while `burst` pods start at once;
/// removes the burst's pods after. `probe` is a running container of the target.
pub(super) async fn measure(
    pt: &PodTarget,
    o: &PodsOpts,
    probe: &str,
    burst: usize,
    idle: Duration,
) -> anyhow::Result<StatusLatency> {
    let who = pt.target.name.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let poller = tokio::spawn(poll(pt.rt.clone(), probe.to_string(), stop.clone()));
    tokio::time::sleep(idle).await;
    stop.store(true, Ordering::Relaxed);
    let idle_calls = poller.await??;

    let stop = Arc::new(AtomicBool::new(false));
    let poller = tokio::spawn(poll(pt.rt.clone(), probe.to_string(), stop.clone()));
    let t0 = Instant::now();
    let starts: Vec<_> = (0..burst)
        .map(|i| tokio::spawn(start_one(pt.rt.clone(), o.clone(), who.clone(), i)))
        .collect();
    let mut pods = Vec::new();
    let mut first_err = None;
    for s in starts {
        match s.await? {
            Ok(id) => pods.push(id),
            Err(e) => first_err = first_err.or(Some(e)),
        }
    }
    let burst_ms = t0.elapsed().as_secs_f64() * 1000.0;
    stop.store(true, Ordering::Relaxed);
    let burst_calls = poller.await??;
    let mut rt = pt.rt.clone();
    for id in pods {
        rpc(
            format!("{who}: StopPodSandbox {id}"),
            rt.stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: id.clone(),
            }),
        )
        .await?;
        rpc(
            format!("{who}: RemovePodSandbox {id}"),
            rt.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id }),
        )
        .await?;
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    Ok(StatusLatency {
        idle: Summary::of(idle_calls),
        burst: Summary::of(burst_calls),
        burst_pods: burst,
        burst_ms,
    })
}

/// The status table: per target, idle and during the burst; each target's slow-down, and how the
/// first target (berth) compares with each other one during the burst.
pub(super) fn report(rows: &[(String, StatusLatency)]) {
    if rows.is_empty() {
        return;
    }
    println!();
    println!(
        "status: ListContainers + ContainerStatus (what kubelet polls), back to back, idle for 2 s and then while {} pods",
        rows[0].1.burst_pods
    );
    println!("        start at once (RunPodSandbox + CreateContainer + StartContainer each), the M pods still running");
    for (name, s) in rows {
        println!("{name:<12} idle   {}", s.idle.line());
        println!(
            "{name:<12} burst  {}  (burst took {}; p99 {:.2}x idle)",
            s.burst.line(),
            ms(s.burst_ms),
            s.burst.p99 / s.idle.p99.max(1e-3)
        );
    }
    let (first, fs) = &rows[0];
    for (name, s) in &rows[1..] {
        println!(
            "{first} / {name} during the burst: p50 {:.2}x, p99 {:.2}x, max {:.2}x",
            fs.burst.p50 / s.burst.p50.max(1e-3),
            fs.burst.p99 / s.burst.p99.max(1e-3),
            fs.burst.max / s.burst.max.max(1e-3)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::Summary;

    #[test]
    fn percentiles() {
        let s = Summary::of((1..=100).map(f64::from).collect());
        assert_eq!((s.calls, s.p50, s.p99, s.max), (100, 51.0, 99.0, 100.0));
        assert_eq!(Summary::of(vec![]).calls, 0);
    }
}
