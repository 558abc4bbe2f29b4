use berth_proto::cri::{ListPodSandboxRequest, ListPodSandboxResponse, PodSandbox};

use super::Cri;
use super::sandbox_status::cri_state;
use crate::error::Result;

impl Cri {
    /// Sandboxes matching the filter: ID (or unique prefix), state, and every label in the selector.
    pub fn list_pod_sandbox(&self, req: ListPodSandboxRequest) -> Result<ListPodSandboxResponse> {
        let filter = req.filter.unwrap_or_default();
        let store = self.sandboxes();
        let id = if filter.id.is_empty() {
            None
        } else {
            match store.resolve(&filter.id) {
                Ok(Some(id)) => Some(id),
                // An unknown or ambiguous ID filter matches nothing, as in containerd.
                Ok(None) | Err(_) => return Ok(ListPodSandboxResponse { items: vec![] }),
            }
        };
        let mut items: Vec<PodSandbox> = store
            .all()
            .filter(|sb| id.as_ref().is_none_or(|id| &sb.id == id))
            .filter(|sb| {
                filter
                    .state
                    .as_ref()
                    .is_none_or(|s| cri_state(sb.state) as i32 == s.state)
            })
            .filter(|sb| {
                filter
                    .label_selector
                    .iter()
                    .all(|(k, v)| sb.config.labels.get(k) == Some(v))
            })
            .map(|sb| PodSandbox {
                id: sb.id.clone(),
                metadata: sb.config.metadata.clone(),
                state: cri_state(sb.state) as i32,
                created_at: sb.created_at,
                labels: sb.config.labels.clone(),
                annotations: sb.config.annotations.clone(),
                runtime_handler: sb.runtime_handler.clone(),
            })
            .collect();
        items.sort_by_key(|s| s.created_at);
        Ok(ListPodSandboxResponse { items })
    }
}
