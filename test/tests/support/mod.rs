//! A daemon with busybox pulled and one pod under this suite's own cgroup parent, and small helpers
//! to run containers in it, shared by the security, resources/stats and events suites.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use berth_proto::cri::{
    ContainerConfig, ContainerMetadata, ContainerState, ContainerStatus, ContainerStatusRequest,
    CreateContainerRequest, ImageSpec, LinuxContainerConfig, LinuxContainerSecurityContext, LinuxPodSandboxConfig,
    NamespaceMode, NamespaceOption, PodSandboxConfig, PodSandboxMetadata, RemovePodSandboxRequest,
    RunPodSandboxRequest, StartContainerRequest,
};
use berth_proto::tonic::Status;
use berth_test::{Daemon, registry};

pub fn pod_config(name: &str, cgroup_parent: &str, logs: &std::path::Path) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: logs.display().to_string(),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: cgroup_parent.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A container running `sh -c script` in its own PID namespace (kubelet's default).
pub fn container(name: &str, image: &str, script: &str) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: vec!["sh".into(), "-c".into(), script.into()],
        log_path: format!("{name}.log"),
        linux: Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext {
                namespace_options: Some(NamespaceOption {
                    pid: NamespaceMode::Container as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The security context of a config made by [`container`].
pub fn sec(c: &mut ContainerConfig) -> &mut LinuxContainerSecurityContext {
    c.linux.as_mut().unwrap().security_context.as_mut().unwrap()
}

pub struct Pod {
    pub d: Daemon,
    pub id: String,
    pub cfg: PodSandboxConfig,
    pub logs: PathBuf,
    pub image: String,
    pub cgroup_parent: String,
}

impl Pod {
    /// A daemon (configured by `daemon`) with busybox pulled and one pod whose config `adjust` may change.
    pub async fn start(
        cgroup_parent: &str,
        daemon: impl FnOnce(&mut berth_runtime::config::Config),
        adjust: impl FnOnce(&mut PodSandboxConfig),
    ) -> Pod {
        let d = Daemon::start_with(daemon).await.unwrap();
        let image = registry::image("busybox:latest");
        d.pull(&image).await;
        let logs = d.dir.path().join("logs");
        let mut cfg = pod_config("app", cgroup_parent, &logs);
        adjust(&mut cfg);
        let id = d
            .runtime()
            .await
            .unwrap()
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(cfg.clone()),
                runtime_handler: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .pod_sandbox_id;
        Pod {
            d,
            id,
            cfg,
            logs,
            image,
            cgroup_parent: cgroup_parent.into(),
        }
    }

    pub async fn create(&self, cfg: ContainerConfig) -> Result<String, Status> {
        self.d
            .runtime()
            .await
            .unwrap()
            .create_container(CreateContainerRequest {
                pod_sandbox_id: self.id.clone(),
                config: Some(cfg),
                sandbox_config: Some(self.cfg.clone()),
            })
            .await
            .map(|r| r.into_inner().container_id)
    }

    pub async fn start_container(&self, id: &str) -> Result<(), Status> {
        self.d
            .runtime()
            .await
            .unwrap()
            .start_container(StartContainerRequest {
                container_id: id.into(),
            })
            .await
            .map(|_| ())
    }

    pub async fn status(&self, id: &str) -> ContainerStatus {
        self.d
            .runtime()
            .await
            .unwrap()
            .container_status(ContainerStatusRequest {
                container_id: id.into(),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap()
    }

    pub async fn wait_state(&self, id: &str, state: ContainerState) -> ContainerStatus {
        let t0 = Instant::now();
        loop {
            let s = self.status(id).await;
            if s.state == state as i32 {
                return s;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "container {id} never reached {state:?}: {s:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Creates, starts and waits for a container; returns its exit code and what it printed on
    /// stdout and stderr (from its CRI log, in order).
    pub async fn run(&self, cfg: ContainerConfig) -> (i32, String) {
        let (_, code, out) = self.run_id(cfg).await;
        (code, out)
    }

    /// [`Pod::run`], also giving the container's ID.
    pub async fn run_id(&self, cfg: ContainerConfig) -> (String, i32, String) {
        let name = cfg.metadata.as_ref().unwrap().name.clone();
        let id = self
            .create(cfg)
            .await
            .unwrap_or_else(|e| panic!("create {name}: {e:?}"));
        self.start_container(&id)
            .await
            .unwrap_or_else(|e| panic!("start {name}: {e:?}"));
        let st = self.wait_state(&id, ContainerState::ContainerExited).await;
        let log_file = self.logs.join(format!("{name}.log"));
        // The log is complete once the exit is recorded by the shim writing it; allow it a moment.
        let t0 = Instant::now();
        let mut text = std::fs::read_to_string(&log_file).unwrap_or_default();
        while !text.contains("END") && t0.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(20)).await;
            text = std::fs::read_to_string(&log_file).unwrap_or_default();
        }
        let out = text
            .lines()
            .filter_map(|l| l.splitn(4, ' ').nth(3))
            .filter(|l| *l != "END")
            .collect::<Vec<_>>()
            .join("\n");
        (id, st.exit_code, out)
    }

    /// Removes the pod, checks nothing is left running or mounted, and removes the cgroup parent.
    pub async fn finish(self) {
        self.d
            .runtime()
            .await
            .unwrap()
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: self.id.clone(),
            })
            .await
            .unwrap();
        assert!(berth_test::mounts_under(self.d.dir.path()).is_empty());
        berth_test::wait_no_processes(&self.d.config.state).await;
        remove_cgroup(&self.cgroup_parent);
    }
}

/// Removes a test cgroup parent in every hierarchy (v1) or the unified one.
pub fn remove_cgroup(parent: &str) {
    let rel = parent.trim_start_matches('/');
    let _ = std::fs::remove_dir(PathBuf::from("/sys/fs/cgroup").join(rel));
    for ctl in std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
        let _ = std::fs::remove_dir(ctl.path().join(rel));
    }
}
