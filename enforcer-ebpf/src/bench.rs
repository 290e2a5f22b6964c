//! Programs for `cargo xtask bench` only; the daemon never attaches them. They live in this
//! object so the benchmark needs no second BPF build, and so `xdp_bare` can share `SIM_V4_V2`.
//!
//! - `xdp_gen`: the traffic generator, run by BPF_PROG_TEST_RUN in live-frames mode; writes a
//!   whole 64-byte UDP frame (pages come back with whatever the gateway wrote) with the next
//!   SIM's source address and returns `XDP_TX`.
//! - `xdp_sink`: counts and drops what the gateway forwarded.
//! - `xdp_bare`, `xdp_bare_pass`: one `SIM_V4_V2` hash lookup, count, drop or pass (the upper
//!   reference).
//! - `xdp_bare_sessions`: a `SESSIONS` lookup of the frame's session, then `xdp_bare`'s (the
//!   floor with sessions).
//! - `xdp_drop_all`: count and drop (the ceiling of the generator and the veth path).
//! - `enforcer_unaccounted`: the enforcer without its account stage, so that the account
//!   stage's per-packet cost is measured as a difference while the enforcing program itself
//!   stays as it is (a load-time switch inside it changed its stack layout, which Linux 6.1's
//!   verifier refused).
//!
//! - `enforcer_recheck`: the enforcer with the policy epoch raised before every run, so that
//!   every run is a revalidated packet (its session judged again against the policy in force).
//! - `enforcer_first`: the enforcer with the frame's session removed before every run, so that
//!   every run is the first packet of its session.
//!
//! Counters: `BENCH_COUNT` (per CPU) slot 0.

use aya_ebpf::{
    Global,
    macros::{map, xdp},
    maps::PerCpuArray,
    programs::XdpContext,
};
use enforcer_common::{
    session::SessionKey,
    verdict::{XDP_DROP, XDP_PASS},
};

use crate::maps::{CONFIG, SESSIONS, SIM_V4_V2};

/// `XDP_TX` from `enum xdp_action`.
const XDP_TX: u32 = 3;
/// Bytes the generator writes: Ethernet, IPv4, UDP and 22 bytes of payload (64 with the FCS).
const GEN_LEN: usize = 60;

/// Number of SIM addresses the generator cycles through (10.0.0.1 onwards, as the bench
/// policy assigns them).
#[unsafe(no_mangle)]
static GEN_SIMS: Global<u32> = Global::new(1);
/// Destination address (network order bytes as a native u32).
#[unsafe(no_mangle)]
static GEN_DST: Global<u32> = Global::new(0);
/// Destination UDP port.
#[unsafe(no_mangle)]
static GEN_DPORT: Global<u16> = Global::new(53);
/// Destination MAC (the gateway's ingress interface), first 4 and last 2 bytes.
#[unsafe(no_mangle)]
static GEN_DMAC_HI: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
static GEN_DMAC_LO: Global<u16> = Global::new(0);

/// Packets seen by the bench programs (slot 0), and the generator's sequence (slot 1).
#[map]
static BENCH_COUNT: PerCpuArray<u64> = PerCpuArray::with_max_entries(2, 0);

#[inline(always)]
fn bump(slot: u32) -> u64 {
    match BENCH_COUNT.get_ptr_mut(slot) {
        Some(counter) => {
            // SAFETY: a per-CPU slot, written only by this CPU while the program runs.
            unsafe {
                let value = *counter;
                *counter = value.wrapping_add(1);
                value
            }
        }
        None => 0,
    }
}

/// The generator.
#[xdp]
pub fn xdp_gen(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    if start.wrapping_add(GEN_LEN) > ctx.data_end() {
        return XDP_DROP;
    }
    let sims = GEN_SIMS.load().max(1);
    let n = (bump(1).checked_rem(u64::from(sims)).unwrap_or(0) as u32).wrapping_add(1);
    let src = [10, (n >> 16) as u8, (n >> 8) as u8, n as u8];
    let dst = GEN_DST.load().to_ne_bytes();
    let dport = GEN_DPORT.load().to_be_bytes();
    let mac_hi = GEN_DMAC_HI.load().to_be_bytes();
    let mac_lo = GEN_DMAC_LO.load().to_be_bytes();
    let csum = ipv4_checksum(src, dst).to_be_bytes();
    let frame: [u8; GEN_LEN] = [
        mac_hi[0], mac_hi[1], mac_hi[2], mac_hi[3], mac_lo[0], mac_lo[1], // dst MAC
        0x02, 0, 0, 0, 0, 1, 0x08, 0x00, // src MAC, IPv4
        0x45, 0, 0, 46, 0, 0, 0, 0, 64, 17, csum[0], csum[1], // IPv4: tot_len 46, TTL 64, UDP
        src[0], src[1], src[2], src[3], dst[0], dst[1], dst[2], dst[3], //
        0x9c, 0x40, dport[0], dport[1], 0, 26, 0, 0, // UDP 40000 -> dport, len 26
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, //
    ];
    // SAFETY: the check above keeps GEN_LEN bytes from `start` inside the frame.
    unsafe { core::ptr::write_unaligned(start as *mut [u8; GEN_LEN], frame) };
    XDP_TX
}

