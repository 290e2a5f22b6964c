//! The per-packet cost of the deny-event path and of the account stage: frames through the
//! enforcing program, through the same program with deny events off (`EVENTS_OFF`), and
//! through `enforcer_unaccounted` (the same pipeline without the account stage), beside the
//! empty program, interleaved in one run.
//!
//! A denied frame repeated a million times spends its SIM's budget (10 events a second) in the
//! first runs, so the deny-event figure is the path a flood takes: the budget lookup in
//! `DENY_LIMITS` and the atomic adds of the suppressed counts. The events written are a few
//! per second, whatever the rate. An allowed frame repeated takes the established-session path
//! after its first run.

use std::fmt::Write as _;

use enforcer::{
    capacity::Capacity,
    compile,
    loader::{self, Enforcer},
    policy,
};
use serde_json::{Value, json};

use crate::frames::{Frame, L4};

const POLICY: &str = r#"
pools = ["10.64.0.0/16"]
[[segments]]
name = "meters"
rules = [
  { to = ["198.51.100.10"], proto = "tcp", ports = [443] },
  { to = ["198.51.100.10"], proto = "udp", ports = [5683] },
]
[[sims]]
imsi = "001010000000001"
ipv4 = "10.64.0.1"
segment = "meters"
"#;

fn stats(mut values: Vec<f64>) -> (f64, f64) {
    values.sort_by(f64::total_cmp);
    (values[0], values[values.len() / 2])
}

