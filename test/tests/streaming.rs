//! CRI streaming for real, as root: Exec, Attach and PortForward URLs driven by the test crate's own
//! SPDY/3.1 and WebSocket clients (test/src/streaming.rs) against containers in a pod.

use std::path::Path;
use std::time::{Duration, Instant};

use berth_proto::cri::{
    AttachRequest, ContainerConfig, ContainerMetadata, ContainerState, ContainerStatusRequest, CreateContainerRequest,
    ExecRequest, ExecSyncRequest, ImageSpec, LinuxPodSandboxConfig, PodSandboxConfig, PodSandboxMetadata,
    PortForwardRequest, PullImageRequest, RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest,
    StopContainerRequest, StopPodSandboxRequest,
};
use berth_proto::tonic::Code;
use berth_test::streaming::{
    ExecOutput, SpdyClient, SpdyEvent, WsClient, WsMessage, spdy_collect, spdy_exec, spdy_exec_streams, spdy_record,
    upgrade, ws_channel, ws_exec,
};
use berth_test::{Daemon, registry, require_root};

const CGROUP_PARENT: &str = "/berth-test-stream";
const V4: &str = "v4.channel.k8s.io";

struct Pod {
    d: Daemon,
    pod_id: String,
    pod_cfg: PodSandboxConfig,
    image: String,
}

impl Pod {
    async fn new(name: &str) -> Pod {
        Pod::with_handler(name, "").await
    }

    /// A pod run by runtime handler `handler` (empty: the default, berth-shim).
    async fn with_handler(name: &str, handler: &str) -> Pod {
        registry::require().await;
        // BERTH_SHIM_BIN runs another berth-shim build (e.g. target/shim/berth-shim, to measure it).
        let d = Daemon::start_with(|c| {
            if let Some(bin) = std::env::var_os("BERTH_SHIM_BIN")
                && let Some(h) = c.runtime.handlers.get_mut("runc")
            {
                h.shim = bin.to_string_lossy().to_string();
            }
        })
        .await
        .unwrap();
        let image = registry::image("busybox:latest");
        d.images()
            .await
            .unwrap()
            .pull_image(PullImageRequest {
                image: Some(ImageSpec {
                    image: image.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .unwrap();
        let pod_cfg = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                uid: format!("uid-{name}"),
                namespace: "default".into(),
                attempt: 0,
            }),
            hostname: name.into(),
            log_directory: d.dir.path().join("logs").display().to_string(),
            linux: Some(LinuxPodSandboxConfig {
                // One parent per pod: a test ending removes its own while others run.
                cgroup_parent: format!("{CGROUP_PARENT}-{name}"),
                ..Default::default()
            }),
            ..Default::default()
        };
        let pod_id = d
            .runtime()
            .await
            .unwrap()
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(pod_cfg.clone()),
                runtime_handler: handler.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .pod_sandbox_id;
        Pod {
            d,
            pod_id,
            pod_cfg,
            image,
        }
    }

    /// Creates and starts a container running `cmd`; waits until it runs.
    async fn run(&self, name: &str, cmd: &[&str], adjust: impl FnOnce(&mut ContainerConfig)) -> String {
        let mut cfg = ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: name.into(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: self.image.clone(),
                ..Default::default()
            }),
            command: cmd.iter().map(|s| s.to_string()).collect(),
            log_path: format!("{name}.log"),
            ..Default::default()
        };
        adjust(&mut cfg);
        let mut rt = self.d.runtime().await.unwrap();
        let id = rt
            .create_container(CreateContainerRequest {
                pod_sandbox_id: self.pod_id.clone(),
                config: Some(cfg),
                sandbox_config: Some(self.pod_cfg.clone()),
            })
            .await
            .unwrap()
            .into_inner()
            .container_id;
        rt.start_container(StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap();
        let s = rt
            .container_status(ContainerStatusRequest {
                container_id: id.clone(),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap();
        assert_eq!(s.state, ContainerState::ContainerRunning as i32, "{s:?}");
        id
    }

    async fn exec_url(&self, id: &str, cmd: &[&str], stdin: bool, tty: bool) -> String {
        self.d
            .runtime()
            .await
            .unwrap()
            .exec(ExecRequest {
                container_id: id.into(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                tty,
                stdin,
                stdout: true,
                stderr: !tty,
            })
            .await
            .unwrap()
            .into_inner()
            .url
    }

    async fn port_forward_url(&self) -> String {
        self.d
            .runtime()
            .await
            .unwrap()
            .port_forward(PortForwardRequest {
                pod_sandbox_id: self.pod_id.clone(),
                port: vec![8080],
            })
            .await
            .unwrap()
            .into_inner()
            .url
    }

    async fn finish(mut self) {
        let mut rt = self.d.runtime().await.unwrap();
        rt.stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: self.pod_id.clone(),
        })
        .await
        .unwrap();
        rt.remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: self.pod_id.clone(),
        })
        .await
        .unwrap();
        self.d.stop().await.unwrap();
        let parent = self
            .pod_cfg
            .linux
            .as_ref()
            .map(|l| l.cgroup_parent.clone())
            .unwrap_or_default();
        for ctl in std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
            let _ = std::fs::remove_dir(ctl.path().join(parent.trim_start_matches('/')));
        }
    }
}

