//! berth-shim: the per-pod process that drives the OCI runtime.
//!
//! Not built yet (see the pods issue): it refuses to run rather than pretend.

fn main() {
    eprintln!(
        "berth-shim {}: not implemented yet; pods and containers come with the pods issue",
        env!("CARGO_PKG_VERSION")
    );
    std::process::exit(2);
}
