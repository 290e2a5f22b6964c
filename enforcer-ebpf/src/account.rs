//! Stage 4, account: the single exit. Counts every packet once per table it belongs to.
//!
//! Writes `VERDICTS_V2` (per segment, by verdict) and `RULE_STATS` (per allowing rule), small
//! per-CPU arrays without atomics, and the SIM's counters in its `SIMS` record (atomic adds:
//! a table sized by SIMs is never per CPU).

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use enforcer_common::{
    PassReason, Src, SrcKind, Verdict,
    maps::{SEGMENT_NONE, verdict_stats_index},
};

use crate::maps::{RULE_STATS, SIMS, VERDICTS_V2};

/// Count one packet of `bytes` bytes with `verdict`, sent by `src`.
#[inline(always)]
pub fn record(verdict: Verdict, src: &Src, bytes: u64) {
    let is_sim = src.kind == SrcKind::Sim;
    let segment = if is_sim {
        u32::from(src.sim.segment)
    } else {
        SEGMENT_NONE
    };
    if let Some(counter) =
        VERDICTS_V2.get_ptr_mut(verdict_stats_index(segment, verdict.stats_slot()))
    {
        // SAFETY: a per-CPU slot, written only by this CPU while the program runs.
        unsafe {
            (*counter).packets = (*counter).packets.wrapping_add(1);
            (*counter).bytes = (*counter).bytes.wrapping_add(bytes);
        }
    }
    if is_sim && let Some(record) = SIMS.get_ptr_mut(src.sim.sim) {
        // SAFETY: `record` comes from a successful array lookup, valid and 8-byte aligned for
        // this run. The counters are shared by every CPU (not per CPU: the table is sized by
        // SIMs), so each is added to atomically; one device's traffic stays on one CPU by RSS,
        // so the cache line rarely moves.
        unsafe {
            let counters = &raw mut (*record).counters;
            let (packets, bytes_counter) = if let Verdict::Pass(..) = verdict {
                (
                    &raw mut (*counters).pass_packets,
                    &raw mut (*counters).pass_bytes,
                )
            } else {
                (
                    &raw mut (*counters).drop_packets,
                    &raw mut (*counters).drop_bytes,
                )
            };
            atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(packets, 1);
            atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(bytes_counter, bytes);
        }
    }
    if let Verdict::Pass(PassReason::Rule | PassReason::Inbound, rule) = verdict
        && let Some(counter) = RULE_STATS.get_ptr_mut(rule)
    {
        // SAFETY: a per-CPU slot, written only by this CPU while the program runs.
        unsafe {
            (*counter).packets = (*counter).packets.wrapping_add(1);
            (*counter).bytes = (*counter).bytes.wrapping_add(bytes);
        }
    }
}
