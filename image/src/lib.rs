//! berth's image layer: references, registry client, content store, layer unpacking, overlayfs
//! snapshots and image metadata. Knows nothing of CRI.

pub mod content;
pub mod crash;
pub mod diff;
pub mod digest;
pub mod error;
pub mod hosts;
pub mod images;
pub mod manifest;
pub mod reference;
pub mod registry;
pub mod snapshot;
pub mod store;
pub mod sys;
pub mod unpack;

pub use digest::Digest;
pub use error::{Error, Result};
pub use images::{Images, Options, Usage};
pub use reference::Reference;
pub use registry::Credentials;
pub use snapshot::{Mount, Overlay, Snapshotter};
pub use store::{Image, Layer};
