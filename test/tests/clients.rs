//! The CRI socket as clients berth did not write reach it, as root:
//! - raw HTTP/2 frames with every `:authority` form gRPC clients send over a unix socket (the socket
//!   path, the path percent-encoded, `localhost`, empty, none): each call answered, none reset;
//! - the Python `grpcio` client (PyPI, pinned in /opt/berth-test-venv by hack/install-deps.sh), with
//!   stubs generated from the CRI protos, with its own authority and with each of those forced;
//! - `crictl` 1.26.1 (whose gRPC sends the socket path as `:authority`) and 1.36.0, from
//!   ../shared/tools, through a whole pod and container lifecycle (NOT TESTED where absent).

use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use berth_test::{Daemon, registry, report_not_tested, require_root};
use serde_json::Value;

const CGROUP_PARENT: &str = "/berth-test-clients";

// ---- raw HTTP/2 -------------------------------------------------------------------------------

/// An HPACK integer with an `n`-bit prefix (RFC 7541 §5.1), first byte ORed with `flags`.
fn hpack_int(out: &mut Vec<u8>, flags: u8, n: u8, mut v: usize) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(flags | v as u8);
        return;
    }
    out.push(flags | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

/// A header as "literal without indexing, new name", no Huffman (RFC 7541 §6.2.2).
fn literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0x00);
    hpack_int(out, 0, 7, name.len());
    out.extend_from_slice(name);
    hpack_int(out, 0, 7, value.len());
    out.extend_from_slice(value);
}

fn frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, ty, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// What came back for a Version call on stream 1.
#[derive(Debug, Default)]
struct Answer {
    data: Vec<u8>,
    trailers: Vec<(String, String)>,
    reset: Option<u32>,
    goaway: bool,
}

/// One RuntimeService/Version call over a fresh connection, written frame by frame.
fn raw_version(socket: &Path, authority: Option<&[u8]>) -> Answer {
    let mut s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut block = Vec::new();
    literal(&mut block, b":method", b"POST");
    literal(&mut block, b":scheme", b"http");
    literal(&mut block, b":path", b"/runtime.v1.RuntimeService/Version");
    if let Some(a) = authority {
        literal(&mut block, b":authority", a);
    }
    literal(&mut block, b"content-type", b"application/grpc");
    literal(&mut block, b"te", b"trailers");
    // VersionRequest { version: "0.1.0" }, in a gRPC message frame.
    let msg = [0x0a, 5, b'0', b'.', b'1', b'.', b'0'];
    let mut grpc = vec![0, 0, 0, 0, msg.len() as u8];
    grpc.extend_from_slice(&msg);
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(frame(0x4, 0, 0, &[])); // SETTINGS
    out.extend(frame(0x1, 0x4, 1, &block)); // HEADERS, END_HEADERS
    out.extend(frame(0x0, 0x1, 1, &grpc)); // DATA, END_STREAM
    s.write_all(&out).unwrap();

    let mut ans = Answer::default();
    let mut dec = loona_hpack::Decoder::new();
    let mut header = [0u8; 9];
    loop {
        if s.read_exact(&mut header).is_err() {
            return ans;
        }
        let len = usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
        let (ty, flags) = (header[3], header[4]);
        let stream = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload).unwrap();
        match ty {
            0x4 if flags & 1 == 0 => s.write_all(&frame(0x4, 1, 0, &[])).unwrap(), // ACK their SETTINGS
            0x0 if stream == 1 => ans.data.extend_from_slice(&payload),
            0x1 if stream == 1 => {
                let fields = dec.decode(&payload).expect("HPACK from berthd decodes");
                let end = flags & 1 != 0;
                if end {
                    ans.trailers = fields
                        .into_iter()
                        .map(|(n, v)| (String::from_utf8_lossy(&n).into(), String::from_utf8_lossy(&v).into()))
                        .collect();
                    return ans;
                }
            }
            0x3 if stream == 1 => {
                ans.reset = Some(u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]));
                return ans;
            }
            0x7 => {
                ans.goaway = true;
                return ans;
            }
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_authority_form_is_answered_over_raw_http2() {
    require_root!();
    let d = Daemon::start().await.unwrap();
    let socket = d.socket().to_path_buf();
    let path = socket.display().to_string();
    let encoded = path.replace('/', "%2F");
    let forms: Vec<(&str, Option<Vec<u8>>)> = vec![
        (
            "the socket path (grpc-go before 1.5x, crictl 1.26)",
            Some(path.clone().into_bytes()),
        ),
        ("the socket path percent-encoded", Some(encoded.into_bytes())),
        ("localhost (current grpc-go)", Some(b"localhost".to_vec())),
        ("empty", Some(Vec::new())),
        ("none at all", None),
        ("a long path", Some(format!("/{}", "x".repeat(300)).into_bytes())),
    ];
    for (what, authority) in forms {
        let s = socket.clone();
        let a = tokio::task::spawn_blocking(move || raw_version(&s, authority.as_deref()))
            .await
            .unwrap();
        assert_eq!(a.reset, None, ":authority {what}: the stream was reset ({a:?})");
        assert!(!a.goaway, ":authority {what}: the connection was closed ({a:?})");
        assert!(
            a.trailers.iter().any(|(n, v)| n == "grpc-status" && v == "0"),
            ":authority {what}: grpc-status 0 in the trailers: {a:?}"
        );
        assert!(
            a.data.windows(5).any(|w| w == b"berth"),
            ":authority {what}: the VersionResponse names berth: {a:?}"
        );
    }
}

