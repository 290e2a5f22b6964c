//! Policy compilation: a pure function from a [`ValidatedPolicy`] to a [`MapImage`], the exact
//! contents of the kernel maps. No I/O; the same policy always gives the same image.
//!
//! The image is generation-free: the loader stamps the generation it writes into every key.
//! How the tables fit together is described in `enforcer_common::maps`; in short:
//! - every distinct rule CIDR becomes a destination class, and a rule towards CIDR `r` is entered
//!   for every class nested in `r` (the LPM returns the most specific one, whose ancestors are
//!   exactly the rule CIDRs that contain the address);
//! - the port ranges of each protocol cut 0-65535 into elementary intervals (port classes); a
//!   rule with ports is entered once per port class its ranges cover;
//! - rules without ports, and non-port protocols, are entered once with `PORT_ANY`; rules for
//!   any protocol once with `PROTO_ANY`. When two rules produce the same key the first one (the
//!   lower rule id) keeps it.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    net::{Ipv4Addr, Ipv6Addr},
};

use enforcer_common::maps::{
    CLASS_NONE, CLASS_SEGMENT, CLASS_SIM, NET_POOL, NetEntry, PORT_ANY, PROTO_ANY, RuleEntry,
    RuleKey, SIM_DST_NAMED, SIM_QUARANTINED, SUBJECT_SIM, SegmentEntry, SimEntry, SimKeyV4,
    SimKeyV6, TIER_ANY_PORT, TIER_ANY_PROTO, TIER_PORT, port_slot,
};
use ipnetwork::IpNetwork;

use crate::policy::{Dest, Rule, SimState, ValidatedPolicy};

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

/// Ports `first..=last` of protocol slot `slot` have port class `class`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PortClassRange {
    /// `enforcer_common::maps::port_slot` of the protocol.
    pub slot: u32,
    /// First port.
    pub first: u16,
    /// Last port (inclusive).
    pub last: u16,
    /// Port class, >= 1.
    pub class: u16,
}

/// The contents of every policy map, sorted, generation 0.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MapImage {
    /// `SIM_V4`.
    pub sims_v4: Vec<(SimKeyV4, SimEntry)>,
    /// `SIM_V6`.
    pub sims_v6: Vec<(SimKeyV6, SimEntry)>,
    /// `NET_V4`.
    pub nets_v4: Vec<NetV4>,
    /// `NET_V6`.
    pub nets_v6: Vec<NetV6>,
    /// `PORT_CLASS`, as ranges; ports not listed have class 0.
    pub port_classes: Vec<PortClassRange>,
    /// `SEGMENTS`, one entry per segment id.
    pub segments: Vec<SegmentEntry>,
    /// `RULES`.
    pub rules: Vec<(RuleKey, RuleEntry)>,
}

/// The image plus what userspace needs to name things.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compiled {
    /// Map contents.
    pub image: MapImage,
    /// Rule id → where it was written and whose it is.
    pub rules: Vec<RuleInfo>,
}

/// Userspace description of a rule id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleInfo {
    /// `segment NAME` or `imsi NNN`.
    pub owner: String,
    /// `file:line` of the rule.
    pub origin: String,
    /// The rule's description.
    pub description: String,
}

/// Compilation limits that validation cannot see.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// Too many distinct port-range boundaries for 16-bit port classes.
    #[error(
        "the {proto} port ranges of the policy cut 0-65535 into more than 65535 classes; merge ranges"
    )]
    TooManyPortClasses {
        /// `tcp` or `udp`.
        proto: &'static str,
    },
}

