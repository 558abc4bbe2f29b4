//! Golden-file tests of whole OCI specs for kubelet-shaped CreateContainer requests, built for a
//! fixed host ([`super::spec::tests::host`]) in a temporary pod directory and rootfs: what berth
//! hands runc, field by field. A change to a spec shows as a diff of `golden/<case>.json`; after
//! checking it, `BERTH_BLESS=1 cargo test -p berth-runtime golden` rewrites the files.

use std::path::{Path, PathBuf};

use berth_image::Image;
use berth_image::digest::Digest;
use berth_image::manifest::{ImageConfig, RootFs, RunConfig};
use berth_proto::cri::{
    Capability, ContainerConfig, ContainerMetadata, Int64Value, KeyValue, LinuxContainerConfig,
    LinuxContainerResources, LinuxContainerSecurityContext, LinuxPodSandboxConfig, Mount, NamespaceMode,
    NamespaceOption, PodSandboxConfig, PodSandboxMetadata, SecurityProfile, security_profile::ProfileType,
};

use crate::store::sandbox::{Sandbox, State};

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs/etc");
        std::fs::create_dir_all(&rootfs).unwrap();
        std::fs::write(
            rootfs.join("passwd"),
            "root:x:0:0::/root:/bin/sh\nweb:x:101:102::/srv:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(rootfs.join("group"), "root:x:0:\nweb:x:102:\nextra:x:103:web\n").unwrap();
        let pod = dir.path().join("pod");
        std::fs::create_dir_all(&pod).unwrap();
        std::fs::write(pod.join("hostname"), "web-0\n").unwrap();
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        Fixture { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn sandbox(&self, host_network: bool) -> Sandbox {
        let mode = if host_network {
            NamespaceMode::Node
        } else {
            NamespaceMode::Pod
        } as i32;
        let pod = self.path("pod");
        let mut namespaces = vec![
            ("ipc".to_string(), pod.join("ns/ipc")),
            ("uts".to_string(), pod.join("ns/uts")),
        ];
        if !host_network {
            namespaces.insert(0, ("net".to_string(), pod.join("ns/net")));
        }
        Sandbox {
            id: "a".repeat(64),
            config: PodSandboxConfig {
                metadata: Some(PodSandboxMetadata {
                    name: "web-0".into(),
                    uid: "uid-1".into(),
                    namespace: "shop".into(),
                    attempt: 0,
                }),
                hostname: "web-0".into(),
                log_directory: "/var/log/pods/shop_web-0_uid-1".into(),
                linux: Some(LinuxPodSandboxConfig {
                    cgroup_parent: "/kubepods/burstable/poduid-1".into(),
                    security_context: Some(berth_proto::cri::LinuxSandboxSecurityContext {
                        namespace_options: Some(NamespaceOption {
                            network: mode,
                            pid: NamespaceMode::Container as i32,
                            ipc: NamespaceMode::Pod as i32,
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            },
            runtime_handler: String::new(),
            state: State::Ready,
            created_at: 0,
            dir: pod.clone(),
            namespaces,
            shm: Some(pod.join("shm")),
            pid_holder: None,
            network: None,
        }
    }
}

fn image() -> Image {
    let d = Digest::of(b"config");
    Image {
        id: d.clone(),
        repo_tags: vec!["registry.example/shop/web:1.0".into()],
        repo_digests: vec![],
        manifest: d,
        blobs: vec![],
        layers: vec![],
        size: 0,
        config: ImageConfig {
            architecture: "amd64".into(),
            os: "linux".into(),
            variant: None,
            config: Some(RunConfig {
                user: Some("web".into()),
                env: Some(vec!["PATH=/usr/local/bin:/usr/bin:/bin".into(), "LANG=C.UTF-8".into()]),
                entrypoint: Some(vec!["/usr/bin/web".into()]),
                cmd: Some(vec!["--port=8080".into()]),
                working_dir: Some("/srv".into()),
                ..Default::default()
            }),
            rootfs: RootFs {
                kind: "layers".into(),
                diff_ids: vec![],
            },
        },
        pulled_at: 0,
        pinned: false,
    }
}

/// kubelet's defaults for a container of a pod with no special settings.
fn kubelet_container(name: &str) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        envs: vec![KeyValue {
            key: "KUBERNETES_SERVICE_HOST".into(),
            value: "10.96.0.1".into(),
        }],
        log_path: format!("{name}/0.log"),
        annotations: [("io.kubernetes.container.hash".to_string(), "1a2b3c".to_string())].into(),
        linux: Some(LinuxContainerConfig {
            resources: Some(LinuxContainerResources {
                cpu_period: 100_000,
                cpu_quota: 50_000,
                cpu_shares: 512,
                memory_limit_in_bytes: 256 << 20,
                oom_score_adj: 936,
                ..Default::default()
            }),
            security_context: Some(LinuxContainerSecurityContext {
                seccomp: Some(SecurityProfile {
                    profile_type: ProfileType::RuntimeDefault as i32,
                    ..Default::default()
                }),
                namespace_options: Some(NamespaceOption {
                    pid: NamespaceMode::Container as i32,
                    ..Default::default()
                }),
                masked_paths: super::spec::MASKED_PATHS.iter().map(|s| s.to_string()).collect(),
                readonly_paths: super::spec::READONLY_PATHS.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            }),
        }),
        ..Default::default()
    }
}

/// The spec as JSON with the fixture's directory as `$DIR`, capability sets in name order (oci-spec
/// keeps them in hash sets) and the seccomp rules as a count (the profile has its own tests).
fn render(spec: &oci_spec::runtime::Spec, dir: &Path) -> String {
    let mut v = serde_json::to_value(spec).unwrap();
    if let Some(sets) = v.pointer_mut("/process/capabilities").and_then(|c| c.as_object_mut()) {
        for set in sets.values_mut() {
            if let Some(a) = set.as_array_mut() {
                a.sort_by(|x, y| x.as_str().cmp(&y.as_str()));
            }
        }
    }
    if let Some(rules) = v.pointer_mut("/linux/seccomp/syscalls") {
        let n = rules.as_array().map(|a| a.len()).unwrap_or(0);
        *rules = serde_json::json!(format!("{n} rules"));
    }
    serde_json::to_string_pretty(&v)
        .unwrap()
        .replace(&dir.display().to_string(), "$DIR")
        + "\n"
}

fn check(case: &str, fx: &Fixture, sandbox: &Sandbox, config: &ContainerConfig) {
    let host = super::spec::tests::host();
    let image = image();
    let rootfs = fx.path("rootfs");
    let spec = super::build(&super::SpecInput {
        id: &"c".repeat(64),
        sandbox,
        config,
        image: &image,
        rootfs: &rootfs,
        host: &host,
        unset_seccomp: "unconfined",
        target_pid: None,
        staged: &Default::default(),
        cgroup_driver: crate::cgroup::CgroupDriver::Cgroupfs,
    })
    .unwrap();
    let got = render(&spec, fx.dir.path());
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("src/oci/golden/{case}.json"));
    if std::env::var("BERTH_BLESS").as_deref() == Ok("1") {
        std::fs::write(&file, &got).unwrap();
        return;
    }
    let want =
        std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e} (BERTH_BLESS=1 writes it)", file.display()));
    if got != want {
        let (g, w): (Vec<_>, Vec<_>) = (got.lines().collect(), want.lines().collect());
        let first = g
            .iter()
            .zip(&w)
            .position(|(a, b)| a != b)
            .unwrap_or(g.len().min(w.len()));
        panic!(
            "{case}: the spec differs from {} from line {}:\n  got:  {:?}\n  want: {:?}\n(check it, then BERTH_BLESS=1 rewrites the file)",
            file.display(),
            first + 1,
            g.get(first),
            w.get(first)
        );
    }
}

#[test]
fn plain_pod_container() {
    let fx = Fixture::new();
    check("plain", &fx, &fx.sandbox(false), &kubelet_container("web"));
}

#[test]
fn hardened_container_with_a_host_path() {
    let fx = Fixture::new();
    let mut c = kubelet_container("api");
    c.mounts = vec![Mount {
        container_path: "/data".into(),
        host_path: fx.path("data").display().to_string(),
        readonly: true,
        ..Default::default()
    }];
    let sec = c.linux.as_mut().unwrap().security_context.as_mut().unwrap();
    sec.run_as_user = Some(Int64Value { value: 1000 });
    sec.run_as_group = Some(Int64Value { value: 3000 });
    sec.supplemental_groups = vec![4000];
    sec.readonly_rootfs = true;
    sec.no_new_privs = true;
    sec.capabilities = Some(Capability {
        drop_capabilities: vec!["ALL".into()],
        add_capabilities: vec!["NET_BIND_SERVICE".into()],
        ..Default::default()
    });
    check("hardened", &fx, &fx.sandbox(false), &c);
}

#[test]
fn privileged_host_network_container() {
    let fx = Fixture::new();
    let mut c = kubelet_container("agent");
    c.command = vec!["/bin/agent".into()];
    c.args = vec!["--node".into()];
    let sec = c.linux.as_mut().unwrap().security_context.as_mut().unwrap();
    sec.privileged = true;
    sec.masked_paths.clear();
    sec.readonly_paths.clear();
    check("privileged-host-network", &fx, &fx.sandbox(true), &c);
}

#[test]
fn user_namespace_pod_container() {
    let fx = Fixture::new();
    let mut sb = fx.sandbox(false);
    sb.namespaces.push(("user".into(), fx.path("pod").join("ns/user")));
    let ids = vec![berth_proto::cri::IdMapping {
        container_id: 0,
        host_id: 65536,
        length: 65536,
    }];
    let userns = berth_proto::cri::UserNamespace {
        mode: NamespaceMode::Pod as i32,
        uids: ids.clone(),
        gids: ids,
    };
    let pod_ns = sb.config.linux.as_mut().unwrap().security_context.as_mut().unwrap();
    pod_ns.namespace_options.as_mut().unwrap().userns_options = Some(userns.clone());
    let mut c = kubelet_container("web");
    let sec = c.linux.as_mut().unwrap().security_context.as_mut().unwrap();
    sec.namespace_options
        .get_or_insert_with(Default::default)
        .userns_options = Some(userns);
    check("userns", &fx, &sb, &c);
}
