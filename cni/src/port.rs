//! Host ports forwarded to pod ports, as both the CNI `portMappings` capability and the built-in
//! bridge take them.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

/// A host port forwarded to a pod port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    pub protocol: Protocol,
    pub container_port: u16,
    pub host_port: u16,
    /// Only connections to this host address (all local addresses when unset).
    pub host_ip: Option<String>,
}
