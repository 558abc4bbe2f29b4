//! UpdatePodSandboxResources (in-place pod resize, GA in Kubernetes 1.35): kubelet tells the runtime
//! a pod's new totals (the sum of its containers' resources, and the pod overhead). berth records
//! them in the pod's config (PodSandboxStatus's verbose info shows them) and writes their sum to the
//! pod's own cgroup, best effort: kubelet manages that cgroup itself, and a write the kernel refuses
//! (a limit below what the pod uses) is logged, not returned, as kubelet expects of this call.

use berth_proto::cri::{LinuxContainerResources, UpdatePodSandboxResourcesRequest, UpdatePodSandboxResourcesResponse};

use super::Cri;
use crate::cgroup::pod::Limits;
use crate::error::{Error, Result};

/// The CFS period when a request names a quota but no period (the kernel's default).
const DEFAULT_CFS_PERIOD_US: i64 = 100_000;

/// Refuses negative values (a quota of -1 is "no limit").
fn check(what: &str, r: &LinuxContainerResources) -> Result<()> {
    let bad = |field: &str, v: i64| {
        Err(Error::InvalidArgument(format!(
            "UpdatePodSandboxResources: {what}.{field} {v} is negative"
        )))
    };
    for (field, v) in [
        ("cpu_period", r.cpu_period),
        ("cpu_shares", r.cpu_shares),
        ("memory_limit_in_bytes", r.memory_limit_in_bytes),
    ] {
        if v < 0 {
            return bad(field, v);
        }
    }
    if r.cpu_quota < -1 {
        return bad("cpu_quota", r.cpu_quota);
    }
    Ok(())
}

/// The pod cgroup's limits: the containers' sum plus the overhead, for what the sum names.
pub(crate) fn pod_limits(sum: Option<&LinuxContainerResources>, overhead: Option<&LinuxContainerResources>) -> Limits {
    let zero = LinuxContainerResources::default();
    let (r, o) = (sum.unwrap_or(&zero), overhead.unwrap_or(&zero));
    let mut l = Limits::default();
    if r.cpu_shares > 0 {
        l.cpu_shares = Some((r.cpu_shares + o.cpu_shares.max(0)) as u64);
    }
    if r.cpu_quota == -1 {
        l.cpu_quota = Some(-1);
    } else if r.cpu_quota > 0 {
        let period = if r.cpu_period > 0 {
            r.cpu_period
        } else {
            DEFAULT_CFS_PERIOD_US
        };
        // The overhead's quota, rescaled to the sum's period.
        let extra = if o.cpu_quota > 0 {
            let op = if o.cpu_period > 0 {
                o.cpu_period
            } else {
                DEFAULT_CFS_PERIOD_US
            };
            (o.cpu_quota as i128 * period as i128 / op as i128) as i64
        } else {
            0
        };
        l.cpu_quota = Some(r.cpu_quota.saturating_add(extra));
        l.cpu_period = Some(period as u64);
    }
    if r.memory_limit_in_bytes > 0 {
        l.memory_bytes = Some(r.memory_limit_in_bytes.saturating_add(o.memory_limit_in_bytes.max(0)));
    }
    l.cpuset_cpus = Some(r.cpuset_cpus.clone()).filter(|c| !c.is_empty());
    l.cpuset_mems = Some(r.cpuset_mems.clone()).filter(|m| !m.is_empty());
    l
}

impl Cri {
    pub async fn update_pod_sandbox_resources(
        &self,
        req: UpdatePodSandboxResourcesRequest,
    ) -> Result<UpdatePodSandboxResourcesResponse> {
        if let Some(r) = &req.resources {
            check("resources", r)?;
        }
        if let Some(o) = &req.overhead {
            check("overhead", o)?;
        }
        let sb = self
            .find_sandbox(&req.pod_sandbox_id)?
            .ok_or_else(|| Error::NotFound(format!("pod sandbox {:?} not found", req.pod_sandbox_id)))?;
        let sb = self.update_sandbox(&sb.id, |sb| {
            let linux = sb.config.linux.get_or_insert_with(Default::default);
            if req.resources.is_some() {
                linux.resources = req.resources.clone();
            }
            if req.overhead.is_some() {
                linux.overhead = req.overhead.clone();
            }
        })?;
        let linux = sb.config.linux.clone().unwrap_or_default();
        let limits = pod_limits(linux.resources.as_ref(), linux.overhead.as_ref());
        let Some(dir) = crate::cgroup::pod_dir(self.config.cgroup_driver, &linux.cgroup_parent) else {
            tracing::debug!(id = %sb.id, "pod names no cgroup parent of its own: resources recorded only");
            return Ok(UpdatePodSandboxResourcesResponse {});
        };
        let failed = tokio::task::spawn_blocking(move || crate::cgroup::pod::apply(&dir, &limits))
            .await
            .map_err(|e| Error::Internal(format!("pod cgroup task: {e}")))?;
        for f in failed {
            tracing::warn!(id = %sb.id, "UpdatePodSandboxResources: {f}");
        }
        tracing::info!(id = %sb.id, "pod sandbox resources updated");
        Ok(UpdatePodSandboxResourcesResponse {})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(period: i64, quota: i64, shares: i64, mem: i64) -> LinuxContainerResources {
        LinuxContainerResources {
            cpu_period: period,
            cpu_quota: quota,
            cpu_shares: shares,
            memory_limit_in_bytes: mem,
            ..Default::default()
        }
    }

    #[test]
    fn sum_plus_overhead() {
        let l = pod_limits(
            Some(&res(100_000, 50_000, 512, 64 << 20)),
            Some(&res(50_000, 10_000, 10, 1 << 20)),
        );
        assert_eq!(l.cpu_shares, Some(522));
        assert_eq!(
            (l.cpu_quota, l.cpu_period),
            (Some(70_000), Some(100_000)),
            "overhead rescaled to the period"
        );
        assert_eq!(l.memory_bytes, Some((64 << 20) + (1 << 20)));
        // What the sum does not name is left alone, whatever the overhead says.
        let l = pod_limits(Some(&res(0, 0, 0, 0)), Some(&res(0, 10_000, 10, 1 << 20)));
        assert_eq!(l, Limits::default());
        assert_eq!(pod_limits(Some(&res(0, 20_000, 0, 0)), None).cpu_period, Some(100_000));
        assert_eq!(pod_limits(Some(&res(0, -1, 0, 0)), None).cpu_quota, Some(-1));
    }

    #[test]
    fn negative_values_are_refused() {
        assert!(matches!(
            check("resources", &res(0, 0, 0, -5)),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            check("resources", &res(0, -2, 0, 0)),
            Err(Error::InvalidArgument(_))
        ));
        check("resources", &res(0, -1, 0, 0)).unwrap();
    }
}
