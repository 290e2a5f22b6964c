//! Policy compilation: a pure function from a [`ValidatedPolicy`] to a [`MapImage`], the exact
//! contents of the kernel maps. No I/O; the same policy always gives the same image.
//!
//! The image is generation-free: the loader stamps the generation it writes into every key.
//! How the tables fit together is described in `enforcer_common::maps`; in short:
//! - destination classes: the distinct rule CIDRs of each family are sorted by (address, prefix
//!   length), which lists every CIDR after the CIDRs that contain it, and swept once with a stack
//!   of the open ancestors. A CIDR's class stands for its parent's class plus its own rules;
//!   CIDRs with the same parent class and the same own rules share one, so classes are interned
//!   by (parent class, own rules) and each class's rule set is built once from its parent's;
//! - every rule becomes entries for each of its destination classes (and every class whose
//!   CIDR lies inside one of its CIDRs), each protocol, and each aligned port block of its
//!   merged port ranges (at most 30 per range): no classes of ports, so no cross product;
//! - rules without ports, and non-port protocols, have one protocol-level entry per class;
//!   rules for any protocol one any-protocol entry. When two rules produce the same key the
//!   first one (the lower rule id) keeps it.
//!
//! Cost: sorting the CIDRs and the entries, O(n log n) in the policy's destinations plus the
//! entries produced.

use std::{
    collections::{BTreeSet, HashMap},
    fmt::Write as _,
    net::{Ipv4Addr, Ipv6Addr},
};

use enforcer_common::maps::{
    CLASS_NONE, CLASS_SEGMENT, CLASS_SIM, NET_CORE_SOURCE, NET_POOL, NetEntry, PORT_BITS_ANY,
    PROTO_ANY, RuleEntry, RuleKey, SIM_DST_NAMED, SIM_QUARANTINED, SUBJECT_INBOUND, SUBJECT_SIM,
    SegmentEntry, SimEntry, SimKeyV4, SimKeyV6, TIER_ANY_PORT, TIER_ANY_PROTO, TIER_PORT,
    TIER_PORT_RANGE, has_ports,
};
use ipnetwork::IpNetwork;

use crate::{
    ids::Ids,
    policy::{Dest, Rule, RuleOwner, SimState, ValidatedPolicy},
};

/// An `NET_V4` entry: CIDR and value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct NetV4 {
    /// Network address.
    pub addr: [u8; 4],
    /// Prefix length, 0-32.
    pub prefix_len: u8,
    /// Class or pool.
    pub entry: NetEntry,
}

/// An `NET_V6` entry: CIDR and value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct NetV6 {
    /// Network address.
    pub addr: [u8; 16],
    /// Prefix length, 0-128.
    pub prefix_len: u8,
    /// Class or pool.
    pub entry: NetEntry,
}

/// The contents of every policy map, sorted, generation 0.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MapImage {
    /// `SIM_V4`.
    pub sims_v4: Vec<(SimKeyV4, SimEntry)>,
    /// `SIM_V6`.
    pub sims_v6: Vec<(SimKeyV6, SimEntry)>,
    /// SIMs without an address in the policy file, sorted by SIM index: their `SIMS` policy
    /// words are written all the same, so that an address bound at run time (RADIUS, `sim
    /// bind`) finds its SIM's segment, flags and rules rather than an empty slot.
    pub sims_unbound: Vec<SimEntry>,
    /// `NET_V4`.
    pub nets_v4: Vec<NetV4>,
    /// `NET_V6`.
    pub nets_v6: Vec<NetV6>,
    /// `SEGMENTS`, one entry per segment id.
    pub segments: Vec<SegmentEntry>,
    /// Rule entries, sorted by key: those for a single port go to `PORT_RULES`, the others to
    /// `RULES_V2` (see [`MapImage::single_port_rules`]).
    pub rules: Vec<(RuleKey, RuleEntry)>,
}

