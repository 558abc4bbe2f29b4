//! End-to-end image tests: a real berthd (in-process) pulling from the local registry into real
//! overlayfs layers, as root. Setup: `hack/registry.sh start && hack/test-images.py`.

mod support;

use std::collections::HashSet;
use std::path::Path;

use berth_image::{Digest, Overlay, Snapshotter};
use berth_proto::cri::{
    ImageFilter, ImageFsInfoRequest, ImageSpec, ImageStatusRequest, ListImagesRequest, PullImageRequest,
    RemoveImageRequest,
};
use berth_proto::tonic::Code;
use berth_test::{Daemon, count_entries, registry, require_root};

fn spec(image: &str) -> Option<ImageSpec> {
    Some(ImageSpec {
        image: image.to_string(),
        ..Default::default()
    })
}

async fn pull(d: &Daemon, image: &str) -> Result<String, berth_proto::tonic::Status> {
    let mut c = d.images().await.unwrap();
    c.pull_image(PullImageRequest {
        image: spec(image),
        ..Default::default()
    })
    .await
    .map(|r| r.into_inner().image_ref)
}

async fn status(d: &Daemon, image: &str, verbose: bool) -> berth_proto::cri::ImageStatusResponse {
    let mut c = d.images().await.unwrap();
    c.image_status(ImageStatusRequest {
        image: spec(image),
        verbose,
    })
    .await
    .unwrap()
    .into_inner()
}

