//! Building the OCI runtime spec of a container: process (args, env, cwd, user, capabilities),
//! root, mounts (the kernel filesystems, the pod's hostname/hosts/resolv.conf and /dev/shm, the CRI
//! mounts), and the Linux section (the pod's namespaces by path, cgroup, resources, masked paths).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use berth_proto::cri::{ContainerConfig, LinuxContainerResources, MountPropagation, NamespaceMode, NamespaceOption};
use oci_spec::runtime::{
    Capabilities, Capability, LinuxBuilder, LinuxCpuBuilder, LinuxDeviceCgroupBuilder, LinuxHugepageLimitBuilder,
    LinuxMemoryBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxResourcesBuilder, Mount, MountBuilder,
    ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};

use crate::error::{Error, Result};
use crate::store::sandbox::Sandbox;

/// The capabilities a container gets by default: Docker's and containerd's 14.
pub const DEFAULT_CAPS: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// Paths kubelet masks by default.
pub const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths kubelet makes read-only by default.
pub const READONLY_PATHS: &[&str] = &["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

/// Everything a spec is built from.
#[derive(Debug)]
pub struct SpecInput<'a> {
    pub id: &'a str,
    pub sandbox: &'a Sandbox,
    pub config: &'a ContainerConfig,
    pub image: &'a berth_image::Image,
    /// The container's mounted rootfs (read for /etc/passwd).
    pub rootfs: &'a Path,
    /// The host's facts (capabilities, cgroup version, OOM score floor, AppArmor).
    pub host: &'a super::Host,
    /// The seccomp profile for requests that name none (config `runtime.unset_seccomp_profile`).
    pub unset_seccomp: &'a str,
    /// For a PID namespace `TARGET`ed at another container: that container's init PID.
    pub target_pid: Option<u32>,
    /// How the container's cgroup is named (config `cgroup_driver`).
    pub cgroup_driver: crate::cgroup::CgroupDriver,
    /// Mounts berthd made on the host for the request's mounts (`crate::mounts`: recursive read-only,
    /// ID-mapped, image volumes), by index in `config.mounts`: the spec binds these instead.
    pub staged: &'a HashMap<usize, PathBuf>,
}

fn bad(e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("build OCI spec: {e}"))
}

fn caps(names: impl IntoIterator<Item = String>) -> Result<Capabilities> {
    names
        .into_iter()
        .map(|n| {
            let n = n.trim_start_matches("CAP_").to_ascii_uppercase();
            serde_json::from_value::<Capability>(serde_json::Value::String(format!("CAP_{n}")))
                .map_err(|_| Error::InvalidArgument(format!("unknown capability {n:?}")))
        })
        .collect()
}

/// Capabilities, seccomp and AppArmor of a container's security context.
fn security(
    sec: &berth_proto::cri::LinuxContainerSecurityContext,
    unset_seccomp: &str,
    host: &super::Host,
) -> Result<(Capabilities, Option<oci_spec::runtime::LinuxSeccomp>, Option<String>)> {
    let mut cap_set: Capabilities = if sec.privileged {
        caps(host.caps.clone())?
    } else {
        caps(DEFAULT_CAPS.iter().map(|s| s.to_string()))?
    };
    // A privileged container gets every capability, whatever add/drop say (as containerd).
    if let Some(c) = sec.capabilities.as_ref().filter(|_| !sec.privileged) {
        if c.drop_capabilities.iter().any(|d| d.eq_ignore_ascii_case("ALL")) {
            cap_set.clear();
        } else {
            for d in caps(c.drop_capabilities.clone())? {
                cap_set.remove(&d);
            }
        }
        if c.add_capabilities.iter().any(|a| a.eq_ignore_ascii_case("ALL")) {
            cap_set = caps(host.caps.clone())?;
        } else {
            let held = caps(host.caps.clone())?;
            for a in caps(c.add_capabilities.clone())? {
                if !held.contains(&a) {
                    return Err(Error::FailedPrecondition(format!(
                        "capability {a} was asked for, but berthd itself does not hold it on this host"
                    )));
                }
                cap_set.insert(a);
            }
        }
    }
    let cap_names: Vec<String> = cap_set
        .iter()
        .filter_map(|c| serde_json::to_value(c).ok()?.as_str().map(str::to_string))
        .collect();
    let seccomp = if sec.privileged {
        None
    } else {
        // The deprecated string still comes from older kubelets and crictl.
        #[allow(deprecated)]
        let profile = super::seccomp::select(sec.seccomp.as_ref(), &sec.seccomp_profile_path, unset_seccomp)?;
        super::seccomp::build(&profile, &cap_names)?
    };
    #[allow(deprecated)]
    let apparmor = super::apparmor::profile(
        sec.apparmor.as_ref(),
        &sec.apparmor_profile,
        sec.privileged,
        host.apparmor,
        super::apparmor::DEFAULT_PROFILES,
        &super::apparmor::loaded,
    )?;
    Ok((cap_set, seccomp, apparmor))
}

