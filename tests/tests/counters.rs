//! Counter reads on real maps: the per-CPU tables' batch path (`BPF_MAP_LOOKUP_BATCH`) gives
//! what one lookup per element gives, across chunk boundaries and with distinct values per
//! CPU; the per-SIM counters read through the memory-mapped `SIMS` equal what the map's own
//! syscalls hold, at every slot, the last included; the `--imsi` path reads only the chosen
//! SIMs. `COUNTERS_SIMS=1000000` times a million-SIM read; the default keeps it to seconds.

use std::{path::PathBuf, time::Instant};

use aya::maps::{Array, Map, MapData, PerCpuArray, PerCpuValues};
use enforcer::{
    capacity::{Capacity, possible_cpus},
    compile,
    counters::Totals,
    loader::Enforcer,
    policy,
};
use enforcer_common::maps::{
    Counter, SimCounters, SimPolicy, SimRecord, VERDICT_STATS_ENTRIES, names,
};
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

/// A program whose `SIMS` holds `sims` slots, pinned in a directory of its own (so the
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

    /// Write SIM record `index` with the map's own update syscall (not through the mapping).
    fn set_record(&self, index: u32, record: SimRecord) {
        let data = MapData::from_pin(self.dir.join(names::SIMS)).expect("open pin");
        let mut array: Array<MapData, SimRecord> =
            Array::try_from(Map::Array(data)).expect("an array");
        array.set(index, record, 0).expect("write a SIM record");
    }
}

