//! The enforcer XDP program: established (a common-shape packet of a session of the current
//! policy epoch passes after one lookup) → deny cache (a new flow's frame of a kind the
//! pipeline just denied is dropped again, from a per-CPU table) → parse → track (any other
//! packet of such a session passes) → identify → decide → account → forward (opt-in: a passed
//! packet routed and redirected in XDP), one exit.
//!
//! Every stage is a module; this file only wires them.
#![cfg_attr(not(test), no_std)]
#![cfg_attr(not(test), no_main)]
// `atomic_xadd` for the per-SIM counters: the BPF target has no compare-and-swap, so `core`
// offers no `AtomicU64::fetch_add`, but LLVM lowers the intrinsic to BPF's atomic add.
#![feature(core_intrinsics)]
#![expect(internal_features, reason = "core_intrinsics: atomic_xadd, see above")]

mod account;
mod bench;
mod clock;
mod deny_cache;
mod established;
mod events;
mod forward;
mod identify;
mod maps;
mod parse;
mod scan;
mod track;

use aya_ebpf::{macros::xdp, programs::XdpContext};
use enforcer_common::{
    DropReason, PassReason, Src, Verdict, decide::PacketMeta, maps::DENY_EVENT_AUDIT,
    rules::NO_RULE,
};

use crate::parse::Parsed;

/// The frame's length in bytes, read from the context where it is needed rather than kept in
/// a register across the stages.
#[inline(always)]
fn frame_len(ctx: &XdpContext) -> u64 {
    ctx.data_end().wrapping_sub(ctx.data()) as u64
}

/// Entry point: judge the frame, pick its path, count it once, return the action.
#[xdp]
pub fn enforcer(ctx: XdpContext) -> u32 {
    pipeline(ctx)
}

/// The enforcing program's body, shared with the benchmark's variants (`bench`), which prepare
/// the maps before it (a raised epoch, a removed session): a packet of an established session
/// is judged by the first stage and goes straight to the exit; any other goes through the rest
/// of the pipeline (told whether the first stage found its session absent).
#[inline(always)]
fn pipeline(ctx: XdpContext) -> u32 {
    let first = established::judge(&ctx);
    match first.kind {
        established::JUDGED => exit(&ctx, first.verdict, &first.src),
        // Counted and reported where it is found (`deny_cache`).
        established::NO_SESSION if deny_cache::dropped::<true>(&ctx) => {
            enforcer_common::verdict::XDP_DROP
        }
        kind => rest(ctx, kind == established::NO_SESSION),
    }
}

/// The pipeline after the first stage: parse → track → identify → decide, then the exit;
/// `session_absent`: the first stage found the frame's session absent.
#[inline(always)]
fn rest(ctx: XdpContext, session_absent: bool) -> u32 {
    let (verdict, src) = run(&ctx, session_absent);
    // The context is read back from its stack slot (where `parse_into` already needs it)
    // rather than kept in a register across the stages: the register cost a spill slot that
    // took the frame over the 256 bytes Linux 6.1's combined stack limit leaves it.
    // SAFETY: a volatile read of a local that lives for the whole function.
    let ctx = unsafe { core::ptr::read_volatile(&raw const ctx) };
    exit(&ctx, verdict, &src)
}

/// The single exit: pick the packet's path, count it once, return the action.
#[inline(always)]
fn exit(ctx: &XdpContext, verdict: Verdict, src: &Src) -> u32 {
    let action = path(ctx, verdict);
    account::record(verdict, src, frame_len(ctx));
    action
}

/// The action for `verdict`: a passed IP packet on an interface that forwards in XDP is
/// routed and redirected (`forward`), every other packet gets the verdict's own action. The
/// interface's flag is read here (this CPU's cached copy), so that a packet that passes to the
/// stack makes no call.
#[inline(always)]
fn path(ctx: &XdpContext, verdict: Verdict) -> u32 {
    if verdict.forwardable() {
        let ifindex = parse::ifindex(ctx);
        if identify::forwards(ifindex) {
            return forward::forward(ctx, ifindex);
        }
    }
    verdict.xdp_action()
}

/// An empty program: the floor that benchmarks measure the enforcer against (BPF_PROG_TEST_RUN
/// of this costs the harness alone). Never attached by the daemon.
#[xdp]
pub fn xdp_pass(_ctx: XdpContext) -> u32 {
    enforcer_common::verdict::XDP_PASS
}

