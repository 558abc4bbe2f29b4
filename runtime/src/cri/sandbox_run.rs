use berth_cni::{Bandwidth, Dns, PodRequest, PortMapping};
use berth_proto::cri::{PodSandboxConfig, Protocol, RunPodSandboxRequest, RunPodSandboxResponse};

use super::{Cri, sandbox_setup};
use crate::error::{Error, Result};
use crate::store::sandbox::{Sandbox, State, name_key};
use crate::store::{new_id, now_ns};

impl Cri {
    /// Creates a pod sandbox: reserves its name, makes its namespaces and files, records it Ready.
    /// Any failure undoes what was done and releases the name.
    pub async fn run_pod_sandbox(&self, req: RunPodSandboxRequest) -> Result<RunPodSandboxResponse> {
        let cfg = req
            .config
            .ok_or_else(|| Error::InvalidArgument("RunPodSandbox: config is required".into()))?;
        self.check_pod(&cfg, &req.runtime_handler)?;
        let meta = cfg.metadata.clone().unwrap_or_default();
        let id = new_id()?;
        let key = name_key(&meta);
        let pod = self.pod_request(&id, &cfg)?;
        self.sandboxes().reserve(&key, &id)?;
        let dir = self.config.state.join("pods").join(&id);
        let shm_size = self.config.pod.shm_size;
        let cfg2 = cfg.clone();
        let dir2 = dir.clone();
        let pod_init = self.shim_binary("berth-shim").ok();
        let net = self.network.clone();
        let created = tokio::task::spawn_blocking(move || {
            sandbox_setup::create(&dir2, &cfg2, shm_size, pod_init.as_deref(), &net, pod)
        })
        .await
        .map_err(|e| Error::Internal(format!("sandbox setup task: {e}")));
        let res = match created {
            Ok(Ok(r)) => r,
            Ok(Err(e)) | Err(e) => {
                self.sandboxes().release(&key, &id);
                return Err(e);
            }
        };
        let sb = Sandbox {
            id: id.clone(),
            config: cfg,
            runtime_handler: req.runtime_handler,
            state: State::Ready,
            created_at: now_ns(),
            dir,
            namespaces: res.namespaces,
            shm: res.shm,
            pid_holder: res.pid_holder,
            network: res.network,
        };
        if let Err(e) = self.save_sandbox(sb.clone()) {
            let _ = sandbox_setup::release_sandbox(&sb, &self.network);
            self.sandboxes().release(&key, &id);
            return Err(e);
        }
        berth_image::crash::point("sandbox.record_written");
        self.prelaunch_pod_shim(&sb.runtime_handler, &sb.dir, &id);
        let ips = sb.network.as_ref().map(|n| n.ips()).unwrap_or_default();
        tracing::info!(pod = %key, %id, ?ips, "pod sandbox ready");
        // As containerd: a pod is created and started in one step.
        self.emit(
            &id,
            &id,
            berth_proto::cri::ContainerEventType::ContainerCreatedEvent,
            None,
        );
        self.emit(
            &id,
            &id,
            berth_proto::cri::ContainerEventType::ContainerStartedEvent,
            None,
        );
        Ok(RunPodSandboxResponse { pod_sandbox_id: id })
    }

