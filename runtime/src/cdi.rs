//! CDI, the Container Device Interface (`ContainerConfig.CDI_devices`, GA in Kubernetes 1.31): how
//! device plugins (GPUs and the like) hand devices to containers. A vendor writes a spec file —
//! JSON or YAML, in `runtime.cdi_spec_dirs` (`/etc/cdi`, `/var/run/cdi`) — naming a kind
//! (`vendor.com/class`) and its devices, each with the edits that give a container the device: device
//! nodes, mounts, environment, hooks, extra groups; the spec's own edits go with any of its devices.
//! berth resolves the fully qualified names a request gives (`vendor.com/class=name`) and applies
//! the edits to the OCI spec, as containerd and CRI-O do through the CDI library. An unknown device
//! fails CreateContainer (`NotFound`); a spec file that does not parse is skipped with a warning
//! unless the device asked for is only found through it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Hook, HookBuilder, Hooks, LinuxDevice, LinuxDeviceBuilder, LinuxDeviceCgroupBuilder, LinuxDeviceType, Mount,
    MountBuilder, Spec,
};
use serde::Deserialize;

use crate::error::{Error, Result};

/// A CDI spec file.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SpecFile {
    cdi_version: String,
    kind: String,
    #[serde(default)]
    devices: Vec<Device>,
    #[serde(default)]
    container_edits: Edits,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Device {
    name: String,
    #[serde(default)]
    container_edits: Edits,
}

/// What a spec or a device changes in a container.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Edits {
    #[serde(default)]
    env: Vec<String>,
    #[serde(default)]
    device_nodes: Vec<DeviceNode>,
    #[serde(default)]
    mounts: Vec<CdiMount>,
    #[serde(default)]
    hooks: Vec<CdiHook>,
    #[serde(default, rename = "additionalGids")]
    additional_gids: Vec<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeviceNode {
    path: String,
    host_path: Option<String>,
    #[serde(rename = "type")]
    typ: Option<String>,
    major: Option<i64>,
    minor: Option<i64>,
    file_mode: Option<u32>,
    permissions: Option<String>,
    uid: Option<u32>,
    gid: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CdiMount {
    host_path: String,
    container_path: String,
    #[serde(rename = "type")]
    typ: Option<String>,
    #[serde(default)]
    options: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CdiHook {
    hook_name: String,
    path: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: Vec<String>,
    timeout: Option<i64>,
}

/// A fully qualified CDI device name, `vendor.com/class=name`, split into kind and name.
pub fn parse_name(full: &str) -> Result<(&str, &str)> {
    let bad = || {
        Error::InvalidArgument(format!(
            "CDI device {full:?} is not a fully qualified name (vendor.com/class=name)"
        ))
    };
    let (kind, name) = full.split_once('=').ok_or_else(bad)?;
    let (vendor, class) = kind.split_once('/').ok_or_else(bad)?;
    let word = |s: &str, extra: &[char]| {
        s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.chars().all(|c| c.is_ascii_alphanumeric() || extra.contains(&c))
    };
    if !word(vendor, &['-', '_', '.']) || !word(class, &['-', '_']) || !word(name, &['-', '_', '.', ':']) {
        return Err(bad());
    }
    Ok((kind, name))
}

/// Every spec file in `dirs`, in priority order (later wins), with how each parsed.
fn load(dirs: &[PathBuf]) -> Vec<(PathBuf, std::result::Result<SpecFile, String>)> {
    let mut out = Vec::new();
    for d in dirs {
        let mut files: Vec<PathBuf> = std::fs::read_dir(d)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("json" | "yaml" | "yml")))
            .collect();
        files.sort();
        for f in files {
            let parsed = std::fs::read(&f).map_err(|e| e.to_string()).and_then(|b| parse(&f, &b));
            out.push((f, parsed));
        }
    }
    out
}

fn parse(path: &Path, bytes: &[u8]) -> std::result::Result<SpecFile, String> {
    let spec: SpecFile = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())?
    } else {
        serde_norway::from_slice(bytes).map_err(|e| e.to_string())?
    };
    if spec.cdi_version.is_empty() {
        return Err("no cdiVersion".into());
    }
    let kind_ok = spec
        .kind
        .split_once('/')
        .is_some_and(|(v, c)| !v.is_empty() && !c.is_empty() && !c.contains('/'));
    if !kind_ok {
        return Err(format!("kind {:?} is not vendor.com/class", spec.kind));
    }
    Ok(spec)
}

