//! The shim's error type, and the one place it becomes a ttrpc status.

use std::io;
use std::path::PathBuf;

use berth_proto::shim::ttrpc::{self, Code};

use crate::runc;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Unimplemented(String),
    #[error(transparent)]
    Runc(#[from] runc::Error),
    #[error("{context} {path}: {source}", path = path.display())]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// The gRPC meaning of the error.
    pub fn code(&self) -> Code {
        match self {
            Error::InvalidArgument(_) => Code::INVALID_ARGUMENT,
            Error::NotFound(_) => Code::NOT_FOUND,
            Error::AlreadyExists(_) => Code::ALREADY_EXISTS,
            Error::FailedPrecondition(_) => Code::FAILED_PRECONDITION,
            Error::Unimplemented(_) => Code::UNIMPLEMENTED,
            Error::Runc(e) if e.is_missing() => Code::NOT_FOUND,
            Error::Runc(_) => Code::INTERNAL,
            // A file the shim needs that is missing (a FIFO, a log directory) is a precondition
            // that failed, not the object of the call being gone: NOT_FOUND would make berthd's
            // Stop/Remove take it for "already gone".
            Error::Io { source, .. } => match source.kind() {
                io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied => Code::FAILED_PRECONDITION,
                _ => Code::INTERNAL,
            },
        }
    }

    pub fn not_found(what: &str, id: &str) -> Error {
        Error::NotFound(format!("{what} {id:?} not found"))
    }
}

impl From<Error> for ttrpc::Error {
    fn from(e: Error) -> ttrpc::Error {
        ttrpc::Error::RpcStatus(ttrpc::get_status(e.code(), e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(e: Error) -> (Code, String) {
        match ttrpc::Error::from(e) {
            ttrpc::Error::RpcStatus(s) => (s.code(), s.message.clone()),
            other => panic!("not a status: {other:?}"),
        }
    }

    fn failed(stderr: &str) -> Error {
        Error::Runc(runc::Error::CommandFailed {
            binary: "runc".into(),
            command: "delete c1".into(),
            status: 1,
            stdout: String::new(),
            stderr: stderr.into(),
        })
    }

    #[test]
    fn every_code() {
        assert_eq!(
            status(Error::InvalidArgument("bad".into())),
            (Code::INVALID_ARGUMENT, "bad".into())
        );
        assert_eq!(
            status(Error::not_found("container", "c1")),
            (Code::NOT_FOUND, "container \"c1\" not found".into())
        );
        assert_eq!(status(Error::AlreadyExists("c1".into())).0, Code::ALREADY_EXISTS);
        assert_eq!(
            status(Error::FailedPrecondition("running".into())).0,
            Code::FAILED_PRECONDITION
        );
        assert_eq!(status(Error::Unimplemented("tty".into())).0, Code::UNIMPLEMENTED);
        assert_eq!(status(failed("container \"c1\" does not exist")).0, Code::NOT_FOUND);
        let (code, msg) = status(failed("cgroup busy"));
        assert_eq!(code, Code::INTERNAL);
        assert_eq!(msg, "`runc delete c1` exited with status 1: cgroup busy");
        let io = |kind| Error::Io {
            context: "opening",
            path: "/x".into(),
            source: io::Error::from(kind),
        };
        assert_eq!(status(io(io::ErrorKind::NotFound)).0, Code::FAILED_PRECONDITION);
        assert_eq!(status(io(io::ErrorKind::PermissionDenied)).0, Code::FAILED_PRECONDITION);
        assert_eq!(status(io(io::ErrorKind::Other)).0, Code::INTERNAL);
    }
}
