//! AppArmor: a profile is passed to the OCI runtime only where the kernel has AppArmor. Elsewhere a
//! request for a specific (Localhost) profile is refused, not silently dropped: the container would
//! run less confined than asked. `RuntimeDefault` and `Unconfined` need nothing there.

use berth_proto::cri::SecurityProfile;
use berth_proto::cri::security_profile::ProfileType;

use crate::error::{Error, Result};

/// Profiles `RuntimeDefault` means, as the other runtimes load them: containerd's and Docker's.
pub const DEFAULT_PROFILES: &[&str] = &["cri-containerd.apparmor.d", "docker-default"];

/// Whether the running kernel has AppArmor enabled.
pub fn host_supports() -> bool {
    std::fs::read_to_string("/sys/module/apparmor/parameters/enabled").is_ok_and(|s| s.trim() == "Y")
}

/// The `process.apparmorProfile` for a request (structured field first, then the deprecated string).
/// `RuntimeDefault` uses the first of `defaults` that is loaded, when AppArmor is there (berth does
/// not load a profile of its own: with none of them loaded, the container runs without one, and
/// berthd says so in its log). A Localhost profile must be loaded (`is_loaded`): runc would otherwise
/// fail only at start, or run the container unconfined.
pub fn profile(
    field: Option<&SecurityProfile>,
    legacy: &str,
    privileged: bool,
    supported: bool,
    defaults: &[&str],
    is_loaded: &dyn Fn(&str) -> bool,
) -> Result<Option<String>> {
    let wanted = match field {
        Some(p) => match ProfileType::try_from(p.profile_type) {
            Ok(ProfileType::RuntimeDefault) => Some(None),
            Ok(ProfileType::Unconfined) => None,
            Ok(ProfileType::Localhost) if !p.localhost_ref.is_empty() => {
                Some(Some(p.localhost_ref.trim_start_matches("localhost/").to_string()))
            }
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "AppArmor profile {p:?}: Localhost needs a profile name"
                )));
            }
        },
        None => match legacy {
            "" | "runtime/default" => Some(None),
            "unconfined" => None,
            s => match s.strip_prefix("localhost/") {
                Some(n) if !n.is_empty() => Some(Some(n.to_string())),
                _ => {
                    return Err(Error::InvalidArgument(format!(
                        "AppArmor profile {s:?}: expected runtime/default, unconfined or localhost/<name>"
                    )));
                }
            },
        },
    };
    match wanted {
        None => Ok(None),
        Some(Some(name)) if !supported => Err(Error::InvalidArgument(format!(
            "AppArmor profile {name:?} was asked for, but this host's kernel has no AppArmor (/sys/module/apparmor)"
        ))),
        Some(Some(name)) if !is_loaded(&name) => Err(Error::FailedPrecondition(format!(
            "AppArmor profile {name:?} is not loaded on this node (/sys/kernel/security/apparmor/profiles)"
        ))),
        Some(Some(name)) => Ok(Some(name)),
        // Privileged containers run unconfined, as containerd's do.
        Some(None) if privileged || !supported => Ok(None),
        Some(None) => {
            let found = defaults.iter().find(|d| is_loaded(d)).map(|d| d.to_string());
            static ONCE: std::sync::Once = std::sync::Once::new();
            if found.is_none() {
                ONCE.call_once(|| {
                    tracing::warn!(
                        ?defaults,
                        "AppArmor is enabled but none of these profiles is loaded: RuntimeDefault runs without one"
                    )
                });
            }
            Ok(found)
        }
    }
}

/// Whether the kernel has the AppArmor profile `name` loaded.
pub fn loaded(name: &str) -> bool {
    std::fs::read_to_string("/sys/kernel/security/apparmor/profiles")
        .is_ok_and(|s| s.lines().any(|l| l.split(' ').next() == Some(name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_apparmor() {
        let lh = SecurityProfile {
            profile_type: ProfileType::Localhost as i32,
            localhost_ref: "my-profile".into(),
        };
        let all = |_: &str| true;
        assert_eq!(profile(None, "", false, false, &["x"], &all).unwrap(), None);
        assert_eq!(profile(None, "unconfined", false, false, &["x"], &all).unwrap(), None);
        let e = profile(Some(&lh), "", false, false, &["x"], &all).unwrap_err();
        assert!(e.to_string().contains("no AppArmor"), "{e}");
        assert!(profile(None, "localhost/p", false, false, &["x"], &all).is_err());
        assert_eq!(
            profile(Some(&lh), "", false, true, &["x"], &all).unwrap().as_deref(),
            Some("my-profile")
        );
        assert!(profile(None, "bogus", false, true, &["x"], &all).is_err());
    }

    #[test]
    fn a_localhost_profile_must_be_loaded() {
        let lh = SecurityProfile {
            profile_type: ProfileType::Localhost as i32,
            localhost_ref: "localhost/not-loaded".into(),
        };
        let only_x = |n: &str| n == "x";
        let e = profile(Some(&lh), "", false, true, &["x"], &only_x).unwrap_err();
        assert!(matches!(e, Error::FailedPrecondition(_)), "{e:?}");
        assert!(profile(None, "localhost/not-loaded", false, true, &["x"], &only_x).is_err());
        assert_eq!(
            profile(None, "", false, true, &["x"], &only_x).unwrap().as_deref(),
            Some("x")
        );
    }
}
