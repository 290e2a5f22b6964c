//! The oracle (README's semantics over the validated policy) against the compiled image in the
//! reference model, on random policies and packets: a compiler or precedence mistake that the
//! kernel and the reference would share shows up here, shrunk to a small policy.
//!
//! No kernel needed; the differential test adds the kernel as the third opinion.

use std::{collections::HashMap, fmt::Write as _, net::Ipv6Addr, path::Path};

use enforcer::{compile, oracle, policy, reference::Reference};
use enforcer_common::{
    decide::PacketMeta,
    maps::{IFACE_DROP_NON_POOL, IPPROTO_TCP, IPPROTO_UDP},
};
use proptest::prelude::*;

const V4_NETS: &[&str] = &[
    "0.0.0.0/0",
    "10.0.0.0/8",
    "192.0.2.0/24",
    "192.0.2.128/25",
    "192.0.2.7/32",
    "198.51.100.0/24",
];
const V6_NETS: &[&str] = &[
    "::/0",
    "2001:db8::/32",
    "2001:db8:1::/48",
    "2001:db8::53/128",
];
const PROTOS: &[&str] = &[
    "any",
    "tcp",
    "udp",
    "[\"tcp\", \"udp\"]",
    "icmp",
    "icmpv6",
    "47",
];
const PORTS: &[(u16, u16)] = &[
    (22, 22),
    (53, 53),
    (443, 443),
    (1000, 2000),
    (1500, 1600),
    (1, 65535),
    (65535, 65535),
];

#[derive(Debug, Clone)]
enum Dest {
    Net(bool, usize),
    Segment(usize),
    Sim(usize),
}

#[derive(Debug, Clone)]
struct Rule {
    to: Vec<Dest>,
    proto: usize,
    ports: Vec<usize>,
}

#[derive(Debug, Clone)]
struct Sim {
    v4: Option<(u8, u16)>,
    v6: bool,
    segment: usize,
    quarantined: bool,
    rules: Vec<Rule>,
}

#[derive(Debug, Clone)]
struct Policy {
    segments: Vec<Vec<Rule>>,
    sims: Vec<Sim>,
}

fn rule() -> impl Strategy<Value = Rule> {
    let dest = prop_oneof![
        3 => (any::<bool>(), 0usize..6).prop_map(|(v6, i)| Dest::Net(v6, i)),
        1 => (0usize..4).prop_map(Dest::Segment),
        1 => (0usize..8).prop_map(Dest::Sim),
    ];
    (
        prop::collection::vec(dest, 1..3),
        0..PROTOS.len(),
        prop::collection::vec(0..PORTS.len(), 0..3),
    )
        .prop_map(|(to, proto, ports)| Rule { to, proto, ports })
}

fn policy_strategy() -> impl Strategy<Value = Policy> {
    let sim = (
        prop::option::of((0u8..2, 1u16..600)),
        any::<bool>(),
        0usize..4,
        prop::bool::weighted(0.1),
        prop::collection::vec(rule(), 0..2),
    )
        .prop_map(|(v4, v6, segment, quarantined, rules)| Sim {
            v4,
            v6,
            segment,
            quarantined,
            rules,
        });
    (
        prop::collection::vec(prop::collection::vec(rule(), 0..5), 1..4),
        prop::collection::vec(sim, 1..8),
    )
        .prop_map(|(segments, sims)| Policy { segments, sims })
}

fn v4_of(pool: u8, host: u16) -> String {
    format!("10.{}.{}.{}", 64 + pool, host >> 8, host & 0xff)
}

