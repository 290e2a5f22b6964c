//! The benchmark behind `cargo xtask bench [--quick]`.
//!
//! - Per-packet cost: BPF_PROG_TEST_RUN (JIT on) of every frame shape, the kernel-reported time
//!   per run, beside the empty `xdp_pass` program of the same object measured in the same run,
//!   at several SIM counts and rules per segment; the map lookups of each verdict (counted on
//!   the reference model, which runs the same lookup sequence) next to each figure.
//! - Load: time to validate, compile and load a generated policy, and the peak RSS of a process
//!   that does only that (`enforcer-bench load POLICY`).
//! - Kernel memory of every map, as the kernel accounts it.
//! - Policy size (issue 9): the policies that once exploded (`integration_tests::scale`), rules
//!   → map entries, validate and compile time, kernel memory (estimated by `policy check`'s
//!   sizing and measured after loading) and the cost of an allowed packet with them loaded.
//! - End to end through veth against nftables.
//!
//! Writes `report.md` and `report.json` into the output directory. `--only SECTION,...` runs
//! some sections: `per-packet`, `load`, `memory`, `scale`, `e2e`, `daemon`, `export`, `deny`,
//! `identity`.
//!
//! Usage: enforcer-bench [--quick] [--only SECTIONS] [--out DIR] | enforcer-bench load POLICY

use std::{
    collections::HashMap,
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
    time::Instant,
};

use enforcer::{
    capacity::{self, Limits},
    compile,
    loader::{Capacity, Enforcer, Variant},
    policy,
    reference::Reference,
    store::Store,
};
use integration_tests::{
    bench::{Generated, Lookups, Stats, generate, lookups, shapes},
    frames::{Frame, L4},
    scale,
    throughput::{self, Filter, Mode, Rig, Windows},
};
use serde_json::{Value, json};

/// `xdp_md.ingress_ifindex` of test runs: loopback.
const IFINDEX: u32 = 1;

struct Plan {
    sims: Vec<u32>,
    rules: Vec<u32>,
    repeat: u32,
    reps: usize,
    /// Sections to run (`--only`); empty: all.
    only: Vec<String>,
}

impl Plan {
    fn runs(&self, section: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == section)
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("load") {
        return match args.get(1) {
            Some(policy) => load_only(Path::new(policy)),
            None => {
                eprintln!("usage: enforcer-bench load POLICY");
                ExitCode::from(2)
            }
        };
    }
    let quick = args.iter().any(|a| a == "--quick");
    let out = args
        .iter()
        .position(|a| a == "--out")
        .and_then(|i| args.get(i + 1))
        .map_or_else(|| PathBuf::from("target/bench"), PathBuf::from);
    let only: Vec<String> = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(|list| list.split(',').map(str::to_owned).collect())
        .unwrap_or_default();
    let plan = if quick {
        Plan {
            sims: vec![1, 10_000],
            rules: vec![1, 100],
            repeat: 100_000,
            reps: 3,
            only,
        }
    } else {
        Plan {
            sims: vec![1, 10_000, 100_000, 1_000_000],
            rules: vec![1, 100, 1_000],
            repeat: 1_000_000,
            reps: 5,
            only,
        }
    };
    match run(&plan, &out, quick) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("enforcer-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Validate, assign ids in a fresh store, compile and load one policy, then change one SIM and
/// reload; print timings, entries written and peak RSS as JSON.
fn load_only(path: &Path) -> ExitCode {
    let db = path.with_extension("db");
    let _ = std::fs::remove_file(&db);
    let start = Instant::now();
    let mut policy = match policy::load(path) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let validated = start.elapsed();
    let mut store = Store::open(&db).expect("open the store");
    let ids = store.assign_ids(&policy).expect("assign ids");
    let stored_at = start.elapsed();
    let compiled = compile::compile(&policy, &ids).expect("generated policy compiles");
    let compiled_at = start.elapsed();
    let capacity = Capacity::for_image(&compiled.image, compiled.rules.len(), Capacity::default());
    let mut enforcer = Enforcer::load(capacity, None).expect("load the XDP program");
    let loaded_at = start.elapsed();
    let first = enforcer.apply(&compiled.image).expect("write the maps");
    // Without the grace period after the flip, which only delays the return.
    let total = loaded_at + first.write_time;

    // One SIM changes (quarantined): store, compile and apply again. The first reload fills
    // the other generation, so the change is timed on the second.
    enforcer
        .apply(&compiled.image)
        .expect("fill the other generation");
    let last = policy.sims.len() - 1;
    policy.sims[last].state = policy::SimState::Quarantined;
    let started = Instant::now();
    let ids = store.assign_ids(&policy).expect("assign ids again");
    let reload_store = started.elapsed();
    let changed = compile::compile(&policy, &ids).expect("compiles");
    let reload_compile = started.elapsed() - reload_store;
    let report = enforcer.apply(&changed.image).expect("apply the change");
    let reload_total = reload_store + reload_compile + report.write_time;
    let _ = std::fs::remove_file(&db);

    let peak_rss_kib = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .map(|v| v.trim().trim_end_matches(" kB").trim().to_owned())
        })
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let memory: u64 = enforcer.map_memory().iter().map(|(_, b)| b).sum();
    println!(
        "{}",
        json!({
            "validate_s": validated.as_secs_f64(),
            "store_s": (stored_at - validated).as_secs_f64(),
            "compile_s": (compiled_at - stored_at).as_secs_f64(),
            "load_program_s": (loaded_at - compiled_at).as_secs_f64(),
            "fill_maps_s": first.write_time.as_secs_f64(),
            "total_s": total.as_secs_f64(),
            "reload_one_sim_s": reload_total.as_secs_f64(),
            "reload_store_s": reload_store.as_secs_f64(),
            "reload_compile_s": reload_compile.as_secs_f64(),
            "reload_apply_s": report.write_time.as_secs_f64(),
            "reload_entries": report.entries_written,
            "peak_rss_mib": peak_rss_kib as f64 / 1024.0,
            "map_memory_mib": memory as f64 / 1_048_576.0,
            "sims": policy.sims.len(),
        })
    );
    ExitCode::SUCCESS
}