/// The image plus what userspace needs to name things.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compiled {
    /// Map contents.
    pub image: MapImage,
    /// Rule id → where it was written and whose it is; `None` for ids this policy does not
    /// use (retired or released ids of other rules). Its length is the rule id slots used.
    pub rules: Vec<Option<RuleInfo>>,
    /// The ids the policy was compiled with.
    pub ids: Ids,
}

/// Userspace description of a rule id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleInfo {
    /// `segment NAME`, `imsi NNN` or `segment NAME inbound`.
    pub owner: String,
    /// `file:line` of the rule.
    pub origin: String,
    /// The rule's description.
    pub description: String,
}

/// Compilation limits that validation cannot see.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// More destination classes than the class encoding holds.
    #[error("the policy's CIDRs make more than {max} destination classes; merge destinations")]
    TooManyClasses {
        /// The limit.
        max: u32,
    },
    /// The ids do not belong to this policy (another count of SIMs, segments or rules).
    #[error("the ids given to compile do not match the policy's SIMs, segments and rules")]
    Ids,
}

/// Compile a validated policy with positional ids ([`Ids::fresh`]): for offline tools and
/// tests, which compile one policy on its own.
///
/// # Errors
/// As [`compile`].
pub fn compile_fresh(policy: &ValidatedPolicy) -> Result<Compiled, CompileError> {
    compile(policy, &Ids::fresh(policy))
}

