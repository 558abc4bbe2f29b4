//! berthd's configuration. `Config::default()` is the documented default; a TOML file
//! (`/etc/berth/config.toml`), then drop-ins (`/etc/berth/config.d/*.toml`, in name order), then
//! command-line flags and `BERTH_*` variables are layered on top, and `validate` checks the result.

use std::path::{Path, PathBuf};

pub use crate::cgroup::CgroupDriver;
use serde::{Deserialize, Serialize};

pub const DEFAULT_CONFIG_PATH: &str = "/etc/berth/config.toml";

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Persistent data: images, layers, metadata.
    pub root: PathBuf,
    /// Runtime state that does not survive a reboot: sockets, mounts.
    pub state: PathBuf,
    /// The CRI socket.
    pub socket: PathBuf,
    /// `error`, `warn`, `info`, `debug`, `trace`, or a tracing filter such as `berth=debug`.
    pub log_level: String,
    /// `cgroupfs` (container cgroups are directories below the pod's `cgroup_parent`) or `systemd`
    /// (runc's systemd driver: each container a `berth-<id>.scope` in the pod's slice; needs systemd
    /// as PID 1). Reported to kubelet in RuntimeConfig; must match kubelet's `cgroupDriver`.
    pub cgroup_driver: CgroupDriver,
    pub registry: RegistryConfig,
    pub pod: PodConfig,
    pub runtime: RuntimeConfig,
    /// Pod networking: CNI plugin chains or the built-in bridge.
    pub network: berth_cni::NetworkConfig,
    pub stream: StreamConfig,
}

/// The streaming server that Exec, Attach and PortForward hand out URLs on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamConfig {
    /// The IP address it listens on.
    pub address: String,
    /// Its TCP port; 0 picks a free one at start.
    pub port: u16,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            address: "127.0.0.1".into(),
            port: 0,
        }
    }
}

/// How containers run: runtime handlers, each a shim v2 binary driving an OCI runtime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// The handler for pods that name none (`runtime_handler` empty).
    pub default_handler: String,
    /// Handlers by name (kubelet's RuntimeClass `handler`). Setting any replaces the built-in list.
    pub handlers: std::collections::BTreeMap<String, Handler>,
    /// The seccomp profile of a container whose request sets none (neither `seccomp` nor
    /// `seccomp_profile_path`): `unconfined` (the default: the CRI says an unset profile is
    /// unconfined), `runtime/default` (berth's built-in profile), or `localhost/<absolute path>`.
    /// kubelet always names one.
    pub unset_seccomp_profile: String,
    /// Where CDI device specs are read from (`*.json`, `*.yaml`), in order: for a device named in
    /// two, the later directory wins, as the CDI library's default (`/etc/cdi`, `/var/run/cdi`).
    pub cdi_spec_dirs: Vec<PathBuf>,
}

/// One runtime handler.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Handler {
    /// The shim v2 binary: a name looked up beside berthd and on PATH, or an absolute path.
    pub shim: String,
    /// The OCI runtime binary the shim drives (runc, crun).
    pub runtime: String,
    /// Who writes the CRI log: `shim` (berth-shim writes it itself, so logs flow while berthd is
    /// down) or `berthd` (containerd shims: berthd copies the shim's FIFOs, as containerd does).
    pub log_writer: LogWriter,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogWriter {
    Shim,
    Berthd,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        let h = |shim: &str, runtime: &str, log_writer| Handler {
            shim: shim.into(),
            runtime: runtime.into(),
            log_writer,
        };
        RuntimeConfig {
            default_handler: "runc".into(),
            handlers: [
                ("runc".to_string(), h("berth-shim", "runc", LogWriter::Shim)),
                ("crun".to_string(), h("berth-shim", "crun", LogWriter::Shim)),
                (
                    "runc-containerd".to_string(),
                    h("containerd-shim-runc-v2", "runc", LogWriter::Berthd),
                ),
            ]
            .into_iter()
            .collect(),
            unset_seccomp_profile: "unconfined".into(),
            cdi_spec_dirs: vec!["/etc/cdi".into(), "/var/run/cdi".into()],
        }
    }
}

