//! CRI streaming against a reference client berth did not write: the official Kubernetes Python
//! client (PyPI `kubernetes`, its `kubernetes.stream.ws_client`), pinned and installed into
//! /opt/berth-test-venv by hack/install-deps.sh, driven by hack/interop/k8s_exec.py, which prints
//! what the client saw as JSON. Exec over WebSocket (v5.channel.k8s.io as the client offers it, and
//! v4.channel.k8s.io), and PortForward over WebSocket (v4.channel.k8s.io). As root.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use berth_proto::cri::{ContainerState, ExecRequest, ExecSyncRequest, PortForwardRequest};
use berth_test::{registry, require_root};
use serde_json::Value;
use support::Pod;

const CGROUP_PARENT: &str = "/berth-test-interop";
/// Made by hack/install-deps.sh.
const VENV: &str = "/opt/berth-test-venv";

/// The venv's python, checked to have the client: fails (never skips) when it is not installed.
fn reference_client() -> PathBuf {
    let py = Path::new(VENV).join("bin/python3");
    let ok = Command::new(&py)
        .args(["-c", "import kubernetes.stream.ws_client"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "the reference client is not installed: {} cannot import kubernetes.stream.ws_client; \
         run hack/install-deps.sh as root (it makes {VENV} with the pinned PyPI `kubernetes` client)",
        py.display()
    );
    py
}

/// One run of hack/interop/k8s_exec.py: its JSON, and its stderr (the client's frame trace).
async fn client(py: &Path, url: &str, args: &[&str]) -> (Value, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../hack/interop/k8s_exec.py");
    let mut cmd = Command::new(py);
    cmd.arg(script).arg("--trace").arg(url).args(args);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .expect("run hack/interop/k8s_exec.py");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "k8s_exec.py {args:?} ({}) printed no JSON ({e}):\n{stdout}\n--- stderr:\n{stderr}",
            out.status
        )
    });
    // Shown with --nocapture: what the client saw, and its trace of the frames.
    println!("k8s_exec.py {args:?}: {v}\n{stderr}");
    assert!(
        v.get("exception").is_none(),
        "the Kubernetes client raised: {v}\n--- its trace:\n{stderr}"
    );
    (v, stderr)
}

async fn exec_url(p: &Pod, id: &str, cmd: &[&str], stdin: bool) -> String {
    p.d.runtime()
        .await
        .unwrap()
        .exec(ExecRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            tty: false,
            stdin,
            stdout: true,
            stderr: true,
        })
        .await
        .unwrap()
        .into_inner()
        .url
}

/// A pod with busybox running `script` in a container; its ID.
async fn pod_running(script: &str) -> (Pod, String) {
    registry::require().await;
    let p = Pod::start(CGROUP_PARENT, |_| {}, |_| {}).await;
    let id = p.create(support::container("app", &p.image, script)).await.unwrap();
    p.start_container(&id).await.unwrap();
    p.wait_state(&id, ContainerState::ContainerRunning).await;
    (p, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_with_the_kubernetes_python_client() {
    require_root!();
    let py = reference_client();
    let (p, id) = pod_running("exec sleep 3600").await;

    // `echo hi`: stdout, and exit code 0 from the Success status on the error channel.
    let (v, trace) = client(&py, &exec_url(&p, &id, &["echo", "hi"], false).await, &["exec"]).await;
    assert_eq!(v["subprotocol"], "v5.channel.k8s.io", "{v}\n{trace}");
    assert_eq!(v["closed"], true, "{v}\n{trace}");
    assert_eq!(v["stdout"], "hi\n", "{v}\n{trace}");
    assert_eq!(v["stderr"], "", "{v}\n{trace}");
    assert_eq!(v["returncode"], 0, "{v}\n{trace}");

    // A non-zero exit: the client reads the code from the NonZeroExitCode status's cause.
    let cmd = ["sh", "-c", "echo oops >&2; exit 3"];
    let (v, trace) = client(&py, &exec_url(&p, &id, &cmd, false).await, &["exec"]).await;
    assert_eq!(v["stdout"], "", "{v}\n{trace}");
    assert_eq!(v["stderr"], "oops\n", "{v}\n{trace}");
    assert_eq!(v["returncode"], 3, "{v}\n{trace}");

    // The same over v4.channel.k8s.io, offered alone.
    let url = exec_url(&p, &id, &["sh", "-c", "echo hi; exit 3"], false).await;
    let (v, trace) = client(&py, &url, &["--protocol", "v4.channel.k8s.io", "exec"]).await;
    assert_eq!(v["subprotocol"], "v4.channel.k8s.io", "{v}\n{trace}");
    assert_eq!(v["stdout"], "hi\n", "{v}\n{trace}");
    assert_eq!(v["returncode"], 3, "{v}\n{trace}");

    // Interactive stdin: each line comes back from `cat` before the next is written; closing
    // stdin (v5's channel 255) ends `cat` with 0.
    let url = exec_url(&p, &id, &["cat"], true).await;
    let (v, trace) = client(&py, &url, &["stdin", "line one", "line two"]).await;
    assert_eq!(v["subprotocol"], "v5.channel.k8s.io", "{v}\n{trace}");
    assert_eq!(v["echoed"], serde_json::json!(["line one", "line two"]), "{v}\n{trace}");
    assert_eq!(v["closed"], true, "{v}\n{trace}");
    assert_eq!(v["stdout"], "", "nothing after the echoes: {v}\n{trace}");
    assert_eq!(v["returncode"], 0, "{v}\n{trace}");

    p.finish().await;
}

/// Waits until something listens on `port` in the container's network namespace.
async fn wait_listening(p: &Pod, id: &str, port: u16) {
    let want = format!(":{port:04X} 0");
    let t0 = Instant::now();
    loop {
        let out =
            p.d.runtime()
                .await
                .unwrap()
                .exec_sync(ExecSyncRequest {
                    container_id: id.into(),
                    cmd: vec!["cat".into(), "/proc/net/tcp".into(), "/proc/net/tcp6".into()],
                    timeout: 10,
                })
                .await
                .unwrap()
                .into_inner();
        // A listener: local port `port`, state 0A.
        if String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.contains(&want) && l.split_whitespace().nth(3) == Some("0A"))
        {
            return;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "nothing listens on {port}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_forward_with_the_kubernetes_python_client() {
    require_root!();
    let py = reference_client();
    // An echo server on the pod's loopback: each connection gets its own cat.
    let (p, id) = pod_running("exec nc -ll -p 8080 -e cat").await;
    wait_listening(&p, &id, 8080).await;

    // Port 8080 echoes; nothing listens on port 9, which its error channel says.
    let url =
        p.d.runtime()
            .await
            .unwrap()
            .port_forward(PortForwardRequest {
                pod_sandbox_id: p.id.clone(),
                port: vec![8080],
            })
            .await
            .unwrap()
            .into_inner()
            .url;
    let (v, trace) = client(&py, &url, &["portforward", "8080", "through the python client", "9"]).await;
    assert_eq!(v["subprotocol"], "v4.channel.k8s.io", "{v}\n{trace}");
    assert_eq!(v["echoed"], "through the python client\n", "{v}\n{trace}");
    assert_eq!(v["error"], Value::Null, "{v}\n{trace}");
    let err = v["errors"]["9"].as_str().unwrap_or_default();
    assert!(err.contains("port 9"), "{v}\n{trace}");
    assert_eq!(v["closed"], true, "{v}\n{trace}");

    p.finish().await;
}
