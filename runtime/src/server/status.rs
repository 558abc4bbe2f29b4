//! The one place runtime errors become gRPC statuses.

use berth_proto::tonic::{Code, Status};

use crate::error::{Error, Kind};

pub fn code(kind: Kind) -> Code {
    match kind {
        Kind::InvalidArgument => Code::InvalidArgument,
        Kind::NotFound => Code::NotFound,
        Kind::AlreadyExists => Code::AlreadyExists,
        Kind::FailedPrecondition => Code::FailedPrecondition,
        Kind::Unauthenticated => Code::Unauthenticated,
        Kind::Unavailable => Code::Unavailable,
        Kind::DeadlineExceeded => Code::DeadlineExceeded,
        Kind::DataLoss => Code::DataLoss,
        Kind::Unimplemented => Code::Unimplemented,
        Kind::Internal => Code::Internal,
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        // The whole chain, so the client sees the failing object and the cause.
        let mut msg = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            let s_msg = s.to_string();
            if !msg.contains(&s_msg) {
                msg.push_str(": ");
                msg.push_str(&s_msg);
            }
            src = s.source();
        }
        Status::new(code(e.kind()), msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_image::Error as I;

    fn status(e: impl Into<Error>) -> Status {
        Status::from(e.into())
    }

    #[test]
    fn every_code() {
        let cases: Vec<(Error, Code)> = vec![
            (
                I::InvalidReference {
                    reference: "X".into(),
                    reason: "upper".into(),
                }
                .into(),
                Code::InvalidArgument,
            ),
            (I::NotFound { what: "m".into() }.into(), Code::NotFound),
            (
                I::Unauthorized {
                    what: "u".into(),
                    detail: "d".into(),
                }
                .into(),
                Code::Unauthenticated,
            ),
            (
                I::Registry {
                    url: "u".into(),
                    detail: "500".into(),
                }
                .into(),
                Code::Unavailable,
            ),
            (
                I::DigestMismatch {
                    what: "b".into(),
                    expected: "e".into(),
                    actual: "a".into(),
                }
                .into(),
                Code::DataLoss,
            ),
            (
                I::UnsafeLayer {
                    layer: "l".into(),
                    entry: "../x".into(),
                    reason: "r".into(),
                }
                .into(),
                Code::FailedPrecondition,
            ),
            (
                I::NoMatchingPlatform {
                    reference: "r".into(),
                    platform: "p".into(),
                }
                .into(),
                Code::FailedPrecondition,
            ),
            (
                I::Io {
                    op: "read",
                    path: "/x".into(),
                    source: std::io::Error::other("boom"),
                }
                .into(),
                Code::Internal,
            ),
            (Error::InvalidArgument("x".into()), Code::InvalidArgument),
            (Error::NotFound("x".into()), Code::NotFound),
            (Error::AlreadyExists("x".into()), Code::AlreadyExists),
            (Error::FailedPrecondition("x".into()), Code::FailedPrecondition),
            (Error::Unavailable("x".into()), Code::Unavailable),
            (Error::DeadlineExceeded("x".into()), Code::DeadlineExceeded),
            (
                berth_cni::Error::BadHostname("a_b".into()).into(),
                Code::InvalidArgument,
            ),
            (Error::Unimplemented("RunPodSandbox"), Code::Unimplemented),
            (Error::Internal("x".into()), Code::Internal),
        ];
        for (e, c) in cases {
            let s = status(e);
            assert_eq!(s.code(), c, "{s:?}");
            assert!(!s.message().is_empty());
        }
    }

    #[test]
    fn message_carries_the_cause() {
        let s = status(I::Io {
            op: "read",
            path: "/x/y".into(),
            source: std::io::Error::other("disk on fire"),
        });
        assert!(
            s.message().contains("/x/y") && s.message().contains("disk on fire"),
            "{}",
            s.message()
        );
        assert!(status(Error::Unimplemented("Exec")).message().contains("Exec"));
    }
}
