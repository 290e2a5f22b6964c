//! Compile snapshots: `tests/compile/NAME.policy` must compile to exactly `NAME.expected`, a
//! sorted dump of the map image, so a review shows which map entries a change affects.
//! `UPDATE_SNAPSHOTS=1` rewrites the expected files.

use std::path::Path;

#[test]
fn policies_compile_to_their_snapshots() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("compile");
    let update = std::env::var_os("UPDATE_SNAPSHOTS").is_some();
    let mut checked = 0;
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/compile")
        .flatten()
        .collect();
    entries.sort_by_key(std::fs::DirEntry::path);
    for entry in entries {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "policy") {
            continue;
        }
        let policy = enforcer::policy::load(&path).unwrap_or_else(|e| panic!("{e}"));
        let dump = enforcer::compile::compile_fresh(&policy)
            .expect("compiles")
            .image
            .dump();
        let expected_path = path.with_extension("expected");
        if update {
            std::fs::write(&expected_path, &dump).expect("write snapshot");
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run with UPDATE_SNAPSHOTS=1",
                expected_path.display()
            )
        });
        assert_eq!(
            dump,
            expected,
            "{} compiles differently from its snapshot",
            path.display()
        );
        checked += 1;
    }
    assert!(
        checked >= 3,
        "expected at least three snapshots, found {checked}"
    );
}

#[test]
fn compilation_is_deterministic() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/policy.toml");
    let policy = enforcer::policy::load(&path).expect("example policy is valid");
    let a = enforcer::compile::compile_fresh(&policy).expect("compiles");
    let b = enforcer::compile::compile_fresh(&policy).expect("compiles");
    assert_eq!(a, b);
}

/// The policies of issue 9 compile into entries linear in their rules: at most 32 `RULES_V2`
/// entries per rule (a port range is at most 30 aligned blocks), one network entry per distinct
/// destination, and the maps as `enforcer run` sizes them hold them.
#[test]
fn large_policies_compile_to_linear_entries() {
    use enforcer::capacity::{Capacity, Limits};
    use integration_tests::scale;
    for generated in [
        scale::one_rule_many_hosts(70_000),
        scale::wide_over_narrow(3_000),
        scale::distinct_ranges(10_000),
        scale::many_cidrs(100_000),
    ] {
        let policy = enforcer::policy::from_str(Path::new("scale.toml"), &generated.text)
            .unwrap_or_else(|e| panic!("{}: {e}", generated.name));
        let compiled = enforcer::compile::compile_fresh(&policy).expect("compiles");
        let image = &compiled.image;
        assert_eq!(compiled.rules.len(), generated.rules, "{}", generated.name);
        assert!(
            image.rules.len() <= 32 * generated.rules,
            "{}: {} rule entries for {} rules",
            generated.name,
            image.rules.len(),
            generated.rules
        );
        let nets = image.nets_v4.len() + image.nets_v6.len();
        assert!(
            nets <= generated.destinations + policy.pools.len(),
            "{}: {nets} network entries for {} destinations",
            generated.name,
            generated.destinations
        );
        Capacity::for_policy(image, compiled.rules.len(), &Limits::default())
            .check(image, compiled.rules.len())
            .unwrap_or_else(|e| panic!("{}: {e}", generated.name));
    }
}