/// Compile a validated policy with the stable `ids` of its SIMs, segments and rules (from
/// [`crate::ids::Allocator`] or the store): every SIM index, segment id and rule id in the
/// image is taken from `ids`, so an unchanged SIM compiles to the same entries whatever moved
/// around it in the file.
///
/// # Errors
/// [`CompileError::TooManyClasses`] for a policy whose CIDRs need more classes than the
/// encoding holds; [`CompileError::Ids`] if `ids` were not made for this policy.
pub fn compile(policy: &ValidatedPolicy, ids: &Ids) -> Result<Compiled, CompileError> {
    if ids.sims.len() != policy.sims.len()
        || ids.segments.len() != policy.segments.len()
        || ids.rules.len() != policy.rule_count()
    {
        return Err(CompileError::Ids);
    }
    // Rules by position (compile order), with their subject in the rule keys.
    let owned: Vec<(u32, RuleOwner, String, &Rule)> = policy
        .rules()
        .map(|(owner, rule)| {
            let subject = match owner {
                RuleOwner::Segment(pos) => u32::from(ids.segments[pos]),
                RuleOwner::Sim(pos) => SUBJECT_SIM | ids.sims[pos],
                RuleOwner::Inbound(pos) => SUBJECT_INBOUND | u32::from(ids.segments[pos]),
            };
            (subject, owner, policy.owner_name(owner), rule)
        })
        .collect();

    let classes = NetClasses::new(
        owned.iter().map(|(_, _, _, rule)| *rule),
        &policy.core_sources,
    )?;
    let matches: Vec<Vec<Match>> = owned
        .iter()
        .map(|(_, _, _, rule)| matches_of(rule))
        .collect();

    // Entries carry the rule's position until the end, so that when two rules give the same
    // key the first in the file keeps it, whatever their stable ids.
    let mut entries: Vec<(RuleKey, u32)> = Vec::new();
    let mut push = |subject: u32, class: u32, rule: usize| {
        let pos = u32::try_from(rule).unwrap_or(u32::MAX);
        for m in &matches[rule] {
            let key = RuleKey {
                subject,
                class,
                proto: m.proto,
                port_bits: m.port_bits,
                port: m.port,
            };
            entries.push((key, pos));
        }
    };
    // Rules towards CIDRs: once per class whose rule set holds them.
    for (class, rules) in classes.rules.iter().enumerate() {
        let class = u32::try_from(class).unwrap_or(u32::MAX);
        for &rule in rules {
            push(owned[rule as usize].0, class, rule as usize);
        }
    }
    let segment_slots = ids
        .segments
        .iter()
        .map(|&s| usize::from(s) + 1)
        .max()
        .unwrap_or(0);
    let mut segment_tiers = vec![0u8; segment_slots];
    let mut inbound_tiers = vec![0u8; segment_slots];
    let mut sim_tiers = vec![0u8; policy.sims.len()];
    let mut named_sims = BTreeSet::new();
    let mut infos = vec![None; ids.rule_slots()];
    for (pos, (subject, owner_pos, owner, rule)) in owned.iter().enumerate() {
        infos[ids.rules[pos] as usize] = Some(RuleInfo {
            owner: owner.clone(),
            origin: rule.origin.clone(),
            description: rule.description.clone(),
        });
        // Rules towards segments and SIMs: once per named class.
        let mut named = BTreeSet::new();
        for dest in &rule.to {
            match dest {
                Dest::Segment(segment) => {
                    let id = ids
                        .segments
                        .get(usize::from(*segment))
                        .ok_or(CompileError::Ids)?;
                    named.insert(CLASS_SEGMENT | u32::from(*id));
                }
                Dest::Sim(sim) => {
                    let id = ids.sims.get(*sim as usize).ok_or(CompileError::Ids)?;
                    named_sims.insert(*sim as usize);
                    named.insert(CLASS_SIM | id);
                }
                Dest::Net(_) => {}
            }
        }
        for class in named {
            push(*subject, class, pos);
        }
        if !rule.to.is_empty() {
            let tiers = matches[pos].iter().fold(0, |tiers, m| tiers | m.tier());
            match owner_pos {
                RuleOwner::Sim(sim) => sim_tiers[*sim] |= tiers,
                RuleOwner::Segment(segment) => {
                    segment_tiers[usize::from(ids.segments[*segment])] |= tiers;
                }
                RuleOwner::Inbound(segment) => {
                    inbound_tiers[usize::from(ids.segments[*segment])] |= tiers;
                }
            }
        }
    }
    // The first rule in the file keeps a key.
    entries.sort_unstable();
    entries.dedup_by_key(|(key, _)| *key);
    for (_, rule) in &mut entries {
        *rule = ids.rules[*rule as usize];
    }

    let mut sims_v4 = Vec::new();
    let mut sims_v6 = Vec::new();
    let mut sims_unbound = Vec::new();
    for (pos, sim) in policy.sims.iter().enumerate() {
        let mut flags = 0;
        if sim.state == SimState::Quarantined {
            flags |= SIM_QUARANTINED;
        }
        if named_sims.contains(&pos) {
            flags |= SIM_DST_NAMED;
        }
        if sim.imei_mismatch() {
            flags |= enforcer_common::maps::SIM_IMEI_MISMATCH;
        }
        if sim.audit()
            || policy
                .segments
                .get(usize::from(sim.segment))
                .is_some_and(|s| s.audit)
        {
            flags |= enforcer_common::maps::SIM_AUDIT;
        }
        let entry = SimEntry {
            sim: ids.sims[pos],
            segment: *ids
                .segments
                .get(usize::from(sim.segment))
                .ok_or(CompileError::Ids)?,
            flags,
            tiers: sim_tiers[pos],
        };
        if let Some(addr) = sim.ipv4() {
            sims_v4.push((addr.octets(), entry));
        }
        if let Some(net) = sim.ipv6() {
            let octets = net.network().octets();
            let mut prefix = [0u8; 8];
            prefix.copy_from_slice(&octets[..8]);
            sims_v6.push((prefix, entry));
        }
        if sim.ipv4().is_none() && sim.ipv6().is_none() {
            sims_unbound.push(entry);
        }
    }
    sims_v4.sort_unstable();
    sims_v6.sort_unstable();
    sims_unbound.sort_unstable_by_key(|e| e.sim);

    let (mut nets_v4, mut nets_v6) = (classes.v4, classes.v6);
    for pool in &policy.pools {
        let entry = NetEntry {
            class: CLASS_NONE,
            flags: NET_POOL,
        };
        match pool {
            IpNetwork::V4(net) => nets_v4.push(NetV4 {
                addr: net.network().octets(),
                prefix_len: net.prefix(),
                entry,
            }),
            IpNetwork::V6(net) => nets_v6.push(NetV6 {
                addr: net.network().octets(),
                prefix_len: net.prefix(),
                entry,
            }),
        }
    }
    nets_v4.sort_unstable();
    nets_v6.sort_unstable();

    let image = MapImage {
        sims_v4,
        sims_v6,
        sims_unbound,
        nets_v4,
        nets_v6,
        segments: segment_tiers
            .into_iter()
            .zip(inbound_tiers)
            .map(|(rules, inbound)| SegmentEntry::new(rules, inbound))
            .collect(),
        rules: entries
            .into_iter()
            .map(|(key, rule)| (key, RuleEntry { rule }))
            .collect(),
    };
    Ok(Compiled {
        image,
        rules: infos,
        ids: ids.clone(),
    })
}