/// Applies the CDI devices `names` from the specs in `dirs` to `spec`. Nothing to do without
/// names. Blocking (reads the spec files).
pub fn apply(spec: &mut Spec, names: &[String], dirs: &[PathBuf]) -> Result<()> {
    if names.is_empty() {
        return Ok(());
    }
    let files = load(dirs);
    // Each requested device's edits, and each spec file's own edits once.
    let mut edits: Vec<Edits> = Vec::new();
    let mut used_files: BTreeMap<PathBuf, Edits> = BTreeMap::new();
    for full in names {
        let (kind, name) = parse_name(full)?;
        let found = files.iter().rev().find_map(|(path, parsed)| {
            let s = parsed.as_ref().ok()?;
            let d = s.devices.iter().find(|d| s.kind == kind && d.name == name)?;
            Some((path.clone(), s.container_edits.clone(), d.container_edits.clone()))
        });
        let Some((path, file_edits, device_edits)) = found else {
            let broken: Vec<String> = files
                .iter()
                .filter_map(|(p, r)| r.as_ref().err().map(|e| format!("{}: {e}", p.display())))
                .collect();
            let dirs: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
            return Err(Error::NotFound(format!(
                "unresolvable CDI device {full:?}: no spec in {} names it{}",
                dirs.join(", "),
                if broken.is_empty() {
                    String::new()
                } else {
                    format!(" (unreadable specs: {})", broken.join("; "))
                }
            )));
        };
        used_files.entry(path).or_insert(file_edits);
        edits.push(device_edits);
    }
    for (path, r) in &files {
        if let Err(e) = r {
            tracing::warn!(spec = %path.display(), error = %e, "skipping a CDI spec file that does not parse");
        }
    }
    for e in used_files.into_values().chain(edits) {
        apply_edits(spec, &e)?;
    }
    Ok(())
}

fn bad(e: impl std::fmt::Display) -> Error {
    Error::InvalidArgument(format!("CDI edit: {e}"))
}

fn apply_edits(spec: &mut Spec, e: &Edits) -> Result<()> {
    if let Some(p) = spec.process_mut() {
        let mut env = p.env().clone().unwrap_or_default();
        for kv in &e.env {
            let key = kv.split('=').next().unwrap_or_default();
            env.retain(|old| old.split('=').next() != Some(key));
            env.push(kv.clone());
        }
        p.set_env(Some(env));
        if !e.additional_gids.is_empty() {
            let mut user = p.user().clone();
            let mut gids = user.additional_gids().clone().unwrap_or_default();
            for g in &e.additional_gids {
                if *g != 0 && !gids.contains(g) {
                    gids.push(*g);
                }
            }
            user.set_additional_gids(Some(gids));
            p.set_user(user);
        }
    }
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    for m in &e.mounts {
        mounts.push(mount(m)?);
    }
    spec.set_mounts(Some(mounts));
    if !e.hooks.is_empty() {
        let mut hooks = spec.hooks().clone().unwrap_or_default();
        for h in &e.hooks {
            add_hook(&mut hooks, h)?;
        }
        spec.set_hooks(Some(hooks));
    }
    if !e.device_nodes.is_empty() {
        let linux = spec
            .linux_mut()
            .as_mut()
            .ok_or_else(|| Error::Internal("the spec has no linux section".into()))?;
        let mut devices = linux.devices().clone().unwrap_or_default();
        let mut resources = linux.resources().clone().unwrap_or_default();
        let mut rules = resources.devices().clone().unwrap_or_default();
        for n in &e.device_nodes {
            let (dev, access) = device(n)?;
            rules.push(
                LinuxDeviceCgroupBuilder::default()
                    .allow(true)
                    .typ(dev.typ())
                    .major(dev.major())
                    .minor(dev.minor())
                    .access(access)
                    .build()
                    .map_err(bad)?,
            );
            devices.retain(|d| d.path() != dev.path());
            devices.push(dev);
        }
        resources.set_devices(Some(rules));
        linux.set_resources(Some(resources));
        linux.set_devices(Some(devices));
    }
    Ok(())
}

