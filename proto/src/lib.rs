//! Protocol types for berth.
//!
//! Everything that crosses a socket is defined here, so every crate in the workspace shares one version of
//! the generated code and of `tonic`/`prost`. This crate holds no logic.

/// CRI v1: `runtime.v1.RuntimeService` and `runtime.v1.ImageService` messages, clients and servers.
pub use k8s_cri::v1 as cri;

pub use prost;
pub use tonic;