/// The process arguments, as Docker and containerd resolve them: the CRI command replaces the
/// image's entrypoint (and then the image's cmd is dropped), the CRI args replace the image's cmd.
pub fn process_args(config: &ContainerConfig, image: &berth_image::manifest::RunConfig) -> Result<Vec<String>> {
    let (mut command, mut args) = (config.command.clone(), config.args.clone());
    if command.is_empty() {
        command = image.entrypoint.clone().unwrap_or_default();
        if args.is_empty() {
            args = image.cmd.clone().unwrap_or_default();
        }
    }
    command.extend(args);
    if command.is_empty() {
        return Err(Error::InvalidArgument(
            "no command specified: neither the container config nor the image has one".into(),
        ));
    }
    Ok(command)
}

/// Image env, then the CRI envs, later keys replacing earlier ones in place.
pub fn process_env(config: &ContainerConfig, image: &berth_image::manifest::RunConfig) -> Vec<String> {
    let mut env: Vec<String> = image.env.clone().unwrap_or_default();
    for kv in &config.envs {
        let entry = format!("{}={}", kv.key, kv.value);
        match env.iter_mut().find(|e| e.split('=').next() == Some(kv.key.as_str())) {
            Some(slot) => *slot = entry,
            None => env.push(entry),
        }
    }
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(
            0,
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        );
    }
    env
}

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Result<Mount> {
    MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()
        .map_err(bad)
}

/// A `Bidirectional` mount needs its source on a shared mount, a `HostToContainer` one on a shared
/// or slave mount (as containerd checks): otherwise nothing would propagate, silently.
fn check_propagation(host: &Path, mode: MountPropagation) -> Result<()> {
    let real = std::fs::canonicalize(host).map_err(Error::io(format!("resolve mount source {}", host.display())))?;
    let info = std::fs::read_to_string("/proc/self/mountinfo").map_err(Error::io("read /proc/self/mountinfo"))?;
    let p = super::propagation::of(&info, &real)
        .ok_or_else(|| Error::FailedPrecondition(format!("no mount found for mount source {}", real.display())))?;
    let (ok, want) = match mode {
        MountPropagation::PropagationBidirectional => (p.shared, "shared"),
        _ => (p.shared || p.slave, "shared or slave"),
    };
    if !ok {
        return Err(Error::FailedPrecondition(format!(
            "mount source {} is not on a {want} mount, which {:?} propagation needs",
            real.display(),
            mode
        )));
    }
    Ok(())
}

fn bind(dest: &str, source: &Path, readonly: bool, propagation: &str) -> Result<Mount> {
    let mut opts = vec!["rbind", propagation, "nosuid", "nodev"];
    if readonly {
        opts.push("ro");
    }
    mount(dest, "bind", &source.display().to_string(), &opts)
}

/// Builds the spec. Errors name the field that is wrong.
pub fn build(input: &SpecInput<'_>) -> Result<Spec> {
    let SpecInput {
        sandbox,
        config,
        image,
        rootfs,
        ..
    } = *input;
    let run = image.config.config.clone().unwrap_or_default();
    let linux_cfg = config.linux.clone().unwrap_or_default();
    let sec = linux_cfg.security_context.clone().unwrap_or_default();
    let pod_ns = crate::store::sandbox::namespace_options(&sandbox.config);
    let (cap_set, seccomp, apparmor) = security(&sec, input.unset_seccomp, input.host)?;
    let process = process(input, &run, &linux_cfg, cap_set, apparmor)?;
    let mut mounts = base_mounts(sec.privileged)?;
    mounts.extend(pod_mounts(config, sandbox, sec.readonly_rootfs)?);
    let (user_mounts, rootfs_propagation) = user_mounts(config, input.staged)?;
    mounts.extend(user_mounts);
    let host_net = pod_ns.network == NamespaceMode::Node as i32;
    let host_ipc = pod_ns.ipc == NamespaceMode::Node as i32;
    let sysctls = sandbox
        .config
        .linux
        .as_ref()
        .map(|l| l.sysctls.clone())
        .unwrap_or_default();
    super::sysctl::validate(&sysctls, !host_ipc, !host_net)?;
    let mut linux = linux(input, &linux_cfg, host_net)?;
    if !sysctls.is_empty() {
        linux = linux.sysctl(sysctls);
    }
    if let Some(s) = seccomp {
        linux = linux.seccomp(s);
    }
    if let Some(p) = rootfs_propagation {
        linux = linux.rootfs_propagation(p);
    }
    // Always set: oci-spec's defaults would mask and make read-only paths for privileged containers
    // too. The request's lists (kubelet sends its defaults, or none for `procMount: Unmasked`) win
    // over berth's; an empty list means berth's defaults, as containerd reads it.
    let paths = |asked: &[String], default: &[&str]| -> Vec<String> {
        if sec.privileged {
            Vec::new()
        } else if asked.is_empty() {
            default.iter().map(|s| s.to_string()).collect()
        } else {
            asked.to_vec()
        }
    };
    linux = linux
        .masked_paths(paths(&sec.masked_paths, MASKED_PATHS))
        .readonly_paths(paths(&sec.readonly_paths, READONLY_PATHS));
    let annotations = annotations(sandbox, config, image);
    let mut spec = SpecBuilder::default()
        .version("1.0.2")
        .process(process)
        .root(
            RootBuilder::default()
                .path(rootfs)
                .readonly(sec.readonly_rootfs)
                .build()
                .map_err(bad)?,
        )
        .mounts(mounts)
        .linux(linux.build().map_err(bad)?)
        .annotations(annotations);
    if !host_net {
        let hostname = std::fs::read_to_string(sandbox.dir.join("hostname")).unwrap_or_default();
        spec = spec.hostname(hostname.trim().to_string());
    }
    let mut spec = spec.build().map_err(bad)?;
    if host_net {
        // oci-spec's default hostname ("youki") would need a UTS namespace of the container's own.
        spec.set_hostname(None);
    }
    Ok(spec)
}

