//! The one place that reaps children.
//!
//! The shim is a child subreaper: besides the `runc` commands it runs, every container init and exec
//! process reparents to it when `runc` exits. One task waits for SIGCHLD, collects every exit with
//! `waitpid(-1, WNOHANG)`, and hands each to whoever subscribed to that pid. Nothing else may wait for
//! children (no `std::process::Child::wait`, no `tokio::process`).
//!
//! An exit can be reaped before anyone subscribes to its pid: a container's init may die while
//! `runc create` is still running, before the shim has read the pid file. Such exits are kept for a
//! while, stamped with the time they were reaped; a subscriber says since when it can have started
//! the process (just before it ran the `runc` command that made it), so a stale exit of an earlier
//! process that had the same pid is never handed over.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use nix::errno::Errno;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::oneshot;

/// How long an exit nobody asked for is kept.
const UNCLAIMED_TTL: Duration = Duration::from_secs(60);

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// The exit code, or 128 + the signal number for a process killed by a signal (as shells and
    /// containerd report it).
    pub status: u32,
    /// When the shim reaped it.
    pub at: SystemTime,
}

impl Exit {
    /// Maps a wait status to an exit, or `None` for statuses that are not exits (stop, continue).
    fn from_wait(status: WaitStatus, at: SystemTime) -> Option<(i32, Exit)> {
        match status {
            WaitStatus::Exited(pid, code) => Some((
                pid.as_raw(),
                Exit {
                    status: code as u32,
                    at,
                },
            )),
            WaitStatus::Signaled(pid, sig, _) => Some((
                pid.as_raw(),
                Exit {
                    status: 128 + sig as u32,
                    at,
                },
            )),
            _ => None,
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    waiters: HashMap<i32, oneshot::Sender<Exit>>,
    unclaimed: HashMap<i32, (Exit, Instant)>,
}

/// Dispatches reaped exits by pid. Cheap to share (`Arc`).
#[derive(Debug, Default)]
pub struct Reaper {
    inner: Mutex<Inner>,
}

impl Reaper {
    /// Installs the SIGCHLD handler and spawns the reaping task on the current runtime. Call it before
    /// the shim starts any child, or an early SIGCHLD could be missed (the first reaping pass would
    /// still collect that exit, but only at the next SIGCHLD).
    pub fn start() -> std::io::Result<Arc<Reaper>> {
        let reaper = Arc::new(Reaper::default());
        let mut sigchld = signal(SignalKind::child())?;
        let r = reaper.clone();
        tokio::spawn(async move {
            loop {
                r.reap_all();
                if sigchld.recv().await.is_none() {
                    return;
                }
            }
        });
        Ok(reaper)
    }

    /// Subscribes to the exit of `pid`, a process started no earlier than `since`. Call it without an
    /// `.await` between spawning the process (or reading its pid) and subscribing.
    pub fn subscribe(&self, pid: i32, since: Instant) -> oneshot::Receiver<Exit> {
        let (tx, rx) = oneshot::channel();
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match inner.unclaimed.remove(&pid) {
            Some((exit, reaped)) if reaped >= since => {
                let _ = tx.send(exit);
            }
            _ => {
                inner.waiters.insert(pid, tx);
            }
        }
        rx
    }

    /// Reaps every child that has exited and dispatches the exits.
    fn reap_all(&self) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
                Ok(status) => {
                    if let Some((pid, exit)) = Exit::from_wait(status, SystemTime::now()) {
                        self.dispatch(pid, exit, Instant::now());
                    }
                }
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    log::warn!("waitpid: {e}");
                    break;
                }
            }
        }
    }

    fn dispatch(&self, pid: i32, exit: Exit, now: Instant) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = inner.waiters.remove(&pid) {
            let _ = tx.send(exit);
            return;
        }
        log::debug!("reaped pid {pid} (status {}) before anyone asked", exit.status);
        inner
            .unclaimed
            .retain(|_, (_, at)| now.duration_since(*at) < UNCLAIMED_TTL);
        inner.unclaimed.insert(pid, (exit, now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::Signal;

    fn exit(status: u32) -> Exit {
        Exit {
            status,
            at: SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn wait_status_mapping() {
        let at = SystemTime::UNIX_EPOCH;
        assert_eq!(
            Exit::from_wait(WaitStatus::Exited(Pid::from_raw(7), 3), at),
            Some((7, exit(3)))
        );
        assert_eq!(
            Exit::from_wait(WaitStatus::Signaled(Pid::from_raw(8), Signal::SIGKILL, false), at),
            Some((8, exit(137)))
        );
        assert_eq!(Exit::from_wait(WaitStatus::StillAlive, at), None);
    }

    #[test]
    fn subscriber_gets_later_exit() {
        let r = Reaper::default();
        let mut rx = r.subscribe(10, Instant::now());
        assert!(rx.try_recv().is_err());
        r.dispatch(10, exit(1), Instant::now());
        assert_eq!(rx.try_recv().unwrap(), exit(1));
    }

    #[test]
    fn early_exit_is_kept_for_a_fresh_subscriber() {
        let r = Reaper::default();
        let since = Instant::now();
        r.dispatch(11, exit(2), Instant::now());
        let mut rx = r.subscribe(11, since);
        assert_eq!(rx.try_recv().unwrap(), exit(2));
    }

    #[test]
    fn stale_exit_of_a_reused_pid_is_not_handed_over() {
        let r = Reaper::default();
        r.dispatch(12, exit(9), Instant::now());
        std::thread::sleep(Duration::from_millis(2));
        let mut rx = r.subscribe(12, Instant::now());
        assert!(rx.try_recv().is_err());
        r.dispatch(12, exit(0), Instant::now());
        assert_eq!(rx.try_recv().unwrap(), exit(0));
    }

    #[test]
    fn unclaimed_exits_expire() {
        let r = Reaper::default();
        let t0 = Instant::now();
        r.dispatch(13, exit(0), t0);
        r.dispatch(14, exit(0), t0 + UNCLAIMED_TTL + Duration::from_secs(1));
        let inner = r.inner.lock().unwrap();
        assert!(!inner.unclaimed.contains_key(&13));
        assert!(inner.unclaimed.contains_key(&14));
    }
}
