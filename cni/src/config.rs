//! The `[network]` section of berth's configuration.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::cidr::Cidr;

/// How pods get their network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// CNI when `cni_conf_dir` holds a network configuration, the built-in bridge otherwise.
    Auto,
    /// CNI plugin chains only; NetworkReady is false until a configuration exists.
    Cni,
    /// The built-in bridge only.
    Bridge,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkConfig {
    pub mode: Mode,
    /// Where CNI network configurations are (`*.conflist`, `*.conf`, `*.json`; the first in name
    /// order is used).
    pub cni_conf_dir: PathBuf,
    /// Where CNI plugin binaries are looked for, in order.
    pub cni_bin_dirs: Vec<PathBuf>,
    pub bridge: BridgeConfig,
}

/// The built-in bridge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BridgeConfig {
    /// The bridge device (at most 15 bytes).
    pub name: String,
    /// The IPv4 pod subnet; the bridge takes its first address as the pods' gateway.
    pub subnet: Cidr,
    /// An IPv6 pod subnet, for dual-stack pods (none by default).
    pub subnet6: Option<Cidr>,
    /// MTU of the bridge and the pods' interfaces.
    pub mtu: u32,
    /// Masquerade traffic from pods to addresses outside the pod subnet (and turn on IP forwarding).
    pub masquerade: bool,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            mode: Mode::Auto,
            cni_conf_dir: "/etc/cni/net.d".into(),
            cni_bin_dirs: vec!["/opt/cni/bin".into(), "/usr/lib/cni".into()],
            bridge: BridgeConfig::default(),
        }
    }
}

impl Default for BridgeConfig {
    fn default() -> Self {
        BridgeConfig {
            name: "berth0".into(),
            subnet: Cidr {
                addr: std::net::Ipv4Addr::new(10, 89, 0, 0).into(),
                prefix: 16,
            },
            subnet6: None,
            mtu: 1500,
            masquerade: true,
        }
    }
}

impl BridgeConfig {
    /// Checks what serde cannot: names, families, sizes.
    pub fn validate(&self) -> Result<(), String> {
        if self.name.is_empty() || self.name.len() > 15 || self.name.contains(['/', ' ', ':']) {
            return Err(format!(
                "network.bridge.name {:?}: a device name of 1 to 15 bytes without '/', ':' or spaces",
                self.name
            ));
        }
        if !self.subnet.is_ipv4() || self.subnet.prefix > 30 {
            return Err(format!(
                "network.bridge.subnet {}: an IPv4 subnet of /30 or larger",
                self.subnet
            ));
        }
        if let Some(s6) = &self.subnet6
            && (s6.is_ipv4() || s6.prefix > 126)
        {
            return Err(format!("network.bridge.subnet6 {s6}: an IPv6 subnet of /126 or larger"));
        }
        if self.mtu != 0 && !(576..=65535).contains(&self.mtu) {
            return Err(format!("network.bridge.mtu {}: between 576 and 65535", self.mtu));
        }
        Ok(())
    }

    /// The gateways (the bridge's own addresses), IPv4 first.
    pub fn gateways(&self) -> Vec<Cidr> {
        [Some(self.subnet), self.subnet6]
            .into_iter()
            .flatten()
            .filter_map(|s| s.nth(1).map(|g| s.with_addr(g)))
            .collect()
    }
}
