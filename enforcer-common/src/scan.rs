//! The session scan: which entries of `SESSIONS` the daemon's periodic sweep reads.
//!
//! A sweep has two jobs: remove the sessions idle past their timeout, and hand the flow meter
//! (and the alerts) the sessions whose counters moved; the meter ends the records of the
//! sessions that went idle from what it read of them before. Reading the whole table for that costs about 400 ns a session through
//! `BPF_MAP_LOOKUP_BATCH` (0.8 s at 2,000,000 sessions, every sweep), so the scan runs in the
//! kernel as a BPF iterator over the map (`iter/bpf_map_elem`, Linux 5.9) and copies out only
//! the entries [`wanted`] picks; the daemon falls back to a batch read filtered with the same
//! function where the iterator cannot be loaded, and for every scan of the whole table
//! ([`ScanArgs::all`]), which the daemon asks for from time to time to notice the sessions
//! the program removed itself.

use crate::session::{Session, SessionState, Timeouts, idle_timeout};

/// Nanoseconds per second.
const NS_PER_S: u64 = 1_000_000_000;

/// `SCAN_ARGS[0]`: what the daemon asks of one scan, and what the scan reports back.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScanArgs {
    /// The scan's time, `CLOCK_MONOTONIC_COARSE` nanoseconds (the clock the program stamps
    /// sessions with).
    pub now_ns: u64,
    /// The previous scan's time less a margin (same clock): a session seen or created after
    /// it changed since that scan.
    pub since_ns: u64,
    /// Nonzero: every entry.
    pub all: u64,
    /// The idle timeouts after which the sweep removes a session.
    pub timeouts: Timeouts,
    /// Set by the iterator's last call: entries visited.
    pub visited: u64,
}

/// Whether the scan of `args` copies out the session of protocol `proto`: with
/// [`ScanArgs::all`]; when it changed since the last scan (created or seen after
/// `since_ns`); or when it is idle past its timeout (the sweep removes it).
#[must_use]
#[inline(always)]
pub fn wanted(args: &ScanArgs, proto: u8, session: &Session) -> bool {
    if args.all != 0 || session.seen_ns > args.since_ns || session.created_ns > args.since_ns {
        return true;
    }
    expired(args.now_ns, &args.timeouts, proto, session)
}

/// Whether `session` (of protocol `proto`) is idle past its timeout at `now_ns`: the sweep
/// removes it.
#[must_use]
#[inline(always)]
pub fn expired(now_ns: u64, timeouts: &Timeouts, proto: u8, session: &Session) -> bool {
    let idle = now_ns.saturating_sub(session.seen_ns);
    // Capped, then multiplied: a saturating multiply needs a 128-bit helper BPF lacks.
    let secs = idle_timeout(SessionState::from_u8(session.state), proto, timeouts)
        .min(u64::MAX / NS_PER_S);
    idle > secs.wrapping_mul(NS_PER_S)
}
