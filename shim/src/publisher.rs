//! Task events to the host, over TTRPC to `TTRPC_ADDRESS`
//! (`containerd.services.events.ttrpc.v1.Events/Forward`), as containerd 1.6's shims send them.
//!
//! Publishing never blocks the shim: events go into a bounded queue that one task drains. That task
//! connects lazily, reconnects after any failure, and retries an event with back-off until it is
//! [`EVENT_TTL`] old, then drops it. Events are hints: after a longer host outage the host learns
//! what happened from `State` and `Wait`.

use std::time::{Duration, Instant, SystemTime};

use berth_proto::shim::events::task::{TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskStart};
use berth_proto::shim::protobuf::well_known_types::any::Any;
use berth_proto::shim::protobuf::{Message, MessageField};
use berth_proto::shim::shim::event::Envelope;
use berth_proto::shim::shim::events::ForwardRequest;
use berth_proto::shim::shim_async::{Client, EventsClient};
use berth_proto::shim::{topics, ttrpc};
use tokio::sync::mpsc;

use crate::time::timestamp;

/// Events waiting to be sent; more are dropped (with a log line).
const QUEUE: usize = 1024;
/// How long an event is retried.
pub const EVENT_TTL: Duration = Duration::from_secs(30);
/// Timeout of one `Forward` call.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// A task event: its topic and the protobuf type name the host sees in the `Any`.
pub trait Event: Message {
    const TOPIC: &'static str;
    const TYPE_URL: &'static str;
}

macro_rules! events {
    ($($ty:ident => $topic:expr),* $(,)?) => {
        $(impl Event for $ty {
            const TOPIC: &'static str = $topic;
            const TYPE_URL: &'static str = concat!("containerd.events.", stringify!($ty));
        })*
    };
}

events! {
    TaskCreate => topics::TASK_CREATE_EVENT_TOPIC,
    TaskStart => topics::TASK_START_EVENT_TOPIC,
    TaskExit => topics::TASK_EXIT_EVENT_TOPIC,
    TaskDelete => topics::TASK_DELETE_EVENT_TOPIC,
    TaskExecAdded => topics::TASK_EXEC_ADDED_EVENT_TOPIC,
    TaskExecStarted => topics::TASK_EXEC_STARTED_EVENT_TOPIC,
}

#[derive(Debug)]
struct Queued {
    request: ForwardRequest,
    deadline: Instant,
}

/// The sending side; cheap to share.
#[derive(Debug)]
pub struct Publisher {
    namespace: String,
    tx: Option<mpsc::Sender<Queued>>,
}

impl Publisher {
    /// Starts the sender task for `address` (a socket path, with or without `unix://`). Without an
    /// address events are dropped.
    pub fn start(address: Option<String>, namespace: String) -> Publisher {
        let Some(address) = address.filter(|a| !a.is_empty()) else {
            log::warn!("TTRPC_ADDRESS is not set: task events will not be published");
            return Publisher { namespace, tx: None };
        };
        let address = if address.starts_with("unix://") {
            address
        } else {
            format!("unix://{address}")
        };
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(address, rx));
        Publisher {
            namespace,
            tx: Some(tx),
        }
    }

    /// Queues `event`; never waits.
    pub fn publish<E: Event>(&self, event: &E) {
        let Some(tx) = &self.tx else { return };
        let request = match envelope(&self.namespace, event, SystemTime::now()) {
            Ok(r) => r,
            Err(e) => {
                log::error!("encoding {} event: {e}", E::TOPIC);
                return;
            }
        };
        if tx
            .try_send(Queued {
                request,
                deadline: Instant::now() + EVENT_TTL,
            })
            .is_err()
        {
            log::warn!("event queue full: dropping {} event", E::TOPIC);
        }
    }
}

fn envelope<E: Event>(namespace: &str, event: &E, now: SystemTime) -> Result<ForwardRequest, String> {
    let value = event.write_to_bytes().map_err(|e| e.to_string())?;
    let any = Any {
        type_url: E::TYPE_URL.to_string(),
        value,
        ..Default::default()
    };
    let envelope = Envelope {
        timestamp: MessageField::some(timestamp(now)),
        namespace: namespace.to_string(),
        topic: E::TOPIC.to_string(),
        event: MessageField::some(any),
        ..Default::default()
    };
    Ok(ForwardRequest {
        envelope: MessageField::some(envelope),
        ..Default::default()
    })
}

async fn run(address: String, mut rx: mpsc::Receiver<Queued>) {
    let mut client: Option<EventsClient> = None;
    while let Some(item) = rx.recv().await {
        let topic = item.request.envelope.topic.clone();
        let mut backoff = Duration::from_millis(100);
        let mut last_error = String::new();
        loop {
            if client.is_none() {
                match Client::connect(&address).await {
                    Ok(c) => client = Some(EventsClient::new(c)),
                    Err(e) => last_error = format!("connecting to {address}: {e}"),
                }
            }
            if let Some(c) = &client {
                let ctx = ttrpc::context::with_timeout(FORWARD_TIMEOUT.as_nanos() as i64);
                match c.forward(ctx, &item.request).await {
                    Ok(_) => break,
                    Err(e) => {
                        last_error = format!("forwarding to {address}: {e}");
                        client = None;
                    }
                }
            }
            if Instant::now() + backoff > item.deadline {
                log::warn!("dropping {topic} event after {EVENT_TTL:?}: {last_error}");
                break;
            }
            log::debug!("{topic} event not delivered yet: {last_error}");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_matches_containerd() {
        let exit = TaskExit {
            container_id: "c1".into(),
            id: "c1".into(),
            pid: 42,
            exit_status: 3,
            ..Default::default()
        };
        let now = std::time::UNIX_EPOCH + Duration::from_secs(5);
        let req = envelope("k8s.io", &exit, now).unwrap();
        let env = req.envelope.as_ref().unwrap();
        assert_eq!(env.namespace, "k8s.io");
        assert_eq!(env.topic, "/tasks/exit");
        assert_eq!(env.timestamp.seconds, 5);
        assert_eq!(env.event.type_url, "containerd.events.TaskExit");
        let back = TaskExit::parse_from_bytes(&env.event.value).unwrap();
        assert_eq!(back, exit);
        assert_eq!(<TaskExecStarted as Event>::TOPIC, "/tasks/exec-started");
        assert_eq!(<TaskDelete as Event>::TYPE_URL, "containerd.events.TaskDelete");
    }
}
