//! berth-shim: the per-pod process that runs a pod's containers through runc, owns their stdio,
//! writes their CRI logs, reaps their exits and reports them to berthd over the containerd shim v2
//! task API (TTRPC).
//!
//! The library exists for the binary and its tests; `main.rs` only calls [`main`].
#![deny(unsafe_code)]

pub mod args;
pub mod delete;
pub mod error;
pub mod io;
pub mod logger;
pub mod mount;
pub mod oom;
pub mod pod_init;
pub mod publisher;
pub mod reaper;
pub mod runc;
pub mod serve;
pub mod server;
pub mod start;
pub mod sys;
pub mod task;
pub mod time;

use std::io::Write;

use berth_proto::shim::protobuf::Message;

use args::Action;

/// Runs the action the command line names; returns the process exit code.
pub fn main() -> i32 {
    let (flags, action) = match args::parse(std::env::args().skip(1)) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("berth-shim: {e}");
            return 2;
        }
    };
    match action {
        Action::PodInit => pod_init::run(),
        Action::Version => {
            println!("berth-shim {}", env!("CARGO_PKG_VERSION"));
            0
        }
        Action::Start => match start::run(&flags) {
            Ok(address) => {
                // No newline: containerd takes the whole output as the address.
                print!("{address}");
                let _ = std::io::stdout().flush();
                0
            }
            Err(e) => {
                eprintln!("berth-shim start: {e}");
                1
            }
        },
        Action::Delete => match delete::run(&flags).map(|r| r.write_to_bytes()) {
            Ok(Ok(bytes)) => {
                let mut out = std::io::stdout();
                if out.write_all(&bytes).and_then(|()| out.flush()).is_err() {
                    return 1;
                }
                0
            }
            Ok(Err(e)) => {
                eprintln!("berth-shim delete: encoding the response: {e}");
                1
            }
            Err(e) => {
                eprintln!("berth-shim delete: {e}");
                1
            }
        },
        Action::Serve => {
            logger::init(flags.debug);
            match serve::run(&flags) {
                Ok(()) => 0,
                Err(e) => {
                    log::error!("{e}");
                    1
                }
            }
        }
    }
}
