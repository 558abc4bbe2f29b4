//! berth's image record → the CRI `Image` message.

use berth_proto::cri;

/// The CRI view of an image: ID, names, size, and the user it runs as (numeric `uid` or `username`).
pub fn to_cri(img: &berth_image::Image) -> cri::Image {
    let user = img
        .config
        .config
        .as_ref()
        .and_then(|c| c.user.clone())
        .unwrap_or_default();
    let (uid, username) = split_user(&user);
    cri::Image {
        id: img.id.to_string(),
        repo_tags: img.repo_tags.clone(),
        repo_digests: img.repo_digests.clone(),
        size: img.size,
        uid: uid.map(|value| cri::Int64Value { value }),
        username,
        spec: Some(cri::ImageSpec {
            image: img.id.to_string(),
            ..Default::default()
        }),
        pinned: img.pinned,
    }
}

/// `USER` of an image config: `uid`, `name`, `uid:gid` or `name:group`. Only the user part matters
/// here; a numeric one is reported as uid, a name as username (as containerd does).
pub fn split_user(user: &str) -> (Option<i64>, String) {
    let u = user.split(':').next().unwrap_or("");
    if u.is_empty() {
        return (None, String::new());
    }
    match u.parse::<i64>() {
        Ok(n) => (Some(n), String::new()),
        Err(_) => (None, u.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users() {
        assert_eq!(split_user(""), (None, String::new()));
        assert_eq!(split_user("0"), (Some(0), String::new()));
        assert_eq!(split_user("1000:1000"), (Some(1000), String::new()));
        assert_eq!(split_user("berth"), (None, "berth".into()));
        assert_eq!(split_user("berth:staff"), (None, "berth".into()));
    }
}
