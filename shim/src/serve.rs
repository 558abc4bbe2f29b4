//! The daemon: what `start` launched, serving the task API on the socket inherited as fd 3.
//!
//! Order matters: become a child subreaper and adopt the listener while the process is still
//! single-threaded, then build a `current_thread` runtime (the shim never runs a second thread), then
//! install the SIGCHLD reaper before anything can start a child.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::signal::unix::{SignalKind, signal};

use crate::args::Flags;
use crate::publisher::Publisher;
use crate::reaper::Reaper;
use crate::task::Shim;
use crate::task::options::Defaults;
use crate::{server, start, sys};

/// Runs the daemon until `Shutdown` (or SIGTERM/SIGINT with no container left).
pub fn run(flags: &Flags) -> std::io::Result<()> {
    nix::sys::prctl::set_child_subreaper(true)?;
    let listener = sys::inherited_listener()?;
    // Do not pin the first container's bundle directory.
    std::env::set_current_dir("/")?;
    let ttrpc_address = std::env::var("TTRPC_ADDRESS").ok();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    log::info!("serving namespace {} (first container {})", flags.namespace, flags.id);
    rt.block_on(async {
        let reaper = Reaper::start()?;
        let publisher = Arc::new(Publisher::start(ttrpc_address, flags.namespace.clone()));
        let shim = Arc::new(Shim::new(
            flags.namespace.clone(),
            Defaults::from_env(),
            reaper,
            publisher,
        ));
        server::serve(listener, shim.clone(), stop(&shim)).await
    })?;
    cleanup(flags);
    log::info!("exiting");
    Ok(())
}

/// Resolves on `Shutdown`, or on SIGTERM/SIGINT when no container is left (with containers, a
/// signal is logged and ignored: exiting would leave them unmanaged).
async fn stop(shim: &Shim) {
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        log::warn!("cannot watch SIGTERM/SIGINT; only Shutdown stops the shim");
        return shim.shutdown_requested().await;
    };
    loop {
        let name = tokio::select! {
            _ = shim.shutdown_requested() => {
                // Let the Shutdown reply reach the host before the connection closes.
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                return;
            }
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        if shim.is_empty() {
            log::info!("{name} with no container left");
            return;
        }
        log::warn!("{name} ignored: containers are still running (Delete them, then Shutdown)");
    }
}

/// Removes the socket (so the next `start` launches a fresh daemon) and our own log file.
fn cleanup(flags: &Flags) {
    if flags.socket.is_empty() {
        return;
    }
    let socket = PathBuf::from(&flags.socket);
    remove(&socket);
    remove(&start::log_path(&socket));
}

fn remove(path: &Path) {
    if let Err(e) = std::fs::remove_file(path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        log::warn!("removing {}: {e}", path.display());
    }
}
