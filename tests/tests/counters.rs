//! Counter reads on real per-CPU maps: the batch path (`BPF_MAP_LOOKUP_BATCH`) gives what one
//! lookup per element gives, across chunk boundaries and with distinct values per CPU; the
//! `--imsi` path reads only the chosen SIMs. `COUNTERS_SIMS=1000000` (as `cargo xtask bench`
//! would) times a million-SIM read; the default keeps the test to a few seconds.

use std::{path::PathBuf, time::Instant};

use aya::maps::{Map, MapData, PerCpuArray, PerCpuValues};
use enforcer::{
    capacity::{Capacity, possible_cpus},
    compile,
    counters::Totals,
    loader::Enforcer,
    policy,
};
use enforcer_common::maps::{Counter, SimCounters, VERDICT_STATS_ENTRIES, names};
use integration_tests::rng::Rng;

const POLICY: &str = r#"
pools = ["10.64.0.0/16"]
[[segments]]
name = "s"
rules = [{ to = ["192.0.2.1"], proto = "tcp", ports = [443] }]
[[sims]]
imsi = "001010000000001"
ipv4 = "10.64.0.1"
segment = "s"
"#;

/// A program whose `SIM_STATS` holds `sims` slots, pinned in a directory of its own (so the
/// test can write counters through the pins); unpinned and removed on drop.
struct Pinned {
    enforcer: Enforcer,
    dir: PathBuf,
}

