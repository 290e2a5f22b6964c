//! Map capacities: how large each policy-sized map is made, whether a compiled policy fits, and
//! the kernel memory that costs. `enforcer run` sizes its maps with [`Capacity::for_policy`] and
//! the loader checks every image with [`Capacity::check`]; `enforcer policy check` calls the
//! same two with the same flags, so check and run never disagree.
//!
//! Memory is estimated with the kernel's own accounting (`map_mem_usage` of each map type, the
//! `memlock` of a map's fdinfo on 6.x): preallocated arrays by capacity (a memory-mappable
//! one in whole pages), per-CPU arrays by capacity × possible CPUs (only the small fixed
//! tables are per CPU), hash maps by buckets (capacity rounded up to a power of two) plus
//! their entries, LPM tries by their entries. The benchmark prints it beside the measured figure.

use enforcer_common::maps::{
    MAX_IFACES, MAX_SEGMENTS, PORTS_USED_ENTRIES, RULE_KEY_LEN, SEGMENT_ENTRIES,
    VERDICT_STATS_ENTRIES, defaults, names,
};

use crate::compile::MapImage;

/// Map sizes chosen at load time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    /// SIM indices: entries of `SIMS` (40 bytes each: a policy word per generation and the
    /// SIM's counters; not per CPU).
    pub sims: u32,
    /// Entries of `SIM_V4_V2`.
    pub sim_v4: u32,
    /// Entries of `SIM_V6_V2`.
    pub sim_v6: u32,
    /// Entries of `NET_V4` (both generations).
    pub nets_v4: u32,
    /// Entries of `NET_V6` (both generations).
    pub nets_v6: u32,
    /// Entries of `RULES_V2` (both generations).
    pub rule_entries: u32,
    /// Entries of `PORT_RULES` (both generations).
    pub port_rules: u32,
    /// Entries of `RULE_STATS` (rule ids).
    pub rules: u32,
    /// Entries of `SESSIONS`: live sessions at most (104 bytes of key and value each, plus
    /// the kernel's per-entry overhead; not preallocated, so memory follows the sessions in
    /// use).
    pub sessions: u32,
}

impl Default for Capacity {
    fn default() -> Self {
        Self {
            sims: defaults::MAX_SIMS,
            sim_v4: defaults::MAX_SIMS,
            sim_v6: 1024,
            nets_v4: defaults::MAX_NETS,
            nets_v6: defaults::MAX_NETS,
            rule_entries: defaults::MAX_RULE_ENTRIES,
            port_rules: defaults::MAX_RULE_ENTRIES,
            rules: defaults::MAX_RULES,
            sessions: defaults::MAX_SESSIONS,
        }
    }
}

/// Capacities given on the command line, shared by `run` and `policy check`; a flag left out
/// sizes its maps to the policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::Args)]
pub struct Limits {
    /// SIM capacity of the maps (default: the policy's SIMs plus an eighth, per address family,
    /// at least 65,536 IPv4 and 1,024 IPv6).
    #[arg(long)]
    pub max_sims: Option<u32>,
    /// Network capacity of NET_V4 and NET_V6 each (default: twice the policy's distinct CIDRs
    /// and pools of the family, plus an eighth, at least 65,536).
    #[arg(long)]
    pub max_nets: Option<u32>,
    /// Rule-entry capacity of RULES_V2 and PORT_RULES each (default: twice the policy's, plus
    /// an eighth, at least 65,536).
    #[arg(long)]
    pub max_rule_entries: Option<u32>,
    /// Live sessions at most (SESSIONS; default 2,000,000). When full, a packet that would
    /// open a session is dropped (`sessions_full`); no live session is evicted.
    #[arg(long)]
    pub max_sessions: Option<u32>,
}

/// One map's fill: what the policy needs against what the map holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fill {
    /// Map name.
    pub map: &'static str,
    /// What is counted.
    pub what: &'static str,
    /// Entries the policy needs.
    pub needed: usize,
    /// Entries the map holds.
    pub capacity: u32,
    /// The flag that sets the capacity.
    pub flag: &'static str,
}

impl Fill {
    /// The policy fits.
    #[must_use]
    pub fn fits(&self) -> bool {
        self.needed <= self.capacity as usize
    }
}

/// A policy that does not fit the maps as sized.
#[derive(Debug, thiserror::Error)]
#[error(
    "the policy does not fit the maps: {}",
    .0.iter().map(|f| format!(
        "it needs {} {} but {} holds {}; {}",
        f.needed, f.what, f.map, f.capacity,
        if f.flag.starts_with("--") {
            format!("raise {} to at least {} (or leave it out to size the map to the policy)", f.flag, f.needed)
        } else {
            format!("{} is {}", f.map, f.flag)
        }
    )).collect::<Vec<_>>().join("; ")
)]
pub struct CapacityError(pub Vec<Fill>);

