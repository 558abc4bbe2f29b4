//! Unit tests of the container RPCs over a fake shim ([`FakeLauncher`]): the core's own logic —
//! records, state changes, events, rollback — with no runc, no mounts and no root. The real shims
//! are tested end to end by the root suites in `test/tests/`.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use berth_proto::cri::{
    ContainerConfig, ContainerEventType, ContainerMetadata, ContainerState, ContainerStatusRequest,
    RemoveContainerRequest, StartContainerRequest, StopContainerRequest,
};
use berth_proto::shim::api;

use super::Cri;
use crate::error::{Error, Result};
use crate::shims::{Launcher, Shim, ShimApi};
use crate::store::container::{Container, State};
use crate::store::sandbox::Sandbox;

/// A shim that records the calls it gets and runs "processes" that exit when killed (or when the
/// test says): enough for the core to drive, nothing executed.
#[derive(Debug, Default)]
struct FakeShim {
    calls: Mutex<Vec<String>>,
    /// Containers whose Create fails.
    fail_create: Mutex<HashSet<String>>,
    /// Exit statuses, by `id/exec_id`, once exited.
    exits: Mutex<HashMap<String, u32>>,
    exited: tokio::sync::Notify,
}

impl FakeShim {
    fn record(&self, call: String) {
        self.calls.lock().unwrap().push(call);
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    fn exit(&self, id: &str, exec_id: &str, status: u32) {
        self.exits.lock().unwrap().insert(format!("{id}/{exec_id}"), status);
        self.exited.notify_waiters();
    }
}

#[async_trait::async_trait]
impl ShimApi for FakeShim {
    async fn create(&self, req: &api::CreateTaskRequest) -> Result<api::CreateTaskResponse> {
        self.record(format!("create {}", req.id));
        if self.fail_create.lock().unwrap().contains(&req.id) {
            return Err(Error::Internal("runc create failed: exec format error".into()));
        }
        Ok(api::CreateTaskResponse {
            pid: 4242,
            ..Default::default()
        })
    }
    async fn start(&self, id: &str, exec_id: &str) -> Result<api::StartResponse> {
        self.record(format!("start {id} {exec_id}"));
        Ok(api::StartResponse {
            pid: 4242,
            ..Default::default()
        })
    }
    async fn wait(&self, id: &str, exec_id: &str) -> Result<api::WaitResponse> {
        let key = format!("{id}/{exec_id}");
        loop {
            let notified = self.exited.notified();
            if let Some(status) = self.exits.lock().unwrap().get(&key) {
                return Ok(api::WaitResponse {
                    exit_status: *status,
                    ..Default::default()
                });
            }
            notified.await;
        }
    }
    async fn exec(&self, req: &api::ExecProcessRequest) -> Result<()> {
        self.record(format!("exec {} {}", req.id, req.exec_id));
        Ok(())
    }
    async fn kill_exec(&self, id: &str, exec_id: &str, signal: u32) -> Result<()> {
        self.record(format!("kill {id} {exec_id} {signal}"));
        self.exit(id, exec_id, 128 + signal);
        Ok(())
    }
    async fn delete_exec(&self, id: &str, exec_id: &str) -> Result<api::DeleteResponse> {
        self.record(format!("delete {id} {exec_id}"));
        Ok(Default::default())
    }
    async fn close_io(&self, id: &str, exec_id: &str) -> Result<()> {
        self.record(format!("close_io {id} {exec_id}"));
        Ok(())
    }
    async fn resize_pty(&self, _: &str, _: &str, _: u32, _: u32) -> Result<()> {
        Ok(())
    }
    async fn reopen_log(&self, id: &str) -> Result<()> {
        self.record(format!("reopen_log {id}"));
        Ok(())
    }
    async fn update_resources(&self, id: &str, _: Vec<u8>) -> Result<()> {
        self.record(format!("update {id}"));
        Ok(())
    }
    async fn kill(&self, id: &str, signal: u32, _all: bool) -> Result<()> {
        self.record(format!("kill {id} {signal}"));
        self.exit(id, "", 128 + signal);
        Ok(())
    }
    async fn checkpoint(&self, id: &str, _: &Path, _: &Path, _: Option<std::time::Duration>) -> Result<()> {
        self.record(format!("checkpoint {id}"));
        Ok(())
    }
    async fn delete(&self, id: &str) -> Result<api::DeleteResponse> {
        self.record(format!("delete {id}"));
        Ok(Default::default())
    }
    async fn state(&self, _: &str) -> Result<api::StateResponse> {
        Ok(Default::default())
    }
    async fn shutdown(&self, id: &str) -> Result<()> {
        self.record(format!("shutdown {id}"));
        Ok(())
    }
}

/// Launches nothing: every "shim" is the one [`FakeShim`].
#[derive(Debug, Default)]
struct FakeLauncher {
    shim: Arc<FakeShim>,
    launches: Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl Launcher for FakeLauncher {
    async fn launch(&self, _shim: &Path, _bundle: &Path, id: &str, _events: &Path) -> Result<String> {
        self.launches.lock().unwrap().push(id.to_string());
        Ok(format!("unix:///fake/{id}"))
    }
    async fn connect(&self, _address: &str, _id: &str) -> Result<Shim> {
        Ok(self.shim.clone())
    }
    async fn listening(&self, _socket: &Path) -> bool {
        false
    }
}

struct Harness {
    cri: Arc<Cri>,
    fake: Arc<FakeLauncher>,
    dir: tempfile::TempDir,
}

/// A core on a temporary root, with a fake shim handler as the default and no pod network.
fn harness() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::config::Config {
        root: dir.path().join("root"),
        state: dir.path().join("state"),
        socket: dir.path().join("berth.sock"),
        ..Default::default()
    };
    config.network.mode = berth_cni::Mode::Cni;
    config.network.cni_conf_dir = dir.path().join("cni");
    config.runtime.handlers.insert(
        "fake".into(),
        crate::config::Handler {
            shim: "/bin/true".into(),
            runtime: "runc".into(),
            log_writer: crate::config::LogWriter::Shim,
        },
    );
    config.runtime.default_handler = "fake".into();
    let fake = Arc::new(FakeLauncher::default());
    let cri = Arc::new(Cri::open_with(config, fake.clone()).unwrap());
    Harness { cri, fake, dir }
}

impl Harness {
    /// A ready pod and a created container in it, as CreateContainer leaves them (its bundle
    /// holds no rootfs: the fake shim runs nothing).
    fn created(&self, name: &str) -> String {
        let sb = Sandbox {
            id: "p".repeat(64),
            config: Default::default(),
            runtime_handler: String::new(),
            state: crate::store::sandbox::State::Ready,
            created_at: 0,
            dir: self.dir.path().join("pod"),
            namespaces: vec![],
            shm: None,
            pid_holder: None,
            network: None,
        };
        self.cri.save_sandbox(sb.clone()).unwrap();
        let id = format!("{name:c<64}");
        let config = ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: name.into(),
                attempt: 0,
            }),
            ..Default::default()
        };
        let bundle = self.cri.bundle_dir(&id);
        std::fs::create_dir_all(&bundle).unwrap();
        let c = Container {
            bundle,
            handler: "fake".into(),
            ..Container::created(&id, &sb.id, config)
        };
        drop(self.cri.save_container(&self.cri.container_turn(), c).unwrap());
        id
    }

    fn record(&self, id: &str) -> Option<Container> {
        self.cri.containers().get(id).cloned()
    }
}