/// Compile a validated policy.
pub fn compile(policy: &ValidatedPolicy) -> Result<Compiled, CompileError> {
    let classes = NetClasses::new(policy);
    let ports = PortClasses::new(policy)?;

    let mut rules: BTreeMap<RuleKey, RuleEntry> = BTreeMap::new();
    let mut infos = Vec::new();
    let mut segment_tiers = vec![0u8; policy.segments.len()];
    let mut sim_tiers = vec![0u8; policy.sims.len()];
    let mut named_sims = BTreeSet::new();

    let owned_rules = policy
        .segments
        .iter()
        .enumerate()
        .flat_map(|(id, segment)| {
            segment.rules.iter().map(move |rule| {
                let owner = format!("segment {}", segment.name);
                (u32::try_from(id).unwrap_or(u32::MAX), owner, rule)
            })
        })
        .chain(policy.sims.iter().enumerate().flat_map(|(index, sim)| {
            sim.rules.iter().map(move |rule| {
                let subject = SUBJECT_SIM | u32::try_from(index).unwrap_or(u32::MAX);
                (subject, format!("imsi {}", sim.imsi), rule)
            })
        }));

    for (subject, owner, rule) in owned_rules {
        let id = u32::try_from(infos.len()).unwrap_or(u32::MAX);
        infos.push(RuleInfo {
            owner,
            origin: rule.origin.clone(),
            description: rule.description.clone(),
        });
        let mut tiers = 0u8;
        for dest in &rule.to {
            if let Dest::Sim(index) = dest {
                named_sims.insert(*index);
            }
            for class in classes.of(dest) {
                for (proto, port_class, tier) in ports.keys_of(rule) {
                    tiers |= tier;
                    let key = RuleKey {
                        subject,
                        class,
                        port_class,
                        proto,
                        generation: 0,
                    };
                    rules.entry(key).or_insert(RuleEntry { rule: id });
                }
            }
        }
        if subject & SUBJECT_SIM != 0 {
            sim_tiers[(subject & !SUBJECT_SIM) as usize] |= tiers;
        } else {
            segment_tiers[subject as usize] |= tiers;
        }
    }

    let mut sims_v4 = Vec::new();
    let mut sims_v6 = Vec::new();
    for (index, sim) in policy.sims.iter().enumerate() {
        let index = u32::try_from(index).unwrap_or(u32::MAX);
        let mut flags = 0;
        if sim.state == SimState::Quarantined {
            flags |= SIM_QUARANTINED;
        }
        if named_sims.contains(&index) {
            flags |= SIM_DST_NAMED;
        }
        let entry = SimEntry {
            sim: index,
            segment: sim.segment,
            flags,
            tiers: sim_tiers[index as usize],
        };
        if let Some(addr) = sim.ipv4 {
            sims_v4.push((addr.octets(), entry));
        }
        if let Some(net) = sim.ipv6 {
            let octets = net.network().octets();
            let mut prefix = [0u8; 8];
            prefix.copy_from_slice(&octets[..8]);
            sims_v6.push((prefix, entry));
        }
    }
    sims_v4.sort_unstable();
    sims_v6.sort_unstable();

    let image = MapImage {
        sims_v4,
        sims_v6,
        nets_v4: classes.v4,
        nets_v6: classes.v6,
        port_classes: ports.ranges,
        segments: segment_tiers
            .into_iter()
            .map(|tiers| SegmentEntry {
                tiers: u32::from(tiers),
                _pad: 0,
            })
            .collect(),
        rules: rules.into_iter().collect(),
    };
    Ok(Compiled {
        image,
        rules: infos,
    })
}

/// Destination classes: one per distinct rule CIDR, plus pools.
struct NetClasses {
    v4: Vec<NetV4>,
    v6: Vec<NetV6>,
    /// Rule CIDR → its class.
    class_of: BTreeMap<IpNetwork, u32>,
}

impl NetClasses {
    fn new(policy: &ValidatedPolicy) -> Self {
        let all_rules = policy
            .segments
            .iter()
            .flat_map(|s| &s.rules)
            .chain(policy.sims.iter().flat_map(|s| &s.rules));
        let cidrs: BTreeSet<IpNetwork> = all_rules
            .flat_map(|rule| &rule.to)
            .filter_map(|dest| match dest {
                Dest::Net(net) => Some(*net),
                Dest::Segment(_) | Dest::Sim(_) => None,
            })
            .collect();
        let mut class_of = BTreeMap::new();
        let mut nets = Vec::new();
        for (i, net) in cidrs.iter().enumerate() {
            let class = u32::try_from(i + 1).unwrap_or(u32::MAX);
            class_of.insert(*net, class);
            nets.push((*net, NetEntry { class, flags: 0 }));
        }
        for pool in &policy.pools {
            nets.push((
                *pool,
                NetEntry {
                    class: CLASS_NONE,
                    flags: NET_POOL,
                },
            ));
        }
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for (net, entry) in nets {
            match net {
                IpNetwork::V4(net) => v4.push(NetV4 {
                    addr: net.network().octets(),
                    prefix_len: net.prefix(),
                    entry,
                }),
                IpNetwork::V6(net) => v6.push(NetV6 {
                    addr: net.network().octets(),
                    prefix_len: net.prefix(),
                    entry,
                }),
            }
        }
        v4.sort_unstable();
        v6.sort_unstable();
        Self { v4, v6, class_of }
    }

    /// The destination classes a rule towards `dest` must be entered for.
    fn of(&self, dest: &Dest) -> Vec<u32> {
        match dest {
            Dest::Segment(id) => vec![CLASS_SEGMENT | u32::from(*id)],
            Dest::Sim(index) => vec![CLASS_SIM | index],
            Dest::Net(outer) => self
                .class_of
                .iter()
                .filter(|(inner, _)| {
                    crate::policy::overlaps(outer, inner) && outer.prefix() <= inner.prefix()
                })
                .map(|(_, class)| *class)
                .collect(),
        }
    }
}

