//! berth's test harness: a berthd started in-process on temporary directories and socket, CRI
//! clients for it, the local test registry, and the `require_root!` guard.

use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::Duration;

use anyhow::{Context as _, bail};
use berth_proto::cri::image_service_client::ImageServiceClient;
use berth_proto::cri::runtime_service_client::RuntimeServiceClient;
use berth_proto::tonic::transport::{Channel, Endpoint, Uri};
use berth_runtime::config::Config;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

pub mod authproxy;
pub mod registry;
pub mod streaming;

/// Returns from the test when not root, after reporting it NOT TESTED (the one way every berth
/// crate's tests say so: [`berth_test_report`]).
#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::report::root_or_not_tested(module_path!(), "mounts, namespaces, mknod, chown") {
            return;
        }
    };
}

pub use berth_test_report as report;

/// Records that a test could not check what it is for on this host, and why (see
/// [`berth_test_report::not_tested`]).
pub fn report_not_tested(test: &str, why: &str) {
    berth_test_report::not_tested(test, why);
}

/// Where test daemons keep their data: on a real disk (overlayfs needs xattrs and whiteouts).
pub fn scratch_base() -> PathBuf {
    let p = berth_test_report::scratch_dir();
    std::fs::create_dir_all(&p).expect("create test scratch dir");
    p
}

pub fn init_logging() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let filter = std::env::var("BERTH_TEST_LOG").unwrap_or_else(|_| "warn".into());
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    });
}