    /// Refuses a pod config berth cannot run before anything is made: no name, an unknown
    /// handler, bad sysctls (they go into each container's spec: there is no infra container), a
    /// cgroup parent the driver cannot use (containerd refuses it with the pod, not per container).
    fn check_pod(&self, cfg: &PodSandboxConfig, handler: &str) -> Result<()> {
        let meta = cfg
            .metadata
            .clone()
            .ok_or_else(|| Error::InvalidArgument("RunPodSandbox: config.metadata is required".into()))?;
        if meta.name.is_empty() {
            return Err(Error::InvalidArgument(
                "RunPodSandbox: metadata.name is required".into(),
            ));
        }
        for (what, v) in [("name", &meta.name), ("namespace", &meta.namespace), ("uid", &meta.uid)] {
            super::check_name_field("RunPodSandbox", what, v)?;
        }
        self.handler(handler)?;
        let ns = crate::store::sandbox::namespace_options(cfg);
        for (what, mode) in [("network", ns.network), ("pid", ns.pid), ("ipc", ns.ipc)] {
            if berth_proto::cri::NamespaceMode::try_from(mode).is_err() {
                return Err(Error::InvalidArgument(format!(
                    "RunPodSandbox: unknown {what} namespace mode {mode}"
                )));
            }
        }
        if crate::userns::requested(&ns)?.is_some()
            && let Err(why) = &self.host.user_namespaces
        {
            return Err(Error::FailedPrecondition(format!(
                "RunPodSandbox: this host cannot give pods user namespaces: {why}"
            )));
        }
        if let Some(l) = &cfg.linux {
            crate::oci::sysctl::validate(
                &l.sysctls,
                ns.ipc != berth_proto::cri::NamespaceMode::Node as i32,
                ns.network != berth_proto::cri::NamespaceMode::Node as i32,
            )?;
            crate::cgroup::container_path(self.config.cgroup_driver, &l.cgroup_parent, "pod")?;
        }
        Ok(())
    }

    /// What pod networking needs to know of a pod: identity, host ports, DNS, bandwidth limits.
    fn pod_request(&self, id: &str, cfg: &PodSandboxConfig) -> Result<PodRequest> {
        let meta = cfg.metadata.clone().unwrap_or_default();
        let mut ports = Vec::new();
        for p in &cfg.port_mappings {
            if p.host_port <= 0 {
                continue;
            }
            let port = |v: i32, what: &str| {
                u16::try_from(v).ok().filter(|v| *v > 0).ok_or_else(|| {
                    Error::InvalidArgument(format!("RunPodSandbox: port mapping {what} {v} is out of range"))
                })
            };
            let protocol = match Protocol::try_from(p.protocol) {
                Ok(Protocol::Tcp) => berth_cni::Protocol::Tcp,
                Ok(Protocol::Udp) => berth_cni::Protocol::Udp,
                Ok(Protocol::Sctp) => berth_cni::Protocol::Sctp,
                Err(_) => {
                    return Err(Error::InvalidArgument(format!(
                        "RunPodSandbox: unknown port mapping protocol {}",
                        p.protocol
                    )));
                }
            };
            if !p.host_ip.is_empty() && p.host_ip.parse::<std::net::IpAddr>().is_err() {
                return Err(Error::InvalidArgument(format!(
                    "RunPodSandbox: port mapping host_ip {:?} is not an IP address",
                    p.host_ip
                )));
            }
            ports.push(PortMapping {
                protocol,
                container_port: port(p.container_port, "container_port")?,
                host_port: port(p.host_port, "host_port")?,
                host_ip: (!p.host_ip.is_empty()).then(|| p.host_ip.clone()),
            });
        }
        let dns = cfg
            .dns_config
            .as_ref()
            .map(|d| Dns {
                servers: d.servers.clone(),
                searches: d.searches.clone(),
                options: d.options.clone(),
            })
            .unwrap_or_default();
        let rate = |k: &str| -> Result<Option<u64>> {
            match cfg.annotations.get(k) {
                None => Ok(None),
                Some(v) => berth_cni::network::parse_quantity(v).map(Some).ok_or_else(|| {
                    Error::InvalidArgument(format!("RunPodSandbox: annotation {k}: {v:?} is not a quantity"))
                }),
            }
        };
        Ok(PodRequest {
            id: id.to_string(),
            name: meta.name,
            namespace: meta.namespace,
            uid: meta.uid,
            ports,
            dns,
            bandwidth: Bandwidth {
                ingress_rate: rate("kubernetes.io/ingress-bandwidth")?,
                egress_rate: rate("kubernetes.io/egress-bandwidth")?,
            },
            pod_cidrs: self.pod_cidrs.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        })
    }
}