// ---- Python grpcio ----------------------------------------------------------------------------

const VENV: &str = "/opt/berth-test-venv";

/// berth's CRI protocol definition (proto/cri/v1/api.proto), which the Python client compiles too.
fn cri_proto() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../proto/cri/v1/api.proto")
}

// ---- the protocol itself, against Kubernetes 1.36's ---------------------------------------------

/// The `runtime.v1` file descriptor a Go program built with cri-api registers: protoc-gen-go embeds
/// it, serialized, in the binary. It starts with its file name and then `package runtime.v1`.
fn embedded_cri_descriptor(binary: &[u8]) -> Option<prost_types::FileDescriptorProto> {
    use prost::Message as _;
    let package = b"\x12\x0aruntime.v1";
    let at = binary.windows(package.len()).position(|w| w == package)?;
    // Back up over `0x0a <len> <name>`: the name ends where the package begins.
    let start = (2..128)
        .map(|n| at - n)
        .find(|&s| binary[s] == 0x0a && binary[s + 1] as usize == at - s - 2)?;
    // The descriptor runs until the first byte that cannot continue a FileDescriptorProto: decode
    // ever longer prefixes field by field (a top-level field is at most a few hundred KiB).
    let mut end = start;
    let mut buf = &binary[start..];
    while !buf.is_empty() {
        let before = buf.len();
        let Ok((tag, wire)) = prost::encoding::decode_key(&mut buf) else {
            break;
        };
        if !(1..=14).contains(&tag) {
            break;
        }
        if prost::encoding::skip_field(wire, tag, &mut buf, prost::encoding::DecodeContext::default()).is_err() {
            break;
        }
        end += before - buf.len();
    }
    prost_types::FileDescriptorProto::decode(&binary[start..end]).ok()
}

