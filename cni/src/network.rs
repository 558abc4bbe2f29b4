//! Pod networking as the runtime sees it: pick the mode, attach a pod's network namespace, report
//! its addresses, and detach it again, idempotently.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::bridge::{self, BridgeAttachment};
use crate::config::{Mode, NetworkConfig};
use crate::error::{Error, Result};
use crate::ipam::Ipam;
use crate::plugin::{self, ConfList, Invocation};
pub use crate::port::{PortMapping, Protocol};

/// DNS settings passed to CNI plugins that declare the `dns` capability.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    pub servers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

/// Traffic shaping, in bits per second (CNI `bandwidth` capability).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bandwidth {
    pub ingress_rate: Option<u64>,
    pub egress_rate: Option<u64>,
}

/// What the runtime knows of a pod when it wires it up.
#[derive(Debug, Clone, Default)]
pub struct PodRequest {
    /// The sandbox ID (CNI's container ID).
    pub id: String,
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub ports: Vec<PortMapping>,
    pub dns: Dns,
    pub bandwidth: Bandwidth,
    /// The node's pod CIDR(s), from kubelet (CNI `ipRanges`).
    pub pod_cidrs: Vec<String>,
}

/// A CNI attachment: the configuration it was made with (DEL uses the same one even if the
/// directory changed meanwhile) and the chain's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CniAttachment {
    pub conflist: ConfList,
    pub invocation: Invocation,
    pub result: Option<Value>,
}

/// How a pod is attached; recorded (before anything is made) so it can always be undone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum Attachment {
    Cni(CniAttachment),
    Bridge(BridgeAttachment),
}

impl Attachment {
    /// The pod's addresses, primary (IPv4 if any) first.
    pub fn ips(&self) -> Vec<IpAddr> {
        match self {
            Attachment::Cni(c) => c
                .result
                .as_ref()
                .map(|r| plugin::addrs(&plugin::result_ips(r, &c.invocation.ifname)))
                .unwrap_or_default(),
            Attachment::Bridge(b) => b.ips.iter().map(|c| c.addr).collect(),
        }
    }

    pub fn mode(&self) -> &'static str {
        match self {
            Attachment::Cni(_) => "cni",
            Attachment::Bridge(_) => "bridge",
        }
    }
}

/// The pod networking of one runtime.
#[derive(Debug)]
pub struct Network {
    cfg: NetworkConfig,
    ipam: Ipam,
    /// Whether the bridge and its host-wide rules were checked by this process.
    bridge_ready: Mutex<bool>,
}

const IFNAME: &str = "eth0";

impl Network {
    /// `state` is the runtime's state directory (emptied by a reboot); IPAM keeps its files there.
    pub fn new(cfg: NetworkConfig, state: &Path) -> Result<Network> {
        cfg.bridge.validate().map_err(Error::Config)?;
        Ok(Network {
            cfg,
            ipam: Ipam::new(state.join("network/ipam")),
            bridge_ready: Mutex::new(false),
        })
    }

    pub fn config(&self) -> &NetworkConfig {
        &self.cfg
    }

    pub fn ipam(&self) -> &Ipam {
        &self.ipam
    }

    /// The CNI configuration to use now, or why there is none.
    fn cni(&self) -> std::result::Result<ConfList, String> {
        let list = plugin::load(&self.cfg.cni_conf_dir)?;
        plugin::check_installed(&list, &self.cfg.cni_bin_dirs)?;
        Ok(list)
    }

