//! `decide` and the rule probe order: case tables for the precedence list, and properties that
//! must hold for any inputs.

use std::collections::HashMap;

use enforcer_common::{
    DropReason, PassReason, Verdict,
    decide::{
        DenyKey, Dst, DstKind, Inputs, PacketMeta, Src, SrcKind, Tables, decide, identify, v4_in_16,
    },
    maps::*,
    rules::{NO_RULE, Probe, RuleTable, first_match},
};
use proptest::prelude::*;

fn sim(flags: u8, tiers: u8) -> SimEntry {
    SimEntry {
        sim: 7,
        segment: 2,
        flags,
        tiers,
    }
}

fn inputs(src: Src, dst: Dst, rule: Option<u32>) -> Inputs {
    Inputs {
        src,
        dst,
        rule: rule.unwrap_or(NO_RULE),
        later_fragment: false,
        drop_non_pool: false,
    }
}

const NOBODY: SimEntry = SimEntry {
    sim: 0,
    segment: 0,
    flags: 0,
    tiers: 0,
};
const OUTSIDE: Src = Src {
    kind: SrcKind::Outside,
    sim: NOBODY,
};
const SPOOFED: Src = Src {
    kind: SrcKind::Spoofed,
    sim: NOBODY,
};
const POOL_HOLE: Dst = Dst {
    kind: DstKind::PoolNoSim,
    class: CLASS_NONE,
    sim: NOBODY,
};

fn from_sim(sim: SimEntry) -> Src {
    Src {
        kind: SrcKind::Sim,
        sim,
    }
}

fn net(class: u32) -> Dst {
    Dst {
        kind: DstKind::Net,
        class,
        sim: NOBODY,
    }
}

fn to_sim(sim: SimEntry) -> Dst {
    Dst {
        kind: DstKind::Sim,
        class: CLASS_NONE,
        sim,
    }
}

#[test]
fn precedence_table() {
    use DropReason::*;
    let active = from_sim(sim(0, 0));
    let quarantined = from_sim(sim(SIM_QUARANTINED, 0));
    let cases = [
        (
            "outside passes",
            inputs(OUTSIDE, net(3), None),
            Verdict::Pass(PassReason::NonPool, 0),
        ),
        (
            "outside dropped on a core link",
            Inputs {
                drop_non_pool: true,
                ..inputs(OUTSIDE, net(3), None)
            },
            Verdict::Drop(NonPool),
        ),
        (
            "spoofed beats a rule",
            inputs(SPOOFED, net(3), Some(1)),
            Verdict::Drop(Spoofed),
        ),
        (
            "quarantine beats a rule",
            inputs(quarantined, net(3), Some(1)),
            Verdict::Drop(Quarantined),
        ),
        (
            "an IMEI mismatch beats a rule",
            inputs(from_sim(sim(SIM_IMEI_MISMATCH, 0)), net(3), Some(1)),
            Verdict::Drop(ImeiMismatch),
        ),
        (
            "an IMEI mismatch beats audit mode",
            inputs(
                from_sim(sim(SIM_IMEI_MISMATCH | SIM_AUDIT, 0)),
                net(3),
                None,
            ),
            Verdict::Drop(ImeiMismatch),
        ),
        (
            "a quarantine is named before an IMEI mismatch",
            inputs(
                from_sim(sim(SIM_QUARANTINED | SIM_IMEI_MISMATCH, 0)),
                net(3),
                Some(1),
            ),
            Verdict::Drop(Quarantined),
        ),
        (
            "audit mode opens nothing from outside toward a device of an IMEI mismatch",
            inputs(OUTSIDE, to_sim(sim(SIM_IMEI_MISMATCH | SIM_AUDIT, 0)), None),
            Verdict::Pass(PassReason::NonPool, 0),
        ),
        (
            "rule allows",
            inputs(active, net(3), Some(4)),
            Verdict::Pass(PassReason::Rule, 4),
        ),
        (
            "a rule allows lateral",
            inputs(active, to_sim(sim(0, 0)), Some(4)),
            Verdict::Pass(PassReason::Rule, 4),
        ),
        (
            "lateral to a sim",
            inputs(active, to_sim(sim(0, 0)), None),
            Verdict::Drop(Lateral),
        ),
        (
            "lateral to a pool hole",
            inputs(active, POOL_HOLE, None),
            Verdict::Drop(Lateral),
        ),
        (
            "later fragment",
            Inputs {
                later_fragment: true,
                ..inputs(active, net(3), None)
            },
            Verdict::Drop(Fragment),
        ),
        (
            "lateral beats fragment",
            Inputs {
                later_fragment: true,
                ..inputs(active, POOL_HOLE, None)
            },
            Verdict::Drop(Lateral),
        ),
        (
            "default deny",
            inputs(active, net(3), None),
            Verdict::Drop(NoRule),
        ),
        (
            "default deny, no class",
            inputs(active, net(CLASS_NONE), None),
            Verdict::Drop(NoRule),
        ),
    ];
    for (name, inputs, expected) in cases {
        assert_eq!(decide(&inputs), expected, "{name}");
    }
}

