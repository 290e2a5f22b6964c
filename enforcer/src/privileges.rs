//! Whether this process may load and attach XDP programs, judged by its effective capabilities
//! (capabilities(7)), not by its uid: a least-privilege systemd unit runs as a non-root user
//! with `CAP_BPF` and `CAP_NET_ADMIN` (Linux 5.8+), and root without them is refused anyway.

use caps::{CapSet, Capability};

/// Fail with a message naming the missing capabilities when `what` cannot load XDP programs:
/// that needs `CAP_BPF` (or `CAP_SYS_ADMIN`, as before Linux 5.8) and `CAP_NET_ADMIN`.
///
/// # Errors
/// The message to show the operator.
pub fn require_bpf(what: &str) -> Result<(), String> {
    let has = |cap| caps::has_cap(None, CapSet::Effective, cap).unwrap_or(false);
    let mut missing = Vec::new();
    if !has(Capability::CAP_BPF) && !has(Capability::CAP_SYS_ADMIN) {
        missing.push("CAP_BPF");
    }
    if !has(Capability::CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    if missing.is_empty() {
        return Ok(());
    }
    Err(format!(
        "{what} loads an XDP program into the kernel and needs {}; run it as root (sudo) or \
         grant the capabilities (e.g. systemd's AmbientCapabilities=)",
        missing.join(" and ")
    ))
}