/// The container's process: the image's command, env and working directory under the CRI's
/// overrides, its user, capabilities and OOM score.
fn process(
    input: &SpecInput<'_>,
    run: &berth_image::manifest::RunConfig,
    linux_cfg: &berth_proto::cri::LinuxContainerConfig,
    cap_set: Capabilities,
    apparmor: Option<String>,
) -> Result<oci_spec::runtime::Process> {
    let config = input.config;
    let sec = linux_cfg.security_context.clone().unwrap_or_default();
    let user = super::user::resolve(
        input.rootfs,
        run.user.as_deref().unwrap_or(""),
        sec.run_as_user.as_ref().map(|v| v.value),
        &sec.run_as_username,
        sec.run_as_group.as_ref().map(|v| v.value),
        &sec.supplemental_groups,
        sec.supplemental_groups_policy == berth_proto::cri::SupplementalGroupsPolicy::Strict as i32,
    )?;
    let oom = linux_cfg
        .resources
        .as_ref()
        .map(|r| r.oom_score_adj as i32)
        .unwrap_or(0);
    let mut process = ProcessBuilder::default()
        .terminal(config.tty)
        .args(process_args(config, run)?)
        .env(process_env(config, run))
        .cwd(match (config.working_dir.as_str(), run.working_dir.as_deref()) {
            ("", Some(w)) if !w.is_empty() => w.to_string(),
            ("", _) => "/".to_string(),
            (w, _) => w.to_string(),
        })
        .user(
            UserBuilder::default()
                .uid(user.uid)
                .gid(user.gid)
                .additional_gids(user.additional_gids.clone())
                .build()
                .map_err(bad)?,
        )
        .capabilities(
            oci_spec::runtime::LinuxCapabilitiesBuilder::default()
                .bounding(cap_set.clone())
                .effective(cap_set.clone())
                .permitted(cap_set.clone())
                // Explicitly empty: oci-spec's defaults would put AUDIT_WRITE, KILL and NET_BIND_SERVICE
                // here, giving non-root processes ambient capabilities (and failing runc's capset when
                // the bounding set lacks them). Empty inheritable as containerd since CVE-2022-24769.
                .inheritable(Capabilities::new())
                .ambient(Capabilities::new())
                .build()
                .map_err(bad)?,
        )
        .no_new_privileges(sec.no_new_privs)
        .oom_score_adj(oom.max(input.host.oom_floor));
    if let Some(a) = apparmor {
        process = process.apparmor_profile(a);
    }
    let mut process = process.build().map_err(bad)?;
    // No rlimits: the process inherits berthd's, as with containerd's CRI and CRI-O (oci-spec's
    // default would cap every container at 1024 open files).
    process.set_rlimits(None);
    Ok(process)
}

/// The mounts every container gets: /proc, /dev, /dev/pts, /dev/mqueue, /sys, /sys/fs/cgroup.
fn base_mounts(privileged: bool) -> Result<Vec<oci_spec::runtime::Mount>> {
    Ok(vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        )?,
        mount("/dev/mqueue", "mqueue", "mqueue", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", if privileged { "rw" } else { "ro" }],
        )?,
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &[
                "nosuid",
                "noexec",
                "nodev",
                "relatime",
                if privileged { "rw" } else { "ro" },
            ],
        )?,
    ])
}