impl Policy {
    /// TOML text; destinations that would be invalid (unknown names, a family the protocol
    /// cannot reach) are dropped or mended, so nearly every case validates.
    fn text(&self) -> String {
        let segments = self.segments.len();
        let sims = self.sims.len();
        let mut text =
            String::from("pools = [\"10.64.0.0/16\", \"10.65.0.0/16\", \"fd00:64::/48\"]\n");
        let render = |rule: &Rule| {
            let proto = PROTOS[rule.proto];
            let mut to: Vec<String> = rule
                .to
                .iter()
                .filter_map(|dest| match *dest {
                    Dest::Net(false, i) => Some(V4_NETS[i % V4_NETS.len()].to_owned()),
                    Dest::Net(true, i) => Some(V6_NETS[i % V6_NETS.len()].to_owned()),
                    Dest::Segment(s) => (s < segments).then(|| format!("s{s}")),
                    Dest::Sim(i) => (i < sims).then(|| format!("imsi:00101{:010}", i + 1)),
                })
                .collect();
            // A rule must be able to match: ICMP needs an IPv4 destination, ICMPv6 an IPv6 one.
            if proto == "icmp" {
                to.retain(|d| !d.contains(':') || d.starts_with("imsi:"));
                to.push("192.0.2.0/24".to_owned());
            } else if proto == "icmpv6" {
                to.retain(|d| d.contains(':') || !d.contains('.'));
                to.push("2001:db8::/32".to_owned());
            }
            if to.is_empty() {
                to.push("198.51.100.0/24".to_owned());
            }
            to.sort();
            to.dedup();
            let quoted: Vec<String> = to.iter().map(|d| format!("\"{d}\"")).collect();
            let proto_toml = if proto.starts_with('[') || proto == "47" {
                proto.to_owned()
            } else {
                format!("\"{proto}\"")
            };
            let mut line = format!("  {{ to = [{}], proto = {proto_toml}", quoted.join(", "));
            if matches!(proto, "tcp" | "udp" | "[\"tcp\", \"udp\"]") && !rule.ports.is_empty() {
                let ports: Vec<String> = rule
                    .ports
                    .iter()
                    .map(|&i| {
                        let (lo, hi) = PORTS[i];
                        if lo == hi {
                            format!("{lo}")
                        } else {
                            format!("\"{lo}-{hi}\"")
                        }
                    })
                    .collect();
                let _ = write!(line, ", ports = [{}]", ports.join(", "));
            }
            line.push_str(" },\n");
            line
        };
        for (i, rules) in self.segments.iter().enumerate() {
            let _ = writeln!(text, "\n[[segments]]\nname = \"s{i}\"\nrules = [");
            for rule in rules {
                text.push_str(&render(rule));
            }
            text.push_str("]\n");
        }
        let mut used = Vec::new();
        for (i, sim) in self.sims.iter().enumerate() {
            let _ = writeln!(
                text,
                "\n[[sims]]\nimsi = \"00101{:010}\"\nsegment = \"s{}\"",
                i + 1,
                sim.segment % segments
            );
            let v4 = sim
                .v4
                .map(|(p, h)| v4_of(p, h))
                .filter(|a| !used.contains(a));
            if let Some(addr) = &v4 {
                let _ = writeln!(text, "ipv4 = \"{addr}\"");
                used.push(addr.clone());
            }
            if sim.v6 || v4.is_none() {
                let _ = writeln!(text, "ipv6 = \"fd00:64:0:{i:x}::/64\"");
            }
            if sim.quarantined {
                text.push_str("state = \"quarantined\"\n");
            }
            if !sim.rules.is_empty() {
                text.push_str("rules = [\n");
                for rule in &sim.rules {
                    text.push_str(&render(rule));
                }
                text.push_str("]\n");
            }
        }
        text
    }
}

/// A packet, as indices resolved against the policy's addresses at test time.
#[derive(Debug, Clone)]
struct Packet {
    v6: bool,
    src: (u8, usize, u128),
    dst: (u8, usize, u128),
    proto: usize,
    dport: usize,
    later_fragment: bool,
    core_facing: bool,
}

fn packet() -> impl Strategy<Value = Packet> {
    let addr = (0u8..5, any::<usize>(), any::<u128>());
    (
        any::<bool>(),
        addr.clone(),
        addr,
        0usize..6,
        0usize..8,
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.3),
    )
        .prop_map(
            |(v6, src, dst, proto, dport, later_fragment, core_facing)| Packet {
                v6,
                src,
                dst,
                proto,
                dport,
                later_fragment,
                core_facing,
            },
        )
}