fn mount(m: &CdiMount) -> Result<Mount> {
    if !m.container_path.starts_with('/') {
        return Err(bad(format!(
            "mount containerPath {:?} must be absolute",
            m.container_path
        )));
    }
    let typ = m.typ.clone().unwrap_or_else(|| "bind".into());
    let mut options = m.options.clone();
    if typ == "bind" && !options.iter().any(|o| o == "bind" || o == "rbind") {
        options.push("bind".into());
    }
    MountBuilder::default()
        .destination(&m.container_path)
        .source(&m.host_path)
        .typ(typ)
        .options(options)
        .build()
        .map_err(bad)
}

fn add_hook(hooks: &mut Hooks, h: &CdiHook) -> Result<()> {
    let mut b = HookBuilder::default().path(&h.path);
    if !h.args.is_empty() {
        b = b.args(h.args.clone());
    }
    if !h.env.is_empty() {
        b = b.env(h.env.clone());
    }
    if let Some(t) = h.timeout {
        b = b.timeout(t);
    }
    let hook: Hook = b.build().map_err(bad)?;
    let push = |list: Option<Vec<Hook>>| {
        let mut l = list.unwrap_or_default();
        l.push(hook.clone());
        Some(l)
    };
    match h.hook_name.as_str() {
        #[allow(deprecated)]
        "prestart" => hooks.set_prestart(push(hooks.prestart().clone())),
        "createRuntime" => hooks.set_create_runtime(push(hooks.create_runtime().clone())),
        "createContainer" => hooks.set_create_container(push(hooks.create_container().clone())),
        "startContainer" => hooks.set_start_container(push(hooks.start_container().clone())),
        "poststart" => hooks.set_poststart(push(hooks.poststart().clone())),
        "poststop" => hooks.set_poststop(push(hooks.poststop().clone())),
        other => return Err(bad(format!("unknown hook name {other:?}"))),
    };
    Ok(())
}