impl Capacity {
    /// Room for `image` (and `rules` rule ids) plus an eighth, so a reload that grows the
    /// policy a little fits, with `floor` as the minimum. `NET_*` and `RULES_V2` get twice
    /// that, as both generations live in them during a reload. Each SIM map is sized for its
    /// own family: a hash map's buckets come with its capacity, so a 1M-entry `SIM_V6` for a
    /// thousand IPv6 SIMs would cost 16 MiB for nothing.
    #[must_use]
    pub fn for_image(image: &MapImage, rules: usize, floor: Capacity) -> Self {
        let with_headroom = |n: usize, floor: u32| {
            u32::try_from(n.saturating_add(n / 8))
                .unwrap_or(u32::MAX)
                .max(floor)
        };
        let two_generations = |n: usize, floor: u32| with_headroom(n.saturating_mul(2), floor);
        Self {
            sims: with_headroom(image.sim_slots(), floor.sims),
            // A SIM without an address in the policy gets its addresses at run time (RADIUS
            // accounting, `sim bind`), of either family: room for one of each.
            sim_v4: with_headroom(image.sims_v4.len() + image.sims_unbound.len(), floor.sim_v4),
            sim_v6: with_headroom(image.sims_v6.len() + image.sims_unbound.len(), floor.sim_v6),
            nets_v4: two_generations(image.nets_v4.len(), floor.nets_v4),
            nets_v6: two_generations(image.nets_v6.len(), floor.nets_v6),
            rule_entries: two_generations(
                image.single_port_rules(false).count(),
                floor.rule_entries,
            ),
            port_rules: two_generations(image.single_port_rules(true).count(), floor.port_rules),
            rules: with_headroom(rules, floor.rules),
            sessions: floor.sessions,
        }
    }

    /// The capacities `enforcer run` uses for `image` with `rules` rule ids: sized to the
    /// policy ([`Capacity::for_image`] over the defaults), except where `limits` say otherwise.
    #[must_use]
    pub fn for_policy(image: &MapImage, rules: usize, limits: &Limits) -> Self {
        let auto = Self::for_image(image, rules, Self::default());
        let auto = limits.max_sims.map_or(auto, |sims| auto.with_sims(sims));
        Self {
            nets_v4: limits.max_nets.unwrap_or(auto.nets_v4),
            nets_v6: limits.max_nets.unwrap_or(auto.nets_v6),
            rule_entries: limits.max_rule_entries.unwrap_or(auto.rule_entries),
            port_rules: limits.max_rule_entries.unwrap_or(auto.port_rules),
            sessions: limits.max_sessions.unwrap_or(auto.sessions),
            ..auto
        }
    }

    /// Room for `image` with small floors, for a program that is only run with
    /// `BPF_PROG_TEST_RUN` and never attached (`policy replay`, tests): the per-CPU counter
    /// maps stay small.
    #[must_use]
    pub fn for_test_run(image: &MapImage, rules: usize) -> Self {
        let floor = Capacity {
            sims: 1024,
            sim_v4: 1024,
            sim_v6: 1024,
            nets_v4: 1024,
            nets_v6: 1024,
            rule_entries: 4096,
            port_rules: 4096,
            rules: 1024,
            sessions: 4096,
        };
        Self::for_image(image, rules, floor)
    }

    /// The same capacity for every SIM map (`--max-sims`).
    #[must_use]
    pub fn with_sims(self, sims: u32) -> Self {
        Self {
            sims,
            sim_v4: sims,
            sim_v6: sims,
            ..self
        }
    }

    /// Each policy-sized map's fill by `image` with `rules` rule ids (one generation).
    #[must_use]
    pub fn fill(&self, image: &MapImage, rules: usize) -> Vec<Fill> {
        let max_rule = image
            .rules
            .iter()
            .map(|(_, e)| e.rule as usize + 1)
            .max()
            .unwrap_or(0)
            .max(rules);
        let fill = |map, what, needed, capacity, flag| Fill {
            map,
            what,
            needed,
            capacity,
            flag,
        };
        vec![
            fill(
                names::SIM_V4,
                "IPv4 SIM addresses",
                image.sims_v4.len(),
                self.sim_v4,
                "--max-sims",
            ),
            fill(
                names::SIM_V6,
                "IPv6 SIM prefixes",
                image.sims_v6.len(),
                self.sim_v6,
                "--max-sims",
            ),
            fill(
                names::SIMS,
                "SIM indices",
                image.sim_slots(),
                self.sims,
                "--max-sims",
            ),
            fill(
                names::NET_V4,
                "IPv4 networks",
                image.nets_v4.len(),
                self.nets_v4,
                "--max-nets",
            ),
            fill(
                names::NET_V6,
                "IPv6 networks",
                image.nets_v6.len(),
                self.nets_v6,
                "--max-nets",
            ),
            fill(
                names::RULES,
                "rule entries",
                image.single_port_rules(false).count(),
                self.rule_entries,
                "--max-rule-entries",
            ),
            fill(
                names::PORT_RULES,
                "single-port rule entries",
                image.single_port_rules(true).count(),
                self.port_rules,
                "--max-rule-entries",
            ),
            fill(
                names::RULE_STATS,
                "rule ids",
                max_rule,
                self.rules,
                "--max-rule-entries",
            ),
            fill(
                names::SEGMENTS,
                "segments",
                image.segments.len(),
                MAX_SEGMENTS,
                "fixed at build time",
            ),
        ]
    }

