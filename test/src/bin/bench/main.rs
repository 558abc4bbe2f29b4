//! berth-bench: side-by-side benchmarks of CRI runtimes (berthd against containerd), driven over
//! their CRI sockets, with the daemons' memory read from `/proc/<pid>/status`.
//!
//! ```text
//! berth-bench pull --target berth=/run/b/berth.sock:1234 --target containerd=/run/c/c.sock:5678 \
//!                  --image 127.0.0.1:5000/berth/layers:latest [--runs 5] [--warmup 1]
//! berth-bench pods --target berth=/run/b/berth.sock:1234 --target containerd=/run/c/c.sock:5678 \
//!                  --image 127.0.0.1:5000/berth/busybox:latest \
//!                  --shim berth=/tmp/x/bin/berth-shim --state berth=/tmp/x/berth/state \
//!                  --shim containerd=/usr/bin/containerd-shim-runc-v2 --state containerd=/tmp/x/containerd/state \
//!                  --pre-pull containerd=127.0.0.1:5000/berth/pause:3.9 [--runs 20] [--pods 20]
//! ```
//!
//! `hack/bench` starts both daemons on temporary directories and runs this. Each subcommand
//! prints a human table and, as its last line, one JSON object (`{"bench": "<name>", ...}`).
//! To add a benchmark: write a `cmd_<name>(Args)` next to [`cmd_pull`] and [`cmd_pods`] that
//! reuses [`Target`], [`Sampler`], [`Stats`] and [`Goals`], and add an arm to `main`.
//!
//! `pods` only reads other processes (/proc); it never signals any. The pods it creates carry a
//! run label and are removed through CRI at the end, also after an error, SIGINT or SIGTERM.

mod status;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use berth_proto::cri::SecurityProfile;
use berth_proto::cri::image_service_client::ImageServiceClient;
use berth_proto::cri::runtime_service_client::RuntimeServiceClient;
use berth_proto::cri::security_profile::ProfileType;
use berth_proto::cri::{
    ContainerConfig, ContainerFilter, ContainerMetadata, ContainerState, CreateContainerRequest, DnsConfig, ImageSpec,
    KeyValue, LinuxContainerConfig, LinuxContainerResources, LinuxContainerSecurityContext, LinuxPodSandboxConfig,
    LinuxSandboxSecurityContext, ListContainersRequest, ListImagesRequest, ListPodSandboxRequest, NamespaceMode,
    NamespaceOption, PodSandboxConfig, PodSandboxFilter, PodSandboxMetadata, PodSandboxStatusRequest, PullImageRequest,
    RemoveImageRequest, RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest, StatusRequest,
    StopPodSandboxRequest,
};
use berth_proto::tonic::transport::Channel;
use serde_json::json;

const USAGE: &str = "\
usage: berth-bench <benchmark> [options]

benchmarks:
  pull    cold PullImage of one image on each target, alternating which target goes first
  pods    pod + container start time on each target (alternating), then memory with M pods running
  net     RunPodSandbox (network wired, IP checked) and Stop+Remove time on each target (alternating)

common options:
  --target NAME=SOCKET:PID   a CRI daemon to measure (repeat; e.g. berth=/tmp/b/berth.sock:1234)
  --baseline NAME            target the others are compared with (default: containerd)
  --runs N                   measured runs per target (default: 5)
  --warmup N                 unmeasured runs per target first (default: 1)
  --strict                   exit with status 2 when a goal is missed

pull options:
  --image REF                image to pull (required)
  --keep-image               leave the image pulled at the end (default: remove it)
  --timeout SECS             per-pull time limit (default: 600)

pods options (--runs defaults to 20 here):
  --image REF                the container's image, pulled first (not timed); runs `sleep 3600` (required)
  --shim NAME=EXE            the target's shim executable (repeat per target; required)
  --state NAME=DIR           the target's state dir: its shims run in, or are given paths, below it (required per target)
  --pre-pull NAME=REF        also pull REF on that target first, e.g. containerd's sandbox (pause) image (repeatable)
  --pods M                   pods kept running at once per target for the memory figures (default: 20; 0: skip)
  --cgroup-parent PATH       the pods' cgroup_parent (default: /berth-bench; must have no children; removed at the end)
  --log-dir DIR              where the pods' log directories go (default: a temp dir, removed at the end)
  --settle-ms N              wait after starting the M pods before reading memory (default: 2000)

net options (--runs defaults to 20, --warmup to 2):
  --pre-pull NAME=REF        pull REF on that target first (containerd's pause image)
  --cgroup-parent PATH       the pods' cgroup_parent (default: /berth-bench)

goals: pull time <= 0.5x baseline (median); idle RSS of each non-baseline target <= 12 MiB;
       pod + container start <= 0.25x baseline (median); shim RSS per pod of each non-baseline target <= 3 MiB.
";

/// How often the daemon's VmRSS is read while a pull runs.
const SAMPLE_EVERY: Duration = Duration::from_millis(5);
/// How long an image may stay listed after RemoveImage. containerd's GC can be asynchronous; 1.6's
/// CRI RemoveImage deletes the last name with a synchronous GC, so in practice the image is gone at once.
const REMOVE_WAIT: Duration = Duration::from_secs(60);
/// How long a daemon may answer "not ready" before we give up.
const READY_WAIT: Duration = Duration::from_secs(60);

fn main() {
    let mut argv = std::env::args().skip(1);
    let Some(cmd) = argv.next() else {
        eprint!("{USAGE}");
        std::process::exit(64);
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = match cmd.as_str() {
        "pull" => Args::parse(argv, 5, 1).and_then(|a| rt.block_on(cmd_pull(a))),
        "pods" => Args::parse(argv, 20, 1).and_then(|a| rt.block_on(cmd_pods(a))),
        "net" => Args::parse(argv, 20, 2).and_then(|a| rt.block_on(cmd_net(a))),
        "-h" | "--help" | "help" => {
            print!("{USAGE}");
            Ok(Verdict::Pass)
        }
        other => {
            eprint!("berth-bench: unknown benchmark {other:?}\n{USAGE}");
            std::process::exit(64);
        }
    };
    match result {
        Ok(Verdict::Pass) => {}
        Ok(Verdict::Miss { strict }) => std::process::exit(if strict { 2 } else { 0 }),
        Err(e) => {
            eprintln!("berth-bench {cmd}: error: {e:#}");
            std::process::exit(1);
        }
    }
}

/// Whether the goals were met.
enum Verdict {
    Pass,
    Miss { strict: bool },
}

// ---------------------------------------------------------------------------------------------
// Command line

/// Options shared by every benchmark plus the ones of the chosen benchmark (`extra`).
struct Args {
    targets: Vec<Target>,
    baseline: String,
    runs: usize,
    warmup: usize,
    strict: bool,
    /// Benchmark-specific `--flag value` options and bare `--flag`s (value ""), in command-line
    /// order; a flag may be repeated.
    extra: Vec<(String, String)>,
}

impl Args {
    /// Flags that take no value.
    const SWITCHES: &[&str] = &["--strict", "--keep-image"];

    /// Parses the command line; `runs` and `warmup` are the benchmark's defaults.
    fn parse(mut argv: impl Iterator<Item = String>, runs: usize, warmup: usize) -> anyhow::Result<Args> {
        let mut a = Args {
            targets: Vec::new(),
            baseline: "containerd".into(),
            runs,
            warmup,
            strict: false,
            extra: Vec::new(),
        };
        while let Some(flag) = argv.next() {
            let (flag, inline) = match flag.split_once('=') {
                Some((f, v)) if f.starts_with("--") && f != "--target" => (f.to_string(), Some(v.to_string())),
                _ => (flag, None),
            };
            if !flag.starts_with("--") {
                bail!("unexpected argument {flag:?}\n{USAGE}");
            }
            if Self::SWITCHES.contains(&flag.as_str()) {
                if flag == "--strict" {
                    a.strict = true;
                } else {
                    a.extra.push((flag, String::new()));
                }
                continue;
            }
            let value = match inline {
                Some(v) => v,
                None => argv.next().with_context(|| format!("{flag} needs a value"))?,
            };
            match flag.as_str() {
                "--target" => a.targets.push(value.parse()?),
                "--baseline" => a.baseline = value,
                "--runs" => a.runs = parse_num(&flag, &value)?,
                "--warmup" => a.warmup = parse_num(&flag, &value)?,
                _ => a.extra.push((flag, value)),
            }
        }
        if a.targets.is_empty() {
            bail!("at least one --target NAME=SOCKET:PID is needed");
        }
        if a.runs == 0 {
            bail!("--runs must be at least 1");
        }
        for (i, t) in a.targets.iter().enumerate() {
            if a.targets[..i].iter().any(|o| o.name == t.name) {
                bail!("target name {:?} given twice", t.name);
            }
        }
        Ok(a)
    }

    /// Takes a benchmark-specific option (the last one when repeated); the leftovers are
    /// reported by [`Args::finish`].
    fn take(&mut self, flag: &str) -> Option<String> {
        self.take_all(flag).pop()
    }

    /// Takes every occurrence of a repeatable option, in command-line order.
    fn take_all(&mut self, flag: &str) -> Vec<String> {
        let (taken, rest) = std::mem::take(&mut self.extra)
            .into_iter()
            .partition(|(f, _)| f == flag);
        self.extra = rest;
        taken.into_iter().map(|(_, v)| v).collect()
    }

    fn finish(&self) -> anyhow::Result<()> {
        if let Some((flag, _)) = self.extra.first() {
            bail!("unknown option {flag}\n{USAGE}");
        }
        Ok(())
    }
}

fn parse_num<T: std::str::FromStr>(flag: &str, v: &str) -> anyhow::Result<T> {
    v.parse().map_err(|_| anyhow::anyhow!("{flag}: not a number: {v:?}"))
}

/// A daemon under test: a name for the table, its CRI socket and its pid (for RSS).
#[derive(Debug, Clone)]
struct Target {
    name: String,
    socket: PathBuf,
    pid: i32,
}

impl std::str::FromStr for Target {
    type Err = anyhow::Error;

    /// `NAME=SOCKET:PID`.
    fn from_str(s: &str) -> anyhow::Result<Target> {
        let bad = || anyhow::anyhow!("--target {s:?}: expected NAME=SOCKET:PID, e.g. berth=/tmp/b/berth.sock:1234");
        let (name, rest) = s.split_once('=').ok_or_else(bad)?;
        let (socket, pid) = rest.rsplit_once(':').ok_or_else(bad)?;
        if name.is_empty() || socket.is_empty() {
            return Err(bad());
        }
        Ok(Target {
            name: name.to_string(),
            socket: PathBuf::from(socket),
            pid: pid.parse().map_err(|_| bad())?,
        })
    }
}

impl Target {
    async fn images(&self) -> anyhow::Result<ImageServiceClient<Channel>> {
        let ch = berth_test::connect(&self.socket)
            .await
            .with_context(|| format!("{}: connect to {}", self.name, self.socket.display()))?;
        Ok(ImageServiceClient::new(ch).max_decoding_message_size(64 << 20))
    }

    fn rss_kib(&self) -> anyhow::Result<u64> {
        proc_status_kib(self.pid, "VmRSS:").with_context(|| format!("{}: VmRSS of pid {}", self.name, self.pid))
    }
}

// ---------------------------------------------------------------------------------------------
// Memory of a daemon

/// A `kB` field of `/proc/<pid>/status` (VmRSS, VmHWM), in KiB.
fn proc_status_kib(pid: i32, field: &str) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status (is the daemon still running?)"))?;
    parse_status_kib(&text, field).with_context(|| format!("no {field} in /proc/{pid}/status"))
}

fn parse_status_kib(text: &str, field: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(field))?;
    line[field.len()..].split_whitespace().next()?.parse().ok()
}

