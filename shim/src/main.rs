//! berth-shim: see the library docs (`src/lib.rs`) and the crate README for the contract.

fn main() {
    std::process::exit(berth_shim::main());
}
