use berth_proto::cri::{Container as CriContainer, ImageSpec, ListContainersRequest, ListContainersResponse};

use super::Cri;
use crate::error::Result;

impl Cri {
    /// Containers matching the filter: ID (or unique prefix), state, pod, and every selector label.
    pub fn list_containers(&self, req: ListContainersRequest) -> Result<ListContainersResponse> {
        let f = req.filter.unwrap_or_default();
        let store = self.containers();
        let id = if f.id.is_empty() {
            None
        } else {
            match store.resolve(&f.id) {
                Ok(Some(id)) => Some(id),
                Ok(None) | Err(_) => return Ok(ListContainersResponse { containers: vec![] }),
            }
        };
        let pod = (!f.pod_sandbox_id.is_empty()).then(|| {
            self.sandboxes()
                .resolve(&f.pod_sandbox_id)
                .ok()
                .flatten()
                .unwrap_or_default()
        });
        let mut containers: Vec<CriContainer> = store
            .all()
            .filter(|c| id.as_ref().is_none_or(|id| &c.id == id))
            .filter(|c| pod.as_ref().is_none_or(|p| &c.sandbox_id == p))
            .filter(|c| f.state.as_ref().is_none_or(|s| c.state.cri() as i32 == s.state))
            .filter(|c| f.label_selector.iter().all(|(k, v)| c.config.labels.get(k) == Some(v)))
            .map(|c| CriContainer {
                id: c.id.clone(),
                pod_sandbox_id: c.sandbox_id.clone(),
                metadata: c.config.metadata.clone(),
                image: Some(ImageSpec {
                    image: c.image_ref.clone(),
                    ..Default::default()
                }),
                image_ref: c.image_id.clone(),
                state: c.state.cri() as i32,
                created_at: c.created_at,
                labels: c.config.labels.clone(),
                annotations: c.config.annotations.clone(),
                image_id: c.image_id.clone(),
            })
            .collect();
        containers.sort_by_key(|c| c.created_at);
        Ok(ListContainersResponse { containers })
    }
}
