//! Registry access: bearer-token and basic auth flows, and hosts.toml mirrors, against the real
//! test registry (behind an auth-demanding front for the auth cases).

use std::sync::atomic::Ordering;

use berth_proto::cri::{AuthConfig, ImageSpec, ImageStatusRequest, PullImageRequest};
use berth_proto::tonic::Code;
use berth_test::authproxy::{AuthProxy, Mode};
use berth_test::{Daemon, registry, require_root};

async fn pull(d: &Daemon, image: &str, auth: Option<AuthConfig>) -> Result<String, berth_proto::tonic::Status> {
    let mut c = d.images().await.unwrap();
    c.pull_image(PullImageRequest {
        image: Some(ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        auth,
        sandbox_config: None,
    })
    .await
    .map(|r| r.into_inner().image_ref)
}

fn creds(user: &str, pass: &str) -> Option<AuthConfig> {
    Some(AuthConfig {
        username: user.into(),
        password: pass.into(),
        ..Default::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_bearer_token_flow() {
    require_root!();
    registry::require().await;
    let proxy = AuthProxy::start(Mode::Bearer { creds: None }, registry::addr())
        .await
        .unwrap();
    let d = Daemon::start().await.unwrap();
    let image = format!("{}/berth/busybox:latest", proxy.host());
    pull(&d, &image, None).await.unwrap();
    assert!(proxy.token_requests.load(Ordering::SeqCst) >= 1, "a token was fetched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_with_credentials() {
    require_root!();
    registry::require().await;
    let proxy = AuthProxy::start(
        Mode::Bearer {
            creds: Some(("alice".into(), "s3cret".into())),
        },
        registry::addr(),
    )
    .await
    .unwrap();
    let d = Daemon::start().await.unwrap();
    let image = format!("{}/berth/busybox:latest", proxy.host());
    let err = pull(&d, &image, None).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    let err = pull(&d, &image, creds("alice", "wrong")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    pull(&d, &image, creds("alice", "s3cret")).await.unwrap();
    // The Docker `auth` form: base64("alice:s3cret").
    let d2 = Daemon::start().await.unwrap();
    pull(
        &d2,
        &image,
        Some(AuthConfig {
            auth: "YWxpY2U6czNjcmV0".into(),
            ..Default::default()
        }),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth() {
    require_root!();
    registry::require().await;
    let proxy = AuthProxy::start(
        Mode::Basic {
            user: "bob".into(),
            pass: "pw".into(),
        },
        registry::addr(),
    )
    .await
    .unwrap();
    let d = Daemon::start().await.unwrap();
    let image = format!("{}/berth/busybox:latest", proxy.host());
    let err = pull(&d, &image, None).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains("basic"), "{}", err.message());
    pull(&d, &image, creds("bob", "pw")).await.unwrap();
    assert_eq!(proxy.token_requests.load(Ordering::SeqCst), 0);
}

/// Writes `<certs.d>/<host>/hosts.toml`.
fn hosts_toml(d: &Daemon, host: &str, text: &str) {
    let dir = d.config.registry.config_path.join(host);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("hosts.toml"), text).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrors_are_tried_in_order_then_upstream() {
    require_root!();
    registry::require().await;
    let d = Daemon::start().await.unwrap();
    // A registry name that exists nowhere: only the hosts.toml makes it reachable. Port 1 on loopback
    // refuses connections: a dead mirror, then a live one.
    hosts_toml(
        &d,
        "mirrored.berth.test",
        &format!(
            r#"server = "http://127.0.0.1:1"
[host."http://127.0.0.1:1/dead"]
  capabilities = ["pull", "resolve"]
[host."http://{}"]
  capabilities = ["pull", "resolve"]
  [host."http://{}".header]
    x-berth-test = "1"
"#,
            registry::addr(),
            registry::addr()
        ),
    );
    let image = "mirrored.berth.test/berth/busybox:latest";
    let id = pull(&d, image, None).await.unwrap();
    let mut c = d.images().await.unwrap();
    let img = c
        .image_status(ImageStatusRequest {
            image: Some(ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .image
        .unwrap();
    assert_eq!(img.id, id);
    assert_eq!(
        img.repo_tags,
        vec![image.to_string()],
        "names keep the registry asked for, not the mirror"
    );

    // A mirror that may only pull (not resolve tags) serves digests but not tags.
    hosts_toml(
        &d,
        "pullonly.berth.test",
        &format!(
            r#"server = "http://127.0.0.1:1"
[host."http://{}"]
  capabilities = ["pull"]
"#,
            registry::addr()
        ),
    );
    let err = pull(&d, "pullonly.berth.test/berth/busybox:latest", None)
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::Unavailable,
        "only the dead upstream may resolve the tag: {err:?}"
    );
    let digest = registry::manifest_digest("busybox:latest").await.unwrap();
    assert_eq!(
        pull(&d, &format!("pullonly.berth.test/berth/busybox@{digest}"), None)
            .await
            .unwrap(),
        id
    );

    // A malformed hosts.toml is a clear error, not a silent fallback.
    hosts_toml(&d, "broken.berth.test", "server = [");
    let err = pull(&d, "broken.berth.test/berth/busybox:latest", None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("hosts.toml"), "{}", err.message());
}
