//! The ttrpc server: the task service under both names hosts use.

pub mod task;

use std::collections::HashMap;
use std::future::Future;
use std::os::unix::net::UnixListener;
use std::sync::Arc;
use std::time::Duration;

use berth_proto::shim::shim_async::{Task, create_task};
use berth_proto::shim::ttrpc::r#async::{Server, Service, transport::Listener};
use berth_proto::{TASK_SERVICE_V2, TASK_SERVICE_V3};

use crate::task::Shim;

/// How long a stopping server waits for open connections to close.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// The task service registered as `containerd.task.v3.Task` (what the generated code calls it) and
/// as the wire-identical `containerd.task.v2.Task` (what containerd 1.6 and berthd call).
pub fn services(shim: Arc<Shim>) -> HashMap<String, Service> {
    let task: Arc<dyn Task + Send + Sync> = Arc::new(task::TaskService::new(shim));
    let mut services = create_task(task.clone());
    debug_assert!(services.contains_key(TASK_SERVICE_V3));
    if let Some(v3) = create_task(task).remove(TASK_SERVICE_V3) {
        services.insert(TASK_SERVICE_V2.to_string(), v3);
    }
    services
}

/// Serves `shim` on `listener` until `stop` resolves, then stops accepting and closes connections.
pub async fn serve(listener: UnixListener, shim: Arc<Shim>, stop: impl Future<Output = ()>) -> std::io::Result<()> {
    let listener = Listener::try_from(listener)?;
    let mut server = Server::new().add_listener(listener).register_service(services(shim));
    server.start().await.map_err(std::io::Error::other)?;
    stop.await;
    if tokio::time::timeout(SHUTDOWN_GRACE, server.shutdown()).await.is_err() {
        log::debug!("connections still open after {SHUTDOWN_GRACE:?}; exiting anyway");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::publisher::Publisher;
    use crate::reaper::Reaper;
    use crate::task::options::Defaults;

    #[test]
    fn both_service_names() {
        let defaults = Defaults {
            binary: "runc".into(),
            root: "/tmp".into(),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let shim = Arc::new(Shim::new(
                "ns".into(),
                defaults,
                Arc::new(Reaper::default()),
                Arc::new(Publisher::start(None, "ns".into())),
            ));
            let s = services(shim);
            let mut names: Vec<_> = s.keys().cloned().collect();
            names.sort();
            assert_eq!(names, vec![TASK_SERVICE_V2.to_string(), TASK_SERVICE_V3.to_string()]);
        });
    }
}