/// The pod's files (hostname, hosts, resolv.conf) and its /dev/shm, unless the request mounts its own.
fn pod_mounts(config: &ContainerConfig, sandbox: &Sandbox, readonly: bool) -> Result<Vec<oci_spec::runtime::Mount>> {
    let mut mounts = Vec::new();
    let user_dests: Vec<&str> = config.mounts.iter().map(|m| m.container_path.as_str()).collect();
    let pod_files = [
        ("/etc/hostname", "hostname"),
        ("/etc/hosts", "hosts"),
        ("/etc/resolv.conf", "resolv.conf"),
    ];
    for (dest, file) in pod_files {
        if !user_dests.contains(&dest) {
            mounts.push(bind(dest, &sandbox.dir.join(file), readonly, "rprivate")?);
        }
    }
    if !user_dests.contains(&"/dev/shm") {
        // noexec as the pod's tmpfs has it (and containerd's /dev/shm): in a user namespace a
        // bind's remount may not clear a flag the source mount has.
        let shm = sandbox.shm.as_deref().unwrap_or(Path::new("/dev/shm"));
        mounts.push(mount(
            "/dev/shm",
            "bind",
            &shm.display().to_string(),
            &["rbind", "rprivate", "nosuid", "nodev", "noexec"],
        )?);
    }
    Ok(mounts)
}

/// The request's mounts, and the root propagation they need (None: runc's default).
fn user_mounts(
    config: &ContainerConfig,
    staged: &HashMap<usize, PathBuf>,
) -> Result<(Vec<oci_spec::runtime::Mount>, Option<&'static str>)> {
    let mut mounts = Vec::new();
    let mut rootfs_propagation: Option<&str> = None;
    for (i, m) in config.mounts.iter().enumerate() {
        check_mount(m)?;
        if let Some(src) = staged.get(&i) {
            // Made by berthd (read-only, ID-mapped or an image's layers): bound as it is.
            mounts.push(bind(
                &m.container_path,
                src,
                m.readonly || m.image.is_some(),
                "rprivate",
            )?);
            continue;
        }
        if m.image.is_some() || m.recursive_read_only || !m.uid_mappings.is_empty() || !m.gid_mappings.is_empty() {
            return Err(Error::Internal(format!(
                "mount {:?} needs a host mount that was not made",
                m.container_path
            )));
        }
        let host = host_source(m)?;
        let mode = MountPropagation::try_from(m.propagation).unwrap_or(MountPropagation::PropagationPrivate);
        let propagation = match mode {
            MountPropagation::PropagationPrivate => "rprivate",
            MountPropagation::PropagationHostToContainer => "rslave",
            MountPropagation::PropagationBidirectional => "rshared",
        };
        if mode != MountPropagation::PropagationPrivate {
            check_propagation(&host, mode)?;
            // The container's root must propagate too, or runc's default (rslave) cuts the mount off.
            rootfs_propagation = match (rootfs_propagation, mode) {
                (_, MountPropagation::PropagationBidirectional) | (Some("rshared"), _) => Some("rshared"),
                _ => Some("rslave"),
            };
        }
        mounts.push(bind(&m.container_path, &host, m.readonly, propagation)?);
    }
    Ok((mounts, rootfs_propagation))
}

/// A mount's host path: absolute, and (as containerd makes it) a new directory where it is missing.
pub fn host_source(m: &berth_proto::cri::Mount) -> Result<PathBuf> {
    let host = PathBuf::from(&m.host_path);
    if !host.is_absolute() {
        return Err(Error::InvalidArgument(format!(
            "mount host_path {:?} must be absolute",
            m.host_path
        )));
    }
    if !host.exists() {
        std::fs::create_dir_all(&host).map_err(Error::io(format!("create mount source {}", host.display())))?;
    }
    Ok(host)
}

/// What the CRI asks of a mount before anything is made for it: an absolute container path; a
/// recursive read-only one also read-only and private (its propagation would undo it, as runc and
/// containerd refuse too); an image volume with no host path.
pub fn check_mount(m: &berth_proto::cri::Mount) -> Result<()> {
    if m.container_path.is_empty()
        || !m.container_path.starts_with('/')
        || m.container_path.split('/').any(|c| c == "..")
    {
        return Err(Error::InvalidArgument(format!(
            "mount container_path {:?} must be absolute, without '..'",
            m.container_path
        )));
    }
    if m.recursive_read_only {
        if !m.readonly {
            return Err(Error::InvalidArgument(format!(
                "mount {:?}: recursive_read_only needs readonly",
                m.container_path
            )));
        }
        if m.propagation != MountPropagation::PropagationPrivate as i32 {
            return Err(Error::InvalidArgument(format!(
                "mount {:?}: recursive_read_only needs private propagation, not {:?}",
                m.container_path,
                MountPropagation::try_from(m.propagation)
                    .map(|p| p.as_str_name())
                    .unwrap_or("unknown")
            )));
        }
    }
    if m.image.is_some() {
        if !m.host_path.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "mount {:?}: an image volume takes no host_path",
                m.container_path
            )));
        }
        if m.recursive_read_only || !m.uid_mappings.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "mount {:?}: an image volume is read-only already and takes no ID mappings",
                m.container_path
            )));
        }
    } else if !m.image_sub_path.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "mount {:?}: image_sub_path without an image",
            m.container_path
        )));
    }
    Ok(())
}

