//! Errors of the image crate. Each variant carries the object that failed.

use std::path::PathBuf;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while resolving, pulling, storing or unpacking an image.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The image reference does not parse.
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },

    /// The registry (or our store) has no such image, tag or blob.
    #[error("{what} not found")]
    NotFound { what: String },

    /// The registry refused our credentials.
    #[error("unauthorized to access {what}: {detail}")]
    Unauthorized { what: String, detail: String },

    /// The registry answered, but not in a way we can use.
    #[error("registry {url}: {detail}")]
    Registry { url: String, detail: String },

    /// The network failed before the registry answered.
    #[error("registry {url}: {source}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },

    /// Downloaded or unpacked content did not hash to the digest that was asked for.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },

    /// Downloaded content had another size than its descriptor says.
    #[error("size mismatch for {digest}: expected {expected} bytes, got {actual}")]
    SizeMismatch { digest: String, expected: u64, actual: u64 },

    /// A manifest, index or config is malformed or of a kind we do not handle.
    #[error("bad {what}: {detail}")]
    BadContent { what: String, detail: String },

    /// No manifest in an index matches this machine's platform.
    #[error("no manifest for platform {platform} in {reference}")]
    NoMatchingPlatform { reference: String, platform: String },

    /// A layer tried to write outside its directory, or is otherwise unsafe to unpack.
    #[error("layer {layer} refused: entry {entry:?}: {reason}")]
    UnsafeLayer {
        layer: String,
        entry: String,
        reason: String,
    },

    /// The image is still in use and cannot be removed.
    #[error("image {image} is in use: {detail}")]
    InUse { image: String, detail: String },

    /// A configuration file (hosts.toml) is malformed.
    #[error("config {path}: {detail}")]
    Config { path: PathBuf, detail: String },

    /// A filesystem operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { op, path, source }
    }

    pub(crate) fn bad(what: impl Into<String>, detail: impl ToString) -> Error {
        Error::BadContent {
            what: what.into(),
            detail: detail.to_string(),
        }
    }
}
