//! AppArmor: a profile is passed to the OCI runtime only where the kernel has AppArmor. Elsewhere a
//! request for a specific (Localhost) profile is refused, not silently dropped: the container would
//! run less confined than asked. `RuntimeDefault` and `Unconfined` need nothing there.

use berth_proto::cri::SecurityProfile;
use berth_proto::cri::security_profile::ProfileType;

use crate::error::{Error, Result};

/// Whether the running kernel has AppArmor enabled.
pub fn host_supports() -> bool {
    std::fs::read_to_string("/sys/module/apparmor/parameters/enabled").is_ok_and(|s| s.trim() == "Y")
}

/// The `process.apparmorProfile` for a request (structured field first, then the deprecated string).
/// `RuntimeDefault` uses `default_profile` when AppArmor is there and that profile is loaded.
pub fn profile(
    field: Option<&SecurityProfile>,
    legacy: &str,
    privileged: bool,
    supported: bool,
    default_profile: &str,
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
        Some(Some(name)) => Ok(Some(name)),
        // Privileged containers run unconfined, as containerd's do.
        Some(None) if privileged || !supported || default_profile.is_empty() => Ok(None),
        Some(None) => Ok(loaded(default_profile).then(|| default_profile.to_string())),
    }
}

fn loaded(name: &str) -> bool {
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
        assert_eq!(profile(None, "", false, false, "x").unwrap(), None);
        assert_eq!(profile(None, "unconfined", false, false, "x").unwrap(), None);
        let e = profile(Some(&lh), "", false, false, "x").unwrap_err();
        assert!(e.to_string().contains("no AppArmor"), "{e}");
        assert!(profile(None, "localhost/p", false, false, "x").is_err());
        assert_eq!(
            profile(Some(&lh), "", false, true, "x").unwrap().as_deref(),
            Some("my-profile")
        );
        assert!(profile(None, "bogus", false, true, "x").is_err());
    }
}