/// The OCI device of a CDI device node and its cgroup access; type and numbers from the host path
/// where the spec leaves them out.
fn device(n: &DeviceNode) -> Result<(LinuxDevice, String)> {
    use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
    if !n.path.starts_with('/') {
        return Err(bad(format!("deviceNode path {:?} must be absolute", n.path)));
    }
    let host = n.host_path.clone().unwrap_or_else(|| n.path.clone());
    let (mut typ, mut major, mut minor, mut mode) = (n.typ.clone(), n.major, n.minor, n.file_mode);
    if typ.is_none() || major.is_none() || minor.is_none() {
        let md = std::fs::metadata(&host).map_err(|e| Error::NotFound(format!("CDI device node {host}: {e}")))?;
        let ft = md.file_type();
        let t = if ft.is_char_device() {
            "c"
        } else if ft.is_block_device() {
            "b"
        } else if ft.is_fifo() {
            "p"
        } else {
            return Err(bad(format!("CDI device node {host} is not a device")));
        };
        typ.get_or_insert_with(|| t.to_string());
        let rdev = md.rdev();
        major.get_or_insert(nix::sys::stat::major(rdev) as i64);
        minor.get_or_insert(nix::sys::stat::minor(rdev) as i64);
        mode.get_or_insert(md.mode() & 0o777);
    }
    let typ = match typ.as_deref() {
        Some("c") | Some("u") => LinuxDeviceType::C,
        Some("b") => LinuxDeviceType::B,
        Some("p") => LinuxDeviceType::P,
        other => return Err(bad(format!("device type {other:?}"))),
    };
    let mut b = LinuxDeviceBuilder::default()
        .path(PathBuf::from(&n.path))
        .typ(typ)
        .major(major.unwrap_or_default())
        .minor(minor.unwrap_or_default());
    if let Some(m) = mode {
        b = b.file_mode(m);
    }
    if let Some(u) = n.uid {
        b = b.uid(u);
    }
    if let Some(g) = n.gid {
        b = b.gid(g);
    }
    let access = n.permissions.clone().unwrap_or_else(|| "rwm".into());
    if access.is_empty() || !access.chars().all(|c| "rwm".contains(c)) {
        return Err(bad(format!("device permissions {access:?}")));
    }
    Ok((b.build().map_err(bad)?, access))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Spec {
        Spec::default()
    }

    fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(d.path().join(name), text).unwrap();
        }
        d
    }

    const JSON: &str = r#"{"cdiVersion":"0.6.0","kind":"vendor.com/gpu",
        "containerEdits":{"env":["VENDOR_LIB=1"]},
        "devices":[{"name":"gpu0","containerEdits":{
            "env":["GPU=0"],
            "deviceNodes":[{"path":"/dev/vgpu0","hostPath":"/dev/null","permissions":"rw"}],
            "mounts":[{"hostPath":"/opt/lib","containerPath":"/usr/lib/vendor","options":["ro"]}],
            "hooks":[{"hookName":"createContainer","path":"/usr/bin/vendor-hook","args":["vendor-hook","x"]}],
            "additionalGids":[44]}}]}"#;

    #[test]
    fn names() {
        assert_eq!(parse_name("vendor.com/gpu=gpu0").unwrap(), ("vendor.com/gpu", "gpu0"));
        assert_eq!(parse_name("nvidia.com/gpu=all").unwrap().1, "all");
        for bad in [
            "gpu0",
            "vendor.com=gpu0",
            "vendor.com/gpu",
            "/gpu=x",
            "vendor.com/gpu=",
            "a/b/c=d",
            "v/c=x y",
        ] {
            let e = parse_name(bad).unwrap_err();
            assert_eq!(e.kind(), crate::error::Kind::InvalidArgument, "{bad}");
        }
    }

    #[test]
    fn a_json_device_gets_its_edits_and_its_specs() {
        let d = dir_with(&[("vendor.json", JSON)]);
        let mut s = base();
        apply(&mut s, &["vendor.com/gpu=gpu0".into()], &[d.path().to_path_buf()]).unwrap();
        let env = s.process().as_ref().unwrap().env().clone().unwrap();
        assert!(
            env.contains(&"GPU=0".into()) && env.contains(&"VENDOR_LIB=1".into()),
            "{env:?}"
        );
        let linux = s.linux().as_ref().unwrap();
        let dev = linux
            .devices()
            .as_ref()
            .unwrap()
            .iter()
            .find(|d| d.path() == Path::new("/dev/vgpu0"))
            .unwrap();
        assert_eq!(
            (dev.typ(), dev.major(), dev.minor()),
            (LinuxDeviceType::C, 1, 3),
            "/dev/null's numbers"
        );
        let rule = linux
            .resources()
            .as_ref()
            .unwrap()
            .devices()
            .as_ref()
            .unwrap()
            .last()
            .unwrap()
            .clone();
        assert_eq!(
            (rule.allow(), rule.major(), rule.access().as_deref()),
            (true, Some(1), Some("rw"))
        );
        let m = s.mounts().as_ref().unwrap().last().unwrap().clone();
        assert_eq!(m.destination(), Path::new("/usr/lib/vendor"));
        assert_eq!(m.options().clone().unwrap(), vec!["ro", "bind"]);
        let hooks = s.hooks().as_ref().unwrap().create_container().clone().unwrap();
        assert_eq!(hooks[0].path(), Path::new("/usr/bin/vendor-hook"));
        assert!(
            s.process()
                .as_ref()
                .unwrap()
                .user()
                .additional_gids()
                .clone()
                .unwrap()
                .contains(&44)
        );
    }

    #[test]
    fn yaml_later_directories_win_and_errors_are_clear() {
        let yaml = "cdiVersion: 0.6.0\nkind: vendor.com/gpu\ndevices:\n  - name: gpu0\n    containerEdits:\n      env: [GPU=from-run]\n";
        let etc = dir_with(&[("vendor.json", JSON)]);
        let run = dir_with(&[("vendor.yaml", yaml), ("broken.yaml", "cdiVersion: [")]);
        let dirs = [etc.path().to_path_buf(), run.path().to_path_buf()];
        let mut s = base();
        apply(&mut s, &["vendor.com/gpu=gpu0".into()], &dirs).unwrap();
        let env = s.process().as_ref().unwrap().env().clone().unwrap();
        assert!(
            env.contains(&"GPU=from-run".into()) && !env.contains(&"GPU=0".into()),
            "{env:?}"
        );
        let e = apply(&mut base(), &["vendor.com/gpu=gpu9".into()], &dirs).unwrap_err();
        assert_eq!(e.kind(), crate::error::Kind::NotFound);
        let msg = e.to_string();
        assert!(msg.contains("gpu9") && msg.contains("broken.yaml"), "{msg}");
        // No names: nothing read, nothing changed.
        apply(&mut base(), &[], &[PathBuf::from("/nonexistent")]).unwrap();
    }
}
