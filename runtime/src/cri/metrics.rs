//! ListMetricDescriptors and ListPodSandboxMetrics: the cadvisor-style metrics kubelet serves on
//! `/metrics/cadvisor` when it takes them from the runtime. Values come from the same readings as
//! the stats RPCs. Container metrics carry the labels `id`, `name`, `image` (plus `cpu` or
//! `interface` where cadvisor has them); pod network metrics `id`, `name`, `interface`.

use berth_proto::cri::{
    ContainerMetrics, ListMetricDescriptorsRequest, ListMetricDescriptorsResponse, ListPodSandboxMetricsRequest,
    ListPodSandboxMetricsResponse, Metric, MetricDescriptor, MetricType, PodSandboxMetrics, UInt64Value,
};

use super::Cri;
use crate::error::{Error, Result};
use crate::store::container::Container;
use crate::store::sandbox::Sandbox;

struct Def {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    extra_label: Option<&'static str>,
}

const fn def(name: &'static str, help: &'static str, kind: MetricType, extra_label: Option<&'static str>) -> Def {
    Def {
        name,
        help,
        kind,
        extra_label,
    }
}

const BASE_LABELS: &[&str] = &["id", "name", "image"];
const POD_LABELS: &[&str] = &["id", "name"];

/// Per-container metrics.
const CONTAINER: &[Def] = &[
    def(
        "container_cpu_usage_seconds_total",
        "Cumulative cpu time consumed in seconds.",
        MetricType::Counter,
        Some("cpu"),
    ),
    def(
        "container_memory_usage_bytes",
        "Current memory usage in bytes, including all memory regardless of when it was accessed.",
        MetricType::Gauge,
        None,
    ),
    def(
        "container_memory_working_set_bytes",
        "Current working set in bytes.",
        MetricType::Gauge,
        None,
    ),
    def("container_memory_rss", "Size of RSS in bytes.", MetricType::Gauge, None),
    def(
        "container_memory_swap",
        "Container swap usage in bytes.",
        MetricType::Gauge,
        None,
    ),
    def(
        "container_spec_memory_limit_bytes",
        "Memory limit for the container.",
        MetricType::Gauge,
        None,
    ),
    def(
        "container_memory_failures_total",
        "Cumulative count of memory allocation failures (page faults).",
        MetricType::Counter,
        None,
    ),
    def(
        "container_processes",
        "Number of processes running inside the container.",
        MetricType::Gauge,
        None,
    ),
    def(
        "container_fs_usage_bytes",
        "Number of bytes that are consumed by the container's writable layer.",
        MetricType::Gauge,
        None,
    ),
    def(
        "container_fs_inodes_total",
        "Number of inodes used by the container's writable layer.",
        MetricType::Gauge,
        None,
    ),
    def(
        "container_start_time_seconds",
        "Start time of the container since unix epoch in seconds.",
        MetricType::Gauge,
        None,
    ),
    def(
        "container_last_seen",
        "Last time a container was seen by the exporter.",
        MetricType::Gauge,
        None,
    ),
];

/// Per-pod metrics (the pod's network namespace).
const POD: &[Def] = &[
    def(
        "container_network_receive_bytes_total",
        "Cumulative count of bytes received.",
        MetricType::Counter,
        Some("interface"),
    ),
    def(
        "container_network_receive_errors_total",
        "Cumulative count of errors encountered while receiving.",
        MetricType::Counter,
        Some("interface"),
    ),
    def(
        "container_network_transmit_bytes_total",
        "Cumulative count of bytes transmitted.",
        MetricType::Counter,
        Some("interface"),
    ),
    def(
        "container_network_transmit_errors_total",
        "Cumulative count of errors encountered while transmitting.",
        MetricType::Counter,
        Some("interface"),
    ),
];

fn descriptor(d: &Def, base: &[&str]) -> MetricDescriptor {
    MetricDescriptor {
        name: d.name.into(),
        help: d.help.into(),
        label_keys: base.iter().chain(d.extra_label.iter()).map(|s| s.to_string()).collect(),
    }
}