/// A berthd running inside the test process.
#[derive(Debug)]
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub config: Config,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Daemon {
    /// A daemon with default settings on fresh temporary directories.
    pub async fn start() -> anyhow::Result<Daemon> {
        Self::start_with(|_| {}).await
    }

    /// Like [`start`](Self::start), letting the test adjust the configuration.
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> anyhow::Result<Daemon> {
        init_logging();
        sweep_stale_dirs();
        let dir = tempfile::Builder::new().prefix("daemon-").tempdir_in(scratch_base())?;
        mark_owner(dir.path());
        let mut config = Config {
            root: dir.path().join("root"),
            state: dir.path().join("state"),
            socket: dir.path().join("state/berth.sock"),
            ..Config::default()
        };
        config.registry.config_path = dir.path().join("certs.d");
        // Pod networking of its own: a bridge and subnet no other daemon (or test process) uses, and
        // a CNI directory that only the test fills.
        config.network.cni_conf_dir = dir.path().join("cni");
        config.network.bridge = test_bridge();
        adjust(&mut config);
        // For a later sweep, should this process die before its Drop runs.
        std::fs::write(dir.path().join("config.toml"), toml::to_string(&config)?)?;
        let mut d = Daemon {
            dir,
            config,
            stop: None,
            task: None,
        };
        d.spawn().await?;
        Ok(d)
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let config = self.config.clone();
        let task = tokio::spawn(berth_runtime::run(config, async {
            let _ = rx.await;
        }));
        self.stop = Some(tx);
        self.task = Some(task);
        // Wait until the socket answers.
        for _ in 0..200 {
            if UnixStream::connect(&self.config.socket).await.is_ok() {
                return Ok(());
            }
            if self.task.as_ref().is_some_and(|t| t.is_finished()) {
                let res = self.task.take().unwrap().await?;
                bail!("berthd exited at start: {res:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        bail!("berthd did not open {}", self.config.socket.display())
    }

    /// Stops the daemon (as on SIGTERM) and waits for it.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), t)
                .await
                .context("berthd did not stop within 30s")???;
        }
        Ok(())
    }

    /// Stops and starts again on the same directories.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await?;
        self.spawn().await
    }

    pub fn socket(&self) -> &Path {
        &self.config.socket
    }

    pub async fn runtime(&self) -> anyhow::Result<RuntimeServiceClient<Channel>> {
        Ok(RuntimeServiceClient::new(connect(self.socket()).await?))
    }

    pub async fn images(&self) -> anyhow::Result<ImageServiceClient<Channel>> {
        Ok(ImageServiceClient::new(connect(self.socket()).await?).max_decoding_message_size(64 << 20))
    }

    /// Pulls `image` (a full reference) and returns it; panics with the status on failure.
    pub async fn pull(&self, image: &str) -> String {
        self.images()
            .await
            .expect("connect to the image service")
            .pull_image(berth_proto::cri::PullImageRequest {
                image: Some(berth_proto::cri::ImageSpec {
                    image: image.to_string(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("pull {image}: {e:?}"));
        image.to_string()
    }

    /// Where the image crate keeps its data for this daemon.
    pub fn image_root(&self) -> PathBuf {
        self.config.root.join("image")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.abort();
        }
        // A test that failed half-way leaves containers, shims, mounts and network: end what this
        // daemon made (the network first, while the pods' namespaces are still there).
        cleanup_network(self.dir.path(), &self.config.network);
        cleanup_dir(self.dir.path());
    }
}

/// A bridge configuration unique to this process and call: `bt<pid><n>` on `10.<128 + pid % 127>.<n>.0/24`.
pub fn test_bridge() -> berth_cni::BridgeConfig {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 256;
    let pid = std::process::id();
    berth_cni::BridgeConfig {
        name: format!("bt{}x{n}", pid % 1_000_000),
        subnet: format!("10.{}.{n}.0/24", 128 + pid % 127).parse().expect("test subnet"),
        ..berth_cni::BridgeConfig::default()
    }
}

/// Writes `<dir>/config.toml` for a berthd process under `dir`: a bridge of its own and a CNI
/// directory only the test fills. Returns the file; [`cleanup_network_of`] removes the bridge.
pub fn write_test_config(dir: &Path) -> PathBuf {
    sweep_stale_dirs();
    mark_owner(dir);
    let f = dir.join("config.toml");
    if !f.exists() {
        let b = test_bridge();
        let text = format!(
            "[network]\ncni_conf_dir = {:?}\n[network.bridge]\nname = {:?}\nsubnet = \"{}\"\n",
            dir.join("cni").display().to_string(),
            b.name,
            b.subnet
        );
        std::fs::write(&f, text).expect("write test config");
    }
    f
}

/// This process, as `<pid> <start time>` (the start time tells a reused pid apart).
fn owner_id(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 22, counted after the parenthesised command name (which may contain spaces).
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // A killed process not yet reaped (a zombie) is gone for this purpose.
    if fields.first() == Some(&"Z") {
        return None;
    }
    let start = fields.get(19)?.to_string();
    Some(format!("{pid} {start}"))
}

/// Records which test process owns a scratch directory.
fn mark_owner(dir: &Path) {
    if let Some(me) = owner_id(std::process::id()) {
        let _ = std::fs::write(dir.join("owner"), me);
    }
}

/// Cleans up scratch directories of test processes that died without running their cleanup (killed,
/// e.g. by a timeout): their daemons' mounts, processes, network and files. A directory is stale when
/// its owner process is gone, or, for one without an owner record, when it is over 10 minutes old.
/// Runs once per test process.
pub fn sweep_stale_dirs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let mut swept = false;
        for e in std::fs::read_dir(scratch_base()).into_iter().flatten().flatten() {
            let dir = e.path();
            if !dir.is_dir() || !dir.join("state").exists() && !dir.join("root").exists() {
                continue;
            }
            let stale = match std::fs::read_to_string(dir.join("owner")) {
                Ok(owner) => {
                    let pid = owner.split_whitespace().next().and_then(|p| p.parse().ok());
                    pid.and_then(owner_id).as_deref() != Some(owner.trim())
                }
                Err(_) => e
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > Duration::from_secs(600))),
            };
            if stale {
                eprintln!("cleaning up {} (its test process is gone)", dir.display());
                cleanup_network_of(&dir);
                cleanup_dir(&dir);
                if mounts_under(&dir).is_empty() {
                    let _ = std::fs::remove_dir_all(&dir);
                }
                swept = true;
            }
        }
        if swept {
            // The tests' cgroup parents (/berth-test*) that the dead process left empty.
            for ctl in std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
                for g in std::fs::read_dir(ctl.path()).into_iter().flatten().flatten() {
                    if g.file_name().to_string_lossy().starts_with("berth-test") {
                        let _ = std::fs::remove_dir(g.path());
                    }
                }
            }
        }
    });
}

/// Removes the network of a berthd process configured by [`write_test_config`].
pub fn cleanup_network_of(dir: &Path) {
    let Ok(text) = std::fs::read_to_string(dir.join("config.toml")) else {
        return;
    };
    let Ok(cfg) = toml::from_str::<berth_runtime::config::Config>(&text) else {
        return;
    };
    cleanup_network(dir, &cfg.network);
}