/// Every wire-relevant fact of a descriptor, one line each: services' methods and their streaming,
/// messages' fields (number, label, type, type name), nested types, enums' values.
fn wire_facts(f: &prost_types::FileDescriptorProto) -> std::collections::BTreeSet<String> {
    fn message(out: &mut std::collections::BTreeSet<String>, scope: &str, m: &prost_types::DescriptorProto) {
        let name = format!("{scope}{}", m.name());
        out.insert(format!("message {name}"));
        for f in &m.field {
            out.insert(format!(
                "{name}.{} = {} {:?} {:?} {} optional={}",
                f.name(),
                f.number(),
                f.label(),
                f.r#type(),
                f.type_name(),
                f.proto3_optional()
            ));
        }
        for e in &m.enum_type {
            enumeration(out, &format!("{name}."), e);
        }
        for n in &m.nested_type {
            message(out, &format!("{name}."), n);
        }
    }
    fn enumeration(out: &mut std::collections::BTreeSet<String>, scope: &str, e: &prost_types::EnumDescriptorProto) {
        for v in &e.value {
            out.insert(format!("enum {scope}{}.{} = {}", e.name(), v.name(), v.number()));
        }
    }
    let mut out = std::collections::BTreeSet::new();
    out.insert(format!("package {}", f.package()));
    for s in &f.service {
        for m in &s.method {
            out.insert(format!(
                "rpc {}.{}({}) returns ({}) client_streaming={} server_streaming={}",
                s.name(),
                m.name(),
                m.input_type(),
                m.output_type(),
                m.client_streaming(),
                m.server_streaming()
            ));
        }
    }
    for e in &f.enum_type {
        enumeration(&mut out, "", e);
    }
    for m in &f.message_type {
        message(&mut out, "", m);
    }
    out
}

