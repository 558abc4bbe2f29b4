//! Registry host configuration in containerd's `hosts.toml` format, so an operator's existing
//! `certs.d` directory works unchanged.
//!
//! For a registry host `H`, `<config_path>/H/hosts.toml` (or `<config_path>/_default/hosts.toml`) may say:
//!
//! ```toml
//! server = "https://registry-1.docker.io"      # the upstream; defaults to https://H
//! [host."https://mirror.example.com"]          # mirrors, tried in file order before the upstream
//!   capabilities = ["pull", "resolve"]         # resolve = may answer tag lookups
//!   skip_verify = false
//!   ca = "/etc/berth/certs.d/mirror-ca.pem"    # or a list of paths
//!   override_path = false                      # true: the URL already holds the API path
//!   [host."https://mirror.example.com".header]
//!     x-custom = "value"                       # or a list of values
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

/// One place to fetch from: a mirror or the upstream registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Base URL of the v2 API, without trailing slash: `https://registry-1.docker.io/v2`.
    pub api: String,
    /// `host[:port]` of the URL, used as the key for cached credentials.
    pub host: String,
    pub pull: bool,
    pub resolve: bool,
    pub skip_verify: bool,
    pub ca: Vec<PathBuf>,
    pub headers: Vec<(String, String)>,
    /// True for a mirror: requests carry `?ns=<registry>` as containerd sends them.
    pub is_mirror: bool,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct HostsFile {
    server: Option<String>,
    capabilities: Option<Vec<String>>,
    skip_verify: Option<bool>,
    ca: Option<OneOrMany>,
    client: Option<toml::Value>,
    header: Option<BTreeMap<String, OneOrMany>>,
    override_path: Option<bool>,
    #[serde(default)]
    host: toml::Table,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct HostSection {
    capabilities: Option<Vec<String>>,
    skip_verify: Option<bool>,
    ca: Option<OneOrMany>,
    client: Option<toml::Value>,
    header: Option<BTreeMap<String, OneOrMany>>,
    override_path: Option<bool>,
}

impl HostSection {
    /// Client certificates (`client = …`) are accepted in the file but not used yet.
    fn warn_unsupported(&self, path: Option<&Path>) {
        if self.client.is_some() {
            tracing::warn!(path = ?path, "hosts.toml: client certificates are not supported yet; ignored");
        }
    }
}

#[derive(Debug, Deserialize, Clone)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// The default upstream for a registry host when no hosts.toml names one.
pub fn default_server(registry: &str) -> String {
    if registry == "docker.io" {
        return "https://registry-1.docker.io".to_string();
    }
    if is_loopback(registry) {
        return format!("http://{registry}");
    }
    format!("https://{registry}")
}

/// Loopback registries are spoken to over plain HTTP, as containerd and Docker do.
pub fn is_loopback(registry: &str) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        registry.split(':').next().unwrap_or("")
    };
    host == "localhost" || host.starts_with("127.") || host == "::1"
}

/// Endpoints to try for `registry`, mirrors first, then the upstream.
pub fn endpoints(config_path: Option<&Path>, registry: &str) -> Result<Vec<Endpoint>> {
    let file = match config_path {
        Some(dir) => load_hosts_file(dir, registry)?,
        None => None,
    };
    let Some((path, file)) = file else {
        return Ok(vec![endpoint(
            &default_server(registry),
            registry,
            false,
            None,
            &HostSection::default(),
        )?]);
    };
    let mut out = Vec::new();
    for (url, section) in &file.host {
        let section: HostSection = section.clone().try_into().map_err(|e| Error::Config {
            path: path.clone(),
            detail: format!("host {url:?}: {e}"),
        })?;
        out.push(
            endpoint(url, registry, true, Some(&path), &section).map_err(|e| Error::Config {
                path: path.clone(),
                detail: e.to_string(),
            })?,
        );
    }
    let server = file.server.clone().unwrap_or_else(|| default_server(registry));
    let top = HostSection {
        capabilities: file.capabilities.clone(),
        skip_verify: file.skip_verify,
        ca: file.ca.clone(),
        client: file.client.clone(),
        header: file.header.clone(),
        override_path: file.override_path,
    };
    out.push(
        endpoint(&server, registry, false, Some(&path), &top).map_err(|e| Error::Config {
            path: path.clone(),
            detail: e.to_string(),
        })?,
    );
    Ok(out)
}

fn load_hosts_file(dir: &Path, registry: &str) -> Result<Option<(PathBuf, HostsFile)>> {
    // containerd names directories host:port; Docker's certs.d uses the same form.
    for name in [registry.to_string(), "_default".to_string()] {
        let path = dir.join(&name).join("hosts.toml");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io("read", &path)(e)),
        };
        let file: HostsFile = toml::from_str(&text).map_err(|e| Error::Config {
            path: path.clone(),
            detail: e.to_string(),
        })?;
        return Ok(Some((path, file)));
    }
    Ok(None)
}