/// Resets the kernel's peak-RSS mark (VmHWM) of `pid`, so VmHWM after a pull is that pull's exact
/// peak. Needs the right to ptrace the daemon (root). Returns false when not possible.
fn reset_hwm(pid: i32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// CPU time of `pid` and its reaped children (utime + stime + cutime + cstime from
/// `/proc/<pid>/stat`), in ms. The kernel reports it in USER_HZ, which is 100 on Linux.
fn cpu_ms(pid: i32) -> Option<f64> {
    const USER_HZ: f64 = 100.0;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces: field 3
    // (state) is index 0, so utime (14), stime, cutime, cstime (17) are indexes 11..=14.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f
        .get(11..=14)?
        .iter()
        .map(|v| v.parse::<u64>().ok())
        .sum::<Option<u64>>()?;
    Some(ticks as f64 * 1000.0 / USER_HZ)
}

/// The 1-minute load average, to tell a quiet machine from a busy one.
fn loadavg() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Warns when other work competes for the CPUs, which makes every number noisy.
fn check_quiet(when: &str) -> Option<f64> {
    let load = loadavg()?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if load >= 0.5 * cpus as f64 {
        println!(
            "warning: load average {load:.2} {when} on {cpus} CPU(s): other processes compete with the daemons, \
             expect noisy numbers"
        );
    }
    Some(load)
}

/// Reads VmRSS of one pid every [`SAMPLE_EVERY`] on its own thread until stopped.
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Sampled>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Sampled {
    peak_kib: u64,
    samples: u64,
}

impl Sampler {
    fn start(pid: i32) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let path = format!("/proc/{pid}/status");
            let mut s = Sampled::default();
            loop {
                if let Some(kib) = std::fs::read_to_string(&path)
                    .ok()
                    .and_then(|t| parse_status_kib(&t, "VmRSS:"))
                {
                    s.peak_kib = s.peak_kib.max(kib);
                    s.samples += 1;
                }
                // Checked after the read, so the last sample is taken after the pull returned.
                if flag.load(Ordering::Relaxed) {
                    return s;
                }
                std::thread::sleep(SAMPLE_EVERY);
            }
        });
        Sampler { stop, thread }
    }

    fn stop(self) -> Sampled {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// Idle RSS: the median of 20 readings 50 ms apart.
async fn idle_rss_kib(t: &Target) -> anyhow::Result<u64> {
    let mut v = Vec::new();
    for _ in 0..20 {
        v.push(t.rss_kib()? as f64);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(Stats::of(&v).median as u64)
}

// ---------------------------------------------------------------------------------------------
// Statistics, formatting, goals

#[derive(Debug, Clone, Copy)]
struct Stats {
    median: f64,
    min: f64,
    max: f64,
}

impl Stats {
    fn of(values: &[f64]) -> Stats {
        assert!(!values.is_empty(), "stats of nothing");
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Stats {
            median,
            min: v[0],
            max: v[n - 1],
        }
    }

    fn json(&self) -> serde_json::Value {
        json!({ "median": self.median, "min": self.min, "max": self.max })
    }
}

fn mib(kib: f64) -> String {
    format!("{:.1} MiB", kib / 1024.0)
}

fn ms(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.3} s", v / 1000.0)
    } else {
        format!("{v:.1} ms")
    }
}

/// The targets berth is held to, against the baseline (containerd).
struct Goals {
    /// A candidate's median pull time divided by the baseline's.
    max_pull_time_ratio: f64,
    /// A candidate's idle RSS before its first pull.
    max_idle_rss_kib: u64,
    /// A candidate's median pod + container start time divided by the baseline's.
    max_pod_start_ratio: f64,
    /// A candidate's shim RSS per running pod (one container each).
    max_shim_rss_kib_per_pod: u64,
}

const GOALS: Goals = Goals {
    max_pull_time_ratio: 0.5,
    max_idle_rss_kib: 12 * 1024,
    max_pod_start_ratio: 0.25,
    max_shim_rss_kib_per_pod: 3 * 1024,
};

fn pass(ok: bool) -> &'static str {
    if ok { "PASS" } else { "MISS" }
}

// ---------------------------------------------------------------------------------------------
// CRI helpers

fn spec(image: &str) -> Option<ImageSpec> {
    Some(ImageSpec {
        image: image.to_string(),
        ..Default::default()
    })
}

