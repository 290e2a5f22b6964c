//! Stage 0b, deny cache: a new flow's frame of a kind the pipeline just denied is dropped
//! again without the full pipeline.
//!
//! A flood of denied frames (a fleet retrying an endpoint its policy does not allow, a
//! compromised device scanning) is the load a gateway must shed cheapest. When the pipeline
//! drops a frame whose session the established stage found absent with `no_rule`, and the
//! sender is a SIM with no flags and no rules of its own, it records the verdict's key
//! (`enforcer_common::decide::DenyKey`: epoch, arrival interface, the sender's segment,
//! destination, protocol, port) in this CPU's `DENY_CACHE`. A later such frame whose sender's
//! binding the established stage left in `SRC_SIM` under the epoch still in force, sent by a
//! SIM with no flags and no rules of its own, whose key the cache holds, is dropped here with
//! `no_rule`: reported (deny events) and counted (`crate::account::record`) as the pipeline
//! would, without the header walk, the destination, segment and rule lookups and the session
//! logic. `DenyKey`'s comment argues why the verdict is the same, and `DenyKey::of` is the one
//! place that says which verdicts may be kept. The cache is direct-mapped (`DenyKey::SLOTS`
//! entries per CPU): a colliding key replaces the entry, a stale epoch never matches.
//!
//! Reads `CONFIG`, `SRC_SIM`, `SIMS`, `DENY_CACHE` and what `crate::events` and
//! `crate::account` read; writes `DENY_CACHE` (on the pipeline's `no_rule` drops) and what
//! `crate::events` and `crate::account` write.

use aya_ebpf::programs::XdpContext;
use enforcer_common::{
    DropReason, Inputs, Src, SrcKind, Verdict,
    decide::{DenyKey, PacketMeta, decide, v4_in_16},
    maps::IPPROTO_TCP,
    rules::NO_RULE,
};

use crate::{
    identify::{sim_policy, src_binding},
    maps::{CONFIG, DENY_CACHE},
};

/// Whether the cache dropped `ctx`'s frame; then it is reported (deny events) and, with
/// `ACCOUNT` (every program but the benchmark's `enforcer_unaccounted`), counted like the
/// pipeline's drop, and the program returns `XDP_DROP`. Only for a frame whose session the
/// established stage found absent (so of the common shape, its sender's binding in
/// `SRC_SIM`).
#[inline(always)]
pub fn dropped<const ACCOUNT: bool>(ctx: &XdpContext) -> bool {
    lookup::<ACCOUNT>(ctx) != 0
}

