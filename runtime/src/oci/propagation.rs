//! Mount propagation of host paths, read from `/proc/self/mountinfo`: a CRI mount that asks for
//! `Bidirectional` needs its source on a shared mount, and `HostToContainer` on a shared or slave
//! one, or the propagation asked for cannot happen (containerd refuses such mounts the same way).

use std::path::Path;

/// How the mount a path lives on propagates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Propagation {
    /// In a peer group (`shared:N`).
    pub shared: bool,
    /// Receives from a master (`master:N`).
    pub slave: bool,
}

/// The propagation of the mount `path` lives on (the last mount over the longest matching mount
/// point), from a mountinfo text. `path` must be absolute and free of symlinks.
pub fn of(mountinfo: &str, path: &Path) -> Option<Propagation> {
    let mut best: Option<(usize, Propagation)> = None;
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        if sep < 6 {
            continue;
        }
        let point = unescape(fields[4]);
        if !path.starts_with(&point) {
            continue;
        }
        let depth = Path::new(&point).components().count();
        let optional = &fields[6..sep];
        let p = Propagation {
            shared: optional.iter().any(|f| f.starts_with("shared:")),
            slave: optional.iter().any(|f| f.starts_with("master:")),
        };
        // Later lines with the same mount point are mounted over earlier ones.
        if best.is_none_or(|(d, _)| depth >= d) {
            best = Some((depth, p));
        }
    }
    best.map(|(_, p)| p)
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && let Some(v) = b
                .get(i + 1..i + 4)
                .and_then(|o| std::str::from_utf8(o).ok())
                .and_then(|o| u8::from_str_radix(o, 8).ok())
        {
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
40 27 0:50 / /mnt/shared rw,relatime shared:7 - tmpfs tmpfs rw
41 40 0:51 / /mnt/shared/slave\\040dir rw,relatime master:7 - tmpfs tmpfs rw
42 27 0:52 / /mnt/both rw shared:9 master:3 - tmpfs tmpfs rw
43 27 0:53 / /mnt/shared rw,relatime - tmpfs tmpfs rw
";

    #[test]
    fn finds_the_mount_a_path_lives_on() {
        let private = Propagation {
            shared: false,
            slave: false,
        };
        assert_eq!(of(INFO, Path::new("/var/lib/x")), Some(private));
        // /mnt/shared was mounted over by a private mount (line 43).
        assert_eq!(of(INFO, Path::new("/mnt/shared/a")), Some(private));
        assert_eq!(
            of(INFO, Path::new("/mnt/shared/slave dir/x")),
            Some(Propagation {
                shared: false,
                slave: true
            })
        );
        assert_eq!(
            of(INFO, Path::new("/mnt/both")),
            Some(Propagation {
                shared: true,
                slave: true
            })
        );
        assert_eq!(
            of(INFO, Path::new("/mnt/bothx")),
            Some(private),
            "a prefix of a name is not a parent"
        );
        assert_eq!(of("", Path::new("/")), None);
    }
}