/// Pod sandboxes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PodConfig {
    /// Size in bytes of each pod's /dev/shm (a tmpfs shared by its containers).
    pub shm_size: u64,
}

impl Default for PodConfig {
    fn default() -> Self {
        PodConfig { shm_size: 64 << 20 }
    }
}

/// Image registries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryConfig {
    /// Directory of containerd-style `<host>/hosts.toml` files (mirrors, TLS, headers). A missing
    /// directory means no mirrors: each registry is reached directly.
    pub config_path: PathBuf,
    /// Layers downloaded at once for one pull.
    pub max_concurrent_downloads: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            root: "/var/lib/berth".into(),
            state: "/run/berth".into(),
            socket: "/run/berth/berth.sock".into(),
            log_level: "info".into(),
            cgroup_driver: CgroupDriver::Cgroupfs,
            registry: RegistryConfig::default(),
            pod: PodConfig::default(),
            runtime: RuntimeConfig::default(),
            network: berth_cni::NetworkConfig::default(),
            stream: StreamConfig::default(),
        }
    }
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            config_path: "/etc/berth/certs.d".into(),
            max_concurrent_downloads: 3,
        }
    }
}

/// A configuration problem, naming the file or field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("parse {path}: {detail}")]
    Parse { path: PathBuf, detail: String },
    #[error("invalid config: {0}")]
    Invalid(String),
}

impl Config {
    /// Loads `path` and its drop-in directory (`<stem>.d/` beside it, e.g. `/etc/berth/config.d`).
    /// A missing file is not an error when `required` is false: the defaults apply.
    pub fn load(path: &Path, required: bool) -> Result<Config, ConfigError> {
        let mut merged = toml::Table::new();
        match std::fs::read_to_string(path) {
            Ok(text) => merge(&mut merged, parse_table(path, &text)?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {}
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                });
            }
        }
        let dropin = path.with_extension("d");
        if let Ok(rd) = std::fs::read_dir(&dropin) {
            let mut files: Vec<PathBuf> = rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect();
            files.sort();
            for f in files {
                let text = std::fs::read_to_string(&f).map_err(|source| ConfigError::Read {
                    path: f.clone(),
                    source,
                })?;
                merge(&mut merged, parse_table(&f, &text)?);
            }
        }
        Config::deserialize(toml::Value::Table(merged)).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })
    }

    /// Parses one TOML document on top of the defaults.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<string>"),
            detail: e.to_string(),
        })
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        for (name, p) in [("root", &self.root), ("state", &self.state), ("socket", &self.socket)] {
            if !p.is_absolute() {
                return Err(ConfigError::Invalid(format!(
                    "{name} must be an absolute path, got {}",
                    p.display()
                )));
            }
        }
        if self.registry.max_concurrent_downloads == 0 {
            return Err(ConfigError::Invalid(
                "registry.max_concurrent_downloads must be at least 1".into(),
            ));
        }
        if !self.runtime.handlers.contains_key(&self.runtime.default_handler) {
            return Err(ConfigError::Invalid(format!(
                "runtime.default_handler {:?} is not in runtime.handlers",
                self.runtime.default_handler
            )));
        }
        if let Err(e) = crate::oci::seccomp::Profile::parse_legacy(&self.runtime.unset_seccomp_profile) {
            return Err(ConfigError::Invalid(format!("runtime.unset_seccomp_profile: {e}")));
        }
        if self.pod.shm_size < 4096 {
            return Err(ConfigError::Invalid("pod.shm_size must be at least 4096 bytes".into()));
        }
        self.network.bridge.validate().map_err(ConfigError::Invalid)?;
        if self.stream.address.parse::<std::net::IpAddr>().is_err() {
            return Err(ConfigError::Invalid(format!(
                "stream.address {:?} is not an IP address",
                self.stream.address
            )));
        }
        if self.log_level.trim().is_empty() {
            return Err(ConfigError::Invalid("log_level must not be empty".into()));
        }
        Ok(())
    }

    /// The default configuration as a commented TOML file, for `berthd config`.
    pub fn commented_default() -> String {
        // The template's `@name@` is a value as TOML writes it bare, `@name?@` quoted.
        let d = Config::default();
        let quoted = |v: &str| format!("{v:?}");
        let cbd = d
            .network
            .cni_bin_dirs
            .iter()
            .map(|p| quoted(&p.display().to_string()))
            .collect::<Vec<_>>()
            .join(", ");
        let values: [(&str, String); 15] = [
            ("@root?@", quoted(&d.root.display().to_string())),
            ("@state?@", quoted(&d.state.display().to_string())),
            ("@socket?@", quoted(&d.socket.display().to_string())),
            ("@log?@", quoted(&d.log_level)),
            ("@cp?@", quoted(&d.registry.config_path.display().to_string())),
            ("@mcd@", d.registry.max_concurrent_downloads.to_string()),
            ("@shm@", d.pod.shm_size.to_string()),
            ("@ccd?@", quoted(&d.network.cni_conf_dir.display().to_string())),
            ("@cbd@", cbd),
            ("@bn?@", quoted(&d.network.bridge.name)),
            ("@bs@", d.network.bridge.subnet.to_string()),
            ("@mtu@", d.network.bridge.mtu.to_string()),
            ("@masq@", d.network.bridge.masquerade.to_string()),
            ("@saddr?@", quoted(&d.stream.address)),
            ("@sport@", d.stream.port.to_string()),
        ];
        values
            .iter()
            .fold(DEFAULT_TEMPLATE.to_string(), |text, (k, v)| text.replace(k, v))
    }
}