/// One (protocol, port block) a rule allows, the part of a `RULES_V2` key after the class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Match {
    proto: u8,
    port_bits: u8,
    port: u16,
}

impl Match {
    fn tier(self) -> u8 {
        if self.proto == PROTO_ANY {
            TIER_ANY_PROTO
        } else if self.port_bits == PORT_BITS_ANY {
            TIER_ANY_PORT
        } else if self.port_bits == 16 {
            TIER_PORT
        } else {
            TIER_PORT_RANGE
        }
    }
}

/// Every (protocol, port block) of a rule.
fn matches_of(rule: &Rule) -> Vec<Match> {
    if rule.protos.is_empty() {
        return vec![Match {
            proto: PROTO_ANY,
            port_bits: PORT_BITS_ANY,
            port: 0,
        }];
    }
    let blocks = port_blocks(&rule.ports);
    let mut out = Vec::new();
    for &proto in &rule.protos {
        if has_ports(proto) && !rule.ports.is_empty() {
            out.extend(blocks.iter().map(|&(port, port_bits)| Match {
                proto,
                port_bits,
                port,
            }));
        } else {
            out.push(Match {
                proto,
                port_bits: PORT_BITS_ANY,
                port: 0,
            });
        }
    }
    out
}

/// Port ranges (inclusive) sorted and merged (overlapping or adjacent ranges become one).
fn merge_ports(ranges: &[(u16, u16)]) -> Vec<(u32, u32)> {
    let mut sorted: Vec<(u32, u32)> = ranges
        .iter()
        .map(|&(lo, hi)| (u32::from(lo), u32::from(hi)))
        .collect();
    sorted.sort_unstable();
    let mut merged: Vec<(u32, u32)> = Vec::new();
    for (lo, hi) in sorted {
        match merged.last_mut() {
            Some(last) if lo <= last.1 + 1 => last.1 = last.1.max(hi),
            _ => merged.push((lo, hi)),
        }
    }
    merged
}

