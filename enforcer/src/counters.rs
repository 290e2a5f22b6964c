//! Reading the counters: per-SIM ones from the mapped `SIMS` array ([`SimTable`], plain
//! loads, no syscall), and the per-CPU maps (`VERDICT_STATS`, `RULE_STATS`) summed over CPUs.
//!
//! Per-CPU tables are read with `BPF_MAP_LOOKUP_BATCH` (`batch::lookup_percpu_array`): 64Ki
//! elements per syscall instead of one. Single slots (one rule) take one lookup each. Kernels
//! without batch lookups on arrays (before 5.6) get the per-element path.

use aya::{
    maps::{Map, MapData, MapError, PerCpuArray},
    sys::SyscallError,
};
use enforcer_common::{
    DropReason, PassReason, Verdict,
    maps::{
        Counter, SEGMENT_NONE, SimCounters, VERDICT_SLOTS, VERDICT_STATS_ENTRIES,
        verdict_stats_index,
    },
};

use crate::{batch, sim_table::SimTable};

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
    /// Read `sims` SIM slots (from the mapped `SIMS`) and `rules` rule slots, and every
    /// verdict slot, from the counter maps.
    pub fn read(
        sim_table: &SimTable,
        verdict_stats: &Map,
        rule_stats: &Map,
        sims: usize,
        rules: usize,
    ) -> Result<Self, MapError> {
        Ok(Self {
            sims: read_table(sim_table, sims),
            verdicts: sum(verdict_stats, VERDICT_STATS_ENTRIES as usize, add_counter)?,
            rules: sum(rule_stats, rules, add_counter)?,
        })
    }

    /// Like [`Totals::read`], one syscall per element and CPU set for the per-CPU maps: the
    /// path for kernels without batch lookups, and the reference the batch path is tested
    /// against.
    pub fn read_each(
        sim_table: &SimTable,
        verdict_stats: &Map,
        rule_stats: &Map,
        sims: usize,
        rules: usize,
    ) -> Result<Self, MapError> {
        Ok(Self {
            sims: read_table(sim_table, sims),
            verdicts: sum_each(verdict_stats, VERDICT_STATS_ENTRIES as usize, add_counter)?,
            rules: sum_each(rule_stats, rules, add_counter)?,
        })
    }

    /// Like [`Totals::read`], but of the SIMs only those at `only` (SIM indices) are read
    /// (the other SIM slots stay zero), and of the verdicts only the blocks of segment ids
    /// below `segments` and the no-segment block (the others stay zero): for the daemon's
    /// `stats`, which knows both, at any fleet size.
    pub fn read_only(
        sim_table: &SimTable,
        verdict_stats: &Map,
        rule_stats: &Map,
        sims: usize,
        only: &[u32],
        segments: usize,
        rules: usize,
    ) -> Result<Self, MapError> {
        let mut dense = vec![SimCounters::default(); sims];
        for (&index, counters) in only.iter().zip(Self::read_sims(sim_table, only)) {
            if let Some(slot) = dense.get_mut(index as usize) {
                *slot = counters;
            }
        }
        Ok(Self {
            sims: dense,
            verdicts: read_verdicts(verdict_stats, segments)?,
            rules: sum(rule_stats, rules, add_counter)?,
        })
    }

    /// The counters of the SIMs at `indices`, in that order (zero past the table).
    #[must_use]
    pub fn read_sims(sim_table: &SimTable, indices: &[u32]) -> Vec<SimCounters> {
        indices
            .iter()
            .map(|&index| sim_table.counters(index))
            .collect()
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

/// Every verdict slot of `VERDICT_STATS` summed over CPUs (index with
/// [`verdict_stats_index`]), read for the blocks of segment ids below `segments` and the
/// no-segment block, zero for the others.
///
/// # Errors
/// The map cannot be read.
pub fn verdicts(map: &Map, segments: usize) -> Result<Vec<Counter>, MapError> {
    read_verdicts(map, segments)
}

/// See [`verdicts`].
fn read_verdicts(map: &Map, segments: usize) -> Result<Vec<Counter>, MapError> {
    let slots = VERDICT_SLOTS as usize;
    let segments = segments.min(SEGMENT_NONE as usize);
    let mut verdicts = sum(map, segments * slots, add_counter)?;
    verdicts.resize(VERDICT_STATS_ENTRIES as usize, Counter::default());
    let Map::PerCpuArray(data) = map else {
        return Ok(verdicts);
    };
    let cpus = crate::capacity::possible_cpus();
    let none = SEGMENT_NONE * VERDICT_SLOTS;
    let values = match batch::lookup_percpu_range::<Counter>(data.fd(), none, VERDICT_SLOTS, cpus) {
        Ok(values) => values,
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | 524)) => {
            return sum_each(map, VERDICT_STATS_ENTRIES as usize, add_counter);
        }
        Err(io_error) => {
            return Err(SyscallError {
                call: "bpf_map_lookup_batch",
                io_error,
            }
            .into());
        }
    };
    for (slot, per_cpu) in verdicts[none as usize..]
        .iter_mut()
        .zip(values.chunks(cpus))
    {
        for value in per_cpu {
            add_counter(slot, value);
        }
    }
    Ok(verdicts)
}

/// The first `count` SIM slots' counters (at most the table's size).
fn read_table(sim_table: &SimTable, count: usize) -> Vec<SimCounters> {
    let count = u32::try_from(count)
        .unwrap_or(u32::MAX)
        .min(sim_table.entries());
    (0..count).map(|sim| sim_table.counters(sim)).collect()
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

fn add_counter(total: &mut Counter, cpu: &Counter) {
    total.packets += cpu.packets;
    total.bytes += cpu.bytes;
}

/// `FORWARD_STATS` summed over CPUs: packets per slot (index with the `FORWARD_*` slots of
/// `enforcer_common::maps`). Sixteen slots: one lookup each.
pub fn forward_outcomes(map: &Map) -> Result<Vec<u64>, MapError> {
    sum_each(
        map,
        enforcer_common::maps::FORWARD_STATS_ENTRIES as usize,
        |total: &mut u64, value: &u64| *total = total.wrapping_add(*value),
    )
}

/// The first `count` elements (at most the map's size), summed over CPUs, by batch lookup.
fn sum<T: aya::Pod + Default + Send>(
    map: &Map,
    count: usize,
    add: fn(&mut T, &T),
) -> Result<Vec<T>, MapError> {
    let Map::PerCpuArray(data) = map else {
        // Let aya name the wrong map type.
        return PerCpuArray::<&MapData, T>::try_from(map).map(|_| Vec::new());
    };
    let array: PerCpuArray<&MapData, T> = PerCpuArray::try_from(map)?;
    let count = count.min(array.len() as usize);
    let cpus = crate::capacity::possible_cpus();
    let values = match batch::lookup_percpu_array::<T>(
        data.fd(),
        u32::try_from(count).unwrap_or(u32::MAX),
        cpus,
    ) {
        Ok(values) => values,
        // EINVAL: no batch ops for this map type; ENOTSUPP (524, kernel-internal): none at all.
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | 524)) => {
            return sum_each(map, count, add);
        }
        Err(io_error) => {
            return Err(SyscallError {
                call: "bpf_map_lookup_batch",
                io_error,
            }
            .into());
        }
    };
    Ok(values
        .chunks(cpus)
        .map(|per_cpu| {
            let mut total = T::default();
            for value in per_cpu {
                add(&mut total, value);
            }
            total
        })
        .collect())
}

/// The first `count` elements, summed over CPUs, one lookup per element.
fn sum_each<T: aya::Pod + Default>(
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