fn find(defs: &'static [Def], name: &str) -> &'static Def {
    defs.iter().find(|d| d.name == name).expect("a metric berth defines")
}

fn metric(defs: &'static [Def], name: &str, at: i64, labels: &[String], extra: Option<&str>, value: u64) -> Metric {
    let d = find(defs, name);
    Metric {
        name: d.name.into(),
        timestamp: at,
        metric_type: d.kind as i32,
        label_values: labels.iter().cloned().chain(extra.map(str::to_string)).collect(),
        value: Some(UInt64Value { value }),
    }
}

impl Cri {
    pub fn list_metric_descriptors(&self, _req: ListMetricDescriptorsRequest) -> ListMetricDescriptorsResponse {
        ListMetricDescriptorsResponse {
            descriptors: CONTAINER
                .iter()
                .map(|d| descriptor(d, BASE_LABELS))
                .chain(POD.iter().map(|d| descriptor(d, POD_LABELS)))
                .collect(),
        }
    }

    /// One container's metrics. Blocking.
    fn container_metrics(&self, c: &Container) -> ContainerMetrics {
        let r = self.read_container(c);
        let at = r.at;
        let labels = [c.id.clone(), c.name().to_string(), c.image_ref.clone()];
        let m = |name: &str, extra: Option<&str>, value: u64| metric(CONTAINER, name, at, &labels, extra, value);
        let mut out = vec![
            m("container_fs_usage_bytes", None, r.layer.0),
            m("container_fs_inodes_total", None, r.layer.1),
            m("container_last_seen", None, (at / 1_000_000_000) as u64),
        ];
        if c.started_at > 0 {
            out.push(m(
                "container_start_time_seconds",
                None,
                (c.started_at / 1_000_000_000) as u64,
            ));
        }
        if let Some(u) = &r.usage {
            let opt = [
                ("container_cpu_usage_seconds_total", u.cpu_ns.map(|n| n / 1_000_000_000)),
                ("container_memory_usage_bytes", u.memory_usage),
                ("container_memory_working_set_bytes", u.working_set()),
                ("container_memory_rss", u.rss),
                ("container_memory_swap", u.swap),
                ("container_spec_memory_limit_bytes", u.memory_limit),
                ("container_memory_failures_total", u.page_faults),
                ("container_processes", u.pids),
            ];
            for (name, value) in opt {
                if let Some(v) = value {
                    let extra = (name == "container_cpu_usage_seconds_total").then_some("total");
                    out.push(m(name, extra, v));
                }
            }
        }
        ContainerMetrics {
            container_id: c.id.clone(),
            metrics: out,
        }
    }

    /// A pod's metrics. Blocking.
    fn pod_metrics(&self, sb: &Sandbox, containers: &[Container]) -> PodSandboxMetrics {
        let at = crate::store::now_ns();
        let labels = [sb.id.clone(), sb.metadata().name];
        let mut metrics = vec![];
        if let Some(ifs) = sb.namespace_path("net").and_then(super::sandbox_stats::read_net_dev) {
            for i in ifs {
                for (name, value) in [
                    ("container_network_receive_bytes_total", i.rx_bytes),
                    ("container_network_receive_errors_total", i.rx_errors),
                    ("container_network_transmit_bytes_total", i.tx_bytes),
                    ("container_network_transmit_errors_total", i.tx_errors),
                ] {
                    metrics.push(metric(POD, name, at, &labels, Some(&i.name), value));
                }
            }
        }
        PodSandboxMetrics {
            pod_sandbox_id: sb.id.clone(),
            metrics,
            container_metrics: containers.iter().map(|c| self.container_metrics(c)).collect(),
        }
    }

    pub async fn list_pod_sandbox_metrics(
        self: &std::sync::Arc<Self>,
        _req: ListPodSandboxMetricsRequest,
    ) -> Result<ListPodSandboxMetricsResponse> {
        let pods: Vec<(Sandbox, Vec<Container>)> = {
            let sandboxes: Vec<Sandbox> = self.sandboxes().all().cloned().collect();
            let store = self.containers();
            sandboxes
                .into_iter()
                .map(|sb| {
                    let cs = store.all().filter(|c| c.sandbox_id == sb.id).cloned().collect();
                    (sb, cs)
                })
                .collect()
        };
        let this = self.clone();
        tokio::task::spawn_blocking(move || ListPodSandboxMetricsResponse {
            pod_metrics: pods.iter().map(|(sb, cs)| this.pod_metrics(sb, cs)).collect(),
        })
        .await
        .map_err(|e| Error::Internal(format!("metrics task: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_has_a_descriptor_with_matching_labels() {
        for d in CONTAINER.iter().chain(POD) {
            let base = if POD.iter().any(|p| p.name == d.name) {
                POD_LABELS
            } else {
                BASE_LABELS
            };
            let desc = descriptor(d, base);
            assert!(desc.name.starts_with("container_"));
            assert_eq!(desc.label_keys.len(), base.len() + d.extra_label.iter().count());
        }
        let m = metric(
            CONTAINER,
            "container_cpu_usage_seconds_total",
            1,
            &["a".into(), "b".into(), "c".into()],
            Some("total"),
            5,
        );
        assert_eq!(m.label_values, ["a", "b", "c", "total"]);
        assert_eq!(m.metric_type, MetricType::Counter as i32);
    }
}
