//! CRI container config + image config → OCI runtime spec.

pub mod spec;
pub mod user;

pub use spec::{SpecInput, build};
