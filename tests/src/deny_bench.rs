//! The deny-event path's per-packet cost: a denied frame through the program with deny events
//! on and off (`EVENTS_OFF`), beside the empty program, interleaved in one run.
//!
//! A frame repeated a million times spends its SIM's budget (10 events a second) in the first
//! runs, so the figure is the path a flood takes: the budget lookup in `DENY_LIMITS` and the
//! atomic adds of the suppressed counts. The events written are a few per second, whatever
//! the rate.

use std::fmt::Write as _;

use enforcer::{capacity::Capacity, compile, loader::Enforcer, policy};
use serde_json::{Value, json};

use crate::frames::{Frame, L4};

const POLICY: &str = r#"
pools = ["10.64.0.0/16"]
[[segments]]
name = "meters"
rules = [ { to = ["198.51.100.10"], proto = "tcp", ports = [443] } ]
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
            "no_rule (a SIM)",
            Frame::new("10.64.0.1", "198.51.100.10", L4::Tcp(80))
                .flags(0x02)
                .build(),
        ),
        (
            "spoofed (no SIM)",
            Frame::new("10.64.9.9", "198.51.100.10", L4::Tcp(443))
                .flags(0x02)
                .build(),
        ),
    ];
    let mut empty = Vec::new();
    let mut on: Vec<Vec<f64>> = vec![Vec::new(); frames.len()];
    let mut off: Vec<Vec<f64>> = vec![Vec::new(); frames.len()];
    let ns = |d: std::time::Duration| d.as_secs_f64() * 1e9;
    for _ in 0..reps {
        let (_, d) = enforcer
            .baseline_test_run(&frames[0].1, repeat)
            .map_err(|e| e.to_string())?;
        empty.push(ns(d));
        for (i, (_, frame)) in frames.iter().enumerate() {
            for events in [true, false] {
                enforcer
                    .set_deny_events(events)
                    .map_err(|e| e.to_string())?;
                let (action, d) = enforcer
                    .test_run(frame, repeat, 1)
                    .map_err(|e| e.to_string())?;
                if action != enforcer_common::verdict::XDP_DROP {
                    return Err(format!("the benchmark's frame {i} was not dropped"));
                }
                if events { &mut on[i] } else { &mut off[i] }.push(ns(d));
            }
        }
        let _ = enforcer.drain_deny_events();
    }
    enforcer.set_deny_events(true).map_err(|e| e.to_string())?;
    let (empty_min, empty_median) = stats(empty);
    let _ = writeln!(
        md,
        "\n## Deny-event path (BPF_PROG_TEST_RUN, repeat {repeat}, {reps} interleaved runs)\n\n\
         A denied frame through the program with deny events on and off (`EVENTS_OFF`), beside \
         the empty program (min {empty_min:.1} ns, median {empty_median:.1} ns). Repeated, the \
         frame spends its SIM's budget of 10 events a second at once: this is the path a flood \
         takes (the budget lookup and the suppressed counts' atomic adds).\n"
    );
    let _ = writeln!(
        md,
        "| frame | events on: min / median ns | events off: min / median ns | cost of events (medians) |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|");
    let mut rows = Vec::new();
    for (i, (name, _)) in frames.iter().enumerate() {
        let (on_min, on_median) = stats(on[i].clone());
        let (off_min, off_median) = stats(off[i].clone());
        let _ = writeln!(
            md,
            "| {name} | {on_min:.1} / {on_median:.1} | {off_min:.1} / {off_median:.1} | {:+.1} ns |",
            on_median - off_median
        );
        rows.push(json!({
            "frame": name,
            "events_on_min_ns": on_min, "events_on_median_ns": on_median,
            "events_off_min_ns": off_min, "events_off_median_ns": off_median,
        }));
    }
    Ok(json!({"empty_min_ns": empty_min, "empty_median_ns": empty_median, "rows": rows}))
}
