//! The lowest oom_score_adj this host lets berth give containers. kubelet asks for negative values
//! (e.g. -997 for guaranteed pods); without CAP_SYS_RESOURCE the kernel refuses to lower a score
//! below the process's own, and runc then fails with an opaque error. berth finds the floor once and
//! clamps requests to it, saying so once in its log, as containerd's `restrict_oom_score_adj` does.

const PATH: &str = "/proc/self/oom_score_adj";

/// Probes the floor: the lowest value this process may set (its own value when lowering is refused).
pub fn floor() -> i32 {
    let Some(own) = std::fs::read_to_string(PATH)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
    else {
        return 0;
    };
    if own <= -1000 {
        return -1000;
    }
    // Lowering needs CAP_SYS_RESOURCE; raising back to our own value never does.
    match std::fs::write(PATH, (own - 1).to_string()) {
        Ok(()) => {
            let _ = std::fs::write(PATH, own.to_string());
            -1000
        }
        Err(_) => {
            tracing::warn!(
                floor = own,
                "this host refuses negative oom_score_adj (no CAP_SYS_RESOURCE): container requests below {own} are raised to {own}"
            );
            own
        }
    }
}
