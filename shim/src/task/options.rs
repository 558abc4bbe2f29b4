//! Runtime options: which OCI runtime binary to run and where its state lives.
//!
//! From `CreateTaskRequest.options` when it carries `containerd.runc.v1.Options` (`binary_name`,
//! `root`, `systemd_cgroup`, `no_pivot_root`, `no_new_keyring`); whatever it leaves empty comes from
//! the environment the shim was started with (`BERTH_RUNTIME_BINARY`, `BERTH_RUNTIME_ROOT`), then from
//! the defaults `runc` and `/run/berth/runc`. As in containerd, runc's `--root` is
//! `<root>/<namespace>`.
//!
//! The options are saved as `options.json` in the bundle (containerd's JSON field names), so the
//! `delete` action can find the container's runc state after the shim is gone.

use std::path::{Path, PathBuf};

use berth_proto::shim::protobuf::Message;
use berth_proto::shim::protobuf::well_known_types::any::Any;
use berth_proto::shim::shim::oci::Options;
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::runc;

pub const OPTIONS_TYPE: &str = "containerd.runc.v1.Options";
pub const DEFAULT_BINARY: &str = "runc";
pub const DEFAULT_ROOT: &str = "/run/berth/runc";
pub const ENV_BINARY: &str = "BERTH_RUNTIME_BINARY";
pub const ENV_ROOT: &str = "BERTH_RUNTIME_ROOT";
const FILE: &str = "options.json";

/// Fallbacks for options a task does not set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Defaults {
    pub binary: String,
    pub root: String,
}

impl Defaults {
    pub fn from_env() -> Defaults {
        let var = |name, default: &str| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.is_empty())
                .unwrap_or(default.into())
        };
        Defaults {
            binary: var(ENV_BINARY, DEFAULT_BINARY),
            root: var(ENV_ROOT, DEFAULT_ROOT),
        }
    }
}

/// Decodes the task's options (`None` or an empty `Any` mean none).
pub fn decode(any: Option<&Any>) -> Result<Options> {
    let Some(any) = any.filter(|a| !a.type_url.is_empty() || !a.value.is_empty()) else {
        return Ok(Options::default());
    };
    let name = any.type_url.rsplit('/').next().unwrap_or_default();
    if name != OPTIONS_TYPE {
        return Err(Error::InvalidArgument(format!(
            "unsupported runtime options type {:?} (expected {OPTIONS_TYPE})",
            any.type_url
        )));
    }
    Options::parse_from_bytes(&any.value).map_err(|e| Error::InvalidArgument(format!("decoding {OPTIONS_TYPE}: {e}")))
}

/// The runc configuration for `options` in `namespace`.
pub fn resolve(options: &Options, defaults: &Defaults, namespace: &str) -> runc::Config {
    let pick = |v: &str, d: &str| if v.is_empty() { d.to_string() } else { v.to_string() };
    runc::Config {
        binary: pick(&options.binary_name, &defaults.binary).into(),
        root: Path::new(&pick(&options.root, &defaults.root)).join(namespace),
        systemd_cgroup: options.systemd_cgroup,
        no_pivot_root: options.no_pivot_root,
        no_new_keyring: options.no_new_keyring,
    }
}

/// Saves the options into the bundle. `rootfs_mounted` records that the shim mounted `rootfs/` (and
/// so must unmount it).
pub fn save(bundle: &Path, options: &Options, rootfs_mounted: bool) -> Result<()> {
    let mut v = json!({});
    let m = v.as_object_mut().expect("an object");
    for (key, value, set) in [
        (
            "binary_name",
            json!(options.binary_name),
            !options.binary_name.is_empty(),
        ),
        ("root", json!(options.root), !options.root.is_empty()),
        ("systemd_cgroup", json!(true), options.systemd_cgroup),
        ("no_pivot_root", json!(true), options.no_pivot_root),
        ("no_new_keyring", json!(true), options.no_new_keyring),
        ("berth_rootfs_mounted", json!(true), rootfs_mounted),
    ] {
        if set {
            m.insert(key.into(), value);
        }
    }
    let path = bundle.join(FILE);
    std::fs::write(&path, v.to_string()).map_err(|source| Error::Io {
        context: "writing",
        path,
        source,
    })
}

/// Reads what [`save`] wrote; a missing file means no options.
pub fn load(bundle: &Path) -> Result<(Options, bool)> {
    let path: PathBuf = bundle.join(FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Options::default(), false)),
        Err(source) => {
            return Err(Error::Io {
                context: "reading",
                path,
                source,
            });
        }
    };
    let v: Value =
        serde_json::from_str(&text).map_err(|e| Error::InvalidArgument(format!("{}: {e}", path.display())))?;
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    let b = |k: &str| v.get(k).and_then(Value::as_bool).unwrap_or(false);
    let options = Options {
        binary_name: s("binary_name"),
        root: s("root"),
        systemd_cgroup: b("systemd_cgroup"),
        no_pivot_root: b("no_pivot_root"),
        no_new_keyring: b("no_new_keyring"),
        ..Default::default()
    };
    Ok((options, b("berth_rootfs_mounted")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Defaults {
        Defaults {
            binary: "runc".into(),
            root: "/run/berth/runc".into(),
        }
    }

    fn any(type_url: &str, o: &Options) -> Any {
        Any {
            type_url: type_url.into(),
            value: o.write_to_bytes().unwrap(),
            ..Default::default()
        }
    }

    #[test]
    fn absent_options_use_defaults() {
        let o = decode(None).unwrap();
        let c = resolve(&o, &defaults(), "k8s.io");
        assert_eq!(c.binary, PathBuf::from("runc"));
        assert_eq!(c.root, PathBuf::from("/run/berth/runc/k8s.io"));
        assert!(!c.systemd_cgroup);
        assert_eq!(decode(Some(&Any::default())).unwrap(), Options::default());
    }

    #[test]
    fn runc_options_override() {
        let o = Options {
            binary_name: "/usr/bin/crun".into(),
            root: "/tmp/r".into(),
            systemd_cgroup: true,
            ..Default::default()
        };
        for url in [OPTIONS_TYPE, "type.googleapis.com/containerd.runc.v1.Options"] {
            let c = resolve(&decode(Some(&any(url, &o))).unwrap(), &defaults(), "ns");
            assert_eq!(
                (c.binary, c.root, c.systemd_cgroup),
                ("/usr/bin/crun".into(), "/tmp/r/ns".into(), true)
            );
        }
    }

    #[test]
    fn other_types_are_refused() {
        let e = decode(Some(&any("io.containerd.kata.v2.Options", &Options::default()))).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(m) if m.contains("kata")));
    }

    #[test]
    fn saved_options_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), (Options::default(), false));
        let o = Options {
            binary_name: "runc".into(),
            root: "/tmp/r".into(),
            no_pivot_root: true,
            ..Default::default()
        };
        save(dir.path(), &o, true).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join(FILE)).unwrap(),
            r#"{"berth_rootfs_mounted":true,"binary_name":"runc","no_pivot_root":true,"root":"/tmp/r"}"#
        );
        assert_eq!(load(dir.path()).unwrap(), (o, true));
    }
}
