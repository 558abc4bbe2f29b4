//! hack/registry.sh stays in its lane: it runs the test registry on a port of its own and never
//! stops or takes over a registry that is not its own. The machine's "own" registry here is a
//! Debian docker-registry this test starts itself, on a loopback port, with a config of its own.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../hack/registry.sh")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn answers(addr: &str) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(20) {
        if let Ok(out) = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "2"])
            .arg(format!("http://{addr}/v2/"))
            .output()
            && out.stdout == b"200"
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// Runs hack/registry.sh with its own directory (and port, if given).
fn run(dir: &Path, port: Option<u16>, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new("bash");
    cmd.arg(script()).args(args).env("BERTH_REGISTRY_DIR", dir);
    match port {
        Some(p) => cmd.env("BERTH_REGISTRY_PORT", p.to_string()),
        None => cmd.env_remove("BERTH_REGISTRY_PORT"),
    };
    cmd.output().unwrap()
}

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_test_registry_leaves_other_registries_alone() {
    berth_test::require_root!();
    let base = berth_test::scratch_base();
    let tmp = tempfile::Builder::new().prefix("regscript-").tempdir_in(&base).unwrap();
    // The machine's own registry, on a port it holds.
    let theirs = free_port();
    let their_dir = tmp.path().join("theirs");
    std::fs::create_dir_all(their_dir.join("data")).unwrap();
    let cfg = their_dir.join("config.yml");
    std::fs::write(
        &cfg,
        format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{theirs}\n",
            their_dir.join("data").display()
        ),
    )
    .unwrap();
    let _their = Kill(
        Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start Debian's docker-registry (hack/install-deps.sh installs it)"),
    );
    let their_addr = format!("127.0.0.1:{theirs}");
    assert!(answers(&their_addr), "the machine's own registry answers");

    let ours = tmp.path().join("ours");
    // Asked for the port the other registry holds: refused, and the other one keeps running.
    let out = run(&ours, Some(theirs), &["start"]);
    assert!(!out.status.success(), "start on a taken port must fail");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("in use by another process"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(answers(&their_addr), "the other registry was not touched");

    // Left to itself: a port of its own, recorded.
    let out = run(&ours, None, &["start"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let addr = String::from_utf8(run(&ours, None, &["address"]).stdout)
        .unwrap()
        .trim()
        .to_string();
    assert!(addr.starts_with("127.0.0.1:") && addr != their_addr, "{addr}");
    assert_eq!(std::fs::read_to_string(ours.join("address")).unwrap().trim(), addr);
    assert!(answers(&addr), "ours answers at {addr}");
    assert!(TcpStream::connect(&their_addr).is_ok());

    // Stopped: ours is gone, theirs is still there.
    assert!(run(&ours, None, &["stop"]).status.success());
    assert!(TcpStream::connect(&addr).is_err(), "ours stopped");
    assert!(answers(&their_addr), "the other registry survived our stop");
    assert_eq!(run(&ours, None, &["status"]).status.code(), Some(3));
}