/// Lists the images until the daemon answers (containerd's CRI plugin says "not initialized" for
/// a moment after its socket appears).
async fn wait_ready(t: &Target, c: &mut ImageServiceClient<Channel>) -> anyhow::Result<Vec<berth_proto::cri::Image>> {
    let started = Instant::now();
    loop {
        match c.list_images(ListImagesRequest::default()).await {
            Ok(r) => return Ok(r.into_inner().images),
            Err(e) if started.elapsed() < READY_WAIT => {
                note(&format!("{}: not ready yet ({}); retrying", t.name, e.message()));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => bail!("{}: ListImages: {e}", t.name),
        }
    }
}

fn note(msg: &str) {
    eprintln!("berth-bench: {msg}");
}

/// Does any listed image carry `reference` as a tag, or have the id `id`?
fn listed(images: &[berth_proto::cri::Image], reference: &str, id: Option<&str>) -> bool {
    images
        .iter()
        .any(|i| i.repo_tags.iter().any(|t| t == reference) || id.is_some_and(|id| i.id == id))
}

/// RemoveImage, then poll ListImages until the image is gone. Returns how long that took.
async fn remove_and_wait(
    t: &Target,
    c: &mut ImageServiceClient<Channel>,
    image: &str,
    id: Option<&str>,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    c.remove_image(RemoveImageRequest { image: spec(image) })
        .await
        .with_context(|| format!("{}: RemoveImage {image}", t.name))?;
    if let Some(id) = id {
        // Also by id, in case another name still holds it. NotFound is fine.
        let _ = c.remove_image(RemoveImageRequest { image: spec(id) }).await;
    }
    loop {
        let images = c
            .list_images(ListImagesRequest::default())
            .await
            .with_context(|| format!("{}: ListImages", t.name))?
            .into_inner()
            .images;
        if !listed(&images, image, id) {
            return Ok(started.elapsed());
        }
        if started.elapsed() > REMOVE_WAIT {
            bail!("{}: {image} still listed {REMOVE_WAIT:?} after RemoveImage", t.name);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// pull

/// One measured (or warm-up) pull.
#[derive(Debug, Clone)]
struct PullSample {
    run: usize,
    warmup: bool,
    /// Position in this run's order (0 = went first).
    position: usize,
    pull_ms: f64,
    remove_ms: f64,
    peak_kib: u64,
    /// Kernel peak RSS during the pull (VmHWM after resetting it), when it could be reset.
    hwm_kib: Option<u64>,
    /// CPU time the daemon (and children it reaped) used during the pull.
    cpu_ms: Option<f64>,
    samples: u64,
}

struct PullTarget {
    target: Target,
    client: ImageServiceClient<Channel>,
    idle_kib: u64,
    idle_after_kib: u64,
    samples: Vec<PullSample>,
    image_id: Option<String>,
    other_images: usize,
}

impl PullTarget {
    fn measured(&self) -> impl Iterator<Item = &PullSample> {
        self.samples.iter().filter(|s| !s.warmup)
    }

    fn pull_stats(&self) -> Stats {
        Stats::of(&self.measured().map(|s| s.pull_ms).collect::<Vec<_>>())
    }

    fn peak_stats(&self) -> Stats {
        Stats::of(&self.measured().map(|s| s.peak_kib as f64).collect::<Vec<_>>())
    }

    fn cpu_stats(&self) -> Option<Stats> {
        let v: Option<Vec<f64>> = self.measured().map(|s| s.cpu_ms).collect();
        v.map(|v| Stats::of(&v))
    }

    fn hwm_stats(&self) -> Option<Stats> {
        let v: Option<Vec<f64>> = self.measured().map(|s| s.hwm_kib.map(|k| k as f64)).collect();
        v.map(|v| Stats::of(&v))
    }
}

async fn cmd_pull(mut args: Args) -> anyhow::Result<Verdict> {
    let image = args.take("--image").context("--image REF is required")?;
    let keep_image = args.take("--keep-image").is_some();
    let timeout = Duration::from_secs(parse_num("--timeout", &args.take("--timeout").unwrap_or("600".into()))?);
    args.finish()?;

    // Connect, wait until each daemon answers, then read its idle RSS.
    let mut targets = Vec::new();
    for t in &args.targets {
        let mut client = t.images().await?;
        let images = wait_ready(t, &mut client).await?;
        let other_images = images.iter().filter(|i| !i.repo_tags.contains(&image)).count();
        targets.push(PullTarget {
            target: t.clone(),
            client,
            idle_kib: 0,
            idle_after_kib: 0,
            samples: Vec::new(),
            image_id: None,
            other_images,
        });
    }
    for pt in &mut targets {
        pt.idle_kib = idle_rss_kib(&pt.target).await?;
    }

    println!(
        "== pull {image}: {} measured run(s) + {} warm-up per target, cold (RemoveImage before each pull), \
         first target alternating ==",
        args.runs, args.warmup
    );
    let load_start = check_quiet("at the start");
    for pt in &targets {
        if pt.other_images > 0 {
            println!(
                "note: {} already holds {} other image(s); layers they share with {image} make its pulls partly warm",
                pt.target.name, pt.other_images
            );
        }
    }

    let n = targets.len();
    let total = args.warmup + args.runs;
    for round in 0..total {
        let warmup = round < args.warmup;
        let run = if warmup { round + 1 } else { round - args.warmup + 1 };
        for position in 0..n {
            // Rotate the order each round: with two targets, each goes first every other run.
            let pt = &mut targets[(round + position) % n];
            let sample = pull_once(pt, &image, timeout, run, warmup, position).await?;
            println!(
                "{} {run}/{}  {:<12} pull {:>10}  CPU {:>10}  peak RSS {:>9}{}  (remove wait before: {})",
                if warmup { "warm-up" } else { "run    " },
                if warmup { args.warmup } else { args.runs },
                pt.target.name,
                ms(sample.pull_ms),
                sample.cpu_ms.map(ms).unwrap_or_else(|| "n/a".into()),
                mib(sample.peak_kib as f64),
                sample
                    .hwm_kib
                    .map(|h| format!(", VmHWM {:>9}", mib(h as f64)))
                    .unwrap_or_default(),
                ms(sample.remove_ms),
            );
            let _ = std::io::stdout().flush();
            pt.samples.push(sample);
        }
    }

    for pt in &mut targets {
        if !keep_image {
            let id = pt.image_id.clone();
            remove_and_wait(&pt.target, &mut pt.client, &image, id.as_deref()).await?;
        }
        pt.idle_after_kib = idle_rss_kib(&pt.target).await?;
    }

    let load_end = check_quiet("at the end");
    Ok(report_pull(&args, &image, &targets, [load_start, load_end]))
}

async fn pull_once(
    pt: &mut PullTarget,
    image: &str,
    timeout: Duration,
    run: usize,
    warmup: bool,
    position: usize,
) -> anyhow::Result<PullSample> {
    let t = pt.target.clone();
    let id = pt.image_id.clone();
    let removed = remove_and_wait(&t, &mut pt.client, image, id.as_deref()).await?;
    // Let the removal's frees settle a little, so the sampler measures the pull.
    tokio::time::sleep(Duration::from_millis(100)).await;

    let hwm_reset = reset_hwm(t.pid);
    let cpu_before = cpu_ms(t.pid);
    let sampler = Sampler::start(t.pid);
    let started = Instant::now();
    let res = tokio::time::timeout(
        timeout,
        pt.client.pull_image(PullImageRequest {
            image: spec(image),
            ..Default::default()
        }),
    )
    .await;
    let elapsed = started.elapsed();
    let sampled = sampler.stop();
    let cpu_after = cpu_ms(t.pid);
    let resp = res
        .map_err(|_| anyhow::anyhow!("{}: PullImage {image} took longer than {timeout:?}", t.name))?
        .with_context(|| format!("{}: PullImage {image}", t.name))?
        .into_inner();
    pt.image_id = Some(resp.image_ref);
    let hwm_kib = if hwm_reset {
        proc_status_kib(t.pid, "VmHWM:").ok()
    } else {
        None
    };
    Ok(PullSample {
        run,
        warmup,
        position,
        pull_ms: elapsed.as_secs_f64() * 1000.0,
        remove_ms: removed.as_secs_f64() * 1000.0,
        peak_kib: sampled.peak_kib,
        hwm_kib,
        cpu_ms: cpu_before.zip(cpu_after).map(|(b, a)| a - b),
        samples: sampled.samples,
    })
}

fn report_pull(args: &Args, image: &str, targets: &[PullTarget], load: [Option<f64>; 2]) -> Verdict {
    println!();
    println!("pull {image}: {} measured runs per target", args.runs);
    println!("  pull        PullImage wall clock at the client, after RemoveImage and waiting until ListImages no");
    println!("              longer shows the image (the registry's files stay in the host page cache for both)");
    println!("  peak RSS    highest VmRSS sampled every {SAMPLE_EVERY:?} during the pull");
    println!("  VmHWM       the kernel's exact peak RSS during the pull (reset through clear_refs before it)");
    println!("  CPU         CPU time (user+sys, 10 ms ticks) the daemon used during the pull");
    println!("  idle RSS    median VmRSS over 1 s at the start of this benchmark, before its first pull");
    println!("  idle after  the same after the last run and the final RemoveImage");
    println!();
    println!(
        "{:<12} {:>10} {:>10} {:>10} {:>10} {:>12} {:>11} {:>10} {:>10}",
        "target", "pull med", "pull min", "pull max", "CPU med", "peak RSS med", "VmHWM med", "idle RSS", "idle after"
    );
    for pt in targets {
        let p = pt.pull_stats();
        println!(
            "{:<12} {:>10} {:>10} {:>10} {:>10} {:>12} {:>11} {:>10} {:>10}",
            pt.target.name,
            ms(p.median),
            ms(p.min),
            ms(p.max),
            pt.cpu_stats().map(|s| ms(s.median)).unwrap_or_else(|| "n/a".into()),
            mib(pt.peak_stats().median),
            pt.hwm_stats().map(|s| mib(s.median)).unwrap_or_else(|| "n/a".into()),
            mib(pt.idle_kib as f64),
            mib(pt.idle_after_kib as f64),
        );
    }

    let base = targets.iter().find(|pt| pt.target.name == args.baseline);
    let mut all_ok = true;
    let mut comparisons = Vec::new();
    println!();
    if base.is_none() {
        println!("(no target named {:?}: no ratios)", args.baseline);
    }
    for pt in targets.iter().filter(|pt| pt.target.name != args.baseline) {
        let name = &pt.target.name;
        let idle_ok = pt.idle_kib <= GOALS.max_idle_rss_kib;
        let mut cmp = json!({
            "target": name,
            "idle_rss_kib": pt.idle_kib,
            "goal_idle_rss_kib": GOALS.max_idle_rss_kib,
            "idle_rss_ok": idle_ok,
        });
        if let Some(base) = base {
            let time_ratio = pt.pull_stats().median / base.pull_stats().median;
            let peak_ratio = pt.peak_stats().median / base.peak_stats().median;
            let idle_ratio = pt.idle_kib as f64 / base.idle_kib as f64;
            let cpu_ratio = pt.cpu_stats().zip(base.cpu_stats()).map(|(c, b)| c.median / b.median);
            let time_ok = time_ratio <= GOALS.max_pull_time_ratio;
            all_ok &= time_ok;
            println!(
                "ratio {name}/{}: pull time {time_ratio:.2}x, CPU {}, peak RSS {peak_ratio:.2}x, idle RSS {idle_ratio:.2}x",
                args.baseline,
                cpu_ratio.map(|r| format!("{r:.2}x")).unwrap_or_else(|| "n/a".into()),
            );
            println!(
                "goal  pull time <= {:.2}x {}: {name} {time_ratio:.2}x  {}",
                GOALS.max_pull_time_ratio,
                args.baseline,
                pass(time_ok)
            );
            cmp["baseline"] = json!(args.baseline);
            cmp["pull_time_ratio"] = json!(time_ratio);
            cmp["peak_rss_ratio"] = json!(peak_ratio);
            cmp["idle_rss_ratio"] = json!(idle_ratio);
            cmp["cpu_ratio"] = json!(cpu_ratio);
            cmp["goal_pull_time_ratio"] = json!(GOALS.max_pull_time_ratio);
            cmp["pull_time_ok"] = json!(time_ok);
        }
        all_ok &= idle_ok;
        println!(
            "goal  {name} idle RSS <= {}: {}  {}",
            mib(GOALS.max_idle_rss_kib as f64),
            mib(pt.idle_kib as f64),
            pass(idle_ok)
        );
        comparisons.push(cmp);
    }

    let json_targets: Vec<_> = targets
        .iter()
        .map(|pt| {
            json!({
                "name": pt.target.name,
                "pid": pt.target.pid,
                "socket": pt.target.socket,
                "pull_ms": pt.pull_stats().json(),
                "peak_rss_kib": pt.peak_stats().json(),
                "vmhwm_kib": pt.hwm_stats().map(|s| s.json()),
                "cpu_ms": pt.cpu_stats().map(|s| s.json()),
                "idle_rss_kib": pt.idle_kib,
                "idle_after_rss_kib": pt.idle_after_kib,
                "other_images": pt.other_images,
                "samples": pt.samples.iter().map(|s| json!({
                    "run": s.run,
                    "warmup": s.warmup,
                    "position": s.position,
                    "pull_ms": s.pull_ms,
                    "remove_wait_ms": s.remove_ms,
                    "peak_rss_kib": s.peak_kib,
                    "vmhwm_kib": s.hwm_kib,
                    "cpu_ms": s.cpu_ms,
                    "rss_samples": s.samples,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let out = json!({
        "bench": "pull",
        "image": image,
        "runs": args.runs,
        "warmup": args.warmup,
        "sample_interval_ms": SAMPLE_EVERY.as_millis() as u64,
        "loadavg_start": load[0],
        "loadavg_end": load[1],
        "targets": json_targets,
        "comparisons": comparisons,
        "goals_met": all_ok,
    });
    println!();
    println!("{out}");
    if all_ok {
        Verdict::Pass
    } else {
        Verdict::Miss { strict: args.strict }
    }
}

// ---------------------------------------------------------------------------------------------
// pods

/// Kubernetes namespace of every pod this benchmark creates.
const POD_NAMESPACE: &str = "berth-bench";
/// Label carrying this run's id on every pod it creates: cleanup lists pods by it.
const RUN_LABEL: &str = "berth-bench.run";
/// The one container of every pod.
const CONTAINER_NAME: &str = "busybox";
/// Time limit of each CRI call (a hung daemon must not hang the benchmark).
const RPC_TIMEOUT: Duration = Duration::from_secs(120);
/// How long teardown may take to make shims exit and cgroups disappear.
const TEARDOWN_WAIT: Duration = Duration::from_secs(20);

/// What `pods` needs besides [`Args`].
#[derive(Debug, Clone)]
struct PodsOpts {
    image: String,
    /// M: pods kept running for the memory measurement.
    pods: usize,
    cgroup_parent: String,
    log_dir: PathBuf,
    /// Remove `log_dir` at the end (we created it).
    own_log_dir: bool,
    /// (target, image) pulled on that target before anything is timed.
    pre_pull: Vec<(String, String)>,
    /// Wait between the last of the M pods started and the memory readings.
    settle: Duration,
    /// Unique per invocation: in pod uids and the [`RUN_LABEL`].
    run_id: String,
    /// Pods started at once while status calls are timed (0: not measured).
    burst: usize,
}

/// How to find a target's per-pod processes: its shims run `exe` with their working directory or an
/// argument under `state` (both compared after resolving symlinks); see [`shims_of`].
#[derive(Debug, Clone)]
struct ProcMatch {
    exe: PathBuf,
    state: PathBuf,
}

#[derive(Debug, Clone, Copy)]
struct StartSample {
    warmup: bool,
    /// Position in this round's order (0 = went first).
    position: usize,
    run_ms: f64,
    create_ms: f64,
    start_ms: f64,
}

impl StartSample {
    fn total_ms(&self) -> f64 {
        self.run_ms + self.create_ms + self.start_ms
    }
}

/// One process's memory: VmRSS and, where readable, PSS (shared pages split among their users).
#[derive(Debug, Clone, Copy)]
struct ProcMem {
    pid: i32,
    rss_kib: u64,
    pss_kib: Option<u64>,
}

fn sum_rss(p: &[ProcMem]) -> u64 {
    p.iter().map(|m| m.rss_kib).sum()
}

fn sum_pss(p: &[ProcMem]) -> Option<u64> {
    p.iter().map(|m| m.pss_kib).sum()
}

/// Memory with M pods running on one target.
#[derive(Debug, Clone, Default)]
struct PodMem {
    /// M: pods running while memory was read.
    pods: usize,
    /// RunPodSandbox + CreateContainer + StartContainer of each of the M pods, while the others run.
    fill: Vec<StartSample>,
    /// Daemon VmRSS right before the M pods were started, and with them running.
    daemon_before_kib: u64,
    daemon_with_kib: u64,
    shims: Vec<ProcMem>,
    /// The sandbox ("infra", pause) processes the runtime reports (PodSandboxStatus verbose `pid`).
    infra: Vec<ProcMem>,
    /// Command line of one infra process, to show what it is.
    infra_cmdline: Option<String>,
    /// Processes whose parent is one of the shims (containers and infra processes).
    shim_children: usize,
}

impl PodMem {
    fn overhead(&self) -> Vec<ProcMem> {
        self.shims.iter().chain(&self.infra).copied().collect()
    }
}

struct PodTarget {
    target: Target,
    procs: ProcMatch,
    rt: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
    /// Pods created so far (names and uids are numbered by it).
    seq: usize,
    starts: Vec<StartSample>,
    fresh_kib: u64,
    mem: PodMem,
    /// Network namespace pins and other mounts the pods had (from verbose PodSandboxStatus),
    /// checked after teardown.
    pod_mounts: BTreeSet<String>,
    /// Runtime conditions from Status (e.g. NetworkReady=false).
    conditions: Vec<String>,
    /// Each pod's log directory, removed with the pod.
    pod_logs: HashMap<String, PathBuf>,
    /// Status call latency, idle and while pods start.
    status: Option<status::StatusLatency>,
}

impl PodTarget {
    fn starts_measured(&self) -> impl Iterator<Item = &StartSample> {
        self.starts.iter().filter(|s| !s.warmup)
    }

    fn stats(&self, f: impl Fn(&StartSample) -> f64) -> Stats {
        Stats::of(&self.starts_measured().map(f).collect::<Vec<_>>())
    }

    fn fill_stats(&self) -> Option<Stats> {
        (!self.mem.fill.is_empty())
            .then(|| Stats::of(&self.mem.fill.iter().map(StartSample::total_ms).collect::<Vec<_>>()))
    }

    /// A memory sum divided by the number of pods that were running (M).
    fn per_pod(&self, kib: u64) -> f64 {
        kib as f64 / self.mem.pods.max(1) as f64
    }
}

/// Parses repeated `NAME=VALUE` options into a map, refusing unknown target names and repeats.
fn per_target(flag: &str, values: Vec<String>, targets: &[Target]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut m = BTreeMap::new();
    for (name, value) in per_target_multi(flag, values, targets)? {
        if m.contains_key(&name) {
            bail!("{flag}: target {name:?} given twice");
        }
        m.insert(name, value);
    }
    Ok(m)
}

async fn cmd_pods(mut args: Args) -> anyhow::Result<Verdict> {
    let image = args.take("--image").context("--image REF is required")?;
    let pods: usize = parse_num("--pods", &args.take("--pods").unwrap_or("20".into()))?;
    let cgroup_parent = args.take("--cgroup-parent").unwrap_or("/berth-bench".into());
    if !cgroup_parent.starts_with('/') || cgroup_parent.len() < 2 || cgroup_parent.contains("..") {
        bail!("--cgroup-parent must be an absolute cgroupfs path like /berth-bench, got {cgroup_parent:?}");
    }
    let settle = Duration::from_millis(parse_num(
        "--settle-ms",
        &args.take("--settle-ms").unwrap_or("2000".into()),
    )?);
    let shims = per_target("--shim", args.take_all("--shim"), &args.targets)?;
    let states = per_target("--state", args.take_all("--state"), &args.targets)?;
    let pre_pull = per_target_multi("--pre-pull", args.take_all("--pre-pull"), &args.targets)?;
    let log_dir_arg = args.take("--log-dir");
    let burst: usize = parse_num("--burst", &args.take("--burst").unwrap_or("10".into()))?;
    args.finish()?;

    let run_id = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs()
    );
    let (log_dir, own_log_dir) = match log_dir_arg {
        Some(d) => (PathBuf::from(d), false),
        None => (std::env::temp_dir().join(format!("berth-bench-logs-{run_id}")), true),
    };
    std::fs::create_dir_all(&log_dir).with_context(|| format!("create {}", log_dir.display()))?;
    let o = PodsOpts {
        image,
        pods,
        cgroup_parent,
        log_dir,
        own_log_dir,
        pre_pull,
        settle,
        run_id,
        burst,
    };

    // A leftover parent with pods in it means another run (or a crashed one) is using it.
    let busy = cgroup_children(&o.cgroup_parent);
    if !busy.is_empty() {
        bail!(
            "cgroup parent {} already has children (another benchmark running, or leftovers): {busy:?}",
            o.cgroup_parent
        );
    }

    let mut targets = Vec::new();
    for t in &args.targets {
        let (Some(exe), Some(state)) = (shims.get(&t.name), states.get(&t.name)) else {
            bail!(
                "{}: --shim {0}=EXE and --state {0}=DIR are needed to find its per-pod processes",
                t.name
            );
        };
        let procs = ProcMatch {
            exe: std::fs::canonicalize(exe).with_context(|| format!("--shim {}={exe}", t.name))?,
            state: std::fs::canonicalize(state).with_context(|| format!("--state {}={state}", t.name))?,
        };
        let ch = berth_test::connect(&t.socket)
            .await
            .with_context(|| format!("{}: connect to {}", t.name, t.socket.display()))?;
        targets.push(PodTarget {
            target: t.clone(),
            procs,
            rt: RuntimeServiceClient::new(ch.clone()).max_decoding_message_size(64 << 20),
            images: ImageServiceClient::new(ch).max_decoding_message_size(64 << 20),
            seq: 0,
            starts: Vec::new(),
            fresh_kib: 0,
            mem: PodMem::default(),
            pod_mounts: BTreeSet::new(),
            conditions: Vec::new(),
            pod_logs: HashMap::new(),
            status: None,
        });
    }

    // The work, raced with SIGINT/SIGTERM; whatever happens, every pod of this run is removed after.
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let res = tokio::select! {
        r = pods_run(&args, &o, &mut targets) => r,
        _ = sigterm.recv() => Err(anyhow::anyhow!("terminated (SIGTERM)")),
        _ = sigint.recv() => Err(anyhow::anyhow!("interrupted (SIGINT)")),
    };
    if let Err(e) = &res {
        note(&format!("pods: {e:#}; removing this run's pods"));
    }
    let cleanup = tokio::time::timeout(Duration::from_secs(90), pods_cleanup(&o, &mut targets)).await;
    if o.own_log_dir {
        let _ = std::fs::remove_dir_all(&o.log_dir);
    }
    let cleanup = cleanup
        .map_err(|_| anyhow::anyhow!("cleanup took longer than 90 s"))
        .and_then(|c| c);
    let load = match res {
        Ok(load) => load,
        Err(e) => {
            match &cleanup {
                Ok(c) => note(&c.summary(&o, &targets)),
                Err(ce) => note(&format!("cleanup failed too: {ce:#}")),
            }
            return Err(e);
        }
    };
    let cleanup = cleanup?;
    let verdict = report_pods(&args, &o, &targets, load, &cleanup);
    let status: Vec<_> = targets
        .iter()
        .filter_map(|pt| Some((pt.target.name.clone(), pt.status.clone()?)))
        .collect();
    status::report(&status);
    if !cleanup.clean() {
        bail!("teardown left things behind (see \"cleanup\" above)");
    }
    Ok(verdict)
}

/// Like [`per_target`], but a target may be named several times (`--pre-pull containerd=a --pre-pull containerd=b`).
fn per_target_multi(flag: &str, values: Vec<String>, targets: &[Target]) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for v in values {
        let (name, value) = v
            .split_once('=')
            .filter(|(n, v)| !n.is_empty() && !v.is_empty())
            .with_context(|| format!("{flag} {v:?}: expected NAME=VALUE"))?;
        if !targets.iter().any(|t| t.name == name) {
            bail!("{flag} {v:?}: no --target named {name:?}");
        }
        out.push((name.to_string(), value.to_string()));
    }
    Ok(out)
}

/// Bounds one CRI call by [`RPC_TIMEOUT`] and names it in errors.
async fn rpc<T>(
    what: String,
    fut: impl std::future::Future<Output = Result<berth_proto::tonic::Response<T>, berth_proto::tonic::Status>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(RPC_TIMEOUT, fut).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(s)) => bail!("{what}: {:?}: {}", s.code(), s.message()),
        Err(_) => bail!("{what}: no answer within {RPC_TIMEOUT:?}"),
    }
}

/// Everything that is measured; returns the load averages at start and end.
async fn pods_run(args: &Args, o: &PodsOpts, targets: &mut [PodTarget]) -> anyhow::Result<[Option<f64>; 2]> {
    // Ready, conditions, images (not timed), fresh RSS.
    for pt in targets.iter_mut() {
        wait_ready(&pt.target, &mut pt.images).await?;
        let st = rpc(
            format!("{}: Status", pt.target.name),
            pt.rt.status(StatusRequest { verbose: false }),
        )
        .await?;
        pt.conditions = st
            .status
            .map(|s| {
                s.conditions
                    .iter()
                    .map(|c| {
                        let mut t = format!("{}={}", c.r#type, c.status);
                        if !c.status && !c.reason.is_empty() {
                            t += &format!(" ({})", c.reason);
                        }
                        t
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut pulls = vec![o.image.clone()];
        pulls.extend(
            o.pre_pull
                .iter()
                .filter(|(n, _)| *n == pt.target.name)
                .map(|(_, i)| i.clone()),
        );
        for img in pulls {
            let t0 = Instant::now();
            rpc(
                format!("{}: PullImage {img}", pt.target.name),
                pt.images.pull_image(PullImageRequest {
                    image: spec(&img),
                    ..Default::default()
                }),
            )
            .await?;
            note(&format!(
                "{}: pulled {img} (not timed: {})",
                pt.target.name,
                ms(t0.elapsed().as_secs_f64() * 1000.0)
            ));
        }
    }
    for pt in targets.iter_mut() {
        pt.fresh_kib = idle_rss_kib(&pt.target).await?;
    }

    println!(
        "== pods: RunPodSandbox + CreateContainer + StartContainer of {} (`sleep 3600`), {} measured run(s) + {} \
         warm-up per target, first target alternating; then {} pods running per target ==",
        o.image, args.runs, args.warmup, o.pods
    );
    let load_start = check_quiet("at the start");
    for pt in targets.iter() {
        println!(
            "{:<12} runtime conditions: {}",
            pt.target.name,
            pt.conditions.join(", ")
        );
    }

    // 1. Start latency: one pod at a time, removed (not timed) before the next.
    let n = targets.len();
    for round in 0..args.warmup + args.runs {
        let warmup = round < args.warmup;
        let run = if warmup { round + 1 } else { round - args.warmup + 1 };
        for position in 0..n {
            let pt = &mut targets[(round + position) % n];
            let (id, mut s) = start_pod(pt, o, "start").await?;
            s.warmup = warmup;
            s.position = position;
            check_running(pt, &id).await?;
            remember_pod_mounts(pt, &id).await?;
            remove_pod(pt, &id).await?;
            println!(
                "{} {:<7} {:<12} pod+container {:>10}  (RunPodSandbox {:>9}, CreateContainer {:>9}, StartContainer {:>9})",
                if warmup { "warm-up" } else { "run    " },
                format!("{run}/{}", if warmup { args.warmup } else { args.runs }),
                pt.target.name,
                ms(s.total_ms()),
                ms(s.run_ms),
                ms(s.create_ms),
                ms(s.start_ms),
            );
            let _ = std::io::stdout().flush();
            pt.starts.push(s);
        }
        // Let the teardown's asynchronous work (shim exits, cgroup removal) finish before the next round.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // 2. M pods running on every target at once.
    if o.pods > 0 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        for pt in targets.iter_mut() {
            pt.mem.daemon_before_kib = idle_rss_kib(&pt.target).await?;
        }
        let mut ids: Vec<Vec<String>> = vec![Vec::new(); n];
        let t0 = Instant::now();
        for i in 0..o.pods {
            for position in 0..n {
                let k = (i + position) % n;
                let pt = &mut targets[k];
                let (id, mut s) = start_pod(pt, o, "fill").await?;
                s.position = position;
                pt.mem.fill.push(s);
                // Not timed; right away, so that an interrupted run still checks these mounts.
                remember_pod_mounts(pt, &id).await?;
                ids[k].push(id);
            }
        }
        for (pt, ids) in targets.iter_mut().zip(&ids) {
            for id in ids {
                check_running(pt, id).await?;
            }
        }
        println!(
            "started {} pods on each target in {} (interleaved); waiting {} before reading memory",
            o.pods,
            ms(t0.elapsed().as_secs_f64() * 1000.0),
            ms(o.settle.as_secs_f64() * 1000.0)
        );
        tokio::time::sleep(o.settle).await;
        for (pt, ids) in targets.iter_mut().zip(&ids) {
            measure_pod_memory(pt, ids, o.pods).await?;
        }
        // 3. Status calls while a burst of pods starts, with the M pods running.
        if o.burst > 0 {
            for pt in targets.iter_mut() {
                let probe = any_container(pt).await?;
                pt.status = Some(status::measure(pt, o, &probe, o.burst, Duration::from_secs(2)).await?);
            }
        }
    }
    let load_end = check_quiet("at the end");
    Ok([load_start, load_end])
}

/// Kubelet-like configs: labels kubelet sets, a pod log directory, a cgroup parent, DNS config,
/// pod-level network and IPC namespaces, a PID namespace per container, BestEffort resources.
fn pod_config(o: &PodsOpts, name: &str, uid: &str, log_dir: &std::path::Path) -> PodSandboxConfig {
    let labels = HashMap::from([
        (RUN_LABEL.to_string(), o.run_id.clone()),
        ("io.kubernetes.pod.name".to_string(), name.to_string()),
        ("io.kubernetes.pod.namespace".to_string(), POD_NAMESPACE.to_string()),
        ("io.kubernetes.pod.uid".to_string(), uid.to_string()),
    ]);
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.to_string(),
            uid: uid.to_string(),
            namespace: POD_NAMESPACE.to_string(),
            attempt: 0,
        }),
        hostname: name.to_string(),
        log_directory: log_dir.display().to_string(),
        dns_config: Some(DnsConfig {
            servers: vec!["10.96.0.10".into()],
            searches: vec![
                format!("{POD_NAMESPACE}.svc.cluster.local"),
                "svc.cluster.local".into(),
                "cluster.local".into(),
            ],
            options: vec!["ndots:5".into()],
        }),
        labels,
        annotations: HashMap::from([
            ("kubernetes.io/config.source".to_string(), "api".to_string()),
            (
                "kubernetes.io/config.seen".to_string(),
                "2024-01-01T00:00:00Z".to_string(),
            ),
        ]),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: o.cgroup_parent.clone(),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: NamespaceMode::Pod as i32,
                    pid: NamespaceMode::Container as i32,
                    ipc: NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn container_config(o: &PodsOpts, pod: &PodSandboxConfig) -> ContainerConfig {
    let meta = pod.metadata.clone().unwrap_or_default();
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: CONTAINER_NAME.into(),
            attempt: 0,
        }),
        image: spec(&o.image),
        command: vec!["sleep".into(), "3600".into()],
        envs: vec![KeyValue {
            key: "KUBERNETES_SERVICE_HOST".into(),
            value: "10.96.0.1".into(),
        }],
        labels: HashMap::from([
            ("io.kubernetes.container.name".to_string(), CONTAINER_NAME.to_string()),
            ("io.kubernetes.pod.name".to_string(), meta.name),
            ("io.kubernetes.pod.namespace".to_string(), meta.namespace),
            ("io.kubernetes.pod.uid".to_string(), meta.uid),
        ]),
        annotations: HashMap::from([
            ("io.kubernetes.container.restartCount".to_string(), "0".to_string()),
            (
                "io.kubernetes.container.terminationMessagePath".to_string(),
                "/dev/termination-log".to_string(),
            ),
        ]),
        // kubelet's form: <pod log dir>/<container>/<restart count>.log
        log_path: format!("{CONTAINER_NAME}/0.log"),
        linux: Some(LinuxContainerConfig {
            resources: Some(LinuxContainerResources {
                cpu_period: 100_000,
                cpu_shares: 2,
                oom_score_adj: 1000,
                ..Default::default()
            }),
            security_context: Some(LinuxContainerSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: NamespaceMode::Pod as i32,
                    pid: NamespaceMode::Container as i32,
                    ipc: NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                // What kubelet sends for a pod that names no profile (its SeccompDefault is off by
                // default): an explicit Unconfined, so both runtimes get the same request.
                seccomp: Some(SecurityProfile {
                    profile_type: ProfileType::Unconfined as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }),
        ..Default::default()
    }
}

/// The timed part: RunPodSandbox, CreateContainer, StartContainer. The log directories are made
/// first (kubelet makes them) and not timed.
async fn start_pod(pt: &mut PodTarget, o: &PodsOpts, kind: &str) -> anyhow::Result<(String, StartSample)> {
    let i = pt.seq;
    pt.seq += 1;
    let name = format!("{kind}-{i}");
    let uid = format!("{}-{}-{i}", o.run_id, pt.target.name);
    let log_dir = o
        .log_dir
        .join(&pt.target.name)
        .join(format!("{POD_NAMESPACE}_{name}_{uid}"));
    std::fs::create_dir_all(log_dir.join(CONTAINER_NAME)).with_context(|| format!("create {}", log_dir.display()))?;
    let pod = pod_config(o, &name, &uid, &log_dir);
    let ctr = container_config(o, &pod);
    let who = pt.target.name.clone();

    let t0 = Instant::now();
    let id = rpc(
        format!("{who}: RunPodSandbox {name}"),
        pt.rt.run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod.clone()),
            runtime_handler: String::new(),
        }),
    )
    .await?
    .pod_sandbox_id;
    let t1 = Instant::now();
    let cid = rpc(
        format!("{who}: CreateContainer in {name}"),
        pt.rt.create_container(CreateContainerRequest {
            pod_sandbox_id: id.clone(),
            config: Some(ctr),
            sandbox_config: Some(pod),
        }),
    )
    .await?
    .container_id;
    let t2 = Instant::now();
    rpc(
        format!("{who}: StartContainer in {name}"),
        pt.rt.start_container(StartContainerRequest { container_id: cid }),
    )
    .await?;
    let t3 = Instant::now();
    pt.pod_logs.insert(id.clone(), log_dir);
    let msf = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1000.0;
    Ok((
        id,
        StartSample {
            warmup: false,
            position: 0,
            run_ms: msf(t0, t1),
            create_ms: msf(t1, t2),
            start_ms: msf(t2, t3),
        },
    ))
}

/// A container of the target (for the status probe).
async fn any_container(pt: &mut PodTarget) -> anyhow::Result<String> {
    let who = pt.target.name.clone();
    let list = rpc(
        format!("{who}: ListContainers"),
        pt.rt.list_containers(ListContainersRequest::default()),
    )
    .await?;
    list.containers
        .into_iter()
        .next()
        .map(|c| c.id)
        .with_context(|| format!("{who}: no container to probe"))
}

/// The pod's container must be running (not timed).
async fn check_running(pt: &mut PodTarget, pod_id: &str) -> anyhow::Result<()> {
    let who = pt.target.name.clone();
    let cs = rpc(
        format!("{who}: ListContainers"),
        pt.rt.list_containers(ListContainersRequest {
            filter: Some(ContainerFilter {
                pod_sandbox_id: pod_id.to_string(),
                ..Default::default()
            }),
        }),
    )
    .await?
    .containers;
    if cs.len() != 1 || cs[0].state != ContainerState::ContainerRunning as i32 {
        bail!(
            "{who}: pod {pod_id} should have one running container, has {:?}",
            cs.iter().map(|c| (&c.id, c.state)).collect::<Vec<_>>()
        );
    }
    Ok(())
}

/// Verbose PodSandboxStatus's `info` document (the runtime's own JSON), if any.
async fn pod_info(pt: &mut PodTarget, pod_id: &str) -> anyhow::Result<serde_json::Value> {
    let r = rpc(
        format!("{}: PodSandboxStatus", pt.target.name),
        pt.rt.pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod_id.to_string(),
            verbose: true,
        }),
    )
    .await?;
    Ok(r.info
        .get("info")
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or(serde_json::Value::Null))
}

/// Remembers the pod's mounts that teardown must remove: the absolute paths in its verbose status
/// that are network namespace pins (`.../netns/...`) or lie under the target's state directory,
/// and are mount points now.
async fn remember_pod_mounts(pt: &mut PodTarget, pod_id: &str) -> anyhow::Result<()> {
    let info = pod_info(pt, pod_id).await?;
    let mut paths = Vec::new();
    json_strings(&info, &mut paths);
    let mounted = mount_points();
    let state = pt.procs.state.display().to_string();
    for p in paths {
        if p.starts_with('/') && (p.contains("/netns/") || p.starts_with(&state)) && mounted.contains(&p) {
            pt.pod_mounts.insert(p);
        }
    }
    Ok(())
}

fn json_strings(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(a) => a.iter().for_each(|v| json_strings(v, out)),
        serde_json::Value::Object(m) => m.values().for_each(|v| json_strings(v, out)),
        _ => {}
    }
}

/// StopPodSandbox + RemovePodSandbox (they stop and remove the containers), then the log dir.
async fn remove_pod(pt: &mut PodTarget, pod_id: &str) -> anyhow::Result<()> {
    let who = pt.target.name.clone();
    rpc(
        format!("{who}: StopPodSandbox {pod_id}"),
        pt.rt.stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod_id.to_string(),
        }),
    )
    .await?;
    rpc(
        format!("{who}: RemovePodSandbox {pod_id}"),
        pt.rt.remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod_id.to_string(),
        }),
    )
    .await?;
    if let Some(dir) = pt.pod_logs.remove(pod_id) {
        let _ = std::fs::remove_dir_all(dir);
    }
    Ok(())
}

// --- processes --------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Proc {
    pid: i32,
    ppid: i32,
    exe: Option<PathBuf>,
    cwd: Option<PathBuf>,
    args: Vec<String>,
}

