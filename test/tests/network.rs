//! Pod networking for real, as root: the built-in bridge and Debian's CNI plugins (bridge,
//! host-local, portmap, loopback). Pods get distinct addresses and reach each other, the host
//! reaches host ports on 127.0.0.1 and on the gateway, DNS settings show up in containers, a broken
//! CNI configuration makes NetworkReady false, and removal leaves no veth, rule, allocation or
//! namespace. Traffic only ever goes between pods, the bridge and loopback.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_proto::cri::{
    ContainerConfig, ContainerMetadata, CreateContainerRequest, DnsConfig, ExecSyncRequest, ImageSpec,
    LinuxContainerConfig, LinuxPodSandboxConfig, ListPodSandboxRequest, PodSandboxConfig, PodSandboxMetadata,
    PodSandboxStatusRequest, PortMapping, Protocol, RemovePodSandboxRequest, RunPodSandboxRequest,
    StartContainerRequest, StatusRequest, StopPodSandboxRequest,
};
use berth_proto::tonic::Code;
use berth_test::{Daemon, registry, require_root};

const CGROUP_PARENT: &str = "/berth-test-net";

fn pod(name: &str, ports: Vec<PortMapping>) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "net-test".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        port_mappings: ports,
        dns_config: Some(DnsConfig {
            servers: vec!["10.96.0.10".into()],
            searches: vec!["net-test.svc.cluster.local".into()],
            options: vec!["ndots:5".into()],
        }),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: CGROUP_PARENT.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn port(proto: Protocol, container: i32, host: i32, host_ip: &str) -> PortMapping {
    PortMapping {
        protocol: proto as i32,
        container_port: container,
        host_port: host,
        host_ip: host_ip.into(),
    }
}

/// Host ports unlikely to be taken: derived from the process ID.
fn host_port(n: u16) -> u16 {
    20000 + (std::process::id() % 4000) as u16 * 10 + n
}

struct Pod {
    id: String,
    cfg: PodSandboxConfig,
    ip: String,
}

async fn pull(d: &Daemon) -> String {
    d.pull(&registry::image("busybox:latest")).await
}

