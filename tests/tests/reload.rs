//! Reloads under traffic: while one thread applies policies A and B in turn, every verdict the
//! kernel gives is A's or B's for that frame, never a mix (a SIM judged by another SIM's or
//! segment's rules). Also: one-SIM changes write a handful of entries, and a reload that does
//! not fit beside the active policy is refused before anything is written.
//!
//! Needs root (BPF_PROG_TEST_RUN, bpffs); each test pins under its own `/sys/fs/bpf` path.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use aya::programs::Xdp;
use aya_obj::programs::XdpAttachType;
use enforcer::{
    compile::{self, Compiled},
    ids::Allocator,
    loader::{Capacity, Enforcer, LoadError},
    policy::{self, ValidatedPolicy},
};
use enforcer_common::maps::SimBinding;
use integration_tests::{
    frames::{Frame, L4},
    harness::{TEST_IFINDEX, run_pinned},
};

/// Policy A. Segments red, blue, green; SIMs 1-4; 10.64.0.4 is quarantined.
const A: &str = r#"
pools = ["10.64.0.0/16"]
[[segments]]
name = "red"
rules = [ { to = ["198.51.100.1"], proto = "tcp", ports = [443] } ]
[[segments]]
name = "blue"
rules = [ { to = ["198.51.100.2"], proto = "udp", ports = [53] },
          { to = ["green"], proto = "icmp" } ]
[[segments]]
name = "green"
rules = [ { to = ["198.51.100.3"], proto = "tcp", ports = [22] } ]
[[sims]]
imsi = "001010000000001"
ipv4 = "10.64.0.1"
segment = "red"
[[sims]]
imsi = "001010000000002"
ipv4 = "10.64.0.2"
segment = "blue"
[[sims]]
imsi = "001010000000003"
ipv4 = "10.64.0.3"
segment = "green"
rules = [ { to = ["203.0.113.7"], proto = "udp", ports = [123] } ]
[[sims]]
imsi = "001010000000004"
ipv4 = "10.64.0.4"
segment = "red"
state = "quarantined"
"#;

/// Policy B: segments, SIMs and rules in another order (so positional ids all move), SIM 1
/// moved to blue, address 10.64.0.2 moved from SIM 2 to SIM 5 (SIM 2 gets 10.64.0.8), SIM 3's
/// own rule gone, SIM 6 new.
const B: &str = r#"
pools = ["10.64.0.0/16"]
[[segments]]
name = "green"
rules = [ { to = ["198.51.100.3"], proto = "tcp", ports = [22] } ]
[[segments]]
name = "blue"
rules = [ { to = ["green"], proto = "icmp" },
          { to = ["198.51.100.2"], proto = "udp", ports = [53] } ]
[[segments]]
name = "red"
rules = [ { to = ["198.51.100.1"], proto = "tcp", ports = [443] } ]
[[sims]]
imsi = "001010000000006"
ipv4 = "10.64.0.6"
segment = "green"
[[sims]]
imsi = "001010000000004"
ipv4 = "10.64.0.4"
segment = "red"
state = "quarantined"
[[sims]]
imsi = "001010000000005"
ipv4 = "10.64.0.2"
segment = "green"
[[sims]]
imsi = "001010000000003"
ipv4 = "10.64.0.3"
segment = "green"
[[sims]]
imsi = "001010000000002"
ipv4 = "10.64.0.8"
segment = "blue"
[[sims]]
imsi = "001010000000001"
ipv4 = "10.64.0.1"
segment = "blue"
"#;

fn validated(name: &str, text: &str) -> ValidatedPolicy {
    policy::from_str(Path::new(name), text)
        .unwrap_or_else(|e| panic!("test policy {name} is invalid:\n{e}"))
}

/// Every source (each SIM address of either policy, a pool address without SIM) towards every
/// destination the rules name, on each rule's protocol and port, plus lateral ICMP.
fn frames() -> Vec<(String, Vec<u8>)> {
    let sources = [1, 2, 3, 4, 5, 6, 8, 9].map(|n| format!("10.64.0.{n}"));
    let dests: Vec<(&str, L4)> = vec![
        ("198.51.100.1", L4::Tcp(443)),
        ("198.51.100.2", L4::Udp(53)),
        ("198.51.100.3", L4::Tcp(22)),
        ("203.0.113.7", L4::Udp(123)),
        ("10.64.0.3", L4::Icmp(8)),
        ("10.64.0.2", L4::Icmp(8)),
        ("10.64.0.6", L4::Icmp(8)),
    ];
    let mut out = Vec::new();
    for src in &sources {
        for (dst, l4) in &dests {
            let frame = Frame::new(src, dst, *l4).build();
            out.push((format!("{src} -> {dst} {l4:?}"), frame));
        }
    }
    out
}

