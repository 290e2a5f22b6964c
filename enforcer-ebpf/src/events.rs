//! Stage 5, report: a deny event for a packet the policy dropped, on the `DENY_EVENTS` ring
//! buffer, within its sender's budget of `DENY_EVENTS_PER_SECOND` (`DENY_LIMITS`); what is
//! over budget is counted and the count carried in the sender's next event. Once a CPU finds
//! the ring buffer full (the reader behind), it reports nothing and looks up no budget for
//! the rest of that tick (`RING_FULL_TICK`).
//!
//! Reads `EVENTS_OFF`, `RING_FULL_TICK`, `CLOCK` and `DENY_LIMITS`; writes `DENY_EVENTS`,
//! `DENY_LIMITS` and `RING_FULL_TICK`.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::bindings::BPF_RB_AVAIL_DATA;
use enforcer_common::{
    decide::PacketMeta,
    maps::{
        DENY_EVENT_AUDIT, DENY_EVENTS_BYTES, DENY_EVENTS_PER_SECOND, DENY_NO_SIM, DenyEvent,
        DenyLimit,
    },
};

use crate::maps::{DENY_EVENTS, DENY_LIMITS, EVENTS_OFF, RING_FULL_TICK};

/// Set in the `DENY_LIMITS` key of a SIM's audit-mode budget.
const AUDIT_BUDGET: u32 = 1 << 31;

/// One second in nanoseconds: the budget's window.
const WINDOW_NS: u64 = 1_000_000_000;

/// Report the packet `meta` dropped for `reason`, sent by SIM `sim` (of segment `segment`;
/// [`DENY_NO_SIM`] for none).
#[inline(always)]
pub fn deny(meta: &PacketMeta, reason: u8, sim: u32, segment: u16, bytes: u64) {
    if may_report() {
        report(meta, reason, sim, segment, bytes);
    }
}

/// [`deny`] for a caller that is a BPF function of its own already (`crate::deny_cache`),
/// which builds the packet's `PacketMeta` only when a report may be written (`meta`, called
/// only then): the report is written in the caller's frame, as a call from there would be a
/// third frame, past the combined stack Linux allows.
#[inline(always)]
pub fn deny_in_place(
    meta: impl FnOnce() -> PacketMeta,
    reason: u8,
    sim: u32,
    segment: u16,
    bytes: u64,
) {
    if may_report() {
        write(&meta(), reason, sim, segment, bytes);
    }
}

/// Whether a report may be written: events are on and this CPU has not found the ring full in
/// this tick.
#[inline(always)]
fn may_report() -> bool {
    if EVENTS_OFF.get(0).is_some_and(|off| *off != 0) {
        return false;
    }
    // This CPU found the ring full in this tick: no event can be written. A flood from many
    // SIMs that fills the ring would otherwise cost every packet a lookup in the LRU of
    // budgets (a cache and TLB miss at a million SIMs) to count what no event may carry
    // before the ring drains; the packet is counted in `stats` and the metrics like every
    // drop. What this costs every report: one per-CPU array read (a helper call before
    // Linux 6.10 inlined those lookups) and `jiffies` (inlined), both here in the caller, so
    // that such a packet makes no call.
    !ring_full_in(crate::clock::jiffies())
}

/// [`deny`] once the ring may have room. A BPF function of its own: the event is written in
/// place in the ring buffer, and what it needs lives in this frame, not in the program's
/// (five arguments, a BPF function's most: it reads the tick again).
#[inline(never)]
fn report(meta: &PacketMeta, reason: u8, sim: u32, segment: u16, bytes: u64) {
    write(meta, reason, sim, segment, bytes);
}

