//! Protocol types for berth.
//!
//! Everything that crosses a socket is defined here, so every crate in the workspace shares one version of
//! the generated code and of `tonic`/`prost`, and so do the rules of berth's own contract between
//! berthd and berth-shim ([`contract`]) and the CRI log line both write ([`crilog`]). This crate holds
//! no other logic.

/// CRI v1 as Kubernetes 1.36 defines it (`cri/v1/api.proto`): `runtime.v1.RuntimeService` and
/// `runtime.v1.ImageService` messages, clients and servers.
#[allow(missing_debug_implementations, clippy::all)]
pub mod cri {
    tonic::include_proto!("runtime.v1");

    /// The compiled `FileDescriptorSet` of `cri/v1/api.proto` (for reflection and the wire test).
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("cri_v1");
}

/// The containerd shim v2 protocol over TTRPC: the task API a shim serves
/// (`shim::shim_async::{Task, TaskClient, create_task}`, messages in `shim::api`), the events API its
/// host serves (`shim::shim_async::{Events, create_events}`), and `ttrpc`/`protobuf` as they were
/// built. The generated task service is named `containerd.task.v3.Task`; containerd 1.6's shims
/// (and containerd itself) use the identical `containerd.task.v2.Task`.
pub use containerd_shim_protos as shim;

/// Task service names: the v2 name containerd 1.6 speaks and the v3 name the generated code uses.
pub const TASK_SERVICE_V2: &str = "containerd.task.v2.Task";
pub const TASK_SERVICE_V3: &str = "containerd.task.v3.Task";
/// The events service a shim's host serves at `TTRPC_ADDRESS`.
pub const EVENTS_SERVICE: &str = "containerd.services.events.ttrpc.v1.Events";

pub mod contract;
pub mod crilog;

pub use prost;
pub use tonic;
