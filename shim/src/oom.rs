//! OOM kills of a container, noticed while it runs and recorded in its bundle for berthd.
//!
//! berthd reports a container the OOM killer ended with reason `OOMKilled`. Reading the container's
//! cgroup when the exit arrives is too late under the systemd cgroup driver: the container's
//! transient scope goes as soon as its last process exits. So on cgroup v2 the shim watches the
//! cgroup's `memory.events` (inotify) from `runc create` on, and when `oom_kill` counts one it writes
//! the bundle's [`OOM_MARKER`] — before the exit is reported (see [`guard`]). If systemd removed the
//! scope before the shim could read the count (a race a slow host loses), a SIGKILLed init whose
//! parent cgroup (the pod's slice: v2 counts are hierarchical) counted a kill since the container
//! started is taken as OOM-killed. On cgroup v1 hosts berthd reads `memory.oom_control` at exit (runc
//! keeps cgroupfs cgroups until `delete`).

use std::os::fd::{AsFd as _, AsRawFd as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_proto::contract::OOM_MARKER;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use tokio::sync::oneshot;

use crate::reaper::Exit;

/// One container's watch.
#[derive(Debug)]
pub struct Watch {
    events: PathBuf,
    marker: PathBuf,
    /// The parent cgroup's `memory.events`, and its kill count when the watch began.
    parent_events: PathBuf,
    parent_base: u64,
}

fn oom_kills(events: &Path) -> Option<u64> {
    std::fs::read_to_string(events)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok())
}

/// The unified-hierarchy cgroup directory of process `pid` (None on a v1 or hybrid host).
fn v2_dir(pid: u32) -> Option<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    if !root.join("cgroup.controllers").exists() {
        return None;
    }
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let rel = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some(root.join(rel.trim().trim_start_matches('/')))
}

impl Watch {
    /// Records an OOM kill the cgroup counts; true once one is recorded.
    pub fn check(&self) -> bool {
        if self.marker.exists() {
            return true;
        }
        match oom_kills(&self.events) {
            Some(n) if n > 0 => self.record(n),
            _ => false,
        }
    }

    fn record(&self, kills: u64) -> bool {
        if let Err(e) = std::fs::write(&self.marker, kills.to_string()) {
            log::warn!("recording an OOM kill in {}: {e}", self.marker.display());
            return false;
        }
        log::info!("OOM kill in {}", self.events.display());
        true
    }

    /// The last look when the init exited with `status`.
    pub fn check_exit(&self, status: u32) -> bool {
        if self.check() {
            return true;
        }
        let sigkill = 128 + nix::sys::signal::Signal::SIGKILL as u32;
        if status == sigkill && !self.events.exists() {
            let parent = oom_kills(&self.parent_events).unwrap_or(0);
            if parent > self.parent_base {
                return self.record(parent - self.parent_base);
            }
        }
        false
    }
}

/// Starts watching the cgroup of the container whose init is `pid` (run in its cgroup by `runc
/// create`); None where there is nothing to watch (cgroup v1, no memory controller).
pub fn watch(pid: u32, bundle: &Path) -> Option<Arc<Watch>> {
    let dir = v2_dir(pid)?;
    let events = dir.join("memory.events");
    let parent_events = dir.parent()?.join("memory.events");
    let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).ok()?;
    inotify.add_watch(&events, AddWatchFlags::IN_MODIFY).ok()?;
    // The watch belongs to the inotify instance, which the duplicate keeps open.
    let fd = crate::sys::async_fd(inotify.as_fd().try_clone_to_owned().ok()?).ok()?;
    drop(inotify);
    let w = Arc::new(Watch {
        events,
        marker: bundle.join(OOM_MARKER),
        parent_base: oom_kills(&parent_events).unwrap_or(0),
        parent_events,
    });
    let watch = w.clone();
    tokio::spawn(async move {
        // Until a kill is recorded or the cgroup is gone (its watch then ends with IN_IGNORED).
        let mut buf = [0u8; 1024];
        while !watch.check() && watch.events.exists() {
            let Ok(mut ready) = fd.readable().await else { return };
            // The events themselves say nothing the file does not: drain them.
            match nix::unistd::read(fd.get_ref().as_raw_fd(), &mut buf) {
                Ok(_) => {}
                Err(nix::errno::Errno::EAGAIN) => ready.clear_ready(),
                Err(_) => return,
            }
        }
    });
    Some(w)
}

/// The exit of a watched container's init, passed on only after a last look at its cgroup: the exit
/// must not be reported before an OOM kill that caused it is recorded.
pub fn guard(watch: Option<Arc<Watch>>, exit: oneshot::Receiver<Exit>) -> oneshot::Receiver<Exit> {
    let Some(watch) = watch else { return exit };
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        if let Ok(e) = exit.await {
            watch.check_exit(e.status);
            let _ = tx.send(e);
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kill_counted_in_memory_events_is_recorded_once() {
        let d = tempfile::tempdir().unwrap();
        let w = Watch {
            events: d.path().join("memory.events"),
            marker: d.path().join(OOM_MARKER),
            parent_events: d.path().join("parent.events"),
            parent_base: 0,
        };
        assert!(!w.check(), "no file: nothing to record");
        std::fs::write(&w.events, "low 0\nhigh 0\nmax 4\noom 1\noom_kill 0\n").unwrap();
        assert!(!w.check());
        assert!(!w.marker.exists());
        std::fs::write(&w.events, "low 0\nhigh 0\nmax 9\noom 2\noom_kill 2\n").unwrap();
        assert!(w.check());
        assert_eq!(std::fs::read_to_string(&w.marker).unwrap(), "2");
        std::fs::remove_file(&w.events).unwrap();
        assert!(w.check(), "recorded stays recorded after the cgroup is gone");
    }

    #[test]
    fn a_scope_gone_before_the_look_is_judged_by_its_parent() {
        let d = tempfile::tempdir().unwrap();
        let parent = d.path().join("parent.events");
        std::fs::write(&parent, "oom 3\noom_kill 3\n").unwrap();
        let w = Watch {
            events: d.path().join("gone/memory.events"),
            marker: d.path().join(OOM_MARKER),
            parent_events: parent.clone(),
            parent_base: 3,
        };
        assert!(!w.check_exit(137), "no kill in the parent since the start");
        std::fs::write(&parent, "oom 4\noom_kill 4\n").unwrap();
        assert!(!w.check_exit(1), "not killed by a signal: not the OOM killer");
        assert!(!w.marker.exists());
        assert!(w.check_exit(137));
        assert_eq!(std::fs::read_to_string(&w.marker).unwrap(), "1");
    }
}