/// Write the event of [`deny`] within the sender's budget, or count it as suppressed.
#[inline(always)]
fn write(meta: &PacketMeta, reason: u8, sim: u32, segment: u16, bytes: u64) {
    let tick = crate::clock::jiffies();
    let now = crate::clock::ns_at(tick);
    // Audit mode's reports have budgets of their own, so that their suppressed counts never
    // mix with real denials' (SIM indices stay below 2^30).
    let key = if reason != DENY_EVENT_AUDIT {
        sim
    } else if sim == DENY_NO_SIM {
        DENY_NO_SIM - 1
    } else {
        sim | AUDIT_BUDGET
    };
    let limit = match DENY_LIMITS.get_ptr_mut(key) {
        Some(limit) => limit,
        // The reader is behind and this sender has no budget yet: no event can be written and
        // there is no count to carry it in. Making a budget here would cost a flood from many
        // SIMs an LRU insert and an eviction per packet (its counts lost to the next eviction
        // anyway); the packet is counted in `stats` and the metrics like every drop.
        None if ring_found_full(tick) => return,
        None => {
            let fresh = DenyLimit {
                window_ns: now,
                count: 0,
                suppressed: 0,
                suppressed_bytes: 0,
            };
            // A full LRU evicts the SIM denied least recently; a failed insert only skips
            // the budget's bookkeeping for this packet.
            let _ = DENY_LIMITS.insert(key, fresh, 0);
            match DENY_LIMITS.get_ptr_mut(key) {
                Some(limit) => limit,
                None => return,
            }
        }
    };
    // SAFETY: `limit` comes from a successful lookup and stays valid for this run (an LRU
    // element is freed only after an RCU grace period). The window and its count are plain
    // reads and writes (two CPUs denying one SIM at once may let an event more or fewer
    // through); the suppressed counts are added to atomically, so none is lost.
    unsafe {
        if now.wrapping_sub((*limit).window_ns) >= WINDOW_NS {
            (*limit).window_ns = now;
            (*limit).count = 0;
        }
        if (*limit).count >= DENY_EVENTS_PER_SECOND {
            suppress(limit, bytes);
            return;
        }
    }
    // The reader is behind: count the packet as suppressed. Checked first without the lock a
    // reservation takes, which a flood would otherwise take and fail for every SIM's first
    // packets of each second.
    let entry = if ring_found_full(tick) {
        None
    } else {
        DENY_EVENTS.reserve::<DenyEvent>(0)
    };
    let Some(mut entry) = entry else {
        // SAFETY: as above.
        unsafe { suppress(limit, bytes) };
        return;
    };
    let event = entry.as_mut_ptr();
    // SAFETY: `event` points at a reserved, 8-aligned `DenyEvent` in the ring buffer that only
    // this run writes until it is submitted; `limit` as above.
    unsafe {
        (*event).time_ns = now;
        (*event).sim = sim;
        // Taken out atomically: what another CPU adds meanwhile stays for the next event.
        let suppressed = core::ptr::read_volatile(&raw const (*limit).suppressed);
        let suppressed_bytes = core::ptr::read_volatile(&raw const (*limit).suppressed_bytes);
        atomic_xadd::<u32, u32, { AtomicOrdering::Relaxed }>(
            &raw mut (*limit).suppressed,
            suppressed.wrapping_neg(),
        );
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(
            &raw mut (*limit).suppressed_bytes,
            suppressed_bytes.wrapping_neg(),
        );
        (*event).suppressed = suppressed;
        (*event).suppressed_bytes = suppressed_bytes;
        (*event).src = meta.src;
        (*event).dst = meta.dst;
        (*event).sport = meta.sport;
        (*event).dport = meta.dport;
        (*event).ifindex = meta.ifindex;
        (*event).segment = segment;
        (*event).proto = meta.proto;
        (*event).v6 = u8::from(meta.v6);
        (*event).reason = reason;
        (*event)._pad = 0;
        (*event).bytes = u16::try_from(bytes).unwrap_or(u16::MAX);
        (*limit).count = (*limit).count.wrapping_add(1);
    }
    entry.submit(0);
}

/// Whether `DENY_EVENTS` has no room for another event (a reservation would fail): the reader
/// is behind.
#[inline(always)]
fn ring_full() -> bool {
    DENY_EVENTS.query(u64::from(BPF_RB_AVAIL_DATA))
        > u64::from(DENY_EVENTS_BYTES.wrapping_sub(EVENT_RECORD_BYTES))
}

/// Whether this CPU found `DENY_EVENTS` full in tick `tick` (`RING_FULL_TICK`).
#[inline(always)]
fn ring_full_in(tick: u64) -> bool {
    RING_FULL_TICK.get(0).is_some_and(|full| *full == tick)
}

/// Whether `DENY_EVENTS` is full now ([`ring_full`]); if so, remembered for this CPU as found
/// full in tick `tick` ([`ring_full_in`]).
#[inline(always)]
fn ring_found_full(tick: u64) -> bool {
    if !ring_full() {
        return false;
    }
    if let Some(full) = RING_FULL_TICK.get_ptr_mut(0) {
        // SAFETY: this CPU's entry of a per-CPU array, valid for this run and written by
        // nothing else while the program runs on this CPU.
        unsafe { *full = tick };
    }
    true
}

/// What one event takes in the ring buffer: the event and the kernel's 8-byte record header
/// (`BPF_RINGBUF_HDR_SZ`), rounded up to 8 bytes.
const EVENT_RECORD_BYTES: u32 = (core::mem::size_of::<DenyEvent>() as u32 + 8 + 7) & !7;

/// Count one packet of `bytes` bytes as suppressed in `limit`.
///
/// # Safety
/// `limit` points at a live `DENY_LIMITS` value.
#[inline(always)]
unsafe fn suppress(limit: *mut DenyLimit, bytes: u64) {
    // SAFETY: the caller's contract; atomic adds, as every CPU may add to it.
    unsafe {
        atomic_xadd::<u32, u32, { AtomicOrdering::Relaxed }>(&raw mut (*limit).suppressed, 1);
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(
            &raw mut (*limit).suppressed_bytes,
            bytes,
        );
    }
}

/// The `DENY_LIMITS` key and event SIM of a sender: its SIM index, or [`DENY_NO_SIM`].
#[inline(always)]
pub fn sender(src: &enforcer_common::Src) -> (u32, u16) {
    match src.sim() {
        Some(sim) => (sim.sim, sim.segment),
        None => (DENY_NO_SIM, u16::MAX),
    }
}