    /// Whether pods can get a network now: `Err(message)` when not (mode `cni` without a usable
    /// configuration). Reads the configuration directory each time, so a configuration that
    /// appears (or breaks) is seen without a restart.
    pub fn ready(&self) -> std::result::Result<(), String> {
        match self.cfg.mode {
            Mode::Bridge => Ok(()),
            Mode::Cni => self
                .cni()
                .map(drop)
                .map_err(|e| format!("cni config uninitialized: {e}")),
            Mode::Auto => {
                // A configuration that exists but is broken is reported, not silently bypassed.
                if has_config_files(&self.cfg.cni_conf_dir) {
                    self.cni().map(drop).map_err(|e| format!("cni config invalid: {e}"))
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Decides how the pod will be attached and reserves what that needs (addresses, for the
    /// bridge). Nothing else on the host changes; [`detach`](Self::detach) undoes it.
    pub fn plan(&self, req: &PodRequest) -> Result<Attachment> {
        let use_cni = match self.cfg.mode {
            Mode::Bridge => false,
            Mode::Cni => true,
            Mode::Auto => has_config_files(&self.cfg.cni_conf_dir),
        };
        if use_cni {
            let conflist = self.cni().map_err(Error::NotReady)?;
            Ok(Attachment::Cni(CniAttachment {
                conflist,
                invocation: invocation(req),
                result: None,
            }))
        } else {
            Ok(Attachment::Bridge(bridge::plan(
                &self.cfg.bridge,
                &self.ipam,
                &req.id,
                &req.ports,
            )?))
        }
    }

    /// Wires the pod's network namespace as planned, filling in the result. On error the caller
    /// runs [`detach`](Self::detach) with the same attachment. Blocking.
    pub fn attach(&self, att: &mut Attachment, pod: &str, netns: &Path) -> Result<()> {
        match att {
            Attachment::Cni(c) => {
                let r = plugin::add(&c.conflist, &self.cfg.cni_bin_dirs, netns, &c.invocation)?;
                c.result = Some(r);
                Ok(())
            }
            Attachment::Bridge(b) => {
                {
                    let mut ready = self.bridge_ready.lock().unwrap_or_else(|e| e.into_inner());
                    if !*ready {
                        bridge::prepare(&self.cfg.bridge)?;
                        *ready = true;
                    }
                }
                bridge::attach(&self.cfg.bridge, b, netns, pod)
            }
        }
    }

    /// Undoes an attachment, whatever part of it was made; fine when the namespace is already gone
    /// (`netns` missing). Idempotent. Blocking.
    pub fn detach(&self, att: &Attachment, pod: &str, netns: &Path) -> Result<()> {
        match att {
            Attachment::Cni(c) => plugin::del(
                &c.conflist,
                &self.cfg.cni_bin_dirs,
                netns,
                &c.invocation,
                c.result.as_ref(),
            ),
            Attachment::Bridge(b) => bridge::detach(&self.ipam, b, pod),
        }
    }

    /// CNI CHECK of an attachment (the bridge has nothing to check beyond its own records).
    pub fn check(&self, att: &Attachment, netns: &Path) -> Result<()> {
        match att {
            Attachment::Cni(c) => match &c.result {
                Some(r) => plugin::check(&c.conflist, &self.cfg.cni_bin_dirs, netns, &c.invocation, r),
                None => Err(Error::NotReady("the pod's network was never set up".into())),
            },
            Attachment::Bridge(_) => Ok(()),
        }
    }
}

fn has_config_files(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|rd| {
        rd.filter_map(|e| e.ok()).any(|e| {
            let p: PathBuf = e.path();
            matches!(
                p.extension().and_then(|x| x.to_str()),
                Some("conflist" | "conf" | "json")
            )
        })
    })
}

fn invocation(req: &PodRequest) -> Invocation {
    let mut rc = serde_json::Map::new();
    let ports: Vec<Value> = req
        .ports
        .iter()
        .filter(|p| p.host_port > 0)
        .map(|p| {
            let mut m = json!({
                "hostPort": p.host_port,
                "containerPort": p.container_port,
                "protocol": match p.protocol { Protocol::Tcp => "tcp", Protocol::Udp => "udp", Protocol::Sctp => "sctp" },
            });
            if let Some(ip) = &p.host_ip {
                m["hostIP"] = json!(ip);
            }
            m
        })
        .collect();
    if !ports.is_empty() {
        rc.insert("portMappings".into(), Value::Array(ports));
    }
    if !(req.dns.servers.is_empty() && req.dns.searches.is_empty() && req.dns.options.is_empty()) {
        rc.insert(
            "dns".into(),
            json!({"servers": req.dns.servers, "searches": req.dns.searches, "options": req.dns.options}),
        );
    }
    if !req.pod_cidrs.is_empty() {
        let ranges: Vec<Value> = req.pod_cidrs.iter().map(|c| json!([{ "subnet": c }])).collect();
        rc.insert("ipRanges".into(), Value::Array(ranges));
    }
    let b = req.bandwidth;
    if b.ingress_rate.is_some() || b.egress_rate.is_some() {
        // Burst as kubelet's CNI integration set it: effectively unlimited.
        let mut m = serde_json::Map::new();
        if let Some(r) = b.ingress_rate {
            m.insert("ingressRate".into(), json!(r));
            m.insert("ingressBurst".into(), json!(i32::MAX));
        }
        if let Some(r) = b.egress_rate {
            m.insert("egressRate".into(), json!(r));
            m.insert("egressBurst".into(), json!(i32::MAX));
        }
        rc.insert("bandwidth".into(), Value::Object(m));
    }
    Invocation {
        container_id: req.id.clone(),
        ifname: IFNAME.into(),
        args: vec![
            ("K8S_POD_NAMESPACE".into(), req.namespace.clone()),
            ("K8S_POD_NAME".into(), req.name.clone()),
            ("K8S_POD_INFRA_CONTAINER_ID".into(), req.id.clone()),
            ("K8S_POD_UID".into(), req.uid.clone()),
        ],
        runtime_config: rc,
    }
}

/// Parses a Kubernetes quantity such as `10M`, `1Gi` or `500k` into a number (of bits per second,
/// for bandwidth annotations).
pub fn parse_quantity(q: &str) -> Option<u64> {
    let q = q.trim();
    let split = q.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult: f64 = match suffix {
        "" => 1.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0f64.powi(4),
        _ => return None,
    };
    let v = n * mult;
    (v.is_finite() && v >= 0.0).then_some(v as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("10M"), Some(10_000_000));
        assert_eq!(parse_quantity("1Gi"), Some(1 << 30));
        assert_eq!(parse_quantity("1.5k"), Some(1500));
        assert_eq!(parse_quantity("12"), Some(12));
        assert_eq!(parse_quantity("x"), None);
        assert_eq!(parse_quantity("5Q"), None);
    }

    #[test]
    fn invocation_carries_kubernetes_args_and_capabilities() {
        let inv = invocation(&PodRequest {
            id: "abc".into(),
            name: "web".into(),
            namespace: "default".into(),
            uid: "u1".into(),
            ports: vec![
                PortMapping {
                    protocol: Protocol::Udp,
                    container_port: 53,
                    host_port: 5353,
                    host_ip: Some("127.0.0.1".into()),
                },
                PortMapping {
                    protocol: Protocol::Tcp,
                    container_port: 80,
                    host_port: 0,
                    host_ip: None,
                },
            ],
            dns: Dns::default(),
            bandwidth: Bandwidth {
                ingress_rate: Some(1000),
                egress_rate: None,
            },
            pod_cidrs: vec!["10.244.1.0/24".into()],
        });
        assert!(inv.args.contains(&("K8S_POD_INFRA_CONTAINER_ID".into(), "abc".into())));
        assert_eq!(
            inv.runtime_config["portMappings"],
            json!([{"hostPort": 5353, "containerPort": 53, "protocol": "udp", "hostIP": "127.0.0.1"}])
        );
        assert!(inv.runtime_config.get("dns").is_none());
        assert_eq!(inv.runtime_config["ipRanges"], json!([[{"subnet": "10.244.1.0/24"}]]));
        assert_eq!(inv.runtime_config["bandwidth"]["ingressRate"], json!(1000));
    }
}
