//! CRI container config + image config → OCI runtime spec.

pub mod apparmor;
#[cfg(test)]
mod golden;
mod host;
pub mod propagation;
pub mod seccomp;
pub mod spec;
pub mod sysctl;
pub mod user;

pub use host::Host;
pub use spec::{SpecInput, build};

use std::path::Path;

use oci_spec::runtime::{Process, Spec};

use crate::error::{Error, Result};

/// The OCI spec in a container's bundle (`config.json`).
pub fn load_bundle_spec(bundle: &Path) -> Result<Spec> {
    let path = bundle.join("config.json");
    Spec::load(&path).map_err(|e| Error::Internal(format!("read {}: {e}", path.display())))
}

/// The process an exec in a container runs: the container's own (user, env, cwd, capabilities,
/// rlimits, no-new-privileges, AppArmor/SELinux labels) with `args`; a TTY exec gets `TERM=xterm`
/// unless the container sets a `TERM` (as kubelet's exec through containerd).
pub fn exec_process(spec: &Spec, args: &[String], tty: bool) -> Result<Process> {
    let mut p = spec
        .process()
        .clone()
        .ok_or_else(|| Error::Internal("the container's spec has no process".into()))?;
    p.set_args(Some(args.to_vec()));
    p.set_terminal(Some(tty));
    p.set_console_size(None);
    if tty {
        let mut env = p.env().clone().unwrap_or_default();
        if !env.iter().any(|v| v.starts_with("TERM=")) {
            env.push("TERM=xterm".into());
        }
        p.set_env(Some(env));
    }
    Ok(p)
}