    /// Whether `image` fits: every map that overflows, with the flag to raise.
    pub fn check(&self, image: &MapImage, rules: usize) -> Result<(), CapacityError> {
        overflow(self.fill(image, rules))
    }

    /// Kernel memory of every map with `image` loaded once, in bytes, by map name, as the
    /// kernel accounts it, on a machine with `cpus` possible CPUs.
    #[must_use]
    pub fn memory(&self, image: &MapImage, cpus: usize) -> Vec<(&'static str, u64)> {
        let cpus = cpus as u64;
        let array = |entries: u32, value: u64| u64::from(entries) * value.next_multiple_of(8);
        let per_cpu =
            |entries: u32, value: u64| u64::from(entries) * (8 + value.next_multiple_of(8) * cpus);
        // Buckets of 16 bytes, eight lock counters per CPU, then per entry a `struct htab_elem`
        // (48 bytes), the key and value rounded to 8 bytes and an 8-byte free-list node.
        let hash = |capacity: u32, entries: usize, key: u64, value: u64| {
            u64::from(capacity.max(1).next_power_of_two()) * 16
                + 4 * cpus * 8
                + entries as u64 * (48 + key.next_multiple_of(8) + value.next_multiple_of(8) + 8)
        };
        // A `struct lpm_trie_node` (40 bytes) plus the key's data and the value, per entry.
        let lpm = |entries: usize, data: u64, value: u64| entries as u64 * (40 + data + value);
        vec![
            (names::CONFIG, array(1, 8)),
            (names::SIM_V4, hash(self.sim_v4, image.sims_v4.len(), 4, 8)),
            (names::SIM_V6, hash(self.sim_v6, image.sims_v6.len(), 8, 8)),
            // Memory-mappable: the values start on a page, and the whole is whole pages.
            (
                names::SIMS,
                array(self.sims, 40).next_multiple_of(4096) + 4096,
            ),
            (names::NET_V4, lpm(image.nets_v4.len(), 5, 8)),
            (names::NET_V6, lpm(image.nets_v6.len(), 17, 8)),
            (names::SEGMENTS, array(SEGMENT_ENTRIES, 8)),
            (names::PORTS_USED, array(PORTS_USED_ENTRIES, 8)),
            (
                names::RULES,
                lpm(
                    image.single_port_rules(false).count(),
                    RULE_KEY_LEN as u64,
                    4,
                ),
            ),
            (
                names::PORT_RULES,
                hash(
                    self.port_rules,
                    image.single_port_rules(true).count(),
                    12,
                    4,
                ),
            ),
            // Preallocated: every entry exists from the start.
            (names::IFACES, hash(MAX_IFACES, MAX_IFACES as usize, 4, 4)),
            (names::VERDICT_STATS, per_cpu(VERDICT_STATS_ENTRIES, 16)),
            (names::RULE_STATS, per_cpu(self.rules, 16)),
        ]
    }
}

/// Entries each policy-sized map holds at the peak of a reload, when the active policy and the
/// new one live side by side: the bindings of both policies' addresses, the higher SIM and
/// rule ids of the two, and in the generation-keyed maps the active generation plus the larger
/// of what the target generation holds now and what it will hold (deletes are written first).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Peak {
    /// `SIM_V4_V2` entries.
    pub sim_v4: usize,
    /// `SIM_V6_V2` entries.
    pub sim_v6: usize,
    /// SIM index slots (`SIMS`).
    pub sim_slots: usize,
    /// `NET_V4` entries.
    pub nets_v4: usize,
    /// `NET_V6` entries.
    pub nets_v6: usize,
    /// `RULES_V2` entries.
    pub rule_entries: usize,
    /// `PORT_RULES` entries.
    pub port_rules: usize,
    /// Rule id slots (`RULE_STATS`).
    pub rule_slots: usize,
}

