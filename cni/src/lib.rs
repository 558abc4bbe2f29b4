//! Pod networking for berth: network namespaces, CNI plugin chains, and a built-in bridge done over
//! rtnetlink with its own IPAM and host-port rules.

pub mod bridge;
pub mod cidr;
pub mod config;
pub mod error;
pub mod ipam;
pub mod iptables;
pub mod netlink;
pub mod network;
pub mod ns;
pub mod plugin;
pub mod port;

pub use cidr::Cidr;
pub use config::{BridgeConfig, Mode, NetworkConfig};
pub use error::{Error, Result};
pub use network::{Attachment, Bandwidth, Dns, Network, PodRequest, PortMapping, Protocol};
