//! Pod sysctls: only the ones the kernel scopes to a namespace the pod owns are allowed (as runc and
//! kubelet check): IPC (`kernel.shm*`, `kernel.msg*`, `kernel.sem`, `fs.mqueue.*`) unless the pod
//! uses the host's IPC namespace, network (`net.*`) unless it uses the host's network. Any other
//! would change the node, and is refused with InvalidArgument.

use std::collections::HashMap;

use crate::error::{Error, Result};

/// Checks `sysctls` for a pod with (or without) its own IPC and network namespaces.
pub fn validate(sysctls: &HashMap<String, String>, own_ipc: bool, own_net: bool) -> Result<()> {
    let mut keys: Vec<&String> = sysctls.keys().collect();
    keys.sort();
    for key in keys {
        let k = key.replace('/', ".");
        let ipc = k.starts_with("kernel.shm")
            || k.starts_with("kernel.msg")
            || k == "kernel.sem"
            || k.starts_with("fs.mqueue.");
        let net = k.starts_with("net.");
        let why = if ipc && !own_ipc {
            "the pod shares the host's IPC namespace"
        } else if net && !own_net {
            "the pod shares the host's network namespace"
        } else if ipc || net {
            continue;
        } else {
            "it is not namespaced: it would change the node (only kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.* and net.* are allowed)"
        };
        return Err(Error::InvalidArgument(format!("sysctl {key:?} is not allowed: {why}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(keys: &[&str]) -> HashMap<String, String> {
        keys.iter().map(|k| (k.to_string(), "1".to_string())).collect()
    }

    #[test]
    fn namespaced_only() {
        assert!(
            validate(
                &m(&[
                    "kernel.shm_rmid_forced",
                    "kernel.msgmax",
                    "kernel.sem",
                    "fs.mqueue.msg_max"
                ]),
                true,
                true
            )
            .is_ok()
        );
        assert!(
            validate(
                &m(&["net.ipv4.ip_unprivileged_port_start", "net/ipv4/ping_group_range"]),
                true,
                true
            )
            .is_ok()
        );
        assert!(validate(&m(&["net.ipv4.ip_forward"]), true, false).is_err());
        assert!(validate(&m(&["kernel.shmmax"]), false, true).is_err());
        for bad in [
            "kernel.pid_max",
            "vm.overcommit_memory",
            "fs.file-max",
            "kernel.semaphores",
        ] {
            let e = validate(&m(&[bad]), true, true).unwrap_err();
            assert!(e.to_string().contains(bad), "{e}");
        }
    }
}