impl Pinned {
    fn load(tag: &str, sims: u32) -> Self {
        let policy = policy::from_str(std::path::Path::new("t.toml"), POLICY).expect("valid");
        let compiled = compile::compile_fresh(&policy).expect("compiles");
        let capacity = Capacity {
            sims,
            ..Capacity::for_test_run(&compiled.image, compiled.rules.len())
        };
        let dir = PathBuf::from(format!(
            "/sys/fs/bpf/enforcer-counters-{}-{tag}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("create a pin directory on bpffs");
        let mut enforcer = Enforcer::load(capacity, Some(&dir))
            .unwrap_or_else(|e| panic!("loading the XDP program failed (are you root?): {e:?}"));
        enforcer.apply(&compiled.image).expect("apply");
        Self { enforcer, dir }
    }

    fn map(&self, name: &str) -> &Map {
        self.enforcer.map(name).expect("counter map")
    }

    /// Write per-CPU values into slot `index` of pinned map `name`.
    fn set<T: aya::Pod>(&self, name: &str, index: u32, per_cpu: Vec<T>) {
        let data = MapData::from_pin(self.dir.join(name)).expect("open pin");
        let mut array: PerCpuArray<MapData, T> =
            PerCpuArray::try_from(Map::PerCpuArray(data)).expect("a per-CPU array");
        let values = PerCpuValues::try_from(per_cpu).expect("one value per possible CPU");
        array.set(index, values, 0).expect("write counters");
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        if let Err(e) = self.enforcer.unpin() {
            eprintln!("removing pins in {}: {e}", self.dir.display());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn sim_values(rng: &mut Rng, cpus: usize) -> Vec<SimCounters> {
    (0..cpus)
        .map(|cpu| {
            let base = rng.below(1 << 40) + 1;
            SimCounters {
                pass_packets: base,
                pass_bytes: base * 64 + cpu as u64,
                drop_packets: base / 3 + cpu as u64,
                drop_bytes: base * 7,
            }
        })
        .collect()
}

fn counter_values(rng: &mut Rng, cpus: usize) -> Vec<Counter> {
    (0..cpus)
        .map(|cpu| Counter {
            packets: rng.below(1 << 32) + cpu as u64,
            bytes: rng.below(1 << 48),
        })
        .collect()
}

#[test]
fn batch_reads_equal_one_lookup_per_element() {
    // Several 64Ki chunks, split across two threads on a machine with two cores or more (at
    // 140,001), and a count that ends inside a chunk and short of the map.
    let capacity = 300_000;
    let sims = 280_001usize;
    let pinned = Pinned::load("equal", capacity);
    let cpus = possible_cpus();
    let mut rng = Rng::new(0x00c0_47e5);
    let mut written = Vec::new();
    for _ in 0..300 {
        let index = u32::try_from(rng.below(capacity.into())).expect("index fits");
        pinned.set(names::SIM_STATS, index, sim_values(&mut rng, cpus));
        written.push(index);
    }
    // The chunk edges and both ends.
    for index in [
        0, 65_535, 65_536, 131_071, 131_072, 140_000, 140_001, 262_143, 262_144, 280_000, 280_001,
    ] {
        pinned.set(names::SIM_STATS, index, sim_values(&mut rng, cpus));
        written.push(index);
    }
    for index in [0, 5, VERDICT_STATS_ENTRIES - 1] {
        pinned.set(names::VERDICT_STATS, index, counter_values(&mut rng, cpus));
    }
    pinned.set(names::RULE_STATS, 0, counter_values(&mut rng, cpus));

    let (sim, verdict, rule) = (
        pinned.map(names::SIM_STATS),
        pinned.map(names::VERDICT_STATS),
        pinned.map(names::RULE_STATS),
    );
    let batch = Totals::read(sim, verdict, rule, sims, 1).expect("batch read");
    let each = Totals::read_each(sim, verdict, rule, sims, 1).expect("per-element read");
    assert_eq!(batch.sims.len(), sims);
    assert_eq!(batch.verdicts.len(), VERDICT_STATS_ENTRIES as usize);
    assert!(batch.sims[280_000].pass_packets > 0 && batch.sims[140_000].pass_packets > 0);
    let nonzero = batch.sims.iter().filter(|c| c.pass_packets > 0).count();
    assert!(nonzero > 250, "only {nonzero} SIM slots read back non-zero");
    assert_eq!(batch, each, "batch and per-element reads differ");
    // The sum over CPUs, checked against what was written, for one slot.
    let expected = sim_values(&mut Rng::new(1), cpus);
    pinned.set(names::SIM_STATS, 7, expected.clone());
    let seven = Totals::read_sims(sim, &[7]).expect("read one SIM")[0];
    assert_eq!(
        seven.pass_bytes,
        expected.iter().map(|c| c.pass_bytes).sum::<u64>()
    );

    // Only the chosen SIMs: their slots equal the full read's, every other slot is zero.
    let only = [written[0], written[1], 140_000, 280_000];
    let some = Totals::read_only(sim, verdict, rule, sims, &only, 1).expect("read some");
    let full = Totals::read(sim, verdict, rule, sims, 1).expect("batch read");
    for (index, counters) in some.sims.iter().enumerate() {
        let chosen = only.contains(&u32::try_from(index).expect("fits"));
        let want = if chosen {
            full.sims[index]
        } else {
            SimCounters::default()
        };
        assert_eq!(*counters, want, "slot {index} (chosen: {chosen})");
    }
    assert_eq!(some.verdicts, full.verdicts);
    assert_eq!(some.rules, full.rules);
}

/// Times the whole-fleet read and a one-SIM read; prints the figures. The bounds are loose
/// (shared CI machines); the figures in README come from `COUNTERS_SIMS=1000000`.
#[test]
fn reading_many_sims_is_fast() {
    let sims: u32 = std::env::var("COUNTERS_SIMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let pinned = Pinned::load("fast", sims);
    let (sim, verdict, rule) = (
        pinned.map(names::SIM_STATS),
        pinned.map(names::VERDICT_STATS),
        pinned.map(names::RULE_STATS),
    );
    let start = Instant::now();
    let batch = Totals::read(sim, verdict, rule, sims as usize, 1).expect("batch read");
    let batch_time = start.elapsed();
    assert_eq!(batch.sims.len(), sims as usize);
    let start = Instant::now();
    let each = Totals::read_each(sim, verdict, rule, sims as usize, 1).expect("per-element");
    let each_time = start.elapsed();
    assert_eq!(batch, each);
    let start = Instant::now();
    let one = Totals::read_sims(sim, &[sims - 1]).expect("one SIM");
    let one_time = start.elapsed();
    assert_eq!(one.len(), 1);
    println!(
        "counters: {sims} SIMs on {} CPUs: batch {batch_time:?}, one lookup per SIM \
         {each_time:?}, one SIM {one_time:?}",
        possible_cpus()
    );
    assert!(
        batch_time < each_time,
        "the batch read ({batch_time:?}) is not faster than per-element ({each_time:?})"
    );
    assert!(one_time.as_millis() < 50, "one SIM took {one_time:?}");
}
