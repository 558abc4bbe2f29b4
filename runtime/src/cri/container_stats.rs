//! ContainerStats and ListContainerStats: CPU, memory and process counts from the container's
//! cgroup (v1 or v2), the writable layer's disk use from its overlay upper directory. CPU
//! nano-cores come from the previous reading, kept per container. CPU, memory and IO pressure
//! (PSI) come from the cgroup v2 pressure files; on cgroup v1 there are none and they are left empty.

use std::collections::HashMap;
use std::path::Path;

use berth_proto::cri::{
    ContainerAttributes, ContainerStats, ContainerStatsRequest, ContainerStatsResponse, CpuUsage, FilesystemIdentifier,
    FilesystemUsage, IoUsage, ListContainerStatsRequest, ListContainerStatsResponse, MemoryUsage, PsiData, PsiStats,
    SwapUsage, UInt64Value,
};

use super::Cri;
use crate::cgroup::Usage;
use crate::cgroup::pressure::{Pressure, Stall};
use crate::error::{Error, Result};
use crate::store::container::{Container, State};
use crate::store::now_ns;

/// A kept CPU reading: when (ns), cumulative CPU ns, and the rate it gave.
pub(crate) type CpuSample = (i64, u64, Option<u64>);

/// The shortest interval a CPU rate is computed over.
const MIN_CPU_WINDOW_NS: i64 = 1_000_000_000;

fn v(x: u64) -> Option<UInt64Value> {
    Some(UInt64Value { value: x })
}

/// The CRI form of one pressure file.
pub(crate) fn psi(p: Option<Pressure>) -> Option<PsiStats> {
    let data = |s: Stall| PsiData {
        total: s.total_ns,
        avg10: s.avg10,
        avg60: s.avg60,
        avg300: s.avg300,
    };
    p.map(|p| PsiStats {
        full: p.full.map(data),
        some: p.some.map(data),
    })
}

/// IO usage: only its pressure (and when it was read); None when there is no IO pressure file.
pub(crate) fn io_usage(at: i64, p: Option<Pressure>) -> Option<IoUsage> {
    psi(p).map(|psi| IoUsage {
        timestamp: at,
        psi: Some(psi),
    })
}

/// Bytes (allocated blocks) and inodes under `dir`, not crossing into other filesystems.
pub fn disk_usage(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(root) = std::fs::symlink_metadata(dir) else {
        return (0, 0);
    };
    let (mut bytes, mut inodes) = (0u64, 0u64);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let Ok(m) = e.metadata() else { continue };
            bytes += m.blocks() * 512;
            inodes += 1;
            if m.is_dir() && m.dev() == root.dev() {
                stack.push(e.path());
            }
        }
    }
    (bytes + root.blocks() * 512, inodes + 1)
}

/// One container's reading: its cgroup's counters (None when the cgroup is gone) and when.
#[derive(Debug, Clone)]
pub(crate) struct Reading {
    pub usage: Option<Usage>,
    pub at: i64,
    pub layer: (u64, u64),
}

impl Cri {
    /// Reads a container's cgroup and writable layer. Blocking.
    pub(crate) fn read_container(&self, c: &Container) -> Reading {
        let usage = if c.state == State::Running {
            crate::cgroup::bundle_cgroup(&c.bundle).and_then(|p| crate::cgroup::usage(&p))
        } else {
            None
        };
        let upper = self
            .images
            .overlay()
            .root()
            .join("snapshots")
            .join(&c.snapshot)
            .join("upper");
        Reading {
            usage,
            at: now_ns(),
            layer: disk_usage(&upper),
        }
    }

    /// CPU use since the previous reading of the same container, in nano-cores. Readings closer
    /// than [`MIN_CPU_WINDOW_NS`] to the kept one give the last rate again (the kernel's counters
    /// move in scheduler ticks, so a rate over a few milliseconds would be noise).
    fn nano_cores(&self, id: &str, at: i64, cpu_ns: u64) -> Option<u64> {
        let mut samples = self.cpu_samples.lock().unwrap_or_else(|e| e.into_inner());
        let Some(&(t0, u0, last)) = samples.get(id) else {
            samples.insert(id.to_string(), (at, cpu_ns, None));
            return None;
        };
        if at - t0 < MIN_CPU_WINDOW_NS {
            return last;
        }
        let rate = (cpu_ns.saturating_sub(u0) as u128 * 1_000_000_000 / (at - t0) as u128) as u64;
        samples.insert(id.to_string(), (at, cpu_ns, Some(rate)));
        Some(rate)
    }

