//! What a pod sandbox owns on the host, made and unmade: pinned namespaces, the files its containers
//! mount (`hostname`, `hosts`, `resolv.conf`) and its `/dev/shm` tmpfs. There is no infra ("pause")
//! container: namespaces are held by bind mounts, which costs no process and no memory.

use std::path::{Path, PathBuf};

use berth_cni::{Attachment, Network, PodRequest, ns};
use berth_image::crash::point as crash_point;
use berth_proto::cri::{DnsConfig, NamespaceMode, PodSandboxConfig};
use nix::mount::{MntFlags, MsFlags};

use crate::error::{Error, Result};
use crate::store::sandbox::{Sandbox, namespace_options};

/// Host resources of a new sandbox, undone by [`release`] (also when creation fails half-way).
#[derive(Debug, Default)]
pub struct Resources {
    pub namespaces: Vec<(String, PathBuf)>,
    pub shm: Option<PathBuf>,
    /// The `unshare` process whose child, berth-shim pod-init, holds the pod's shared PID namespace.
    pub pid_holder: Option<u32>,
    pub network: Option<Attachment>,
}

/// The file in a pod's directory that records its network attachment before it is made, so an
/// interrupted RunPodSandbox can be undone after a crash.
pub const NETWORK_PLAN: &str = "network.json";

/// The file in a pod's directory naming its PID-namespace holder process.
const PID_HOLDER: &str = "pid-holder";

/// Makes everything the sandbox in `dir` needs. On error, whatever was made is removed again.
/// Blocking.
pub fn create(
    dir: &Path,
    cfg: &PodSandboxConfig,
    shm_size: u64,
    pod_init: Option<&Path>,
    net: &Network,
    pod: PodRequest,
) -> Result<Resources> {
    std::fs::create_dir_all(dir).map_err(Error::io(format!("create {}", dir.display())))?;
    let mut res = Resources::default();
    let made = fill(dir, cfg, shm_size, pod_init, &mut res).and_then(|()| {
        crash_point("sandbox.namespaces_made");
        connect(dir, net, pod, &mut res)?;
        crash_point("sandbox.network_attached");
        Ok(())
    });
    match made {
        Ok(()) => Ok(res),
        Err(e) => {
            // A half-made network may not tear down cleanly (the plugin that failed ADD often fails
            // DEL too): say so, and remove the rest anyway, since no record will point at it.
            if let Some(att) = res.network.take()
                && let Err(undo) = disconnect(dir, &att, &res.namespaces, net)
            {
                tracing::warn!(dir = %dir.display(), error = %undo, "network cleanup after a failed RunPodSandbox");
            }
            if let Err(undo) = release(dir, &res, net) {
                tracing::error!(dir = %dir.display(), error = %undo, "cleanup after a failed RunPodSandbox");
            }
            Err(e)
        }
    }
}

fn fill(dir: &Path, cfg: &PodSandboxConfig, shm_size: u64, pod_init: Option<&Path>, res: &mut Resources) -> Result<()> {
    let opts = namespace_options(cfg);
    let host_net = opts.network == NamespaceMode::Node as i32;
    let host_ipc = opts.ipc == NamespaceMode::Node as i32;
    // A pod that names no hostname gets the node's, as containerd gives it (kubelet always names
    // one; a metadata name need not be a valid hostname).
    let hostname = if host_net || cfg.hostname.is_empty() {
        nix::unistd::gethostname()
            .map_err(|e| Error::Internal(format!("gethostname: {e}")))?
            .to_string_lossy()
            .to_string()
    } else {
        cfg.hostname.clone()
    };
    if let Some(maps) = crate::userns::requested(&opts)? {
        own_user_namespace(
            dir,
            maps,
            &hostname,
            opts.pid == NamespaceMode::Pod as i32,
            pod_init,
            res,
        )?;
        return finish(dir, cfg, shm_size, host_net, host_ipc, &hostname, res);
    }
    let mut kinds = Vec::new();
    if !host_net {
        // The pod's UTS namespace goes with its network: a host-network pod keeps the node's name.
        kinds.extend([ns::Kind::Net, ns::Kind::Uts]);
        ns::validate_hostname(&hostname)?;
    }
    if !host_ipc {
        kinds.push(ns::Kind::Ipc);
    }
    if !kinds.is_empty() {
        let pins = ns::create(
            &dir.join("ns"),
            &ns::Request {
                kinds,
                hostname: (!host_net).then(|| hostname.clone()),
            },
        )?;
        res.namespaces = pins.into_iter().map(|(k, p)| (k.name().to_string(), p)).collect();
    }
    if opts.pid == NamespaceMode::Pod as i32 {
        let init = pod_init.ok_or_else(|| {
            Error::FailedPrecondition(
                "a pod-shared PID namespace needs berth-shim (pod-init), which was not found".into(),
            )
        })?;
        let (holder, ns_path) = start_pid_holder(init)?;
        res.pid_holder = Some(holder);
        // Recorded beside the pod too, so a pod whose record was never written can still end it.
        write(dir, PID_HOLDER, &holder.to_string())?;
        let pin = dir.join("ns").join("pid");
        std::fs::create_dir_all(dir.join("ns")).map_err(Error::io("create ns dir"))?;
        ns::pin(&ns_path, &pin)?;
        res.namespaces.push(("pid".into(), pin));
    }
    finish(dir, cfg, shm_size, host_net, host_ipc, &hostname, res)
}