#[test]
fn verdict_slots_are_distinct_and_stable() {
    let mut slots: Vec<u32> = PassReason::ALL
        .iter()
        .map(|r| Verdict::Pass(*r, 0).stats_slot())
        .collect();
    slots.extend(
        DropReason::ALL
            .iter()
            .map(|r| Verdict::Drop(*r).stats_slot()),
    );
    let unique: std::collections::BTreeSet<_> = slots.iter().collect();
    assert_eq!(unique.len(), slots.len());
    assert!(slots.iter().all(|s| *s < VERDICT_SLOTS));
    // Dashboards key on these numbers: changing one is a breaking change.
    assert_eq!(Verdict::Drop(DropReason::NoRule).stats_slot(), 8);
    assert_eq!(Verdict::Drop(DropReason::NonPool).stats_slot(), 14);
    assert_eq!(Verdict::Drop(DropReason::SourceRoute).stats_slot(), 15);
    assert_eq!(Verdict::Drop(DropReason::NotIp).stats_slot(), 16);
    assert_eq!(Verdict::Pass(PassReason::Rule, 9).stats_slot(), 1);
}

/// A rule table that records what was looked up; its entries match by longest prefix.
#[derive(Default)]
struct Recorder {
    rules: HashMap<RuleKey, u32>,
    probes: std::cell::RefCell<Vec<RuleKey>>,
}

impl RuleTable for Recorder {
    fn port_rule(&self, _generation: u8, key: &RuleKey) -> Option<u32> {
        self.probes.borrow_mut().push(*key);
        self.rules.get(key).copied().filter(|_| key.port_bits == 16)
    }

    fn rule(&self, _generation: u8, key: &RuleKey) -> Option<u32> {
        self.probes.borrow_mut().push(*key);
        let data = key.lpm_data(0);
        self.rules
            .iter()
            .filter(|(entry, _)| {
                let bits = entry.prefix_len();
                let entry_data = entry.lpm_data(0);
                bits <= key.prefix_len()
                    && (0..bits as usize).all(|bit| {
                        let mask = 0x80 >> (bit % 8);
                        entry_data[bit / 8] & mask == data[bit / 8] & mask
                    })
            })
            .max_by_key(|(entry, _)| entry.prefix_len())
            .map(|(_, rule)| *rule)
    }
}

fn key(subject: u32, class: u32, proto: u8, port: Option<(u16, u8)>) -> RuleKey {
    let (port, port_bits) = port.map_or((0, PORT_BITS_ANY), |(port, bits)| (port, bits));
    RuleKey {
        subject,
        class,
        proto,
        port_bits: if proto == PROTO_ANY {
            PORT_BITS_ANY
        } else {
            port_bits
        },
        port,
    }
}