/// Port classes per protocol slot.
struct PortClasses {
    ranges: Vec<PortClassRange>,
}

impl PortClasses {
    fn new(policy: &ValidatedPolicy) -> Result<Self, CompileError> {
        let all_rules: Vec<&Rule> = policy
            .segments
            .iter()
            .flat_map(|s| &s.rules)
            .chain(policy.sims.iter().flat_map(|s| &s.rules))
            .collect();
        let mut ranges = Vec::new();
        for (proto, name) in [
            (enforcer_common::maps::IPPROTO_TCP, "tcp"),
            (enforcer_common::maps::IPPROTO_UDP, "udp"),
        ] {
            let Some(slot) = port_slot(proto) else {
                continue;
            };
            let used: Vec<(u16, u16)> = all_rules
                .iter()
                .filter(|rule| rule.protos.contains(&proto))
                .flat_map(|rule| rule.ports.iter().copied())
                .collect();
            // Elementary intervals: cut at every range start and after every range end.
            let cuts: BTreeSet<u32> = used
                .iter()
                .flat_map(|&(lo, hi)| [u32::from(lo), u32::from(hi) + 1])
                .collect();
            let cuts: Vec<u32> = cuts.into_iter().collect();
            let mut class = 0u32;
            for pair in cuts.windows(2) {
                let (first, end) = (pair[0], pair[1]);
                if used
                    .iter()
                    .any(|&(lo, hi)| u32::from(lo) <= first && first <= u32::from(hi))
                {
                    class += 1;
                    let class = u16::try_from(class)
                        .map_err(|_| CompileError::TooManyPortClasses { proto: name })?;
                    ranges.push(PortClassRange {
                        slot,
                        first: u16::try_from(first).unwrap_or(u16::MAX),
                        last: u16::try_from(end - 1).unwrap_or(u16::MAX),
                        class,
                    });
                }
            }
        }
        Ok(Self { ranges })
    }

    /// (protocol, port class, tier) for every key a rule needs per destination class.
    fn keys_of(&self, rule: &Rule) -> Vec<(u8, u16, u8)> {
        if rule.protos.is_empty() {
            return vec![(PROTO_ANY, PORT_ANY, TIER_ANY_PROTO)];
        }
        let mut keys = Vec::new();
        for &proto in &rule.protos {
            match port_slot(proto) {
                Some(slot) if !rule.ports.is_empty() => {
                    for range in self.ranges.iter().filter(|r| r.slot == slot) {
                        if rule
                            .ports
                            .iter()
                            .any(|&(lo, hi)| lo <= range.first && range.last <= hi)
                        {
                            keys.push((proto, range.class, TIER_PORT));
                        }
                    }
                }
                _ => keys.push((proto, PORT_ANY, TIER_ANY_PORT)),
            }
        }
        keys
    }
}

impl MapImage {
    /// SIM index slots the image uses (highest SIM index + 1): the `SIM_STATS` entries needed.
    #[must_use]
    pub fn sim_slots(&self) -> usize {
        let v4 = self.sims_v4.iter().map(|(_, e)| e.sim);
        let v6 = self.sims_v6.iter().map(|(_, e)| e.sim);
        v4.chain(v6).map(|sim| sim as usize + 1).max().unwrap_or(0)
    }

    /// Number of map entries the image writes.
    #[must_use]
    pub fn entry_count(&self) -> usize {
        self.sims_v4.len()
            + self.sims_v6.len()
            + self.nets_v4.len()
            + self.nets_v6.len()
            + self
                .port_classes
                .iter()
                .map(|r| usize::from(r.last - r.first) + 1)
                .sum::<usize>()
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
        for r in &self.port_classes {
            let proto = if r.slot == 0 { "tcp" } else { "udp" };
            let _ = writeln!(
                out,
                "port_class {proto} {}-{} -> {}",
                r.first, r.last, r.class
            );
        }
        for (id, s) in self.segments.iter().enumerate() {
            let _ = writeln!(out, "segment {id} -> tiers={}", tiers(s.tiers as u8));
        }
        for (key, entry) in &self.rules {
            let subject = if key.subject & SUBJECT_SIM != 0 {
                format!("sim:{}", key.subject & !SUBJECT_SIM)
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
            let port = if key.port_class == PORT_ANY {
                "any".to_owned()
            } else {
                key.port_class.to_string()
            };
            let _ = writeln!(
                out,
                "rule {subject} to={class} proto={proto} port_class={port} -> rule {}",
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