/// The pod's files and its /dev/shm.
fn finish(
    dir: &Path,
    cfg: &PodSandboxConfig,
    shm_size: u64,
    host_net: bool,
    host_ipc: bool,
    hostname: &str,
    res: &mut Resources,
) -> Result<()> {
    write(dir, "hostname", &format!("{hostname}\n"))?;
    write(dir, "hosts", &hosts_file(host_net))?;
    write(dir, "resolv.conf", &resolv_conf(cfg.dns_config.as_ref()))?;
    if !host_ipc {
        let shm = dir.join("shm");
        std::fs::create_dir_all(&shm).map_err(Error::io(format!("create {}", shm.display())))?;
        nix::mount::mount(
            Some("shm"),
            &shm,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some(format!("mode=1777,size={shm_size}").as_str()),
        )
        .map_err(|e| Error::Internal(format!("mount shm tmpfs on {}: {e}", shm.display())))?;
        res.shm = Some(shm);
    }
    Ok(())
}

/// A pod with a user namespace of its own (`maps`): a process unshares it together with the pod's
/// network, UTS and IPC namespaces — so that the user namespace owns them, as the pod's root needs
/// to mount sysfs and mqueue and set the hostname — and berthd pins them. The process is a
/// `sleep` ended once they are pinned or, for a pod-shared PID namespace, the `unshare … pod-init`
/// holder that lives with the pod (its PID namespace then belongs to the user namespace too).
fn own_user_namespace(
    dir: &Path,
    maps: crate::userns::Maps,
    hostname: &str,
    shared_pid: bool,
    pod_init: Option<&Path>,
    res: &mut Resources,
) -> Result<()> {
    use nix::sched::CloneFlags;
    use std::os::unix::process::CommandExt as _;
    let mut cmd = if shared_pid {
        let init = pod_init.ok_or_else(|| {
            Error::FailedPrecondition(
                "a pod-shared PID namespace needs berth-shim (pod-init), which was not found".into(),
            )
        })?;
        let mut c = std::process::Command::new("unshare");
        c.args(["--pid", "--fork", "--kill-child"]).arg(init).arg("pod-init");
        c
    } else {
        let mut c = std::process::Command::new("sleep");
        c.arg("infinity");
        c
    };
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0);
    let flags = CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC;
    let child = crate::userns::spawn(maps, flags, &mut cmd)?;
    let pid = child.id();
    let pinned = (|| -> Result<()> {
        let ns_dir = dir.join("ns");
        std::fs::create_dir_all(&ns_dir).map_err(Error::io("create ns dir"))?;
        for kind in ["user", "net", "uts", "ipc"] {
            let pin = ns_dir.join(kind);
            ns::pin(Path::new(&format!("/proc/{pid}/ns/{kind}")), &pin)?;
            res.namespaces.push((kind.into(), pin));
        }
        ns::prepare(&ns_dir.join("net"), &ns_dir.join("uts"), hostname)?;
        Ok(())
    })();
    if shared_pid {
        res.pid_holder = Some(pid);
        write(dir, PID_HOLDER, &pid.to_string())?;
        pinned?;
        let init_pid = await_pod_init(child)?;
        let pin = dir.join("ns").join("pid");
        ns::pin(Path::new(&format!("/proc/{init_pid}/ns/pid")), &pin)?;
        res.namespaces.push(("pid".into(), pin));
    } else {
        let mut child = child;
        let _ = child.kill();
        let _ = child.wait();
        pinned?;
    }
    Ok(())
}

