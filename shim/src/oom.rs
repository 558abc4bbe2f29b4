//! OOM kills of a container, noticed while it runs and recorded in its bundle for berthd.
//!
//! berthd reports a container the OOM killer ended with reason `OOMKilled`. Reading the container's
//! cgroup when the exit arrives is too late under the systemd cgroup driver: the container's
//! transient scope goes as soon as its last process exits. So on cgroup v2 the shim watches the
//! cgroup's `memory.events` (inotify) from `runc create` on, and when `oom_kill` counts one it writes
//! the bundle's [`OOM_MARKER`] — before the exit is reported (see [`guard`]). On cgroup v1 hosts berthd
//! reads `memory.oom_control` at exit (runc keeps cgroupfs cgroups until `delete`).

use std::os::fd::{AsFd as _, AsRawFd as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_proto::contract::OOM_MARKER;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use tokio::sync::oneshot;

/// One container's watch.
#[derive(Debug)]
pub struct Watch {
    events: PathBuf,
    marker: PathBuf,
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
        let kills: u64 = std::fs::read_to_string(&self.events)
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok())
            .unwrap_or(0);
        if kills == 0 {
            return false;
        }
        if let Err(e) = std::fs::write(&self.marker, kills.to_string()) {
            log::warn!("recording an OOM kill in {}: {e}", self.marker.display());
            return false;
        }
        log::info!("OOM kill in {}", self.events.display());
        true
    }
}

/// Starts watching the cgroup of the container whose init is `pid` (run in its cgroup by `runc
/// create`); None where there is nothing to watch (cgroup v1, no memory controller).
pub fn watch(pid: u32, bundle: &Path) -> Option<Arc<Watch>> {
    let events = v2_dir(pid)?.join("memory.events");
    let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).ok()?;
    inotify.add_watch(&events, AddWatchFlags::IN_MODIFY).ok()?;
    // The watch belongs to the inotify instance, which the duplicate keeps open.
    let fd = crate::sys::async_fd(inotify.as_fd().try_clone_to_owned().ok()?).ok()?;
    drop(inotify);
    let w = Arc::new(Watch {
        events,
        marker: bundle.join(OOM_MARKER),
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
pub fn guard<T: Send + 'static>(watch: Option<Arc<Watch>>, exit: oneshot::Receiver<T>) -> oneshot::Receiver<T> {
    let Some(watch) = watch else { return exit };
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        if let Ok(e) = exit.await {
            watch.check();
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
}