/// An independent oracle for compilation: random policies with nested CIDRs, overlapping port
/// ranges, segment and SIM destinations; for random packets, the compiled tables (through the
/// reference model and the shared lookup sequence) allow exactly what README's rule says: a
/// SIM's packet passes when a rule of its segment or its own names the destination, protocol
/// and port. Written from the policy, without classes, keys or prefixes.
#[test]
fn compiled_tables_allow_exactly_what_the_rules_say() {
    use enforcer::{
        policy::{Dest, SimState, ValidatedPolicy},
        reference::Reference,
    };
    use enforcer_common::{
        PassReason, Verdict,
        decide::{PacketMeta, decide, identify, v4_in_16},
        maps::has_ports,
    };
    use integration_tests::rng::Rng;
    use std::{fmt::Write as _, net::Ipv4Addr};

    const NETS: &[&str] = &[
        "0.0.0.0/0",
        "192.0.2.0/24",
        "192.0.2.128/25",
        "192.0.2.130/32",
        "192.0.2.7/32",
        "198.51.100.0/24",
        "198.51.100.10/32",
        "8.0.0.0/7",
    ];
    const PORTS: &[&str] = &[
        "22",
        "53",
        "443",
        "1000-2000",
        "1500-2500",
        "0-65535",
        "65535",
    ];
    const PROTOS: &[&str] = &[
        "\"tcp\"",
        "\"udp\"",
        "[\"tcp\", \"udp\"]",
        "\"icmp\"",
        "\"any\"",
    ];
    const SIMS: [&str; 4] = ["10.64.0.1", "10.64.0.2", "10.64.0.3", "10.64.0.4"];

    fn oracle(policy: &ValidatedPolicy, src: usize, dst: Ipv4Addr, meta: &PacketMeta) -> bool {
        let sim = &policy.sims[src];
        if sim.state == SimState::Quarantined {
            return false;
        }
        let in_pool = policy.pools.iter().any(|p| p.contains(dst.into()));
        let dst_sim = policy.sims.iter().position(|s| s.ipv4() == Some(dst));
        let rules = policy.segments[usize::from(sim.segment)]
            .rules
            .iter()
            .chain(sim.rules());
        rules.into_iter().any(|rule| {
            let to = rule.to.iter().any(|d| match d {
                Dest::Net(net) => !in_pool && net.contains(dst.into()),
                Dest::Segment(g) => dst_sim.is_some_and(|i| policy.sims[i].segment == *g),
                Dest::Sim(i) => dst_sim == Some(*i as usize),
            });
            let proto = rule.protos.is_empty() || rule.protos.contains(&meta.proto);
            let port = rule.protos.is_empty()
                || !has_ports(meta.proto)
                || rule.ports.is_empty()
                || (meta.has_ports
                    && rule
                        .ports
                        .iter()
                        .any(|&(lo, hi)| lo <= meta.dport && meta.dport <= hi));
            to && proto && port
        })
    }

    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    let mut rng = Rng::new(seed);
    let (mut passed, mut dropped) = (0, 0);
    for _ in 0..300 {
        let mut text = String::from("pools = [\"10.64.0.0/16\"]\n");
        let rule = |rng: &mut Rng| {
            let mut to = Vec::new();
            for _ in 0..rng.range(1, 4) {
                match rng.below(8) {
                    0..=5 => to.push(format!("\"{}\"", rng.pick(NETS))),
                    6 => to.push(format!("\"s{}\"", rng.below(2))),
                    _ => to.push(format!("\"imsi:00101000000000{}\"", rng.range(1, 4))),
                }
            }
            let proto = *rng.pick(PROTOS);
            let mut line = format!("  {{ to = [{}], proto = {proto}", to.join(", "));
            if (proto.contains("tcp") || proto.contains("udp")) && rng.chance(80) {
                let ports: Vec<String> = (0..rng.range(1, 3))
                    .map(|_| format!("\"{}\"", rng.pick(PORTS)))
                    .collect();
                let _ = write!(line, ", ports = [{}]", ports.join(", "));
            }
            line.push_str(" },\n");
            line
        };
        for s in 0..2 {
            let _ = writeln!(text, "[[segments]]\nname = \"s{s}\"\nrules = [");
            for _ in 0..rng.below(6) {
                text.push_str(&rule(&mut rng));
            }
            text.push_str("]\n");
        }
        for (i, addr) in SIMS.iter().enumerate() {
            let _ = writeln!(
                text,
                "[[sims]]\nimsi = \"00101000000000{}\"\nipv4 = \"{addr}\"\nsegment = \"s{}\"",
                i + 1,
                i % 2
            );
            if rng.chance(10) {
                text.push_str("state = \"quarantined\"\n");
            }
            if rng.chance(30) {
                let _ = writeln!(text, "rules = [\n{}]", rule(&mut rng));
            }
        }
        let policy = enforcer::policy::from_str(Path::new("oracle.toml"), &text)
            .unwrap_or_else(|e| panic!("generated policy invalid: {e}\n{text}"));
        let compiled = enforcer::compile::compile_fresh(&policy).expect("compiles");
        let reference = Reference::new(&compiled.image, 0, std::collections::HashMap::new());
        // The same policy with stable ids that are not positions (reversed, spread out), as
        // a store gives after SIMs, segments and rules came and went.
        let fresh = enforcer::ids::Ids::fresh(&policy);
        let spread = |ids: &[u32], step: u32| -> Vec<u32> {
            ids.iter().rev().map(|&id| id * step + 5).collect()
        };
        let shuffled_ids = enforcer::ids::Ids {
            sims: spread(&fresh.sims, 3),
            segments: fresh.segments.iter().rev().map(|&s| s * 7 + 2).collect(),
            rules: spread(&fresh.rules, 2),
        };
        let shuffled = enforcer::compile::compile(&policy, &shuffled_ids).expect("compiles");
        let shuffled_reference =
            Reference::new(&shuffled.image, 0, std::collections::HashMap::new());
        for _ in 0..200 {
            let src = rng.below(4) as usize;
            let dst: Ipv4Addr = match rng.below(6) {
                0 => SIMS[rng.below(4) as usize].parse().expect("address"),
                1 => Ipv4Addr::new(10, 64, 0, 200),
                2 => Ipv4Addr::new(192, 0, 2, rng.below(256) as u8),
                3 => Ipv4Addr::new(198, 51, 100, rng.range(9, 12) as u8),
                4 => Ipv4Addr::new(9, rng.below(256) as u8, 0, 1),
                _ => Ipv4Addr::new(203, 0, 113, 1),
            };
            let proto = *rng.pick(&[6u8, 17, 1, 47]);
            let ports = has_ports(proto) && !rng.chance(10);
            let dport = *rng.pick(&[
                0u16, 22, 53, 443, 999, 1000, 1499, 1500, 2000, 2001, 2500, 2501, 65535,
            ]);
            let meta = PacketMeta {
                v6: false,
                src: v4_in_16(SIMS[src].parse::<Ipv4Addr>().expect("address").octets()),
                dst: v4_in_16(dst.octets()),
                proto,
                dport: if ports { dport } else { 0 },
                sport: 0,
                l4_flags: 0,
                has_ports: ports,
                later_fragment: has_ports(proto) && !ports,
                ifindex: 1,
                reversed: false,
                session_absent: false,
            };
            let verdict = decide(&identify(&reference, &meta));
            let compiled_allows = matches!(verdict, Verdict::Pass(PassReason::Rule, _));
            // Stable ids change names, not judgements: the same verdict, counted for the same
            // rule (the first in the file that allows the packet, whatever its id).
            let with_ids = decide(&identify(&shuffled_reference, &meta));
            let rule_of = |v: Verdict, c: &enforcer::compile::Compiled| match v {
                Verdict::Pass(PassReason::Rule, id) => c.rules[id as usize]
                    .as_ref()
                    .map(|r| (r.owner.clone(), r.origin.clone())),
                _ => None,
            };
            assert_eq!(
                (
                    std::mem::discriminant(&with_ids),
                    rule_of(with_ids, &shuffled)
                ),
                (
                    std::mem::discriminant(&verdict),
                    rule_of(verdict, &compiled)
                ),
                "seed {seed}: stable ids changed the judgement ({with_ids:?} vs {verdict:?})\n{text}"
            );
            let expected = oracle(&policy, src, dst, &meta);
            assert_eq!(
                compiled_allows, expected,
                "seed {seed}: from SIM {src} to {dst} proto {proto} port {dport} (ports: {ports}); \
                 compiled: {verdict:?}\n{text}"
            );
            if expected {
                passed += 1;
            } else {
                dropped += 1;
            }
        }
    }
    assert!(
        passed > 1000 && dropped > 1000,
        "weak generator: {passed} passed, {dropped} dropped"
    );
}
