//! The local test registry (`hack/registry.sh`, images from `hack/test-images.py`).

use anyhow::{Context as _, bail};

/// `host:port` of the test registry: `BERTH_TEST_REGISTRY`, else the address `hack/registry.sh`
/// recorded when it started the registry (on a port of its own).
pub fn addr() -> String {
    if let Ok(a) = std::env::var("BERTH_TEST_REGISTRY") {
        return a;
    }
    let dir = std::env::var("BERTH_REGISTRY_DIR").unwrap_or_else(|_| "/var/lib/berth-test-registry".into());
    std::fs::read_to_string(format!("{dir}/address"))
        .map(|a| a.trim().to_string())
        .unwrap_or_else(|_| {
            panic!("no test registry address in {dir}/address: run `hack/registry.sh start` (hack/test.sh does)")
        })
}

/// A reference to a test image: `image("busybox:latest")` → `<registry>/berth/busybox:latest`.
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