/// The pod's user namespace, which every container of a pod that has one joins (the CRI has no
/// other user namespace mode a container can ask for); what the container asks must agree.
fn user_namespace<'a>(ns_opts: &NamespaceOption, sandbox: &'a Sandbox) -> Result<Option<&'a Path>> {
    let pod_userns = sandbox.namespace_path("user");
    if let Some(u) = &ns_opts.userns_options {
        let asked = NamespaceMode::try_from(u.mode).unwrap_or(NamespaceMode::Node);
        match (asked, pod_userns.is_some()) {
            (NamespaceMode::Node, false) | (NamespaceMode::Pod, true) => {}
            (NamespaceMode::Pod, false) => {
                return Err(Error::InvalidArgument(format!(
                    "container asks for the pod's user namespace, but pod {} was created without one",
                    sandbox.id
                )));
            }
            (NamespaceMode::Node, true) => {
                return Err(Error::InvalidArgument(format!(
                    "container asks for the node's user namespace, but pod {} has its own",
                    sandbox.id
                )));
            }
            (m, _) => {
                return Err(Error::InvalidArgument(format!(
                    "user namespace mode {} is not supported for a container",
                    m.as_str_name()
                )));
            }
        }
    }
    Ok(pod_userns)
}

/// The container's namespaces: its own mount (and PID, unless shared) namespace, the pod's others.
fn namespaces(input: &SpecInput<'_>, host_net: bool) -> Result<Vec<oci_spec::runtime::LinuxNamespace>> {
    let (sandbox, target_pid) = (input.sandbox, input.target_pid);
    let ns_opts = input
        .config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone())
        .unwrap_or_default();
    let mut namespaces = vec![ns(LinuxNamespaceType::Mount, None)?];
    match NamespaceMode::try_from(ns_opts.pid).unwrap_or(NamespaceMode::Container) {
        NamespaceMode::Node => {}
        NamespaceMode::Container => namespaces.push(ns(LinuxNamespaceType::Pid, None)?),
        NamespaceMode::Pod => match sandbox.namespace_path("pid") {
            Some(p) => namespaces.push(ns(LinuxNamespaceType::Pid, Some(p))?),
            None => {
                return Err(Error::InvalidArgument(format!(
                    "container asks for the pod's PID namespace, but pod {} was not created with one",
                    sandbox.id
                )));
            }
        },
        NamespaceMode::Target => match target_pid {
            Some(pid) => namespaces.push(ns(
                LinuxNamespaceType::Pid,
                Some(&PathBuf::from(format!("/proc/{pid}/ns/pid"))),
            )?),
            None => {
                return Err(Error::FailedPrecondition(format!(
                    "PID namespace TARGET {:?}: that container is not running",
                    ns_opts.target_id
                )));
            }
        },
    }
    let pod_userns = user_namespace(&ns_opts, sandbox)?;
    if let Some(p) = pod_userns {
        namespaces.push(ns(LinuxNamespaceType::User, Some(p))?);
    }
    for (kind, typ) in [
        ("net", LinuxNamespaceType::Network),
        ("ipc", LinuxNamespaceType::Ipc),
        ("uts", LinuxNamespaceType::Uts),
    ] {
        if let Some(p) = sandbox.namespace_path(kind) {
            namespaces.push(ns(typ, Some(p))?);
        } else if kind == "net" && !host_net {
            return Err(Error::FailedPrecondition(format!(
                "pod sandbox {} has no network namespace (stopped?)",
                sandbox.id
            )));
        }
    }
    Ok(namespaces)
}