/// `berthd config`'s text: every setting with its default (filled in) and what it means.
const DEFAULT_TEMPLATE: &str = include_str!("config.default.toml");

fn parse_table(path: &Path, text: &str) -> Result<toml::Table, ConfigError> {
    text.parse::<toml::Table>().map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })
}

/// Merges `over` into `base`: tables recursively, everything else replaced.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commented_default_is_the_default() {
        assert_eq!(
            Config::from_toml(&Config::commented_default()).unwrap(),
            Config::default()
        );
        Config::default().validate().unwrap();
    }

    #[test]
    fn empty_file_is_default_and_unknown_keys_are_refused() {
        assert_eq!(Config::from_toml("").unwrap(), Config::default());
        assert!(Config::from_toml("roots = \"/x\"").is_err());
        assert!(Config::from_toml("[registry]\nmirrors = 1").is_err());
        assert!(Config::from_toml("cgroup_driver = \"cgroups\"").is_err());
    }

    #[test]
    fn dropins_layer_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("config.toml");
        std::fs::write(&main, "root = \"/a\"\n[registry]\nmax_concurrent_downloads = 5\n").unwrap();
        std::fs::create_dir(dir.path().join("config.d")).unwrap();
        std::fs::write(dir.path().join("config.d/10-x.toml"), "root = \"/b\"\n").unwrap();
        std::fs::write(
            dir.path().join("config.d/20-y.toml"),
            "[registry]\nconfig_path = \"/c\"\n",
        )
        .unwrap();
        let c = Config::load(&main, true).unwrap();
        assert_eq!(c.root, PathBuf::from("/b"));
        assert_eq!(c.registry.config_path, PathBuf::from("/c"));
        assert_eq!(
            c.registry.max_concurrent_downloads, 5,
            "drop-ins merge tables, not replace them"
        );
        assert!(Config::load(&dir.path().join("missing.toml"), true).is_err());
        assert_eq!(
            Config::load(&dir.path().join("missing.toml"), false).unwrap(),
            Config::default()
        );
    }

    #[test]
    fn validation() {
        let c = Config {
            root: "relative".into(),
            ..Config::default()
        };
        assert!(c.validate().is_err());
        let mut c = Config::default();
        c.registry.max_concurrent_downloads = 0;
        assert!(c.validate().is_err());
        let mut c = Config::default();
        c.stream.address = "localhost".into();
        assert!(c.validate().is_err(), "the stream address must be an IP");
        let c = Config::from_toml("[stream]\naddress = \"::1\"\nport = 10010\n").unwrap();
        assert_eq!((c.stream.address.as_str(), c.stream.port), ("::1", 10010));
        c.validate().unwrap();
    }
}
