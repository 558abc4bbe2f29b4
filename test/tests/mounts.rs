//! What Kubernetes 1.36 asks of mounts and user namespaces, seen from inside real containers (root,
//! runc 1.1 through berth-shim, the local registry): a pod with its own user namespace
//! (`hostUsers: false`) whose root is an unprivileged ID outside, with its rootfs and an ID-mapped
//! volume owned right on both sides; recursive read-only mounts whose submounts are read-only too;
//! image volumes with and without a sub path, read-only, keeping their image from removal. Each
//! mount berth made on the host is gone once the pod is.

mod support;

use berth_proto::cri::{
    IdMapping, ImageSpec, Mount, MountPropagation, NamespaceMode, NamespaceOption, PodSandboxConfig,
    RemoveContainerRequest, RemoveImageRequest, RunPodSandboxRequest, StatusRequest, UserNamespace,
};
use berth_proto::tonic::Code;
use berth_test::{registry, require_root};
use support::{Pod, container, sec};

const CGROUP_PARENT: &str = "/berth-test-mounts";
const HOST_ID: u32 = 200_000;

fn mapping() -> Vec<IdMapping> {
    vec![IdMapping {
        container_id: 0,
        host_id: HOST_ID,
        length: 65536,
    }]
}

fn userns(mode: NamespaceMode, ids: Vec<IdMapping>) -> NamespaceOption {
    NamespaceOption {
        pid: NamespaceMode::Container as i32,
        userns_options: Some(UserNamespace {
            mode: mode as i32,
            uids: ids.clone(),
            gids: ids,
        }),
        ..Default::default()
    }
}

fn with_userns(cfg: &mut PodSandboxConfig, opts: NamespaceOption) {
    let linux = cfg.linux.get_or_insert_with(Default::default);
    linux
        .security_context
        .get_or_insert_with(Default::default)
        .namespace_options = Some(opts);
}

/// Whether the daemon says it makes user namespaces and recursive read-only mounts.
async fn features(p: &Pod) -> (bool, bool) {
    let st =
        p.d.runtime()
            .await
            .unwrap()
            .status(StatusRequest { verbose: false })
            .await
            .unwrap()
            .into_inner();
    let f = st
        .runtime_handlers
        .iter()
        .find(|h| h.name.is_empty())
        .and_then(|h| h.features)
        .expect("the default handler with its features");
    (f.user_namespaces, f.recursive_read_only_mounts)
}

fn owner(p: &std::path::Path) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    (m.uid(), m.gid())
}

