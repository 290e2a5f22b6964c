//! The program's clock: `CLOCK_MONOTONIC` nanoseconds at the kernel's tick resolution, for
//! session and deny-event times.
//!
//! `bpf_jiffies64` is inlined by the verifier (a load of `jiffies_64`, no call), where
//! `bpf_ktime_get_coarse_ns` is a helper call (8-20 ns per packet on a CPU whose every return
//! is mitigated). The loader measures how many nanoseconds a jiffy lasts and where jiffies
//! stand against the coarse clock (`clock_sample`, run by `BPF_PROG_TEST_RUN`), and writes
//! both to `CLOCK[CLOCK_CALIBRATION]` before the program can be attached.
//!
//! Reads `CLOCK[CLOCK_CALIBRATION]`; `clock_sample` writes `CLOCK[CLOCK_SAMPLE]`.

use aya_ebpf::{
    helpers::{bpf_jiffies64, bpf_ktime_get_coarse_ns},
    macros::xdp,
    programs::XdpContext,
};
use enforcer_common::{
    maps::{CLOCK_CALIBRATION, CLOCK_SAMPLE},
    verdict::XDP_PASS,
};

use crate::maps::CLOCK;

/// Now, `CLOCK_MONOTONIC` nanoseconds at tick resolution (`CLOCK_MONOTONIC_COARSE`'s). One
/// path, no branch on the calibration: the loader calibrates the program before anything can
/// attach it, and refuses to load when it cannot (a second path here cost the program's frame a
/// spill slot past the 256 bytes Linux 6.1's combined stack limit leaves it).
#[inline(always)]
pub fn now_ns() -> u64 {
    ns_at(jiffies())
}

/// The kernel's tick count (`jiffies_64`).
#[inline(always)]
pub fn jiffies() -> u64 {
    // SAFETY: a helper without arguments (Linux 5.5), inlined by the verifier.
    unsafe { bpf_jiffies64() }
}

/// [`now_ns`] at tick `jiffies`.
#[inline(always)]
pub fn ns_at(jiffies: u64) -> u64 {
    CLOCK
        .get(CLOCK_CALIBRATION)
        .map_or(0, |&[ns_per_jiffy, offset_ns]| {
            jiffies.wrapping_mul(ns_per_jiffy).wrapping_add(offset_ns)
        })
}

/// Write `[jiffies, CLOCK_MONOTONIC_COARSE ns]` to `CLOCK[CLOCK_SAMPLE]`, read within one run,
/// for the loader's calibration. Run only by `BPF_PROG_TEST_RUN`, never attached.
#[xdp]
pub fn clock_sample(_ctx: XdpContext) -> u32 {
    if let Some(sample) = CLOCK.get_ptr_mut(CLOCK_SAMPLE) {
        // SAFETY: a helper without arguments; `sample` is an element of an array map, valid
        // for this run.
        unsafe {
            (*sample)[0] = jiffies();
            (*sample)[1] = bpf_ktime_get_coarse_ns();
        }
    }
    XDP_PASS
}
