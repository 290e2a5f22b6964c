//! Reading the per-CPU counter maps (`SIM_STATS`, `VERDICT_STATS`, `RULE_STATS`) and summing
//! CPUs, from a loaded program or from pinned maps of a running daemon.

use std::path::Path;

use aya::maps::{Map, MapData, MapError, PerCpuArray};
use enforcer_common::{
    DropReason, PassReason, Verdict,
    maps::{Counter, SimCounters, VERDICT_STATS_ENTRIES, names, verdict_stats_index},
};

/// Counters summed over CPUs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    /// Per SIM index.
    pub sims: Vec<SimCounters>,
    /// `VERDICT_STATS`, per (segment block, slot).
    pub verdicts: Vec<Counter>,
    /// Per rule id.
    pub rules: Vec<Counter>,
}

impl Totals {
    /// Read `sims` SIM slots and `rules` rule slots from the three counter maps.
    pub fn read(
        sim_stats: &Map,
        verdict_stats: &Map,
        rule_stats: &Map,
        sims: usize,
        rules: usize,
    ) -> Result<Self, MapError> {
        Ok(Self {
            sims: sum(sim_stats, sims, add_sim)?,
            verdicts: sum(verdict_stats, VERDICT_STATS_ENTRIES as usize, add_counter)?,
            rules: sum(rule_stats, rules, add_counter)?,
        })
    }

    /// Read from maps pinned under `dir`.
    pub fn read_pinned(dir: &Path, sims: usize, rules: usize) -> Result<Self, MapError> {
        let open = |name: &str| -> Result<Map, MapError> {
            Map::from_map_data(MapData::from_pin(dir.join(name))?)
        };
        Self::read(
            &open(names::SIM_STATS)?,
            &open(names::VERDICT_STATS)?,
            &open(names::RULE_STATS)?,
            sims,
            rules,
        )
    }

    /// Packets and bytes with `verdict` in segment block `segment` (an id or `SEGMENT_NONE`).
    #[must_use]
    pub fn verdict(&self, segment: u32, verdict: Verdict) -> Counter {
        self.verdicts
            .get(verdict_stats_index(segment, verdict.stats_slot()) as usize)
            .copied()
            .unwrap_or_default()
    }

    /// Drops by reason for one segment block.
    #[must_use]
    pub fn drops(&self, segment: u32) -> Vec<(DropReason, Counter)> {
        DropReason::ALL
            .iter()
            .map(|&r| (r, self.verdict(segment, Verdict::Drop(r))))
            .collect()
    }

    /// Passes by reason for one segment block.
    #[must_use]
    pub fn passes(&self, segment: u32) -> Vec<(PassReason, Counter)> {
        PassReason::ALL
            .iter()
            .map(|&r| (r, self.verdict(segment, Verdict::Pass(r, 0))))
            .collect()
    }
}

/// One SIM's counters, summed over CPUs.
pub fn sim(sim_stats: &Map, sim: u32) -> Result<SimCounters, MapError> {
    sum_one(sim_stats, sim, add_sim)
}

/// One verdict slot of one segment block, summed over CPUs.
pub fn verdict(verdict_stats: &Map, segment: u32, verdict: Verdict) -> Result<Counter, MapError> {
    sum_one(
        verdict_stats,
        verdict_stats_index(segment, verdict.stats_slot()),
        add_counter,
    )
}

/// One rule's counters, summed over CPUs.
pub fn rule(rule_stats: &Map, rule: u32) -> Result<Counter, MapError> {
    sum_one(rule_stats, rule, add_counter)
}

fn add_sim(total: &mut SimCounters, cpu: &SimCounters) {
    total.pass_packets += cpu.pass_packets;
    total.pass_bytes += cpu.pass_bytes;
    total.drop_packets += cpu.drop_packets;
    total.drop_bytes += cpu.drop_bytes;
}

fn add_counter(total: &mut Counter, cpu: &Counter) {
    total.packets += cpu.packets;
    total.bytes += cpu.bytes;
}

fn sum<T: aya::Pod + Default>(
    map: &Map,
    count: usize,
    add: fn(&mut T, &T),
) -> Result<Vec<T>, MapError> {
    let array: PerCpuArray<&MapData, T> = PerCpuArray::try_from(map)?;
    let count = count.min(array.len() as usize);
    (0..count)
        .map(|index| sum_cpus(&array, u32::try_from(index).unwrap_or(u32::MAX), add))
        .collect()
}

fn sum_one<T: aya::Pod + Default>(
    map: &Map,
    index: u32,
    add: fn(&mut T, &T),
) -> Result<T, MapError> {
    sum_cpus(&PerCpuArray::try_from(map)?, index, add)
}

fn sum_cpus<T: aya::Pod + Default>(
    array: &PerCpuArray<&MapData, T>,
    index: u32,
    add: fn(&mut T, &T),
) -> Result<T, MapError> {
    let mut total = T::default();
    for value in array.get(&index, 0)?.iter() {
        add(&mut total, value);
    }
    Ok(total)
}