#[test]
fn the_most_specific_entry_wins_and_tiers_skip_lookups() {
    let mut table = Recorder::default();
    table
        .rules
        .insert(key(1, 5, IPPROTO_TCP, Some((443, 16))), 10);
    table.rules.insert(key(1, 5, IPPROTO_TCP, Some((0, 6))), 13); // ports 0-1023
    table.rules.insert(key(1, 5, IPPROTO_TCP, None), 11);
    table.rules.insert(key(1, 5, PROTO_ANY, None), 12);
    let probe = |proto, dport, has_ports| Probe {
        generation: 0,
        proto,
        dport,
        has_ports,
        single_port: has_ports,
    };
    let all = TIER_PORT | TIER_PORT_RANGE | TIER_ANY_PORT | TIER_ANY_PROTO;
    assert_eq!(
        first_match(&table, 1, all, 5, &probe(IPPROTO_TCP, 443, true)),
        10
    );
    assert_eq!(
        first_match(&table, 1, all, 5, &probe(IPPROTO_TCP, 80, true)),
        13
    );
    assert_eq!(
        first_match(&table, 1, all, 5, &probe(IPPROTO_TCP, 8080, true)),
        11
    );
    assert_eq!(
        first_match(&table, 1, all, 5, &probe(IPPROTO_UDP, 53, true)),
        12
    );
    assert_eq!(
        first_match(&table, 1, all, 6, &probe(IPPROTO_TCP, 443, true)),
        NO_RULE
    );
    // No ports (ICMP, later fragments): port blocks are never seen.
    assert_eq!(
        first_match(&table, 1, all, 5, &probe(IPPROTO_TCP, 0, false)),
        11
    );
    // A single-port rule costs one (hash) lookup; anything else at most two.
    table.probes.borrow_mut().clear();
    first_match(&table, 1, all, 5, &probe(IPPROTO_TCP, 443, true));
    assert_eq!(table.probes.borrow().len(), 1);
    table.probes.borrow_mut().clear();
    first_match(&table, 1, all, 5, &probe(IPPROTO_TCP, 80, true));
    assert_eq!(table.probes.borrow().len(), 2);
    // A port no single-port rule names (`PORTS_USED`) skips `PORT_RULES`.
    table.probes.borrow_mut().clear();
    let unnamed = Probe {
        single_port: false,
        ..probe(IPPROTO_TCP, 80, true)
    };
    assert_eq!(first_match(&table, 1, all, 5, &unnamed), 13);
    assert_eq!(table.probes.borrow().len(), 1, "the trie only");
    // Without the range tier, a port outside the single ports looks up at the protocol level.
    let no_ranges = TIER_PORT | TIER_ANY_PORT | TIER_ANY_PROTO;
    assert_eq!(
        first_match(&table, 1, no_ranges, 5, &probe(IPPROTO_TCP, 80, true)),
        11
    );
    // No tiers, or only port rules for a packet without ports: no lookup at all.
    table.probes.borrow_mut().clear();
    assert_eq!(
        first_match(&table, 1, 0, 5, &probe(IPPROTO_TCP, 443, true)),
        NO_RULE
    );
    assert_eq!(
        first_match(&table, 1, TIER_PORT, 5, &probe(IPPROTO_ICMP, 0, false)),
        NO_RULE
    );
    assert!(table.probes.borrow().is_empty(), "no tiers, no lookups");
}

/// Tables with one SIM and arbitrary rules, for property tests of `identify`.
struct World {
    rules: Recorder,
    segment_tiers: u8,
}

impl RuleTable for World {
    fn port_rule(&self, generation: u8, key: &RuleKey) -> Option<u32> {
        self.rules.port_rule(generation, key)
    }
    fn rule(&self, generation: u8, key: &RuleKey) -> Option<u32> {
        self.rules.rule(generation, key)
    }
}