/// Parse → track → identify → decide, with deny events; `session_absent`: the first stage
/// found the frame's session absent already.
#[inline(always)]
fn run(ctx: &XdpContext, session_absent: bool) -> (Verdict, Src) {
    let mut meta = PacketMeta {
        session_absent,
        ..PacketMeta::default()
    };
    match decode(parse_into(ctx, &mut meta)) {
        Stage::Ip => {}
        Stage::IcmpError(at, ip_end) => {
            let rule = related_into(ctx, at, ip_end, &meta);
            if rule != NO_RULE {
                return (Verdict::Pass(PassReason::Reply, rule), Src::default());
            }
        }
        Stage::Done(verdict) => return (verdict, Src::default()),
        Stage::NotIp => {
            let flags = identify::iface_flags(parse::ifindex(ctx));
            return (enforcer_common::decide::not_ip(flags), Src::default());
        }
    }
    let bytes = frame_len(ctx);
    let mut sessions = track::KernelSessions::new();
    let (verdict, src) = enforcer_common::session::judge(&mut sessions, &mut meta, bytes);
    match verdict {
        Verdict::Drop(reason) => {
            let (sim, segment) = events::sender(&src);
            events::deny(&meta, reason as u8, sim, segment, bytes);
        }
        // What audit mode let through is reported like a denial, within the same budget.
        Verdict::Pass(PassReason::Audit, _) => {
            let (sim, segment) = events::sender(&src);
            events::deny(&meta, DENY_EVENT_AUDIT, sim, segment, bytes);
        }
        Verdict::Pass(..) => {}
    }
    (verdict, src)
}

/// An ICMP or ICMPv6 error (`meta`, quote at `at`, IP end `ip_end`) that quotes a packet of a
/// live session of the policy in force: the session's rule, so that it passes as a reply
/// (`enforcer_common::session::related`); else [`NO_RULE`]. A BPF function of its own, so that
/// the quote's key and headers live in its frame, not in the one the policy lookups share.
#[inline(never)]
fn related_into(ctx: &XdpContext, at: usize, ip_end: usize, meta: &PacketMeta) -> u32 {
    let mut quoted = enforcer_common::session::Quoted::default();
    parse::quoted(ctx, at, ip_end, meta.v6, &meta.dst, &mut quoted);
    let mut sessions = track::KernelSessions::new();
    enforcer_common::session::related(&mut sessions, &quoted, meta.ifindex, &meta.src)
        .unwrap_or(NO_RULE)
}

/// What [`parse_into`] found, packed in its return register: a BPF function returns one
/// 64-bit value, not a struct.
enum Stage {
    Ip,
    /// An IP packet that is an ICMP error: where its quote starts, where its IP packet ends.
    IcmpError(usize, usize),
    Done(Verdict),
    NotIp,
}

const STAGE_IP: u64 = 0;
const STAGE_PASS: u64 = 1;
const STAGE_DROP: u64 = 2;
const STAGE_NOT_IP: u64 = 3;
const STAGE_ICMP_ERROR: u64 = 4;

/// Stage 1, parse, as a BPF function of its own (never inlined): the header copies it makes
/// live in its own stack frame, gone before the lookups run. The verifier allows 512 bytes of
/// stack for the deepest chain of calls, and parse, the session logic and the lookups inlined
/// into one function needed more. Writes the packet's fields to `meta` for an IP packet;
/// returns `kind << 40 | reason << 32 | rule`, for an ICMP error `kind << 40 | at << 16 |
/// ip_end` (where its quote starts, where its IP packet ends).
#[inline(never)]
fn parse_into(ctx: &XdpContext, meta: &mut PacketMeta) -> u64 {
    match parse::packet(ctx, meta) {
        Ok(Parsed::Ip) => STAGE_IP << 40,
        Ok(Parsed::IcmpError(at, ip_end)) => {
            STAGE_ICMP_ERROR << 40 | (at as u64 & 0xffff) << 16 | (ip_end as u64 & 0xffff)
        }
        Ok(Parsed::Done(Verdict::Pass(reason, rule))) => {
            STAGE_PASS << 40 | (reason as u64) << 32 | u64::from(rule)
        }
        Ok(Parsed::Done(Verdict::Drop(reason))) | Err(reason) => {
            STAGE_DROP << 40 | (reason as u64) << 32
        }
        Ok(Parsed::NotIp) => STAGE_NOT_IP << 40,
    }
}

/// The reasons the parser (and the ICMP error check) may return, by number (the only ones
/// they produce).
#[inline(always)]
fn decode(code: u64) -> Stage {
    let reason = ((code >> 32) & 0xff) as u32;
    let rule = code as u32;
    match code >> 40 {
        STAGE_IP => Stage::Ip,
        STAGE_ICMP_ERROR => {
            Stage::IcmpError(((code >> 16) & 0xffff) as usize, (code & 0xffff) as usize)
        }
        STAGE_PASS => Stage::Done(Verdict::Pass(
            if reason == PassReason::Neighbour as u32 {
                PassReason::Neighbour
            } else if reason == PassReason::Reply as u32 {
                PassReason::Reply
            } else {
                PassReason::NotIp
            },
            rule,
        )),
        STAGE_NOT_IP => Stage::NotIp,
        _ => Stage::Done(Verdict::Drop(drop_reason(reason))),
    }
}

/// The drop reason numbered `n` (every reason the parser can give; anything else reads as
/// malformed).
#[inline(always)]
fn drop_reason(n: u32) -> DropReason {
    match n {
        n if n == DropReason::SourceRoute as u32 => DropReason::SourceRoute,
        n if n == DropReason::NotIp as u32 => DropReason::NotIp,
        _ => DropReason::Malformed,
    }
}

/// Parse errors are the only `Err`; keep the type named so a new one is a compile error here.
const _: fn(DropReason) -> Verdict = Verdict::Drop;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any reachable call here; the lints forbid writing one.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