/// Per-run pin path under bpffs, removed on drop.
struct PinGuard(PathBuf);

impl PinGuard {
    fn new(what: &str) -> Self {
        Self(PathBuf::from(format!(
            "/sys/fs/bpf/enforcer-reload-{what}-{}",
            std::process::id()
        )))
    }
}

impl Drop for PinGuard {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.0)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            eprintln!("removing {} failed: {e}", self.0.display());
        }
    }
}

fn load(compiled: &Compiled, other: &Compiled) -> Enforcer {
    let capacity =
        Capacity::for_test_run(&compiled.image, compiled.rules.len().max(other.rules.len()));
    Enforcer::load(capacity, None)
        .unwrap_or_else(|e| panic!("loading the XDP program failed (are you root?): {e:?}"))
}

fn reload_is_atomic(a: &Compiled, b: &Compiled, what: &str) {
    let frames = frames();
    let mut enforcer = load(a, b);
    let pin = PinGuard::new(what);
    enforcer.pin_program(&pin.0).expect("pin the program");
    let program = Xdp::from_pin(&pin.0, XdpAttachType::Interface).expect("open the pinned program");

    // Each policy's verdicts, alone.
    enforcer.apply(&a.image).expect("apply A");
    let with_a: Vec<u32> = frames
        .iter()
        .map(|(_, f)| run_pinned(&program, f))
        .collect();
    enforcer.apply(&b.image).expect("apply B");
    let with_b: Vec<u32> = frames
        .iter()
        .map(|(_, f)| run_pinned(&program, f))
        .collect();
    let telling = with_a.iter().zip(&with_b).filter(|(x, y)| x == y).count();
    assert!(
        telling >= frames.len() / 2,
        "most frames must have one verdict in both policies for the test to see a mix"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let judged = Arc::new(AtomicU64::new(0));
    let runner = {
        let (stop, judged) = (Arc::clone(&stop), Arc::clone(&judged));
        let frames = frames.clone();
        let (with_a, with_b) = (with_a.clone(), with_b.clone());
        std::thread::spawn(move || {
            let mut wrong = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                for (i, (name, frame)) in frames.iter().enumerate() {
                    let action = run_pinned(&program, frame);
                    if action != with_a[i] && action != with_b[i] {
                        wrong.push(format!(
                            "{name}: got action {action}, A gives {}, B gives {}",
                            with_a[i], with_b[i]
                        ));
                    }
                    judged.fetch_add(1, Ordering::Relaxed);
                }
            }
            wrong
        })
    };
    let reloads = 120;
    for i in 0..reloads {
        let image = if i % 2 == 0 { &a.image } else { &b.image };
        enforcer.apply(image).expect("reload");
    }
    stop.store(true, Ordering::Relaxed);
    let wrong = runner.join().expect("runner thread");
    let judged = judged.load(Ordering::Relaxed);
    eprintln!("{what}: {reloads} reloads, {judged} frames judged");
    assert!(
        judged > 1000,
        "too few frames judged during the reloads: {judged}"
    );
    assert!(
        wrong.is_empty(),
        "{} verdicts were neither A's nor B's, e.g.:\n{}",
        wrong.len(),
        wrong
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Positional ids (what `compile_fresh` gives): every SIM index, segment id and rule id moves
/// between A and B, the hardest case for a reload.
#[test]
fn every_verdict_during_reloads_is_the_old_or_the_new_policys() {
    let (a, b) = (validated("a.toml", A), validated("b.toml", B));
    let a = compile::compile_fresh(&a).expect("A compiles");
    let b = compile::compile_fresh(&b).expect("B compiles");
    reload_is_atomic(&a, &b, "positional");
}

/// Stable ids from one allocator, as the daemon uses them.
#[test]
fn every_verdict_during_reloads_with_stable_ids_is_the_old_or_the_new_policys() {
    let (a, b) = (validated("a.toml", A), validated("b.toml", B));
    let mut ids = Allocator::default();
    let (ids_a, _) = ids.assign(&a).expect("ids for A");
    let (ids_b, _) = ids.assign(&b).expect("ids for B");
    let a = compile::compile(&a, &ids_a).expect("A compiles");
    let b = compile::compile(&b, &ids_b).expect("B compiles");
    reload_is_atomic(&a, &b, "stable");
}

/// A change to one SIM writes a handful of map entries, not one per SIM.
#[test]
fn a_one_sim_change_writes_a_handful_of_entries() {
    let sims = 5000;
    let mut text = String::from(
        "pools = [\"10.64.0.0/16\"]\n[[segments]]\nname = \"meters\"\n\
         rules = [ { to = [\"198.51.100.1\"], proto = \"tcp\", ports = [443] } ]\n\
         [[segments]]\nname = \"spare\"\n",
    );
    for i in 0..sims {
        text.push_str(&format!(
            "[[sims]]\nimsi = \"0010100000{i:05}\"\nipv4 = \"10.64.{}.{}\"\nsegment = \"meters\"\n",
            i / 250,
            i % 250 + 1
        ));
    }
    let base = validated("base.toml", &text);
    // SIM 1234 moves to another segment; one SIM is added at the start of the file.
    let moved = text.replacen(
        "imsi = \"001010000001234\"\nipv4 = \"10.64.4.235\"\nsegment = \"meters\"",
        "imsi = \"001010000001234\"\nipv4 = \"10.64.4.235\"\nsegment = \"spare\"",
        1,
    );
    assert_ne!(moved, text, "the edit must apply");
    let moved = moved.replacen(
        "[[sims]]",
        "[[sims]]\nimsi = \"001019999999999\"\nipv4 = \"10.64.200.1\"\nsegment = \"meters\"\n[[sims]]",
        1,
    );
    let moved = validated("moved.toml", &moved);
    let mut ids = Allocator::default();
    let (ids_base, _) = ids.assign(&base).expect("ids");
    let (ids_moved, _) = ids.assign(&moved).expect("ids");
    let base = compile::compile(&base, &ids_base).expect("compiles");
    let moved = compile::compile(&moved, &ids_moved).expect("compiles");

    let mut enforcer = load(&moved, &base);
    let first = enforcer.apply(&base.image).expect("first apply");
    assert!(
        first.entries_written > sims,
        "the first apply writes everything: {first:?}"
    );
    let second = enforcer.apply(&base.image).expect("same policy again");
    // The other generation was empty: it gets the whole policy once.
    assert!(second.entries_written > sims, "{second:?}");
    let third = enforcer
        .apply(&base.image)
        .expect("same policy a third time");
    assert_eq!(
        third.entries_written, 0,
        "an unchanged policy writes nothing: {third:?}"
    );
    let change = enforcer.apply(&moved.image).expect("apply the change");
    assert_eq!(
        (change.sims_added, change.sims_removed, change.sims_changed),
        (1, 0, 1),
        "{change:?}"
    );
    // Two bindings (the new SIM's, and none moved), two SIM policy words; nothing else.
    assert!(
        change.entries_written <= 6,
        "a one-SIM change wrote {} entries: {change:?}",
        change.entries_written
    );
    let back = enforcer
        .apply(&moved.image)
        .expect("the other generation catches up");
    assert!(back.entries_written <= 6, "{back:?}");
    assert_eq!(
        back.sims_added + back.sims_removed + back.sims_changed,
        0,
        "{back:?}"
    );
}

/// A reload whose old and new policy do not fit side by side is refused before any write: the
/// active policy stays in force, whole.
#[test]
fn a_reload_that_does_not_fit_beside_the_active_policy_changes_nothing() {
    let a = validated("a.toml", A);
    let mut ids = Allocator::default();
    let (ids_a, _) = ids.assign(&a).expect("ids");
    let a = compile::compile(&a, &ids_a).expect("compiles");
    // B with other addresses for every SIM: the bindings of A and B together need 2 × 4 + 2.
    let moved = B.replace("ipv4 = \"10.64.0.", "ipv4 = \"10.64.1.");
    let b = validated("b.toml", &moved);
    let (ids_b, _) = ids.assign(&b).expect("ids");
    let b = compile::compile(&b, &ids_b).expect("compiles");
    // Room for either policy alone (6 addresses), not for both (4 + 6 = 10).
    let capacity = Capacity {
        sim_v4: 8,
        ..Capacity::for_test_run(&b.image, b.rules.len())
    };
    let mut enforcer = Enforcer::load(capacity, None).expect("load (are you root?)");
    let applied = enforcer.apply(&a.image).expect("A fits");
    let pin = PinGuard::new("capacity");
    enforcer.pin_program(&pin.0).expect("pin");
    let program = Xdp::from_pin(&pin.0, XdpAttachType::Interface).expect("open the pinned program");
    let frames = frames();
    let before: Vec<u32> = frames
        .iter()
        .map(|(_, f)| run_pinned(&program, f))
        .collect();
    let bindings = |enforcer: &Enforcer| {
        let map = enforcer
            .map(enforcer_common::maps::names::SIM_V4)
            .expect("SIM_V4_V2");
        let map: aya::maps::HashMap<&aya::maps::MapData, [u8; 4], SimBinding> =
            aya::maps::HashMap::try_from(map).expect("hash map");
        let mut all: Vec<([u8; 4], SimBinding)> = map.iter().filter_map(Result::ok).collect();
        all.sort_unstable();
        all
    };
    let bound = bindings(&enforcer);
    let error = enforcer
        .apply(&b.image)
        .expect_err("A and B together do not fit");
    let message = error.to_string();
    assert!(
        matches!(error, LoadError::Capacity(_)) && message.contains("old and new policy"),
        "{message}"
    );
    assert_eq!(
        enforcer.generation().expect("generation"),
        applied.generation
    );
    let after: Vec<u32> = frames
        .iter()
        .map(|(_, f)| run_pinned(&program, f))
        .collect();
    assert_eq!(before, after, "the refused reload changed verdicts");
    assert_eq!(
        bound,
        bindings(&enforcer),
        "the refused reload wrote bindings"
    );
    // The next reload that fits still works.
    let again = enforcer.apply(&a.image).expect("A again");
    assert_ne!(again.generation, applied.generation);
}

/// With ids from the store, adding a SIM at the start of the file moves no other SIM: each
/// keeps its index, its counters and its name in the `stats` report.
#[test]
fn adding_a_sim_first_keeps_every_other_sims_index_and_counters() {
    use enforcer::{counters::Totals, report::Report, report::State, store::Store};
    use enforcer_common::maps::names;

    let mut store = Store::open_in_memory().expect("store");
    let a = validated("a.toml", A);
    let ids_a = store.assign_ids(&a).expect("ids for A");
    let compiled_a = compile::compile(&a, &ids_a).expect("A compiles");
    let grown_text = A.replacen(
        "[[sims]]",
        "[[sims]]\nimsi = \"001010000000099\"\nipv4 = \"10.64.0.99\"\nsegment = \"red\"\n[[sims]]",
        1,
    );
    let grown = validated("grown.toml", &grown_text);
    let ids_grown = store.assign_ids(&grown).expect("ids for the grown policy");
    assert_eq!(ids_grown.sims[1..], ids_a.sims[..], "no SIM index moved");
    assert_eq!(ids_grown.segments, ids_a.segments, "no segment id moved");
    assert_eq!(ids_grown.rules, ids_a.rules, "no rule id moved");
    let compiled_grown = compile::compile(&grown, &ids_grown).expect("compiles");

    let mut enforcer = load(&compiled_grown, &compiled_a);
    enforcer.apply(&compiled_a.image).expect("apply A");
    // SIM 001010000000001 (10.64.0.1, red) passes three packets to its payment host.
    let payment = Frame::new("10.64.0.1", "198.51.100.1", L4::Tcp(443)).build();
    for _ in 0..3 {
        enforcer
            .test_run(&payment, 1, TEST_IFINDEX)
            .expect("test run");
    }
    let report = enforcer
        .apply(&compiled_grown.image)
        .expect("apply the grown policy");
    assert_eq!(
        (report.sims_added, report.sims_removed, report.sims_changed),
        (1, 0, 0),
        "{report:?}"
    );
    let (action, _) = enforcer
        .test_run(&payment, 1, TEST_IFINDEX)
        .expect("test run");
    assert_eq!(action, enforcer_common::verdict::XDP_PASS);

    let sim_index = ids_grown.sims[1];
    let state = State::new(&grown, &compiled_grown, Path::new("/nonexistent"));
    let totals = Totals::read(
        enforcer.sim_table(),
        enforcer.map(names::VERDICT_STATS).expect("VERDICTS_V2"),
        enforcer.map(names::RULE_STATS).expect("RULE_STATS"),
        compiled_grown.image.sim_slots(),
        state.rules.len(),
    )
    .expect("read counters");
    assert_eq!(
        totals.sims[sim_index as usize].pass_packets, 4,
        "its counter continued"
    );
    let rows = state.sim_rows(
        &grown,
        &compiled_grown.ids,
        &totals,
        &["001010000000001".to_owned()],
    );
    let report = Report::new(&state, &totals, rows);
    assert_eq!(report.sims.len(), 1);
    assert_eq!(report.sims[0].segment, "red");
    assert_eq!(
        report.sims[0].pass_packets, 4,
        "the report names the counter by IMSI"
    );
    let rule = report
        .rules
        .iter()
        .find(|r| r.packets > 0)
        .expect("the payment rule counted");
    assert!(
        rule.rule.starts_with("segment red @ grown.toml:"),
        "{rule:?}"
    );
    assert_eq!(rule.packets, 4, "the rule's counter followed it too");
}
