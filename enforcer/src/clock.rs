//! Calibrating the program's clock: how many nanoseconds a jiffy lasts on this kernel, and
//! where `jiffies` stand against `CLOCK_MONOTONIC_COARSE`.
//!
//! The XDP program stamps sessions and deny events with `jiffies × ns_per_jiffy + offset_ns`
//! (`enforcer_common::maps::CLOCK_CALIBRATION`) because `bpf_jiffies64` is inlined by the
//! verifier where `bpf_ktime_get_coarse_ns` is a helper call on every packet. Both clocks move
//! at the timer tick: Linux advances `jiffies` from the monotonic clock in steps of
//! `TICK_NSEC` (`(10⁹ + HZ/2) / HZ` ns, `include/linux/jiffies.h`), so the two stay a constant
//! apart, within one tick, for as long as the kernel runs. The kernel's `HZ` is not exported
//! to userspace (`sysconf(_SC_CLK_TCK)` is `USER_HZ`), so it is measured: samples of both
//! clocks, taken together in one program run, over at least two ticks.

/// The tick rates Linux offers on x86 and arm64 (`kernel/Kconfig.hz`).
pub const HZ_CHOICES: [u64; 4] = [100, 250, 300, 1000];

/// How far the measured tick may be from a choice's `TICK_NSEC`, in parts per thousand.
const TOLERANCE_PER_MILLE: u64 = 30;

/// `TICK_NSEC` for `hz`: nanoseconds per jiffy (Linux `include/linux/jiffies.h`).
#[must_use]
pub const fn tick_ns(hz: u64) -> u64 {
    (1_000_000_000 + hz / 2) / hz
}

/// The clock calibration the program is given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Calibration {
    /// The kernel's `HZ` (one of [`HZ_CHOICES`] on x86 and arm64).
    pub hz: u64,
    /// Nanoseconds per jiffy ([`tick_ns`] of `hz`).
    pub ns_per_jiffy: u64,
    /// `CLOCK_MONOTONIC_COARSE` ns minus `jiffies × ns_per_jiffy` (wrapping).
    pub offset_ns: u64,
}

impl Calibration {
    /// `jiffies` as `CLOCK_MONOTONIC` nanoseconds, as the program computes it.
    #[must_use]
    pub const fn ns(&self, jiffies: u64) -> u64 {
        jiffies
            .wrapping_mul(self.ns_per_jiffy)
            .wrapping_add(self.offset_ns)
    }
}

/// Whether sample `i` of `samples` is the first to show a step of the coarse clock: Linux
/// advances `jiffies` first and the clock after (`tick_do_update_jiffies64`, then
/// `update_wall_time`), so such a sample pairs a clock reading with the jiffies it belongs to.
/// A sample read between the two updates pairs new jiffies with the old time, a tick early or,
/// when `jiffies` catch up several ticks at once, several.
#[must_use]
pub fn clock_stepped(samples: &[(u64, u64)], i: usize) -> bool {
    i > 0 && samples.get(i).map(|s| s.1) != samples.get(i - 1).map(|s| s.1)
}