impl Tables for World {
    fn generation(&self) -> u8 {
        0
    }
    fn sim_v4(&self, _: u8, addr: [u8; 4]) -> Option<SimEntry> {
        match addr {
            [10, 0, 0, 1] => Some(SimEntry {
                sim: 0,
                segment: 0,
                flags: 0,
                tiers: 0,
            }),
            [10, 0, 0, 2] => Some(SimEntry {
                sim: 1,
                segment: 1,
                flags: SIM_DST_NAMED,
                tiers: 0,
            }),
            // Another SIM of segment 0 with neither flags nor rules of its own.
            [10, 0, 0, 3] => Some(SimEntry {
                sim: 2,
                segment: 0,
                flags: 0,
                tiers: 0,
            }),
            _ => None,
        }
    }
    fn sim_v6(&self, _: u8, _: [u8; 8]) -> Option<SimEntry> {
        None
    }
    fn net_v4(&self, _: u8, addr: [u8; 4]) -> Option<NetEntry> {
        match addr[0] {
            10 => Some(NetEntry {
                class: CLASS_NONE,
                flags: NET_POOL,
            }),
            192 => Some(NetEntry { class: 1, flags: 0 }),
            _ => None,
        }
    }
    fn net_v6(&self, _: u8, _: [u8; 16]) -> Option<NetEntry> {
        None
    }
    fn single_port_used(&self, _: u8, _: u8, _: u16) -> bool {
        true
    }
    fn segment(&self, _: u8, _: u16) -> SegmentEntry {
        SegmentEntry::new(self.segment_tiers, 0)
    }
    fn iface_flags(&self, _: u32) -> u32 {
        0
    }
}