/// Every process in /proc (those that vanish while we read are skipped).
fn processes() -> Vec<Proc> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // After the parenthesised command: state, ppid, ...
            let ppid = stat[stat.rfind(')')? + 1..].split_whitespace().nth(1)?.parse().ok()?;
            let link = |what: &str| {
                std::fs::read_link(format!("/proc/{pid}/{what}")).ok().map(|p| {
                    let s = p.to_string_lossy();
                    PathBuf::from(s.strip_suffix(" (deleted)").unwrap_or(&s))
                })
            };
            Some(Proc {
                pid,
                ppid,
                exe: link("exe"),
                cwd: link("cwd"),
                args: cmdline_args(pid),
            })
        })
        .collect()
}

/// The target's shims: processes running its shim executable whose working directory (the bundle
/// containerd's shims stay in) or one of whose arguments (berth-shim moves to / but is given its
/// daemon's event and socket paths) lies under its state directory. Other runtimes' and other
/// daemons' shims, even of the same executable, do not match.
fn shims_of<'a>(procs: &'a [Proc], m: &ProcMatch) -> impl Iterator<Item = &'a Proc> {
    procs.iter().filter(move |p| {
        p.exe.as_deref() == Some(m.exe.as_path())
            && (p.cwd.as_deref().is_some_and(|c| c.starts_with(&m.state))
                || p.args.iter().any(|a| std::path::Path::new(a).starts_with(&m.state)))
    })
}