/// Removes a test daemon's network: what its pods still hold (CNI DEL, veths, host-port rules,
/// addresses), then its bridge and the bridge's rules.
pub fn cleanup_network(dir: &Path, cfg: &berth_cni::NetworkConfig) {
    let net = berth_cni::Network::new(cfg.clone(), &dir.join("state")).ok();
    for pod in std::fs::read_dir(dir.join("state/pods"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let id = pod.file_name().to_string_lossy().to_string();
        let plan = std::fs::read(pod.path().join("network.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<berth_cni::Attachment>(&b).ok());
        if let (Some(net), Some(att)) = (&net, plan) {
            let _ = net.detach(&att, &id, &pod.path().join("ns/net"));
        }
        let tag = berth_cni::bridge::pod_tag(&id);
        for fam in [berth_cni::iptables::Family::V4, berth_cni::iptables::Family::V6] {
            let _ = berth_cni::iptables::delete_commented(fam, "nat", berth_cni::iptables::HOSTPORTS, &tag);
        }
    }
    let _ = berth_cni::bridge::purge(&cfg.bridge);
}

/// Ends everything a daemon under `dir` left running or mounted: its containers (through runc, with
/// the daemon's runc root), its shims and pod PID-namespace holders, and every mount under `dir`.
/// Only processes that belong to `dir` are touched.
pub fn cleanup_dir(dir: &Path) {
    use std::os::unix::fs::MetadataExt as _;
    let state = dir.join("state");
    for root in std::fs::read_dir(state.join("runc")).into_iter().flatten().flatten() {
        for c in std::fs::read_dir(root.path()).into_iter().flatten().flatten() {
            let id = c.file_name();
            let runc = |args: &[&str]| {
                let _ = std::process::Command::new("runc")
                    .arg("--root")
                    .arg(root.path())
                    .args(args)
                    .arg(&id)
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .status();
            };
            runc(&["kill", "--all"]);
            runc(&["delete", "--force"]);
        }
    }
    let pid_pins: Vec<u64> = std::fs::read_dir(state.join("pods"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|p| std::fs::metadata(p.path().join("ns/pid")).ok().map(|m| m.ino()))
        .collect();
    let marker = dir.display().to_string();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let mentions_dir = String::from_utf8_lossy(&cmdline).contains(&marker);
        let holds_pod_pid_ns = cmdline.split(|b| *b == 0).any(|a| a == b"pod-init")
            && std::fs::metadata(e.path().join("ns/pid")).is_ok_and(|m| pid_pins.contains(&m.ino()));
        if (mentions_dir || holds_pod_pid_ns) && pid != std::process::id() as i32 {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
    let mut mounts = mounts_under(dir);
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in mounts {
        let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
    }
}

/// A gRPC channel over a unix socket.
pub async fn connect(path: &Path) -> anyhow::Result<Channel> {
    let path = path.to_path_buf();
    let channel = Endpoint::try_from("http://[::]:50051")?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
        .context("connect to CRI socket")?;
    Ok(channel)
}

/// Counts the entries of a directory (0 if it does not exist).
pub fn count_entries(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|r| r.count()).unwrap_or(0)
}

/// The berthd binary built beside the test executable (`target/<profile>/berthd`), or `$BERTH_BERTHD`.
pub fn berthd_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("BERTH_BERTHD") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>/berthd
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("berthd"))
        .expect("target dir");
    assert!(
        bin.exists(),
        "{} not built: run `cargo build --workspace --bins` first (hack/test.sh does)",
        bin.display()
    );
    bin
}

/// Mount points at or below `dir`.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = dir.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&prefix))
        .map(str::to_string)
        .collect()
}

/// PIDs of processes whose working directory is under `dir` (shims run in their bundles).
pub fn processes_in(dir: &Path) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                .filter(|pid| std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|c| c.starts_with(dir)))
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until no process runs under `dir`, failing after 10 s.
pub async fn wait_no_processes(dir: &Path) {
    let t0 = std::time::Instant::now();
    while !processes_in(dir).is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "processes left in {}: {:?}",
            dir.display(),
            processes_in(dir)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