proptest! {
    /// Whatever rules exist, a packet from a pool address without a SIM is never passed, and
    /// traffic towards a pool is never passed unless a rule names its segment or SIM class.
    #[test]
    fn no_rule_lets_spoofed_or_unnamed_lateral_through(
        rules in proptest::collection::vec((0u32..3, 0u32..4, prop_oneof![Just(0u8), Just(6u8), Just(17u8)], 0u16..4), 0..20),
        src in prop_oneof![Just([10u8, 0, 0, 1]), Just([10u8, 0, 0, 9])],
        dst in prop_oneof![Just([10u8, 0, 0, 2]), Just([10u8, 0, 0, 7]), Just([192u8, 0, 2, 1]), Just([8u8, 8, 8, 8])],
        proto in prop_oneof![Just(6u8), Just(17u8), Just(1u8)],
        dport in any::<u16>(),
    ) {
        let mut world = World { rules: Recorder::default(), segment_tiers: TIER_PORT | TIER_PORT_RANGE | TIER_ANY_PORT | TIER_ANY_PROTO };
        for (i, (subject, class, p, ports)) in rules.iter().enumerate() {
            let class = match class { 0 => 1, 1 => CLASS_SEGMENT | 1, 2 => CLASS_SIM | 1, _ => 99 };
            // Any port, one port, ports 0-1023, ports 0-65535.
            let block = [None, Some((443, 16)), Some((0, 6)), Some((0, 0))][*ports as usize];
            world.rules.rules.entry(key(*subject, class, *p, block)).or_insert(i as u32);
        }
        let meta = PacketMeta { v6: false, src: v4_in_16(src), dst: v4_in_16(dst), proto, dport, sport: 0, l4_flags: 0, has_ports: proto != 1, later_fragment: false, ifindex: 1, reversed: false, session_absent: false };
        let inputs = identify(&world, &meta);
        let verdict = decide(&inputs);
        if src == [10, 0, 0, 9] {
            prop_assert_eq!(verdict, Verdict::Drop(DropReason::Spoofed));
        }
        if let Verdict::Pass(PassReason::Rule, id) = verdict {
            let (subject, class, p, ports) = rules[id as usize];
            // The matched rule is the sender's segment's (SIM 0 is in segment 0 and has no
            // rules of its own), for its protocol or any, for a port block holding the port or
            // any port.
            prop_assert_eq!(subject, 0, "a rule of another subject matched");
            prop_assert!(p == PROTO_ANY || p == proto, "a rule for protocol {} matched {}", p, proto);
            let holds = match ports {
                _ if p == PROTO_ANY => true,
                0 => true,
                1 => meta.has_ports && dport == 443,
                2 => meta.has_ports && dport <= 1023,
                _ => meta.has_ports,
            };
            prop_assert!(holds, "a rule for port block {} matched port {}", ports, dport);
            match dst {
                [10, 0, 0, 2] => prop_assert!(class == 1 || class == 2, "lateral passed by a CIDR rule"),
                [10, _, _, _] => prop_assert!(false, "pool hole reached"),
                [192, _, _, _] => prop_assert_eq!(class, 0),
                _ => prop_assert!(false, "no class, yet a rule matched"),
            }
        }
        // The number of rule lookups is bounded whatever the rules: 2 subjects × 2 classes ×
        // (hash, trie).
        prop_assert!(world.rules.probes.borrow().len() <= 8);
    }

    /// The deny cache's premise (`DenyKey`): a denial `DenyKey::of` lets the kernel remember
    /// is the verdict of every packet with the same key from any SIM of the segment with
    /// neither flags nor rules of its own, whatever its source port and TCP flags.
    #[test]
    fn a_remembered_denial_is_the_verdict_of_its_whole_kind(
        rules in proptest::collection::vec((0u32..3, 0u32..4, prop_oneof![Just(0u8), Just(6u8), Just(17u8)], 0u16..4), 0..20),
        dst in prop_oneof![Just([10u8, 0, 0, 2]), Just([10u8, 0, 0, 7]), Just([192u8, 0, 2, 1]), Just([8u8, 8, 8, 8])],
        proto in prop_oneof![Just(6u8), Just(17u8)],
        dport in prop_oneof![Just(443u16), Just(80u16), any::<u16>()],
        sports in (any::<u16>(), any::<u16>()),
        flags in (any::<u8>(), any::<u8>()),
    ) {
        let mut world = World { rules: Recorder::default(), segment_tiers: TIER_PORT | TIER_PORT_RANGE | TIER_ANY_PORT | TIER_ANY_PROTO };
        for (i, (subject, class, p, ports)) in rules.iter().enumerate() {
            let class = match class { 0 => 1, 1 => CLASS_SEGMENT | 1, 2 => CLASS_SIM | 1, _ => 99 };
            let block = [None, Some((443, 16)), Some((0, 6)), Some((0, 0))][*ports as usize];
            world.rules.rules.entry(key(*subject, class, *p, block)).or_insert(i as u32);
        }
        let meta = |src: [u8; 4], sport: u16, l4_flags: u8| PacketMeta { v6: false, src: v4_in_16(src), dst: v4_in_16(dst), proto, dport, sport, l4_flags, has_ports: true, later_fragment: false, ifindex: 1, reversed: false, session_absent: true };
        let first = meta([10, 0, 0, 1], sports.0, flags.0);
        let inputs = identify(&world, &first);
        let verdict = decide(&inputs);
        let Some(remembered) = DenyKey::of(&first, &inputs.src, verdict, 5, 1) else {
            prop_assert_ne!(verdict, Verdict::Drop(DropReason::NoRule), "a no_rule drop of a plain SIM is remembered");
            return Ok(());
        };
        prop_assert_eq!(remembered, DenyKey::new(5, 1, 1, dst, 0, proto, dport));
        prop_assert!(remembered.slot() < DenyKey::SLOTS);
        let other = meta([10, 0, 0, 3], sports.1, flags.1);
        let inputs = identify(&world, &other);
        prop_assert_eq!(decide(&inputs), verdict);
        prop_assert_eq!(DenyKey::of(&other, &inputs.src, verdict, 5, 1), Some(remembered));
        // Never for a SIM with flags or rules of its own, nor for another verdict.
        for (flags, tiers) in [(SIM_QUARANTINED, 0), (SIM_AUDIT, 0), (SIM_DST_NAMED, 0), (0, TIER_PORT)] {
            let sender = Src { kind: SrcKind::Sim, sim: SimEntry { flags, tiers, ..inputs.src.sim } };
            prop_assert_eq!(DenyKey::of(&other, &sender, verdict, 5, 1), None);
        }
        prop_assert_eq!(DenyKey::of(&other, &inputs.src, Verdict::Drop(DropReason::Lateral), 5, 1), None);
        let reversed = PacketMeta { reversed: true, ..other };
        prop_assert_eq!(DenyKey::of(&reversed, &inputs.src, verdict, 5, 1), None);
    }
}
