//! Stage 0, established: a packet of a live session checked under the policy in force, in
//! the frame shape nearly all traffic has (untagged IPv4 without options, TCP or UDP), judged
//! with one `SESSIONS` lookup: no full header walk, no policy lookup.
//!
//! The frame's key comes from `parse::v4_session` (the full parser's rules on fixed offsets),
//! the decision from `enforcer_common::session::covered`, the same function `judge` uses, and
//! the session's counters and TCP state from `track::touch`. Anything else goes on to the full
//! pipeline: another frame shape, a session checked under an older epoch (revalidated there),
//! a packet its session does not cover where it arrived, and the opener's packets of an audit
//! session (reported as events there). A frame whose session this stage found absent tells the
//! pipeline so, and is not looked up twice.
//!
//! A new flow also has its source's SIM binding looked up here and left in `SRC_SIM` for the
//! deny cache (`crate::deny_cache`) and the pipeline's identify stage, which take it instead of
//! looking again. Looked up there, after
//! the full header walk, it came too far behind the session miss for the CPU to overlap the
//! two cache misses, and at 1M SIMs that cost a flood of new flows a fifth of its drop rate
//! (0.9-1.0 against 1.2-1.3 Mpps, alternating runs); issued here, the two misses overlap.
//!
//! Reads `SESSIONS`, `CONFIG`, `IFACE_CACHE` (and `IFACES` when the cache is stale), `CLOCK`,
//! `SIM_V4_V2`; writes the found `SESSIONS` entry, `SRC_SIM` and (on a miss of this CPU's
//! copy) `IFACE_CACHE`.

use aya_ebpf::programs::XdpContext;
use enforcer_common::{
    PassReason, Src, Verdict,
    maps::SimBinding,
    rules::NO_RULE,
    session::{Found, Side, covered},
};

use crate::maps::{SESSIONS, SIM_V4_V2, SRC_SIM};

/// What this stage made of a frame: a plain struct with every field set on every path (an
/// enum's payload left undefined on one path let LLVM carry undefined registers into the
/// merged exit, which the verifier refuses).
pub struct Established {
    /// [`JUDGED`], [`NO_SESSION`] or [`OTHER`].
    pub kind: u8,
    /// The verdict when [`JUDGED`] (a pass); else a pass by no rule, unused.
    pub verdict: Verdict,
    /// The sender to count it for when [`JUDGED`]; else the default, unused.
    pub src: Src,
}

/// Judged here: a packet of a live session of the policy in force.
pub const JUDGED: u8 = 0;
/// The common shape, and no session: the pipeline need not look its session up.
pub const NO_SESSION: u8 = 1;
/// Left to the pipeline whole.
pub const OTHER: u8 = 2;

impl Established {
    #[inline(always)]
    fn not_judged(kind: u8) -> Self {
        Self {
            kind,
            verdict: Verdict::Pass(PassReason::Rule, NO_RULE),
            src: Src::default(),
        }
    }
}

/// Judge `ctx`'s frame if it belongs to a live session of the policy in force (see the module
/// comment), counting it in the session.
#[inline(always)]
#[expect(
    clippy::needless_borrows_for_generic_args,
    reason = "the key by reference, as tested on Linux 6.1 (see `parse::v4_session`)"
)]
pub fn judge(ctx: &XdpContext) -> Established {
    let Some(frame) = crate::parse::v4_session(ctx) else {
        return Established::not_judged(OTHER);
    };
    let Some(entry) = SESSIONS.get_ptr_mut(&frame.key) else {
        // A new flow: its source's SIM binding is the pipeline's first policy lookup. Looked up
        // here, right behind the session miss, the CPU overlaps the two cache misses; the
        // pipeline's identify stage takes it from `SRC_SIM` instead of looking again.
        let src = if frame.src_first {
            &frame.key.addr_a
        } else {
            &frame.key.addr_b
        };
        let addr = [src[0], src[1], src[2], src[3]];
        // Read before the lookup: identify takes the binding only while this epoch is in force.
        let epoch = crate::track::epoch();
        // SAFETY: the pointer comes from a successful lookup and is valid for this program
        // run (`SIM_V4_V2` is not preallocated: a concurrent delete frees it after RCU).
        let binding = SIM_V4_V2
            .get_ptr(addr)
            .map_or(SimBinding::default(), |entry| unsafe { *entry });
        if let Some(slot) = SRC_SIM.get_ptr_mut(0) {
            // SAFETY: this CPU's entry of a per-CPU array, valid for this run and written by
            // nothing else while the program runs on this CPU.
            unsafe {
                (*slot).addr = addr;
                (*slot).epoch = epoch;
                (*slot).binding = binding;
            }
        }
        return Established::not_judged(NO_SESSION);
    };
    let epoch = crate::track::epoch();
    // SAFETY: `entry` comes from a successful lookup and stays valid for this program run
    // (the map is not preallocated: a concurrent delete frees it only after RCU).
    let session = unsafe { Found::of(&*entry) };
    let iface = crate::identify::iface_flags_cached(crate::parse::ifindex(ctx), epoch);
    let side = Side::of(&session, frame.src_first, false, iface);
    match covered(&session, side, epoch) {
        Some((verdict, src)) if !matches!(verdict, Verdict::Pass(PassReason::Audit, _)) => {
            crate::track::touch(
                entry,
                side.from_device,
                crate::frame_len(ctx),
                frame.proto,
                frame.flags,
            );
            Established {
                kind: JUDGED,
                verdict,
                src,
            }
        }
        _ => Established::not_judged(OTHER),
    }
}
