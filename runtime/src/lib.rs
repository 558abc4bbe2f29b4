//! berthd, the berth CRI daemon, as a library: configuration, the CRI core and the gRPC server.
//! The binary (`main.rs`) only parses flags, sets up logging and signals, and calls [`run`].

mod cdi;
mod cgroup;
mod checkpoint;
pub mod cli;
pub mod config;
mod cri;
mod crilog;
mod error;
mod events;
mod mounts;
mod oci;
mod oom;
mod server;
mod shim_client;
mod shims;
mod store;
mod streaming;
mod sys;
mod userns;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context as _;

use crate::cri::Cri;

/// How long in-flight requests may run after a shutdown signal.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Opens the stores, binds the socket and serves until `shutdown` completes; removes the socket after.
pub async fn run(config: config::Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    if config.cgroup_driver == config::CgroupDriver::Systemd && !cgroup::systemd_booted() {
        anyhow::bail!(
            "cgroup_driver = \"systemd\" needs systemd as this host's init (PID 1), and there is no \
             /run/systemd/system here: set cgroup_driver = \"cgroupfs\" (and kubelet's cgroupDriver: cgroupfs)"
        );
    }
    for dir in [&config.root, &config.state] {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    let socket = config.socket.clone();
    let events_socket = config.state.join("events.sock");
    let cri = tokio::task::spawn_blocking(move || Cri::open(config))
        .await
        .context("open stores")?
        .context("open stores")?;
    let cri = Arc::new(cri);
    let _events = cri.start_background().await.context("start shim events endpoint")?;
    let listener = server::bind(&socket)
        .await
        .with_context(|| format!("bind {}", socket.display()))?;
    let stream_listener = streaming::bind(&cri.config().stream, &cri.stream)
        .await
        .context("bind the streaming server")?;
    let (stream_stop, stream_stop_rx) = tokio::sync::watch::channel(false);
    tracing::info!(address = %stream_listener.local_addr().context("streaming address")?, "streaming server listening");
    tokio::spawn(streaming::serve(
        stream_listener,
        cri.clone(),
        cri.stream.clone(),
        stream_stop_rx,
    ));
    tracing::info!(socket = %socket.display(), version = env!("CARGO_PKG_VERSION"), "berthd serving CRI");
    // On shutdown, in-flight requests get a grace period; clients that keep idle connections open
    // (kubelet does) must not hold the daemon up past it.
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = server::serve(listener, cri.clone(), async {
        let _ = stop_rx.await;
    });
    tokio::pin!(server);
    let res = tokio::select! {
        res = &mut server => res,
        () = shutdown => {
            let _ = stop_tx.send(());
            cri.close_events();
            match tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await {
                Ok(res) => res,
                Err(_) => {
                    tracing::warn!(grace_s = SHUTDOWN_GRACE.as_secs(), "connections still open after the grace period; stopping anyway");
                    Ok(())
                }
            }
        }
    };
    let _ = stream_stop.send(true);
    let _ = std::fs::remove_file(&socket);
    drop(_events);
    let _ = std::fs::remove_file(&events_socket);
    res.context("serve CRI")?;
    tracing::info!("berthd stopped");
    Ok(())
}
