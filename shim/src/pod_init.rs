//! `berth-shim pod-init`: the tiny init that holds a pod's shared PID namespace (berth pods have no
//! pause container). It runs as PID 1 of the namespace, reaps every orphan that is reparented to it,
//! and exits on SIGTERM (or dies with SIGKILL, the only signals its ancestors can send an init).

use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};

/// Never returns while the pod lives; returns the exit code on SIGTERM.
pub fn run() -> i32 {
    // Blocked signals are queued even for an init (an unblocked SIG_DFL one would be dropped), so
    // sigwait sees every SIGCHLD and SIGTERM without a handler.
    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    if let Err(e) = set.thread_block() {
        eprintln!("berth-shim pod-init: blocking signals: {e}");
        return 1;
    }
    loop {
        reap_all();
        match set.wait() {
            Ok(Signal::SIGTERM) | Ok(Signal::SIGINT) => return 0,
            Ok(_) => {}
            Err(e) => {
                eprintln!("berth-shim pod-init: sigwait: {e}");
                return 1;
            }
        }
    }
}

fn reap_all() {
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(_) => {}
        }
    }
}
