//! berth's own contract between berthd and berth-shim, written once for both sides.
//!
//! berthd launches a pod's berth-shim ahead of its first container and later connects to it
//! directly, at the socket `berth-shim start` would have named; if the two computed it differently,
//! the prelaunched shim would silently not be found. So the name is computed here, by both.

use std::path::{Path, PathBuf};

use sha2::Digest as _;

/// The containerd namespace berth's shims run in (it keys runc state and shim sockets).
pub const NAMESPACE: &str = "k8s.io";

/// Annotations that group containers into one shim, in containerd's order of precedence.
pub const GROUP_ANNOTATIONS: [&str; 2] = ["io.containerd.runc.v2.group", "io.kubernetes.cri.sandbox-id"];

/// The file berth-shim writes in a container's bundle when the OOM killer killed one of its
/// processes (its content: the kill count); berthd then reports the exit as `OOMKilled`.
pub const OOM_MARKER: &str = "oom-killed";

/// The socket of the shim serving `group`: `<ttrpc_dir>/s/<32 hex digits of
/// sha256("<address>/<namespace>/<group>")>`, where `ttrpc_dir` is the directory of the host's events
/// socket (`TTRPC_ADDRESS`) and `address` the host address the shim was given (`-address`).
/// containerd's runc shim uses the same hash (all of it, under `/run/containerd/s`).
pub fn shim_socket(ttrpc_dir: &Path, address: &str, namespace: &str, group: &str) -> PathBuf {
    let digest = sha2::Sha256::digest(format!("{address}/{namespace}/{group}").as_bytes());
    ttrpc_dir.join("s").join(&hex::encode(digest)[..32])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shim_socket_is_containerds_hash() {
        // sha256("/run/berth/berth.sock/k8s.io/pod1") starts 1848d04bd152f12f556e873b5728c19a
        // (measured with containerd-shim-runc-v2 1.6).
        assert_eq!(
            shim_socket(Path::new("/run/berth"), "/run/berth/berth.sock", NAMESPACE, "pod1"),
            PathBuf::from("/run/berth/s/1848d04bd152f12f556e873b5728c19a")
        );
        assert_ne!(
            shim_socket(Path::new("/run/berth"), "/run/berth/berth.sock", NAMESPACE, "pod2"),
            shim_socket(Path::new("/run/berth"), "/run/berth/berth.sock", NAMESPACE, "pod1")
        );
    }
}