/// Port ranges as canonical text, merged and sorted: `53,8000-8100` (empty for any port).
#[must_use]
pub fn port_ranges_text(ranges: &[(u16, u16)]) -> String {
    merge_ports(ranges)
        .iter()
        .map(|&(lo, hi)| {
            if lo == hi {
                lo.to_string()
            } else {
                format!("{lo}-{hi}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Port ranges (inclusive) as aligned blocks `(first port, prefix bits)`: the ranges are merged,
/// then each is cut greedily into the largest aligned power-of-two blocks (at most 30 per range).
#[must_use]
pub fn port_blocks(ranges: &[(u16, u16)]) -> Vec<(u16, u8)> {
    let merged = merge_ports(ranges);
    let mut blocks = Vec::new();
    for (mut lo, hi) in merged {
        while lo <= hi {
            // The largest block aligned at `lo` that ends by `hi`.
            let mut size = if lo == 0 {
                1 << 16
            } else {
                lo & lo.wrapping_neg()
            };
            while lo + size - 1 > hi {
                size >>= 1;
            }
            let bits = 16 - size.trailing_zeros();
            blocks.push((
                u16::try_from(lo).unwrap_or(u16::MAX),
                u8::try_from(bits).unwrap_or(16),
            ));
            lo += size;
        }
    }
    blocks
}

/// The pseudo-rule id that marks `core_sources` CIDRs in [`Interner::sweep`]; never a rule.
const CORE_SOURCE: u32 = u32::MAX;

/// Destination classes of the policy's CIDRs, and the rules each class holds.
struct NetClasses {
    v4: Vec<NetV4>,
    v6: Vec<NetV6>,
    /// Class id → rule ids (ascending) of every CIDR that contains the class's addresses.
    /// Index 0 is `CLASS_NONE`, empty.
    rules: Vec<Vec<u32>>,
}

impl NetClasses {
    /// `core_sources` are swept with the rules' CIDRs as a pseudo-rule ([`CORE_SOURCE`]), so
    /// that a class records whether its addresses are core sources whatever the nesting of
    /// the two kinds of CIDR (longest prefix wins in `NET_*`, so each entry must carry both);
    /// the marker is then taken out of the rule lists and becomes [`NET_CORE_SOURCE`].
    fn new<'a>(
        rules: impl Iterator<Item = &'a Rule>,
        core_sources: &[IpNetwork],
    ) -> Result<Self, CompileError> {
        let mut v4: Vec<(u128, u8, u32)> = Vec::new();
        let mut v6: Vec<(u128, u8, u32)> = Vec::new();
        for net in core_sources {
            match net {
                IpNetwork::V4(net) => {
                    v4.push((
                        u128::from(u32::from(net.network())),
                        net.prefix(),
                        CORE_SOURCE,
                    ));
                }
                IpNetwork::V6(net) => {
                    v6.push((u128::from(net.network()), net.prefix(), CORE_SOURCE))
                }
            }
        }
        for (id, rule) in rules.enumerate() {
            let id = u32::try_from(id).unwrap_or(u32::MAX);
            for dest in &rule.to {
                match dest {
                    Dest::Net(IpNetwork::V4(net)) => {
                        v4.push((u128::from(u32::from(net.network())), net.prefix(), id));
                    }
                    Dest::Net(IpNetwork::V6(net)) => {
                        v6.push((u128::from(net.network()), net.prefix(), id));
                    }
                    Dest::Segment(_) | Dest::Sim(_) => {}
                }
            }
        }
        let mut classes = Interner::default();
        let v4 = classes.sweep(v4, 32)?;
        let v6 = classes.sweep(v6, 128)?;
        // The marker sorts last in a class's ascending rule list.
        let core: Vec<bool> = classes
            .rules
            .iter_mut()
            .map(|rules| rules.last() == Some(&CORE_SOURCE) && rules.pop().is_some())
            .collect();
        let entry = |class: u32| NetEntry {
            class,
            flags: if core[class as usize] {
                NET_CORE_SOURCE
            } else {
                0
            },
        };
        let v4 = v4
            .into_iter()
            .map(|(addr, prefix_len, class)| NetV4 {
                addr: u32::try_from(addr).unwrap_or(0).to_be_bytes(),
                prefix_len,
                entry: entry(class),
            })
            .collect();
        let v6 = v6
            .into_iter()
            .map(|(addr, prefix_len, class)| NetV6 {
                addr: addr.to_be_bytes(),
                prefix_len,
                entry: entry(class),
            })
            .collect();
        Ok(Self {
            v4,
            v6,
            rules: classes.rules,
        })
    }
}

/// Classes keyed by (parent class, own rules).
struct Interner {
    ids: HashMap<(u32, Vec<u32>), u32>,
    rules: Vec<Vec<u32>>,
}

impl Default for Interner {
    fn default() -> Self {
        Self {
            ids: HashMap::new(),
            rules: vec![Vec::new()],
        }
    }
}

impl Interner {
    /// Give every distinct CIDR of `pairs` (address, prefix length, rule id) of one family
    /// (`width` bits) its class; returns (address, prefix length, class), sorted.
    fn sweep(
        &mut self,
        mut pairs: Vec<(u128, u8, u32)>,
        width: u32,
    ) -> Result<Vec<(u128, u8, u32)>, CompileError> {
        pairs.sort_unstable();
        pairs.dedup();
        let contains = |outer: (u128, u8), inner: (u128, u8)| {
            let shift = width - u32::from(outer.1);
            outer.1 <= inner.1 && outer.0.checked_shr(shift) == inner.0.checked_shr(shift)
        };
        let mut out = Vec::new();
        // The CIDRs that contain the current one, innermost last, with their classes.
        let mut open: Vec<((u128, u8), u32)> = Vec::new();
        let mut at = 0;
        while at < pairs.len() {
            let net = (pairs[at].0, pairs[at].1);
            let mut own = Vec::new();
            while at < pairs.len() && (pairs[at].0, pairs[at].1) == net {
                own.push(pairs[at].2);
                at += 1;
            }
            while open.last().is_some_and(|&(outer, _)| !contains(outer, net)) {
                open.pop();
            }
            let parent = open.last().map_or(CLASS_NONE, |&(_, class)| class);
            let class = self.intern(parent, own)?;
            out.push((net.0, net.1, class));
            open.push((net, class));
        }
        Ok(out)
    }

    fn intern(&mut self, parent: u32, own: Vec<u32>) -> Result<u32, CompileError> {
        if let Some(&class) = self.ids.get(&(parent, own.clone())) {
            return Ok(class);
        }
        let class = u32::try_from(self.rules.len())
            .ok()
            .filter(|&class| class < CLASS_SEGMENT)
            .ok_or(CompileError::TooManyClasses {
                max: CLASS_SEGMENT - 1,
            })?;
        let inherited = &self.rules[parent as usize];
        let mut rules = Vec::with_capacity(inherited.len() + own.len());
        rules.extend_from_slice(inherited);
        rules.extend_from_slice(&own);
        rules.sort_unstable();
        rules.dedup();
        self.rules.push(rules);
        self.ids.insert((parent, own), class);
        Ok(class)
    }
}

impl MapImage {
    /// The rule entries of `PORT_RULES` (`true`) or of `RULES_V2` (`false`).
    pub fn single_port_rules(&self, single: bool) -> impl Iterator<Item = &(RuleKey, RuleEntry)> {
        self.rules
            .iter()
            .filter(move |(key, _)| (key.port_bits == 16) == single)
    }

    /// SIM index slots the image uses (highest SIM index + 1): the `SIMS` entries needed.
    #[must_use]
    pub fn sim_slots(&self) -> usize {
        self.sim_entries()
            .map(|e| e.sim as usize + 1)
            .max()
            .unwrap_or(0)
    }

    /// Every SIM's entry: once per address (`SIM_V4`, `SIM_V6`), and once for each SIM without
    /// one.
    pub fn sim_entries(&self) -> impl Iterator<Item = &SimEntry> {
        let v4 = self.sims_v4.iter().map(|(_, e)| e);
        let v6 = self.sims_v6.iter().map(|(_, e)| e);
        v4.chain(v6).chain(&self.sims_unbound)
    }

    /// Number of map entries the image writes.
    #[must_use]
    pub fn entry_count(&self) -> usize {
        self.sims_v4.len()
            + self.sims_v6.len()
            + self.nets_v4.len()
            + self.nets_v6.len()
            + self.segments.len()
            + self.rules.len()
    }

    /// A sorted, readable dump: one line per entry, for snapshot tests and `policy check -v`.
    #[must_use]
    pub fn dump(&self) -> String {
        let mut out = String::new();
        for (key, e) in &self.sims_v4 {
            let _ = writeln!(out, "sim_v4 {} -> {}", Ipv4Addr::from(*key), sim(e));
        }
        for (key, e) in &self.sims_v6 {
            let mut addr = [0u8; 16];
            addr[..8].copy_from_slice(key);
            let _ = writeln!(out, "sim_v6 {}/64 -> {}", Ipv6Addr::from(addr), sim(e));
        }
        for e in &self.sims_unbound {
            let _ = writeln!(out, "sim (no address) -> {}", sim(e));
        }
        for n in &self.nets_v4 {
            let _ = writeln!(
                out,
                "net_v4 {}/{} -> {}",
                Ipv4Addr::from(n.addr),
                n.prefix_len,
                net(&n.entry)
            );
        }
        for n in &self.nets_v6 {
            let _ = writeln!(
                out,
                "net_v6 {}/{} -> {}",
                Ipv6Addr::from(n.addr),
                n.prefix_len,
                net(&n.entry)
            );
        }
        for (id, s) in self.segments.iter().enumerate() {
            let _ = write!(out, "segment {id} -> tiers={}", tiers(s.rule_tiers()));
            if s.inbound_tiers() != 0 {
                let _ = write!(out, " inbound_tiers={}", tiers(s.inbound_tiers()));
            }
            let _ = writeln!(out);
        }
        for (key, entry) in &self.rules {
            let subject = if key.subject & SUBJECT_SIM != 0 {
                format!("sim:{}", key.subject & !SUBJECT_SIM)
            } else if key.subject & SUBJECT_INBOUND != 0 {
                format!("inbound:{}", key.subject & !SUBJECT_INBOUND)
            } else {
                format!("segment:{}", key.subject)
            };
            let class = match key.class >> 30 {
                0 => format!("net:{}", key.class),
                1 => format!("segment:{}", key.class & !CLASS_SEGMENT),
                _ => format!("sim:{}", key.class & !CLASS_SIM),
            };
            let proto = if key.proto == PROTO_ANY {
                "any".to_owned()
            } else {
                key.proto.to_string()
            };
            let port = if key.port_bits == PORT_BITS_ANY {
                "any".to_owned()
            } else {
                let last = u32::from(key.port) + (1 << (16 - u32::from(key.port_bits))) - 1;
                format!("{}-{last}", key.port)
            };
            let _ = writeln!(
                out,
                "rule {subject} to={class} proto={proto} ports={port} -> rule {}",
                entry.rule
            );
        }
        out
    }
}

fn sim(e: &SimEntry) -> String {
    let mut flags = Vec::new();
    if e.flags & SIM_QUARANTINED != 0 {
        flags.push("quarantined");
    }
    if e.flags & SIM_DST_NAMED != 0 {
        flags.push("dst_named");
    }
    if e.flags & enforcer_common::maps::SIM_AUDIT != 0 {
        flags.push("audit");
    }
    format!(
        "sim={} segment={} flags={} tiers={}",
        e.sim,
        e.segment,
        if flags.is_empty() {
            "-".to_owned()
        } else {
            flags.join("|")
        },
        tiers(e.tiers)
    )
}

fn net(e: &NetEntry) -> String {
    if e.flags & NET_POOL != 0 {
        "pool".to_owned()
    } else {
        format!("class={}", e.class)
    }
}

fn tiers(t: u8) -> String {
    let names: Vec<&str> = [
        (TIER_PORT, "port"),
        (TIER_ANY_PORT, "any_port"),
        (TIER_ANY_PROTO, "any_proto"),
        (TIER_PORT_RANGE, "port_range"),
    ]
    .into_iter()
    .filter(|(bit, _)| t & bit != 0)
    .map(|(_, name)| name)
    .collect();
    if names.is_empty() {
        "-".to_owned()
    } else {
        names.join("|")
    }
}