fn sim_record(rng: &mut Rng) -> SimRecord {
    let base = rng.below(1 << 40) + 1;
    SimRecord {
        policy: [
            SimPolicy {
                segment: u16::try_from(rng.below(1024)).expect("fits"),
                flags: 1,
                tiers: 3,
            }
            .to_word(),
            SimPolicy {
                segment: 7,
                flags: 0,
                tiers: 0,
            }
            .to_word(),
        ],
        counters: SimCounters {
            pass_packets: base,
            pass_bytes: base * 64,
            drop_packets: base / 3,
            drop_bytes: base * 7 + 1,
        },
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
    // Several 64Ki chunks of the per-CPU tables, and SIM slots at both ends of the mapping,
    // on page boundaries (40-byte records straddle pages) and short of the map's end.
    let capacity = 300_000;
    let sims = 280_001usize;
    let pinned = Pinned::load("equal", capacity);
    let cpus = possible_cpus();
    let mut rng = Rng::new(0x00c0_47e5);
    let mut written = std::collections::BTreeMap::new();
    let edges = [
        0,
        101,
        102,
        204,
        65_535,
        140_000,
        280_000,
        280_001,
        capacity - 1,
    ];
    let random: Vec<u32> = (0..300)
        .map(|_| u32::try_from(rng.below(capacity.into())).expect("index fits"))
        .collect();
    for index in edges.into_iter().chain(random) {
        let record = sim_record(&mut rng);
        pinned.set_record(index, record);
        written.insert(index, record);
    }
    for index in [0, 5, VERDICT_STATS_ENTRIES - 1] {
        pinned.set(names::VERDICT_STATS, index, counter_values(&mut rng, cpus));
    }
    pinned.set(names::RULE_STATS, 0, counter_values(&mut rng, cpus));

    let table = pinned.enforcer.sim_table();
    let (verdict, rule) = (
        pinned.map(names::VERDICT_STATS),
        pinned.map(names::RULE_STATS),
    );
    let batch = Totals::read(table, verdict, rule, sims, 1).expect("batch read");
    let each = Totals::read_each(table, verdict, rule, sims, 1).expect("per-element read");
    assert_eq!(batch.sims.len(), sims);
    assert_eq!(batch.verdicts.len(), VERDICT_STATS_ENTRIES as usize);
    assert_eq!(batch, each, "batch and per-element reads differ");
    // Every slot read through the mapping equals what the syscall wrote (zero elsewhere),
    // counters and both policy words.
    for (index, counters) in batch.sims.iter().enumerate() {
        let index = u32::try_from(index).expect("fits");
        let want = written.get(&index).map(|r| r.counters).unwrap_or_default();
        assert_eq!(*counters, want, "SIM slot {index}");
    }
    for (&index, record) in &written {
        assert_eq!(table.counters(index), record.counters, "SIM slot {index}");
        for generation in 0..2u8 {
            assert_eq!(
                table.policy(generation, index),
                Some(SimPolicy::from_word(record.policy[usize::from(generation)])),
                "SIM slot {index}, generation {generation}"
            );
        }
    }
    assert_eq!(table.policy(0, capacity), None, "past the table");
    assert_eq!(table.counters(capacity), SimCounters::default());

    // Only the chosen SIMs: their slots equal the full read's, every other slot is zero.
    let only = [
        random_key(&written, 0),
        random_key(&written, 1),
        140_000,
        280_000,
    ];
    let some = Totals::read_only(table, verdict, rule, sims, &only, 1024, 1).expect("read some");
    for (index, counters) in some.sims.iter().enumerate() {
        let chosen = only.contains(&u32::try_from(index).expect("fits"));
        let want = if chosen {
            batch.sims[index]
        } else {
            SimCounters::default()
        };
        assert_eq!(*counters, want, "slot {index} (chosen: {chosen})");
    }
    assert_eq!(some.verdicts, batch.verdicts);
    assert_eq!(some.rules, batch.rules);
    // Only the blocks of segments 0 and 1 and the no-segment block: slot 5 (segment 0) and
    // the last (no segment) are read, the rest are zero.
    let two = Totals::read_only(table, verdict, rule, 0, &[], 2, 1).expect("read two blocks");
    assert_eq!(two.verdicts.len(), batch.verdicts.len());
    for (slot, (got, all)) in two.verdicts.iter().zip(&batch.verdicts).enumerate() {
        let read = !(2 * 32..1024 * 32).contains(&slot);
        let want = if read { *all } else { Counter::default() };
        assert_eq!(*got, want, "verdict slot {slot}");
    }
    assert!(
        two.verdicts[5].packets > 0 && two.verdicts[VERDICT_STATS_ENTRIES as usize - 1].packets > 0
    );

    // A policy word written through the mapping is what the map's syscall reads back.
    let policy = SimPolicy {
        segment: 513,
        flags: 1,
        tiers: 9,
    };
    assert!(table.set_policy(1, 280_001, policy));
    let data = MapData::from_pin(pinned.dir.join(names::SIMS)).expect("open pin");
    let array: Array<MapData, SimRecord> = Array::try_from(Map::Array(data)).expect("an array");
    let record = array.get(&280_001, 0).expect("read the record");
    assert_eq!(SimPolicy::from_word(record.policy[1]), policy);
    assert_eq!(
        record.counters, written[&280_001].counters,
        "counters untouched"
    );
    assert!(!table.set_policy(0, capacity, policy), "past the table");
}

fn random_key(written: &std::collections::BTreeMap<u32, SimRecord>, n: usize) -> u32 {
    *written
        .keys()
        .nth(n * 97 + 13)
        .expect("enough SIM slots written")
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
    let table = pinned.enforcer.sim_table();
    let (verdict, rule) = (
        pinned.map(names::VERDICT_STATS),
        pinned.map(names::RULE_STATS),
    );
    let start = Instant::now();
    let batch = Totals::read(table, verdict, rule, sims as usize, 1).expect("batch read");
    let batch_time = start.elapsed();
    assert_eq!(batch.sims.len(), sims as usize);
    let start = Instant::now();
    let one = Totals::read_sims(table, &[sims - 1]);
    let one_time = start.elapsed();
    assert_eq!(one.len(), 1);
    println!(
        "counters: {sims} SIMs on {} CPUs: every SIM {batch_time:?}, one SIM {one_time:?}",
        possible_cpus()
    );
    assert!(one_time.as_millis() < 50, "one SIM took {one_time:?}");
}
