//! PodSandboxStats and ListPodSandboxStats: the pod's containers' stats, their sums (CPU, memory,
//! processes), and network counters read inside the pod's network namespace. Pressure (PSI) is the
//! pod cgroup's own (pressure cannot be summed), on cgroup v2, for pods that name a cgroup parent.

use std::path::Path;

use berth_proto::cri::{
    ContainerStats, CpuUsage, LinuxPodSandboxStats, ListPodSandboxStatsRequest, ListPodSandboxStatsResponse,
    MemoryUsage, NetworkInterfaceUsage, NetworkUsage, PodSandboxAttributes, PodSandboxStats, PodSandboxStatsRequest,
    PodSandboxStatsResponse, ProcessUsage, UInt64Value,
};

use super::Cri;
use super::container_stats::{io_usage, labels_match, psi};
use crate::error::{Error, Result};
use crate::store::container::Container;
use crate::store::now_ns;
use crate::store::sandbox::Sandbox;

/// Counters of one interface from `/proc/net/dev`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_errors: u64,
    pub tx_bytes: u64,
    pub tx_errors: u64,
}

/// Parses `/proc/net/dev`.
pub fn parse_net_dev(text: &str) -> Vec<Interface> {
    text.lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let f: Vec<u64> = rest.split_whitespace().filter_map(|x| x.parse().ok()).collect();
            Some(Interface {
                name: name.trim().to_string(),
                rx_bytes: *f.first()?,
                rx_errors: *f.get(2)?,
                tx_bytes: *f.get(8)?,
                tx_errors: *f.get(10)?,
            })
        })
        .collect()
}

/// Reads `/proc/net/dev` inside the network namespace pinned at `netns`, on a short-lived thread of
/// its own (setns changes only the calling thread, which then ends). Blocking.
pub fn read_net_dev(netns: &Path) -> Option<Vec<Interface>> {
    let ns = std::fs::File::open(netns).ok()?;
    std::thread::spawn(move || {
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).ok()?;
        std::fs::read_to_string("/proc/thread-self/net/dev").ok()
    })
    .join()
    .ok()
    .flatten()
    .map(|t| parse_net_dev(&t))
}

fn v(x: u64) -> Option<UInt64Value> {
    Some(UInt64Value { value: x })
}

fn sum(stats: &[ContainerStats], f: impl Fn(&ContainerStats) -> Option<u64>) -> Option<u64> {
    let vals: Vec<u64> = stats.iter().filter_map(&f).collect();
    (!vals.is_empty()).then(|| vals.iter().sum())
}

impl Cri {
    /// A pod's stats. Blocking.
    fn pod_stats(&self, sb: &Sandbox, containers: &[Container]) -> PodSandboxStats {
        let at = now_ns();
        let mut stats = vec![];
        let mut procs = 0;
        for c in containers {
            let r = self.read_container(c);
            procs += r.usage.as_ref().and_then(|u| u.pids).unwrap_or(0);
            stats.push(self.container_stats_of(c, &r));
        }
        let cpu = |f: fn(&CpuUsage) -> Option<u64>| sum(&stats, |s| s.cpu.as_ref().and_then(f));
        let mem = |f: fn(&MemoryUsage) -> Option<u64>| sum(&stats, |s| s.memory.as_ref().and_then(f));
        let parent = sb.config.linux.as_ref().map(|l| l.cgroup_parent.as_str()).unwrap_or("");
        let pressure = crate::cgroup::pod_dir(self.config.cgroup_driver, parent)
            .map(|d| crate::cgroup::pressures(&d))
            .unwrap_or_default();
        let network = sb.namespace_path("net").and_then(read_net_dev).map(|ifs| {
            let usage = |i: &Interface| NetworkInterfaceUsage {
                name: i.name.clone(),
                rx_bytes: v(i.rx_bytes),
                rx_errors: v(i.rx_errors),
                tx_bytes: v(i.tx_bytes),
                tx_errors: v(i.tx_errors),
            };
            let default = ifs
                .iter()
                .find(|i| i.name == "eth0")
                .or_else(|| ifs.iter().find(|i| i.name != "lo"));
            NetworkUsage {
                timestamp: at,
                default_interface: default.map(usage),
                interfaces: ifs
                    .iter()
                    .filter(|i| Some(&i.name) != default.map(|d| &d.name))
                    .map(usage)
                    .collect(),
            }
        });
        PodSandboxStats {
            attributes: Some(PodSandboxAttributes {
                id: sb.id.clone(),
                metadata: sb.config.metadata.clone(),
                labels: sb.config.labels.clone(),
                annotations: sb.config.annotations.clone(),
            }),
            linux: Some(LinuxPodSandboxStats {
                cpu: Some(CpuUsage {
                    timestamp: at,
                    usage_core_nano_seconds: cpu(|c| c.usage_core_nano_seconds.map(|x| x.value)).and_then(v),
                    usage_nano_cores: cpu(|c| c.usage_nano_cores.map(|x| x.value)).and_then(v),
                    psi: psi(pressure.cpu),
                }),
                memory: Some(MemoryUsage {
                    timestamp: at,
                    working_set_bytes: mem(|m| m.working_set_bytes.map(|x| x.value)).and_then(v),
                    available_bytes: mem(|m| m.available_bytes.map(|x| x.value)).and_then(v),
                    usage_bytes: mem(|m| m.usage_bytes.map(|x| x.value)).and_then(v),
                    rss_bytes: mem(|m| m.rss_bytes.map(|x| x.value)).and_then(v),
                    page_faults: mem(|m| m.page_faults.map(|x| x.value)).and_then(v),
                    major_page_faults: mem(|m| m.major_page_faults.map(|x| x.value)).and_then(v),
                    psi: psi(pressure.memory),
                }),
                network,
                process: Some(ProcessUsage {
                    timestamp: at,
                    process_count: v(procs),
                }),
                containers: stats,
                io: io_usage(at, pressure.io),
            }),
            windows: None,
        }
    }

