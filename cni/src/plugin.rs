//! CNI plugin chains, run as containerd and CRI-O run them (CNI spec 0.3.x, 0.4.0 and 1.0.0): the
//! first network configuration in the configuration directory (by file name), each plugin of its
//! list executed in order for ADD with the previous plugin's result, in reverse order for DEL, with
//! the runtime's values (`portMappings`, `dns`, `ipRanges`, `bandwidth`) given only to plugins that
//! declare the capability.

use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::cidr::Cidr;
use crate::error::{Error, Result};

/// CNI versions whose results berth reads.
const SUPPORTED: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// A network configuration list, as loaded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfList {
    pub name: String,
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    pub plugins: Vec<Value>,
    /// The file it came from.
    #[serde(default)]
    pub source: PathBuf,
}

/// Loads the network configuration berth uses: the first `*.conflist`, `*.conf` or `*.json` file in
/// `dir` by name. A broken first file is an error (not skipped), as containerd does; a list without
/// plugins is skipped.
pub fn load(dir: &Path) -> std::result::Result<ConfList, String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("no network config in {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("conflist" | "conf" | "json")
                )
        })
        .collect();
    files.sort();
    for f in &files {
        let text = std::fs::read(f).map_err(|e| format!("read {}: {e}", f.display()))?;
        let v: Value = serde_json::from_slice(&text).map_err(|e| format!("{}: invalid JSON: {e}", f.display()))?;
        let list = if f.extension().is_some_and(|e| e == "conflist") {
            v
        } else {
            // A single plugin's configuration: a list of one.
            json!({"name": v["name"], "cniVersion": v["cniVersion"], "plugins": [v]})
        };
        let mut list: ConfList = serde_json::from_value(list)
            .map_err(|e| format!("{}: not a CNI network configuration: {e}", f.display()))?;
        list.source = f.clone();
        if list.plugins.is_empty() {
            tracing::warn!(file = %f.display(), "CNI config list has no plugins; skipping");
            continue;
        }
        if list.name.is_empty() {
            return Err(format!("{}: the network has no name", f.display()));
        }
        if !SUPPORTED.contains(&list.cni_version.as_str()) {
            return Err(format!(
                "{}: cniVersion {:?} is not supported (berth reads {})",
                f.display(),
                list.cni_version,
                SUPPORTED.join(", ")
            ));
        }
        for p in &list.plugins {
            if p["type"].as_str().is_none_or(str::is_empty) {
                return Err(format!("{}: a plugin without a \"type\"", f.display()));
            }
        }
        return Ok(list);
    }
    Err(format!("no network config found in {}", dir.display()))
}

/// The plugin binary for `ty`: the first of `bin_dirs` that has it.
pub fn find_plugin(bin_dirs: &[PathBuf], ty: &str) -> Option<PathBuf> {
    if ty.contains('/') {
        return None;
    }
    bin_dirs.iter().map(|d| d.join(ty)).find(|p| p.is_file())
}

