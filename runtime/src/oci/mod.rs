//! CRI container config + image config → OCI runtime spec.

pub mod apparmor;
pub mod propagation;
pub mod seccomp;
pub mod spec;
pub mod sysctl;
pub mod user;

pub use spec::{SpecInput, build};
