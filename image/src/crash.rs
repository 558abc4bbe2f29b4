//! Crash points: named places where the process can be made to die at once, as a `kill -9` there
//! would (`SIGKILL` to itself: no destructor, no flush, no cleanup). `BERTH_CRASH_AT=<name>` in
//! berthd's environment arms one; unset, a point costs one load of a cached value. The
//! crash-point suite (`test/tests/crash_points.rs`) kills berthd at each of [`POINTS`] in turn,
//! restarts it and checks that nothing was lost, half-made or leaked.
//!
//! The points live here, in the lowest crate that has some of them (a pull's steps), so berthd's
//! own steps and the image store's share one list.

use std::sync::OnceLock;

/// The environment variable that arms a crash point.
pub const ENV: &str = "BERTH_CRASH_AT";

/// Every crash point, in the order a pod's life passes them.
pub const POINTS: &[&str] = &[
    "pull.manifest_stored",
    "pull.blob_committed",
    "pull.layer_unpacked",
    "pull.image_recorded",
    "sandbox.namespaces_made",
    "sandbox.network_attached",
    "sandbox.record_written",
    "container.bundle_made",
    "container.record_written",
    "start.task_created",
    "start.task_started",
    "stop.signalled",
    "remove_container.task_deleted",
    "remove_container.bundle_removed",
    "remove_pod.containers_removed",
    "remove_pod.network_detached",
    "remove_image.record_removed",
];

static ARMED: OnceLock<Option<String>> = OnceLock::new();

/// Dies here if `name` is the armed crash point.
pub fn point(name: &'static str) {
    debug_assert!(POINTS.contains(&name), "crash point {name} is not in POINTS");
    let armed = ARMED.get_or_init(|| std::env::var(ENV).ok().filter(|v| !v.is_empty()));
    if armed.as_deref() == Some(name) {
        eprintln!("berth: crash point {name} reached: SIGKILL");
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
        std::process::abort();
    }
}
