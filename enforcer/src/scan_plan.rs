//! What each session sweep asks of the session scan (`enforcer_common::scan`): only the
//! expired sessions when nothing else reads the table; with the flow export or the
//! new-destination alerts on, the sessions that changed since the last sweep, and the whole
//! table once per active timeout, after each policy change and at the first sweep (so that
//! the meter finds the sessions the program removed itself, and readers see every session).

use enforcer_common::{scan::ScanArgs, session::Timeouts};

/// A margin below the previous sweep's time for "changed since": the program stamps sessions
/// with the coarse clock, and a packet that lands while a scan walks the table may be stamped
/// a tick before the scan's time; read twice is harmless (the meter takes the newer counters),
/// missed is not.
const SINCE_MARGIN_NS: u64 = 1_000_000_000;

/// The sweeps' schedule of full scans.
#[derive(Debug, Default)]
pub struct ScanPlan {
    /// The previous sweep's time (`CLOCK_MONOTONIC_COARSE` ns).
    last_ns: Option<u64>,
    /// The last full scan's time.
    full_ns: Option<u64>,
}

impl ScanPlan {
    /// The arguments of the sweep at `now_ns` (`CLOCK_MONOTONIC_COARSE` ns) and whether it
    /// reads the whole table. `full_every_ns`: when something reads what sweeps pick (the flow
    /// meter, the new-destination alerts), the longest time between two full scans; `None`
    /// when nothing does (only expired sessions are picked). Call [`ScanPlan::done`] once the
    /// sweep succeeded: a failed one is asked again, from the same point.
    #[must_use]
    pub fn next(
        &self,
        now_ns: u64,
        timeouts: &Timeouts,
        full_every_ns: Option<u64>,
    ) -> (ScanArgs, bool) {
        let Some(full_every_ns) = full_every_ns else {
            // Nothing changed counts (seen after the end of time); only the expired are picked.
            return (
                ScanArgs {
                    now_ns,
                    since_ns: u64::MAX,
                    timeouts: *timeouts,
                    ..ScanArgs::default()
                },
                false,
            );
        };
        let full = match (self.last_ns, self.full_ns) {
            (Some(_), Some(full)) => now_ns.saturating_sub(full) >= full_every_ns,
            _ => true,
        };
        let since_ns = self
            .last_ns
            .map_or(0, |last| last.saturating_sub(SINCE_MARGIN_NS));
        (
            ScanArgs {
                now_ns,
                since_ns,
                all: u64::from(full),
                timeouts: *timeouts,
                visited: 0,
            },
            full,
        )
    }

    /// The sweep of `args` (from [`ScanPlan::next`]) succeeded: the next one picks what
    /// changed after it. After a sweep that only picked expired sessions, the next one with
    /// readers reads the whole table.
    pub fn done(&mut self, args: &ScanArgs) {
        if args.since_ns == u64::MAX {
            *self = Self::default();
            return;
        }
        self.last_ns = Some(args.now_ns);
        if args.all != 0 {
            self.full_ns = Some(args.now_ns);
        }
    }

    /// Read the whole table at the next sweep (the policy changed what the readers want: a
    /// segment that starts learning destinations must see the sessions that stay quiet).
    pub fn restart(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn the_first_sweep_and_one_per_active_timeout_read_everything() {
        let mut plan = ScanPlan::default();
        let t = Timeouts::default();
        let fulls: Vec<bool> = (0..20u64)
            .map(|i| {
                let (args, full) = plan.next(100 * S + i * 15 * S / 2, &t, Some(60 * S));
                plan.done(&args);
                full
            })
            .collect();
        // Rounds every 7.5 s: the first, then every 8th (60 s later).
        let expected: Vec<bool> = (0..20).map(|i| i % 8 == 0).collect();
        assert_eq!(fulls, expected);
        let (args, full) = plan.next(250 * S, &t, Some(60 * S));
        assert!(!full);
        assert_eq!(
            args.since_ns,
            100 * S + 19 * 15 * S / 2 - S,
            "the last sweep less 1 s"
        );
    }

    #[test]
    fn without_readers_only_expired_sessions_are_picked_and_the_plan_starts_over() {
        let mut plan = ScanPlan::default();
        let t = Timeouts::default();
        let (args, full) = plan.next(S, &t, Some(60 * S));
        assert!(full);
        plan.done(&args);
        let (args, full) = plan.next(2 * S, &t, None);
        assert!(!full);
        assert_eq!((args.since_ns, args.all), (u64::MAX, 0));
        plan.done(&args);
        assert!(
            plan.next(3 * S, &t, Some(60 * S)).1,
            "readers back: a full scan first"
        );
    }

    /// Only `done` moves the plan on (the daemon calls it when the sweep succeeded): a sweep
    /// asked for and not done leaves the first one full and a later one's `since` where it
    /// was.
    #[test]
    fn a_failed_sweep_moves_nothing_on() {
        let mut plan = ScanPlan::default();
        let t = Timeouts::default();
        assert!(plan.next(S, &t, Some(60 * S)).1, "first: full");
        let (args, full) = plan.next(2 * S, &t, Some(60 * S));
        assert!(full, "the first failed: still full");
        plan.done(&args);
        let (failed, _) = plan.next(10 * S, &t, Some(60 * S));
        let (args, full) = plan.next(20 * S, &t, Some(60 * S));
        assert!(!full);
        assert_eq!(failed.since_ns, S);
        assert_eq!(
            args.since_ns, S,
            "since the last sweep that succeeded, less 1 s"
        );
        plan.done(&args);
        plan.restart();
        assert!(
            plan.next(21 * S, &t, Some(60 * S)).1,
            "after a restart: full"
        );
    }
}
