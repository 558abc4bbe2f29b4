//! One process the shim watches: a container's init or an exec, with its lifecycle state machine.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use berth_proto::shim::api;
use tokio::sync::{oneshot, watch};

use crate::error::{Error, Result};
use crate::io::{ProcessIo, StdioPaths};
use crate::reaper::Exit;

/// How long an exit report waits for the process's output to reach its log.
const DRAIN_LIMIT: Duration = Duration::from_secs(2);

/// Where a process is in its life. Every move goes through a method that refuses illegal ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// An exec that was added but not started: it has no pid yet.
    Added,
    /// A container whose init exists (`runc create`) but has not been started.
    Created,
    Running,
    Stopped(Exit),
}

impl Status {
    /// `Start`: Added or Created → Running.
    pub fn start(self) -> Result<Status> {
        match self {
            Status::Added | Status::Created => Ok(Status::Running),
            Status::Running => Err(Error::FailedPrecondition("process already started".into())),
            Status::Stopped(_) => Err(Error::FailedPrecondition("process already exited".into())),
        }
    }

    /// The process exited. An exit is final: a second one changes nothing.
    pub fn exit(self, exit: Exit) -> Status {
        match self {
            Status::Stopped(_) => self,
            _ => Status::Stopped(exit),
        }
    }

    /// Whether `Kill` may signal the process.
    pub fn check_kill(self) -> Result<()> {
        match self {
            Status::Created | Status::Running => Ok(()),
            Status::Added => Err(Error::FailedPrecondition("process not started".into())),
            Status::Stopped(_) => Err(Error::NotFound("process already finished".into())),
        }
    }

    /// Whether `Delete` may remove the process.
    pub fn check_delete(self) -> Result<()> {
        match self {
            Status::Running => Err(Error::FailedPrecondition(
                "process is running: kill it before deleting it".into(),
            )),
            _ => Ok(()),
        }
    }

    pub fn exit_info(self) -> Option<Exit> {
        match self {
            Status::Stopped(e) => Some(e),
            _ => None,
        }
    }

    pub fn proto(self) -> api::Status {
        match self {
            Status::Added | Status::Created => api::Status::CREATED,
            Status::Running => api::Status::RUNNING,
            Status::Stopped(_) => api::Status::STOPPED,
        }
    }
}

#[derive(Debug)]
struct State {
    status: Status,
    pid: u32,
    io: Option<ProcessIo>,
}

/// A container's init (`exec_id` empty) or one of its execs.
#[derive(Debug)]
pub struct Process {
    pub container_id: String,
    pub exec_id: String,
    pub stdio: StdioPaths,
    state: Mutex<State>,
    exited: watch::Sender<Option<Exit>>,
    /// Serialises Start and Delete of this process.
    pub op: tokio::sync::Mutex<()>,
    /// True while a Start runs: the exit event waits for the start event, so a process that exits
    /// at once is still reported started before exited, as hosts expect.
    starting: watch::Sender<bool>,
}

/// Ends a Start's hold on the exit event when dropped (on success and on every error path).
#[derive(Debug)]
pub struct Starting<'a>(&'a Process);

impl Drop for Starting<'_> {
    fn drop(&mut self) {
        self.0.starting.send_replace(false);
    }
}

