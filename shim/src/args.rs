//! Command-line flags, parsed the way Go's `flag` package does, because containerd-style hosts pass
//! them that way: `-namespace k8s.io -id c1 -address /run/x.sock start`.
//!
//! A flag is `-name value`, `-name=value` or the same with `--`; booleans take no value. The first
//! argument that is not a flag is the action (`start`, `delete`); without one the process serves.

use std::fmt;

/// What the process was asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Launch (or find) the pod's shim daemon and print its address.
    Start,
    /// Clean up after a dead shim: force-delete the container, print a `DeleteResponse`.
    Delete,
    /// Be the daemon: serve the task API on the listener inherited as fd 3.
    Serve,
    /// Print the version and exit.
    Version,
    /// Be PID 1 of a pod's shared PID namespace: reap orphans until SIGTERM.
    PodInit,
}

/// Parsed flags. Unknown flags are errors, like Go's `flag.Parse`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flags {
    pub namespace: String,
    pub id: String,
    /// The host's gRPC address; only part of the socket-path hash here.
    pub address: String,
    pub publish_binary: String,
    pub bundle: String,
    /// Set by `start` for the daemon it launches: the socket path to remove on exit.
    pub socket: String,
    pub debug: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub struct ArgsError(String);

impl fmt::Display for ArgsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ArgsError {}

/// Parses `args` (without the program name).
pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<(Flags, Action), ArgsError> {
    let mut flags = Flags::default();
    let mut action = None;
    let mut version = false;
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let Some(body) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
            if action.is_none() {
                action = Some(match arg.as_str() {
                    "start" => Action::Start,
                    "delete" => Action::Delete,
                    "pod-init" => Action::PodInit,
                    other => return Err(ArgsError(format!("unknown action {other:?}"))),
                });
            }
            // Go's flag package stops at the first non-flag; later words are ignored.
            continue;
        };
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (body, None),
        };
        match name {
            "debug" | "v" | "version" | "info" => {
                let on = match inline.as_deref() {
                    None | Some("true") | Some("1") => true,
                    Some("false") | Some("0") => false,
                    Some(v) => return Err(ArgsError(format!("invalid boolean value {v:?} for -{name}"))),
                };
                match name {
                    "debug" => flags.debug = on,
                    "info" => {}
                    _ => version = on,
                }
            }
            "namespace" | "id" | "address" | "publish-binary" | "bundle" | "socket" => {
                let value = match inline {
                    Some(v) => v,
                    None => it
                        .next()
                        .ok_or_else(|| ArgsError(format!("flag needs an argument: -{name}")))?,
                };
                let slot = match name {
                    "namespace" => &mut flags.namespace,
                    "id" => &mut flags.id,
                    "address" => &mut flags.address,
                    "publish-binary" => &mut flags.publish_binary,
                    "bundle" => &mut flags.bundle,
                    _ => &mut flags.socket,
                };
                *slot = value;
            }
            _ => return Err(ArgsError(format!("flag provided but not defined: -{name}"))),
        }
    }
    let action = if version {
        Action::Version
    } else {
        action.unwrap_or(Action::Serve)
    };
    if matches!(action, Action::Start | Action::Delete) {
        for (name, value) in [("namespace", &flags.namespace), ("id", &flags.id)] {
            if value.is_empty() {
                return Err(ArgsError(format!("-{name} is required")));
            }
        }
    }
    Ok((flags, action))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<(Flags, Action), ArgsError> {
        parse(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn containerd_start_line() {
        let (f, a) = p(&[
            "-namespace",
            "k8s.io",
            "-address",
            "/run/berth/berth.sock",
            "-publish-binary",
            "/usr/bin/berthd",
            "-id",
            "c1",
            "-debug",
            "start",
        ])
        .unwrap();
        assert_eq!(a, Action::Start);
        assert_eq!(f.namespace, "k8s.io");
        assert_eq!(f.address, "/run/berth/berth.sock");
        assert_eq!(f.publish_binary, "/usr/bin/berthd");
        assert_eq!(f.id, "c1");
        assert!(f.debug);
    }

    #[test]
    fn equals_double_dash_and_serve() {
        let (f, a) = p(&["--namespace=ns", "-id=x", "-socket", "/s", "-debug=false"]).unwrap();
        assert_eq!(a, Action::Serve);
        assert_eq!(
            (f.namespace.as_str(), f.id.as_str(), f.socket.as_str(), f.debug),
            ("ns", "x", "/s", false)
        );
    }

    #[test]
    fn delete_and_version() {
        let (f, a) = p(&["-namespace", "n", "-id", "c", "-bundle", "/b", "delete"]).unwrap();
        assert_eq!((a, f.bundle.as_str()), (Action::Delete, "/b"));
        assert_eq!(p(&["-v"]).unwrap().1, Action::Version);
        assert_eq!(p(&["pod-init"]).unwrap().1, Action::PodInit);
    }

    #[test]
    fn errors() {
        assert!(p(&["-bogus", "start"]).unwrap_err().0.contains("not defined: -bogus"));
        assert!(p(&["-namespace"]).unwrap_err().0.contains("needs an argument"));
        assert!(
            p(&["-namespace", "n", "start"])
                .unwrap_err()
                .0
                .contains("-id is required")
        );
        assert!(
            p(&["-namespace", "n", "-id", "c", "launch"])
                .unwrap_err()
                .0
                .contains("unknown action")
        );
    }
}