/// The Linux part: namespaces, cgroup path, devices and resources.
fn linux(
    input: &SpecInput<'_>,
    linux_cfg: &berth_proto::cri::LinuxContainerConfig,
    host_net: bool,
) -> Result<LinuxBuilder> {
    let (sandbox, config) = (input.sandbox, input.config);
    let namespaces = namespaces(input, host_net)?;
    let cgroup_parent = sandbox
        .config
        .linux
        .as_ref()
        .map(|l| l.cgroup_parent.as_str())
        .unwrap_or_default();
    let cgroups_path = crate::cgroup::container_path(input.cgroup_driver, cgroup_parent, input.id)?;
    let mut device_rules = vec![
        LinuxDeviceCgroupBuilder::default()
            .allow(false)
            .access("rwm")
            .build()
            .map_err(bad)?,
    ];
    let mut devices = Vec::new();
    for d in &config.devices {
        let (dev, rule) = device(d)?;
        devices.push(dev);
        device_rules.push(rule);
    }
    let resources = match &linux_cfg.resources {
        Some(r) => resources_builder(r, input.host)?,
        None => LinuxResourcesBuilder::default(),
    }
    .devices(device_rules);
    let mut builder = LinuxBuilder::default();
    if let Some(maps) = pod_maps(sandbox)? {
        let id_map = |r: crate::userns::Range| {
            oci_spec::runtime::LinuxIdMappingBuilder::default()
                .container_id(r.container_id)
                .host_id(r.host_id)
                .size(r.length)
                .build()
                .map_err(bad)
        };
        builder = builder
            .uid_mappings(vec![id_map(maps.uids)?])
            .gid_mappings(vec![id_map(maps.gids)?]);
    }
    Ok(builder
        .devices(devices)
        .namespaces(namespaces)
        .cgroups_path(PathBuf::from(cgroups_path))
        .resources(resources.build().map_err(bad)?))
}

/// The maps of the pod's own user namespace, if it has one.
pub fn pod_maps(sandbox: &Sandbox) -> Result<Option<crate::userns::Maps>> {
    if sandbox.namespace_path("user").is_none() {
        return Ok(None);
    }
    crate::userns::requested(&crate::store::sandbox::namespace_options(&sandbox.config))
}

/// The request's annotations with the CRI's own (container type and name, pod, image).
fn annotations(sandbox: &Sandbox, config: &ContainerConfig, image: &berth_image::Image) -> HashMap<String, String> {
    let mut annotations: HashMap<String, String> = config.annotations.clone();
    let meta = sandbox.metadata();
    for (k, v) in [
        ("io.kubernetes.cri.container-type", "container".to_string()),
        (
            "io.kubernetes.cri.container-name",
            config.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default(),
        ),
        ("io.kubernetes.cri.sandbox-id", sandbox.id.clone()),
        ("io.kubernetes.cri.sandbox-name", meta.name.clone()),
        ("io.kubernetes.cri.sandbox-namespace", meta.namespace.clone()),
        ("io.kubernetes.cri.sandbox-uid", meta.uid.clone()),
        (
            "io.kubernetes.cri.image-name",
            image.repo_tags.first().cloned().unwrap_or_else(|| image.id.to_string()),
        ),
    ] {
        annotations.insert(k.to_string(), v);
    }
    annotations
}

/// The OCI resources (cgroup limits) for CRI resources, as CreateContainer and
/// UpdateContainerResources apply them. Zero or empty fields are left unset.
pub fn resources_builder(r: &LinuxContainerResources, host: &super::Host) -> Result<LinuxResourcesBuilder> {
    check_resources(r)?;
    let mut resources = LinuxResourcesBuilder::default();
    let mut cpu = LinuxCpuBuilder::default();
    if r.cpu_shares > 0 {
        cpu = cpu.shares(r.cpu_shares as u64);
    }
    if r.cpu_quota > 0 {
        cpu = cpu.quota(r.cpu_quota);
    }
    if r.cpu_period > 0 {
        cpu = cpu.period(r.cpu_period as u64);
    }
    if !r.cpuset_cpus.is_empty() {
        cpu = cpu.cpus(r.cpuset_cpus.clone());
    }
    if !r.cpuset_mems.is_empty() {
        cpu = cpu.mems(r.cpuset_mems.clone());
    }
    resources = resources.cpu(cpu.build().map_err(bad)?);
    if r.memory_limit_in_bytes > 0 {
        let mut mem = LinuxMemoryBuilder::default().limit(r.memory_limit_in_bytes);
        // No swapping past the limit unless asked (as containerd), where the host accounts swap.
        let swap = if r.memory_swap_limit_in_bytes > 0 {
            r.memory_swap_limit_in_bytes
        } else {
            r.memory_limit_in_bytes
        };
        if host.swap_accounting {
            mem = mem.swap(swap);
        }
        resources = resources.memory(mem.build().map_err(bad)?);
    }
    if !r.hugepage_limits.is_empty() {
        let limits = r
            .hugepage_limits
            .iter()
            .map(|h| {
                LinuxHugepageLimitBuilder::default()
                    .page_size(h.page_size.clone())
                    .limit(h.limit as i64)
                    .build()
                    .map_err(bad)
            })
            .collect::<Result<Vec<_>>>()?;
        resources = resources.hugepage_limits(limits);
    }
    if !r.unified.is_empty() {
        if !host.cgroup_v2 {
            let mut keys: Vec<&String> = r.unified.keys().collect();
            keys.sort();
            return Err(Error::InvalidArgument(format!(
                "unified (cgroup v2) resources {keys:?} given, but this host uses cgroup v1"
            )));
        }
        resources = resources.unified(r.unified.clone());
    }
    Ok(resources)
}