impl Process {
    pub fn new(container_id: &str, exec_id: &str, stdio: StdioPaths, status: Status, pid: u32) -> Arc<Process> {
        Arc::new(Process {
            container_id: container_id.to_string(),
            exec_id: exec_id.to_string(),
            stdio,
            state: Mutex::new(State { status, pid, io: None }),
            exited: watch::channel(None).0,
            op: tokio::sync::Mutex::new(()),
            starting: watch::channel(false).0,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The id events and errors use: the exec id, or the container id for init.
    pub fn id(&self) -> &str {
        if self.exec_id.is_empty() {
            &self.container_id
        } else {
            &self.exec_id
        }
    }

    pub fn status(&self) -> Status {
        self.lock().status
    }

    pub fn pid(&self) -> u32 {
        self.lock().pid
    }

    /// Created/Added → Running, with the pid an exec got when it started.
    /// Marks a Start under way until the returned guard is dropped (after the start event).
    pub fn begin_start(&self) -> Starting<'_> {
        self.starting.send_replace(true);
        Starting(self)
    }

    pub fn set_started(&self, pid: u32) -> Result<()> {
        let mut s = self.lock();
        // An init that already exited between `runc start` and now stays Stopped.
        if let Status::Stopped(_) = s.status {
            return Ok(());
        }
        s.status = s.status.start()?;
        s.pid = pid;
        Ok(())
    }

    pub fn set_io(&self, io: ProcessIo) {
        self.lock().io = Some(io);
    }

    pub fn with_io<T>(&self, f: impl FnOnce(&mut ProcessIo) -> T) -> Option<T> {
        self.lock().io.as_mut().map(f)
    }

    /// Drops the shim's stdio ends (the log copiers finish on their own at end-of-file).
    pub fn close_io(&self) {
        self.lock().io = None;
    }

    /// Waits until the process has exited.
    pub async fn wait(&self) -> Exit {
        let mut rx = self.exited.subscribe();
        match rx.wait_for(Option::is_some).await {
            Ok(exit) => exit.expect("wait_for returned a Some"),
            // The sender lives as long as `self`, which the caller borrows.
            Err(_) => unreachable!("exit channel closed while its process is alive"),
        }
    }

    /// Waits at most `limit` for the exit.
    pub async fn wait_timeout(&self, limit: Duration) -> Option<Exit> {
        tokio::time::timeout(limit, self.wait()).await.ok()
    }

    /// Watches for the exit delivered on `exit`: once it comes, lets the output drain into the log,
    /// records it, wakes `Wait`ers and calls `on_exit` (which publishes the event).
    pub fn monitor(
        self: &Arc<Self>,
        exit: oneshot::Receiver<Exit>,
        on_exit: impl FnOnce(&Process, Exit) + Send + 'static,
    ) {
        let p = self.clone();
        tokio::spawn(async move {
            let Ok(exit) = exit.await else { return };
            let copies = p.with_io(ProcessIo::take_copies).unwrap_or_default();
            crate::io::drain(copies, DRAIN_LIMIT).await;
            p.record_exit(exit);
            // Wait and State see the exit at once; the exit event follows any start event.
            let mut starting = p.starting.subscribe();
            let _ = starting.wait_for(|s| !*s).await;
            on_exit(&p, exit);
        });
    }

    fn record_exit(&self, exit: Exit) {
        let mut s = self.lock();
        s.status = s.status.exit(exit);
        let stored = s.status.exit_info();
        drop(s);
        self.exited.send_replace(stored);
    }

    /// The `State` answer for this process.
    pub fn state_response(&self, bundle: &str) -> api::StateResponse {
        let s = self.lock();
        let exit = s.status.exit_info();
        api::StateResponse {
            id: self.container_id.clone(),
            exec_id: self.exec_id.clone(),
            bundle: bundle.to_string(),
            pid: s.pid,
            status: s.status.proto().into(),
            stdin: self.stdio.stdin.clone(),
            stdout: self.stdio.stdout.clone(),
            stderr: self.stdio.stderr.clone(),
            terminal: false,
            exit_status: exit.map_or(0, |e| e.status),
            exited_at: exit.map(|e| crate::time::timestamp(e.at)).into(),
            ..Default::default()
        }
    }

    /// Exit status and time for `Delete`/`Wait` answers; a process that never ran reports 0 at now.
    pub fn exit_or_now(&self) -> Exit {
        self.status().exit_info().unwrap_or(Exit {
            status: 0,
            at: SystemTime::now(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit(status: u32) -> Exit {
        Exit {
            status,
            at: SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn lifecycle() {
        assert_eq!(Status::Created.start().unwrap(), Status::Running);
        assert_eq!(Status::Added.start().unwrap(), Status::Running);
        assert!(matches!(Status::Running.start(), Err(Error::FailedPrecondition(_))));
        assert!(matches!(
            Status::Stopped(exit(0)).start(),
            Err(Error::FailedPrecondition(_))
        ));
        assert_eq!(Status::Running.exit(exit(3)), Status::Stopped(exit(3)));
        assert_eq!(Status::Created.exit(exit(137)), Status::Stopped(exit(137)));
        assert_eq!(Status::Stopped(exit(1)).exit(exit(2)), Status::Stopped(exit(1)));
    }

    #[test]
    fn kill_and_delete_rules() {
        assert!(Status::Created.check_kill().is_ok());
        assert!(Status::Running.check_kill().is_ok());
        assert!(matches!(Status::Added.check_kill(), Err(Error::FailedPrecondition(_))));
        assert!(matches!(Status::Stopped(exit(0)).check_kill(), Err(Error::NotFound(_))));
        assert!(matches!(
            Status::Running.check_delete(),
            Err(Error::FailedPrecondition(_))
        ));
        for s in [Status::Added, Status::Created, Status::Stopped(exit(0))] {
            assert!(s.check_delete().is_ok());
        }
        assert_eq!(Status::Added.proto(), api::Status::CREATED);
        assert_eq!(Status::Stopped(exit(0)).proto(), api::Status::STOPPED);
    }

    #[tokio::test]
    async fn wait_returns_after_monitor_records_the_exit() {
        let p = Process::new("c1", "", StdioPaths::default(), Status::Created, 10);
        p.set_started(10).unwrap();
        let (tx, rx) = oneshot::channel();
        let (seen_tx, seen_rx) = oneshot::channel();
        p.monitor(rx, move |p, e| {
            let _ = seen_tx.send((p.id().to_string(), e.status));
        });
        assert!(p.wait_timeout(Duration::from_millis(20)).await.is_none());
        tx.send(exit(3)).unwrap();
        assert_eq!(p.wait().await, exit(3));
        assert_eq!(seen_rx.await.unwrap(), ("c1".to_string(), 3));
        let st = p.state_response("/b");
        assert_eq!(
            (st.status.enum_value().unwrap(), st.exit_status, st.pid),
            (api::Status::STOPPED, 3, 10)
        );
        // Started after it already exited: stays stopped.
        p.set_started(11).unwrap();
        assert_eq!(p.status(), Status::Stopped(exit(3)));
    }
}