    pub(crate) fn container_stats_of(&self, c: &Container, r: &Reading) -> ContainerStats {
        let at = r.at;
        let mut s = ContainerStats {
            attributes: Some(ContainerAttributes {
                id: c.id.clone(),
                metadata: c.config.metadata.clone(),
                labels: c.config.labels.clone(),
                annotations: c.config.annotations.clone(),
            }),
            writable_layer: Some(FilesystemUsage {
                timestamp: at,
                fs_id: Some(FilesystemIdentifier {
                    mountpoint: self.images.overlay().root().display().to_string(),
                }),
                used_bytes: v(r.layer.0),
                inodes_used: v(r.layer.1),
            }),
            ..Default::default()
        };
        if let Some(u) = &r.usage {
            s.cpu = Some(CpuUsage {
                timestamp: at,
                usage_core_nano_seconds: u.cpu_ns.and_then(v),
                usage_nano_cores: u.cpu_ns.and_then(|n| self.nano_cores(&c.id, at, n)).and_then(v),
                psi: psi(u.pressure.cpu),
            });
            s.memory = Some(MemoryUsage {
                timestamp: at,
                working_set_bytes: u.working_set().and_then(v),
                available_bytes: u.available().and_then(v),
                usage_bytes: u.memory_usage.and_then(v),
                rss_bytes: u.rss.and_then(v),
                page_faults: u.page_faults.and_then(v),
                major_page_faults: u.major_page_faults.and_then(v),
                psi: psi(u.pressure.memory),
            });
            s.io = io_usage(at, u.pressure.io);
            s.swap = u.swap.map(|sw| SwapUsage {
                timestamp: at,
                swap_available_bytes: None,
                swap_usage_bytes: v(sw),
            });
        }
        s
    }

    /// Reads the stats of `containers` off the async threads.
    pub(crate) async fn stats_of(
        self: &std::sync::Arc<Self>,
        containers: Vec<Container>,
    ) -> Result<Vec<ContainerStats>> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            containers
                .iter()
                .map(|c| {
                    let r = this.read_container(c);
                    this.container_stats_of(c, &r)
                })
                .collect()
        })
        .await
        .map_err(|e| Error::Internal(format!("stats task: {e}")))
    }

    pub async fn container_stats(
        self: &std::sync::Arc<Self>,
        req: ContainerStatsRequest,
    ) -> Result<ContainerStatsResponse> {
        if req.container_id.is_empty() {
            return Err(Error::InvalidArgument(
                "ContainerStats: container_id is required".into(),
            ));
        }
        let c = self.container(&req.container_id)?;
        let stats = self.stats_of(vec![c]).await?.pop();
        Ok(ContainerStatsResponse { stats })
    }

    pub async fn list_container_stats(
        self: &std::sync::Arc<Self>,
        req: ListContainerStatsRequest,
    ) -> Result<ListContainerStatsResponse> {
        let f = req.filter.unwrap_or_default();
        let id = if f.id.is_empty() {
            None
        } else {
            match self.containers().resolve(&f.id) {
                Ok(Some(id)) => Some(id),
                _ => return Ok(ListContainerStatsResponse { stats: vec![] }),
            }
        };
        let pod = if f.pod_sandbox_id.is_empty() {
            None
        } else {
            match self.sandboxes().resolve(&f.pod_sandbox_id) {
                Ok(Some(id)) => Some(id),
                _ => return Ok(ListContainerStatsResponse { stats: vec![] }),
            }
        };
        let selected: Vec<Container> = {
            let store = self.containers();
            self.forget_samples(&store.all().map(|c| c.id.clone()).collect::<Vec<_>>());
            store
                .all()
                .filter(|c| id.as_ref().is_none_or(|i| *i == c.id))
                .filter(|c| pod.as_ref().is_none_or(|p| *p == c.sandbox_id))
                .filter(|c| labels_match(&f.label_selector, &c.config.labels))
                .cloned()
                .collect()
        };
        Ok(ListContainerStatsResponse {
            stats: self.stats_of(selected).await?,
        })
    }

    /// Drops the CPU samples of containers that are gone.
    pub(crate) fn forget_samples(&self, live: &[String]) {
        self.cpu_samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|id, _| live.contains(id));
    }
}

pub(crate) fn labels_match(selector: &HashMap<String, String>, labels: &HashMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_usage_counts_files_and_dirs() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("a")).unwrap();
        std::fs::write(d.path().join("a/f"), vec![1u8; 64 << 10]).unwrap();
        let (bytes, inodes) = disk_usage(d.path());
        assert_eq!(inodes, 3);
        assert!(bytes >= 64 << 10, "{bytes}");
        assert_eq!(disk_usage(&d.path().join("missing")), (0, 0));
    }
}