    async fn pods_stats(self: &std::sync::Arc<Self>, pods: Vec<Sandbox>) -> Result<Vec<PodSandboxStats>> {
        let with_containers: Vec<(Sandbox, Vec<Container>)> = {
            let store = self.containers();
            pods.into_iter()
                .map(|sb| {
                    let cs = store.all().filter(|c| c.sandbox_id == sb.id).cloned().collect();
                    (sb, cs)
                })
                .collect()
        };
        let this = self.clone();
        tokio::task::spawn_blocking(move || with_containers.iter().map(|(sb, cs)| this.pod_stats(sb, cs)).collect())
            .await
            .map_err(|e| Error::Internal(format!("pod stats task: {e}")))
    }

    pub async fn pod_sandbox_stats(
        self: &std::sync::Arc<Self>,
        req: PodSandboxStatsRequest,
    ) -> Result<PodSandboxStatsResponse> {
        let sb = self
            .find_sandbox(&req.pod_sandbox_id)?
            .ok_or_else(|| Error::NotFound(format!("pod sandbox {:?} not found", req.pod_sandbox_id)))?;
        Ok(PodSandboxStatsResponse {
            stats: self.pods_stats(vec![sb]).await?.pop(),
        })
    }

    pub async fn list_pod_sandbox_stats(
        self: &std::sync::Arc<Self>,
        req: ListPodSandboxStatsRequest,
    ) -> Result<ListPodSandboxStatsResponse> {
        let f = req.filter.unwrap_or_default();
        let pods: Vec<Sandbox> = {
            let store = self.sandboxes();
            let id = if f.id.is_empty() {
                None
            } else {
                match store.resolve(&f.id) {
                    Ok(Some(id)) => Some(id),
                    _ => return Ok(ListPodSandboxStatsResponse { stats: vec![] }),
                }
            };
            store
                .all()
                .filter(|s| id.as_ref().is_none_or(|i| *i == s.id))
                .filter(|s| labels_match(&f.label_selector, &s.config.labels))
                .cloned()
                .collect()
        };
        Ok(ListPodSandboxStatsResponse {
            stats: self.pods_stats(pods).await?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_dev() {
        let text = "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo:    1000      10    0    0    0     0          0         0     1000      10    0    0    0     0       0          0\n  eth0: 5000 50 2 0 0 0 0 0 7000 70 3 0 0 0 0 0\n";
        let ifs = parse_net_dev(text);
        assert_eq!(ifs.len(), 2);
        assert_eq!(
            ifs[1],
            Interface {
                name: "eth0".into(),
                rx_bytes: 5000,
                rx_errors: 2,
                tx_bytes: 7000,
                tx_errors: 3
            }
        );
    }
}