/// The header checksum of the generator's IPv4 header (the gateway's stack drops frames without
/// a valid one before forwarding them).
#[inline(always)]
fn ipv4_checksum(src: [u8; 4], dst: [u8; 4]) -> u16 {
    let words = [
        0x4500u32,
        46,
        0,
        0,
        (64 << 8) | 17,
        u32::from(u16::from_be_bytes([src[0], src[1]])),
        u32::from(u16::from_be_bytes([src[2], src[3]])),
        u32::from(u16::from_be_bytes([dst[0], dst[1]])),
        u32::from(u16::from_be_bytes([dst[2], dst[3]])),
    ];
    let mut sum = words.iter().fold(0u32, |acc, w| acc.wrapping_add(*w));
    sum = (sum & 0xffff).wrapping_add(sum >> 16);
    sum = (sum & 0xffff).wrapping_add(sum >> 16);
    !(sum as u16)
}

/// The sink behind the gateway.
#[xdp]
pub fn xdp_sink(_ctx: XdpContext) -> u32 {
    bump(0);
    XDP_DROP
}

/// One hash lookup on the IPv4 source and a count; true on a hit.
#[inline(always)]
fn bare_lookup(ctx: &XdpContext) -> bool {
    let start = ctx.data();
    if start.wrapping_add(34) > ctx.data_end() {
        return false;
    }
    // SAFETY: bytes 26..30 (the IPv4 source) are inside the checked 34 bytes.
    let src: [u8; 4] =
        unsafe { core::ptr::read_unaligned(start.wrapping_add(26) as *const [u8; 4]) };
    let hit = SIM_V4_V2.get_ptr(src).is_some();
    bump(0);
    hit
}

/// One hash lookup on the IPv4 source, then drop: the upper reference for dropping.
#[xdp]
pub fn xdp_bare(ctx: XdpContext) -> u32 {
    let _ = bare_lookup(&ctx);
    XDP_DROP
}

/// The frame's session looked up in `SESSIONS` (the enforcer's table, at its configured
/// size), then its IPv4 source in `SIM_V4_V2`, then drop: the two lookups a device's frame
/// without a session needs before any policy is read, the floor of any design that looks a
/// frame's session up before its SIM.
#[xdp]
pub fn xdp_bare_sessions(ctx: XdpContext) -> u32 {
    // A helper call: never optimised away, whatever becomes of its result.
    if let Some(key) = frame_session_key(&ctx) {
        let _ = SESSIONS.get_ptr(key);
    }
    let _ = bare_lookup(&ctx);
    XDP_DROP
}

/// One hash lookup on the IPv4 source, then pass a hit: the upper reference for forwarding.
#[xdp]
pub fn xdp_bare_pass(ctx: XdpContext) -> u32 {
    if bare_lookup(&ctx) {
        XDP_PASS
    } else {
        XDP_DROP
    }
}

/// Count and drop everything.
#[xdp]
pub fn xdp_drop_all(_ctx: XdpContext) -> u32 {
    bump(0);
    XDP_DROP
}

/// The enforcer's pipeline (established → parse → track → identify → decide, deny events
/// included) without the account stage: the same verdict, nothing counted in `VERDICTS_V2`, `RULE_STATS` or the
/// SIM's counters (the session's own counters are part of tracking and stay).
#[xdp]
pub fn enforcer_unaccounted(ctx: XdpContext) -> u32 {
    let first = crate::established::judge(&ctx);
    match first.kind {
        crate::established::JUDGED => first.verdict.xdp_action(),
        crate::established::NO_SESSION if crate::deny_cache::dropped::<false>(&ctx) => XDP_DROP,
        kind => unaccounted_rest(ctx, kind == crate::established::NO_SESSION),
    }
}

/// `crate::rest` without the exit.
#[inline(always)]
fn unaccounted_rest(ctx: XdpContext, session_absent: bool) -> u32 {
    crate::run(&ctx, session_absent).0.xdp_action()
}

/// The enforcing program with the policy epoch (`CONFIG.epoch`) raised before each run: the
/// frame's session, checked under the epoch before, is judged again against the policy on
/// every run (a revalidated packet), and the arrival interface's flags are looked up again
/// (the per-CPU cache is kept under the epoch), as on the first packet after a policy change.
/// The epoch's increment, one array write, is part of the figure.
#[xdp]
pub fn enforcer_recheck(ctx: XdpContext) -> u32 {
    if let Some(config) = CONFIG.get_ptr_mut(0) {
        // SAFETY: the single element of an array map, valid for this run; only the benchmark
        // runs this program (BPF_PROG_TEST_RUN), on maps no daemon writes.
        unsafe { (*config).epoch = (*config).epoch.wrapping_add(1) };
    }
    crate::pipeline(ctx)
}

/// The enforcing program with the frame's session removed before each run, so that every run
/// is the first packet of its session (identify, decide and the insert of a new `SESSIONS`
/// entry); the removal, a hash delete, is part of the figure. Only an untagged IPv4 frame
/// without options: any other frame's session is not found here, and its runs take the path
/// they would take without this (the benchmark checks that each run created the session).
#[xdp]
pub fn enforcer_first(ctx: XdpContext) -> u32 {
    forget_session(&ctx);
    crate::pipeline(ctx)
}

/// Remove the session of an untagged IPv4 frame without options (TCP or UDP).
#[inline(always)]
fn forget_session(ctx: &XdpContext) {
    if let Some(key) = frame_session_key(ctx) {
        let _ = SESSIONS.remove(key);
    }
}

/// The `SESSIONS` key of an untagged IPv4 frame without options (TCP or UDP); `None` for any
/// other frame.
#[inline(always)]
fn frame_session_key(ctx: &XdpContext) -> Option<SessionKey> {
    crate::parse::v4_session(ctx).map(|frame| frame.key)
}
