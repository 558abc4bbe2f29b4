//! The built-in bridge: pod networking with no plugin to run. One Linux bridge holds the pods'
//! gateway address(es); each pod gets a veth pair whose inner end is created straight in the pod's
//! network namespace as `eth0`, with an address from [`Ipam`] and a default route via the bridge.
//! Everything is done in process over rtnetlink; only packet-filter rules use `iptables`.

use std::net::IpAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::cidr::Cidr;
use crate::config::BridgeConfig;
use crate::error::{Error, Result};
use crate::ipam::Ipam;
use crate::iptables::{self, Family};
use crate::netlink::Netlink;
use crate::port::{PortMapping, Protocol};

/// What a pod holds on the bridge, recorded before it is made so it can always be undone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BridgeAttachment {
    pub bridge: String,
    /// The host end of the pod's veth pair.
    pub host_veth: String,
    /// The pod's addresses (with the subnet's prefix length), IPv4 first.
    pub ips: Vec<Cidr>,
    /// Host ports DNATed to the pod.
    pub ports: Vec<PortMapping>,
}

/// The comment on the rules a bridge owns.
pub fn bridge_tag(bridge: &str) -> String {
    format!("berth:bridge:{bridge}")
}

/// The comment on the rules a pod owns.
pub fn pod_tag(pod: &str) -> String {
    format!("berth:pod:{pod}")
}

/// The host-side veth name of a pod: `veth` and 11 hex digits of its ID.
pub fn host_veth_name(pod: &str) -> String {
    let hex: String = pod.chars().filter(char::is_ascii_hexdigit).take(11).collect();
    format!("veth{hex}")
}

/// Makes the bridge, its addresses and the host-wide rules, where missing. Idempotent.
pub fn prepare(cfg: &BridgeConfig) -> Result<()> {
    let mut nl = Netlink::open()?;
    let index = match nl.link_index(&cfg.name)? {
        Some(i) => i,
        None => {
            match nl.add_bridge(&cfg.name, cfg.mtu) {
                Ok(()) => {}
                // Made concurrently by another pod's setup.
                Err(Error::Netlink(_, e)) if e.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) => return Err(e),
            }
            nl.link_index(&cfg.name)?
                .ok_or_else(|| Error::Config(format!("bridge {} vanished after creation", cfg.name)))?
        }
    };
    let have = nl.addresses(index)?;
    for gw in cfg.gateways() {
        if !have.contains(&gw) {
            match nl.add_address(index, gw) {
                Ok(()) => {}
                Err(Error::Netlink(_, e)) if e.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) => return Err(e),
            }
        }
    }
    nl.set_up(index, None)?;
    // Host ports on 127.0.0.1 are DNATed to pods: the kernel must route loopback sources out of the bridge.
    sysctl(&format!("net/ipv4/conf/{}/route_localnet", cfg.name), "1")?;
    if cfg.masquerade {
        sysctl("net/ipv4/ip_forward", "1")?;
        if cfg.subnet6.is_some() {
            sysctl("net/ipv6/conf/all/forwarding", "1")?;
        }
    }
    rules(cfg)
}

fn sysctl(key: &str, value: &str) -> Result<()> {
    let p = Path::new("/proc/sys").join(key);
    if std::fs::read_to_string(&p).is_ok_and(|v| v.trim() == value) {
        return Ok(());
    }
    std::fs::write(&p, value).map_err(Error::io("write", &p))
}

