//! The daemon's log: one line per record on stderr, which `start` pointed at the host's `log` FIFO or
//! at `<socket>.log`. A plain `log` backend, so the dependencies' records (ttrpc) come out too.

use std::io::Write;
use std::time::SystemTime;

use log::{Level, LevelFilter, Log, Metadata, Record};

#[derive(Debug)]
struct Stderr;

static LOGGER: Stderr = Stderr;

impl Log for Stderr {
    fn enabled(&self, metadata: &Metadata) -> bool {
        let limit = if metadata.target().starts_with("berth_shim") {
            log::max_level()
        } else {
            LevelFilter::Info
        };
        metadata.level() <= limit
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut line = Vec::with_capacity(128);
        berth_proto::crilog::push_timestamp(&mut line, SystemTime::now());
        let level = match record.level() {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
            Level::Trace => "trace",
        };
        let _ = writeln!(line, " {level} berth-shim[{}] {}", std::process::id(), record.args());
        // One write per record; a full or closed log must not stop the shim.
        let _ = std::io::stderr().write_all(&line);
    }

    fn flush(&self) {}
}

/// Installs the logger: info and up, or everything from berth-shim with `debug` (dependencies stay at
/// info, ttrpc is chatty).
pub fn init(debug: bool) {
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(if debug { LevelFilter::Debug } else { LevelFilter::Info });
    }
}