/// The calibration from `samples`, each `(jiffies, CLOCK_MONOTONIC_COARSE ns)` read in one
/// program run, in the order taken: the tick is the time between the first step of the coarse
/// clock the samples show and the last one at least two jiffies later ([`clock_stepped`]:
/// both ends pair a time with its jiffies), rounded to the nearest of [`HZ_CHOICES`] (within
/// 3%; another rate is taken as measured); the offset is the latest one the samples show from
/// the first step on (a sample read between a jiffy's increment and the clock's update shows
/// one a tick early or more). `None` when the steps span fewer than two whole ticks.
#[must_use]
pub fn calibrate(samples: &[(u64, u64)]) -> Option<Calibration> {
    let start = (0..samples.len()).find(|&i| clock_stepped(samples, i))?;
    let (j0, t0) = samples[start];
    let end = (start..samples.len()).rev().find(|&i| {
        let ticks = samples[i].0.wrapping_sub(j0);
        clock_stepped(samples, i) && (2..1 << 32).contains(&ticks)
    })?;
    let (j1, t1) = samples[end];
    let measured = t1.checked_sub(t0)? / j1.wrapping_sub(j0);
    if measured == 0 {
        return None;
    }
    // A tick rate of none of the choices (another architecture's) is taken as measured.
    let hz = HZ_CHOICES
        .into_iter()
        .find(|&hz| {
            let tick = tick_ns(hz);
            measured.abs_diff(tick) * 1000 <= tick * TOLERANCE_PER_MILLE
        })
        .unwrap_or_else(|| (1_000_000_000 + measured / 2) / measured);
    let ns_per_jiffy = tick_ns(hz);
    let offset = |&(j, t): &(u64, u64)| t.wrapping_sub(j.wrapping_mul(ns_per_jiffy));
    let base = offset(&samples[start]);
    let offset_ns = samples[start..]
        .iter()
        .map(offset)
        .max_by_key(|o| o.wrapping_sub(base) as i64)?;
    Some(Calibration {
        hz,
        ns_per_jiffy,
        offset_ns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Samples of a kernel with `hz` whose coarse clock stands `offset` ns past
    /// `jiffies × TICK_NSEC`, every `step` ns from `start` ns for `n` samples.
    fn samples(hz: u64, offset: u64, start: u64, step: u64, n: u64) -> Vec<(u64, u64)> {
        let tick = tick_ns(hz);
        // Jiffies start 300 s before wrapping a 32-bit counter (INITIAL_JIFFIES).
        let initial = u64::from((300 * hz as u32).wrapping_neg());
        (0..n)
            .map(|i| {
                let now = start + i * step;
                let j = initial + (now - offset) / tick;
                (j, j * tick + offset)
            })
            .collect()
    }

    #[test]
    fn finds_every_tick_rate_and_the_offset() {
        for hz in HZ_CHOICES {
            let offset = 123_456_789;
            let got =
                calibrate(&samples(hz, offset, 5_000_000_000, 50_000, 2_000)).expect("calibrated");
            assert_eq!(got.hz, hz);
            assert_eq!(got.ns_per_jiffy, tick_ns(hz));
            // The program's clock reads the coarse clock at every sample.
            for (j, t) in samples(hz, offset, 9_000_000_000, 1_000_000, 10) {
                assert_eq!(got.ns(j), t, "HZ {hz}");
            }
        }
    }

    #[test]
    fn a_sample_caught_between_jiffy_and_clock_update_does_not_move_the_offset() {
        let mut taken = samples(250, 7, 1_000_000_000, 100_000, 200);
        let right = calibrate(&taken).expect("calibrated");
        // One sample shows the new jiffy with the previous tick's coarse time.
        let i = taken
            .iter()
            .position(|&(j, _)| j != taken[0].0)
            .expect("a tick")
            + 45;
        taken[i].1 -= tick_ns(250);
        assert_eq!(calibrate(&taken), Some(right));
    }

    #[test]
    fn samples_read_between_the_jiffies_and_clock_updates_do_not_end_the_span() {
        let clean = samples(250, 7, 1_000_000_000, 100_000, 200);
        let right = calibrate(&clean).expect("calibrated");
        let mut taken = clean.clone();
        // The first sample of a new jiffy read before the clock followed.
        let i = taken
            .iter()
            .position(|&(j, _)| j != taken[0].0)
            .expect("a tick");
        taken.insert(i, (taken[i].0, taken[i - 1].1));
        // Seen in CI: `jiffies` caught up five ticks at once and the last samples were read
        // before the clock followed. Ending the span there measured a tick of 0 ns.
        let &(j_last, t_last) = taken.last().expect("samples");
        for _ in 0..3 {
            taken.push((j_last + 5, t_last));
        }
        assert_eq!(calibrate(&taken), Some(right));
        // Then the clock catches up: the same calibration.
        taken.push((j_last + 5, t_last + 5 * tick_ns(250)));
        assert_eq!(calibrate(&taken), Some(right));
        // The first step of the clock is where the span starts: before it, nothing.
        assert_eq!(calibrate(&clean[..i]), None);
    }

    #[test]
    fn refuses_too_few_ticks_and_takes_another_rate_as_measured() {
        // Less than two whole ticks.
        assert_eq!(
            calibrate(&samples(250, 0, 1_000_000_000, 100_000, 60)),
            None
        );
        assert_eq!(calibrate(&[]), None);
        // A 2 ms tick (HZ 500) is none of the choices.
        let odd: Vec<(u64, u64)> = (0..100).map(|i| (i / 10, i / 10 * 2_000_000)).collect();
        let got = calibrate(&odd).expect("calibrated");
        assert_eq!((got.hz, got.ns_per_jiffy), (500, 2_000_000));
        assert_eq!(got.ns(7), 14_000_000);
    }
}