fn proc_mem(pid: i32) -> Option<ProcMem> {
    let rss_kib = proc_status_kib(pid, "VmRSS:").ok()?;
    let pss_kib = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|t| parse_status_kib(&t, "Pss:"));
    Some(ProcMem { pid, rss_kib, pss_kib })
}

fn cmdline_args(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

fn cmdline(pid: i32) -> Option<String> {
    Some(cmdline_args(pid).join(" ")).filter(|c| !c.is_empty())
}

/// Memory of the daemon, its shims and its pods' infra processes with `ids` running. Processes are
/// read five times 200 ms apart; each figure is the median of the five sums.
async fn measure_pod_memory(pt: &mut PodTarget, ids: &[String], m: usize) -> anyhow::Result<()> {
    let who = pt.target.name.clone();
    // Infra processes: what the runtime reports as the sandbox's pid, checked to be a child of one
    // of this target's shims (so it is a process of ours).
    let procs = processes();
    let shims: Vec<i32> = shims_of(&procs, &pt.procs).map(|p| p.pid).collect();
    if shims.is_empty() {
        bail!(
            "{who}: no shim processes found (exe {}, cwd under {})",
            pt.procs.exe.display(),
            pt.procs.state.display()
        );
    }
    let mut infra = Vec::new();
    for id in ids {
        let info = pod_info(pt, id).await?;
        let Some(pid) = info.get("pid").and_then(|p| p.as_i64()).filter(|p| *p > 0) else {
            continue;
        };
        let pid = pid as i32;
        match procs.iter().find(|p| p.pid == pid) {
            Some(p) if shims.contains(&p.ppid) => infra.push(pid),
            Some(p) => bail!(
                "{who}: pod {id}'s sandbox pid {pid} is not a child of one of its shims (ppid {})",
                p.ppid
            ),
            None => bail!("{who}: pod {id}'s sandbox pid {pid} does not exist"),
        }
    }
    if !infra.is_empty() && infra.len() != ids.len() {
        bail!("{who}: {} of {} pods report a sandbox process", infra.len(), ids.len());
    }
    pt.mem.infra_cmdline = infra.first().and_then(|p| cmdline(*p));
    pt.mem.shim_children = procs.iter().filter(|p| shims.contains(&p.ppid)).count();

    let mut readings: Vec<(u64, Vec<ProcMem>, Vec<ProcMem>)> = Vec::new();
    for _ in 0..5 {
        let s: Vec<ProcMem> = shims.iter().filter_map(|p| proc_mem(*p)).collect();
        let i: Vec<ProcMem> = infra.iter().filter_map(|p| proc_mem(*p)).collect();
        if s.len() != shims.len() || i.len() != infra.len() {
            bail!("{who}: a shim or infra process exited while its pod was running");
        }
        readings.push((pt.target.rss_kib()?, s, i));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The reading whose total overhead is the median one (so shims and infra stay consistent).
    readings.sort_by_key(|(_, s, i)| sum_rss(s) + sum_rss(i));
    let (_, s, i) = readings[readings.len() / 2].clone();
    let mut daemon: Vec<u64> = readings.iter().map(|r| r.0).collect();
    daemon.sort_unstable();
    pt.mem.daemon_with_kib = daemon[daemon.len() / 2];
    pt.mem.pods = m;
    pt.mem.shims = s;
    pt.mem.infra = i;
    if pt.mem.shims.len() != m {
        note(&format!("{who}: {} shim processes for {m} pods", pt.mem.shims.len()));
    }
    Ok(())
}

// --- mounts and cgroups ---------------------------------------------------------------------

fn mount_points() -> BTreeSet<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| m.replace("\\040", " "))
        .collect()
}

