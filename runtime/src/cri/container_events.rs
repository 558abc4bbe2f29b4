//! GetContainerEvents (kubelet's evented PLEG): every lifecycle step of containers and pods is
//! broadcast to all subscribers, with the pod's status and its containers' statuses attached. Pod
//! events carry the sandbox ID as `container_id`, as containerd's do. A subscriber that falls more
//! than the channel's capacity behind loses the oldest events (and is told so in berthd's log): the
//! runtime never waits for a reader.

use std::pin::Pin;

use berth_proto::cri::{ContainerEventResponse, ContainerEventType};
use futures_util::Stream;
use tokio::sync::broadcast;

use super::Cri;
use crate::store::now_ns;

/// Events kept for a subscriber that has not read them yet.
pub const CAPACITY: usize = 1024;

pub fn channel() -> broadcast::Sender<ContainerEventResponse> {
    broadcast::channel(CAPACITY).0
}

/// Set when berthd shuts down: every event stream ends, so that subscribers (kubelet keeps one
/// open) do not hold the shutdown up.
pub fn closing() -> tokio::sync::watch::Sender<bool> {
    tokio::sync::watch::channel(false).0
}

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
        if self.events.receiver_count() == 0 {
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
        if self.events.receiver_count() == 0 {
            return;
        }
        let statuses = store
            .all()
            .filter(|c| c.sandbox_id == sandbox_id)
            .map(super::container_status::status)
            .collect();
        let _ = self.events.send(ContainerEventResponse {
            container_id: id.to_string(),
            container_event_type: kind as i32,
            created_at: now_ns(),
            pod_sandbox_status: pod_status,
            containers_statuses: statuses,
        });
    }

    /// A stream of every event from now on, until berthd shuts down.
    pub fn container_events(&self) -> Pin<Box<dyn Stream<Item = ContainerEventResponse> + Send>> {
        stream(self.events.subscribe(), self.events_closing.subscribe())
    }

    /// Ends every event stream (berthd is shutting down).
    pub fn close_events(&self) {
        self.events_closing.send_replace(true);
    }
}

/// The events a receiver gets; a receiver that fell behind skips what it missed and goes on.
fn stream(
    rx: broadcast::Receiver<ContainerEventResponse>,
    closing: tokio::sync::watch::Receiver<bool>,
) -> Pin<Box<dyn Stream<Item = ContainerEventResponse> + Send>> {
    Box::pin(futures_util::stream::unfold(
        (rx, closing),
        |(mut rx, mut closing)| async move {
            loop {
                let got = tokio::select! {
                    // Closing first: a stream with events still queued ends at once on shutdown.
                    biased;
                    _ = closing.wait_for(|c| *c) => return None,
                    got = rx.recv() => got,
                };
                match got {
                    Ok(ev) => return Some((ev, (rx, closing))),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(
                            missed = n,
                            "a GetContainerEvents subscriber fell behind; events dropped for it"
                        );
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt as _;

    #[tokio::test]
    async fn a_slow_subscriber_never_blocks_the_sender_and_skips_what_it_missed() {
        let tx = channel();
        let close = closing();
        let mut slow = stream(tx.subscribe(), close.subscribe());
        let mut fast = stream(tx.subscribe(), close.subscribe());
        for i in 0..(CAPACITY + 10) {
            // Never blocks, whoever reads or not.
            tx.send(ContainerEventResponse {
                container_id: i.to_string(),
                ..Default::default()
            })
            .unwrap();
            if i < 3 {
                assert_eq!(fast.next().await.unwrap().container_id, i.to_string());
            }
        }
        assert_eq!(
            slow.next().await.unwrap().container_id,
            "10",
            "the oldest events are dropped for the slow one"
        );
        drop(tx);
        assert_eq!(slow.count().await, CAPACITY - 1);
        close.send_replace(true);
        assert!(fast.next().await.is_none(), "closing ends the streams");
    }
}