fn assert_exit(out: &ExecOutput, code: i32) {
    let st = out.status();
    if code == 0 {
        assert_eq!(st["status"], "Success", "{st}");
    } else {
        assert_eq!(st["status"], "Failure", "{st}");
        assert_eq!(st["reason"], "NonZeroExitCode", "{st}");
        assert_eq!(st["details"]["causes"][0]["reason"], "ExitCode", "{st}");
        assert_eq!(st["details"]["causes"][0]["message"], code.to_string(), "{st}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_over_spdy_and_websocket() {
    require_root!();
    let p = Pod::new("exec").await;
    let id = p.run("sleeper", &["sleep", "3600"], |_| {}).await;

    // SPDY, v4: output, stderr and exit codes in the status.
    let out = spdy_exec(
        &p.exec_url(&id, &["echo", "hi"], false, false).await,
        &[V4],
        None,
        false,
    )
    .await
    .unwrap();
    assert_eq!(out.stdout_text(), "hi\n");
    assert_exit(&out, 0);
    assert_eq!(out.replies, 3, "error, stdout and stderr streams answered");
    let cmd = ["sh", "-c", "echo oops >&2; exit 3"];
    let out = spdy_exec(&p.exec_url(&id, &cmd, false, false).await, &[V4], None, false)
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stderr), "oops\n");
    assert_exit(&out, 3);

    // Older protocols: the error stream carries only a failure's text.
    let url = p.exec_url(&id, &["sh", "-c", "exit 3"], false, false).await;
    let out = spdy_exec(&url, &["v3.channel.k8s.io", "v2.channel.k8s.io"], None, false)
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&out.error).contains("exit code"), "{out:?}");
    let out = spdy_exec(
        &p.exec_url(&id, &["true"], false, false).await,
        &["channel.k8s.io"],
        None,
        false,
    )
    .await
    .unwrap();
    assert!(out.error.is_empty(), "{out:?}");

    // stdin to EOF.
    let url = p.exec_url(&id, &["cat"], true, false).await;
    let out = spdy_exec(&url, &[V4], Some(b"line one\nline two\n"), false)
        .await
        .unwrap();
    assert_eq!(out.stdout_text(), "line one\nline two\n");
    assert_exit(&out, 0);

    // Interactive stdin: an answer comes back before stdin ends.
    let url = p
        .exec_url(
            &id,
            &["sh", "-c", "read a; echo got-$a; read b; echo got-$b"],
            true,
            false,
        )
        .await;
    let mut c = SpdyClient::connect(&url, &[V4]).await.unwrap();
    assert_eq!(c.protocol, V4);
    let s = spdy_exec_streams(&mut c, true, true, true, false).await.unwrap();
    let stdin = s.stdin.unwrap();
    c.send(stdin, b"one\n", false).await.unwrap();
    let mut out = ExecOutput::default();
    while !out.stdout_text().contains("got-one") {
        let ev = tokio::time::timeout(Duration::from_secs(30), c.next())
            .await
            .expect("no answer to the first line")
            .unwrap()
            .expect("connection closed early");
        spdy_record(&ev, &s, &mut out);
    }
    c.send(stdin, b"two\n", true).await.unwrap();
    spdy_collect(&mut c, &s, &mut out).await.unwrap();
    assert_eq!(out.stdout_text(), "got-one\ngot-two\n");
    assert_exit(&out, 0);

    // WebSocket: v4 binary, v5 with stdin closed through channel 255, base64, and v1.
    let out = ws_exec(&p.exec_url(&id, &["echo", "hi"], false, false).await, &[V4], None)
        .await
        .unwrap();
    assert_eq!(out.stdout_text(), "hi\n");
    assert_exit(&out, 0);
    let out = ws_exec(
        &p.exec_url(&id, &["sh", "-c", "exit 3"], false, false).await,
        &[V4],
        None,
    )
    .await
    .unwrap();
    assert_exit(&out, 3);
    let url = p.exec_url(&id, &["cat"], true, false).await;
    let out = ws_exec(&url, &["v5.channel.k8s.io", V4], Some(b"via v5\n"))
        .await
        .unwrap();
    assert_eq!(out.stdout_text(), "via v5\n");
    assert_exit(&out, 0);
    let url = p.exec_url(&id, &["echo", "b64"], false, false).await;
    let out = ws_exec(&url, &["v4.base64.channel.k8s.io"], None).await.unwrap();
    assert_eq!(out.stdout_text(), "b64\n");
    assert_exit(&out, 0);
    let url = p.exec_url(&id, &["sh", "-c", "echo e >&2; exit 3"], false, false).await;
    let out = ws_exec(&url, &["channel.k8s.io"], None).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stderr), "e\n");
    assert!(String::from_utf8_lossy(&out.error).contains("exit code"), "{out:?}");

    // Bad requests fail at the RPC.
    let mut rt = p.d.runtime().await.unwrap();
    let err = rt
        .exec(ExecRequest {
            container_id: id.clone(),
            cmd: vec![],
            stdout: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = rt
        .exec(ExecRequest {
            container_id: "nope".into(),
            cmd: vec!["true".into()],
            stdout: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    p.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_single_use() {
    require_root!();
    let p = Pod::new("tokens").await;
    let id = p.run("sleeper", &["sleep", "3600"], |_| {}).await;
    let url = p.exec_url(&id, &["true"], false, false).await;
    let out = spdy_exec(&url, &[V4], None, false).await.unwrap();
    assert_exit(&out, 0);
    // Used once: gone.
    let err = SpdyClient::connect(&url, &[V4]).await.unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");
    let err = WsClient::connect(&url, &[V4]).await.unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");
    // Made up, or of another kind.
    let base = url.rsplit_once("/exec/").unwrap().0.to_string();
    let (resp, _) = upgrade(&format!("{base}/exec/0123456789abcdef0123456789abcdef"), &[])
        .await
        .unwrap();
    assert_eq!(resp.status, 404);
    let url = p.exec_url(&id, &["true"], false, false).await;
    let token = url.rsplit('/').next().unwrap();
    let (resp, _) = upgrade(&format!("{base}/attach/{token}"), &[]).await.unwrap();
    assert_eq!(resp.status, 404);
    // No protocol both sides speak: 403, naming what the server accepts.
    let url = p.exec_url(&id, &["true"], false, false).await;
    let (resp, _) = upgrade(
        &url,
        &[
            ("Connection", "Upgrade"),
            ("Upgrade", "SPDY/3.1"),
            ("X-Stream-Protocol-Version", "v9.channel.k8s.io"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 403);
    assert!(resp.header("x-accepted-stream-protocol-versions").is_some(), "{resp:?}");
    // Not an upgrade: 400.
    let url = p.exec_url(&id, &["true"], false, false).await;
    let (resp, _) = upgrade(&url, &[]).await.unwrap();
    assert_eq!(resp.status, 400);
    // A container that stopped after the URL was handed out: a clear error on the stream.
    let url = p.exec_url(&id, &["true"], false, false).await;
    p.d.runtime()
        .await
        .unwrap()
        .stop_container(StopContainerRequest {
            container_id: id.clone(),
            timeout: 0,
        })
        .await
        .unwrap();
    let out = spdy_exec(&url, &[V4], None, false).await.unwrap();
    let st = out.status();
    assert_eq!(st["status"], "Failure", "{st}");
    assert!(st["message"].as_str().unwrap().contains("not running"), "{st}");
    p.finish().await;
}

/// PIDs whose command line is exactly `args`.
fn pids_running(args: &[&str]) -> Vec<i32> {
    let want: Vec<u8> = args.iter().flat_map(|a| a.bytes().chain([0])).collect();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want))
        .collect()
}

fn exec_dirs(bundle_root: &Path) -> Vec<String> {
    std::fs::read_dir(bundle_root)
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|c| std::fs::read_dir(c.path()).into_iter().flatten().flatten())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("exec-"))
        .collect()
}

async fn wait_gone(args: &[&str]) {
    let t0 = Instant::now();
    while !pids_running(args).is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "{args:?} still runs after its client left"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_disconnect_kills_the_exec() {
    require_root!();
    let p = Pod::new("vanish").await;
    let id = p.run("sleeper", &["sleep", "3600"], |_| {}).await;
    let containers = p.d.config.state.join("containers");
    for (n, ws) in [(987, false), (988, true)] {
        let secs = n.to_string();
        let args = ["sleep", secs.as_str()];
        let url = p.exec_url(&id, &args, true, false).await;
        if ws {
            let mut c = WsClient::connect(&url, &[V4]).await.unwrap();
            // The first (empty) message says the streams are up.
            let first = c.next().await.unwrap().unwrap();
            assert_eq!(ws_channel(&first), Some((1, vec![])));
            wait_running(&args).await;
            drop(c);
        } else {
            let mut c = SpdyClient::connect(&url, &[V4]).await.unwrap();
            let _s = spdy_exec_streams(&mut c, true, true, true, false).await.unwrap();
            wait_running(&args).await;
            drop(c);
        }
        wait_gone(&args).await;
        let t0 = Instant::now();
        while !exec_dirs(&containers).is_empty() {
            assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", exec_dirs(&containers));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    p.finish().await;
}

async fn wait_running(args: &[&str]) {
    let t0 = Instant::now();
    while pids_running(args).is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(20), "{args:?} never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_to_a_container() {
    require_root!();
    let p = Pod::new("attach").await;
    let id = p
        .run(
            "echoer",
            &[
                "sh",
                "-c",
                "echo started; while read l; do echo got-$l; echo err-$l >&2; done",
            ],
            |c| c.stdin = true,
        )
        .await;
    // "started" is in the log before the attach begins, so the attach must not show it.
    let log = p.d.dir.path().join("logs/echoer.log");
    let t0 = Instant::now();
    while !std::fs::read_to_string(&log).unwrap_or_default().contains("started") {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the container never logged its start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let url =
        p.d.runtime()
            .await
            .unwrap()
            .attach(AttachRequest {
                container_id: id.clone(),
                stdin: true,
                tty: false,
                stdout: true,
                stderr: true,
            })
            .await
            .unwrap()
            .into_inner()
            .url;
    let mut c = SpdyClient::connect(&url, &[V4]).await.unwrap();
    let s = spdy_exec_streams(&mut c, true, true, true, false).await.unwrap();
    let stdin = s.stdin.unwrap();
    let mut out = ExecOutput::default();
    let mut sent = 0;
    // Attach shows output from now on: keep sending until the answers come.
    while !(out.stdout_text().contains("got-b") && String::from_utf8_lossy(&out.stderr).contains("err-b")) {
        if sent < 2 {
            c.send(stdin, if sent == 0 { b"a\n" } else { b"b\n" }, false)
                .await
                .unwrap();
            sent += 1;
        }
        let ev = tokio::time::timeout(Duration::from_secs(30), c.next())
            .await
            .expect("no output from the attached container")
            .unwrap()
            .expect("attach closed early");
        spdy_record(&ev, &s, &mut out);
    }
    assert!(out.stdout_text().contains("got-a\ngot-b\n"), "{out:?}");
    assert!(!out.stdout_text().contains("started"), "only output after the attach");
    drop(c);
    // Detaching leaves stdin open (stdin_once is false): another attach talks to the same process.
    attach_and_talk(&p, &id, "c").await;
    // Attaching for stdin to a container created without it is refused.
    let id2 = p.run("plain", &["sleep", "3600"], |_| {}).await;
    let err =
        p.d.runtime()
            .await
            .unwrap()
            .attach(AttachRequest {
                container_id: id2,
                stdin: true,
                stdout: true,
                ..Default::default()
            })
            .await
            .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    print_shim_rss(&p, "two containers without terminals");
    // stdin_once: the end of the first attach is the end of the container's stdin.
    let cmd = ["sh", "-c", "while read l; do echo got-$l; done"];
    let once = p
        .run("once", &cmd, |c| {
            c.stdin = true;
            c.stdin_once = true;
        })
        .await;
    attach_and_talk(&p, &once, "z").await;
    let t0 = Instant::now();
    loop {
        let st =
            p.d.runtime()
                .await
                .unwrap()
                .container_status(ContainerStatusRequest {
                    container_id: once.clone(),
                    verbose: false,
                })
                .await
                .unwrap()
                .into_inner()
                .status
                .unwrap();
        if st.state == ContainerState::ContainerExited as i32 {
            assert_eq!(st.exit_code, 0);
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "stdin_once container still runs"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
async fn port_forward_over_spdy_and_websocket() {
    require_root!();
    let p = Pod::new("forward").await;
    // An echo server on the pod's loopback: each connection gets its own cat.
    // The pod's loopback is up: berthd wires the pod's network (built-in bridge here).
    // Port 8081 runs /bin/cat per connection, so its processes can be told from the others.
    let cmd = [
        "sh",
        "-c",
        "(nc -ll -p 8081 -e /bin/cat &) && exec nc -ll -p 8080 -e cat",
    ];
    let id = p.run("echo", &cmd, |_| {}).await;
    wait_listening(&p, &id, 8080).await;
    wait_listening(&p, &id, 8081).await;

    // SPDY: two connections at once on one session, and a port nobody listens on.
    let url = p.port_forward_url().await;
    let mut c = SpdyClient::connect(&url, &["portforward.k8s.io"]).await.unwrap();
    assert_eq!(c.protocol, "portforward.k8s.io");
    let mut data = Vec::new();
    for req in ["0", "1"] {
        let e = c
            .open(&[("streamType", "error"), ("port", "8080"), ("requestID", req)], false)
            .await
            .unwrap();
        let d = c
            .open(&[("streamType", "data"), ("port", "8080"), ("requestID", req)], false)
            .await
            .unwrap();
        data.push((e, d));
    }
    let bad_error = c
        .open(&[("streamType", "error"), ("port", "9"), ("requestID", "2")], false)
        .await
        .unwrap();
    c.open(&[("streamType", "data"), ("port", "9"), ("requestID", "2")], false)
        .await
        .unwrap();
    // The echo server answers each connection on its own; the nc may need a moment to listen.
    for (i, (_, d)) in data.iter().enumerate() {
        c.send(*d, format!("hello {i}\n").as_bytes(), true).await.unwrap();
    }
    let mut got: std::collections::HashMap<u32, Vec<u8>> = Default::default();
    let mut fins = 0;
    let mut bad_error_text = Vec::new();
    while fins < 2 || bad_error_text.is_empty() {
        let ev = tokio::time::timeout(Duration::from_secs(30), c.next())
            .await
            .expect("port forward stalled")
            .unwrap()
            .expect("port forward closed early");
        if let SpdyEvent::Data { id, data: bytes, fin } = ev {
            if id == bad_error {
                bad_error_text.extend(bytes);
            } else {
                got.entry(id).or_default().extend(bytes);
                if fin && data.iter().any(|(_, d)| *d == id) {
                    fins += 1;
                }
            }
        }
    }
    for (i, (_, d)) in data.iter().enumerate() {
        assert_eq!(
            String::from_utf8_lossy(&got[d]),
            format!("hello {i}\n"),
            "connection {i}"
        );
    }
    assert!(
        String::from_utf8_lossy(&bad_error_text).contains("port 9"),
        "{}",
        String::from_utf8_lossy(&bad_error_text)
    );
    drop(c);

    // WebSocket v4.channel.k8s.io: per port, channels 2n (data) and 2n+1 (error), each starting with
    // the port; port 9 has no listener, which its error channel says.
    let url = p.port_forward_url().await + "?port=8080&port=9";
    let mut ws = WsClient::connect(&url, &[V4]).await.unwrap();
    assert_eq!(ws.protocol, V4);
    let mut firsts = Vec::new();
    while firsts.len() < 4 {
        let m = ws.next().await.unwrap().unwrap();
        firsts.push(ws_channel(&m).unwrap());
    }
    firsts.sort();
    let le = |p: u16| p.to_le_bytes().to_vec();
    assert_eq!(firsts, vec![(0, le(8080)), (1, le(8080)), (2, le(9)), (3, le(9))]);
    ws.send_channel(0, b"over websocket\n").await.unwrap();
    let (mut echoed, mut port9_error) = (Vec::new(), Vec::new());
    while !echoed.ends_with(b"over websocket\n") || port9_error.is_empty() {
        let m = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .expect("no echo over websocket")
            .unwrap()
            .expect("websocket closed early");
        match ws_channel(&m) {
            Some((0, d)) => echoed.extend(d),
            Some((3, d)) => port9_error.extend(d),
            _ => {}
        }
    }
    assert!(String::from_utf8_lossy(&port9_error).contains("port 9"));
    ws.close().await.unwrap();
    while let Ok(Some(m)) = ws.next().await {
        if m == WsMessage::Close {
            break;
        }
    }

    // A client that vanishes mid-connection: the pod's end is closed (its /bin/cat sees EOF and exits).
    let url = p.port_forward_url().await;
    let mut c = SpdyClient::connect(&url, &["portforward.k8s.io"]).await.unwrap();
    c.open(&[("streamType", "error"), ("port", "8081"), ("requestID", "0")], false)
        .await
        .unwrap();
    let d = c
        .open(&[("streamType", "data"), ("port", "8081"), ("requestID", "0")], false)
        .await
        .unwrap();
    c.send(d, b"still open\n", false).await.unwrap();
    let mut echoed = Vec::new();
    while !echoed.ends_with(b"still open\n") {
        let ev = tokio::time::timeout(Duration::from_secs(30), c.next())
            .await
            .expect("no echo on 8081")
            .unwrap()
            .expect("closed early");
        if let SpdyEvent::Data { id, data, .. } = ev
            && id == d
        {
            echoed.extend(data);
        }
    }
    assert_eq!(pids_running(&["/bin/cat"]).len(), 1, "one connection, one cat");
    drop(c);
    wait_gone(&["/bin/cat"]).await;

    // SPDY tunnelled in binary WebSocket messages (v2.portforward.k8s.io, kubectl's newer transport).
    let url = p.port_forward_url().await;
    let ws = WsClient::connect(&url, &["v2.portforward.k8s.io"]).await.unwrap();
    assert_eq!(ws.protocol, "v2.portforward.k8s.io");
    let mut c = SpdyClient::over(ws.tunnel(), "portforward.k8s.io".into()).unwrap();
    c.open(&[("streamType", "error"), ("port", "8080"), ("requestID", "0")], false)
        .await
        .unwrap();
    let d = c
        .open(&[("streamType", "data"), ("port", "8080"), ("requestID", "0")], false)
        .await
        .unwrap();
    c.send(d, b"tunnelled\n", true).await.unwrap();
    let mut echoed = Vec::new();
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(30), c.next())
            .await
            .expect("tunnelled port forward stalled")
            .unwrap()
            .expect("tunnel closed early");
        if let SpdyEvent::Data { id, data, fin } = ev
            && id == d
        {
            echoed.extend(data);
            if fin {
                break;
            }
        }
    }
    assert_eq!(String::from_utf8_lossy(&echoed), "tunnelled\n");
    drop(c);
    p.finish().await;
}

/// Prints the VmRSS and threads of the pod's berth-shim (a measurement, not a check).
fn print_shim_rss(p: &Pod, what: &str) {
    let marker = p.d.dir.path().display().to_string();
    let pids = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok());
    for pid in pids {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        if cmdline.contains("berth-shim") && cmdline.contains(&marker) && !cmdline.contains("pod-init") {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let field = |k: &str| {
                status
                    .lines()
                    .find(|l| l.starts_with(k))
                    .unwrap_or("")
                    .split_whitespace()
                    .skip(1)
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            println!(
                "berth-shim (pid {pid}), {what}: VmRSS {}, threads {}",
                field("VmRSS:"),
                field("Threads:")
            );
        }
    }
}

/// Waits (at most 10 s) until the terminal is 40x100, then prints it.
const WAIT_FOR_RESIZE: &str = "for i in $(seq 100); do s=$(stty size 2>/dev/null); \
    if [ \"$s\" = \"40 100\" ]; then echo resized-$s; exit 0; fi; sleep 0.1; done; exit 1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_and_attach_with_a_tty() {
    require_root!();
    let p = Pod::new("tty").await;
    let id = p.run("sleeper", &["sleep", "3600"], |_| {}).await;

    // Output comes through the terminal: \r\n line ends.
    let out = spdy_exec(&p.exec_url(&id, &["echo", "hi"], false, true).await, &[V4], None, true)
        .await
        .unwrap();
    assert_eq!(out.stdout_text(), "hi\r\n");
    assert_exit(&out, 0);
    assert_eq!(out.replies, 3, "error, stdout and resize streams answered");
    let url = p.exec_url(&id, &["sh", "-c", "exit 3"], false, true).await;
    let out = spdy_exec(&url, &[V4], None, true).await.unwrap();
    assert_exit(&out, 3);

    // Resize over SPDY.
    let url = p.exec_url(&id, &["sh", "-c", WAIT_FOR_RESIZE], false, true).await;
    let mut c = SpdyClient::connect(&url, &[V4]).await.unwrap();
    let s = spdy_exec_streams(&mut c, false, true, false, true).await.unwrap();
    c.send(s.resize.unwrap(), br#"{"Width":100,"Height":40}"#, false)
        .await
        .unwrap();
    let mut out = ExecOutput::default();
    spdy_collect(&mut c, &s, &mut out).await.unwrap();
    assert_eq!(out.stdout_text(), "resized-40 100\r\n");
    assert_exit(&out, 0);

    // Resize over WebSocket (channel 4).
    let url = p.exec_url(&id, &["sh", "-c", WAIT_FOR_RESIZE], false, true).await;
    let mut ws = WsClient::connect(&url, &[V4]).await.unwrap();
    ws.send_channel(4, br#"{"Width":100,"Height":40}"#).await.unwrap();
    let mut out = ExecOutput::default();
    while let Some(m) = ws.next().await.unwrap() {
        match ws_channel(&m) {
            Some((1, d)) => out.stdout.extend(d),
            Some((3, d)) => out.error.extend(d),
            _ => {}
        }
    }
    assert_eq!(out.stdout_text(), "resized-40 100\r\n");
    assert_exit(&out, 0);

    // Interactive: the terminal echoes input, cat repeats it, ^D ends it.
    let url = p.exec_url(&id, &["cat"], true, true).await;
    let out = spdy_exec(&url, &[V4], Some(b"abc\n\x04"), true).await.unwrap();
    assert_eq!(out.stdout_text(), "abc\r\nabc\r\n");
    assert_exit(&out, 0);

    // Attach to a container that has a terminal: its output comes from the log.
    let id = p
        .run("ttyloop", &["sh", "-c", "while read l; do echo got-$l; done"], |c| {
            c.tty = true;
            c.stdin = true;
        })
        .await;
    let url =
        p.d.runtime()
            .await
            .unwrap()
            .attach(AttachRequest {
                container_id: id.clone(),
                stdin: true,
                tty: true,
                stdout: true,
                stderr: false,
            })
            .await
            .unwrap()
            .into_inner()
            .url;
    let mut c = SpdyClient::connect(&url, &[V4]).await.unwrap();
    let s = spdy_exec_streams(&mut c, true, true, false, true).await.unwrap();
    let mut out = ExecOutput::default();
    let mut sent = 0;
    while !out.stdout_text().contains("got-y") {
        if sent < 2 {
            c.send(s.stdin.unwrap(), if sent == 0 { b"x\n" } else { b"y\n" }, false)
                .await
                .unwrap();
            sent += 1;
        }
        let ev = tokio::time::timeout(Duration::from_secs(30), c.next())
            .await
            .expect("no output from the attached terminal")
            .unwrap()
            .expect("attach closed early");
        spdy_record(&ev, &s, &mut out);
    }
    assert!(out.stdout_text().contains("got-x"), "{out:?}");
    // The pod's shim now serves two containers, one with a terminal that an attach is reading.
    print_shim_rss(&p, "two containers, one with a terminal and an attach reading it");
    drop(c);
    p.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_through_containerd_shim() {
    require_root!();
    let p = Pod::with_handler("ctrd", "runc-containerd").await;
    let id = p.run("sleeper", &["sleep", "3600"], |_| {}).await;
    let cmd = ["sh", "-c", "echo out; echo err >&2; exit 3"];
    let out = spdy_exec(&p.exec_url(&id, &cmd, false, false).await, &[V4], None, false)
        .await
        .unwrap();
    assert_eq!(
        (out.stdout_text().as_str(), out.stderr.as_slice()),
        ("out\n", &b"err\n"[..])
    );
    assert_exit(&out, 3);
    let url = p.exec_url(&id, &["cat"], true, false).await;
    let out = spdy_exec(&url, &[V4], Some(b"piped\n"), false).await.unwrap();
    assert_eq!(out.stdout_text(), "piped\n");
    assert_exit(&out, 0);
    let out = spdy_exec(&p.exec_url(&id, &["echo", "hi"], false, true).await, &[V4], None, true)
        .await
        .unwrap();
    assert_eq!(out.stdout_text(), "hi\r\n");
    assert_exit(&out, 0);
    p.finish().await;
}

/// Attaches with stdin, sends `line`, and returns once the container answered `got-<line>`.
async fn attach_and_talk(p: &Pod, id: &str, line: &str) {
    let url =
        p.d.runtime()
            .await
            .unwrap()
            .attach(AttachRequest {
                container_id: id.into(),
                stdin: true,
                tty: false,
                stdout: true,
                stderr: true,
            })
            .await
            .unwrap()
            .into_inner()
            .url;
    let mut c = SpdyClient::connect(&url, &[V4]).await.unwrap();
    let s = spdy_exec_streams(&mut c, true, true, true, false).await.unwrap();
    c.send(s.stdin.unwrap(), format!("{line}\n").as_bytes(), false)
        .await
        .unwrap();
    let mut out = ExecOutput::default();
    while !out.stdout_text().contains(&format!("got-{line}")) {
        let ev = tokio::time::timeout(Duration::from_secs(30), c.next())
            .await
            .expect("no answer from the attached container")
            .unwrap()
            .expect("attach closed early");
        spdy_record(&ev, &s, &mut out);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_through_containerd_shim() {
    require_root!();
    let p = Pod::with_handler("ctrda", "runc-containerd").await;
    let cmd = ["sh", "-c", "while read l; do echo got-$l; done"];
    let id = p.run("echoer", &cmd, |c| c.stdin = true).await;
    // A detach leaves stdin open (stdin_once is false): a second attach talks to the same process.
    attach_and_talk(&p, &id, "a").await;
    attach_and_talk(&p, &id, "b").await;
    let st =
        p.d.runtime()
            .await
            .unwrap()
            .container_status(ContainerStatusRequest {
                container_id: id.clone(),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap();
    assert_eq!(st.state, ContainerState::ContainerRunning as i32);
    p.finish().await;
}
