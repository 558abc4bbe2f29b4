//! GetContainerEvents (kubelet's evented PLEG): every lifecycle step of containers and pods is
//! broadcast (through the [`Events`](crate::events::Events) bus) to all subscribers, with the pod's
//! status and its containers' statuses attached. Pod events carry the sandbox ID as `container_id`,
//! as containerd's do.

use std::pin::Pin;

use berth_proto::cri::{ContainerEventResponse, ContainerEventType};
use futures_util::Stream;

use super::Cri;
use crate::store::now_ns;

impl Cri {
    /// Sends an event about `id` (a container, or a pod when `id == sandbox_id`) of pod `sandbox_id`.
    /// `pod_status` is given for a pod that is already gone from the store.
    pub(crate) fn emit(
        &self,
        id: &str,
        sandbox_id: &str,
        kind: ContainerEventType,
        pod_status: Option<berth_proto::cri::PodSandboxStatus>,
    ) {
        let pod_status = pod_status.or_else(|| self.pod_status_for_event(sandbox_id));
        self.emit_locked(&self.containers(), id, sandbox_id, kind, pod_status);
    }

    /// The pod's status to attach to an event (taken before the containers' lock, never under it).
    pub(crate) fn pod_status_for_event(&self, sandbox_id: &str) -> Option<berth_proto::cri::PodSandboxStatus> {
        if !self.events.has_subscribers() {
            return None;
        }
        self.sandboxes().get(sandbox_id).map(super::sandbox_status::status)
    }

    /// Sends an event while the caller holds the containers' lock, so that a state change and its
    /// event are ordered the same for every writer (a start and a racing exit).
    pub(crate) fn emit_locked(
        &self,
        store: &crate::store::container::ContainerStore,
        id: &str,
        sandbox_id: &str,
        kind: ContainerEventType,
        pod_status: Option<berth_proto::cri::PodSandboxStatus>,
    ) {
        if !self.events.has_subscribers() {
            return;
        }
        let statuses = store
            .all()
            .filter(|c| c.sandbox_id == sandbox_id)
            .map(super::container_status::status)
            .collect();
        self.events.send(ContainerEventResponse {
            container_id: id.to_string(),
            container_event_type: kind as i32,
            created_at: now_ns(),
            pod_sandbox_status: pod_status,
            containers_statuses: statuses,
        });
    }

    /// A stream of every event from now on, until berthd shuts down.
    pub fn container_events(&self) -> Pin<Box<dyn Stream<Item = ContainerEventResponse> + Send>> {
        self.events.stream()
    }

    /// Ends every event stream (berthd is shutting down).
    pub fn close_events(&self) {
        self.events.close();
    }
}