/// Checks that every plugin of `list` is installed.
pub fn check_installed(list: &ConfList, bin_dirs: &[PathBuf]) -> std::result::Result<(), String> {
    for p in &list.plugins {
        let ty = p["type"].as_str().unwrap_or_default();
        if find_plugin(bin_dirs, ty).is_none() {
            return Err(format!(
                "{}: CNI plugin {ty:?} not found in {}",
                list.source.display(),
                bin_dirs
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    Ok(())
}

/// One pod's invocation parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Invocation {
    pub container_id: String,
    pub ifname: String,
    /// `CNI_ARGS` pairs.
    pub args: Vec<(String, String)>,
    /// Values for capabilities (`portMappings`, `dns`, `ipRanges`, `bandwidth`), by name.
    pub runtime_config: serde_json::Map<String, Value>,
}

fn plugin_conf(list: &ConfList, plugin: &Value, inv: &Invocation, prev: Option<&Value>) -> Value {
    let mut conf = plugin.clone();
    conf["name"] = json!(list.name);
    conf["cniVersion"] = json!(list.cni_version);
    if let Some(p) = prev {
        conf["prevResult"] = p.clone();
    }
    let mut rc = serde_json::Map::new();
    if let Some(caps) = plugin["capabilities"].as_object() {
        for (k, on) in caps {
            if on.as_bool() == Some(true)
                && let Some(v) = inv.runtime_config.get(k)
            {
                rc.insert(k.clone(), v.clone());
            }
        }
    }
    if !rc.is_empty() {
        conf["runtimeConfig"] = Value::Object(rc);
    }
    conf
}

fn exec(bin_dirs: &[PathBuf], command: &str, netns: &Path, inv: &Invocation, conf: &Value) -> Result<Option<Value>> {
    let ty = conf["type"].as_str().unwrap_or_default().to_string();
    let bin = find_plugin(bin_dirs, &ty).ok_or_else(|| Error::Plugin {
        plugin: ty.clone(),
        command: command.into(),
        message: format!("plugin binary not found in {bin_dirs:?}"),
    })?;
    let args: Vec<String> = std::iter::once("IgnoreUnknown=1".to_string())
        .chain(inv.args.iter().map(|(k, v)| format!("{k}={v}")))
        .collect();
    let path = std::env::join_paths(bin_dirs).unwrap_or_default();
    let mut child = Command::new(&bin)
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", &inv.container_id)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", &inv.ifname)
        .env("CNI_ARGS", args.join(";"))
        .env("CNI_PATH", path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(Error::io("run CNI plugin", &bin))?;
    let input = serde_json::to_vec(conf).unwrap_or_default();
    if let Some(mut stdin) = child.stdin.take() {
        // A plugin that exits without reading its input shows up below, by its status.
        let _ = stdin.write_all(&input);
    }
    let out = child
        .wait_with_output()
        .map_err(Error::io("wait for CNI plugin", &bin))?;
    if !out.status.success() {
        // Plugins report errors as JSON on stdout: {"code", "msg", "details"}.
        let message = match serde_json::from_slice::<Value>(&out.stdout) {
            Ok(v) if v["msg"].is_string() => {
                let mut m = v["msg"].as_str().unwrap_or_default().to_string();
                if let Some(d) = v["details"].as_str().filter(|d| !d.is_empty()) {
                    m.push_str(": ");
                    m.push_str(d);
                }
                m
            }
            _ => {
                let text = [out.stdout.as_slice(), out.stderr.as_slice()].concat();
                format!("{} ({})", String::from_utf8_lossy(&text).trim(), out.status)
            }
        };
        return Err(Error::Plugin {
            plugin: ty,
            command: command.into(),
            message,
        });
    }
    if command != "ADD" {
        return Ok(None);
    }
    let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| Error::Plugin {
        plugin: ty.clone(),
        command: command.into(),
        message: format!("unreadable result: {e}"),
    })?;
    Ok(Some(v))
}

/// Runs ADD through the chain; returns the last plugin's result.
pub fn add(list: &ConfList, bin_dirs: &[PathBuf], netns: &Path, inv: &Invocation) -> Result<Value> {
    let mut prev: Option<Value> = None;
    for p in &list.plugins {
        let conf = plugin_conf(list, p, inv, prev.as_ref());
        if let Some(r) = exec(bin_dirs, "ADD", netns, inv, &conf)? {
            prev = Some(r);
        }
    }
    prev.ok_or_else(|| Error::Plugin {
        plugin: list.name.clone(),
        command: "ADD".into(),
        message: "the chain gave no result".into(),
    })
}

/// Runs DEL through the chain in reverse order, every plugin even if one fails; the first error is
/// returned.
pub fn del(
    list: &ConfList,
    bin_dirs: &[PathBuf],
    netns: &Path,
    inv: &Invocation,
    result: Option<&Value>,
) -> Result<()> {
    let mut first_err = None;
    for p in list.plugins.iter().rev() {
        let conf = plugin_conf(list, p, inv, result);
        if let Err(e) = exec(bin_dirs, "DEL", netns, inv, &conf) {
            tracing::warn!(error = %e, "CNI DEL");
            first_err.get_or_insert(e);
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// Runs CHECK through the chain (CNI 0.4.0 and later; earlier versions have no CHECK and pass).
pub fn check(list: &ConfList, bin_dirs: &[PathBuf], netns: &Path, inv: &Invocation, result: &Value) -> Result<()> {
    if list.cni_version.starts_with("0.3") {
        return Ok(());
    }
    for p in &list.plugins {
        let conf = plugin_conf(list, p, inv, Some(result));
        exec(bin_dirs, "CHECK", netns, inv, &conf)?;
    }
    Ok(())
}

/// The pod's addresses in a result: those on the sandbox interface `ifname` (all of them if the
/// result does not say which interface they are on), IPv4 first.
pub fn result_ips(result: &Value, ifname: &str) -> Vec<Cidr> {
    let ifaces = result["interfaces"].as_array().cloned().unwrap_or_default();
    let on_pod_if = |idx: Option<u64>| -> bool {
        match idx.and_then(|i| ifaces.get(i as usize)) {
            Some(i) => i["name"].as_str() == Some(ifname) && i["sandbox"].as_str().is_some_and(|s| !s.is_empty()),
            None => true,
        }
    };
    let mut ips: Vec<Cidr> = result["ips"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|ip| on_pod_if(ip["interface"].as_u64()))
                .filter_map(|ip| ip["address"].as_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    // CNI 0.2.0-style results.
    for k in ["ip4", "ip6"] {
        if let Some(c) = result[k]["ip"].as_str().and_then(|s| s.parse().ok()) {
            ips.push(c);
        }
    }
    ips.sort_by_key(|c| !c.is_ipv4());
    ips
}

/// The addresses only.
pub fn addrs(ips: &[Cidr]) -> Vec<IpAddr> {
    ips.iter().map(|c| c.addr).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_the_first_config_by_name() {
        let d = tempfile::tempdir().unwrap();
        assert!(load(d.path()).unwrap_err().contains("no network config"));
        std::fs::write(d.path().join("README"), "not a config").unwrap();
        std::fs::write(
            d.path().join("20-b.conflist"),
            r#"{"cniVersion":"1.0.0","name":"b","plugins":[{"type":"bridge"}]}"#,
        )
        .unwrap();
        std::fs::write(
            d.path().join("10-a.conf"),
            r#"{"cniVersion":"0.4.0","name":"a","type":"ptp"}"#,
        )
        .unwrap();
        let l = load(d.path()).unwrap();
        assert_eq!((l.name.as_str(), l.plugins.len()), ("a", 1));
        std::fs::write(d.path().join("05-broken.conflist"), "{").unwrap();
        assert!(load(d.path()).unwrap_err().contains("invalid JSON"));
        std::fs::write(
            d.path().join("05-broken.conflist"),
            r#"{"cniVersion":"9.9.9","name":"x","plugins":[{"type":"bridge"}]}"#,
        )
        .unwrap();
        assert!(load(d.path()).unwrap_err().contains("not supported"));
    }

    #[test]
    fn capabilities_gate_runtime_config() {
        let list = ConfList {
            name: "n".into(),
            cni_version: "1.0.0".into(),
            plugins: vec![],
            source: PathBuf::new(),
        };
        let mut rc = serde_json::Map::new();
        rc.insert("portMappings".into(), json!([{"hostPort": 80}]));
        rc.insert("dns".into(), json!({"servers": ["10.0.0.10"]}));
        let inv = Invocation {
            container_id: "c".into(),
            ifname: "eth0".into(),
            args: vec![],
            runtime_config: rc,
        };
        let c = plugin_conf(
            &list,
            &json!({"type":"portmap","capabilities":{"portMappings":true}}),
            &inv,
            None,
        );
        assert_eq!(c["runtimeConfig"], json!({"portMappings": [{"hostPort": 80}]}));
        assert_eq!(c["name"], "n");
        let c = plugin_conf(&list, &json!({"type":"bridge"}), &inv, Some(&json!({"ips": []})));
        assert!(c.get("runtimeConfig").is_none());
        assert_eq!(c["prevResult"], json!({"ips": []}));
    }

    #[test]
    fn reads_results() {
        let r = json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "cni0"}, {"name": "vethx"}, {"name": "eth0", "sandbox": "/run/netns/x"}],
            "ips": [{"address": "fd00::5/64", "interface": 2}, {"address": "10.1.0.5/24", "gateway": "10.1.0.1", "interface": 2},
                    {"address": "10.9.9.9/24", "interface": 0}]
        });
        let ips = result_ips(&r, "eth0");
        assert_eq!(
            ips.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
            ["10.1.0.5/24", "fd00::5/64"]
        );
    }
}