fn address(
    policy: &policy::ValidatedPolicy,
    v6: bool,
    (kind, index, random): (u8, usize, u128),
) -> [u8; 16] {
    let mut out = [0u8; 16];
    if v6 {
        let base: u128 = match kind {
            0 => {
                let with: Vec<_> = policy.sims.iter().filter_map(policy::Sim::ipv6).collect();
                if with.is_empty() {
                    random
                } else {
                    let net = with[index % with.len()];
                    u128::from(net.network()) | (random & u128::from(u64::MAX))
                }
            }
            1 => u128::from("fd00:64::".parse::<Ipv6Addr>().unwrap()) | (random >> 48),
            2 | 3 => {
                let net: ipnetwork::Ipv6Network = V6_NETS[index % V6_NETS.len()].parse().unwrap();
                u128::from(net.network()) | (random & !u128::from(net.mask()))
            }
            _ => random,
        };
        out = base.to_be_bytes();
    } else {
        let random = random as u32;
        let base: u32 = match kind {
            0 => {
                let with: Vec<_> = policy.sims.iter().filter_map(policy::Sim::ipv4).collect();
                if with.is_empty() {
                    random
                } else {
                    u32::from(with[index % with.len()])
                }
            }
            1 => 0x0a40_0000 | (random & 0x0001_ffff),
            2 | 3 => {
                let net: ipnetwork::Ipv4Network = V4_NETS[index % V4_NETS.len()].parse().unwrap();
                u32::from(net.network()) | (random & !u32::from(net.mask()))
            }
            _ => random,
        };
        out[..4].copy_from_slice(&base.to_be_bytes());
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn oracle_agrees_with_the_compiled_policy(
        generated in policy_strategy(),
        packets in prop::collection::vec(packet(), 1..40),
    ) {
        let text = generated.text();
        let validated = policy::from_str(Path::new("gen.toml"), &text);
        prop_assume!(validated.is_ok(), "generator made an invalid policy");
        let validated = validated.unwrap();
        let compiled = compile::compile_fresh(&validated).expect("a valid policy compiles");
        for packet in packets {
            let flags = if packet.core_facing { IFACE_DROP_NON_POOL } else { 0 };
            let model = Reference::new(&compiled.image, 0, HashMap::from([(1, flags)]));
            let proto = [IPPROTO_TCP, IPPROTO_UDP, 1, 58, 47, 132][packet.proto];
            let has_ports = (proto == IPPROTO_TCP || proto == IPPROTO_UDP) && !packet.later_fragment;
            let meta = PacketMeta {
                v6: packet.v6,
                src: address(&validated, packet.v6, packet.src),
                dst: address(&validated, packet.v6, packet.dst),
                proto,
                dport: if has_ports { [22u16, 53, 443, 999, 1000, 1550, 2001, 65535][packet.dport] } else { 0 },
                sport: 0,
                l4_flags: 0,
                has_ports,
                later_fragment: packet.later_fragment,
                ifindex: 1,
                reversed: false,
                session_absent: false,
            };
            let expected = oracle::judge(&validated, &meta, flags);
            let compiled_verdict = model.judge(&meta).verdict;
            prop_assert_eq!(compiled_verdict, expected, "packet {:?}\npolicy:\n{}", meta, text);
        }
    }
}

/// Overlapping port rules of one segment towards one destination: for every port around them
/// the oracle and the compiled policy count the same rule (the rule id shows precedence, which
/// random policies rarely reach).
#[test]
fn overlapping_port_rules_count_the_same_rule_everywhere() {
    let text = r#"
pools = ["10.64.0.0/16"]
[[segments]]
name = "s0"
rules = [
  { to = ["198.51.100.0/24"], proto = "tcp", ports = ["1000-2000"] },
  { to = ["198.51.100.7"], proto = "tcp", ports = ["1500-1600", 1550, "1700-1701"] },
  { to = ["198.51.100.0/24"], proto = "tcp", ports = [1999] },
  { to = ["0.0.0.0/0"], proto = "tcp" },
  { to = ["198.51.100.0/25"], proto = "any" },
]
[[sims]]
imsi = "001010000000001"
ipv4 = "10.64.0.1"
segment = "s0"
"#;
    let validated = policy::from_str(Path::new("overlap.toml"), text).expect("valid policy");
    let compiled = compile::compile_fresh(&validated).expect("compiles");
    let model = Reference::new(&compiled.image, 0, HashMap::new());
    let mut counted = std::collections::HashSet::new();
    for dst in [[198, 51, 100, 7], [198, 51, 100, 200], [203, 0, 113, 1]] {
        for dport in 990..=2010 {
            let mut meta = PacketMeta {
                v6: false,
                src: [0; 16],
                dst: [0; 16],
                proto: IPPROTO_TCP,
                dport,
                sport: 0,
                l4_flags: 0,
                has_ports: true,
                later_fragment: false,
                ifindex: 1,
                reversed: false,
                session_absent: false,
            };
            meta.src[..4].copy_from_slice(&[10, 64, 0, 1]);
            meta.dst[..4].copy_from_slice(&dst);
            let expected = oracle::judge(&validated, &meta, 0);
            assert_eq!(
                model.judge(&meta).verdict,
                expected,
                "port {dport} to {dst:?}"
            );
            counted.insert(expected);
        }
    }
    assert!(
        counted.len() >= 4,
        "the sweep reaches several rules: {counted:?}"
    );
}
