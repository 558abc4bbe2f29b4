//! berth-bench: side-by-side benchmarks of CRI runtimes (berthd against containerd), driven over
//! their CRI sockets, with the daemons' memory read from `/proc/<pid>/status`.
//!
//! ```text
//! berth-bench pull --target berth=/run/b/berth.sock:1234 --target containerd=/run/c/c.sock:5678 \
//!                  --image 127.0.0.1:5000/berth/layers:latest [--runs 5] [--warmup 1]
//! ```
//!
//! `hack/bench` starts both daemons on temporary directories and runs this. Each subcommand
//! prints a human table and, as its last line, one JSON object (`{"bench": "<name>", ...}`).
//! To add a benchmark (pod start, ...): write a `cmd_<name>(Args)` next to [`cmd_pull`] that
//! reuses [`Target`], [`Sampler`], [`Stats`] and [`Goals`], and add an arm to `main`.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use berth_proto::cri::image_service_client::ImageServiceClient;
use berth_proto::cri::{ImageSpec, ListImagesRequest, PullImageRequest, RemoveImageRequest};
use berth_proto::tonic::transport::Channel;
use serde_json::json;

const USAGE: &str = "\
usage: berth-bench <benchmark> [options]

benchmarks:
  pull    cold PullImage of one image on each target, alternating which target goes first

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

goals: pull time <= 0.5x baseline (median); idle RSS of each non-baseline target <= 12 MiB.
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
        "pull" => Args::parse(argv).and_then(|a| rt.block_on(cmd_pull(a))),
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
    /// Benchmark-specific `--flag value` options and bare `--flag`s (value "").
    extra: HashMap<String, String>,
}

impl Args {
    /// Flags that take no value.
    const SWITCHES: &[&str] = &["--strict", "--keep-image"];

    fn parse(mut argv: impl Iterator<Item = String>) -> anyhow::Result<Args> {
        let mut a = Args {
            targets: Vec::new(),
            baseline: "containerd".into(),
            runs: 5,
            warmup: 1,
            strict: false,
            extra: HashMap::new(),
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
                    a.extra.insert(flag, String::new());
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
                _ => {
                    a.extra.insert(flag, value);
                }
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

    /// Takes a benchmark-specific option; the leftovers are reported by [`Args::finish`].
    fn take(&mut self, flag: &str) -> Option<String> {
        self.extra.remove(flag)
    }

    fn finish(&self) -> anyhow::Result<()> {
        if let Some(flag) = self.extra.keys().next() {
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
}

const GOALS: Goals = Goals {
    max_pull_time_ratio: 0.5,
    max_idle_rss_kib: 12 * 1024,
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
        let a = Args::parse(
            [
                "--target",
                "a=/s:1",
                "--runs=3",
                "--image",
                "x",
                "--strict",
                "--keep-image",
            ]
            .into_iter()
            .map(String::from),
        )
        .unwrap();
        assert_eq!((a.runs, a.warmup, a.strict), (3, 1, true));
        assert_eq!(a.extra.get("--image").map(String::as_str), Some("x"));
        assert!(a.extra.contains_key("--keep-image"));
        assert!(Args::parse(["--runs", "3"].into_iter().map(String::from)).is_err());
    }
}
