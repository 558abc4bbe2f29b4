//! A corpus of hostile layers through the real unpacker (`unpack_layer`), each into a scratch
//! layer directory beside an `outside/` directory holding a `target` file: every entry is either
//! refused with the error it deserves or kept inside the layer directory, and `outside/` is never
//! touched. Needs root (ownership, device nodes, `trusted.*` xattrs); as another user NOT TESTED.

use std::io::Write as _;
use std::path::Path;

use berth_image::Digest;
use berth_image::manifest::Compression;
use berth_image::unpack::unpack_layer;

/// One tar entry, written with raw names so that paths a well-behaved writer refuses get through.
enum E<'a> {
    File(&'a str, &'a [u8]),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
    Char(&'a str, u32, u32),
    Block(&'a str, u32, u32),
    Fifo(&'a str),
    /// A file with PAX records before it.
    Pax(&'a str, Vec<(&'a str, Vec<u8>)>, &'a [u8]),
    /// A header claiming `size` bytes that never follow.
    Truncated(&'a str, u64),
}

fn header(name: &str, kind: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h.set_size(size);
    let raw = name.as_bytes();
    h.as_old_mut().name[..raw.len()].copy_from_slice(raw);
    h
}

fn link_header(name: &str, kind: tar::EntryType, target: &str) -> tar::Header {
    let mut h = header(name, kind, 0);
    let raw = target.as_bytes();
    h.as_old_mut().linkname[..raw.len()].copy_from_slice(raw);
    h
}

fn tar_of(entries: &[E<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut put = |mut h: tar::Header, data: &[u8]| {
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    };
    for e in entries {
        match e {
            E::File(n, d) => put(header(n, tar::EntryType::Regular, d.len() as u64), d),
            E::Dir(n) => put(header(n, tar::EntryType::Directory, 0), b""),
            E::Symlink(n, t) => put(link_header(n, tar::EntryType::Symlink, t), b""),
            E::Hardlink(n, t) => put(link_header(n, tar::EntryType::Link, t), b""),
            E::Fifo(n) => put(header(n, tar::EntryType::Fifo, 0), b""),
            E::Char(n, ma, mi) | E::Block(n, ma, mi) => {
                let kind = if matches!(e, E::Char(..)) {
                    tar::EntryType::Char
                } else {
                    tar::EntryType::Block
                };
                let mut h = header(n, kind, 0);
                h.set_device_major(*ma).unwrap();
                h.set_device_minor(*mi).unwrap();
                put(h, b"")
            }
            E::Pax(n, records, d) => {
                let mut body = Vec::new();
                for (k, v) in records {
                    let rest = format!(" {k}=").len() + v.len() + 1;
                    let mut len = rest + 1;
                    while len.to_string().len() + rest != len {
                        len = len.to_string().len() + rest;
                    }
                    body.extend_from_slice(format!("{len} {k}=").as_bytes());
                    body.extend_from_slice(v);
                    body.push(b'\n');
                }
                put(header("PaxHeader", tar::EntryType::XHeader, body.len() as u64), &body);
                put(header(n, tar::EntryType::Regular, d.len() as u64), d)
            }
            E::Truncated(n, size) => {
                let mut h = header(n, tar::EntryType::Regular, *size);
                h.set_cksum();
                out.extend_from_slice(h.as_bytes());
                out.extend_from_slice(b"only this much");
                return out; // no end-of-archive: the stream just stops
            }
        }
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

fn compress(tar: &[u8], c: Compression) -> Vec<u8> {
    match c {
        Compression::None => tar.to_vec(),
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(tar).unwrap();
            e.finish().unwrap()
        }
        Compression::Zstd => zstd::encode_all(tar, 1).unwrap(),
    }
}

/// What a layer must come to.
enum Expect {
    /// Refused, the error naming this.
    Refused(&'static str),
    /// Unpacked; then this check on the layer directory.
    Kept(fn(&Path)),
}

struct Case {
    name: &'static str,
    blob: Vec<u8>,
    compression: Compression,
    /// The digests the manifest and config would claim (right unless the case is about them).
    blob_digest: Digest,
    diff_id: Digest,
    expect: Expect,
}

fn case(name: &'static str, entries: &[E<'_>], expect: Expect) -> Case {
    let tar = tar_of(entries);
    let blob = compress(&tar, Compression::Gzip);
    Case {
        name,
        blob_digest: Digest::of(&blob),
        diff_id: Digest::of(&tar),
        blob,
        compression: Compression::Gzip,
        expect,
    }
}

fn corpus() -> Vec<Case> {
    use Expect::{Kept, Refused};
    let mut v = vec![
        case("dot-dot path", &[E::File("../evil", b"x")], Refused("'..'")),
        case(
            "dot-dot inside a path",
            &[E::File("a/../../evil", b"x")],
            Refused("'..'"),
        ),
        case("dot then dot-dot", &[E::File("./../evil", b"x")], Refused("'..'")),
        case(
            "absolute path",
            &[E::File("/tmp/berth-hostile-evil", b"x")],
            Refused("absolute"),
        ),
        case("dot-dot directory", &[E::Dir("../evil-dir/")], Refused("'..'")),
        case(
            "file through a symlink to /",
            &[E::Symlink("root", "/"), E::File("root/tmp/berth-hostile-evil", b"x")],
            Refused("symlink"),
        ),
        case(
            "file through a symlink to outside",
            &[E::Symlink("out", "../outside"), E::File("out/evil", b"x")],
            Refused("symlink"),
        ),
        case(
            "file through a chain of symlinks",
            &[
                E::Symlink("a", "b"),
                E::Symlink("b", "../outside"),
                E::File("a/evil", b"x"),
            ],
            Refused("symlink"),
        ),
        case(
            "directory through a symlink",
            &[E::Symlink("out", "../outside"), E::Dir("out/sub/")],
            Refused("symlink"),
        ),
        case(
            "hardlink to outside",
            &[E::Hardlink("h", "../outside/target")],
            Refused("'..'"),
        ),
        case(
            "hardlink to an absolute path",
            &[E::Hardlink("h", "/etc/passwd")],
            Refused("absolute"),
        ),
        case(
            "hardlink through a symlink",
            &[E::Symlink("etc", "/etc"), E::Hardlink("h", "etc/passwd")],
            Refused("outside the layer"),
        ),
        case(
            "hardlink to nothing",
            &[E::Hardlink("h", "missing")],
            Refused("not in this layer"),
        ),
        case(
            "hardlink to a directory",
            &[E::Dir("d/"), E::Hardlink("h", "d")],
            Refused("directory"),
        ),
        case(
            "whiteout aimed outside",
            &[E::File("../.wh.target", b"")],
            Refused("'..'"),
        ),
        case(
            "whiteout of the parent",
            &[E::File("a/.wh..", b"")],
            Refused("whiteout"),
        ),
        case(
            "whiteout through a symlink",
            &[E::Symlink("out", "../outside"), E::File("out/.wh.target", b"")],
            Refused("symlink"),
        ),
        case(
            "opaque marker through a symlink",
            &[E::Symlink("out", "../outside"), E::File("out/.wh..wh..opq", b"")],
            Refused("symlink"),
        ),
        case(
            "file replacing a symlink to outside",
            &[E::Symlink("s", "../outside/target"), E::File("s", b"inside")],
            Kept(|l| assert_eq!(std::fs::read(l.join("s")).unwrap(), b"inside")),
        ),
        case(
            "character device",
            &[E::Char("dev-null", 1, 3)],
            Kept(|l| {
                use std::os::unix::fs::FileTypeExt as _;
                assert!(
                    std::fs::symlink_metadata(l.join("dev-null"))
                        .unwrap()
                        .file_type()
                        .is_char_device()
                )
            }),
        ),
        case(
            "block device",
            &[E::Block("disk", 7, 0)],
            Kept(|l| {
                use std::os::unix::fs::FileTypeExt as _;
                assert!(
                    std::fs::symlink_metadata(l.join("disk"))
                        .unwrap()
                        .file_type()
                        .is_block_device()
                )
            }),
        ),
        case(
            "fifo",
            &[E::Fifo("pipe")],
            Kept(|l| {
                use std::os::unix::fs::FileTypeExt as _;
                assert!(std::fs::symlink_metadata(l.join("pipe")).unwrap().file_type().is_fifo())
            }),
        ),
        case(
            "overlay xattrs from the layer",
            &[E::Pax(
                "f",
                vec![
                    ("SCHILY.xattr.trusted.overlay.opaque", b"y".to_vec()),
                    ("SCHILY.xattr.trusted.overlay.redirect", b"/etc".to_vec()),
                ],
                b"data",
            )],
            Kept(|l| {
                assert_eq!(xattr_of(&l.join("f"), "trusted.overlay.opaque"), None);
                assert_eq!(xattr_of(&l.join("f"), "trusted.overlay.redirect"), None);
            }),
        ),
        case(
            "security xattr",
            &[E::Pax(
                "cap",
                vec![("SCHILY.xattr.security.berth-test", b"v".to_vec())],
                b"",
            )],
            Kept(|l| assert!(l.join("cap").is_file())),
        ),
        case(
            "a 64 KiB path",
            &[E::Pax("p", vec![("path", "a/".repeat(32 * 1024).into_bytes())], b"")],
            Refused("layer"),
        ),
        case(
            "a size that never comes",
            &[E::Truncated("big", 1 << 40)],
            Refused("layer"),
        ),
        case(
            "a dot-dot path in a PAX record",
            &[E::Pax("fine", vec![("path", b"../evil".to_vec())], b"x")],
            Refused("'..'"),
        ),
        case(
            "a dot-dot link target in a PAX record",
            &[E::Pax("h", vec![("linkpath", b"../outside/target".to_vec())], b"")],
            Kept(|l| assert!(l.join("h").is_file())),
        ),
        case(
            "an empty layer",
            &[],
            Kept(|l| assert_eq!(std::fs::read_dir(l).unwrap().count(), 0)),
        ),
    ];
    let good = tar_of(&[E::File("f", b"hello")]);
    let gz = compress(&good, Compression::Gzip);
    let zst = compress(&tar_of(&[E::File("f", &[7u8; 100_000])]), Compression::Zstd);
    let raw = |name, blob: Vec<u8>, compression, diff_id: Digest, expect| Case {
        name,
        blob_digest: Digest::of(&blob),
        blob,
        compression,
        diff_id,
        expect,
    };
    v.push(raw(
        "truncated gzip",
        gz[..gz.len() / 2].to_vec(),
        Compression::Gzip,
        Digest::of(&good),
        Refused("layer"),
    ));
    v.push(raw(
        "truncated zstd",
        zst[..zst.len() / 2].to_vec(),
        Compression::Zstd,
        Digest::of(b"whatever"),
        Refused("layer"),
    ));
    v.push(raw(
        "wrong diff_id",
        gz.clone(),
        Compression::Gzip,
        Digest::of(b"other"),
        Refused("diff_id"),
    ));
    v.push(Case {
        name: "wrong blob digest",
        blob_digest: Digest::of(b"other"),
        blob: gz.clone(),
        compression: Compression::Gzip,
        diff_id: Digest::of(&good),
        expect: Refused("digest"),
    });
    v.push(raw(
        "not gzip at all",
        b"this is not a gzip stream".to_vec(),
        Compression::Gzip,
        Digest::of(b""),
        Refused("layer"),
    ));
    v.push(raw(
        "not a tar at all",
        vec![0xffu8; 4096],
        Compression::None,
        Digest::of(&[0xffu8; 4096]),
        Refused("layer"),
    ));
    v
}

fn xattr_of(p: &Path, name: &str) -> Option<Vec<u8>> {
    xattr::get(p, name).ok().flatten()
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn hostile_layers_are_refused_or_kept_inside() {
    if !berth_test_report::root_or_not_tested(
        "image::hostile_layers::hostile_layers_are_refused_or_kept_inside",
        "ownership, device nodes and trusted.* xattrs",
    ) {
        return;
    }
    let cases = corpus();
    assert!(cases.len() >= 30, "the corpus has {} layers", cases.len());
    let _ = std::fs::remove_file("/tmp/berth-hostile-evil");
    for c in &cases {
        let d = tempfile::tempdir().unwrap();
        let (layer, outside) = (d.path().join("layer"), d.path().join("outside"));
        std::fs::create_dir_all(&layer).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("target"), b"untouched").unwrap();
        let blob = d.path().join("blob");
        std::fs::write(&blob, &c.blob).unwrap();
        let got = unpack_layer(&blob, c.compression, &c.blob_digest, &c.diff_id, &layer);
        match (&c.expect, got) {
            (Expect::Refused(why), Err(e)) => {
                assert!(
                    e.to_string().contains(why),
                    "{}: refused, but for {e} (expected {why:?})",
                    c.name
                )
            }
            (Expect::Refused(why), Ok(_)) => panic!("{}: unpacked, but should be refused ({why})", c.name),
            (Expect::Kept(check), Ok(_)) => check(&layer),
            (Expect::Kept(_), Err(e)) => panic!("{}: refused ({e}), but should be kept", c.name),
        }
        assert_eq!(listing(&outside), ["target"], "{}: wrote beside the layer", c.name);
        assert_eq!(
            std::fs::read(outside.join("target")).unwrap(),
            b"untouched",
            "{}",
            c.name
        );
        assert_eq!(listing(d.path()), ["blob", "layer", "outside"], "{}", c.name);
        assert!(
            !Path::new("/tmp/berth-hostile-evil").exists(),
            "{}: wrote to /tmp",
            c.name
        );
    }
    eprintln!("hostile layers: {} refused or kept inside", cases.len());
}
