//! The runtime's error type. `kind()` gives each error its gRPC meaning; `server::status` turns it
//! into a `tonic::Status` in one place.

/// Result alias for the runtime.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// gRPC semantics of an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    InvalidArgument,
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    Unauthenticated,
    Unavailable,
    DeadlineExceeded,
    DataLoss,
    Unimplemented,
    Internal,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Image(#[from] berth_image::Error),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    DeadlineExceeded(String),
    #[error(transparent)]
    Net(#[from] berth_cni::Error),
    #[error("berth does not implement {0} yet")]
    Unimplemented(&'static str),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Internal(String),
}

impl Error {
    pub fn kind(&self) -> Kind {
        use berth_image::Error as I;
        match self {
            Error::Image(e) => match e {
                I::InvalidReference { .. } => Kind::InvalidArgument,
                I::NotFound { .. } => Kind::NotFound,
                I::Unauthorized { .. } => Kind::Unauthenticated,
                I::Registry { .. } | I::Http { .. } => Kind::Unavailable,
                I::DigestMismatch { .. } | I::SizeMismatch { .. } => Kind::DataLoss,
                I::BadContent { .. }
                | I::NoMatchingPlatform { .. }
                | I::UnsafeLayer { .. }
                | I::InUse { .. }
                | I::Config { .. } => Kind::FailedPrecondition,
                I::Io { .. } => Kind::Internal,
            },
            Error::InvalidArgument(_) => Kind::InvalidArgument,
            Error::NotFound(_) => Kind::NotFound,
            Error::AlreadyExists(_) => Kind::AlreadyExists,
            Error::FailedPrecondition(_) => Kind::FailedPrecondition,
            Error::Unavailable(_) => Kind::Unavailable,
            Error::DeadlineExceeded(_) => Kind::DeadlineExceeded,
            Error::Net(berth_cni::Error::BadHostname(_)) => Kind::InvalidArgument,
            Error::Net(
                berth_cni::Error::NotReady(_) | berth_cni::Error::Config(_) | berth_cni::Error::Exhausted(_),
            ) => Kind::FailedPrecondition,
            Error::Net(_) => Kind::Internal,
            Error::Unimplemented(_) => Kind::Unimplemented,
            Error::Io { .. } | Error::Internal(_) => Kind::Internal,
        }
    }

    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}