/// Runs a pod with one container that serves `reply` on TCP 8080 (one connection at a time, for ever).
async fn serving_pod(d: &Daemon, image: &str, name: &str, ports: Vec<PortMapping>, reply: &str) -> Pod {
    let mut rt = d.runtime().await.unwrap();
    let cfg = pod(name, ports);
    let id = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(cfg.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    let st = rt
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: id.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    let ip = st.network.unwrap().ip;
    assert!(!ip.is_empty(), "pod {name} has an IP");
    let pod = Pod { id, cfg, ip };
    start_in(
        d,
        &pod,
        image,
        "server",
        &format!("while true; do echo {reply} | nc -l -p 8080; done"),
    )
    .await;
    pod
}

async fn containers_of(d: &Daemon, pod: &str) -> Vec<String> {
    d.runtime()
        .await
        .unwrap()
        .list_containers(berth_proto::cri::ListContainersRequest {
            filter: Some(berth_proto::cri::ContainerFilter {
                pod_sandbox_id: pod.into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .containers
        .into_iter()
        .map(|c| c.id)
        .collect()
}

async fn exec(d: &Daemon, pod: &str, cmd: &str) -> (i32, String) {
    let cid = containers_of(d, pod).await.remove(0);
    exec_in_container(d, &cid, cmd).await
}

/// `sh -c cmd` in container `cid`: its exit code, and stdout followed by stderr.
async fn exec_in_container(d: &Daemon, cid: &str, cmd: &str) -> (i32, String) {
    let r = d
        .runtime()
        .await
        .unwrap()
        .exec_sync(ExecSyncRequest {
            container_id: cid.into(),
            cmd: vec!["sh".into(), "-c".into(), cmd.into()],
            timeout: 20,
        })
        .await
        .unwrap()
        .into_inner();
    (
        r.exit_code,
        String::from_utf8_lossy(&r.stdout).to_string() + &String::from_utf8_lossy(&r.stderr),
    )
}

/// Connects from pod `from` to `ip:port` until the server answers.
async fn fetch_in_pod(d: &Daemon, from: &str, ip: &str, port: u16) -> String {
    let t0 = Instant::now();
    loop {
        let (code, out) = exec(d, from, &format!("nc -w 3 {ip} {port} </dev/null")).await;
        if code == 0 && !out.trim().is_empty() {
            return out.trim().to_string();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "no answer from {ip}:{port} in pod {from}: {code} {out}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Connects from the host to `addr` until the server answers.
async fn fetch_from_host(addr: String) -> String {
    tokio::task::spawn_blocking(move || {
        let t0 = Instant::now();
        loop {
            let got = std::net::TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(2)).and_then(
                |mut s| {
                    s.set_read_timeout(Some(Duration::from_secs(3)))?;
                    let mut out = String::new();
                    s.read_to_string(&mut out)?;
                    Ok(out)
                },
            );
            match got {
                Ok(s) if !s.trim().is_empty() => return s.trim().to_string(),
                other => assert!(
                    t0.elapsed() < Duration::from_secs(20),
                    "no answer from {addr} on the host: {other:?}"
                ),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .await
    .unwrap()
}

fn links() -> String {
    let out = std::process::Command::new("ip").args(["-o", "link"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn nat_rules() -> String {
    let out = std::process::Command::new("iptables")
        .args(["-w", "-t", "nat", "-S"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn remove_pod(d: &Daemon, id: &str) {
    let mut rt = d.runtime().await.unwrap();
    rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: id.into(),
    })
    .await
    .unwrap();
    // Stopping twice is fine (kubelet retries).
    rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: id.into(),
    })
    .await
    .unwrap();
    rt.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: id.into(),
    })
    .await
    .unwrap();
}

fn remove_test_cgroups() {
    for ctl in std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
        let _ = std::fs::remove_dir(ctl.path().join(CGROUP_PARENT.trim_start_matches('/')));
    }
    let _ = std::fs::remove_dir(Path::new("/sys/fs/cgroup").join(CGROUP_PARENT.trim_start_matches('/')));
}

/// Two pods, host ports (`ports`: three distinct [`host_port`] numbers, so tests running at once do not
/// share host ports), DNS, then removal; shared by the bridge and the CNI tests.
async fn two_pods_talk(d: &Daemon, gateway: &str, ports: [u16; 3]) -> Vec<String> {
    let image = pull(d).await;
    let [hp_tcp, hp_local, hp_udp] = ports.map(host_port);
    let a = serving_pod(
        d,
        &image,
        "pod-a",
        vec![
            port(Protocol::Tcp, 8080, hp_tcp as i32, ""),
            port(Protocol::Tcp, 8080, hp_local as i32, "127.0.0.1"),
            port(Protocol::Udp, 5353, hp_udp as i32, ""),
        ],
        "pong-from-a",
    )
    .await;
    let b = serving_pod(d, &image, "pod-b", vec![], "pong-from-b").await;
    assert_ne!(a.ip, b.ip, "distinct addresses");

    // Each pod sees its address on eth0, its hostname and its DNS settings.
    let (_, addr) = exec(d, &a.id, "ip -o -4 addr show eth0").await;
    assert!(addr.contains(&format!("inet {}/", a.ip)), "{addr}");
    let (_, resolv) = exec(d, &a.id, "cat /etc/resolv.conf; hostname").await;
    assert_eq!(
        resolv,
        "search net-test.svc.cluster.local\nnameserver 10.96.0.10\noptions ndots:5\npod-a\n"
    );

    // Pod to pod, both ways.
    assert_eq!(fetch_in_pod(d, &b.id, &a.ip, 8080).await, "pong-from-a");
    assert_eq!(fetch_in_pod(d, &a.id, &b.ip, 8080).await, "pong-from-b");
    // Host ports: on 127.0.0.1 (for both mappings) and on the bridge's gateway address.
    assert_eq!(fetch_from_host(format!("127.0.0.1:{hp_tcp}")).await, "pong-from-a");
    assert_eq!(fetch_from_host(format!("127.0.0.1:{hp_local}")).await, "pong-from-a");
    assert_eq!(fetch_from_host(format!("{gateway}:{hp_tcp}")).await, "pong-from-a");
    // From pods through the node's address: another pod, and the pod itself (hairpin).
    assert_eq!(fetch_in_pod(d, &b.id, gateway, hp_tcp).await, "pong-from-a");
    assert_eq!(fetch_in_pod(d, &a.id, gateway, hp_tcp).await, "pong-from-a");
    // UDP host port. busybox's nc has no UDP: the listener is the host's python3, run in the pod's
    // network namespace.
    let netns = d.config.state.join("pods").join(&a.id).join("ns/net");
    let listener = std::process::Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args([
            "python3",
            "-c",
            "import socket,sys\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('0.0.0.0',5353))\n\
             print('ready',flush=True)\ns.settimeout(20)\nprint(s.recv(100).decode().strip(),flush=True)",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let got = tokio::task::spawn_blocking(move || {
        let mut listener = listener;
        let mut out = std::io::BufReader::new(listener.stdout.take().unwrap());
        let mut line = String::new();
        std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        assert_eq!(line.trim(), "ready");
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = stop.clone();
        let sender = std::thread::spawn(move || {
            for _ in 0..100 {
                if stop2.load(std::sync::atomic::Ordering::Relaxed)
                    || sock.send_to(b"datagram-to-a", ("127.0.0.1", hp_udp)).is_err()
                {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        line.clear();
        std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        let _ = listener.wait();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = sender.join();
        line
    })
    .await
    .unwrap();
    assert_eq!(got.trim(), "datagram-to-a", "UDP host port");
    // The mapping bound to 127.0.0.1 is not offered on the gateway address.
    let gw = gateway.to_string();
    let refused = tokio::task::spawn_blocking(move || {
        std::net::TcpStream::connect_timeout(&format!("{gw}:{hp_local}").parse().unwrap(), Duration::from_secs(2))
            .is_err()
    })
    .await
    .unwrap();
    assert!(refused, "host_ip 127.0.0.1 mapping must not answer elsewhere");
    let _ = &a.cfg;

    for p in [&a, &b] {
        remove_pod(d, &p.id).await;
    }
    let list = d
        .runtime()
        .await
        .unwrap()
        .list_pod_sandbox(ListPodSandboxRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .items;
    assert!(list.is_empty());
    remove_test_cgroups();
    vec![a.id, b.id]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtin_bridge_connects_pods_and_forwards_host_ports() {
    require_root!();
    registry::require().await;
    let d = Daemon::start().await.unwrap();
    let bridge = d.config.network.bridge.clone();
    let gateway = bridge.subnet.nth(1).unwrap().to_string();
    let ids = two_pods_talk(&d, &gateway, [1, 2, 3]).await;
    // Nothing left: veths, host-port rules, address allocations, namespaces.
    let l = links();
    for id in &ids {
        assert!(
            !l.contains(&berth_cni::bridge::host_veth_name(id)),
            "veth of {id} left: {l}"
        );
        assert!(
            !nat_rules().contains(&berth_cni::bridge::pod_tag(id)),
            "rules of {id} left"
        );
        assert!(!d.config.state.join("pods").join(id).exists());
    }
    let ipam = berth_cni::ipam::Ipam::new(d.config.state.join("network/ipam"));
    assert!(ipam.allocations().is_empty(), "{:?}", ipam.allocations());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtin_bridge_addresses_survive_a_restart_and_are_not_reused() {
    require_root!();
    let mut d = Daemon::start().await.unwrap();
    let mut rt = d.runtime().await.unwrap();
    let run = |name: &str| RunPodSandboxRequest {
        config: Some(pod(name, vec![])),
        runtime_handler: String::new(),
    };
    let a = rt
        .run_pod_sandbox(run("r-a"))
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    let ip = |rt: &mut berth_proto::cri::runtime_service_client::RuntimeServiceClient<_>, id: String| {
        let mut rt = rt.clone();
        async move {
            rt.pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: id,
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap()
            .network
            .unwrap()
            .ip
        }
    };
    let ip_a = ip(&mut rt, a.clone()).await;
    d.restart().await.unwrap();
    let mut rt = d.runtime().await.unwrap();
    assert_eq!(ip(&mut rt, a.clone()).await, ip_a, "same address after a restart");
    let b = rt
        .run_pod_sandbox(run("r-b"))
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    let ip_b = ip(&mut rt, b.clone()).await;
    assert_ne!(ip_a, ip_b, "an address in use is not handed out again");
    for id in [&a, &b] {
        remove_pod(&d, id).await;
    }
    let ipam = berth_cni::ipam::Ipam::new(d.config.state.join("network/ipam"));
    assert!(ipam.allocations().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_port_mappings_are_refused_and_leave_nothing() {
    require_root!();
    let d = Daemon::start().await.unwrap();
    let mut rt = d.runtime().await.unwrap();
    for bad in [
        port(Protocol::Tcp, 0, 8080, ""),
        port(Protocol::Tcp, 80, 70000, ""),
        port(Protocol::Tcp, 80, 8080, "not-an-ip"),
    ] {
        let err = rt
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(pod("bad", vec![bad])),
                runtime_handler: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    }
    // A bandwidth annotation that is not a quantity.
    let mut cfg = pod("bad", vec![]);
    cfg.annotations
        .insert("kubernetes.io/ingress-bandwidth".into(), "fast".into());
    let err = run(&d, cfg).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("ingress-bandwidth"), "{err:?}");
    assert_eq!(berth_test::count_entries(&d.config.state.join("pods")), 0);
    // The name was not kept by the refused requests.
    let id = run(&d, pod("bad", vec![])).await.unwrap().pod_sandbox_id;
    remove_pod(&d, &id).await;
    // kubelet's pod CIDR: a bad one is refused, good ones (dual-stack) are taken.
    let update = |cidr: &str| berth_proto::cri::UpdateRuntimeConfigRequest {
        runtime_config: Some(berth_proto::cri::RuntimeConfig {
            network_config: Some(berth_proto::cri::NetworkConfig { pod_cidr: cidr.into() }),
        }),
    };
    let err = rt.update_runtime_config(update("10.244.0.0/99")).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    rt.update_runtime_config(update("10.244.1.0/24,fd00:244::/64"))
        .await
        .unwrap();
}

/// Deletes a CNI plugin's bridge when dropped (the plugin leaves it by design), also when a test fails.
struct DelLink(String);

impl Drop for DelLink {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.0])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

async fn run(
    d: &Daemon,
    cfg: PodSandboxConfig,
) -> Result<berth_proto::cri::RunPodSandboxResponse, berth_proto::tonic::Status> {
    d.runtime()
        .await
        .unwrap()
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(cfg),
            runtime_handler: String::new(),
        })
        .await
        .map(|r| r.into_inner())
}

fn cni_dir(d: &Daemon) -> PathBuf {
    d.config.network.cni_conf_dir.clone()
}

/// A conflist for Debian's plugins: bridge + host-local, portmap, loopback.
fn conflist(d: &Daemon, bridge: &str, subnet: &str) -> String {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": format!("berth-test-{bridge}"),
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": subnet}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": d.dir.path().join("cni-ipam"),
                }
            },
            {"type": "portmap", "capabilities": {"portMappings": true}},
            {"type": "loopback"}
        ]
    })
    .to_string()
}

async fn network_ready(d: &Daemon) -> berth_proto::cri::RuntimeCondition {
    let st = d
        .runtime()
        .await
        .unwrap()
        .status(StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    st.status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.r#type == "NetworkReady")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cni_plugins_connect_pods_and_forward_host_ports() {
    require_root!();
    registry::require().await;
    let d = Daemon::start_with(|c| c.network.mode = berth_cni::Mode::Cni)
        .await
        .unwrap();
    // No configuration yet: not ready, with a reason, and pods cannot start.
    let c = network_ready(&d).await;
    assert!(
        !c.status && c.reason == "NetworkPluginNotReady" && !c.message.is_empty(),
        "{c:?}"
    );
    let err = run(&d, pod("early", vec![])).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert_eq!(berth_test::count_entries(&d.config.state.join("pods")), 0);

    // A broken configuration: still not ready, and the message says why.
    std::fs::create_dir_all(cni_dir(&d)).unwrap();
    std::fs::write(cni_dir(&d).join("10-test.conflist"), "{ not json").unwrap();
    let c = network_ready(&d).await;
    assert!(!c.status && c.message.contains("invalid JSON"), "{c:?}");

    // A valid one appears: ready without a restart.
    let bridge = format!("bc{}", std::process::id() % 1_000_000);
    let _del = DelLink(bridge.clone());
    let subnet = format!("10.{}.250.0/24", 128 + std::process::id() % 127);
    let gateway = subnet.replace(".0/24", ".1");
    std::fs::write(cni_dir(&d).join("10-test.conflist"), conflist(&d, &bridge, &subnet)).unwrap();
    let c = network_ready(&d).await;
    assert!(c.status, "{c:?}");

    let ids = two_pods_talk(&d, &gateway, [6, 7, 8]).await;
    // Nothing left: the plugins' veths, portmap's rules, host-local's allocations.
    let l = links();
    assert!(
        !l.lines().any(|line| line.contains(&format!("master {bridge}"))),
        "veths left on {bridge}: {l}"
    );
    let nat = nat_rules();
    for id in &ids {
        assert!(!nat.contains(id.as_str()), "portmap rules of {id} left");
    }
    let allocated: Vec<_> = std::fs::read_dir(d.dir.path().join("cni-ipam"))
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|net| std::fs::read_dir(net.path()).into_iter().flatten().flatten())
        .map(|f| f.file_name().to_string_lossy().to_string())
        .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
        .collect();
    assert!(allocated.is_empty(), "host-local allocations left: {allocated:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_plugin_fails_the_pod_and_leaves_nothing() {
    require_root!();
    let d = Daemon::start_with(|c| c.network.mode = berth_cni::Mode::Cni)
        .await
        .unwrap();
    std::fs::create_dir_all(cni_dir(&d)).unwrap();
    let bridge = format!("bf{}", std::process::id() % 1_000_000);
    let _del = DelLink(bridge.clone());
    // host-local refuses a range it cannot parse: the bridge plugin's ADD fails after making its bridge.
    let mut conf: serde_json::Value = serde_json::from_str(&conflist(&d, &bridge, "10.0.0.0/24")).unwrap();
    conf["plugins"][0]["ipam"]["ranges"] = serde_json::json!([[{"subnet": "10.0.0.0/99"}]]);
    std::fs::write(cni_dir(&d).join("10-test.conflist"), conf.to_string()).unwrap();
    let err = run(&d, pod("failing", vec![])).await.unwrap_err();
    assert!(
        err.message().contains("CNI plugin") && err.message().contains("10.0.0.0/99"),
        "the plugin's message reaches the caller: {err:?}"
    );
    assert_eq!(berth_test::count_entries(&d.config.state.join("pods")), 0);
    assert!(!links().lines().any(|l| l.contains(&format!("master {bridge}"))));
    // The name is free again. (The bridge plugin leaves its bridge by design, and Debian's version
    // cannot reuse one that never had a port: start from none.)
    let _ = std::process::Command::new("ip").args(["link", "del", &bridge]).status();
    std::fs::write(
        cni_dir(&d).join("10-test.conflist"),
        conflist(&d, &bridge, "10.0.0.0/24")
            .replace("10.0.0.0", &format!("10.{}.251.0", 128 + std::process::id() % 127)),
    )
    .unwrap();
    let id = run(&d, pod("failing", vec![])).await.unwrap().pod_sandbox_id;
    remove_pod(&d, &id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_interrupted_before_its_record_is_undone_at_start() {
    require_root!();
    let mut d = Daemon::start().await.unwrap();
    let id = run(&d, pod("torn", vec![port(Protocol::Tcp, 80, host_port(5) as i32, "")]))
        .await
        .unwrap()
        .pod_sandbox_id;
    let veth = berth_cni::bridge::host_veth_name(&id);
    assert!(links().contains(&veth));
    assert!(nat_rules().contains(&berth_cni::bridge::pod_tag(&id)));
    // Its PID namespace holder (a pod-shared PID namespace is the CRI default).
    let holder: i32 = std::fs::read_to_string(d.config.state.join("pods").join(&id).join("pid-holder"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // As if berthd died after wiring the pod but before recording it.
    d.stop().await.unwrap();
    std::fs::remove_file(d.config.root.join("pods").join(format!("{id}.json"))).unwrap();
    d.restart().await.unwrap();
    assert!(!links().contains(&veth), "veth removed");
    assert!(
        !nat_rules().contains(&berth_cni::bridge::pod_tag(&id)),
        "host-port rules removed"
    );
    assert!(!d.config.state.join("pods").join(&id).exists(), "pod directory removed");
    assert!(berth_test::mounts_under(&d.config.state).is_empty());
    let ipam = berth_cni::ipam::Ipam::new(d.config.state.join("network/ipam"));
    assert!(ipam.allocations().is_empty());
    let t0 = Instant::now();
    while std::fs::read(format!("/proc/{holder}/cmdline")).is_ok_and(|c| c.windows(8).any(|w| w == b"pod-init")) {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the pod's PID namespace holder {holder} still runs"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtin_bridge_dual_stack() {
    require_root!();
    registry::require().await;
    let subnet6: berth_cni::Cidr = format!("fd00:b:{:x}::/64", std::process::id() % 0xffff)
        .parse()
        .unwrap();
    // No masquerading: IPv6 forwarding (which changes how the host treats router advertisements)
    // stays as it is.
    let d = Daemon::start_with(|c| {
        c.network.bridge.subnet6 = Some(subnet6);
        c.network.bridge.masquerade = false;
    })
    .await
    .unwrap();
    let image = pull(&d).await;
    let a = serving_pod(&d, &image, "v6-a", vec![], "pong-v6").await;
    let b = serving_pod(&d, &image, "v6-b", vec![], "pong-v6-b").await;
    let st = d
        .runtime()
        .await
        .unwrap()
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: a.id.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap()
        .network
        .unwrap();
    assert!(
        st.ip.parse::<std::net::Ipv4Addr>().is_ok(),
        "IPv4 is the primary address: {st:?}"
    );
    assert_eq!(st.additional_ips.len(), 1, "{st:?}");
    let v6 = st.additional_ips[0].ip.clone();
    assert!(subnet6.contains(v6.parse().unwrap()), "{v6} in {subnet6}");
    let (_, addr) = exec(&d, &a.id, "ip -o -6 addr show eth0 scope global").await;
    assert!(
        addr.contains(&format!("{v6}/64")) && !addr.contains("tentative"),
        "{addr}"
    );
    // Pod to pod and bridge to pod over IPv6.
    assert_eq!(fetch_in_pod(&d, &b.id, &v6, 8080).await, "pong-v6");
    assert_eq!(fetch_from_host(format!("[{v6}]:8080")).await, "pong-v6");
    for p in [&a, &b] {
        remove_pod(&d, &p.id).await;
    }
    remove_test_cgroups();
    let ipam = berth_cni::ipam::Ipam::new(d.config.state.join("network/ipam"));
    assert!(ipam.allocations().is_empty());
}

/// A container of `pod` running `cmd` (`sh -c`); returns its ID once started.
async fn start_in(d: &Daemon, pod: &Pod, image: &str, name: &str, cmd: &str) -> String {
    let mut rt = d.runtime().await.unwrap();
    let c = ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: vec!["sh".into(), "-c".into(), cmd.into()],
        linux: Some(LinuxContainerConfig::default()),
        ..Default::default()
    };
    let cid = rt
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.id.clone(),
            config: Some(c),
            sandbox_config: Some(pod.cfg.clone()),
        })
        .await
        .unwrap()
        .into_inner()
        .container_id;
    rt.start_container(StartContainerRequest {
        container_id: cid.clone(),
    })
    .await
    .unwrap();
    cid
}

/// A pod wired by a CNI chain with no loopback plugin (as many cluster networks' chains are) has its
/// `lo` up anyway, so its containers talk to each other on 127.0.0.1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cni_pod_containers_talk_over_loopback() {
    require_root!();
    registry::require().await;
    let d = Daemon::start_with(|c| c.network.mode = berth_cni::Mode::Cni)
        .await
        .unwrap();
    let bridge = format!("bl{}", std::process::id() % 1_000_000);
    let _del = DelLink(bridge.clone());
    let subnet = format!("10.{}.251.0/24", 128 + std::process::id() % 127);
    let mut conf: serde_json::Value = serde_json::from_str(&conflist(&d, &bridge, &subnet)).unwrap();
    conf["plugins"]
        .as_array_mut()
        .unwrap()
        .retain(|p| p["type"] != "loopback");
    std::fs::create_dir_all(cni_dir(&d)).unwrap();
    std::fs::write(cni_dir(&d).join("10-test.conflist"), conf.to_string()).unwrap();
    let image = pull(&d).await;

    let id = run(&d, pod("lo-pod", vec![])).await.unwrap().pod_sandbox_id;
    let p = Pod {
        id: id.clone(),
        cfg: pod("lo-pod", vec![]),
        ip: String::new(),
    };
    // The server binds 127.0.0.1 itself: with lo down that fails ("Cannot assign requested address").
    start_in(
        &d,
        &p,
        &image,
        "server",
        "mkdir -p /www && echo over-loopback >/www/index.html && exec httpd -f -p 127.0.0.1:8080 -h /www",
    )
    .await;
    let client = start_in(&d, &p, &image, "client", "sleep 1000").await;
    let exec_in = |cmd: &'static str| {
        let (d, client) = (&d, client.clone());
        async move {
            let (code, out) = exec_in_container(d, &client, cmd).await;
            (code, out.trim().to_string())
        }
    };
    let (_, flags) = exec_in("cat /sys/class/net/lo/flags").await;
    let flags = u32::from_str_radix(flags.trim_start_matches("0x"), 16).unwrap();
    assert_eq!(
        flags & 1,
        1,
        "lo is up (IFF_UP) in a CNI pod without a loopback plugin: {flags:#x}"
    );
    let t0 = Instant::now();
    loop {
        let (code, out) = exec_in("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 127.0.0.1 8080").await;
        if code == 0 && out.ends_with("over-loopback") {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the second container never reached the first on 127.0.0.1:8080: {code} {out:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    remove_pod(&d, &id).await;
    remove_test_cgroups();
}