fn run(plan: &Plan, out: &Path, quick: bool) -> Result<(), String> {
    std::fs::create_dir_all(out).map_err(|e| format!("creating {}: {e}", out.display()))?;
    let work = std::env::temp_dir().join(format!("enforcer-bench-{}", std::process::id()));
    // Removed however the run ends, a failed section's `?` included.
    let _work_guard = integration_tests::Scratch(work.clone());
    let mut md = String::new();
    let mut rows = Vec::new();
    let per_packet = plan.runs("per-packet");
    if per_packet {
        let _ = writeln!(
            md,
            "## Per-packet cost (BPF_PROG_TEST_RUN, repeat {}, median of {} runs)\n",
            plan.repeat, plan.reps
        );
        let _ = writeln!(
            md,
            "ns per run as the kernel reports it; `empty` is the `xdp_pass` program of the same object in the same run; \
         lookups: h = hash, l = LPM trie, a = array (inlined by the verifier), per-CPU counter updates not included.\n"
        );
        let _ = writeln!(
            md,
            "| SIMs | rules/segment | frame | verdict | enforcer ns (min-max) | empty ns | above empty | lookups |"
        );
        let _ = writeln!(md, "|---:|---:|---|---|---:|---:|---:|---|");
    }
    let mut by_rules: HashMap<(u32, &'static str), Vec<(u32, f64)>> = HashMap::new();
    let mut loads = Vec::new();
    let sizes = if per_packet || plan.runs("load") {
        plan.sims.as_slice()
    } else {
        &[]
    };
    for &sims in sizes {
        for &rules in &plan.rules {
            let generated = generate(&work.join(format!("{sims}-{rules}")), sims, rules);
            if plan.runs("load") {
                loads.push(measure_load(&generated)?);
            }
            if !per_packet {
                continue;
            }
            let policy = policy::load(&generated.policy).map_err(|e| e.to_string())?;
            let compiled = compile::compile_fresh(&policy).map_err(|e| e.to_string())?;
            let capacity =
                Capacity::for_image(&compiled.image, compiled.rules.len(), Capacity::default());
            let mut enforcer = Enforcer::load(capacity, None).map_err(|e| format!("{e}"))?;
            let generation = enforcer
                .apply(&compiled.image)
                .map_err(|e| format!("{e}"))?
                .generation;
            let reference = Reference::new(&compiled.image, generation, HashMap::new());
            let mut table = Table {
                md: &mut md,
                rows: &mut rows,
                by_rules: &mut by_rules,
                sims,
                rules,
            };
            let mut allowed = Vec::new();
            for (shape, frame) in shapes(sims) {
                let expected = reference.evaluate(&frame, IFINDEX);
                let (action, _) = enforcer
                    .test_run(&frame, 1, IFINDEX)
                    .map_err(|e| format!("{e}"))?;
                if action != expected.verdict.xdp_action() {
                    return Err(format!(
                        "{shape}: kernel action {action} differs from the reference's {:?}",
                        expected.verdict
                    ));
                }
                let (ours, empty) = against_empty(&mut enforcer, None, &frame, plan)?;
                table.row(
                    shape,
                    expected.verdict,
                    ours,
                    empty,
                    lookups(&reference, &frame, IFINDEX),
                    false,
                );
                if shape == "allowed" {
                    allowed = frame;
                }
            }
            // The allowed SYN again, as the first packet of its session and as a packet of a
            // session checked under an older epoch (each run of these variants is one).
            let expected = reference.evaluate(&allowed, IFINDEX).verdict;
            let counted = lookups(&reference, &allowed, IFINDEX);
            let runs = plan.repeat.wrapping_mul(plan.reps as u32);
            for (shape, variant) in [
                ("allowed, first packet of its session", Variant::FirstPacket),
                ("allowed, revalidated", Variant::Recheck),
            ] {
                let before = session_of(&enforcer, &allowed)?;
                let (ours, empty) = against_empty(&mut enforcer, Some(variant), &allowed, plan)?;
                let after = session_of(&enforcer, &allowed)?;
                // Refuse a figure that is not the path its row names.
                let took_path = match variant {
                    // Created by the last run: its opening packet alone counted.
                    Variant::FirstPacket => after.packets == [1, 0],
                    // Raised and refreshed on every run.
                    Variant::Recheck => after.epoch == before.epoch.wrapping_add(runs),
                    Variant::Unaccounted => true,
                };
                if !took_path {
                    return Err(format!(
                        "{shape}: the session after {runs} runs ({after:?}, before: {before:?}) \
                         shows the runs did not take that path"
                    ));
                }
                table.row(shape, expected, ours, empty, counted, true);
            }
            eprintln!("enforcer-bench: {sims} SIMs x {rules} rules/segment done");
        }
    }

    let (mut worst_above, mut worst_ratio) = (f64::NAN, f64::NAN);
    if per_packet {
        // Targets.
        // Over the frames' own paths; the variants' rows include the map writes that make
        // every run a first or a revalidated packet.
        worst_above = rows
            .iter()
            .filter(|r| r["variant"] != Value::Bool(true))
            .filter_map(|r| r["above_empty_ns"].as_f64())
            .fold(f64::MIN, f64::max);
        let max_rules = *plan.rules.iter().max().unwrap_or(&1);
        worst_ratio = 0.0;
        for points in by_rules.values() {
            let one = points.iter().find(|(r, _)| *r == 1).map(|p| p.1);
            let many = points.iter().find(|(r, _)| *r == max_rules).map(|p| p.1);
            if let (Some(one), Some(many)) = (one, many) {
                worst_ratio = worst_ratio.max(many / one);
            }
        }
        let _ = writeln!(
            md,
            "\nTargets: every verdict ≤ 30 ns above empty: worst {worst_above:+.1} ns ({}); {max_rules} vs 1 rules per segment ≤ 1.1×: worst {worst_ratio:.2}× ({}).",
            if worst_above <= 30.0 {
                "met"
            } else {
                "NOT met"
            },
            if worst_ratio <= 1.1 { "met" } else { "NOT met" }
        );
    }
    if plan.runs("load") {
        let _ = writeln!(
            md,
            "\n## Load: validate, store ids, compile, load and fill (separate process, `enforcer-bench load`)\n"
        );
        let _ = writeln!(
            md,
            "Store: ids assigned in a fresh SQLite file. Fill: writes until the generation flip (the 50 ms grace wait after it is not counted). \
             One-SIM reload: one SIM quarantined, then store, compile and apply (write time), with the entries that apply wrote.\n"
        );
        let _ = writeln!(
            md,
            "| SIMs | rules/segment | validate s | store s | compile s | load program s | fill maps s | total s | one-SIM reload s (store / compile / apply) | entries | peak RSS MiB | map memory MiB |"
        );
        let _ = writeln!(
            md,
            "|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|"
        );
        for l in &loads {
            let _ = writeln!(
                md,
                "| {} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} ({:.3} / {:.3} / {:.4}) | {} | {:.1} | {:.1} |",
                l["sims"],
                l["rules_per_segment"],
                f(&l["validate_s"]),
                f(&l["store_s"]),
                f(&l["compile_s"]),
                f(&l["load_program_s"]),
                f(&l["fill_maps_s"]),
                f(&l["total_s"]),
                f(&l["reload_one_sim_s"]),
                f(&l["reload_store_s"]),
                f(&l["reload_compile_s"]),
                f(&l["reload_apply_s"]),
                l["reload_entries"],
                f(&l["peak_rss_mib"]),
                f(&l["map_memory_mib"])
            );
        }
    }

    let memory = if plan.runs("memory") {
        // Kernel memory per map at the largest SIM count, 1 rule per segment.
        let largest = *plan.sims.iter().max().unwrap_or(&1);
        let generated = generate(&work.join("memory"), largest, 1);
        let policy = policy::load(&generated.policy).map_err(|e| e.to_string())?;
        let compiled = compile::compile_fresh(&policy).map_err(|e| e.to_string())?;
        let capacity =
            Capacity::for_image(&compiled.image, compiled.rules.len(), Capacity::default());
        let mut enforcer = Enforcer::load(capacity, None).map_err(|e| format!("{e}"))?;
        enforcer
            .apply(&compiled.image)
            .map_err(|e| format!("{e}"))?;
        // The session table full to its default capacity (2M), one session per key: the
        // kernel allocates an entry per session (not preallocated), so memory follows the fill.
        let sessions: Vec<_> = (0..capacity.sessions)
            .map(|i| {
                let mut key = enforcer_common::session::SessionKey {
                    proto: 17,
                    port_a: 40000,
                    port_b: 443,
                    ..Default::default()
                };
                key.addr_a[..4].copy_from_slice(&(0x0a00_0000 | (i >> 1)).to_be_bytes());
                key.addr_b[..4].copy_from_slice(&[198, 51, 100, (i & 1) as u8]);
                (key, enforcer_common::session::Session::default())
            })
            .collect();
        enforcer
            .insert_sessions(&sessions)
            .map_err(|e| format!("filling SESSIONS: {e}"))?;
        drop(sessions);
        let memory = enforcer.map_memory();
        let total: u64 = memory.iter().map(|(_, b)| b).sum();
        let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let _ = writeln!(
            md,
            "\n## Kernel memory of the maps at {largest} SIMs (capacity {} SIMs, {cpus} CPUs) and {} \
             sessions\n",
            capacity.sims, capacity.sessions
        );
        let _ = writeln!(md, "| map | MiB |\n|---|---:|");
        for (name, bytes) in &memory {
            let _ = writeln!(md, "| {name} | {:.2} |", *bytes as f64 / 1_048_576.0);
        }
        let _ = writeln!(md, "| **total** | **{:.1}** |", total as f64 / 1_048_576.0);
        if let Some(big) = loads.iter().find(|l| l["sims"] == 1_000_000) {
            let check = |value: f64, target: f64| if value <= target { "met" } else { "NOT met" };
            let (total_s, rss) = (f(&big["total_s"]), f(&big["peak_rss_mib"]));
            let mib = total as f64 / 1_048_576.0;
            let _ = writeln!(
                md,
                "\nTargets at 1,000,000 SIMs: load ≤ 1.5 s: {total_s:.2} s ({}); maps with 2M \
             sessions ≤ 512 MiB: {mib:.0} MiB ({}), the same on any number of CPUs but for the \
             small per-CPU tables. Peak RSS of this process: {rss:.0} MiB, with the SIMS map \
             mapped and every step's temporaries kept (it loads, then reloads twice); the \
             daemon's memory target is judged on the daemon (below).",
                check(total_s, 1.5),
                check(mib, 512.0),
            );
        }
        drop(enforcer);
        memory
    } else {
        Vec::new()
    };

    let scale = if plan.runs("scale") {
        policy_size(&mut md, &work, plan)?
    } else {
        Value::Null
    };

    let e2e = if plan.runs("e2e") {
        end_to_end(&mut md, &work, quick)
    } else {
        Value::Null
    };

    let daemon = if plan.runs("daemon") {
        // The `enforcer` binary built beside this one (`cargo xtask bench` builds both).
        let bin = std::env::current_exe()
            .map_err(|e| e.to_string())?
            .with_file_name("enforcer");
        let sims = *plan.sims.iter().max().unwrap_or(&10_000);
        integration_tests::daemon_bench::run(&mut md, &work, &bin, sims, quick)?
    } else {
        Value::Null
    };
    let deny = if plan.runs("deny") {
        integration_tests::deny_bench::run(&mut md, quick)?
    } else {
        Value::Null
    };
    let export = if plan.runs("export") {
        let sessions = if quick { 20_000 } else { 2_000_000 };
        integration_tests::export_bench::run(&mut md, &work, sessions, quick)?
    } else {
        Value::Null
    };
    let identity = if plan.runs("identity") {
        let bin = std::env::current_exe()
            .map_err(|e| e.to_string())?
            .with_file_name("enforcer");
        let sims = if quick { 20_000 } else { 1_000_000 };
        integration_tests::identity_bench::run(&mut md, &work, &bin, sims, quick)?
    } else {
        Value::Null
    };

    let report = json!({
        "quick": quick,
        "per_packet": rows,
        "targets": {"worst_above_empty_ns": worst_above, "worst_many_rules_ratio": worst_ratio},
        "load": loads,
        "map_memory_bytes": memory.iter().map(|(n, b)| (n.to_string(), json!(b))).collect::<serde_json::Map<_, _>>(),
        "policy_size": scale,
        "end_to_end": e2e,
        "daemon": daemon,
        "export": export,
        "deny": deny,
        "identity": identity,
    });
    std::fs::write(out.join("report.md"), &md).map_err(|e| e.to_string())?;
    std::fs::write(
        out.join("report.json"),
        serde_json::to_string_pretty(&report).unwrap_or_default(),
    )
    .map_err(|e| e.to_string())?;
    print!("{md}");
    Ok(())
}

/// Rates through veth: generator → gateway → sink on CPU 0, every configuration in one run.
fn end_to_end(md: &mut String, work: &Path, quick: bool) -> Value {
    if let Some(focus) = e2e_focus() {
        // A focused A/B run: the drop configurations named, at 1M SIMs only, under a heading
        // of its own (so that `xtask bench --only e2e` never takes it for the full table).
        let windows = if quick {
            Windows {
                warmup: std::time::Duration::from_millis(300),
                window: std::time::Duration::from_millis(700),
                reps: 1,
            }
        } else {
            Windows {
                warmup: std::time::Duration::from_secs(2),
                window: std::time::Duration::from_secs(10),
                reps: 3,
            }
        };
        let heading = "## Focused drop A/B at 1M SIMs (`BENCH_E2E_DROP`), through veth";
        return end_to_end_with(md, work, heading, &[1_000_000], windows, &focus, &[]);
    }
    let (sizes, windows, drop_filters, pass_filters): (&[u32], Windows, &[Filter], &[Filter]) =
        if quick {
            let w = Windows {
                warmup: std::time::Duration::from_millis(300),
                window: std::time::Duration::from_millis(700),
                reps: 1,
            };
            if std::env::var_os("BENCH_E2E_ALL").is_some() {
                // Every configuration with the quick windows: for checking the rig itself.
                let all: &[Filter] = &[
                    Filter::DropAll,
                    Filter::Bare,
                    Filter::Enforcer,
                    Filter::EnforcerXdpForward,
                    Filter::NftNetdev,
                    Filter::NftInet,
                ];
                (&[10_000], w, all, &all[1..])
            } else {
                (&[10_000], w, &[Filter::Enforcer], &[])
            }
        } else {
            let w = Windows {
                warmup: std::time::Duration::from_secs(2),
                window: std::time::Duration::from_secs(10),
                reps: 3,
            };
            (
                &[10_000, 1_000_000],
                w,
                &[
                    Filter::DropAll,
                    Filter::Bare,
                    Filter::BareSessions,
                    Filter::Enforcer,
                    Filter::EnforcerNoEvents,
                    Filter::NftNetdev,
                    Filter::NftInet,
                ],
                &[
                    Filter::Bare,
                    Filter::Enforcer,
                    Filter::EnforcerXdpForward,
                    Filter::NftNetdev,
                    Filter::NftInet,
                ],
            )
        };
    let heading = "## End to end through veth (generator → gateway → sink, all on CPU 0)";
    end_to_end_with(
        md,
        work,
        heading,
        sizes,
        windows,
        drop_filters,
        pass_filters,
    )
}

/// `BENCH_E2E_DROP=bare,bare-sessions,enforcer,no-events` (any of those, in that order or
/// another, repeats allowed): the drop configurations of a focused run at 1M SIMs, each a row
/// in the order given; the ratios below the table take each configuration's first row.
fn e2e_focus() -> Option<Vec<Filter>> {
    let names = std::env::var("BENCH_E2E_DROP").ok()?;
    let filters = names
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(|name| match name {
            "bare" => Filter::Bare,
            "bare-sessions" => Filter::BareSessions,
            "enforcer" => Filter::Enforcer,
            "no-events" => Filter::EnforcerNoEvents,
            other => panic!(
                "BENCH_E2E_DROP: unknown configuration {other:?} \
                 (bare, bare-sessions, enforcer, no-events)"
            ),
        })
        .collect();
    Some(filters)
}

/// The end-to-end runs for `sizes` SIMs with these drop and pass configurations, reported
/// under `heading`.
fn end_to_end_with(
    md: &mut String,
    work: &Path,
    heading: &str,
    sizes: &[u32],
    windows: Windows,
    drop_filters: &[Filter],
    pass_filters: &[Filter],
) -> Value {
    let _ = writeln!(
        md,
        "\n{heading}\n\n64-byte UDP frames from `xdp_gen` \
         (BPF_PROG_TEST_RUN live frames), sources cycling through every SIM; {} s warm-up, {} s window, median of {} \
         (min-max). Drop: frames to a port no rule allows, counted where dropped. Pass: frames to an allowed port, \
         forwarded by the gateway and counted at the sink's XDP program. Setup: loading the configuration (policy or \
         `nft -f`) and attaching.\n",
        windows.warmup.as_secs_f64(),
        windows.window.as_secs_f64(),
        windows.reps
    );
    let _ = writeln!(
        md,
        "| SIMs | mode | gateway | Mpps (min-max) | vs enforcer | setup s |"
    );
    let _ = writeln!(md, "|---:|---|---|---:|---:|---:|");
    let rig = Rig::build();
    let mut rows = Vec::new();
    for &sims in sizes {
        for (mode, filters) in [(Mode::Drop, drop_filters), (Mode::Pass, pass_filters)] {
            let mut results = Vec::new();
            for &filter in filters {
                if let Some(m) =
                    throughput::measure(&rig, sims, filter, mode, windows, &work.join("e2e"))
                {
                    eprintln!(
                        "enforcer-bench: e2e {sims} SIMs {mode:?} {}: {:.2} Mpps",
                        filter.name(),
                        m.pps.median / 1e6
                    );
                    results.push((filter, m));
                }
            }
            let ours = results
                .iter()
                .find(|(f, _)| *f == Filter::Enforcer)
                .map(|(_, m)| m.pps.median);
            for (filter, m) in &results {
                let ratio = ours.map(|o| o / m.pps.median);
                let _ = writeln!(
                    md,
                    "| {sims} | {mode:?} | {} | {:.2} ({:.2}-{:.2}) | {} | {:.2} |",
                    filter.name(),
                    m.pps.median / 1e6,
                    m.pps.min / 1e6,
                    m.pps.max / 1e6,
                    match ratio {
                        Some(ratio) if *filter != Filter::Enforcer => format!("{ratio:.2}x"),
                        _ => "-".to_owned(),
                    },
                    m.setup_s
                );
                rows.push(json!({
                    "sims": sims, "mode": format!("{mode:?}"), "gateway": filter.name(),
                    "pps": {"median": m.pps.median, "min": m.pps.min, "max": m.pps.max}, "setup_s": m.setup_s,
                }));
            }
        }
    }
    // The targets of the end-to-end comparison, at the largest size measured.
    let rate = |sims: u32, mode: &str, gateway: Filter| {
        rows.iter()
            .find(|r| r["sims"] == sims && r["mode"] == mode && r["gateway"] == gateway.name())
            .and_then(|r| r["pps"]["median"].as_f64())
    };
    let largest = *sizes.iter().max().unwrap_or(&0);
    // An enforcer configuration's rate over another gateway's, same mode and size.
    let versus_of = |ours: Filter, mode: &str, other: Filter| {
        rate(largest, mode, ours)
            .zip(rate(largest, mode, other))
            .map(|(ours, theirs)| ours / theirs)
    };
    let versus = |mode: &str, other: Filter| versus_of(Filter::Enforcer, mode, other);
    // (target, mode, the other gateway, the least ratio of the enforcer's rate to its).
    let targets = [
        (
            "drop rate ≥ 80% of the bare one-lookup program",
            "Drop",
            Filter::Bare,
            0.8,
        ),
        (
            "drop rate ≥ 2× nftables netdev",
            "Drop",
            Filter::NftNetdev,
            2.0,
        ),
        (
            "drop rate ≥ 3.5× nftables inet + conntrack",
            "Drop",
            Filter::NftInet,
            3.5,
        ),
        (
            "pass rate ≥ nftables netdev",
            "Pass",
            Filter::NftNetdev,
            1.0,
        ),
        (
            "forwarded rate ≥ 1.3× nftables netdev (issue 11)",
            "Pass",
            Filter::NftNetdev,
            1.3,
        ),
        (
            "forwarded rate ≥ 3× nftables inet + conntrack (issue 11)",
            "Pass",
            Filter::NftInet,
            3.0,
        ),
    ]
    .map(|(what, mode, other, target)| (what, versus(mode, other), target))
    .into_iter()
    .chain(
        [
            (
                "forwarded rate with --forward xdp ≥ 1.3× nftables netdev (issue 11)",
                Filter::NftNetdev,
                1.3,
            ),
            (
                "forwarded rate with --forward xdp ≥ 3× nftables inet + conntrack (issue 11)",
                Filter::NftInet,
                3.0,
            ),
        ]
        .map(|(what, other, target)| {
            (
                what,
                versus_of(Filter::EnforcerXdpForward, "Pass", other),
                target,
            )
        }),
    );
    let _ = writeln!(md, "\nTargets at {largest} SIMs:\n");
    for (what, measured, target) in targets {
        if let Some(measured) = measured {
            let verdict = if measured >= target { "met" } else { "NOT met" };
            let _ = writeln!(md, "- {what}: {measured:.2}× ({verdict})");
        }
    }
    // Not a target: what the deny-event budgets cost this flood, one frame per SIM in turn.
    if let Some(without) = rate(largest, "Drop", Filter::EnforcerNoEvents)
        .zip(rate(largest, "Drop", Filter::Bare))
        .map(|(ours, bare)| ours / bare)
    {
        let _ = writeln!(
            md,
            "- (for comparison) drop rate with deny events off, of the bare one-lookup program: \
             {without:.2}×"
        );
    }
    // Not a target either: how much of the bare program's rate is left once a frame's session
    // is looked up before its SIM, as the enforcer does (the floor of that design).
    if let Some(floor) = rate(largest, "Drop", Filter::BareSessions)
        .zip(rate(largest, "Drop", Filter::Bare))
        .map(|(two, bare)| two / bare)
    {
        let _ = writeln!(
            md,
            "- (for comparison) drop rate of the bare session + SIM lookups program, of the bare \
             one-lookup program: {floor:.2}×"
        );
    }
    json!(rows)
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

/// Run `enforcer-bench load` in a child process so its peak RSS is the load's alone.
fn measure_load(generated: &Generated) -> Result<Value, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = Command::new(exe)
        .arg("load")
        .arg(&generated.policy)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "load of {} failed: {}",
            generated.policy.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let mut value: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    value["rules_per_segment"] = json!(generated.rules_per_segment);
    value["sims"] = json!(generated.sims);
    Ok(value)
}

/// Policy size (issue 9): the policies that once exploded, from rules to map entries, the
/// time to validate and compile them, their kernel memory (the sizing `policy check` prints,
/// and the kernel's own figure after loading) and an allowed packet's cost with them loaded.
fn policy_size(md: &mut String, work: &Path, plan: &Plan) -> Result<Value, String> {
    let quick = plan.repeat < 1_000_000;
    let k = |n: usize| if quick { n / 10 } else { n };
    // Each policy with an allowed frame from its SIM (10.0.0.1) to its first destination.
    let policies = [
        (scale::distinct_ranges(k(10_000)), L4::Tcp(1000)),
        (scale::many_cidrs(k(100_000)), L4::Udp(2000)),
        (scale::one_rule_many_hosts(k(70_000)), L4::Tcp(443)),
        (scale::wide_over_narrow(k(3_000)), L4::Tcp(1000)),
    ];
    let cpus = capacity::possible_cpus();
    let _ = writeln!(
        md,
        "\n## Policy size: rules → map entries, compile time, kernel memory, per-packet cost\n\n\
         Rule entries: `PORT_RULES` + `RULES_V2`; per rule: (rule entries + `NET_*` entries − pools) \
         / rules. Memory: `estimated` is \
         what `enforcer policy check` prints for the capacities `run` chooses (both generations' \
         room, {cpus} possible CPUs), `measured` the kernel's `memlock` after loading. Per-packet: \
         an allowed TCP/UDP frame to the first destination, BPF_PROG_TEST_RUN repeat {}, median of \
         {}, beside the empty program.\n",
        plan.repeat, plan.reps
    );
    let _ = writeln!(
        md,
        "| policy | rules | rule entries | NET_* | rule entries/rule | entries/rule | validate s | \
         compile s | fill maps s | estimated MiB | measured MiB | allowed ns | empty ns | above empty |"
    );
    let _ = writeln!(
        md,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let mut rows = Vec::new();
    for (generated, l4) in policies {
        let path = work.join(format!("scale-{}.toml", rows.len()));
        std::fs::create_dir_all(work).map_err(|e| e.to_string())?;
        std::fs::write(&path, &generated.text).map_err(|e| e.to_string())?;
        let start = Instant::now();
        let policy = policy::load(&path).map_err(|e| e.to_string())?;
        let validate_s = start.elapsed().as_secs_f64();
        let start = Instant::now();
        let compiled = compile::compile_fresh(&policy).map_err(|e| e.to_string())?;
        let compile_s = start.elapsed().as_secs_f64();
        let image = &compiled.image;
        let nets = image.nets_v4.len() + image.nets_v6.len() - policy.pools.len();
        let per_rule = (image.rules.len() + nets) as f64 / generated.rules as f64;
        let rule_entries_per_rule = image.rules.len() as f64 / generated.rules as f64;
        let capacity = Capacity::for_policy(image, compiled.rules.len(), &Limits::default());
        let estimated: u64 = capacity.memory(image, cpus).iter().map(|(_, b)| b).sum();
        let mut enforcer = Enforcer::load(capacity, None).map_err(|e| format!("{e}"))?;
        let start = Instant::now();
        let generation = enforcer
            .apply(image)
            .map_err(|e| format!("{e}"))?
            .generation;
        let fill_s = start.elapsed().as_secs_f64();
        let measured: u64 = enforcer.map_memory().iter().map(|(_, b)| b).sum();

        let frame = Frame::new("10.0.0.1", "11.0.0.0", l4).build();
        let reference = Reference::new(image, generation, HashMap::new());
        let expected = reference.evaluate(&frame, IFINDEX).verdict;
        let (action, _) = enforcer
            .test_run(&frame, 1, IFINDEX)
            .map_err(|e| format!("{e}"))?;
        if !matches!(
            expected,
            enforcer_common::Verdict::Pass(enforcer_common::PassReason::Rule, _)
        ) || action != expected.xdp_action()
        {
            return Err(format!(
                "{}: the frame should pass by a rule; reference {expected:?}, kernel action {action}",
                generated.name
            ));
        }
        let (ours, empty) = against_empty(&mut enforcer, None, &frame, plan)?;
        let mib = |b: u64| b as f64 / 1_048_576.0;
        let _ = writeln!(
            md,
            "| {} | {} | {} | {nets} | {rule_entries_per_rule:.1} | {per_rule:.1} | {validate_s:.3} | \
             {compile_s:.3} | {fill_s:.3} | \
             {:.1} | {:.1} | {:.1} | {:.1} | {:+.1} |",
            generated.name,
            generated.rules,
            image.rules.len(),
            mib(estimated),
            mib(measured),
            ours.median,
            empty.median,
            ours.median - empty.median
        );
        eprintln!("enforcer-bench: policy size: {} done", generated.name);
        rows.push(json!({
            "policy": generated.name, "rules": generated.rules, "rule_entries": image.rules.len(),
            "net_entries": nets, "entries_per_rule": per_rule,
            "rule_entries_per_rule": rule_entries_per_rule, "validate_s": validate_s,
            "compile_s": compile_s, "fill_s": fill_s, "estimated_bytes": estimated,
            "measured_bytes": measured, "allowed_ns": ours.median, "empty_ns": empty.median,
        }));
    }
    let row = |i: usize| &rows[i];
    let met = |ok: bool| if ok { "met" } else { "NOT met" };
    let (ranges, cidrs) = (row(0), row(1));
    let ranges_s = f(&ranges["compile_s"]);
    let ranges_per_rule = f(&ranges["entries_per_rule"]);
    let cidrs_s = f(&cidrs["validate_s"]) + f(&cidrs["compile_s"]);
    let _ = writeln!(
        md,
        "\nTargets{}: {} compiles in ≤ 1 s: {ranges_s:.3} s ({}), into ≤ 32 entries per rule: \
         {ranges_per_rule:.1} ({}); {} validate and compile in ≤ 1 s: {cidrs_s:.3} s ({}).",
        if quick {
            " (quick run: a tenth of the sizes)"
        } else {
            ""
        },
        ranges["policy"].as_str().unwrap_or_default(),
        met(ranges_s <= 1.0),
        met(ranges_per_rule <= 32.0),
        cidrs["policy"].as_str().unwrap_or_default(),
        met(cidrs_s <= 1.0),
    );
    Ok(json!(rows))
}

/// Per-run ns of `frame` through the enforcer and through the empty program, interleaved
/// `plan.reps` times with `plan.repeat` runs each, so both see the same machine state.
/// `frame` through the enforcer (or its benchmark `variant`) and through the empty program,
/// interleaved, `plan.reps` times `plan.repeat` runs: ns per run of each.
fn against_empty(
    enforcer: &mut Enforcer,
    variant: Option<Variant>,
    frame: &[u8],
    plan: &Plan,
) -> Result<(Stats, Stats), String> {
    let mut ours = Vec::new();
    let mut empty = Vec::new();
    for _ in 0..plan.reps {
        let (_, t) = match variant {
            None => enforcer.test_run(frame, plan.repeat, IFINDEX),
            Some(variant) => enforcer.variant_test_run(variant, frame, plan.repeat, IFINDEX),
        }
        .map_err(|e| format!("{e}: {:?}", std::error::Error::source(&e)))?;
        ours.push(t.as_nanos() as f64);
        let (_, t) = enforcer
            .baseline_test_run(frame, plan.repeat)
            .map_err(|e| format!("{e}"))?;
        empty.push(t.as_nanos() as f64);
    }
    Ok((Stats::of(&ours), Stats::of(&empty)))
}

/// The per-packet table being written: its markdown, its JSON rows, and the medians by
/// (SIMs, frame) for the rules-per-segment comparison.
struct Table<'a> {
    md: &'a mut String,
    rows: &'a mut Vec<Value>,
    by_rules: &'a mut HashMap<(u32, &'static str), Vec<(u32, f64)>>,
    sims: u32,
    rules: u32,
}