async fn next_event(
    rx: &mut (impl futures_util::Stream<Item = berth_proto::cri::ContainerEventResponse> + Unpin),
) -> (String, ContainerEventType) {
    use futures_util::StreamExt as _;
    let e = tokio::time::timeout(std::time::Duration::from_secs(5), rx.next())
        .await
        .expect("an event")
        .unwrap();
    (
        e.container_id,
        ContainerEventType::try_from(e.container_event_type).unwrap(),
    )
}

#[tokio::test]
async fn start_stop_remove_through_the_shim() {
    let h = harness();
    let id = h.created("web");
    let mut events = h.cri.events.stream();
    h.cri
        .start_container(StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap();
    let rec = h.record(&id).unwrap();
    assert_eq!((rec.state, rec.pid), (State::Running, 4242));
    assert!(rec.started_at > 0);
    assert_eq!(
        rec.shim_address,
        format!("unix:///fake/{id}"),
        "the shim it was launched for"
    );
    assert_eq!(*h.fake.launches.lock().unwrap(), std::slice::from_ref(&id));
    assert_eq!(
        next_event(&mut events).await,
        (id.clone(), ContainerEventType::ContainerStartedEvent)
    );

    let st = h
        .cri
        .container_status(ContainerStatusRequest {
            container_id: id[..12].to_string(),
            verbose: false,
        })
        .unwrap()
        .status
        .unwrap();
    assert_eq!(st.state, ContainerState::ContainerRunning as i32);

    h.cri
        .stop_container(StopContainerRequest {
            container_id: id.clone(),
            timeout: 10,
        })
        .await
        .unwrap();
    let rec = h.record(&id).unwrap();
    assert_eq!(
        (rec.state, rec.exit_code),
        (State::Exited, 143),
        "SIGTERM, then recorded by the exit watch"
    );
    assert_eq!(
        next_event(&mut events).await,
        (id.clone(), ContainerEventType::ContainerStoppedEvent)
    );

    h.cri
        .remove_container(RemoveContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap();
    assert!(h.record(&id).is_none());
    assert!(
        !h.dir.path().join(format!("root/containers/{id}.json")).exists(),
        "record file gone"
    );
    let calls = h.fake.shim.calls();
    assert_eq!(
        calls.iter().map(|c| c.split(' ').next().unwrap()).collect::<Vec<_>>(),
        ["create", "start", "kill", "delete", "shutdown"],
        "the task is deleted, then its shim (serving no other container) shut down: {calls:?}"
    );
    assert_eq!(
        next_event(&mut events).await,
        (id.clone(), ContainerEventType::ContainerDeletedEvent)
    );
}

#[tokio::test]
async fn a_failed_start_is_recorded_as_start_error() {
    let h = harness();
    let id = h.created("bad");
    h.fake.shim.fail_create.lock().unwrap().insert(id.clone());
    let mut events = h.cri.events.stream();
    let err = h
        .cri
        .start_container(StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("exec format error"), "{err}");
    let rec = h.record(&id).unwrap();
    assert_eq!(
        (rec.state, rec.exit_code, rec.reason.as_str()),
        (State::Exited, 128, "StartError")
    );
    assert!(rec.message.contains("exec format error"));
    assert_eq!(
        next_event(&mut events).await,
        (id.clone(), ContainerEventType::ContainerStoppedEvent)
    );
    // Persisted: a restarted daemon reads the same record.
    let text = std::fs::read_to_string(h.dir.path().join(format!("root/containers/{id}.json"))).unwrap();
    assert!(text.contains("StartError"));
    // A second start is refused: it is no longer Created.
    let again = h
        .cri
        .start_container(StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap_err();
    assert!(matches!(again, Error::FailedPrecondition(_)), "{again:?}");
}

#[tokio::test]
async fn unknown_containers_are_not_found_and_stop_is_idempotent() {
    let h = harness();
    let err = h
        .cri
        .start_container(StartContainerRequest {
            container_id: "nope".into(),
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound(_)), "{err:?}");
    h.cri
        .stop_container(StopContainerRequest {
            container_id: "nope".into(),
            timeout: 0,
        })
        .await
        .expect("stopping an unknown container succeeds, as kubelet expects");
    assert!(h.fake.shim.calls().is_empty());
}

#[tokio::test]
async fn reads_do_not_wait_for_a_writer() {
    let h = harness();
    let id = h.created("busy");
    // A writer holding its turn (as during an fsync) does not hold readers up.
    let turn = h.cri.container_turn();
    let listed = h.cri.list_containers(Default::default()).unwrap().containers;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, id);
    drop(turn);
}
