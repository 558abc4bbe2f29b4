//! Containers: the record, its state machine, and the store with the name index.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use berth_proto::cri::{ContainerConfig, ContainerState};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Created → Running → Exited; Created → Exited (start failed or killed before start).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum State {
    Created,
    Running,
    Exited,
}

impl State {
    pub fn cri(self) -> ContainerState {
        match self {
            State::Created => ContainerState::ContainerCreated,
            State::Running => ContainerState::ContainerRunning,
            State::Exited => ContainerState::ContainerExited,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Container {
    pub id: String,
    pub sandbox_id: String,
    pub config: ContainerConfig,
    /// The image as the request named it, and the image ID it resolved to.
    pub image_ref: String,
    pub image_id: String,
    pub state: State,
    pub created_at: i64,
    pub started_at: i64,
    pub finished_at: i64,
    pub exit_code: i32,
    pub reason: String,
    pub message: String,
    /// `<state>/containers/<id>`: config.json, rootfs/, fifos.
    pub bundle: PathBuf,
    /// Absolute CRI log path (empty: no log).
    pub log_path: PathBuf,
    pub pid: u32,
    /// The runtime handler's name, and the address of the shim running the task (once started).
    pub handler: String,
    pub shim_address: String,
    /// The rootfs snapshot key.
    pub snapshot: String,
    /// The user the process runs as, as resolved at creation (reported in ContainerStatus).
    #[serde(default)]
    pub user: Option<User>,
    /// The signal StopContainer sends first, as resolved at creation (config, image, SIGTERM).
    /// None in records from before berth resolved it: the image's is read at stop time.
    #[serde(default)]
    pub stop_signal: Option<u32>,
    /// The IDs of the images mounted as image volumes (`Mount.image`): not removable meanwhile.
    #[serde(default)]
    pub image_volumes: Vec<String>,
    /// Made from a checkpoint archive: CRIU's images, restored by StartContainer.
    #[serde(default)]
    pub checkpoint: Option<PathBuf>,
}

impl Container {
    /// A new record in state Created, with nothing run yet (the caller fills in the rest).
    pub fn created(id: &str, sandbox_id: &str, config: ContainerConfig) -> Container {
        Container {
            id: id.to_string(),
            sandbox_id: sandbox_id.to_string(),
            config,
            image_ref: String::new(),
            image_id: String::new(),
            state: State::Created,
            created_at: super::now_ns(),
            started_at: 0,
            finished_at: 0,
            exit_code: 0,
            reason: String::new(),
            message: String::new(),
            bundle: PathBuf::new(),
            log_path: PathBuf::new(),
            pid: 0,
            handler: String::new(),
            shim_address: String::new(),
            snapshot: id.to_string(),
            user: None,
            stop_signal: None,
            image_volumes: Vec::new(),
            checkpoint: None,
        }
    }

    pub fn name(&self) -> &str {
        self.config.metadata.as_ref().map(|m| m.name.as_str()).unwrap_or("")
    }

    /// Running → Exited with the exit status; reason as kubelet reads it.
    pub fn exited(&mut self, status: u32, at_ns: i64) {
        self.state = State::Exited;
        self.exit_code = status as i32;
        self.finished_at = at_ns;
        if self.reason.is_empty() {
            self.reason = if status == 0 {
                "Completed".into()
            } else {
                "Error".into()
            };
        }
    }

    pub fn start(&mut self, pid: u32, at_ns: i64) -> Result<()> {
        if self.state != State::Created {
            return Err(Error::FailedPrecondition(format!(
                "container {} is {:?}, not Created",
                self.id, self.state
            )));
        }
        self.state = State::Running;
        self.pid = pid;
        self.started_at = at_ns;
        Ok(())
    }
}

/// Name key: container name plus the pod's name key, so names are unique per pod and attempt.
pub fn name_key(config: &ContainerConfig, sandbox_key: &str) -> String {
    let m = config.metadata.clone().unwrap_or_default();
    format!("{}_{}_{}", m.name, m.attempt, sandbox_key)
}

/// The containers' records in memory (what reads see) and their names. Changes reach it only after
/// their record is on disk ([`ContainerFiles`]), so a reader never waits on a disk flush.
#[derive(Debug)]
pub struct ContainerStore {
    by_id: HashMap<String, Container>,
    names: HashMap<String, String>,
}

/// The containers' records on disk, one JSON file each, written atomically.
#[derive(Debug)]
pub struct ContainerFiles {
    dir: PathBuf,
}

impl ContainerFiles {
    pub fn new(dir: &Path) -> ContainerFiles {
        ContainerFiles { dir: dir.to_path_buf() }
    }

    /// Writes `c`'s record (with fsyncs). Blocking.
    pub fn write(&self, c: &Container) -> Result<()> {
        super::write_json(&self.dir.join(format!("{}.json", c.id)), c)
    }

    pub fn remove(&self, id: &str) -> Result<()> {
        super::remove_file(&self.dir.join(format!("{id}.json")))
    }
}

impl ContainerStore {
    pub fn open(dir: &Path, sandbox_key: impl Fn(&str) -> Option<String>) -> Result<ContainerStore> {
        let mut s = ContainerStore {
            by_id: HashMap::new(),
            names: HashMap::new(),
        };
        for c in super::load_all::<Container>(dir)? {
            if let Some(k) = sandbox_key(&c.sandbox_id) {
                s.names.insert(name_key(&c.config, &k), c.id.clone());
            }
            s.by_id.insert(c.id.clone(), c);
        }
        Ok(s)
    }

    pub fn reserve(&mut self, key: &str, id: &str) -> Result<()> {
        if let Some(owner) = self.names.get(key) {
            return Err(Error::AlreadyExists(format!(
                "container name {key:?} is reserved for {owner}"
            )));
        }
        self.names.insert(key.to_string(), id.to_string());
        Ok(())
    }

    pub fn release_name(&mut self, id: &str) {
        self.names.retain(|_, v| v != id);
    }

    /// Publishes a record already written by [`ContainerFiles::write`].
    pub fn insert(&mut self, c: Container) {
        self.by_id.insert(c.id.clone(), c);
    }

    /// Forgets a record (and its name) whose file [`ContainerFiles::remove`] removed.
    pub fn remove(&mut self, id: &str) {
        self.by_id.remove(id);
        self.release_name(id);
    }

    pub fn get(&self, id: &str) -> Option<&Container> {
        self.by_id.get(id)
    }

    pub fn all(&self) -> impl Iterator<Item = &Container> {
        self.by_id.values()
    }

    /// Full ID for an ID or unique prefix.
    pub fn resolve(&self, id: &str) -> Result<Option<String>> {
        if self.by_id.contains_key(id) {
            return Ok(Some(id.to_string()));
        }
        super::resolve_prefix(self.by_id.keys(), id, "container")
    }
}

/// uid, gid and additional gids of a container's process, as resolved at CreateContainer.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}