/// The cgroup parent's directory in every mounted hierarchy (v1 controllers, named, unified).
fn cgroup_dirs(parent: &str) -> Vec<PathBuf> {
    let rel = parent.trim_start_matches('/');
    std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join(rel))
        .filter(|p| p.is_dir())
        .collect()
}

/// Cgroups below the parent (pods' and containers' cgroups that still exist).
fn cgroup_children(parent: &str) -> Vec<PathBuf> {
    cgroup_dirs(parent)
        .iter()
        .flat_map(|d| std::fs::read_dir(d).into_iter().flatten().flatten())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect()
}

/// What teardown found.
#[derive(Debug, Default)]
struct Cleanup {
    /// Pods of this run each target still listed after removing them.
    pods_left: Vec<String>,
    removed_pods: usize,
    shims_left: Vec<String>,
    mounts_left: Vec<String>,
    cgroups_left: Vec<String>,
    cgroup_dirs_removed: usize,
    secs: f64,
}

impl Cleanup {
    /// What was removed and checked, and one line per thing left behind.
    fn summary(&self, o: &PodsOpts, targets: &[PodTarget]) -> String {
        let pod_mounts: usize = targets.iter().map(|pt| pt.pod_mounts.len()).sum();
        let mut out = format!(
            "cleanup: {} running pod(s) stopped and removed through CRI in {:.1} s (and every timed pod right after \
             its run); left behind: {} pod(s), {} shim(s), {} mount(s) (checked: all under the state dirs, and the \
             {pod_mounts} namespace mounts the pods had), {} cgroup(s) under {} ({} empty dirs of it removed){}",
            self.removed_pods,
            self.secs,
            self.pods_left.len(),
            self.shims_left.len(),
            self.mounts_left.len(),
            self.cgroups_left.len(),
            o.cgroup_parent,
            self.cgroup_dirs_removed,
            if self.clean() { "" } else { "  LEFTOVERS:" }
        );
        for l in self
            .pods_left
            .iter()
            .chain(&self.shims_left)
            .chain(&self.mounts_left)
            .chain(&self.cgroups_left)
        {
            out += &format!("\n  left: {l}");
        }
        out
    }

    fn clean(&self) -> bool {
        self.pods_left.is_empty()
            && self.shims_left.is_empty()
            && self.mounts_left.is_empty()
            && self.cgroups_left.is_empty()
    }
}