fn rules(cfg: &BridgeConfig) -> Result<()> {
    let tag = bridge_tag(&cfg.name);
    for subnet in [Some(cfg.subnet), cfg.subnet6].into_iter().flatten() {
        let fam = Family::of(subnet.addr);
        iptables::ensure_chain(fam, "nat", iptables::POSTROUTING, "POSTROUTING", &[])?;
        iptables::ensure_chain(
            fam,
            "nat",
            iptables::HOSTPORTS,
            "PREROUTING",
            &["-m", "addrtype", "--dst-type", "LOCAL"],
        )?;
        iptables::ensure_chain(
            fam,
            "nat",
            iptables::HOSTPORTS,
            "OUTPUT",
            &["-m", "addrtype", "--dst-type", "LOCAL"],
        )?;
        iptables::ensure_chain(fam, "filter", iptables::FORWARD, "FORWARD", &[])?;
        let net = subnet.network().to_string();
        let c = ["-m", "comment", "--comment", tag.as_str()];
        for dir in ["-i", "-o"] {
            let mut r = vec![dir, cfg.name.as_str()];
            r.extend_from_slice(&c);
            r.extend_from_slice(&["-j", "ACCEPT"]);
            iptables::ensure_rule(fam, "filter", iptables::FORWARD, &r)?;
        }
        // A pod reaching a host port through a node address whose DNAT leads back into the subnet
        // (another pod, or itself): the answer must come back through the host, so the source is
        // the gateway's.
        let mut r = vec![
            "-s",
            net.as_str(),
            "-d",
            net.as_str(),
            "-m",
            "conntrack",
            "--ctstate",
            "DNAT",
        ];
        r.extend_from_slice(&c);
        r.extend_from_slice(&["-j", "MASQUERADE"]);
        iptables::ensure_rule(fam, "nat", iptables::POSTROUTING, &r)?;
        if cfg.masquerade {
            let mut r = vec!["-s", net.as_str(), "!", "-d", net.as_str()];
            r.extend_from_slice(&c);
            r.extend_from_slice(&["-j", "MASQUERADE"]);
            iptables::ensure_rule(fam, "nat", iptables::POSTROUTING, &r)?;
        }
        if fam == Family::V4 {
            // Host-port connections from 127.0.0.1 leave with a source the pod could not answer.
            let mut r = vec!["-s", "127.0.0.0/8", "-o", cfg.name.as_str()];
            r.extend_from_slice(&c);
            r.extend_from_slice(&["-j", "MASQUERADE"]);
            iptables::ensure_rule(fam, "nat", iptables::POSTROUTING, &r)?;
        }
    }
    Ok(())
}

/// Plans a pod's attachment: allocates its addresses and names its veth. Nothing on the host
/// changes yet but the allocations, which [`detach`] frees.
pub fn plan(cfg: &BridgeConfig, ipam: &Ipam, pod: &str, ports: &[PortMapping]) -> Result<BridgeAttachment> {
    let mut att = BridgeAttachment {
        bridge: cfg.name.clone(),
        host_veth: host_veth_name(pod),
        ips: Vec::new(),
        ports: ports.to_vec(),
    };
    for (subnet, gw) in [Some(cfg.subnet), cfg.subnet6]
        .into_iter()
        .flatten()
        .zip(cfg.gateways())
    {
        match ipam.allocate(&subnet, &[gw.addr], pod) {
            Ok(ip) => att.ips.push(subnet.with_addr(ip)),
            Err(e) => {
                for ip in &att.ips {
                    let _ = ipam.release(ip, ip.addr, pod);
                }
                return Err(e);
            }
        }
    }
    Ok(att)
}