/// Files under `dir` named `name` (a walk, not following symlinks).
fn find(dir: &std::path::Path, name: &str) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let t = e.file_type().unwrap();
            if e.file_name() == name {
                out.push(e.path());
            }
            if t.is_dir() {
                todo.push(e.path());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_namespace_pod_owns_its_files() {
    require_root!();
    registry::require().await;
    let p = Pod::start(
        CGROUP_PARENT,
        |_| {},
        |c| with_userns(c, userns(NamespaceMode::Pod, mapping())),
    )
    .await;
    let (userns_feature, _) = features(&p).await;
    assert!(
        userns_feature,
        "this kernel ID-maps mounts: user namespaces are advertised"
    );
    let vol = tempfile::tempdir_in(p.d.dir.path()).unwrap();
    std::fs::write(vol.path().join("hostfile"), "from the host\n").unwrap();
    let plain = tempfile::tempdir_in(p.d.dir.path()).unwrap();
    std::fs::write(plain.path().join("hostfile"), "from the host\n").unwrap();
    // A volume on a nosuid,nodev,noexec mount (as /run is under systemd, where the pod's own files
    // live): a user namespace cannot clear those flags, so its bind must keep them.
    let locked = tempfile::tempdir_in(p.d.dir.path()).unwrap();
    let fl = nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV | nix::mount::MsFlags::MS_NOEXEC;
    nix::mount::mount(Some("none"), locked.path(), Some("tmpfs"), fl, None::<&str>).unwrap();
    let script = "test -d /locked && echo locked-volume; \
                  cat /proc/self/uid_map; cat /proc/self/gid_map; echo uid=$(id -u) gid=$(id -g); \
                  echo passwd=$(stat -c %u:%g /etc/passwd); echo made > /made-in-rootfs && echo rootfs-writable; \
                  echo vol=$(stat -c %u:%g /vol/hostfile); echo made > /vol/made-inside && echo vol-writable; \
                  echo plain=$(stat -c %u:%g /plain/hostfile); hostname; echo END";
    let mut c = container("userns", &p.image, script);
    sec(&mut c).namespace_options = Some(userns(NamespaceMode::Pod, mapping()));
    c.mounts = vec![
        Mount {
            container_path: "/vol".into(),
            host_path: vol.path().display().to_string(),
            uid_mappings: mapping(),
            gid_mappings: mapping(),
            ..Default::default()
        },
        Mount {
            container_path: "/locked".into(),
            host_path: locked.path().display().to_string(),
            ..Default::default()
        },
        Mount {
            container_path: "/plain".into(),
            host_path: plain.path().display().to_string(),
            readonly: true,
            ..Default::default()
        },
    ];
    let (id, code, out) = p.run_id(c).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("locked-volume"), "{out}");
    let maps: Vec<Vec<&str>> = out
        .lines()
        .skip(1)
        .take(2)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        maps,
        vec![vec!["0", "200000", "65536"]; 2],
        "uid_map and gid_map inside: {out}"
    );
    assert!(out.contains("uid=0 gid=0"), "root inside: {out}");
    assert!(
        out.contains("passwd=0:0"),
        "the image's files are root's inside (ID-mapped layers): {out}"
    );
    assert!(out.contains("rootfs-writable") && out.contains("vol-writable"), "{out}");
    assert!(
        out.contains("vol=0:0"),
        "the ID-mapped volume's root-owned file is root's inside: {out}"
    );
    assert!(
        out.contains("plain=65534:65534"),
        "a volume without ID mappings shows the host's root as nobody: {out}"
    );
    assert!(
        out.lines().any(|l| l == "app"),
        "the pod's hostname, set in its UTS namespace: {out}"
    );
    // Outside: what the pod's root wrote in its rootfs belongs to the unprivileged host ID…
    // (In the snapshot's upper directory: the rootfs mount itself shows the same inode.)
    let made: Vec<_> = find(p.d.dir.path(), "made-in-rootfs")
        .into_iter()
        .filter(|f| f.parent().is_some_and(|d| d.ends_with("upper")))
        .collect();
    assert_eq!(made.len(), 1, "{made:?}");
    assert_eq!(
        owner(&made[0]),
        (HOST_ID, HOST_ID),
        "written by the pod's root, owned by {HOST_ID} outside"
    );
    // …and through the ID-mapped volume it lands as the host's root, as the file it found.
    assert_eq!(owner(&vol.path().join("made-inside")), (0, 0));
    assert_eq!(owner(&vol.path().join("hostfile")), (0, 0));

    // The running process: root inside, HOST_ID on the host.
    let mut c = container("sleeper", &p.image, "echo ready; sleep 60");
    sec(&mut c).namespace_options = Some(userns(NamespaceMode::Pod, mapping()));
    let sid = p.create(c).await.unwrap();
    p.start_container(&sid).await.unwrap();
    let ours = std::fs::read_link("/proc/self/ns/user").unwrap();
    let t0 = std::time::Instant::now();
    let pid = loop {
        let found = std::fs::read_dir("/proc").unwrap().flatten().find_map(|e| {
            let pid = e.file_name().to_str()?.parse::<u32>().ok()?;
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let ns = std::fs::read_link(format!("/proc/{pid}/ns/user")).ok()?;
            (cmd == b"sleep\x0060\x00" && ns != ours).then_some(pid)
        });
        if let Some(pid) = found {
            break pid;
        }
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(20),
            "the container's sleep never showed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert_eq!(
        uid_line.split_whitespace().nth(1),
        Some(HOST_ID.to_string().as_str()),
        "{uid_line}"
    );
    // An exec joins the same user namespace: root inside again.
    let mut rt = p.d.runtime().await.unwrap();
    let ex = rt
        .exec_sync(berth_proto::cri::ExecSyncRequest {
            container_id: sid.clone(),
            cmd: vec!["sh".into(), "-c".into(), "id -u; cat /proc/self/uid_map".into()],
            timeout: 10,
        })
        .await
        .unwrap()
        .into_inner();
    let text = String::from_utf8_lossy(&ex.stdout);
    assert_eq!(ex.exit_code, 0, "{ex:?}");
    assert!(text.starts_with("0\n") && text.contains("200000"), "{text}");
    for cid in [id, sid] {
        rt.remove_container(RemoveContainerRequest { container_id: cid })
            .await
            .unwrap();
    }
    nix::mount::umount2(locked.path(), nix::mount::MntFlags::MNT_DETACH).unwrap();
    p.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_namespace_requests_the_cri_refuses() {
    require_root!();
    registry::require().await;
    let p = Pod::start(CGROUP_PARENT, |_| {}, |_| {}).await;
    let mut rt = p.d.runtime().await.unwrap();
    let two = vec![
        mapping()[0],
        IdMapping {
            host_id: 400_000,
            ..mapping()[0]
        },
    ];
    let one_up = vec![IdMapping {
        container_id: 1,
        ..mapping()[0]
    }];
    let cases = [
        ("container-mode", userns(NamespaceMode::Container, vec![])),
        ("target-mode", userns(NamespaceMode::Target, vec![])),
        ("two-mappings", userns(NamespaceMode::Pod, two)),
        ("root-unmapped", userns(NamespaceMode::Pod, one_up)),
        ("no-mappings", userns(NamespaceMode::Pod, vec![])),
    ];
    for (name, opts) in cases {
        let mut cfg = support::pod_config(name, CGROUP_PARENT, &p.logs);
        with_userns(&mut cfg, opts);
        let err = rt
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(cfg),
                runtime_handler: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{name}: {err:?}");
    }
    // A container cannot ask for a pod user namespace its pod does not have.
    let mut c = container("wants-userns", &p.image, "true");
    sec(&mut c).namespace_options = Some(userns(NamespaceMode::Pod, mapping()));
    let err = p.create(c).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    p.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recursive_read_only_mounts() {
    require_root!();
    registry::require().await;
    let p = Pod::start(CGROUP_PARENT, |_| {}, |_| {}).await;
    let (_, rro_feature) = features(&p).await;
    assert!(
        rro_feature,
        "this kernel has mount_setattr: recursive read-only mounts are advertised"
    );
    // A host directory with a tmpfs mounted below it, as critest makes it.
    // On a shared mount, as everything is under systemd: berth's clone must be no peer of it, or
    // dropping the clone would unmount the host's tmpfs too.
    let host = tempfile::tempdir_in(p.d.dir.path()).unwrap();
    let none = None::<&str>;
    nix::mount::mount(Some(host.path()), host.path(), none, nix::mount::MsFlags::MS_BIND, none).unwrap();
    nix::mount::mount(none, host.path(), none, nix::mount::MsFlags::MS_SHARED, none).unwrap();
    let sub = host.path().join("tmpfs");
    std::fs::create_dir(&sub).unwrap();
    nix::mount::mount(
        Some("none"),
        &sub,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    let m = |rro: bool| Mount {
        container_path: "/mnt".into(),
        host_path: host.path().display().to_string(),
        readonly: true,
        recursive_read_only: rro,
        ..Default::default()
    };
    let script = "touch /mnt/top 2>&1; touch /mnt/tmpfs/below 2>&1 && echo below-writable; echo END";
    // A plain read-only bind leaves the submount writable: what recursive read-only is for.
    let mut c = container("ro", &p.image, script);
    c.mounts = vec![m(false)];
    let (_, _, out) = p.run_id(c).await;
    assert!(out.contains("below-writable"), "{out}");
    assert!(sub.join("below").exists());
    let mut c = container("rro", &p.image, script);
    c.mounts = vec![m(true)];
    let (id, _, out) = p.run_id(c).await;
    assert!(out.contains("Read-only file system"), "{out}");
    assert!(!out.contains("below-writable"), "the submount is read-only too: {out}");
    let st = p.status(&id).await;
    assert!(
        st.mounts
            .iter()
            .any(|m| m.container_path == "/mnt" && m.recursive_read_only),
        "{st:?}"
    );
    // Once the container runs, berth's own copy of the mounts is gone from the host: the host
    // directory can be unmounted and removed while the container exists (critest does so).
    nix::mount::umount2(&sub, nix::mount::MntFlags::MNT_DETACH).unwrap();
    std::fs::remove_dir(&sub).unwrap();
    nix::mount::umount2(host.path(), nix::mount::MntFlags::MNT_DETACH).unwrap();
    // What the CRI says cannot be recursive read-only.
    for (name, bad) in [
        (
            "writable",
            Mount {
                readonly: false,
                ..m(true)
            },
        ),
        (
            "host-to-container",
            Mount {
                propagation: MountPropagation::PropagationHostToContainer as i32,
                ..m(true)
            },
        ),
        (
            "bidirectional",
            Mount {
                propagation: MountPropagation::PropagationBidirectional as i32,
                ..m(true)
            },
        ),
    ] {
        let mut c = container(name, &p.image, "true");
        c.mounts = vec![bad];
        let err = p.create(c).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{name}: {err:?}");
    }
    let mut rt = p.d.runtime().await.unwrap();
    let ids: Vec<String> = rt
        .list_containers(berth_proto::cri::ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers
        .into_iter()
        .map(|c| c.id)
        .collect();
    for cid in ids {
        rt.remove_container(RemoveContainerRequest { container_id: cid })
            .await
            .unwrap();
    }
    p.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_volumes_with_and_without_sub_path() {
    require_root!();
    registry::require().await;
    let p = Pod::start(CGROUP_PARENT, |_| {}, |_| {}).await;
    // An image not pulled yet: CreateContainer pulls it, as kubelet expects of an image volume.
    let vol_image = registry::image("stopsignal:latest");
    let iv = |path: &str, sub: &str| Mount {
        container_path: path.into(),
        image: Some(ImageSpec {
            image: vol_image.clone(),
            ..Default::default()
        }),
        image_sub_path: sub.into(),
        readonly: true,
        ..Default::default()
    };
    let script = "test -x /iv/bin/busybox && echo whole-image; test -f /etc-only/passwd && echo sub-path; \
                  test -e /etc-only/bin || echo only-the-sub-path; touch /iv/x 2>&1; echo END";
    let mut c = container("iv", &p.image, script);
    c.mounts = vec![iv("/iv", ""), iv("/etc-only", "etc")];
    let (id, code, out) = p.run_id(c).await;
    assert_eq!(code, 0, "{out}");
    for want in ["whole-image", "sub-path", "only-the-sub-path", "Read-only file system"] {
        assert!(out.contains(want), "{want}: {out}");
    }
    let st = p.status(&id).await;
    let shown: Vec<(&str, &str)> = st
        .mounts
        .iter()
        .filter(|m| m.image.is_some())
        .map(|m| (m.container_path.as_str(), m.image_sub_path.as_str()))
        .collect();
    assert_eq!(shown, vec![("/iv", ""), ("/etc-only", "etc")], "{st:?}");
    // The image stays while a container mounts it; once that is gone it can go.
    let mut ic = p.d.images().await.unwrap();
    let err = ic
        .remove_image(RemoveImageRequest {
            image: Some(ImageSpec {
                image: vol_image.clone(),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    // Sub paths that are not inside the image.
    for (sub, code) in [
        ("../etc", Code::InvalidArgument),
        ("/etc", Code::InvalidArgument),
        ("nothing-here", Code::NotFound),
    ] {
        let mut c = container("bad-sub", &p.image, "true");
        c.mounts = vec![iv("/iv", sub)];
        let err = p.create(c).await.unwrap_err();
        assert_eq!(err.code(), code, "{sub}: {err:?}");
    }
    let mut rt = p.d.runtime().await.unwrap();
    rt.remove_container(RemoveContainerRequest { container_id: id })
        .await
        .unwrap();
    ic.remove_image(RemoveImageRequest {
        image: Some(ImageSpec {
            image: vol_image.clone(),
            ..Default::default()
        }),
    })
    .await
    .unwrap();
    p.finish().await;
}

/// The same with the pod's PID namespace shared by its containers (kubelet's
/// `shareProcessNamespace`, and critest's default): pod-init runs inside the user namespace too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_namespace_pod_with_a_shared_pid_namespace() {
    require_root!();
    registry::require().await;
    let shared = || NamespaceOption {
        pid: NamespaceMode::Pod as i32,
        ..userns(NamespaceMode::Pod, mapping())
    };
    let p = Pod::start(CGROUP_PARENT, |_| {}, |c| with_userns(c, shared())).await;
    let mut c = container(
        "shared",
        &p.image,
        "cat /proc/self/uid_map; echo uid=$(id -u); ps -o pid,comm; echo END",
    );
    sec(&mut c).namespace_options = Some(shared());
    let (id, code, out) = p.run_id(c).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.lines()
            .next()
            .is_some_and(|l| l.split_whitespace().collect::<Vec<_>>() == ["0", "200000", "65536"]),
        "{out}"
    );
    assert!(out.contains("uid=0"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.trim_start().starts_with("1 ") && l.contains("berth-shim")),
        "pod-init is PID 1: {out}"
    );
    p.d.runtime()
        .await
        .unwrap()
        .remove_container(RemoveContainerRequest { container_id: id })
        .await
        .unwrap();
    p.finish().await;
}