/// Wires the pod's network namespace (none for host-network pods). The plan is written to the pod's
/// directory first, so whatever follows can be undone.
fn connect(dir: &Path, net: &Network, pod: PodRequest, res: &mut Resources) -> Result<()> {
    let Some(netns) = res.namespaces.iter().find(|(k, _)| k == "net").map(|(_, p)| p.clone()) else {
        return Ok(());
    };
    let att = net.plan(&pod)?;
    res.network = Some(att.clone());
    write(
        dir,
        NETWORK_PLAN,
        &serde_json::to_string(&att).map_err(|e| Error::Internal(format!("encode network plan: {e}")))?,
    )?;
    let mut att = att;
    let r = net.attach(&mut att, &pod.id, &netns);
    res.network = Some(att);
    r.map_err(Error::from)
}

fn write(dir: &Path, name: &str, content: &str) -> Result<()> {
    let p = dir.join(name);
    std::fs::write(&p, content).map_err(Error::io(format!("write {}", p.display())))
}

/// Starts `unshare --pid --fork --kill-child <berth-shim> pod-init`: the child is PID 1 of a new PID
/// namespace, reaps orphans, and dies with its parent. Returns the parent's PID and the namespace.
fn start_pid_holder(init: &Path) -> Result<(u32, PathBuf)> {
    use std::os::unix::process::CommandExt as _;
    let child = std::process::Command::new("unshare")
        .args(["--pid", "--fork", "--kill-child"])
        .arg(init)
        .arg("pod-init")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        // Its own process group: signals to berthd's group do not reach the pod.
        .process_group(0)
        .spawn()
        .map_err(Error::io("run unshare for the pod's PID namespace"))?;
    let pid = child.id();
    let init_pid = await_pod_init(child)?;
    Ok((pid, PathBuf::from(format!("/proc/{init_pid}/ns/pid"))))
}

/// Waits for `unshare --fork`'s child (pod-init) to appear and returns its PID; `unshare` is reaped
/// when it ends (after a berthd restart, the host's init reaps it).
fn await_pod_init(mut child: std::process::Child) -> Result<u32> {
    let pid = child.id();
    let children = format!("/proc/{pid}/task/{pid}/children");
    let t0 = std::time::Instant::now();
    let init_pid = loop {
        if let Some(p) = std::fs::read_to_string(&children)
            .ok()
            .and_then(|s| s.split_whitespace().next().map(str::to_string))
        {
            break p;
        }
        if t0.elapsed() > std::time::Duration::from_secs(5) || child.try_wait().ok().flatten().is_some() {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::Internal("the pod's PID namespace holder did not start".into()));
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    };
    std::thread::spawn(move || {
        let _ = child.wait();
    });
    init_pid
        .parse()
        .map_err(|_| Error::Internal(format!("pod-init's PID {init_pid:?}")))
}

/// Ends the pod's PID namespace holder, if it is still the process berth started.
fn stop_pid_holder(pid: u32) {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let ours = cmdline.split(|b| *b == 0).any(|a| a == b"pod-init");
    if ours {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Removes the sandbox's host resources and its directory. Idempotent. Blocking.
pub fn release(dir: &Path, res: &Resources, net: &Network) -> Result<()> {
    if let Some(att) = &res.network {
        disconnect(dir, att, &res.namespaces, net)?;
    }
    if let Some(pid) = res.pid_holder {
        stop_pid_holder(pid);
    }
    for (_, p) in &res.namespaces {
        ns::remove(p)?;
    }
    if let Some(shm) = &res.shm {
        unmount(shm)?;
    }
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("remove {}", dir.display()))(e)),
    }
}

/// Undoes a network attachment (CNI DEL or the bridge's teardown). Blocking.
fn disconnect(dir: &Path, att: &Attachment, namespaces: &[(String, PathBuf)], net: &Network) -> Result<()> {
    let pod = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let netns = namespaces
        .iter()
        .find(|(k, _)| k == "net")
        .map(|(_, p)| p.clone())
        .unwrap_or_else(|| dir.join("ns/net"));
    net.detach(att, pod, &netns)?;
    let _ = std::fs::remove_file(dir.join(NETWORK_PLAN));
    Ok(())
}

