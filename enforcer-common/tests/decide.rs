//! `decide` and the rule probe order: case tables for the precedence list, and properties that
//! must hold for any inputs.

use std::collections::HashMap;

use enforcer_common::{
    DropReason, PassReason, Verdict,
    decide::{Dst, DstKind, Inputs, PacketMeta, Src, SrcKind, Tables, decide, identify, v4_in_16},
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

/// A rule table that records what was probed.
#[derive(Default)]
struct Recorder {
    rules: HashMap<RuleKey, u32>,
    probes: std::cell::RefCell<Vec<RuleKey>>,
}

impl RuleTable for Recorder {
    fn rule(&self, key: &RuleKey) -> Option<u32> {
        self.probes.borrow_mut().push(*key);
        self.rules.get(key).copied()
    }
}

fn key(subject: u32, class: u32, proto: u8, port_class: u16) -> RuleKey {
    RuleKey {
        subject,
        class,
        port_class,
        proto,
        generation: 0,
    }
}

#[test]
fn specific_port_is_probed_first_and_tiers_skip_probes() {
    let mut table = Recorder::default();
    table.rules.insert(key(1, 5, IPPROTO_TCP, 3), 10);
    table.rules.insert(key(1, 5, IPPROTO_TCP, PORT_ANY), 11);
    table.rules.insert(key(1, 5, PROTO_ANY, PORT_ANY), 12);
    let probe = Probe {
        generation: 0,
        proto: IPPROTO_TCP,
        port_class: 3,
    };
    let all = TIER_PORT | TIER_ANY_PORT | TIER_ANY_PROTO;
    assert_eq!(first_match(&table, 1, all, 5, &probe), 10);
    assert_eq!(
        first_match(&table, 1, TIER_ANY_PORT | TIER_ANY_PROTO, 5, &probe),
        11
    );
    assert_eq!(first_match(&table, 1, TIER_ANY_PROTO, 5, &probe), 12);
    table.probes.borrow_mut().clear();
    assert_eq!(first_match(&table, 1, 0, 5, &probe), NO_RULE);
    assert!(table.probes.borrow().is_empty(), "no tiers, no probes");
    // No ports (ICMP, later fragments): the port tier is skipped.
    let portless = Probe {
        port_class: PORT_ANY,
        ..probe
    };
    assert_eq!(first_match(&table, 1, all, 5, &portless), 11);
}

/// Tables with one SIM and arbitrary rules, for property tests of `identify`.
struct World {
    rules: Recorder,
    segment_tiers: u8,
}

impl RuleTable for World {
    fn rule(&self, key: &RuleKey) -> Option<u32> {
        self.rules.rule(key)
    }
}

impl Tables for World {
    fn generation(&self) -> u8 {
        0
    }
    fn sim_v4(&self, addr: [u8; 4]) -> Option<SimEntry> {
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
            _ => None,
        }
    }
    fn sim_v6(&self, _: [u8; 8]) -> Option<SimEntry> {
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
    fn segment_tiers(&self, _: u8, _: u16) -> u8 {
        self.segment_tiers
    }
    fn port_class(&self, _: u8, _: u32, port: u16) -> u16 {
        port % 4
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
        let mut world = World { rules: Recorder::default(), segment_tiers: TIER_PORT | TIER_ANY_PORT | TIER_ANY_PROTO };
        for (i, (subject, class, p, pc)) in rules.iter().enumerate() {
            let class = match class { 0 => 1, 1 => CLASS_SEGMENT | 1, 2 => CLASS_SIM | 1, _ => 99 };
            world.rules.rules.insert(key(*subject, class, *p, if *p == 0 { 0 } else { *pc }), i as u32);
        }
        let meta = PacketMeta { v6: false, src: v4_in_16(src), dst: v4_in_16(dst), proto, dport, has_ports: proto != 1, later_fragment: false, ifindex: 1 };
        let inputs = identify(&world, &meta);
        let verdict = decide(&inputs);
        if src == [10, 0, 0, 9] {
            prop_assert_eq!(verdict, Verdict::Drop(DropReason::Spoofed));
        }
        if let Verdict::Pass(PassReason::Rule, id) = verdict {
            let (subject, class, p, pc) = rules[id as usize];
            // The matched rule is the sender's segment's (SIM 0 is in segment 0 and has no
            // rules of its own), for its protocol or any, for its port class or any port.
            prop_assert_eq!(subject, 0, "a rule of another subject matched");
            prop_assert!(p == PROTO_ANY || p == proto, "a rule for protocol {} matched {}", p, proto);
            let port_class = if p == PROTO_ANY { PORT_ANY } else { pc };
            prop_assert!(
                port_class == PORT_ANY || (meta.has_ports && port_class == dport % 4),
                "a rule for port class {} matched port {}", port_class, dport
            );
            match dst {
                [10, 0, 0, 2] => prop_assert!(class == 1 || class == 2, "lateral passed by a CIDR rule"),
                [10, _, _, _] => prop_assert!(false, "pool hole reached"),
                [192, _, _, _] => prop_assert_eq!(class, 0),
                _ => prop_assert!(false, "no class, yet a rule matched"),
            }
        }
        // The number of rule probes is bounded whatever the rules.
        prop_assert!(world.rules.probes.borrow().len() <= 12);
    }
}