/// Run the section; writes its markdown into `md`.
///
/// # Errors
/// Loading the program or a test run failing.
pub fn run(md: &mut String, quick: bool) -> Result<Value, String> {
    let (repeat, reps) = if quick { (100_000, 3) } else { (1_000_000, 9) };
    let policy =
        policy::from_str(std::path::Path::new("bench.toml"), POLICY).map_err(|e| e.to_string())?;
    let compiled = compile::compile_fresh(&policy).map_err(|e| e.to_string())?;
    let capacity = Capacity::for_test_run(&compiled.image, compiled.rules.len());
    let mut enforcer = Enforcer::load(capacity, None).map_err(|e| e.to_string())?;
    enforcer.apply(&compiled.image).map_err(|e| e.to_string())?;
    let frames = [
        (
            "allowed (a SIM, established session)",
            Frame::new("10.64.0.1", "198.51.100.10", L4::Udp(5683)).build(),
            enforcer_common::verdict::XDP_PASS,
        ),
        (
            "no_rule (a SIM)",
            Frame::new("10.64.0.1", "198.51.100.10", L4::Tcp(80))
                .flags(0x02)
                .build(),
            enforcer_common::verdict::XDP_DROP,
        ),
        (
            "spoofed (no SIM)",
            Frame::new("10.64.9.9", "198.51.100.10", L4::Tcp(443))
                .flags(0x02)
                .build(),
            enforcer_common::verdict::XDP_DROP,
        ),
    ];
    /// The programs compared, in the order each round runs them.
    #[derive(Clone, Copy)]
    enum Variant {
        Full,
        EventsOff,
        Unaccounted,
    }
    const VARIANTS: [Variant; 3] = [Variant::Full, Variant::EventsOff, Variant::Unaccounted];
    // The variant must leave the counters alone and the enforcer count, or the figure is not
    // the account stage's.
    // Per-segment verdicts and the (only) SIM's counters, each counting every frame once.
    let counted = |enforcer: &Enforcer| -> Result<[u64; 2], String> {
        let map = enforcer
            .map(enforcer_common::maps::names::VERDICT_STATS)
            .ok_or("no VERDICT_STATS map")?;
        let blocks = enforcer::counters::verdicts(map, 1).map_err(|e| e.to_string())?;
        let sim = enforcer.sim_table().counters(0);
        Ok([
            blocks.iter().map(|c| c.packets).sum(),
            sim.pass_packets + sim.drop_packets,
        ])
    };
    let before = counted(&enforcer)?;
    enforcer
        .variant_test_run(loader::Variant::Unaccounted, &frames[0].1, 100, 1)
        .map_err(|e| e.to_string())?;
    let middle = counted(&enforcer)?;
    enforcer
        .test_run(&frames[0].1, 100, 1)
        .map_err(|e| e.to_string())?;
    let after = counted(&enforcer)?;
    let unaccounted = [middle[0] - before[0], middle[1] - before[1]];
    let accounted = [after[0] - middle[0], after[1] - middle[1]];
    if (unaccounted, accounted) != ([0, 0], [100, 100]) {
        return Err(format!(
            "100 frames counted {unaccounted:?} times (verdicts, SIM) without the account stage \
             and {accounted:?} with it (expected 0 and 100 each)"
        ));
    }
    let mut empty = Vec::new();
    let mut times: Vec<[Vec<f64>; 3]> = vec![Default::default(); frames.len()];
    let ns = |d: std::time::Duration| d.as_secs_f64() * 1e9;
    for _ in 0..reps {
        let (_, d) = enforcer
            .baseline_test_run(&frames[0].1, repeat)
            .map_err(|e| e.to_string())?;
        empty.push(ns(d));
        for (i, (_, frame, expect)) in frames.iter().enumerate() {
            for (v, variant) in VARIANTS.iter().enumerate() {
                enforcer
                    .set_deny_events(!matches!(variant, Variant::EventsOff))
                    .map_err(|e| e.to_string())?;
                let (action, d) = match variant {
                    Variant::Unaccounted => {
                        enforcer.variant_test_run(loader::Variant::Unaccounted, frame, repeat, 1)
                    }
                    Variant::Full | Variant::EventsOff => enforcer.test_run(frame, repeat, 1),
                }
                .map_err(|e| e.to_string())?;
                if action != *expect {
                    return Err(format!(
                        "the benchmark's frame {i} got XDP action {action}, not {expect}"
                    ));
                }
                times[i][v].push(ns(d));
            }
        }
        let _ = enforcer.drain_deny_events();
    }
    enforcer.set_deny_events(true).map_err(|e| e.to_string())?;
    let (empty_min, empty_median) = stats(empty);
    let _ = writeln!(
        md,
        "\n## Deny-event path and account stage (BPF_PROG_TEST_RUN, repeat {repeat}, {reps} \
         interleaved runs)\n\n\
         Each frame through the enforcing program, through the same program with deny events off \
         (`EVENTS_OFF`), and through `enforcer_unaccounted` (the same pipeline without the \
         account stage: no segment, SIM or rule counters), beside the empty program (min \
         {empty_min:.1} ns, median {empty_median:.1} ns). A denied frame repeated spends its \
         SIM's budget of 10 events a second at once: the deny-event figure is the path a flood \
         takes (the budget lookup and the suppressed counts' atomic adds). The allowed frame \
         takes the established-session path after its first run.\n"
    );
    let _ = writeln!(
        md,
        "| frame | enforcer: min / median ns | events off | no account stage | cost of events \
         (medians) | cost of accounting (medians) |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|");
    let mut rows = Vec::new();
    for (i, (name, _, _)) in frames.iter().enumerate() {
        let [(full_min, full), (off_min, off), (bare_min, bare)] =
            [0, 1, 2].map(|v| stats(times[i][v].clone()));
        let _ = writeln!(
            md,
            "| {name} | {full_min:.1} / {full:.1} | {off_min:.1} / {off:.1} | {bare_min:.1} / \
             {bare:.1} | {:+.1} ns | {:+.1} ns |",
            full - off,
            full - bare
        );
        rows.push(json!({
            "frame": name,
            "events_on_min_ns": full_min, "events_on_median_ns": full,
            "events_off_min_ns": off_min, "events_off_median_ns": off,
            "unaccounted_min_ns": bare_min, "unaccounted_median_ns": bare,
        }));
    }
    Ok(json!({"empty_min_ns": empty_min, "empty_median_ns": empty_median, "rows": rows}))
}