/// Wires the pod in `netns` to the bridge as planned. On error the caller runs [`detach`].
pub fn attach(cfg: &BridgeConfig, att: &BridgeAttachment, netns: &Path, pod: &str) -> Result<()> {
    let ns = std::fs::File::open(netns).map_err(Error::io("open", netns))?;
    let mut nl = Netlink::open()?;
    let bridge = match nl.link_index(&cfg.name)? {
        Some(i) => i,
        None => {
            prepare(cfg)?;
            nl.link_index(&cfg.name)?
                .ok_or_else(|| Error::Config(format!("bridge {} is missing", cfg.name)))?
        }
    };
    nl.add_veth(&att.host_veth, "eth0", &ns, cfg.mtu)?;
    let host = nl
        .link_index(&att.host_veth)?
        .ok_or_else(|| Error::Config(format!("veth {} vanished after creation", att.host_veth)))?;
    nl.set_up(host, Some(bridge))?;
    nl.set_hairpin(host)?;
    let gateways = cfg.gateways();
    let ips = att.ips.clone();
    crate::ns::run_in(netns, move || -> Result<()> {
        let mut nl = Netlink::open()?;
        let eth0 = nl
            .link_index("eth0")?
            .ok_or_else(|| Error::Config("eth0 did not arrive in the pod's namespace".into()))?;
        for ip in &ips {
            nl.add_address(eth0, *ip)?;
        }
        nl.set_up(eth0, None)?;
        for gw in &gateways {
            if ips.iter().any(|ip| ip.is_ipv4() == gw.is_ipv4()) {
                nl.add_default_route(gw.addr)?;
            }
        }
        Ok(())
    })??;
    add_host_ports(att, pod)
}

fn add_host_ports(att: &BridgeAttachment, pod: &str) -> Result<()> {
    let tag = pod_tag(pod);
    for p in &att.ports {
        for ip in &att.ips {
            let host_ip: Option<IpAddr> = p.host_ip.as_deref().and_then(|h| h.parse().ok());
            if host_ip.is_some_and(|h| h.is_ipv4() != ip.is_ipv4()) {
                continue;
            }
            let fam = Family::of(ip.addr);
            let proto = match p.protocol {
                Protocol::Tcp => "tcp",
                Protocol::Udp => "udp",
                Protocol::Sctp => "sctp",
            };
            let dport = p.host_port.to_string();
            let to = match ip.addr {
                IpAddr::V4(a) => format!("{a}:{}", p.container_port),
                IpAddr::V6(a) => format!("[{a}]:{}", p.container_port),
            };
            let dst = host_ip.filter(|h| !h.is_unspecified()).map(|h| h.to_string());
            let mut r = vec!["-p", proto];
            if let Some(d) = &dst {
                r.extend_from_slice(&["-d", d.as_str()]);
            }
            r.extend_from_slice(&[
                "--dport",
                dport.as_str(),
                "-m",
                "comment",
                "--comment",
                tag.as_str(),
                "-j",
                "DNAT",
                "--to-destination",
                to.as_str(),
            ]);
            // A new pod's rule (its tag is its ID): no need to look for it first.
            iptables::append(fam, "nat", iptables::HOSTPORTS, &r)?;
        }
    }
    Ok(())
}

/// Undoes [`plan`] and [`attach`], whatever part of them was done. Idempotent.
pub fn detach(ipam: &Ipam, att: &BridgeAttachment, pod: &str) -> Result<()> {
    let tag = pod_tag(pod);
    let mut fams = vec![Family::V4];
    if att.ips.iter().any(|i| !i.is_ipv4()) {
        fams.push(Family::V6);
    }
    if !att.ports.is_empty() {
        for fam in fams {
            iptables::delete_commented(fam, "nat", iptables::HOSTPORTS, &tag)?;
        }
    }
    Netlink::open()?.del_link(&att.host_veth)?;
    for ip in &att.ips {
        ipam.release(ip, ip.addr, pod)?;
    }
    Ok(())
}

/// Removes a bridge and the host-wide rules made for it (not done by berthd itself: the bridge
/// stays for the next pod, as CNI's bridge plugin leaves its bridge; tests and uninstall use this).
pub fn purge(cfg: &BridgeConfig) -> Result<()> {
    let tag = bridge_tag(&cfg.name);
    for fam in [Family::V4, Family::V6] {
        iptables::delete_commented(fam, "nat", iptables::POSTROUTING, &tag)?;
        iptables::delete_commented(fam, "filter", iptables::FORWARD, &tag)?;
    }
    Netlink::open()?.del_link(&cfg.name)
}
