//! Stage 4, account: the single exit. Counts every packet once per table it belongs to.
//!
//! Writes `VERDICTS_V2` (per segment, by verdict), `SIM_STATS` (per SIM) and `RULE_STATS`
//! (per allowing rule); all per-CPU arrays, so no atomics on the hot path.

use enforcer_common::{
    PassReason, Src, SrcKind, Verdict,
    maps::{SEGMENT_NONE, verdict_stats_index},
};

use crate::maps::{RULE_STATS, SIM_STATS, VERDICTS_V2};

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
    if is_sim && let Some(counter) = SIM_STATS.get_ptr_mut(src.sim.sim) {
        // SAFETY: a per-CPU slot, written only by this CPU while the program runs.
        unsafe {
            if let Verdict::Pass(..) = verdict {
                (*counter).pass_packets = (*counter).pass_packets.wrapping_add(1);
                (*counter).pass_bytes = (*counter).pass_bytes.wrapping_add(bytes);
            } else {
                (*counter).drop_packets = (*counter).drop_packets.wrapping_add(1);
                (*counter).drop_bytes = (*counter).drop_bytes.wrapping_add(bytes);
            }
        }
    }
    if let Verdict::Pass(PassReason::Rule, rule) = verdict
        && let Some(counter) = RULE_STATS.get_ptr_mut(rule)
    {
        // SAFETY: a per-CPU slot, written only by this CPU while the program runs.
        unsafe {
            (*counter).packets = (*counter).packets.wrapping_add(1);
            (*counter).bytes = (*counter).bytes.wrapping_add(bytes);
        }
    }
}
