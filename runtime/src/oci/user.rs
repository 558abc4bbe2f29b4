//! Resolving the user a container runs as, from the CRI security context and the image, through the
//! image's own `/etc/passwd` and `/etc/group` (read inside the rootfs, never following a symlink out).

use std::path::Path;

use crate::error::{Error, Result};

pub use crate::store::container::User;

/// Reads `rel` (like `etc/passwd`) inside `rootfs`, refusing to follow symlinks anywhere on the way:
/// an image must not make berth read a host file. Missing is `None`.
fn read_in_rootfs(rootfs: &Path, rel: &str) -> Option<String> {
    let mut p = rootfs.to_path_buf();
    for c in rel.split('/') {
        p.push(c);
        let m = std::fs::symlink_metadata(&p).ok()?;
        if m.file_type().is_symlink() {
            return None;
        }
    }
    std::fs::read_to_string(&p).ok()
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
}

fn passwd(rootfs: &Path) -> Vec<PasswdEntry> {
    read_in_rootfs(rootfs, "etc/passwd")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some(PasswdEntry {
                name: f.first()?.to_string(),
                uid: f.get(2)?.parse().ok()?,
                gid: f.get(3)?.parse().ok()?,
            })
        })
        .collect()
}

/// (name, gid, members) of each group.
fn groups(rootfs: &Path) -> Vec<(String, u32, Vec<String>)> {
    read_in_rootfs(rootfs, "etc/group")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some((
                f.first()?.to_string(),
                f.get(2)?.parse().ok()?,
                f.get(3)
                    .map(|m| m.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect())
                    .unwrap_or_default(),
            ))
        })
        .collect()
}

/// Resolves the process user. `run_as_user`/`run_as_username`/`run_as_group` from the security context
/// win over the image's `USER` (`uid`, `name`, `uid:gid`, `name:group`). The groups the image's
/// /etc/group lists the user in (unless `strict`: CRI's `supplemental_groups_policy: Strict`), and
/// `supplemental`, are added, as containerd does.
pub fn resolve(
    rootfs: &Path,
    image_user: &str,
    run_as_user: Option<i64>,
    run_as_username: &str,
    run_as_group: Option<i64>,
    supplemental: &[i64],
    strict: bool,
) -> Result<User> {
    if run_as_group.is_some() && run_as_user.is_none() && run_as_username.is_empty() {
        // The CRI: run_as_group "should only be specified when run_as_user or run_as_username is
        // specified; otherwise, the runtime MUST error".
        return Err(Error::InvalidArgument(
            "run_as_group is set without run_as_user or run_as_username".into(),
        ));
    }
    let pw = passwd(rootfs);
    let (user_part, group_part) = match (run_as_user, run_as_username.is_empty()) {
        (Some(uid), _) => (uid.to_string(), None),
        (None, false) => (run_as_username.to_string(), None),
        (None, true) => match image_user.split_once(':') {
            Some((u, g)) => (u.to_string(), Some(g.to_string())),
            None => (image_user.to_string(), None),
        },
    };
    let (uid, mut gid, name) = if user_part.is_empty() {
        (0, 0, Some("root".to_string()))
    } else if let Ok(uid) = user_part.parse::<u32>() {
        let e = pw.iter().find(|e| e.uid == uid);
        (uid, e.map(|e| e.gid).unwrap_or(0), e.map(|e| e.name.clone()))
    } else {
        let e = pw.iter().find(|e| e.name == user_part).ok_or_else(|| {
            Error::InvalidArgument(format!("user {user_part:?} not found in the image's /etc/passwd"))
        })?;
        (e.uid, e.gid, Some(e.name.clone()))
    };
    let gr = groups(rootfs);
    if let Some(g) = group_part.filter(|g| !g.is_empty()) {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => gr
                .iter()
                .find(|(n, _, _)| *n == g)
                .map(|(_, id, _)| *id)
                .ok_or_else(|| Error::InvalidArgument(format!("group {g:?} not found in the image's /etc/group")))?,
        };
    }
    if let Some(g) = run_as_group {
        gid = u32::try_from(g).map_err(|_| Error::InvalidArgument(format!("run_as_group {g} out of range")))?;
    }
    let mut additional = Vec::new();
    if let Some(name) = name.as_ref().filter(|_| !strict) {
        for (_, id, members) in &gr {
            if members.contains(name) && *id != gid && !additional.contains(id) {
                additional.push(*id);
            }
        }
    }
    for g in supplemental {
        let g =
            u32::try_from(*g).map_err(|_| Error::InvalidArgument(format!("supplemental group {g} out of range")))?;
        if g != gid && !additional.contains(&g) {
            additional.push(g);
        }
    }
    Ok(User {
        uid,
        gid,
        additional_gids: additional,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rootfs() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("etc")).unwrap();
        std::fs::write(
            d.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nberth:x:1000:1000::/home/berth:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("etc/group"),
            "root:x:0:\nberth:x:1000:\naudio:x:29:berth\nstaff:x:50:\n",
        )
        .unwrap();
        d
    }

    #[test]
    fn forms() {
        let r = rootfs();
        let p = r.path();
        assert_eq!(resolve(p, "", None, "", None, &[], false).unwrap(), User::default());
        let berth = User {
            uid: 1000,
            gid: 1000,
            additional_gids: vec![29],
        };
        assert_eq!(resolve(p, "berth", None, "", None, &[], false).unwrap(), berth);
        assert_eq!(resolve(p, "1000", None, "", None, &[], false).unwrap(), berth);
        assert_eq!(resolve(p, "1000:staff", None, "", None, &[], false).unwrap().gid, 50);
        assert_eq!(
            resolve(p, "", Some(1000), "", Some(7), &[8], false).unwrap(),
            User {
                uid: 1000,
                gid: 7,
                additional_gids: vec![29, 8]
            }
        );
        assert_eq!(resolve(p, "", None, "berth", None, &[], false).unwrap(), berth);
        assert_eq!(
            resolve(p, "4242", None, "", None, &[], false).unwrap(),
            User {
                uid: 4242,
                gid: 0,
                additional_gids: vec![]
            }
        );
        assert_eq!(
            resolve(p, "", Some(1000), "", None, &[8], true).unwrap(),
            User {
                uid: 1000,
                gid: 1000,
                additional_gids: vec![8]
            },
            "Strict: no groups from the image's /etc/group"
        );
        assert!(resolve(p, "nobody-here", None, "", None, &[], false).is_err());
        assert!(resolve(p, "0:nogroup", None, "", None, &[], false).is_err());
        let e = resolve(p, "berth", None, "", Some(7), &[], false).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "a group without a user: {e:?}");
        assert_eq!(resolve(p, "", None, "berth", Some(7), &[], false).unwrap().gid, 7);
    }

    #[test]
    fn symlinked_passwd_is_not_followed() {
        let r = rootfs();
        std::fs::remove_file(r.path().join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", r.path().join("etc/passwd")).unwrap();
        assert!(
            resolve(r.path(), "root", None, "", None, &[], false).is_err(),
            "host /etc/passwd must not be read"
        );
    }
}
