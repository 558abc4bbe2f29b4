//! The built-in bridge on real namespaces (root): two pods get distinct addresses, talk to each
//! other over the bridge, and leave nothing behind when detached.

use std::process::{Command, Stdio};
use std::time::Duration;

use berth_cni::ns;
use berth_cni::{Attachment, BridgeConfig, Mode, Network, NetworkConfig, PodRequest};

fn root() -> bool {
    berth_test_report::root_or_not_tested("cni bridge suite", "namespaces, netlink")
}

fn nsenter(netns: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args(args)
        .output()
        .unwrap()
}

fn links() -> String {
    String::from_utf8_lossy(&Command::new("ip").args(["-o", "link"]).output().unwrap().stdout).into_owned()
}

#[test]
fn two_pods_on_the_builtin_bridge() {
    if !root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let name = format!("btc{}", std::process::id() % 100000);
    let cfg = NetworkConfig {
        mode: Mode::Bridge,
        bridge: BridgeConfig {
            name: name.clone(),
            subnet: "10.213.7.0/24".parse().unwrap(),
            ..BridgeConfig::default()
        },
        ..NetworkConfig::default()
    };
    let net = Network::new(cfg.clone(), dir.path()).unwrap();
    let mut pods = Vec::new();
    for i in 0..2 {
        let id = format!("{i:x}{}", "0123456789abcdef".repeat(4))[..64].to_string();
        let pins = ns::create(
            &dir.path().join(&id),
            &ns::Request {
                kinds: vec![ns::Kind::Net],
                hostname: None,
            },
        )
        .unwrap();
        let netns = pins[0].1.clone();
        let mut att = net
            .plan(&PodRequest {
                id: id.clone(),
                ..PodRequest::default()
            })
            .unwrap();
        net.attach(&mut att, &id, &netns).unwrap();
        pods.push((id, netns, att));
    }
    let ips: Vec<_> = pods.iter().map(|p| p.2.ips()).collect();
    assert_eq!(ips[0].len(), 1);
    assert_ne!(ips[0], ips[1], "distinct addresses");
    assert!(matches!(pods[0].2, Attachment::Bridge(_)));
    // Inside: eth0 with the address, lo up, a default route via the gateway.
    let addr = nsenter(&pods[0].1, &["ip", "-o", "-4", "addr", "show", "eth0"]);
    assert!(String::from_utf8_lossy(&addr.stdout).contains(&format!("{}/24", ips[0][0])));
    // The host end is a hairpin bridge port (a pod may reach itself through a NATed address).
    let port = Command::new("ip")
        .args(["-d", "link", "show", &berth_cni::bridge::host_veth_name(&pods[0].0)])
        .output()
        .unwrap();
    let port = String::from_utf8_lossy(&port.stdout);
    assert!(
        port.contains(&format!("master {name}")) && port.contains("hairpin on"),
        "{port}"
    );
    let route = nsenter(&pods[0].1, &["ip", "route", "show", "default"]);
    assert!(String::from_utf8_lossy(&route.stdout).contains("via 10.213.7.1 dev eth0"));
    // Traffic: pod 1 → pod 0.
    let server = Command::new("nsenter")
        .arg(format!("--net={}", pods[0].1.display()))
        .args(["busybox", "nc", "-l", "-p", "8080"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut sent = false;
    for _ in 0..50 {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "echo hello-over-bridge | nsenter --net={} busybox nc -w 2 {} 8080",
                pods[1].1.display(),
                ips[0][0]
            ))
            .output()
            .unwrap();
        if out.status.success() {
            sent = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if !sent {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(server.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        panic!("pod 1 could not connect to pod 0");
    }
    let out = server.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "hello-over-bridge");
    // Detach: veths and allocations go (twice is fine).
    for (id, netns, att) in &pods {
        net.detach(att, id, netns).unwrap();
        net.detach(att, id, netns).unwrap();
        ns::remove(netns).unwrap();
    }
    assert!(net.ipam().allocations().is_empty());
    for (id, _, _) in &pods {
        assert!(!links().contains(&berth_cni::bridge::host_veth_name(id)));
    }
    berth_cni::bridge::purge(&cfg.bridge).unwrap();
    assert!(!links().contains(&format!(" {name}:")));
}

/// Debian's CNI plugins through berth's chain runner: ADD gives an address, CHECK passes, DEL
/// removes the veth and the allocation (and a second DEL is fine).
#[test]
fn cni_chain_add_check_del() {
    if !root() {
        return;
    }
    let bin = std::path::Path::new("/usr/lib/cni");
    if !bin.join("bridge").exists() {
        panic!("Debian's containernetworking-plugins are needed in /usr/lib/cni (hack/install-deps.sh)");
    }
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("conf");
    std::fs::create_dir_all(&conf).unwrap();
    let bridge = format!("bcc{}", std::process::id() % 100000);
    let ipam_dir = dir.path().join("ipam");
    std::fs::write(
        conf.join("10-t.conflist"),
        serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "t",
            "plugins": [
                {"type": "bridge", "bridge": bridge, "isGateway": true,
                 "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.213.9.0/24"}]], "dataDir": ipam_dir}},
                {"type": "portmap", "capabilities": {"portMappings": true}},
                {"type": "loopback"}
            ]
        })
        .to_string(),
    )
    .unwrap();
    let net = Network::new(
        NetworkConfig {
            mode: Mode::Cni,
            cni_conf_dir: conf.clone(),
            cni_bin_dirs: vec![bin.to_path_buf()],
            ..NetworkConfig::default()
        },
        dir.path(),
    )
    .unwrap();
    net.ready().unwrap();
    let id = "c".repeat(64);
    let pins = ns::create(
        &dir.path().join("ns"),
        &ns::Request {
            kinds: vec![ns::Kind::Net],
            hostname: None,
        },
    )
    .unwrap();
    let netns = pins[0].1.clone();
    let mut att = net
        .plan(&PodRequest {
            id: id.clone(),
            name: "p".into(),
            namespace: "n".into(),
            uid: "u".into(),
            ..PodRequest::default()
        })
        .unwrap();
    net.attach(&mut att, &id, &netns).unwrap();
    let ips = att.ips();
    assert_eq!(ips.len(), 1, "{att:?}");
    assert!(ips[0].to_string().starts_with("10.213.9."));
    net.check(&att, &netns).unwrap();
    let lo = nsenter(&netns, &["ip", "-o", "link", "show", "lo"]);
    assert!(String::from_utf8_lossy(&lo.stdout).contains("UP"), "loopback up");
    net.detach(&att, &id, &netns).unwrap();
    net.detach(&att, &id, &netns).unwrap();
    let eth0 = nsenter(&netns, &["ip", "-o", "link", "show", "eth0"]);
    assert!(!eth0.status.success(), "eth0 removed by DEL");
    let left: Vec<_> = std::fs::read_dir(ipam_dir.join("t"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("10."))
        .collect();
    assert!(left.is_empty(), "host-local allocations left: {left:?}");
    ns::remove(&netns).unwrap();
    let _ = Command::new("ip").args(["link", "del", &bridge]).status();
}
