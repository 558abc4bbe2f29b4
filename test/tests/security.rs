//! The security context, seen from inside real containers (root, runc through berth-shim):
//! capability masks, users and groups, read-only rootfs, masked paths, no_new_privs, seccomp,
//! sysctls and a PID namespace shared with another container; and the error paths, which leave
//! nothing behind.

mod support;

use std::collections::HashMap;

use berth_proto::cri::security_profile::ProfileType;
use berth_proto::cri::{
    Capability, ContainerState, Int64Value, NamespaceMode, NamespaceOption, RemoveContainerRequest,
    RunPodSandboxRequest, SecurityProfile, SupplementalGroupsPolicy,
};
use berth_proto::tonic::Code;
use berth_test::{registry, require_root};
use support::{Pod, container, sec};

const CGROUP_PARENT: &str = "/berth-test-secctx";

/// The value of a `/proc/self/status` field in `out`.
fn field<'a>(out: &'a str, name: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(name).map(|v| v.trim_start_matches(':').trim()))
        .unwrap_or_else(|| panic!("no {name} in {out}"))
}

fn hex(v: &str) -> u64 {
    u64::from_str_radix(v, 16).unwrap()
}

/// Docker's and containerd's default 14 capabilities, as a CapEff mask.
const DEFAULT_CAPS: u64 = 0xa80425fb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capabilities_users_and_filesystem() {
    require_root!();
    registry::require().await;
    let p = Pod::start(CGROUP_PARENT, |_| {}, |_| {}).await;
    let status = "grep -E '^(CapEff|CapBnd|CapInh|CapAmb|NoNewPrivs|Seccomp):' /proc/self/status; echo END";

    let (code, out) = p.run(container("default", &p.image, status)).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(hex(field(&out, "CapEff")), DEFAULT_CAPS, "{out}");
    assert_eq!(hex(field(&out, "CapBnd")), DEFAULT_CAPS, "{out}");
    assert_eq!(field(&out, "NoNewPrivs"), "0");
    assert_eq!(
        (hex(field(&out, "CapInh")), hex(field(&out, "CapAmb"))),
        (0, 0),
        "{out}"
    );

    // A non-root user has no capabilities at all (none inheritable or ambient).
    let mut c = container("nonroot", &p.image, status);
    sec(&mut c).run_as_user = Some(Int64Value { value: 1000 });
    let (_, out) = p.run(c).await;
    assert_eq!(
        (hex(field(&out, "CapEff")), hex(field(&out, "CapAmb"))),
        (0, 0),
        "{out}"
    );

    let mut c = container("adddrop", &p.image, status);
    sec(&mut c).capabilities = Some(Capability {
        add_capabilities: vec!["NET_ADMIN".into(), "CAP_SYS_TIME".into()],
        drop_capabilities: vec!["CHOWN".into()],
        ..Default::default()
    });
    let (_, out) = p.run(c).await;
    assert_eq!(
        hex(field(&out, "CapEff")),
        (DEFAULT_CAPS & !1) | (1 << 12) | (1 << 25),
        "CHOWN dropped, NET_ADMIN and SYS_TIME added: {out}"
    );

    let mut c = container("dropall", &p.image, status);
    sec(&mut c).capabilities = Some(Capability {
        drop_capabilities: vec!["ALL".into()],
        add_capabilities: vec!["KILL".into()],
        ..Default::default()
    });

    let (_, out) = p.run(c).await;
    assert_eq!(hex(field(&out, "CapEff")), 1 << 5, "only KILL: {out}");

    // Privileged: every capability the kernel has, no seccomp, masked paths readable.
    let host = std::fs::read_to_string("/proc/self/status").unwrap();
    let mut c = container(
        "privileged",
        &p.image,
        "grep -E '^(CapEff|Seccomp):' /proc/self/status; echo timer_list=$(cat /proc/timer_list | wc -c); echo END",
    );
    sec(&mut c).privileged = true;
    let (_, out) = p.run(c).await;
    assert_eq!(field(&out, "CapEff"), field(&host, "CapBnd"), "{out}");
    assert_eq!(field(&out, "Seccomp"), "0", "privileged runs unconfined: {out}");
    assert_ne!(field(&out, "timer_list="), "0", "nothing masked: {out}");

    // Users and groups: the image's passwd has berth (1000; also in audio 29 and users 100) and
    // app (2000; in audio 29 and video 44).
    let id = "id; echo END";
    let mut c = container("numeric", &p.image, id);
    sec(&mut c).run_as_user = Some(Int64Value { value: 1000 });
    let (_, out) = p.run(c).await;
    assert!(out.starts_with("uid=1000(berth) gid=1000(berth)"), "{out}");
    assert!(
        out.contains("29(audio)") && out.contains("100(users)"),
        "image groups: {out}"
    );

    let mut c = container("byname", &p.image, id);
    sec(&mut c).run_as_username = "app".into();
    let (_, out) = p.run(c).await;
    assert!(out.starts_with("uid=2000(app) gid=2000(app)"), "{out}");
    assert!(out.contains("29(audio)") && out.contains("44(video)"), "{out}");

    let mut c = container("uidgid", &p.image, id);
    sec(&mut c).run_as_user = Some(Int64Value { value: 1000 });
    sec(&mut c).run_as_group = Some(Int64Value { value: 44 });
    sec(&mut c).supplemental_groups = vec![4242];
    let (_, out) = p.run(c).await;
    assert!(out.starts_with("uid=1000(berth) gid=44(video)"), "{out}");
    assert!(out.contains("4242") && out.contains("29(audio)"), "Merge: {out}");

    let mut c = container("strict", &p.image, id);
    sec(&mut c).run_as_user = Some(Int64Value { value: 1000 });
    sec(&mut c).supplemental_groups = vec![4242];
    sec(&mut c).supplemental_groups_policy = SupplementalGroupsPolicy::Strict as i32;
    let (strict_id, _, out) = p.run_id(c).await;
    let user = p.status(&strict_id).await.user.unwrap().linux.unwrap();
    assert_eq!(
        (user.uid, user.gid, user.supplemental_groups),
        (1000, 1000, vec![1000, 4242]),
        "ContainerStatus reports the user as resolved"
    );
    assert!(out.contains("4242"), "{out}");
    assert!(
        !out.contains("audio") && !out.contains("users"),
        "Strict: no groups from the image's /etc/group: {out}"
    );

    // A read-only rootfs refuses writes; /dev/shm stays writable.
    let mut c = container(
        "readonly",
        &p.image,
        "touch /newfile 2>/dev/null; echo root=$?; touch /dev/shm/x; echo shm=$?; echo END",
    );
    sec(&mut c).readonly_rootfs = true;
    let (_, out) = p.run(c).await;
    assert!(out.contains("root=1") && out.contains("shm=0"), "{out}");

    // Masked paths read as nothing; read-only ones refuse writes.
    let (_, out) = p
        .run(container(
            "masked",
            &p.image,
            "echo timer_list=$(cat /proc/timer_list | wc -c); echo firmware=$(ls /sys/firmware | wc -l); \
             echo 1 > /proc/sys/kernel/domainname 2>/dev/null; echo sysw=$?; echo END",
        ))
        .await;
    assert_eq!(field(&out, "timer_list="), "0", "{out}");
    assert_eq!(field(&out, "firmware="), "0", "{out}");
    assert_eq!(field(&out, "sysw="), "1", "{out}");

    // no_new_privs reaches the process.
    let mut c = container("nnp", &p.image, status);
    sec(&mut c).no_new_privs = true;
    let (_, out) = p.run(c).await;
    assert_eq!(field(&out, "NoNewPrivs"), "1", "{out}");
    p.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seccomp_profiles() {
    require_root!();
    registry::require().await;
    let p = Pod::start(CGROUP_PARENT, |_| {}, |_| {}).await;
    let probe = "grep '^Seccomp:' /proc/self/status; unshare -U true 2>/dev/null; echo userns=$?; \
                 mkdir /made 2>/dev/null; echo mkdir=$?; echo END";
    let profile = |t: ProfileType, r: &str| {
        Some(SecurityProfile {
            profile_type: t as i32,
            localhost_ref: r.into(),
        })
    };

    // Unset: the configured default, unconfined (what the CRI says an unset profile means).
    let (code, out) = p.run(container("unset", &p.image, probe)).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(field(&out, "Seccomp"), "0", "{out}");

    let mut c = container("default", &p.image, probe);
    sec(&mut c).seccomp = profile(ProfileType::RuntimeDefault, "");
    let (code, out) = p.run(c).await;
    assert_eq!(code, 0, "normal programs run: {out}");
    assert_eq!(field(&out, "Seccomp"), "2", "{out}");
    assert_eq!(
        field(&out, "userns="),
        "1",
        "unshare of a user namespace is blocked: {out}"
    );
    assert_eq!(field(&out, "mkdir="), "0", "{out}");
    assert_eq!((field(&out, "Seccomp"), field(&out, "userns=")), ("2", "1"), "{out}");

    let mut c = container("unconfined", &p.image, probe);
    sec(&mut c).seccomp = profile(ProfileType::Unconfined, "");
    let (_, out) = p.run(c).await;
    assert_eq!(field(&out, "Seccomp"), "0", "{out}");
    assert_eq!(
        field(&out, "userns="),
        "0",
        "without seccomp this kernel lets a container make a user namespace: {out}"
    );

    // Deprecated strings.
    #[allow(deprecated)]
    {
        let mut c = container("legacy-unconfined", &p.image, probe);
        sec(&mut c).seccomp_profile_path = "unconfined".into();
        let (_, out) = p.run(c).await;
        assert_eq!(field(&out, "Seccomp"), "0", "{out}");
        let mut c = container("legacy-docker", &p.image, probe);
        sec(&mut c).seccomp_profile_path = "docker/default".into();
        let (_, out) = p.run(c).await;
        assert_eq!(field(&out, "Seccomp"), "2", "{out}");
    }

    // A Localhost profile from a file: everything but mkdir.
    let file = p.d.dir.path().join("no-mkdir.json");
    std::fs::write(
        &file,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":1}]}"#,
    )
    .unwrap();
    let mut c = container("localhost", &p.image, probe);
    sec(&mut c).seccomp = profile(ProfileType::Localhost, &file.display().to_string());
    let (_, out) = p.run(c).await;
    assert_eq!(field(&out, "Seccomp"), "2", "{out}");
    assert_eq!(field(&out, "mkdir="), "1", "{out}");

    // A missing file: InvalidArgument, and nothing left: no bundle, snapshot or record.
    let bundles = p.d.config.state.join("containers");
    let snapshots = p.d.image_root().join("overlay/snapshots");
    let records = p.d.config.root.join("containers");
    let before = [&bundles, &snapshots, &records].map(|d| berth_test::count_entries(d));
    let mounts = berth_test::mounts_under(&bundles).len();
    let mut c = container("missing", &p.image, probe);
    sec(&mut c).seccomp = profile(ProfileType::Localhost, "/no/such/profile.json");
    let err = p.create(c).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("/no/such/profile.json"), "{err:?}");
    assert_eq!(
        [&bundles, &snapshots, &records].map(|d| berth_test::count_entries(d)),
        before
    );
    assert_eq!(
        berth_test::mounts_under(&bundles).len(),
        mounts,
        "no rootfs left mounted"
    );
    // The name is free again.
    let ok = p.create(container("missing", &p.image, "true")).await.unwrap();
    p.d.runtime()
        .await
        .unwrap()
        .remove_container(RemoveContainerRequest { container_id: ok })
        .await
        .unwrap();

    // AppArmor: this host's kernel has none; a named profile is refused, not ignored.
    if !std::path::Path::new("/sys/module/apparmor").exists() {
        let mut c = container("apparmor", &p.image, "true");
        sec(&mut c).apparmor = profile(ProfileType::Localhost, "my-profile");
        let err = p.create(c).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains("AppArmor"), "{err:?}");
    } else {
        berth_test::report_not_tested(
            "security::seccomp_profiles (AppArmor refusal)",
            "this host has AppArmor; the refusal path is for hosts without it",
        );
    }
    p.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unset_profile_follows_the_config() {
    require_root!();
    registry::require().await;
    let p = Pod::start(
        CGROUP_PARENT,
        |c| c.runtime.unset_seccomp_profile = "runtime/default".into(),
        |_| {},
    )
    .await;
    let (_, out) = p
        .run(container(
            "unset",
            &p.image,
            "grep '^Seccomp:' /proc/self/status; echo END",
        ))
        .await;
    assert_eq!(
        field(&out, "Seccomp"),
        "2",
        "the safer default, where configured: {out}"
    );
    p.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sysctls_and_pid_target() {
    require_root!();
    registry::require().await;
    let sysctls: HashMap<String, String> = [
        ("kernel.shm_rmid_forced", "1"),
        ("net.ipv4.ip_unprivileged_port_start", "80"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let p = Pod::start(
        CGROUP_PARENT,
        |_| {},
        |cfg| cfg.linux.as_mut().unwrap().sysctls = sysctls.clone(),
    )
    .await;
    let (_, out) = p
        .run(container(
            "sysctl",
            &p.image,
            "echo shm=$(cat /proc/sys/kernel/shm_rmid_forced); \
             echo port=$(cat /proc/sys/net/ipv4/ip_unprivileged_port_start); echo END",
        ))
        .await;
    assert_eq!((field(&out, "shm="), field(&out, "port=")), ("1", "80"), "{out}");
    assert_ne!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
            .unwrap()
            .trim(),
        "80",
        "the host's value is untouched"
    );

    // A container in the PID namespace of another (TARGET) sees its processes.
    let target = p.create(container("target", &p.image, "sleep 1003")).await.unwrap();
    p.start_container(&target).await.unwrap();
    p.wait_state(&target, ContainerState::ContainerRunning).await;
    let mut c = container("debug", &p.image, "ps -o args | grep -c '^sleep 1003'; echo END");
    sec(&mut c).namespace_options = Some(NamespaceOption {
        pid: NamespaceMode::Target as i32,
        target_id: target.clone(),
        ..Default::default()
    });
    let (_, out) = p.run(c).await;
    assert_eq!(out.lines().next(), Some("1"), "the target's sleep is visible: {out}");
    let mut c = container("badtarget", &p.image, "true");
    sec(&mut c).namespace_options = Some(NamespaceOption {
        pid: NamespaceMode::Target as i32,
        target_id: "no-such-container".into(),
        ..Default::default()
    });
    assert_eq!(p.create(c).await.unwrap_err().code(), Code::NotFound);

    // Sysctls that are not namespaced, or whose namespace the pod shares with the host: refused,
    // and no pod is left.
    let pods = p.d.config.state.join("pods");
    let before = berth_test::count_entries(&pods);
    let mut rt = p.d.runtime().await.unwrap();
    for (key, host_net) in [
        ("kernel.pid_max", false),
        ("vm.swappiness", false),
        ("net.ipv4.ip_forward", true),
    ] {
        let mut cfg = support::pod_config(&format!("bad-{host_net}"), CGROUP_PARENT, &p.logs);
        let l = cfg.linux.as_mut().unwrap();
        l.sysctls = [(key.to_string(), "1".to_string())].into_iter().collect();
        if host_net {
            l.security_context = Some(berth_proto::cri::LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: NamespaceMode::Node as i32,
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
        let err = rt
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(cfg),
                runtime_handler: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{key}: {err:?}");
        assert!(err.message().contains(key), "{err:?}");
    }
    assert_eq!(berth_test::count_entries(&pods), before, "no pod directory left");
    p.finish().await;
}

/// A setuid-root binary run by an unprivileged user raises its effective uid to 0, except under
/// no_new_privs. (busybox drops setuid for its applets, so a tiny static probe is built with the
/// host's C compiler, mounted in, and made setuid inside the container's rootfs.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setuid_under_no_new_privs() {
    require_root!();
    registry::require().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("euid.c"),
        // With an argument: drop to uid/gid 1000 and exec itself (setuid root); without: print the euid.
        r#"#include <grp.h>
#include <stdio.h>
#include <unistd.h>
int main(int argc, char **argv) {
    if (argc > 1) {
        if (setgroups(0, NULL) || setgid(1000) || setuid(1000)) { perror("drop"); return 1; }
        execl(argv[0], argv[0], (char *)NULL);
        perror("exec");
        return 1;
    }
    printf("euid=%d\n", (int)geteuid());
    return 0;
}
"#,
    )
    .unwrap();
    if !build_probe(dir.path(), "euid", "security::setuid_under_no_new_privs") {
        return;
    }
    let p = Pod::start(CGROUP_PARENT, |_| {}, |_| {}).await;
    let script = "cp /probe/euid /tmp/euid && chmod 4755 /tmp/euid && /tmp/euid drop; echo END";
    let probe = |name: &str, nnp: bool| {
        let mut c = container(name, &p.image, script);
        c.mounts = vec![berth_proto::cri::Mount {
            container_path: "/probe".into(),
            host_path: dir.path().display().to_string(),
            readonly: true,
            ..Default::default()
        }];
        sec(&mut c).no_new_privs = nnp;
        c
    };
    let (_, out) = p.run(probe("plain", false)).await;
    assert_eq!(field(&out, "euid="), "0", "without no_new_privs setuid works: {out}");
    let (_, out) = p.run(probe("nnp", true)).await;
    assert_eq!(
        field(&out, "euid="),
        "1000",
        "no_new_privs keeps the caller's uid: {out}"
    );
    p.finish().await;
}

/// Builds `<dir>/<name>.c` into a static `<dir>/<name>` with the host's C compiler; false (and said
/// loudly) when there is none.
fn build_probe(dir: &std::path::Path, name: &str, test: &str) -> bool {
    let built = std::process::Command::new("cc")
        .args(["-static", "-O2", "-o"])
        .arg(dir.join(name))
        .arg(dir.join(format!("{name}.c")))
        .output();
    match built {
        Ok(o) => {
            assert!(o.status.success(), "building the probe: {o:?}");
            true
        }
        Err(e) => {
            berth_test::report_not_tested(test, &format!("no C compiler (cc) to build a probe: {e}"));
            false
        }
    }
}

/// The default profile blocks keyctl and add_key (kernel keyrings are not namespaced), which
/// busybox has no applet for: a static probe makes the calls and prints their errno.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_default_blocks_keyrings() {
    require_root!();
    registry::require().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("keys.c"),
        r#"#include <errno.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>
int main(void) {
    errno = 0;
    long r = syscall(SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -3 /* session */, 1);
    printf("keyctl=%d\n", r < 0 ? errno : 0);
    errno = 0;
    r = syscall(SYS_add_key, "user", "berth-test", "x", 1, -3);
    printf("add_key=%d\n", r < 0 ? errno : 0);
    return 0;
}
"#,
    )
    .unwrap();
    if !build_probe(dir.path(), "keys", "security::runtime_default_blocks_keyrings") {
        return;
    }
    let p = Pod::start(CGROUP_PARENT, |_| {}, |_| {}).await;
    let probe = |name: &str, t: ProfileType| {
        let mut c = container(name, &p.image, "/probe/keys; echo END");
        c.mounts = vec![berth_proto::cri::Mount {
            container_path: "/probe".into(),
            host_path: dir.path().display().to_string(),
            readonly: true,
            ..Default::default()
        }];
        sec(&mut c).seccomp = Some(SecurityProfile {
            profile_type: t as i32,
            localhost_ref: String::new(),
        });
        c
    };
    let (_, out) = p.run(probe("keys-default", ProfileType::RuntimeDefault)).await;
    assert_eq!(
        (field(&out, "keyctl="), field(&out, "add_key=")),
        ("1", "1"),
        "EPERM: {out}"
    );
    let (_, out) = p.run(probe("keys-unconfined", ProfileType::Unconfined)).await;
    assert_ne!(field(&out, "keyctl="), "1", "the kernel itself allows it: {out}");
    p.finish().await;
}