/// Refuses values no kubelet sends and no kernel takes: negative limits, shares and periods (-1,
/// "unlimited", is taken for the quota and swap), an oom_score_adj outside -1000..=1000.
fn check_resources(r: &LinuxContainerResources) -> Result<()> {
    let bad = [
        ("memory_limit_in_bytes", r.memory_limit_in_bytes < 0),
        ("memory_swap_limit_in_bytes", r.memory_swap_limit_in_bytes < -1),
        ("cpu_shares", r.cpu_shares < 0),
        ("cpu_period", r.cpu_period < 0),
        ("cpu_quota", r.cpu_quota < -1),
        ("oom_score_adj", !(-1000..=1000).contains(&r.oom_score_adj)),
    ];
    match bad.iter().find(|(_, b)| *b) {
        Some((what, _)) => Err(Error::InvalidArgument(format!(
            "resources: {what} is out of range ({r:?})",
            r = (
                r.memory_limit_in_bytes,
                r.memory_swap_limit_in_bytes,
                r.cpu_shares,
                r.cpu_period,
                r.cpu_quota,
                r.oom_score_adj
            )
        ))),
        None => Ok(()),
    }
}

/// A CRI device: the host's device node, at `container_path`, with a cgroup rule allowing
/// `permissions` (r, w, m) on it.
fn device(
    d: &berth_proto::cri::Device,
) -> Result<(oci_spec::runtime::LinuxDevice, oci_spec::runtime::LinuxDeviceCgroup)> {
    use nix::sys::stat::{SFlag, major, minor};
    let st = nix::sys::stat::stat(d.host_path.as_str()).map_err(|e| match e {
        nix::errno::Errno::ENOENT => Error::NotFound(format!("device {:?} does not exist", d.host_path)),
        e => Error::InvalidArgument(format!("device {:?}: {e}", d.host_path)),
    })?;
    let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
    let typ = if kind == SFlag::S_IFCHR {
        oci_spec::runtime::LinuxDeviceType::C
    } else if kind == SFlag::S_IFBLK {
        oci_spec::runtime::LinuxDeviceType::B
    } else {
        return Err(Error::InvalidArgument(format!(
            "{:?} is not a device node",
            d.host_path
        )));
    };
    let perms = if d.permissions.is_empty() {
        "rwm".to_string()
    } else {
        d.permissions.clone()
    };
    if !perms.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
        return Err(Error::InvalidArgument(format!(
            "device permissions {perms:?}: only r, w, m"
        )));
    }
    let dest = if d.container_path.is_empty() {
        d.host_path.clone()
    } else {
        d.container_path.clone()
    };
    let (maj, min) = (major(st.st_rdev) as i64, minor(st.st_rdev) as i64);
    let dev = oci_spec::runtime::LinuxDeviceBuilder::default()
        .path(dest)
        .typ(typ)
        .major(maj)
        .minor(min)
        .file_mode(st.st_mode & 0o777)
        .uid(0u32)
        .gid(0u32)
        .build()
        .map_err(bad)?;
    let rule = LinuxDeviceCgroupBuilder::default()
        .allow(true)
        .typ(typ)
        .major(maj)
        .minor(min)
        .access(perms)
        .build()
        .map_err(bad)?;
    Ok((dev, rule))
}

fn ns(typ: LinuxNamespaceType, path: Option<&Path>) -> Result<oci_spec::runtime::LinuxNamespace> {
    let mut b = LinuxNamespaceBuilder::default().typ(typ);
    if let Some(p) = path {
        b = b.path(p);
    }
    b.build().map_err(bad)
}