impl Table<'_> {
    /// One row: `shape` with `verdict`, the enforcer's and the empty program's times;
    /// `variant`: measured through a benchmark variant (not in the targets' worst cases).
    fn row(
        &mut self,
        shape: &'static str,
        verdict: enforcer_common::Verdict,
        ours: Stats,
        empty: Stats,
        counted: Lookups,
        variant: bool,
    ) {
        let (sims, rules) = (self.sims, self.rules);
        let verdict = match verdict {
            enforcer_common::Verdict::Pass(r, _) => format!("pass {}", r.name()),
            enforcer_common::Verdict::Drop(r) => format!("drop {}", r.name()),
        };
        let _ = writeln!(
            self.md,
            "| {sims} | {rules} | {shape} | {verdict} | {:.1} ({:.1}-{:.1}) | {:.1} | {:+.1} | {counted} |",
            ours.median,
            ours.min,
            ours.max,
            empty.median,
            ours.median - empty.median
        );
        if !variant {
            self.by_rules
                .entry((sims, shape))
                .or_default()
                .push((rules, ours.median));
        }
        self.rows.push(json!({
            "sims": sims, "rules_per_segment": rules, "frame": shape, "verdict": verdict,
            "ns": {"median": ours.median, "min": ours.min, "max": ours.max},
            "empty_ns": {"median": empty.median, "min": empty.min, "max": empty.max},
            "above_empty_ns": ours.median - empty.median,
            "lookups": {"hash": counted.hash, "lpm": counted.lpm, "array": counted.array},
            "variant": variant,
        }));
    }
}

/// The `SESSIONS` entry of an untagged IPv4 TCP or UDP frame without options.
fn session_of(
    enforcer: &Enforcer,
    frame: &[u8],
) -> Result<enforcer_common::session::Session, String> {
    let addr = |at: usize| {
        enforcer_common::decide::v4_in_16([frame[at], frame[at + 1], frame[at + 2], frame[at + 3]])
    };
    let port = |at: usize| u16::from_be_bytes([frame[at], frame[at + 1]]);
    let (key, _) = enforcer_common::session::SessionKey::between(
        &addr(26),
        port(34),
        &addr(30),
        port(36),
        frame[23],
        false,
    );
    enforcer
        .sessions()
        .map_err(|e| e.to_string())?
        .into_iter()
        .find(|(k, _)| *k == key)
        .map(|(_, session)| session)
        .ok_or_else(|| "the allowed frame has no session".to_owned())
}
