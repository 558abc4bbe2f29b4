//! UpdateContainerResources: new cgroup limits, applied live to a running container through its
//! shim (`runc update`), and kept in the container's record and bundle spec so that status and a
//! later start see them.

use berth_proto::cri::{LinuxContainerResources, UpdateContainerResourcesRequest, UpdateContainerResourcesResponse};

use super::Cri;
use crate::error::{Error, Result};
use crate::store::container::State;

/// `old` with every field `new` sets (non-zero, non-empty) replaced, as containerd merges updates.
pub fn merge(old: &LinuxContainerResources, new: &LinuxContainerResources) -> LinuxContainerResources {
    let mut m = old.clone();
    fn is_set<T: Default + PartialEq>(v: &T) -> bool {
        *v != T::default()
    }
    macro_rules! take {
        ($($f:ident),*) => {$( if is_set(&new.$f) { m.$f = new.$f.clone(); } )*};
    }
    take!(
        cpu_period,
        cpu_quota,
        cpu_shares,
        memory_limit_in_bytes,
        cpuset_cpus,
        cpuset_mems,
        hugepage_limits,
        unified,
        memory_swap_limit_in_bytes
    );
    m
}

impl Cri {
    pub async fn update_container_resources(
        &self,
        req: UpdateContainerResourcesRequest,
    ) -> Result<UpdateContainerResourcesResponse> {
        let c = self.container(&req.container_id)?;
        let Some(new) = req.linux else {
            return Err(Error::InvalidArgument(
                "UpdateContainerResources: linux resources are required".into(),
            ));
        };
        if c.state == State::Exited {
            return Err(Error::FailedPrecondition(format!(
                "container {} has exited: its resources cannot change",
                c.id
            )));
        }
        let old = c
            .config
            .linux
            .as_ref()
            .and_then(|l| l.resources.clone())
            .unwrap_or_default();
        let merged = merge(&old, &new);
        let oci = crate::oci::spec::resources_builder(&merged, &self.host)?
            .build()
            .map_err(|e| Error::Internal(format!("build OCI resources: {e}")))?;
        if c.state == State::Running {
            let json = serde_json::to_vec(&oci).map_err(|e| Error::Internal(format!("encode resources: {e}")))?;
            let shim = self.shim(&c.shim_address, &c.id).await?;
            shim.update_resources(&c.id, json).await?;
        }
        // The bundle's spec: the new limits, the device rules kept.
        let mut spec = crate::oci::load_bundle_spec(&c.bundle)?;
        if let Some(linux) = spec.linux_mut() {
            let mut res = oci;
            res.set_devices(linux.resources().as_ref().and_then(|r| r.devices().clone()));
            linux.set_resources(Some(res));
        }
        crate::store::write_json(&c.bundle.join("config.json"), &spec)?;
        let turn = self.container_turn();
        let rec = self.containers().get(&c.id).cloned();
        if let Some(mut rec) = rec {
            rec.config.linux.get_or_insert_with(Default::default).resources = Some(merged);
            drop(self.save_container(&turn, rec)?);
        }
        tracing::info!(id = %c.id, "container resources updated");
        Ok(UpdateContainerResourcesResponse {})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_keeps_what_the_update_leaves_unset() {
        let old = LinuxContainerResources {
            cpu_shares: 512,
            memory_limit_in_bytes: 1 << 30,
            oom_score_adj: 5,
            ..Default::default()
        };
        let new = LinuxContainerResources {
            cpu_quota: 50_000,
            memory_limit_in_bytes: 1 << 29,
            ..Default::default()
        };
        let m = merge(&old, &new);
        assert_eq!(
            (m.cpu_shares, m.cpu_quota, m.memory_limit_in_bytes, m.oom_score_adj),
            (512, 50_000, 1 << 29, 5)
        );
    }
}
