//! The enforcer XDP program: parse → identify → decide → account, one exit.
//!
//! Every stage is a module; this file only wires them. Flow tracking (a session table for
//! inbound replies) slots in between decide and account.
#![cfg_attr(not(test), no_std)]
#![cfg_attr(not(test), no_main)]
// `atomic_xadd` for the per-SIM counters: the BPF target has no compare-and-swap, so `core`
// offers no `AtomicU64::fetch_add`, but LLVM lowers the intrinsic to BPF's atomic add.
#![feature(core_intrinsics)]
#![expect(internal_features, reason = "core_intrinsics: atomic_xadd, see above")]

mod account;
mod bench;
mod identify;
mod maps;
mod parse;

use aya_ebpf::{macros::xdp, programs::XdpContext};
use enforcer_common::{DropReason, Src, Verdict, decide};

use crate::parse::Parsed;

/// Entry point: judge the frame, count it once, return the action.
#[xdp]
pub fn enforcer(ctx: XdpContext) -> u32 {
    let bytes = ctx.data_end().wrapping_sub(ctx.data()) as u64;
    let (verdict, src) = run(&ctx);
    account::record(verdict, &src, bytes);
    verdict.xdp_action()
}

/// An empty program: the floor that benchmarks measure the enforcer against (BPF_PROG_TEST_RUN
/// of this costs the harness alone). Never attached by the daemon.
#[xdp]
pub fn xdp_pass(_ctx: XdpContext) -> u32 {
    enforcer_common::verdict::XDP_PASS
}

#[inline(always)]
fn run(ctx: &XdpContext) -> (Verdict, Src) {
    let meta = match parse::packet(ctx) {
        Ok(Parsed::Ip(meta)) => meta,
        Ok(Parsed::Done(verdict)) => return (verdict, Src::default()),
        Ok(Parsed::NotIp) => {
            let flags = identify::iface_flags(parse::ifindex(ctx));
            return (enforcer_common::decide::not_ip(flags), Src::default());
        }
        Err(reason) => return (Verdict::Drop(reason), Src::default()),
    };
    let inputs = identify::lookup(&meta);
    (decide(&inputs), inputs.src)
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