/// berth's api.proto, compiled, against the descriptor crictl 1.36.0 was built with (cri-api v0.36):
/// every service, method, message, field number and type, enum value the same.
#[test]
fn cri_protocol_is_kubernetes_1_36s() {
    use prost::Message as _;
    let Some(crictl) = tool("crictl-1.36.0") else {
        report_not_tested(
            "clients::cri_protocol_is_kubernetes_1_36s",
            "../shared/tools/crictl-1.36.0 is not there (its embedded descriptor is the reference)",
        );
        return;
    };
    let theirs = embedded_cri_descriptor(&std::fs::read(&crictl).unwrap())
        .expect("crictl-1.36.0 embeds the runtime.v1 descriptor");
    let set = prost_types::FileDescriptorSet::decode(berth_proto::cri::FILE_DESCRIPTOR_SET).unwrap();
    let ours = set
        .file
        .iter()
        .find(|f| f.package() == "runtime.v1")
        .expect("runtime.v1 in berth's set");
    let (theirs, ours) = (wire_facts(&theirs), wire_facts(ours));
    assert!(theirs.len() > 800, "a whole CRI: {} facts", theirs.len());
    let missing: Vec<_> = theirs.difference(&ours).collect();
    let extra: Vec<_> = ours.difference(&theirs).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "berth's CRI differs from Kubernetes 1.36's.\nonly in 1.36: {missing:#?}\nonly in berth: {extra:#?}"
    );
    for rpc in ["UpdatePodSandboxResources", "StreamContainers", "StreamImages"] {
        assert!(ours.iter().any(|f| f.contains(&format!(".{rpc}("))), "{rpc}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_client_is_answered() {
    require_root!();
    let py = Path::new(VENV).join("bin/python3");
    let ok = Command::new(&py)
        .args(["-c", "import grpc, grpc_tools.protoc"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "grpcio is not installed in {VENV}: run hack/install-deps.sh as root (it pins grpcio and grpcio-tools there)"
    );
    let proto = cri_proto();
    let d = Daemon::start().await.unwrap();
    let socket = d.socket().display().to_string();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../hack/interop/cri_grpc.py");
    for authority in [None, Some(socket.as_str()), Some("localhost"), Some("")] {
        let mut cmd = Command::new(&py);
        cmd.arg(&script).arg(&socket).arg(&proto);
        if let Some(a) = authority {
            cmd.arg(format!("--authority={a}"));
        }
        let out = tokio::task::spawn_blocking(move || cmd.output())
            .await
            .unwrap()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let v: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "cri_grpc.py ({authority:?}) printed no JSON ({e}): {stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        println!("grpcio, authority {authority:?}: {v}");
        assert_eq!(v["version"]["runtime_name"], "berth", "authority {authority:?}: {v}");
        assert_eq!(
            v["version"]["runtime_api_version"], "v1",
            "authority {authority:?}: {v}"
        );
        assert_eq!(
            v["image_fs_info"]["image_filesystems"], 1,
            "authority {authority:?}: {v}"
        );
        assert_eq!(v["list_pod_sandbox"]["items"], 0, "authority {authority:?}: {v}");
    }
}

// ---- crictl -----------------------------------------------------------------------------------

fn tool(name: &str) -> Option<PathBuf> {
    let p = std::env::var_os("BERTH_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/tools"))
        .join(name);
    p.is_file().then_some(p)
}

/// Runs crictl against the daemon; returns stdout, failing the test (with stderr) on a non-zero exit.
async fn crictl(bin: &Path, socket: &Path, args: &[&str]) -> String {
    let ep = format!("unix://{}", socket.display());
    let mut cmd = Command::new(bin);
    cmd.args(["--runtime-endpoint", &ep, "--image-endpoint", &ep, "--timeout", "60s"])
        .args(args)
        .env("HOME", "/nonexistent");
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{} {args:?} failed ({}): {stdout}\n{}",
        bin.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crictl_drives_a_whole_pod_lifecycle() {
    require_root!();
    registry::require().await;
    let image = registry::image("busybox:latest");
    for name in ["crictl-1.26.1", "crictl-1.36.0"] {
        let Some(bin) = tool(name) else {
            report_not_tested(
                &format!("clients::crictl_drives_a_whole_pod_lifecycle ({name})"),
                "../shared/tools has no such binary",
            );
            continue;
        };
        let d = Daemon::start().await.unwrap();
        let sock = d.socket().to_path_buf();
        let c = |args: &'static [&'static str]| crictl(&bin, &sock, args);
        let v = c(&["version"]).await;
        assert!(
            v.contains("RuntimeName:  berth") && v.contains("RuntimeApiVersion:  v1"),
            "{name}: {v}"
        );
        let info: Value = serde_json::from_str(&c(&["info", "-o", "json"]).await).unwrap();
        assert_eq!(info["status"]["conditions"][0]["status"], true, "{name}: {info}");

        let sockp = sock.clone();
        let pulled = crictl(&bin, &sockp, &["pull", &image]).await;
        assert!(pulled.contains("sha256:"), "{name}: {pulled}");
        let images = c(&["images", "-o", "json"]).await;
        assert!(images.contains("berth/busybox"), "{name}: {images}");

        let dir = d.dir.path();
        let uid = format!("uid-{name}");
        let pod = serde_json::json!({
            "metadata": {"name": format!("pod-{}", name.replace('.', "-")), "namespace": "clients", "uid": uid},
            "log_directory": dir.join("logs"),
            "linux": {"cgroup_parent": CGROUP_PARENT},
        });
        let ctr = serde_json::json!({
            "metadata": {"name": "shell"},
            "image": {"image": image},
            "command": ["sh", "-c", "echo started-by-crictl; exec sleep 1000"],
            "log_path": "shell.log",
            "linux": {},
        });
        let (pod_json, ctr_json) = (dir.join("pod.json"), dir.join("ctr.json"));
        std::fs::write(&pod_json, pod.to_string()).unwrap();
        std::fs::write(&ctr_json, ctr.to_string()).unwrap();
        let (pj, cj) = (pod_json.display().to_string(), ctr_json.display().to_string());
        let pod_id = crictl(&bin, &sock, &["runp", &pj]).await.trim().to_string();
        let ctr_id = crictl(&bin, &sock, &["create", &pod_id, &cj, &pj])
            .await
            .trim()
            .to_string();
        crictl(&bin, &sock, &["start", &ctr_id]).await;
        let out = crictl(&bin, &sock, &["exec", "-s", &ctr_id, "echo", "exec-ok"]).await;
        assert_eq!(out.trim(), "exec-ok", "{name}");
        let mut logs = String::new();
        for _ in 0..50 {
            logs = crictl(&bin, &sock, &["logs", &ctr_id]).await;
            if logs.contains("started-by-crictl") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(logs.contains("started-by-crictl"), "{name}: logs {logs:?}");
        let ps = crictl(&bin, &sock, &["ps", "-o", "json"]).await;
        let ps: Value = serde_json::from_str(&ps).unwrap();
        assert_eq!(ps["containers"][0]["state"], "CONTAINER_RUNNING", "{name}: {ps}");
        let inspect: Value = serde_json::from_str(&crictl(&bin, &sock, &["inspectp", &pod_id]).await).unwrap();
        assert_eq!(inspect["status"]["state"], "SANDBOX_READY", "{name}: {inspect}");
        // crictl rm -f removes a running container; then the pod goes.
        crictl(&bin, &sock, &["rm", "-f", &ctr_id]).await;
        crictl(&bin, &sock, &["stopp", &pod_id]).await;
        crictl(&bin, &sock, &["rmp", &pod_id]).await;
        let pods: Value = serde_json::from_str(&c(&["pods", "-o", "json"]).await).unwrap();
        assert_eq!(pods["items"].as_array().map(Vec::len), Some(0), "{name}: {pods}");
        crictl(&bin, &sock, &["rmi", &image]).await;
        drop(d);
    }
    for ctl in std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
        let _ = std::fs::remove_dir(ctl.path().join(CGROUP_PARENT.trim_start_matches('/')));
    }
}

/// A CDI device (`CDI_devices`) from a spec file of the test's own, asked for through crictl 1.36:
/// its device node (the host's /dev/null under another name, allowed in the device cgroup), its
/// environment and its mount are in the container; an unknown device fails CreateContainer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crictl_hands_over_a_cdi_device() {
    require_root!();
    registry::require().await;
    let Some(bin) = tool("crictl-1.36.0") else {
        report_not_tested(
            "clients::crictl_hands_over_a_cdi_device",
            "../shared/tools has no crictl-1.36.0",
        );
        return;
    };
    let cdi = tempfile::tempdir_in(berth_test::scratch_base()).unwrap();
    let payload = cdi.path().join("payload.txt");
    std::fs::write(&payload, "from-the-cdi-mount\n").unwrap();
    let spec = format!(
        "cdiVersion: 0.6.0\nkind: berth.test/dev\ndevices:\n  - name: null0\n    containerEdits:\n      \
         deviceNodes:\n        - path: /dev/berth-cdi-null\n          hostPath: /dev/null\n      \
         env: [BERTH_CDI=null0]\n      mounts:\n        - hostPath: {}\n          containerPath: /etc/berth-cdi.txt\n          \
         options: [ro]\n",
        payload.display()
    );
    std::fs::write(cdi.path().join("berth-test.yaml"), spec).unwrap();
    let dirs = vec![cdi.path().to_path_buf()];
    let d = Daemon::start_with(|c| c.runtime.cdi_spec_dirs = dirs).await.unwrap();
    let sock = d.socket().to_path_buf();
    let image = registry::image("busybox:latest");
    crictl(&bin, &sock, &["pull", &image]).await;
    let dir = d.dir.path();
    let pod = serde_json::json!({
        "metadata": {"name": "cdi", "namespace": "clients", "uid": "uid-cdi"},
        "log_directory": dir.join("logs"),
        "linux": {"cgroup_parent": CGROUP_PARENT},
    });
    let ctr = |name: &str, device: &str| {
        serde_json::json!({
            "metadata": {"name": name},
            "image": {"image": image},
            "command": ["sleep", "1000"],
            "log_path": format!("{name}.log"),
            "CDI_devices": [{"name": device}],
            "linux": {},
        })
    };
    let pj = dir.join("pod.json");
    std::fs::write(&pj, pod.to_string()).unwrap();
    let (good, bad) = (dir.join("good.json"), dir.join("bad.json"));
    std::fs::write(&good, ctr("good", "berth.test/dev=null0").to_string()).unwrap();
    std::fs::write(&bad, ctr("bad", "berth.test/dev=null9").to_string()).unwrap();
    let pj = pj.display().to_string();
    let pod_id = crictl(&bin, &sock, &["runp", &pj]).await.trim().to_string();
    let id = crictl(&bin, &sock, &["create", &pod_id, &good.display().to_string(), &pj])
        .await
        .trim()
        .to_string();
    crictl(&bin, &sock, &["start", &id]).await;
    let script = "test -c /dev/berth-cdi-null && echo data > /dev/berth-cdi-null && echo device-ok; \
                  echo env=$BERTH_CDI; cat /etc/berth-cdi.txt";
    let out = crictl(&bin, &sock, &["exec", "-s", &id, "sh", "-c", script]).await;
    assert_eq!(
        out.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>(),
        ["device-ok", "env=null0", "from-the-cdi-mount"],
        "{out}"
    );
    let ep = format!("unix://{}", sock.display());
    let failed = Command::new(&bin)
        .args(["--runtime-endpoint", &ep, "--image-endpoint", &ep, "--timeout", "60s"])
        .args(["create", &pod_id, &bad.display().to_string(), &pj])
        .env("HOME", "/nonexistent")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&failed.stderr);
    assert!(!failed.status.success(), "{err}");
    assert!(
        err.contains("code = NotFound") && err.contains("unresolvable CDI device") && err.contains("null9"),
        "{err}"
    );
    crictl(&bin, &sock, &["rmp", "-f", &pod_id]).await;
    drop(d);
    for ctl in std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
        let _ = std::fs::remove_dir(ctl.path().join(CGROUP_PARENT.trim_start_matches('/')));
    }
}