/// Releases what a stored sandbox holds.
pub fn release_sandbox(sb: &Sandbox, net: &Network) -> Result<()> {
    release(
        &sb.dir,
        &Resources {
            namespaces: sb.namespaces.clone(),
            shm: sb.shm.clone(),
            pid_holder: sb.pid_holder,
            network: sb.network.clone(),
        },
        net,
    )
}

/// Tears the pod's network down and unpins its network namespace (done when a sandbox stops).
/// Blocking.
pub fn release_network(sb: &Sandbox, net: &Network) -> Result<()> {
    if let Some(att) = &sb.network {
        disconnect(&sb.dir, att, &sb.namespaces, net)?;
    }
    if let Some(p) = sb.namespace_path("net") {
        ns::remove(p)?;
    }
    // The PID namespace's init goes with the pod's processes.
    if let Some(pid) = sb.pid_holder {
        stop_pid_holder(pid);
    }
    Ok(())
}

/// Undoes pod directories no sandbox record owns: a RunPodSandbox interrupted by a crash after it
/// made namespaces or wired the network but before it recorded the pod. Blocking.
pub fn remove_orphans(pods_dir: &Path, known: &dyn Fn(&str) -> bool, net: &Network) {
    for e in std::fs::read_dir(pods_dir).into_iter().flatten().flatten() {
        let id = e.file_name().to_string_lossy().to_string();
        if known(&id) || !e.path().is_dir() {
            continue;
        }
        let dir = e.path();
        let namespaces: Vec<(String, PathBuf)> = std::fs::read_dir(dir.join("ns"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|n| (n.file_name().to_string_lossy().to_string(), n.path()))
            .collect();
        let network = std::fs::read(dir.join(NETWORK_PLAN))
            .ok()
            .and_then(|b| serde_json::from_slice::<Attachment>(&b).ok());
        let shm = dir.join("shm");
        let pid_holder = std::fs::read_to_string(dir.join(PID_HOLDER))
            .ok()
            .and_then(|s| s.trim().parse().ok());
        let res = Resources {
            namespaces,
            shm: shm.exists().then_some(shm),
            pid_holder,
            network,
        };
        tracing::warn!(pod = %id, "removing what an interrupted RunPodSandbox left");
        if let Some(att) = &res.network
            && let Err(err) = disconnect(&dir, att, &res.namespaces, net)
        {
            tracing::warn!(pod = %id, error = %err, "network cleanup of an interrupted pod");
        }
        let res = Resources { network: None, ..res };
        if let Err(err) = release(&dir, &res, net) {
            tracing::warn!(pod = %id, error = %err, "cleanup of an interrupted pod");
        }
    }
}

fn unmount(p: &Path) -> Result<()> {
    match nix::mount::umount2(p, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(Error::Internal(format!("unmount {}: {e}", p.display()))),
    }
}

/// The pod's /etc/hosts: the node's for host-network pods, else loopback names (kubelet adds the rest).
fn hosts_file(host_net: bool) -> String {
    if host_net && let Ok(h) = std::fs::read_to_string("/etc/hosts") {
        return h;
    }
    "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n".to_string()
}

/// The pod's resolv.conf: from `DnsConfig` when it says anything, else the node's.
pub fn resolv_conf(dns: Option<&DnsConfig>) -> String {
    match dns {
        Some(d) if !(d.servers.is_empty() && d.searches.is_empty() && d.options.is_empty()) => {
            let mut s = String::new();
            if !d.searches.is_empty() {
                s.push_str(&format!("search {}\n", d.searches.join(" ")));
            }
            for n in &d.servers {
                s.push_str(&format!("nameserver {n}\n"));
            }
            if !d.options.is_empty() {
                s.push_str(&format!("options {}\n", d.options.join(" ")));
            }
            s
        }
        _ => std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_from_dns_config() {
        let d = DnsConfig {
            servers: vec!["10.0.0.10".into(), "10.0.0.11".into()],
            searches: vec!["ns.svc.cluster.local".into(), "svc.cluster.local".into()],
            options: vec!["ndots:5".into()],
        };
        assert_eq!(
            resolv_conf(Some(&d)),
            "search ns.svc.cluster.local svc.cluster.local\nnameserver 10.0.0.10\nnameserver 10.0.0.11\noptions ndots:5\n"
        );
        assert_eq!(
            resolv_conf(Some(&DnsConfig::default())),
            std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default()
        );
    }
}