/// Every capability name, in bit order (CAP_CHOWN is 0).
pub(super) fn all_caps() -> Vec<String> {
    [
        "CHOWN",
        "DAC_OVERRIDE",
        "DAC_READ_SEARCH",
        "FOWNER",
        "FSETID",
        "KILL",
        "SETGID",
        "SETUID",
        "SETPCAP",
        "LINUX_IMMUTABLE",
        "NET_BIND_SERVICE",
        "NET_BROADCAST",
        "NET_ADMIN",
        "NET_RAW",
        "IPC_LOCK",
        "IPC_OWNER",
        "SYS_MODULE",
        "SYS_RAWIO",
        "SYS_CHROOT",
        "SYS_PTRACE",
        "SYS_PACCT",
        "SYS_ADMIN",
        "SYS_BOOT",
        "SYS_NICE",
        "SYS_RESOURCE",
        "SYS_TIME",
        "SYS_TTY_CONFIG",
        "MKNOD",
        "LEASE",
        "AUDIT_WRITE",
        "AUDIT_CONTROL",
        "SETFCAP",
        "MAC_OVERRIDE",
        "MAC_ADMIN",
        "SYSLOG",
        "WAKE_ALARM",
        "BLOCK_SUSPEND",
        "AUDIT_READ",
        "PERFMON",
        "BPF",
        "CHECKPOINT_RESTORE",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use berth_image::manifest::RunConfig;
    use berth_proto::cri::KeyValue;

    fn run(entrypoint: &[&str], cmd: &[&str]) -> RunConfig {
        RunConfig {
            entrypoint: (!entrypoint.is_empty()).then(|| entrypoint.iter().map(|s| s.to_string()).collect()),
            cmd: (!cmd.is_empty()).then(|| cmd.iter().map(|s| s.to_string()).collect()),
            env: Some(vec!["PATH=/bin".into(), "A=1".into()]),
            ..Default::default()
        }
    }

    fn cfg(command: &[&str], args: &[&str]) -> ContainerConfig {
        ContainerConfig {
            command: command.iter().map(|s| s.to_string()).collect(),
            args: args.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn args_resolve_like_docker() {
        let img = run(&["/entry"], &["default"]);
        assert_eq!(process_args(&cfg(&[], &[]), &img).unwrap(), ["/entry", "default"]);
        assert_eq!(process_args(&cfg(&[], &["x"]), &img).unwrap(), ["/entry", "x"]);
        assert_eq!(
            process_args(&cfg(&["/bin/sh"], &[]), &img).unwrap(),
            ["/bin/sh"],
            "command drops the image cmd"
        );
        assert_eq!(
            process_args(&cfg(&["/bin/sh"], &["-c", "x"]), &img).unwrap(),
            ["/bin/sh", "-c", "x"]
        );
        assert_eq!(process_args(&cfg(&[], &[]), &run(&[], &["sh"])).unwrap(), ["sh"]);
        assert!(process_args(&cfg(&[], &[]), &run(&[], &[])).is_err());
    }

    #[test]
    fn env_overrides_in_place() {
        let mut c = cfg(&[], &[]);
        c.envs = vec![
            KeyValue {
                key: "A".into(),
                value: "2".into(),
            },
            KeyValue {
                key: "B".into(),
                value: "3".into(),
            },
        ];
        assert_eq!(process_env(&c, &run(&[], &[])), ["PATH=/bin", "A=2", "B=3"]);
        assert!(process_env(&cfg(&[], &[]), &RunConfig::default())[0].starts_with("PATH="));
    }

    /// A host where berthd holds every capability, on cgroup v2, without AppArmor.
    pub(crate) fn host() -> crate::oci::Host {
        crate::oci::Host {
            caps: all_caps(),
            oom_floor: -1000,
            cgroup_v2: true,
            swap_accounting: true,
            apparmor: false,
            recursive_readonly: true,
            user_namespaces: Ok(()),
        }
    }

    #[test]
    fn security_context() {
        use berth_proto::cri::{Capability as CriCaps, LinuxContainerSecurityContext};
        let mut sec = LinuxContainerSecurityContext::default();
        let (c, seccomp, apparmor) = security(&sec, "runtime/default", &host()).unwrap();
        assert_eq!(c.len(), 14);
        assert!(seccomp.is_some(), "the configured default applies");
        assert_eq!(apparmor, None);
        assert!(security(&sec, "unconfined", &host()).unwrap().1.is_none());
        sec.capabilities = Some(CriCaps {
            drop_capabilities: vec!["all".into()],
            add_capabilities: vec!["CAP_KILL".into()],
            ..Default::default()
        });
        assert_eq!(security(&sec, "", &host()).unwrap().0.len(), 1);
        sec.privileged = true;
        let (c, seccomp, _) = security(&sec, "runtime/default", &host()).unwrap();
        assert_eq!(c.len(), host().caps.len(), "privileged: every capability berthd holds");
        assert!(seccomp.is_none(), "privileged runs unconfined");
        sec.privileged = false;
        sec.capabilities = Some(CriCaps {
            add_capabilities: vec!["NOT_A_CAP".into()],
            ..Default::default()
        });
        assert!(matches!(security(&sec, "", &host()), Err(Error::InvalidArgument(_))));
    }

    #[test]
    fn capability_names() {
        assert_eq!(caps(DEFAULT_CAPS.iter().map(|s| s.to_string())).unwrap().len(), 14);
        assert_eq!(caps(all_caps()).unwrap().len(), all_caps().len());
        assert!(caps(["CAP_NET_ADMIN".to_string()]).is_ok());
        assert!(caps(["NOT_A_CAP".to_string()]).is_err());
    }
}