fn endpoint(url: &str, registry: &str, is_mirror: bool, file: Option<&Path>, s: &HostSection) -> Result<Endpoint> {
    s.warn_unsupported(file);
    let bad = |detail: String| Error::Config {
        path: file.map(Path::to_path_buf).unwrap_or_default(),
        detail,
    };
    let url = if url.contains("://") {
        url.to_string()
    } else {
        format!("https://{url}")
    };
    let (scheme, rest) = url.split_once("://").ok_or_else(|| bad(format!("bad URL {url:?}")))?;
    if scheme != "http" && scheme != "https" {
        return Err(bad(format!("unsupported scheme in {url:?}")));
    }
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    if host.is_empty() {
        return Err(bad(format!("no host in {url:?}")));
    }
    let api = if s.override_path.unwrap_or(false) || path.ends_with("/v2") {
        format!("{scheme}://{host}{path}")
    } else {
        format!("{scheme}://{host}{path}/v2")
    };
    let caps = s
        .capabilities
        .clone()
        .unwrap_or_else(|| vec!["pull".into(), "resolve".into()]);
    for c in &caps {
        if !matches!(c.as_str(), "pull" | "resolve" | "push") {
            return Err(bad(format!("unknown capability {c:?}")));
        }
    }
    let base = file.and_then(Path::parent);
    let ca =
        s.ca.clone()
            .map(OneOrMany::into_vec)
            .unwrap_or_default()
            .into_iter()
            .map(|p| {
                let p = PathBuf::from(p);
                match base {
                    Some(b) if p.is_relative() => b.join(p),
                    _ => p,
                }
            })
            .collect();
    let mut headers = Vec::new();
    for (k, v) in s.header.clone().unwrap_or_default() {
        for v in v.into_vec() {
            headers.push((k.clone(), v));
        }
    }
    let _ = registry;
    Ok(Endpoint {
        api,
        host: host.to_string(),
        pull: caps.iter().any(|c| c == "pull"),
        resolve: caps.iter().any(|c| c == "resolve"),
        skip_verify: s.skip_verify.unwrap_or(false),
        ca,
        headers,
        is_mirror,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let e = endpoints(None, "docker.io").unwrap();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].api, "https://registry-1.docker.io/v2");
        let e = endpoints(None, "127.0.0.1:5000").unwrap();
        assert_eq!(e[0].api, "http://127.0.0.1:5000/v2");
        assert_eq!(
            endpoints(None, "localhost:5000").unwrap()[0].api,
            "http://localhost:5000/v2"
        );
        assert_eq!(endpoints(None, "quay.io").unwrap()[0].api, "https://quay.io/v2");
    }

    #[test]
    fn hosts_toml_mirrors_in_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("docker.io")).unwrap();
        std::fs::write(
            dir.path().join("docker.io/hosts.toml"),
            r#"
server = "https://registry-1.docker.io"
[host."http://127.0.0.1:5000"]
  capabilities = ["pull", "resolve"]
  [host."http://127.0.0.1:5000".header]
    x-a = "1"
    x-b = ["2", "3"]
[host."https://mirror.example.com/custom/v2"]
  capabilities = ["pull"]
  skip_verify = true
  ca = "ca.pem"
  override_path = true
"#,
        )
        .unwrap();
        let e = endpoints(Some(dir.path()), "docker.io").unwrap();
        assert_eq!(e.len(), 3);
        assert_eq!(e[0].api, "http://127.0.0.1:5000/v2");
        assert!(e[0].is_mirror && e[0].resolve);
        assert_eq!(e[0].headers.len(), 3);
        assert_eq!(e[1].api, "https://mirror.example.com/custom/v2");
        assert!(e[1].pull && !e[1].resolve && e[1].skip_verify);
        assert_eq!(e[1].ca, vec![dir.path().join("docker.io/ca.pem")]);
        assert_eq!(e[2].api, "https://registry-1.docker.io/v2");
        assert!(!e[2].is_mirror);
        // Another registry has no file: the default upstream.
        assert_eq!(
            endpoints(Some(dir.path()), "quay.io").unwrap()[0].api,
            "https://quay.io/v2"
        );
    }

    #[test]
    fn malformed_hosts_toml_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("_default")).unwrap();
        std::fs::write(dir.path().join("_default/hosts.toml"), "server = [").unwrap();
        assert!(matches!(endpoints(Some(dir.path()), "x.io"), Err(Error::Config { .. })));
        std::fs::write(
            dir.path().join("_default/hosts.toml"),
            "[host.\"https://m\"]\ncapabilities = [\"fly\"]\n",
        )
        .unwrap();
        assert!(matches!(endpoints(Some(dir.path()), "x.io"), Err(Error::Config { .. })));
    }
}
