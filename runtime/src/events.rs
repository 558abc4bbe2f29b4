//! The events bus: lifecycle events broadcast to every GetContainerEvents subscriber. A subscriber
//! that falls more than [`CAPACITY`] behind loses the oldest events (and is told so in berthd's log):
//! the runtime never waits for a reader. At shutdown every stream ends, so that subscribers (kubelet
//! keeps one open) do not hold the daemon up.

use std::pin::Pin;

use berth_proto::cri::ContainerEventResponse;
use futures_util::Stream;
use tokio::sync::{broadcast, watch};

/// Events kept for a subscriber that has not read them yet.
pub const CAPACITY: usize = 1024;

/// The bus.
#[derive(Debug)]
pub struct Events {
    tx: broadcast::Sender<ContainerEventResponse>,
    /// Set when berthd shuts down.
    closing: watch::Sender<bool>,
}

impl Default for Events {
    fn default() -> Events {
        Events {
            tx: broadcast::channel(CAPACITY).0,
            closing: watch::channel(false).0,
        }
    }
}

impl Events {
    /// Whether anyone listens (events are not built for nobody).
    pub fn has_subscribers(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    /// Sends to every subscriber; never waits.
    pub fn send(&self, ev: ContainerEventResponse) {
        let _ = self.tx.send(ev);
    }

    /// Every event from now on, until shutdown.
    pub fn stream(&self) -> Pin<Box<dyn Stream<Item = ContainerEventResponse> + Send>> {
        stream(self.tx.subscribe(), self.closing.subscribe())
    }

    /// Ends every stream (berthd is shutting down).
    pub fn close(&self) {
        self.closing.send_replace(true);
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
        let bus = Events::default();
        let mut slow = bus.stream();
        let mut fast = bus.stream();
        for i in 0..(CAPACITY + 10) {
            // Never blocks, whoever reads or not.
            bus.send(ContainerEventResponse {
                container_id: i.to_string(),
                ..Default::default()
            });
            if i < 3 {
                assert_eq!(fast.next().await.unwrap().container_id, i.to_string());
            }
        }
        assert_eq!(
            slow.next().await.unwrap().container_id,
            "10",
            "the oldest events are dropped for the slow one"
        );
        for _ in 0..CAPACITY - 1 {
            assert!(slow.next().await.is_some());
        }
        bus.close();
        assert!(slow.next().await.is_none());
        assert!(fast.next().await.is_none(), "closing ends the streams");
    }
}
