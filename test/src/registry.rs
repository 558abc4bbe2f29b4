//! The local test registry (`hack/registry.sh`, images from `hack/test-images.py`).

use anyhow::{Context as _, bail};

/// `host:port` of the test registry.
pub fn addr() -> String {
    std::env::var("BERTH_TEST_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5000".into())
}

/// A reference to a test image: `image("busybox:latest")` → `127.0.0.1:5000/berth/busybox:latest`.
pub fn image(name: &str) -> String {
    format!("{}/berth/{name}", addr())
}

/// Fails loudly when the registry is not there, naming the scripts that set it up.
pub async fn require() {
    let url = format!("http://{}/v2/", addr());
    let ok = reqwest::get(&url)
        .await
        .map(|r| r.status().is_success())
        .unwrap_or(false);
    if !ok {
        panic!(
            "test registry not answering at {url}: run `hack/registry.sh start && hack/test-images.py` (hack/test.sh does both)"
        );
    }
}

/// The digest the registry gives for `berth/<name>:<tag>` (the index digest for multi-platform images).
pub async fn manifest_digest(name_tag: &str) -> anyhow::Result<String> {
    let (name, tag) = name_tag.split_once(':').unwrap_or((name_tag, "latest"));
    let url = format!("http://{}/v2/berth/{name}/manifests/{tag}", addr());
    let resp = reqwest::Client::new()
        .head(&url)
        .header(
            "Accept",
            "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, \
             application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json",
        )
        .send()
        .await
        .with_context(|| format!("HEAD {url}"))?;
    if !resp.status().is_success() {
        bail!("HEAD {url}: {}", resp.status());
    }
    Ok(resp
        .headers()
        .get("Docker-Content-Digest")
        .context("no Docker-Content-Digest")?
        .to_str()?
        .to_string())
}