impl Capacity {
    /// Whether a reload whose peak is `peak` fits: checked before anything is written, so a
    /// reload either fits whole or changes nothing.
    ///
    /// # Errors
    /// [`CapacityError`] naming every map that would overflow.
    pub fn check_peak(&self, peak: &Peak) -> Result<(), CapacityError> {
        let fill = |map, what, needed, capacity, flag| Fill {
            map,
            what,
            needed,
            capacity,
            flag,
        };
        overflow([
            fill(
                names::SIM_V4,
                "IPv4 SIM addresses of the old and new policy",
                peak.sim_v4,
                self.sim_v4,
                "--max-sims",
            ),
            fill(
                names::SIM_V6,
                "IPv6 SIM prefixes of the old and new policy",
                peak.sim_v6,
                self.sim_v6,
                "--max-sims",
            ),
            fill(
                names::SIMS,
                "SIM indices",
                peak.sim_slots,
                self.sims,
                "--max-sims",
            ),
            fill(
                names::NET_V4,
                "IPv4 networks of the old and new policy",
                peak.nets_v4,
                self.nets_v4,
                "--max-nets",
            ),
            fill(
                names::NET_V6,
                "IPv6 networks of the old and new policy",
                peak.nets_v6,
                self.nets_v6,
                "--max-nets",
            ),
            fill(
                names::RULES,
                "rule entries of the old and new policy",
                peak.rule_entries,
                self.rule_entries,
                "--max-rule-entries",
            ),
            fill(
                names::PORT_RULES,
                "single-port rule entries of the old and new policy",
                peak.port_rules,
                self.port_rules,
                "--max-rule-entries",
            ),
            fill(
                names::RULE_STATS,
                "rule ids",
                peak.rule_slots,
                self.rules,
                "--max-rule-entries",
            ),
        ])
    }
}

/// `Ok` when every fill fits, else the ones that overflow.
fn overflow(fills: impl IntoIterator<Item = Fill>) -> Result<(), CapacityError> {
    let over: Vec<Fill> = fills.into_iter().filter(|f| !f.fits()).collect();
    if over.is_empty() {
        Ok(())
    } else {
        Err(CapacityError(over))
    }
}

/// The fill and memory of every map as a table, for `enforcer policy check`.
#[must_use]
pub fn table(capacity: &Capacity, image: &MapImage, rules: usize, cpus: usize) -> String {
    use std::fmt::Write as _;
    let memory = capacity.memory(image, cpus);
    let total: u64 = memory.iter().map(|(_, bytes)| bytes).sum();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "  kernel memory: {} with {cpus} possible CPUs",
        mib(total)
    );
    let _ = writeln!(
        out,
        "  {:<14} {:>12} {:>12} {:>6} {:>12}",
        "map", "entries", "capacity", "fill", "memory"
    );
    let fills = capacity.fill(image, rules);
    for (name, bytes) in &memory {
        match fills.iter().find(|f| f.map == *name) {
            Some(f) => {
                let percent = f.needed as f64 * 100.0 / f64::from(f.capacity.max(1));
                let _ = writeln!(
                    out,
                    "  {name:<14} {:>12} {:>12} {percent:>5.1}% {:>12}{}",
                    f.needed,
                    f.capacity,
                    mib(*bytes),
                    if f.fits() { "" } else { "  too small" }
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "  {name:<14} {:>12} {:>12} {:>6} {:>12}",
                    "-",
                    "-",
                    "-",
                    mib(*bytes)
                );
            }
        }
    }
    out
}

fn mib(bytes: u64) -> String {
    format!("{:.2} MiB", bytes as f64 / 1_048_576.0)
}

/// Possible CPUs of this machine (per-CPU maps allocate for each), at least 1.
#[must_use]
pub fn possible_cpus() -> usize {
    // Fixed for the life of the machine; read once (aya reads a sysfs file per call).
    static CPUS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CPUS.get_or_init(|| aya::util::nr_cpus().ok().filter(|&n| n > 0).unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use enforcer_common::maps::SimEntry;

    use super::Capacity;
    use crate::compile::MapImage;

    /// A SIM without an address in the policy can be given one of each family at run time:
    /// both SIM maps have room for it, so that RADIUS bindings at scale do not meet a full map.
    #[test]
    fn sims_without_addresses_count_in_both_address_maps() {
        let floor = Capacity {
            sims: 1,
            sim_v4: 1,
            sim_v6: 1,
            ..Capacity::default()
        };
        let image = MapImage {
            sims_v4: vec![([10, 0, 0, 1], SimEntry::default())],
            sims_unbound: (1..=800)
                .map(|sim| SimEntry {
                    sim,
                    ..SimEntry::default()
                })
                .collect(),
            ..MapImage::default()
        };
        let capacity = Capacity::for_image(&image, 0, floor);
        assert_eq!(capacity.sim_v4, 801 + 801 / 8);
        assert_eq!(capacity.sim_v6, 800 + 800 / 8);
        assert_eq!(capacity.sims, 801 + 801 / 8, "SIM slots 0..=800");
    }
}
