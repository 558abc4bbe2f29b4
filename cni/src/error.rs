//! Errors of the networking crate, each naming what failed.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{op}: {source}")]
    Sys {
        op: String,
        #[source]
        source: nix::errno::Errno,
    },
    #[error("invalid hostname {0:?}")]
    BadHostname(String),
    #[error("netlink: {0}: {1}")]
    Netlink(String, #[source] std::io::Error),
    #[error("{0} failed: {1}")]
    Iptables(String, String),
    #[error("CNI plugin {plugin} {command}: {message}")]
    Plugin {
        plugin: String,
        command: String,
        message: String,
    },
    #[error("no free address left in {0}")]
    Exhausted(String),
    #[error("network config: {0}")]
    Config(String),
    #[error("network not ready: {0}")]
    NotReady(String),
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { op, path, source }
    }

    pub(crate) fn sys(op: impl Into<String>) -> impl FnOnce(nix::errno::Errno) -> Error {
        let op = op.into();
        move |source| Error::Sys { op, source }
    }
}