/// CheckpointContainer and its restore through crictl 1.36 (`crictl checkpoint --export`, then
/// `crictl create` with the archive as the image), with real runc and CRIU: the restored process
/// carries on from its checkpointed memory (a counter far past what a fresh start reaches), its
/// root filesystem has the changes it made (a file written, an image file deleted), and the
/// original may be gone meanwhile. NOT TESTED where `criu check` fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crictl_checkpoints_and_restores_a_container() {
    const NAME: &str = "clients::crictl_checkpoints_and_restores_a_container";
    const PARENT: &str = "/berth-test-clients-ckpt";
    require_root!();
    registry::require().await;
    let Some(bin) = tool("crictl-1.36.0") else {
        report_not_tested(NAME, "../shared/tools has no crictl-1.36.0");
        return;
    };
    if !Command::new("criu")
        .arg("check")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        report_not_tested(
            NAME,
            "`criu check` fails on this host (hack/criu.sh builds one that works)",
        );
        return;
    }
    let d = Daemon::start().await.unwrap();
    let sock = d.socket().to_path_buf();
    let image = registry::image("busybox:latest");
    crictl(&bin, &sock, &["pull", &image]).await;
    let dir = d.dir.path();
    // Kubelet-shaped: each container its own PID namespace.
    let pid_own = serde_json::json!({"namespace_options": {"pid": 1}});
    let pod = serde_json::json!({
        "metadata": {"name": "ckpt", "namespace": "clients", "uid": "uid-ckpt"},
        "log_directory": dir.join("logs"),
        "linux": {"cgroup_parent": PARENT, "security_context": pid_own},
    });
    let counter = "echo before-checkpoint > /made-by-me; rm /bin/pkill; i=0; \
                   while :; do i=$((i+1)); echo $i > /tmp/count; sleep 0.1; done";
    let original = serde_json::json!({
        "metadata": {"name": "counter"},
        "image": {"image": image},
        "command": ["sh", "-c", counter],
        "log_path": "counter.log",
        "linux": {"security_context": pid_own},
    });
    let archive = dir.join("counter-checkpoint.tar");
    let restored = serde_json::json!({
        "metadata": {"name": "restored"},
        "image": {"image": archive},
        "log_path": "restored.log",
        "labels": {"restored": "yes"},
        "linux": {},
    });
    let (pj, oj, rj) = (
        dir.join("pod.json"),
        dir.join("original.json"),
        dir.join("restored.json"),
    );
    std::fs::write(&pj, pod.to_string()).unwrap();
    std::fs::write(&oj, original.to_string()).unwrap();
    std::fs::write(&rj, restored.to_string()).unwrap();
    let pj = pj.display().to_string();
    let pod_id = crictl(&bin, &sock, &["runp", &pj]).await.trim().to_string();
    let id = crictl(&bin, &sock, &["create", &pod_id, &oj.display().to_string(), &pj])
        .await
        .trim()
        .to_string();
    crictl(&bin, &sock, &["start", &id]).await;
    let count = |id: String| {
        let (bin, sock) = (bin.clone(), sock.clone());
        async move {
            let out = crictl(&bin, &sock, &["exec", "-s", &id, "cat", "/tmp/count"]).await;
            out.trim().parse::<u64>().unwrap_or(0)
        }
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while count(id.clone()).await < 30 {
        assert!(std::time::Instant::now() < deadline, "the counter never reached 30");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let export = format!("--export={}", archive.display());
    crictl(&bin, &sock, &["checkpoint", &export, &id]).await;
    assert!(archive.is_file(), "no archive at {}", archive.display());
    let listing = Command::new("tar").arg("-tf").arg(&archive).output().unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    for part in ["config.dump", "spec.dump", "rootfs-diff.tar", "checkpoint/"] {
        assert!(
            listing.lines().any(|l| l.starts_with(part)),
            "{part} missing from:\n{listing}"
        );
    }
    let at_checkpoint = count(id.clone()).await;
    let state = crictl(
        &bin,
        &sock,
        &["inspect", "-o", "go-template", "--template", "{{.status.state}}", &id],
    )
    .await;
    assert_eq!(
        state.trim(),
        "CONTAINER_RUNNING",
        "a checkpoint leaves the container running"
    );
    crictl(&bin, &sock, &["rm", "-f", &id]).await;

    let rid = crictl(&bin, &sock, &["create", &pod_id, &rj.display().to_string(), &pj])
        .await
        .trim()
        .to_string();
    crictl(&bin, &sock, &["start", &rid]).await;
    let after = count(rid.clone()).await;
    // The dump came after the counter passed 30; a fresh start would be near 1 by now.
    assert!(
        after >= 30,
        "the restored counter is at {after} (the original was at {at_checkpoint}): a fresh start, not a restore"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(count(rid.clone()).await > after, "the restored process does not run");
    let files = crictl(
        &bin,
        &sock,
        &[
            "exec",
            "-s",
            &rid,
            "sh",
            "-c",
            "cat /made-by-me; test -e /bin/pkill || echo pkill-gone",
        ],
    )
    .await;
    assert_eq!(
        files.split_whitespace().collect::<Vec<_>>(),
        ["before-checkpoint", "pkill-gone"],
        "{files}"
    );
    let labels = crictl(
        &bin,
        &sock,
        &[
            "inspect",
            "-o",
            "go-template",
            "--template",
            "{{.status.labels.restored}} {{.status.state}}",
            &rid,
        ],
    )
    .await;
    assert_eq!(labels.trim(), "yes CONTAINER_RUNNING");

    // Not into a pod with its own user namespace (runc 1.1 cannot hand CRIU one): a clear refusal.
    let maps = serde_json::json!([{"host_id": 300000, "container_id": 0, "length": 65536}]);
    let userns_pod = serde_json::json!({
        "metadata": {"name": "ckpt-userns", "namespace": "clients", "uid": "uid-ckpt-userns"},
        "log_directory": dir.join("logs"),
        "linux": {"cgroup_parent": PARENT, "security_context": {"namespace_options": {
            "pid": 1, "userns_options": {"mode": 0, "uids": maps, "gids": maps}}}},
    });
    let uj = dir.join("userns-pod.json");
    std::fs::write(&uj, userns_pod.to_string()).unwrap();
    let uj = uj.display().to_string();
    let userns_pod_id = crictl(&bin, &sock, &["runp", &uj]).await.trim().to_string();
    let ep = format!("unix://{}", sock.display());
    let refused = Command::new(&bin)
        .args(["--runtime-endpoint", &ep, "--image-endpoint", &ep, "--timeout", "60s"])
        .args(["create", &userns_pod_id, &rj.display().to_string(), &uj])
        .env("HOME", "/nonexistent")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && err.contains("code = FailedPrecondition") && err.contains("user namespace"),
        "{err}"
    );
    crictl(&bin, &sock, &["rmp", "-f", &userns_pod_id]).await;

    crictl(&bin, &sock, &["rmp", "-f", &pod_id]).await;
    drop(d);
    for ctl in std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
        let _ = std::fs::remove_dir(ctl.path().join(PARENT.trim_start_matches('/')));
    }
}