/// Removes every pod of this run through CRI (found by [`RUN_LABEL`], also after an error or a
/// signal), then checks that their shims exited and their mounts and cgroups are gone, and removes
/// the (then empty) cgroup parent. Signals nothing.
async fn pods_cleanup(o: &PodsOpts, targets: &mut [PodTarget]) -> anyhow::Result<Cleanup> {
    let t0 = Instant::now();
    let mut c = Cleanup::default();
    for pt in targets.iter_mut() {
        // Twice: a RunPodSandbox cut short by a signal may still finish on the daemon's side.
        for pass in 0..2 {
            let pods = list_run_pods(pt, o).await?;
            for id in &pods {
                if let Err(e) = remove_pod(pt, id).await {
                    note(&format!("cleanup: {e:#}"));
                }
            }
            c.removed_pods += pods.len();
            if pass == 0 && !pods.is_empty() {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
        for id in list_run_pods(pt, o).await? {
            c.pods_left.push(format!("{}: pod {id}", pt.target.name));
        }
    }
    // Shims exit and cgroups go away shortly after the removal returns.
    loop {
        let procs = processes();
        c.shims_left = targets
            .iter()
            .flat_map(|pt| {
                shims_of(&procs, &pt.procs).map(|p| {
                    format!(
                        "{}: shim pid {} in {}",
                        pt.target.name,
                        p.pid,
                        p.cwd.as_deref().unwrap_or(std::path::Path::new("?")).display()
                    )
                })
            })
            .collect();
        let mounted = mount_points();
        c.mounts_left = targets
            .iter()
            .flat_map(|pt| {
                let state = pt.procs.state.display().to_string();
                mounted
                    .iter()
                    .filter(move |m| m.starts_with(&format!("{state}/")))
                    .map(|m| format!("{}: {m}", pt.target.name))
                    .chain(
                        pt.pod_mounts
                            .iter()
                            .filter(|m| mounted.contains(*m))
                            .map(|m| format!("{}: {m}", pt.target.name)),
                    )
                    .collect::<Vec<_>>()
            })
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        c.cgroups_left = cgroup_children(&o.cgroup_parent)
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        if c.clean() || t0.elapsed() > TEARDOWN_WAIT {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if c.cgroups_left.is_empty() {
        for d in cgroup_dirs(&o.cgroup_parent) {
            match std::fs::remove_dir(&d) {
                Ok(()) => c.cgroup_dirs_removed += 1,
                Err(e) => c.cgroups_left.push(format!("{}: {e}", d.display())),
            }
        }
    }
    c.secs = t0.elapsed().as_secs_f64();
    Ok(c)
}

async fn list_run_pods(pt: &mut PodTarget, o: &PodsOpts) -> anyhow::Result<Vec<String>> {
    Ok(rpc(
        format!("{}: ListPodSandbox", pt.target.name),
        pt.rt.list_pod_sandbox(ListPodSandboxRequest {
            filter: Some(PodSandboxFilter {
                label_selector: HashMap::from([(RUN_LABEL.to_string(), o.run_id.clone())]),
                ..Default::default()
            }),
        }),
    )
    .await?
    .items
    .into_iter()
    .map(|p| p.id)
    .collect())
}

// --- report -----------------------------------------------------------------------------------

fn kib_str(kib: Option<u64>) -> String {
    kib.map(|k| mib(k as f64)).unwrap_or_else(|| "n/a".into())
}

/// MiB with two decimals, for per-pod figures held to a goal.
fn mib2(kib: f64) -> String {
    format!("{:.2} MiB", kib / 1024.0)
}

fn report_pods(args: &Args, o: &PodsOpts, targets: &[PodTarget], load: [Option<f64>; 2], cleanup: &Cleanup) -> Verdict {
    println!();
    println!(
        "pods: {} measured runs per target, then {} pods running per target",
        args.runs, o.pods
    );
    println!(
        "  start       RunPodSandbox + CreateContainer + StartContainer of {} running `sleep 3600`,",
        o.image
    );
    println!("              wall clock at the client; image pulled before, pod stopped and removed after (not timed).");
    println!(
        "              Kubelet-like configs: cgroup_parent {}, log directory, DNS config, network+IPC",
        o.cgroup_parent
    );
    println!("              namespaces per pod, a PID namespace per container, BestEffort cpu shares/oom_score_adj");
    println!("  start@M     the same for each of the M pods started while the others keep running (interleaved)");
    println!("  daemon      VmRSS of the daemon: fresh (before the first pod), before the M pods, with them running");
    println!("  shims       the target's shim processes: its shim executable, working directory or an argument under");
    println!(
        "              its state dir (berth: berth-shim, one per pod; containerd: containerd-shim-runc-v2, one per pod)"
    );
    println!("  infra       the sandbox (\"pause\") processes the runtime reports in verbose PodSandboxStatus");
    println!(
        "  per pod     RSS (or PSS) sum / M; PSS splits shared pages (a shim binary's text, libc) among the processes using them"
    );
    println!("  networking  every pod gets a veth on a bridge with an address: hack/bench gives containerd");
    println!("              Debian's CNI bridge + host-local + portmap chain (lo through its loopback plugin) and");
    println!("              berth its built-in bridge (netlink in process, no plugin execs): each daemon its");
    println!("              default way. `berth-bench net` also times berth running the same CNI chain.");
    println!();
    println!(
        "{:<12} {:>10} {:>10} {:>10} {:>11} {:>11} {:>11} {:>10}",
        "target", "start med", "start min", "start max", "RunPodSb", "CreateCtr", "StartCtr", "start@M"
    );
    for pt in targets {
        let t = pt.stats(StartSample::total_ms);
        println!(
            "{:<12} {:>10} {:>10} {:>10} {:>11} {:>11} {:>11} {:>10}",
            pt.target.name,
            ms(t.median),
            ms(t.min),
            ms(t.max),
            ms(pt.stats(|s| s.run_ms).median),
            ms(pt.stats(|s| s.create_ms).median),
            ms(pt.stats(|s| s.start_ms).median),
            pt.fill_stats().map(|s| ms(s.median)).unwrap_or_else(|| "n/a".into()),
        );
    }
    if o.pods > 0 {
        println!();
        println!(
            "memory with {} pods running per target (each: one `sleep 3600` container):",
            o.pods
        );
        println!(
            "{:<12} {:>12} {:>12} {:>12} {:>14}",
            "daemon", "fresh", "before M", "with M", "growth/pod"
        );
        for pt in targets {
            let m = &pt.mem;
            println!(
                "{:<12} {:>12} {:>12} {:>12} {:>14}",
                pt.target.name,
                mib(pt.fresh_kib as f64),
                mib(m.daemon_before_kib as f64),
                mib(m.daemon_with_kib as f64),
                format!(
                    "{:+.0} KiB",
                    (m.daemon_with_kib as f64 - m.daemon_before_kib as f64) / o.pods as f64
                ),
            );
        }
        println!();
        println!(
            "{:<12} {:<34} {:>5} {:>10} {:>10} {:>10} {:>10}",
            "per-pod", "processes", "count", "RSS sum", "RSS/pod", "PSS sum", "PSS/pod"
        );
        for pt in targets {
            let m = &pt.mem;
            let exe = pt
                .procs
                .exe
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            let infra = m
                .infra_cmdline
                .as_deref()
                .map(|c| format!("infra `{}`", c.chars().take(26).collect::<String>()))
                .unwrap_or_else(|| "infra (none: no pause process)".into());
            let over = m.overhead();
            for (what, p) in [
                (format!("shims ({exe})"), &m.shims[..]),
                (infra, &m.infra[..]),
                ("total".to_string(), &over[..]),
            ] {
                let dash = |v: String| if p.is_empty() { "-".to_string() } else { v };
                println!(
                    "{:<12} {:<34} {:>5} {:>10} {:>10} {:>10} {:>10}",
                    pt.target.name,
                    what,
                    p.len(),
                    dash(mib(sum_rss(p) as f64)),
                    dash(mib2(pt.per_pod(sum_rss(p)))),
                    dash(kib_str(sum_pss(p))),
                    dash(sum_pss(p).map(|k| mib2(pt.per_pod(k))).unwrap_or_else(|| "n/a".into())),
                );
            }
        }
        for pt in targets {
            println!(
                "  {}: shims run {}; {} process(es) are children of the shims",
                pt.target.name,
                pt.procs.exe.display(),
                pt.mem.shim_children
            );
        }
    }

    let base = targets.iter().find(|pt| pt.target.name == args.baseline);
    let mut all_ok = true;
    let mut comparisons = Vec::new();
    println!();
    if base.is_none() {
        println!("(no target named {:?}: no ratios)", args.baseline);
    }
    for pt in targets.iter().filter(|pt| pt.target.name != args.baseline) {
        let name = &pt.target.name;
        let mut cmp = json!({ "target": name });
        let shim_per_pod = (o.pods > 0).then(|| pt.per_pod(sum_rss(&pt.mem.shims)));
        if let Some(base) = base {
            let start_ratio = pt.stats(StartSample::total_ms).median / base.stats(StartSample::total_ms).median;
            let fill_ratio = pt.fill_stats().zip(base.fill_stats()).map(|(a, b)| a.median / b.median);
            let start_ok = start_ratio <= GOALS.max_pod_start_ratio;
            all_ok &= start_ok;
            print!("ratio {name}/{}: start {start_ratio:.2}x", args.baseline);
            if let Some(r) = fill_ratio {
                print!(", start@M {r:.2}x");
            }
            cmp["baseline"] = json!(args.baseline);
            cmp["start_ratio"] = json!(start_ratio);
            cmp["start_at_m_ratio"] = json!(fill_ratio);
            if o.pods > 0 {
                let (a, b) = (pt.mem.overhead(), base.mem.overhead());
                let rss_ratio = pt.per_pod(sum_rss(&a)) / base.per_pod(sum_rss(&b));
                let pss_ratio = sum_pss(&a)
                    .zip(sum_pss(&b))
                    .map(|(x, y)| pt.per_pod(x) / base.per_pod(y));
                let daemon_ratio = pt.mem.daemon_with_kib as f64 / base.mem.daemon_with_kib as f64;
                print!(
                    ", per-pod overhead RSS {rss_ratio:.2}x, PSS {}, daemon RSS with {} pods {daemon_ratio:.2}x",
                    pss_ratio.map(|r| format!("{r:.2}x")).unwrap_or_else(|| "n/a".into()),
                    o.pods
                );
                cmp["overhead_rss_per_pod_ratio"] = json!(rss_ratio);
                cmp["overhead_pss_per_pod_ratio"] = json!(pss_ratio);
                cmp["daemon_rss_with_pods_ratio"] = json!(daemon_ratio);
            }
            println!();
            println!(
                "goal  pod+container start <= {:.2}x {}: {name} {start_ratio:.2}x  {}",
                GOALS.max_pod_start_ratio,
                args.baseline,
                pass(start_ok)
            );
            cmp["goal_start_ratio"] = json!(GOALS.max_pod_start_ratio);
            cmp["start_ok"] = json!(start_ok);
        }
        if let Some(per_pod) = shim_per_pod {
            let ok = per_pod <= GOALS.max_shim_rss_kib_per_pod as f64;
            all_ok &= ok;
            println!(
                "goal  {name} shim RSS per pod <= {}: {}  {}",
                mib2(GOALS.max_shim_rss_kib_per_pod as f64),
                mib2(per_pod),
                pass(ok)
            );
            cmp["shim_rss_kib_per_pod"] = json!(per_pod);
            cmp["goal_shim_rss_kib_per_pod"] = json!(GOALS.max_shim_rss_kib_per_pod);
            cmp["shim_rss_ok"] = json!(ok);
        }
        comparisons.push(cmp);
    }
    let pod_mounts: usize = targets.iter().map(|pt| pt.pod_mounts.len()).sum();
    println!();
    println!("{}", cleanup.summary(o, targets));

    let mem_json = |p: &[ProcMem]| {
        json!({
            "count": p.len(),
            "rss_kib": sum_rss(p),
            "pss_kib": sum_pss(p),
            "pids": p.iter().map(|m| m.pid).collect::<Vec<_>>(),
        })
    };
    let json_targets: Vec<_> = targets
        .iter()
        .map(|pt| {
            let samples = |v: &[StartSample]| {
                v.iter()
                    .map(|s| {
                        json!({
                            "warmup": s.warmup, "position": s.position, "total_ms": s.total_ms(),
                            "run_pod_sandbox_ms": s.run_ms, "create_container_ms": s.create_ms,
                            "start_container_ms": s.start_ms,
                        })
                    })
                    .collect::<Vec<_>>()
            };
            json!({
                "name": pt.target.name,
                "pid": pt.target.pid,
                "socket": pt.target.socket,
                "conditions": pt.conditions,
                "start_ms": pt.stats(StartSample::total_ms).json(),
                "run_pod_sandbox_ms": pt.stats(|s| s.run_ms).json(),
                "create_container_ms": pt.stats(|s| s.create_ms).json(),
                "start_container_ms": pt.stats(|s| s.start_ms).json(),
                "start_at_m_ms": pt.fill_stats().map(|s| s.json()),
                "daemon_rss_kib": {
                    "fresh": pt.fresh_kib, "before_pods": pt.mem.daemon_before_kib, "with_pods": pt.mem.daemon_with_kib,
                },
                "shim_exe": pt.procs.exe,
                "shims": mem_json(&pt.mem.shims),
                "infra": mem_json(&pt.mem.infra),
                "infra_cmdline": pt.mem.infra_cmdline,
                "shim_children": pt.mem.shim_children,
                "overhead_rss_kib_per_pod": (o.pods > 0).then(|| pt.per_pod(sum_rss(&pt.mem.overhead()))),
                "overhead_pss_kib_per_pod": sum_pss(&pt.mem.overhead()).filter(|_| o.pods > 0).map(|k| pt.per_pod(k)),
                "samples": samples(&pt.starts),
                "samples_at_m": samples(&pt.mem.fill),
            })
        })
        .collect();
    let out = json!({
        "bench": "pods",
        "image": o.image,
        "runs": args.runs,
        "warmup": args.warmup,
        "pods": o.pods,
        "cgroup_parent": o.cgroup_parent,
        "loadavg_start": load[0],
        "loadavg_end": load[1],
        "targets": json_targets,
        "comparisons": comparisons,
        "cleanup": {
            "removed_pods": cleanup.removed_pods,
            "pod_mounts_checked": pod_mounts,
            "secs": cleanup.secs,
            "clean": cleanup.clean(),
            "pods_left": cleanup.pods_left,
            "shims_left": cleanup.shims_left,
            "mounts_left": cleanup.mounts_left,
            "cgroups_left": cleanup.cgroups_left,
        },
        "goals_met": all_ok,
    });
    println!();
    println!("{out}");
    if all_ok {
        Verdict::Pass
    } else {
        Verdict::Miss { strict: args.strict }
    }
}

// ---------------------------------------------------------------------------------------------
// net: RunPodSandbox with pod networking

/// RunPodSandbox (which wires the pod's network) and StopPodSandbox + RemovePodSandbox (which
/// unwires it) on each target, alternating which target goes first; each pod must report an IP.
async fn cmd_net(mut args: Args) -> anyhow::Result<Verdict> {
    let pre_pull = per_target_multi("--pre-pull", args.take_all("--pre-pull"), &args.targets)?;
    let cgroup_parent = args.take("--cgroup-parent").unwrap_or("/berth-bench".into());
    args.finish()?;
    let run_id = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs()
    );
    let mut rts = Vec::new();
    for t in &args.targets {
        let ch = berth_test::connect(&t.socket)
            .await
            .with_context(|| format!("{}: connect to {}", t.name, t.socket.display()))?;
        let mut images = t.images().await?;
        wait_ready(t, &mut images).await?;
        for (_, img) in pre_pull.iter().filter(|(n, _)| *n == t.name) {
            rpc(
                format!("{}: PullImage {img}", t.name),
                images.pull_image(PullImageRequest {
                    image: spec(img),
                    ..Default::default()
                }),
            )
            .await?;
        }
        rts.push(RuntimeServiceClient::new(ch));
    }
    let n = args.targets.len();
    let mut run_ms: Vec<Vec<f64>> = vec![Vec::new(); n];
    let mut down_ms: Vec<Vec<f64>> = vec![Vec::new(); n];
    let mut ips: Vec<String> = vec![String::new(); n];
    let load0 = loadavg();
    for i in 0..args.warmup + args.runs {
        for k in 0..n {
            let ti = (i + k) % n;
            let t = &args.targets[ti];
            let rt = &mut rts[ti];
            let cfg = PodSandboxConfig {
                metadata: Some(PodSandboxMetadata {
                    name: format!("net-{i}"),
                    uid: format!("{run_id}-{i}-{}", t.name),
                    namespace: "berth-bench".into(),
                    attempt: 0,
                }),
                hostname: format!("net-{i}"),
                labels: HashMap::from([("berth-bench-run".to_string(), run_id.clone())]),
                linux: Some(LinuxPodSandboxConfig {
                    cgroup_parent: cgroup_parent.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            };
            let t0 = Instant::now();
            let id = rpc(
                format!("{}: RunPodSandbox", t.name),
                rt.run_pod_sandbox(RunPodSandboxRequest {
                    config: Some(cfg),
                    runtime_handler: String::new(),
                }),
            )
            .await?
            .pod_sandbox_id;
            let up = t0.elapsed().as_secs_f64() * 1000.0;
            let st = rpc(
                format!("{}: PodSandboxStatus", t.name),
                rt.pod_sandbox_status(PodSandboxStatusRequest {
                    pod_sandbox_id: id.clone(),
                    verbose: false,
                }),
            )
            .await?;
            let ip = st.status.and_then(|s| s.network).map(|n| n.ip).unwrap_or_default();
            if ip.is_empty() {
                bail!("{}: pod {id} has no IP", t.name);
            }
            ips[ti] = ip;
            let t1 = Instant::now();
            rpc(
                format!("{}: StopPodSandbox", t.name),
                rt.stop_pod_sandbox(StopPodSandboxRequest {
                    pod_sandbox_id: id.clone(),
                }),
            )
            .await?;
            rpc(
                format!("{}: RemovePodSandbox", t.name),
                rt.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id }),
            )
            .await?;
            let down = t1.elapsed().as_secs_f64() * 1000.0;
            if i >= args.warmup {
                run_ms[ti].push(up);
                down_ms[ti].push(down);
            }
        }
    }
    let load1 = loadavg();
    let base = args.targets.iter().position(|t| t.name == args.baseline);
    let base_run = base.map(|b| Stats::of(&run_ms[b]).median);
    let base_down = base.map(|b| Stats::of(&down_ms[b]).median);
    println!(
        "net: RunPodSandbox (pod network wired, IP reported) and Stop+Remove, {} runs each after {} warm-up, alternating",
        args.runs, args.warmup
    );
    println!(
        "  {:<14} {:>12} {:>12} {:>12} {:>10} {:>14} {:>10}  last IP",
        "target", "run median", "run min", "run max", "ratio", "stop+remove", "ratio"
    );
    let mut out = Vec::new();
    for (ti, t) in args.targets.iter().enumerate() {
        let r = Stats::of(&run_ms[ti]);
        let d = Stats::of(&down_ms[ti]);
        let ratio = |v: f64, b: Option<f64>| b.map(|b| format!("{:.2}x", v / b)).unwrap_or_else(|| "-".into());
        println!(
            "  {:<14} {:>12} {:>12} {:>12} {:>10} {:>14} {:>10}  {}",
            t.name,
            ms(r.median),
            ms(r.min),
            ms(r.max),
            ratio(r.median, base_run),
            ms(d.median),
            ratio(d.median, base_down),
            ips[ti]
        );
        out.push(json!({"target": t.name, "run_ms": r.json(), "stop_remove_ms": d.json(),
            "run_ratio": base_run.map(|b| r.median / b), "last_ip": ips[ti]}));
    }
    if let (Some(a), Some(b)) = (load0, load1) {
        println!("  load average: {a:.2} at start, {b:.2} at end");
    }
    println!("{}", json!({"bench": "net", "baseline": args.baseline, "targets": out}));
    Ok(Verdict::Pass)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_targets() {
        let t: Target = "berth=/tmp/b/berth.sock:1234".parse().unwrap();
        assert_eq!(
            (t.name.as_str(), t.socket.to_str().unwrap(), t.pid),
            ("berth", "/tmp/b/berth.sock", 1234)
        );
        // The pid follows the last colon; the socket path may contain colons.
        let t: Target = "c=/tmp/a:b.sock:7".parse().unwrap();
        assert_eq!((t.socket.to_str().unwrap(), t.pid), ("/tmp/a:b.sock", 7));
        for bad in ["berth", "berth=/s", "=/s:1", "b=:1", "b=/s:x"] {
            assert!(bad.parse::<Target>().is_err(), "{bad}");
        }
    }

    #[test]
    fn stats_median() {
        let s = Stats::of(&[3.0, 1.0, 2.0]);
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(Stats::of(&[4.0, 1.0, 2.0, 3.0]).median, 2.5);
    }

    #[test]
    fn status_fields() {
        let text = "Name:\tberthd\nVmHWM:\t   20480 kB\nVmRSS:\t    8192 kB\n";
        assert_eq!(parse_status_kib(text, "VmRSS:"), Some(8192));
        assert_eq!(parse_status_kib(text, "VmHWM:"), Some(20480));
        assert_eq!(parse_status_kib(text, "VmSwap:"), None);
    }

    #[test]
    fn args() {
        let mut a = Args::parse(
            [
                "--target",
                "a=/s:1",
                "--runs=3",
                "--image",
                "x",
                "--strict",
                "--keep-image",
                "--shim",
                "a=/bin/s",
                "--shim=b=/bin/t",
            ]
            .into_iter()
            .map(String::from),
            5,
            1,
        )
        .unwrap();
        assert_eq!((a.runs, a.warmup, a.strict), (3, 1, true));
        assert_eq!(a.take("--image").as_deref(), Some("x"));
        assert_eq!(a.take("--keep-image").as_deref(), Some(""));
        assert_eq!(a.take_all("--shim"), ["a=/bin/s", "b=/bin/t"]);
        assert!(a.finish().is_ok());
        let a = Args::parse(
            ["--target", "a=/s:1", "--bogus", "1"].into_iter().map(String::from),
            20,
            0,
        )
        .unwrap();
        assert_eq!((a.runs, a.warmup), (20, 0));
        assert!(a.finish().is_err());
        assert!(Args::parse(["--runs", "3"].into_iter().map(String::from), 5, 1).is_err());
    }
}