async fn list(d: &Daemon) -> Vec<berth_proto::cri::Image> {
    let mut c = d.images().await.unwrap();
    c.list_images(ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images
}

async fn remove(d: &Daemon, image: &str) {
    let mut c = d.images().await.unwrap();
    c.remove_image(RemoveImageRequest { image: spec(image) }).await.unwrap();
}

/// The diff IDs of an image, bottom first, from verbose ImageStatus.
async fn diff_ids(d: &Daemon, image: &str) -> Vec<Digest> {
    let st = status(d, image, true).await;
    let info: serde_json::Value = serde_json::from_str(&st.info["info"]).unwrap();
    info["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| Digest::parse(l["diff_id"].as_str().unwrap()).unwrap())
        .collect()
}

fn layers_dir(d: &Daemon) -> std::path::PathBuf {
    d.image_root().join("overlay/layers")
}

fn blobs_dir(d: &Daemon) -> std::path::PathBuf {
    d.image_root().join("content/blobs/sha256")
}

/// Mounts a read-only view of `layers` on a temp dir, runs `f` on it, unmounts.
fn with_view<T>(d: &Daemon, layers: &[Digest], f: impl FnOnce(&Path) -> T) -> T {
    let overlay = Overlay::open(&d.image_root().join("overlay")).unwrap();
    let target = tempfile::tempdir_in(d.dir.path()).unwrap();
    let m = overlay.view("test-view", layers).unwrap();
    m.mount(target.path()).unwrap();
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(target.path())));
    berth_image::sys::unmount(target.path()).unwrap();
    match out {
        Ok(v) => v,
        Err(p) => std::panic::resume_unwind(p),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_by_tag_then_list_status_remove() {
    require_root!();
    registry::require().await;
    let d = Daemon::start().await.unwrap();
    let name = registry::image("busybox:latest");
    let id = pull(&d, &name).await.unwrap();
    assert!(
        id.starts_with("sha256:") && id.len() == 71,
        "image ref is the image ID: {id}"
    );

    let digest = registry::manifest_digest("busybox:latest").await.unwrap();
    let img = status(&d, &name, false).await.image.expect("pulled image has a status");
    assert_eq!(img.id, id);
    assert_eq!(img.repo_tags, vec![name.clone()]);
    assert_eq!(
        img.repo_digests,
        vec![format!("{}/berth/busybox@{digest}", registry::addr())]
    );
    assert!(img.size > 100_000, "size counts config and layers: {}", img.size);
    assert_eq!(img.uid, None);
    assert_eq!(img.username, "");
    assert_eq!(img.spec.unwrap().image, id);

    // The same image by ID, bare hex ID, repo digest, and a short name that normalises to it.
    for r in [
        id.clone(),
        id.trim_start_matches("sha256:").to_string(),
        img.repo_digests[0].clone(),
    ] {
        assert_eq!(
            status(&d, &r, false).await.image.map(|i| i.id),
            Some(id.clone()),
            "lookup by {r}"
        );
    }
    // The verbose form carries the config, as kubelet's `crictl inspecti` shows it.
    let st = status(&d, &name, true).await;
    let info: serde_json::Value = serde_json::from_str(&st.info["info"]).unwrap();
    assert_eq!(info["imageSpec"]["config"]["Cmd"], serde_json::json!(["sh"]));
    assert_eq!(info["layers"].as_array().unwrap().len(), 3);

    let all = list(&d).await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].id, id);
    let mut c = d.images().await.unwrap();
    let filtered = c
        .list_images(ListImagesRequest {
            filter: Some(ImageFilter { image: spec(&name) }),
        })
        .await
        .unwrap()
        .into_inner()
        .images;
    assert_eq!(filtered.len(), 1);
    let none = c
        .list_images(ListImagesRequest {
            filter: Some(ImageFilter {
                image: spec(&registry::image("nothing:here")),
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .images;
    assert!(none.is_empty());

    // ImageFsInfo sees the bytes.
    let fs = c.image_fs_info(ImageFsInfoRequest {}).await.unwrap().into_inner();
    let used = fs.image_filesystems[0].used_bytes.as_ref().unwrap().value;
    assert!(used > img.size / 2, "used {used} for an image of {}", img.size);
    assert!(fs.image_filesystems[0].inodes_used.as_ref().unwrap().value > 20);
    assert!(!fs.image_filesystems[0].fs_id.as_ref().unwrap().mountpoint.is_empty());

    assert_eq!(count_entries(&layers_dir(&d)), 3);
    remove(&d, &name).await;
    assert!(
        status(&d, &name, false).await.image.is_none(),
        "removed image has no status"
    );
    assert!(list(&d).await.is_empty());
    assert_eq!(count_entries(&layers_dir(&d)), 0, "layers freed");
    assert_eq!(count_entries(&blobs_dir(&d)), 0, "blobs freed");
    // Removing again is not an error.
    remove(&d, &name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_by_digest() {
    require_root!();
    registry::require().await;
    let d = Daemon::start().await.unwrap();
    let digest = registry::manifest_digest("busybox:latest").await.unwrap();
    let by_digest = format!("{}/berth/busybox@{digest}", registry::addr());
    let id = pull(&d, &by_digest).await.unwrap();
    let img = status(&d, &by_digest, false).await.image.unwrap();
    assert_eq!(img.id, id);
    assert!(
        img.repo_tags.is_empty(),
        "a digest pull adds no tag: {:?}",
        img.repo_tags
    );
    assert_eq!(img.repo_digests, vec![by_digest.clone()]);
    // Pulling the tag too adds the tag to the same image.
    assert_eq!(pull(&d, &registry::image("busybox:1.0")).await.unwrap(), id);
    let img = status(&d, &id, false).await.image.unwrap();
    assert_eq!(img.repo_tags, vec![registry::image("busybox:1.0")]);
    // A digest the registry does not have.
    let missing = format!("{}/berth/busybox@sha256:{}", registry::addr(), "0".repeat(64));
    assert_eq!(pull(&d, &missing).await.unwrap_err().code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn formats_gzip_zstd_plain_and_docker_share_layers() {
    require_root!();
    registry::require().await;
    // zstd first, in a fresh store, so its layers really are downloaded and unpacked.
    let d = Daemon::start().await.unwrap();
    let zstd = pull(&d, &registry::image("busybox-zstd:latest")).await.unwrap();
    let layers = diff_ids(&d, &zstd).await;
    let n = count_entries(&layers_dir(&d));
    assert_eq!(n, 3);
    for other in ["busybox:latest", "busybox-docker:latest", "plain:latest"] {
        pull(&d, &registry::image(other)).await.unwrap();
        assert_eq!(
            diff_ids(&d, &registry::image(other)).await,
            layers,
            "{other} has the same uncompressed layers"
        );
    }
    assert_eq!(count_entries(&layers_dir(&d)), n, "shared layers are stored once");
    // The same config in each format is the same image ID, listed once with every name.
    let all = list(&d).await;
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0].repo_tags.len(), 4);
    with_view(&d, &layers, |root| {
        assert_eq!(
            std::fs::read_to_string(root.join("etc/berth-release")).unwrap().trim(),
            "layer3"
        );
    });
    // Another image on top of the same layers: removing it keeps the layers the first one uses.
    let multi = pull(&d, &registry::image("multiarch:latest")).await.unwrap();
    assert_eq!(count_entries(&layers_dir(&d)), n + 1);
    remove(&d, &multi).await;
    assert_eq!(count_entries(&layers_dir(&d)), n);
    with_view(&d, &layers, |root| assert!(root.join("bin/sh").exists()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_and_docker_formats_unpack_from_scratch() {
    require_root!();
    registry::require().await;
    for image in ["plain:latest", "busybox-docker:latest"] {
        let d = Daemon::start().await.unwrap();
        let id = pull(&d, &registry::image(image)).await.unwrap();
        let layers = diff_ids(&d, &id).await;
        with_view(&d, &layers, |root| {
            assert!(root.join("bin/busybox").is_file(), "{image}");
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whiteouts_hardlinks_and_ownership_through_overlay() {
    require_root!();
    registry::require().await;
    let d = Daemon::start().await.unwrap();
    let id = pull(&d, &registry::image("busybox:latest")).await.unwrap();
    let layers = diff_ids(&d, &id).await;
    with_view(&d, &layers, |root| {
        use std::os::unix::fs::MetadataExt as _;
        assert!(!root.join("tmp/gone").exists(), "whiteout hides /tmp/gone");
        assert!(root.join("tmp").is_dir());
        assert!(
            !root.join("opq/a").exists() && !root.join("opq/b").exists(),
            "opaque dir hides lower entries"
        );
        assert!(root.join("opq/c").exists(), "opaque dir keeps its own entries");
        assert!(root.join("data/keep").exists());
        assert_eq!(
            std::fs::read_to_string(root.join("etc/berth-release")).unwrap().trim(),
            "layer3"
        );
        let bb = std::fs::metadata(root.join("bin/busybox")).unwrap();
        let ls = std::fs::metadata(root.join("bin/ls")).unwrap();
        assert_eq!(
            (bb.dev(), bb.ino()),
            (ls.dev(), ls.ino()),
            "applets are hardlinks of busybox"
        );
        assert!(bb.mode() & 0o111 != 0, "busybox keeps its exec bits");
        let tmp = std::fs::metadata(root.join("tmp")).unwrap();
        assert_eq!(tmp.mode() & 0o7777, 0o1777, "/tmp keeps its sticky mode");
        let home = std::fs::metadata(root.join("home/berth")).unwrap();
        assert_eq!((home.uid(), home.gid()), (1000, 1000), "ownership preserved");
    });
    // Only the first layer: the files the upper layers delete are there.
    with_view(&d, &layers[..2], |root| {
        assert!(root.join("tmp/gone").exists());
        assert!(root.join("opq/a").exists());
    });
    // A writable snapshot: writes land in its upper dir, the layers stay untouched.
    let overlay = Overlay::open(&d.image_root().join("overlay")).unwrap();
    let target = tempfile::tempdir_in(d.dir.path()).unwrap();
    overlay
        .prepare("rw-test", &layers)
        .unwrap()
        .mount(target.path())
        .unwrap();
    std::fs::write(target.path().join("etc/berth-release"), "changed").unwrap();
    std::fs::remove_file(target.path().join("data/keep")).unwrap();
    berth_image::sys::unmount(target.path()).unwrap();
    with_view(&d, &layers, |root| {
        assert_eq!(
            std::fs::read_to_string(root.join("etc/berth-release")).unwrap().trim(),
            "layer3"
        );
        assert!(root.join("data/keep").exists());
    });
    overlay.remove("rw-test").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_lists_pick_this_platform() {
    require_root!();
    registry::require().await;
    let d = Daemon::start().await.unwrap();
    for image in ["multiarch:latest", "multiarch-docker:latest"] {
        let name = registry::image(image);
        let id = pull(&d, &name).await.unwrap();
        let img = status(&d, &name, false).await.image.unwrap();
        let index_digest = registry::manifest_digest(image).await.unwrap();
        let repo = name.rsplit_once(':').unwrap().0;
        // The amd64 entries of both lists share one config, so they are one image with both names.
        let expected_digest = format!("{repo}@{index_digest}");
        assert!(
            img.repo_digests.contains(&expected_digest),
            "repo digest is the index digest: {:?}",
            img.repo_digests
        );
        assert!(img.repo_tags.contains(&name));
        let layers = diff_ids(&d, &id).await;
        let expected = berth_image::manifest::Platform::host().architecture;
        with_view(&d, &layers, |root| {
            assert_eq!(
                std::fs::read_to_string(root.join("platform")).unwrap().trim(),
                expected,
                "{image}"
            );
        });
    }
    let err = pull(&d, &registry::image("arm64only:latest")).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("platform"), "{}", err.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malicious_layers_are_refused() {
    require_root!();
    registry::require().await;
    let d = Daemon::start().await.unwrap();
    let _ = std::fs::remove_file("/tmp/escaped-symlink");
    let _ = std::fs::remove_file("/escaped-abs");
    for image in ["evil-dotdot", "evil-abs", "evil-symlink", "evil-hardlink"] {
        let err = pull(&d, &registry::image(&format!("{image}:latest")))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{image}: {err:?}");
        assert!(err.message().contains("refused"), "{image}: {}", err.message());
        assert!(list(&d).await.is_empty(), "{image} must not be recorded");
    }
    assert!(
        !Path::new("/tmp/escaped-symlink").exists(),
        "nothing written through the symlink"
    );
    assert!(!Path::new("/escaped-abs").exists());
    // Nothing of the evil layers is kept: no half layer, no file escaped next to the layer dirs.
    let overlay_root = d.image_root().join("overlay");
    assert_eq!(count_entries(&overlay_root.join("tmp")), 0);
    let mut seen = HashSet::new();
    for e in walk(&d.dir.path().to_path_buf()) {
        let name = e.file_name().unwrap().to_string_lossy().to_string();
        assert!(!name.starts_with("escaped"), "escaped file {}", e.display());
        seen.insert(name);
    }
    // The good base layer they share with busybox stays usable.
    pull(&d, &registry::image("busybox:latest")).await.unwrap();
}

fn walk(dir: &std::path::PathBuf) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            out.push(p.clone());
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                out.extend(walk(&p));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_blob_is_refused_and_not_stored() {
    require_root!();
    registry::require().await;
    let d = Daemon::start().await.unwrap();
    let err = pull(&d, &registry::image("corrupt:latest")).await.unwrap_err();
    assert_eq!(err.code(), Code::DataLoss, "{err:?}");
    assert!(err.message().contains("digest mismatch"), "{}", err.message());
    assert!(list(&d).await.is_empty());
    assert_eq!(
        count_entries(&d.image_root().join("content/ingest")),
        0,
        "no partial download kept"
    );
    assert_eq!(count_entries(&layers_dir(&d)), 0);
    // The manifest and config were fine and may be cached; the corrupt layer blob must not be.
    let images = std::fs::read_to_string(images_json()).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&images).unwrap();
    let corrupt = doc["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "berth/corrupt")
        .expect("corrupt image in images.json");
    let layer = corrupt["layers"][0]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    assert!(!blobs_dir(&d).join(&layer).exists(), "corrupt blob stored");
}

fn images_json() -> std::path::PathBuf {
    std::env::var_os("BERTH_TEST_IMAGES_JSON")
        .map(Into::into)
        .unwrap_or_else(|| "/var/lib/berth-test-registry/images.json".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_images_and_bad_references() {
    require_root!();
    registry::require().await;
    let d = Daemon::start().await.unwrap();
    for missing in [
        registry::image("does-not-exist:latest"),
        registry::image("busybox:no-such-tag"),
    ] {
        let err = pull(&d, &missing).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{missing}: {err:?}");
    }
    for bad in [
        "",
        "Busybox",
        "busybox:",
        "busy box",
        "busybox@sha256:1234",
        "127.0.0.1:99999/x",
    ] {
        let err = pull(&d, bad).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{bad:?}: {err:?}");
    }
    // Status of an unknown image is empty, not an error; of a malformed one, InvalidArgument.
    assert!(
        status(&d, &registry::image("does-not-exist:latest"), false)
            .await
            .image
            .is_none()
    );
    let mut c = d.images().await.unwrap();
    let err = c
        .image_status(ImageStatusRequest {
            image: spec("UPPER"),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = c.pull_image(PullImageRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_images() {
    require_root!();
    registry::require().await;
    let mut d = Daemon::start().await.unwrap();
    pull(&d, &registry::image("busybox:latest")).await.unwrap();
    pull(&d, &registry::image("nonroot:latest")).await.unwrap();
    pull(&d, &registry::image("nonroot-name:latest")).await.unwrap();
    let before = list(&d).await;
    d.restart().await.unwrap();
    let after = list(&d).await;
    assert_eq!(before, after, "the same images with the same fields after a restart");
    let nonroot = status(&d, &registry::image("nonroot:latest"), false)
        .await
        .image
        .unwrap();
    assert_eq!(nonroot.uid.map(|u| u.value), Some(1000));
    let named = status(&d, &registry::image("nonroot-name:latest"), false)
        .await
        .image
        .unwrap();
    assert_eq!((named.uid, named.username.as_str()), (None, "berth"));
    // The layers still mount after the restart.
    let layers = diff_ids(&d, &registry::image("busybox:latest")).await;
    with_view(&d, &layers, |root| assert!(root.join("bin/sh").exists()));
    remove(&d, &registry::image("busybox:latest")).await;
    d.restart().await.unwrap();
    assert_eq!(list(&d).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pulls_store_once() {
    require_root!();
    registry::require().await;
    let d = Daemon::start().await.unwrap();
    let name = registry::image("layers:latest");
    let pulls = (0..4).map(|_| pull(&d, &name));
    let ids = futures_util::future::join_all(pulls).await;
    let first = ids[0].as_ref().unwrap().clone();
    for id in &ids {
        assert_eq!(id.as_ref().unwrap(), &first);
    }
    let all = list(&d).await;
    assert_eq!(all.len(), 1);
    let layers = diff_ids(&d, &first).await;
    assert_eq!(count_entries(&layers_dir(&d)), layers.len(), "each layer unpacked once");
    // index/manifest + config + one blob per layer, nothing more
    assert_eq!(count_entries(&blobs_dir(&d)), layers.len() + 2);
    assert_eq!(count_entries(&d.image_root().join("content/ingest")), 0);
    assert_eq!(count_entries(&d.image_root().join("overlay/tmp")), 0);
}

const CGROUP_PARENT: &str = "/berth-test-images";

async fn image_fs_used(d: &Daemon) -> u64 {
    let mut c = d.images().await.unwrap();
    let fs = c.image_fs_info(ImageFsInfoRequest {}).await.unwrap().into_inner();
    fs.image_filesystems[0].used_bytes.unwrap().value
}

/// Image identity as Kubernetes 1.36 states it: PullImage's image_ref is Image.id, and a
/// container's image_id (ListContainers, ContainerStatus) is the same, whichever registry or tag it
/// came by; removing the image by one name removes it under all; simultaneous removals all succeed;
/// ImageFsInfo goes up on pull and down on removal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_identity_across_apis_names_and_registries() {
    use berth_proto::cri::*;
    require_root!();
    registry::require().await;
    let d = Daemon::start().await.unwrap();
    let empty = image_fs_used(&d).await;
    let by_ip = registry::image("busybox:latest");
    // The same registry under another name: a second registry, as far as references go.
    let by_name = by_ip.replacen("127.0.0.1", "localhost", 1);
    assert_ne!(by_ip, by_name, "the test registry is on 127.0.0.1: {by_ip}");
    let id = pull(&d, &by_ip).await.unwrap();
    assert_eq!(pull(&d, &by_name).await.unwrap(), id, "one image, whichever registry");
    let pulled = image_fs_used(&d).await;
    assert!(pulled > empty, "ImageFsInfo grows on pull: {empty} → {pulled}");
    let img = status(&d, &by_name, false).await.image.unwrap();
    assert_eq!(img.id, id);
    let mut tags = img.repo_tags.clone();
    tags.sort();
    let mut want = vec![by_ip.clone(), by_name.clone()];
    want.sort();
    assert_eq!(tags, want);
    assert_eq!(
        list(&d).await.iter().map(|i| i.id.clone()).collect::<Vec<_>>(),
        vec![id.clone()]
    );

    // A container of it, by the other name: its image ID is the pull's image_ref everywhere.
    let mut rt = d.runtime().await.unwrap();
    let logs = d.dir.path().join("logs");
    let pod = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(support::pod_config("ids", CGROUP_PARENT, &logs)),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    let c = rt
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(support::container("c", &by_name, "true")),
            sandbox_config: None,
        })
        .await
        .unwrap()
        .into_inner()
        .container_id;
    let st = rt
        .container_status(ContainerStatusRequest {
            container_id: c.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(
        (st.image_id.as_str(), st.image_ref.as_str()),
        (id.as_str(), id.as_str())
    );
    let listed = rt
        .list_containers(ListContainersRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert_eq!(listed[0].image_ref, id);
    assert_eq!(listed[0].image_id, id);
    rt.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: pod })
        .await
        .unwrap();
    support::remove_cgroup(CGROUP_PARENT);

    // Removed by one name: gone under both, and its bytes with it.
    remove(&d, &by_name).await;
    for name in [&by_ip, &by_name, &id] {
        assert!(status(&d, name, false).await.image.is_none(), "{name} gone");
    }
    assert!(list(&d).await.is_empty());
    let removed = image_fs_used(&d).await;
    assert!(removed < pulled, "ImageFsInfo shrinks on removal: {pulled} → {removed}");

    // Simultaneous removals of one image: all succeed, and it is gone when they return.
    pull(&d, &by_ip).await.unwrap();
    let removals = (0..4).map(|_| async {
        let mut c = d.images().await.unwrap();
        c.remove_image(RemoveImageRequest { image: spec(&by_ip) }).await
    });
    for r in futures_util::future::join_all(removals).await {
        r.unwrap();
    }
    assert!(status(&d, &by_ip, false).await.image.is_none());
    assert!(list(&d).await.is_empty());
}
