//! Pod sandboxes: the record, its state machine, and the store with the name index.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use berth_proto::cri::{PodSandboxConfig, PodSandboxMetadata};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A sandbox's lifecycle. Ready → NotReady (stop) → removed; nothing goes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum State {
    Ready,
    NotReady,
}

/// A pod sandbox as berth keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sandbox {
    pub id: String,
    pub config: PodSandboxConfig,
    pub runtime_handler: String,
    pub state: State,
    pub created_at: i64,
    /// Per-pod files: namespace pins, hostname, hosts, resolv.conf, shm.
    pub dir: PathBuf,
    /// Pinned namespaces, by kind name (`net`, `ipc`, `uts`).
    pub namespaces: Vec<(String, PathBuf)>,
    /// The pod's /dev/shm tmpfs, when it has its own IPC namespace.
    pub shm: Option<PathBuf>,
    /// The process holding the pod's shared PID namespace, if it has one.
    #[serde(default)]
    pub pid_holder: Option<u32>,
    /// How the pod's network namespace is wired (none for host-network pods and once stopped).
    #[serde(default)]
    pub network: Option<berth_cni::Attachment>,
}

impl Sandbox {
    pub fn metadata(&self) -> PodSandboxMetadata {
        self.config.metadata.clone().unwrap_or_default()
    }

    /// The key that makes a pod name unique: name, namespace, uid and attempt, as kubelet sees it.
    pub fn name_key(&self) -> String {
        name_key(&self.metadata())
    }

    pub fn namespace_path(&self, kind: &str) -> Option<&Path> {
        self.namespaces
            .iter()
            .find(|(k, _)| k == kind)
            .map(|(_, p)| p.as_path())
    }

    /// Ready → NotReady; stopping a stopped sandbox is fine.
    pub fn stop(&mut self) {
        self.state = State::NotReady;
    }
}

pub fn name_key(m: &PodSandboxMetadata) -> String {
    format!("{}_{}_{}_{}", m.name, m.namespace, m.uid, m.attempt)
}

/// All sandboxes, in memory and on disk under `<root>/pods/`.
#[derive(Debug)]
pub struct SandboxStore {
    dir: PathBuf,
    by_id: HashMap<String, Sandbox>,
    /// name key → id, including names reserved by a RunPodSandbox in progress.
    names: HashMap<String, String>,
}

impl SandboxStore {
    pub fn open(dir: &Path) -> Result<SandboxStore> {
        let mut s = SandboxStore {
            dir: dir.to_path_buf(),
            by_id: HashMap::new(),
            names: HashMap::new(),
        };
        for mut sb in super::load_all::<Sandbox>(dir)? {
            // After a reboot the pins are gone: such a sandbox cannot be ready any more.
            let lost = sb
                .namespaces
                .iter()
                .any(|(k, p)| k != "pid" && !berth_cni::ns::is_pinned(p));
            if sb.state == State::Ready && lost {
                tracing::warn!(id = %sb.id, "pod sandbox lost its namespaces (reboot?); marking it NotReady");
                sb.stop();
                super::write_json(&dir.join(format!("{}.json", sb.id)), &sb)?;
            }
            s.names.insert(sb.name_key(), sb.id.clone());
            s.by_id.insert(sb.id.clone(), sb);
        }
        Ok(s)
    }

    /// Reserves a pod name for `id`; `AlreadyExists` if another sandbox has it.
    pub fn reserve(&mut self, key: &str, id: &str) -> Result<()> {
        if let Some(owner) = self.names.get(key) {
            return Err(Error::AlreadyExists(format!(
                "pod sandbox name {key:?} is reserved for {owner}"
            )));
        }
        self.names.insert(key.to_string(), id.to_string());
        Ok(())
    }

    pub fn release(&mut self, key: &str, id: &str) {
        if self.names.get(key).is_some_and(|o| o == id) {
            self.names.remove(key);
        }
    }

    /// Where `id`'s record is on disk.
    pub fn file(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// Publishes a record already written to [`SandboxStore::file`].
    pub fn insert(&mut self, sb: Sandbox) {
        self.by_id.insert(sb.id.clone(), sb);
    }

    /// Forgets a record (and its name) whose file was removed.
    pub fn remove(&mut self, id: &str) {
        if let Some(sb) = self.by_id.remove(id) {
            self.release(&sb.name_key(), id);
        }
    }

    pub fn get(&self, id: &str) -> Option<&Sandbox> {
        self.by_id.get(id)
    }

    pub fn all(&self) -> impl Iterator<Item = &Sandbox> {
        self.by_id.values()
    }

    /// The full ID for `id` or a unique prefix of one (crictl shows truncated IDs).
    pub fn resolve(&self, id: &str) -> Result<Option<String>> {
        if self.by_id.contains_key(id) {
            return Ok(Some(id.to_string()));
        }
        super::resolve_prefix(self.by_id.keys(), id, "pod sandbox")
    }
}

/// The namespace options of a pod config (all `POD` when unset).
pub fn namespace_options(cfg: &berth_proto::cri::PodSandboxConfig) -> berth_proto::cri::NamespaceOption {
    cfg.linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone())
        .unwrap_or_default()
}

/// Whether the pod shares the node's network namespace.
pub fn host_network(cfg: &berth_proto::cri::PodSandboxConfig) -> bool {
    namespace_options(cfg).network == berth_proto::cri::NamespaceMode::Node as i32
}