/// [`dropped`]'s work, as a BPF function of its own: the frame's fields, the report's
/// `PacketMeta` and the key live in this frame, not in the program's, which has no room left
/// under the combined stack limit; the report and the count are written here, inline (a call
/// from here would be a third frame). Returns 1 when dropped, else 0.
#[inline(never)]
fn lookup<const ACCOUNT: bool>(ctx: &XdpContext) -> u32 {
    const L3: usize = 14;
    const L4: usize = L3 + 20;
    let start = ctx.data();
    let end = ctx.data_end();
    // The established stage checked the whole shape; the verifier needs this read's bounds.
    if start.wrapping_add(L4 + 8) > end {
        return 0;
    }
    // Generation and epoch from one load: an entry matches only the generation it was
    // decided in, even if this read catches the daemon's write of `CONFIG` halfway.
    let (generation, epoch) = config();
    let bytes = start as *const u8;
    // SAFETY: every offset read is below L4 + 8, inside the frame (checked above).
    let byte = |offset: usize| unsafe { *bytes.add(offset) };
    let src = [byte(L3 + 12), byte(L3 + 13), byte(L3 + 14), byte(L3 + 15)];
    // The binding the established stage read for this frame's source under the epoch in force.
    let Some(binding) = src_binding(src, epoch) else {
        return 0;
    };
    // Read anew for every frame: a quarantine, audit mode or own rules take effect at once.
    let Some(sender) = sim_policy(generation, binding.of(generation)) else {
        return 0;
    };
    if sender.flags != 0 || sender.tiers != 0 {
        return 0;
    }
    let dst = [byte(L3 + 16), byte(L3 + 17), byte(L3 + 18), byte(L3 + 19)];
    let proto = byte(L3 + 9);
    let dport = u16::from_be_bytes([byte(L4 + 2), byte(L4 + 3)]);
    let ifindex = crate::parse::ifindex(ctx);
    let key = DenyKey::new(
        epoch,
        generation,
        ifindex,
        dst,
        sender.segment,
        proto,
        dport,
    );
    let Some(entry) = DENY_CACHE.get_ptr(key.slot()) else {
        return 0;
    };
    // SAFETY: this CPU's entry of a per-CPU array, valid for this run and written by nothing
    // else while the program runs on this CPU.
    if unsafe { *entry } != key {
        return 0;
    }
    // Dropped: reported and counted as the pipeline would.
    let len = crate::frame_len(ctx);
    let meta = || PacketMeta {
        src: v4_in_16(src),
        dst: v4_in_16(dst),
        proto,
        dport,
        sport: u16::from_be_bytes([byte(L4), byte(L4 + 1)]),
        l4_flags: if proto == IPPROTO_TCP && start.wrapping_add(L4 + 20) <= end {
            // SAFETY: checked just above: L4 + 20 bytes lie inside the frame.
            unsafe { *bytes.add(L4 + crate::parse::TCP_FLAGS) }
        } else {
            0
        },
        has_ports: true,
        ifindex,
        session_absent: true,
        ..PacketMeta::default()
    };
    crate::events::deny_in_place(
        meta,
        DropReason::NoRule as u8,
        sender.sim,
        sender.segment,
        len,
    );
    if ACCOUNT {
        let sender = Src {
            kind: SrcKind::Sim,
            sim: sender,
        };
        crate::account::record(Verdict::Drop(DropReason::NoRule), &sender, len);
    }
    1
}

/// Remember the verdict on a frame (`meta`) with these decision inputs, when `DenyKey::of`
/// says it may be kept. Called by the identify stage, whose frame has room for the key; for
/// a frame whose session the established stage found absent, the pipeline's verdict is the
/// decision on these inputs (`session::judge` takes it as it is when it drops). The key's
/// epoch is the one the established stage read before looking the sender's binding up
/// (`SRC_SIM`), before the pipeline read the generation it judged in; `CONFIG` is read again
/// here, and the entry is kept only if that epoch is still in force, with the generation of
/// that read, so that an entry only ever matches while the generation it was decided in is
/// active.
#[inline(always)]
pub fn remember(meta: &PacketMeta, inputs: &Inputs) {
    if !meta.session_absent || inputs.src.kind != SrcKind::Sim || inputs.rule != NO_RULE {
        return;
    }
    let (generation, epoch) = config();
    // The established stage's binding for this source, read under the epoch still in force:
    // it was read before the generation the pipeline judged in.
    if src_binding([meta.src[0], meta.src[1], meta.src[2], meta.src[3]], epoch).is_none() {
        return;
    }
    let Some(key) = DenyKey::of(meta, &inputs.src, decide(inputs), epoch, generation) else {
        return;
    };
    if let Some(entry) = DENY_CACHE.get_ptr_mut(key.slot()) {
        // SAFETY: as in `lookup`.
        unsafe { *entry = key };
    }
}

/// `CONFIG`'s active generation and epoch, from one aligned 8-byte volatile load (`Config`:
/// generation, then epoch, little-endian); `(0, 0)` if the array has no entry (never).
#[inline(always)]
fn config() -> (u8, u32) {
    let Some(config) = CONFIG.get_ptr(0) else {
        return (0, 0);
    };
    // SAFETY: the array's entry, valid for this run and 8-byte aligned.
    let config = unsafe { core::ptr::read_volatile(config.cast::<u64>()) };
    ((config & 1) as u8, (config >> 32) as u32)
}
