//! `policy explain` agrees with the datapath: for generated packets, over the example policy
//! and over random policies (half of them on a core-facing interface), the verdict, reason and
//! counted rule that `enforcer::explain` gives equal what the real XDP program does with the
//! compiled policy (BPF_PROG_TEST_RUN, through `Harness::check`, which also holds the kernel to
//! the reference model). Plus the CLI: text, JSON and errors through the binary.

use std::{path::Path, process::Command};

use enforcer::explain::{self, Explanation, Packet, Query};
use enforcer_common::{PassReason, Verdict};
use integration_tests::{
    enforcer_bin,
    frames::{Frame, L4},
    harness::{Harness, TEST_IFINDEX, hex},
    rng::Rng,
};

fn example_path() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/policy.toml")
}

const SOURCES: [&str; 12] = [
    "10.64.0.1",
    "10.64.0.2",
    "10.65.0.1",
    "10.65.0.2",
    "10.66.0.1",
    "10.66.0.2",
    "10.64.9.9",
    "198.51.100.10",
    "fd00:64:0:1::5",
    "fd00:64:0:99::1",
    "2001:db8:100::20",
    "2001:db8::77",
];

const DESTINATIONS: [&str; 14] = [
    "198.51.100.10",
    "198.51.100.20",
    "198.51.100.30",
    "192.0.2.53",
    "192.0.2.200",
    "203.0.113.7",
    "10.66.0.2",
    "10.64.0.2",
    "10.65.7.7",
    "8.8.8.8",
    "2001:db8:100::20",
    "2001:db8:100::21",
    "fd00:64:0:1::9",
    "fd00:64:0:7::1",
];

const PORTS: [u16; 11] = [443, 8080, 9005, 9011, 53, 4059, 502, 44818, 22, 80, 65535];

/// Judge one packet with the kernel (through `Harness::check`, which also holds it to the
/// reference model) and with `explain`; assert the same verdict, reason and rule. Returns the
/// verdict's name.
fn agree(harness: &mut Harness, from: &str, to: &str, l4: L4, core_facing: bool) -> String {
    let v6 = from.contains(':');
    let (proto, port) = match l4 {
        L4::Tcp(p) => (6, Some(p)),
        L4::Udp(p) => (17, Some(p)),
        L4::Icmp(_) if v6 => (58, None),
        L4::Icmp(_) => (1, None),
        L4::Other(p, _) => (p, None),
    };
    let frame = Frame::new(from, to, l4).build();
    let kernel = harness.check(&frame).verdict;
    let query = Query::Packet(Packet {
        from: from.parse().expect("test address"),
        to: to.parse().expect("test address"),
        proto,
        port,
        core_facing,
    });
    let Ok(Explanation::Packet(explained)) =
        explain::explain(&harness.policy, &harness.compiled, &query)
    else {
        panic!("no packet explanation for {query:?}");
    };
    let (verdict, reason, rule) = match kernel {
        Verdict::Pass(reason, id) => (
            "pass",
            reason.name(),
            (reason == PassReason::Rule).then_some(id),
        ),
        Verdict::Drop(reason) => ("drop", reason.name(), None),
    };
    assert_eq!(
        (
            explained.verdict.as_str(),
            explained.reason.as_str(),
            explained.rule.as_ref().map(|r| r.id)
        ),
        (verdict, reason, rule),
        "explain disagrees with the kernel on {} (frame {})",
        explained.packet,
        hex(&frame)
    );
    if let Some(r) = &explained.rule {
        assert_eq!(
            Some(r.origin.as_str()),
            harness.compiled.rules[r.id as usize]
                .as_ref()
                .map(|i| i.origin.as_str())
        );
    }
    format!("{verdict}_{reason}")
}

fn random_l4(rng: &mut Rng, ports: &[u16]) -> L4 {
    match rng.below(4) {
        0 => L4::Tcp(*rng.pick(ports)),
        1 => L4::Udp(*rng.pick(ports)),
        // ICMP echo request, or ICMPv6 echo request (128), not neighbour discovery.
        2 => L4::Icmp(8),
        _ => L4::Other(47, 8),
    }
}

#[test]
fn explain_agrees_with_the_kernel_on_generated_packets() {
    let text = std::fs::read_to_string(example_path()).expect("read examples/policy.toml");
    let mut harness = Harness::new(&text, &[(TEST_IFINDEX, 0)]);
    let mut rng = Rng::new(0x0e_8a_11);
    let mut checked = 0u32;
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..20_000 {
        let from = *rng.pick(&SOURCES);
        let to = *rng.pick(&DESTINATIONS);
        if from.contains(':') != to.contains(':') {
            continue;
        }
        let mut l4 = random_l4(&mut rng, &PORTS);
        if from.contains(':') && matches!(l4, L4::Icmp(_)) {
            l4 = L4::Icmp(128);
        }
        seen.insert(agree(&mut harness, from, to, l4, false));
        checked += 1;
    }
    println!("explain: {checked} packets agreed with the kernel; verdicts {seen:?}");
    for needed in [
        "pass_rule",
        "pass_non_pool",
        "drop_no_rule",
        "drop_lateral",
        "drop_spoofed",
        "drop_quarantined",
    ] {
        assert!(
            seen.contains(needed),
            "the generator never produced {needed}"
        );
    }
}

/// A random valid policy: two pools, three segments whose rules name CIDRs, segments and
/// SIMs with assorted protocols and port ranges, twelve SIMs (some quarantined, some with rules
/// of their own). Returns the text and the SIMs' addresses.
fn random_policy(rng: &mut Rng) -> (String, Vec<String>) {
    const NETS_V4: [&str; 5] = [
        "198.51.100.0/24",
        "198.51.100.7",
        "203.0.113.0/25",
        "0.0.0.0/0",
        "192.0.2.53",
    ];
    const NETS_V6: [&str; 3] = ["2001:db8::/32", "2000::/3", "2001:db8:100::20"];
    const PORTS: [&str; 5] = [
        "[22]",
        "[443]",
        "[\"1000-2000\"]",
        "[\"8080-8090\", 53]",
        "[443, 22]",
    ];
    let sims = 12;
    let rule = |rng: &mut Rng| -> String {
        let mut to: Vec<String> = Vec::new();
        for _ in 0..=rng.below(2) {
            to.push(match rng.below(4) {
                0 => (*rng.pick(&NETS_V6)).to_owned(),
                1 => format!("segment:s{}", rng.below(3)),
                2 => format!("imsi:0010100000000{:02}", rng.below(sims)),
                _ => (*rng.pick(&NETS_V4)).to_owned(),
            });
        }
        let quoted: Vec<String> = to.iter().map(|t| format!("\"{t}\"")).collect();
        let v4_only = to.iter().all(|t| !NETS_V6.contains(&t.as_str()));
        let (proto, ports) = match rng.below(6) {
            0 => (String::new(), String::new()),
            1 => (
                ", proto = \"tcp\"".to_owned(),
                format!(", ports = {}", rng.pick(&PORTS)),
            ),
            2 => (
                ", proto = \"udp\"".to_owned(),
                format!(", ports = {}", rng.pick(&PORTS)),
            ),
            3 => (", proto = [\"tcp\", \"udp\"]".to_owned(), String::new()),
            4 if v4_only => (", proto = \"icmp\"".to_owned(), String::new()),
            _ => (", proto = 47".to_owned(), String::new()),
        };
        format!("{{ to = [{}]{proto}{ports} }}", quoted.join(", "))
    };
    let mut text = String::from("pools = [\"10.64.0.0/16\", \"fd00:64::/48\"]\n");
    for segment in 0..3 {
        let rules: Vec<String> = (0..rng.below(4)).map(|_| rule(rng)).collect();
        text.push_str(&format!(
            "[[segments]]\nname = \"s{segment}\"\nrules = [{}]\n",
            rules.join(", ")
        ));
    }
    let mut addresses = Vec::new();
    for sim in 0..sims {
        let v4 = format!("10.64.0.{}", sim + 1);
        text.push_str(&format!(
            "[[sims]]\nimsi = \"0010100000000{sim:02}\"\nipv4 = \"{v4}\"\nsegment = \"s{}\"\n",
            rng.below(3)
        ));
        addresses.push(v4);
        if rng.chance(50) {
            text.push_str(&format!("ipv6 = \"fd00:64:0:{sim}::/64\"\n"));
            addresses.push(format!("fd00:64:0:{sim}::9"));
        }
        if rng.chance(15) {
            text.push_str("state = \"quarantined\"\n");
        }
        if rng.chance(25) {
            text.push_str(&format!("rules = [{}]\n", rule(rng)));
        }
    }
    (text, addresses)
}

/// The same agreement over random policies, every other one judged on a core-facing
/// interface.
#[test]
fn explain_agrees_with_the_kernel_on_random_policies() {
    let mut rng = Rng::new(0x5eed_0e8a);
    let mut seen = std::collections::BTreeSet::new();
    let mut checked = 0u32;
    for round in 0..12 {
        let (text, sims) = random_policy(&mut rng);
        let core_facing = round % 2 == 1;
        let flags = if core_facing {
            enforcer_common::maps::IFACE_DROP_NON_POOL
        } else {
            0
        };
        let mut harness = Harness::new(&text, &[(TEST_IFINDEX, flags)]);
        let outside = [
            "198.51.100.7",
            "198.51.100.99",
            "203.0.113.5",
            "203.0.113.200",
            "192.0.2.53",
            "8.8.8.8",
            "10.64.9.9",
            "2001:db8::5",
            "2001:db8:100::20",
            "2a00::1",
            "fd00:64:ff::1",
        ];
        let ports = [22, 443, 1500, 2001, 8085, 53, 9999];
        for _ in 0..1_500 {
            let from = if rng.chance(80) {
                rng.pick(&sims).clone()
            } else {
                (*rng.pick(&outside)).to_owned()
            };
            let to = if rng.chance(40) {
                rng.pick(&sims).clone()
            } else {
                (*rng.pick(&outside)).to_owned()
            };
            if from.contains(':') != to.contains(':') {
                continue;
            }
            let mut l4 = random_l4(&mut rng, &ports);
            if from.contains(':') && matches!(l4, L4::Icmp(_)) {
                l4 = L4::Icmp(128);
            }
            seen.insert(agree(&mut harness, &from, &to, l4, core_facing));
            checked += 1;
        }
    }
    println!("explain: {checked} packets over 12 random policies agreed; verdicts {seen:?}");
    for needed in [
        "pass_rule",
        "pass_non_pool",
        "drop_non_pool",
        "drop_no_rule",
        "drop_lateral",
        "drop_spoofed",
        "drop_quarantined",
    ] {
        assert!(
            seen.contains(needed),
            "the generator never produced {needed}"
        );
    }
}

fn enforcer(args: &[&str]) -> std::process::Output {
    Command::new(enforcer_bin())
        .args(args)
        .output()
        .expect("run enforcer")
}

#[test]
fn explain_cli_names_the_rule_or_the_fix() {
    let policy = example_path().display().to_string();
    let allowed = enforcer(&[
        "policy",
        "explain",
        &policy,
        "--from",
        "10.66.0.1",
        "--to",
        "192.0.2.200",
        "--port",
        "22",
    ]);
    let out = String::from_utf8_lossy(&allowed.stdout);
    assert!(allowed.status.success(), "{out}");
    assert!(
        out.contains("tcp 10.66.0.1 -> 192.0.2.200:22: pass (rule)"),
        "{out}"
    );
    assert!(out.contains("rule #7 of imsi 001010000000201 at "), "{out}");
    assert!(out.contains("policy.toml:76"), "{out}");

    let denied = enforcer(&[
        "policy",
        "explain",
        &policy,
        "--from",
        "10.66.0.1",
        "--to",
        "10.0.0.5",
        "--proto",
        "tcp",
        "--port",
        "22",
        "--json",
    ]);
    assert!(denied.status.success());
    let json: serde_json::Value = serde_json::from_slice(&denied.stdout).expect("JSON");
    assert_eq!(json["verdict"], "drop");
    assert_eq!(json["reason"], "no_rule");
    assert_eq!(
        json["fix"],
        "add to segment industrial: { to = [\"10.0.0.5\"], proto = \"tcp\", ports = [22] } (or \
         to SIM 001010000000201's own rules for this SIM only)"
    );

    let sim = enforcer(&["policy", "explain", &policy, "--imsi", "001010000000102"]);
    let out = String::from_utf8_lossy(&sim.stdout);
    assert!(sim.status.success(), "{out}");
    assert!(out.contains("segment meters, quarantined"), "{out}");
    assert!(
        out.contains("is quarantined: everything it sends is dropped"),
        "{out}"
    );

    let unknown = enforcer(&["policy", "explain", &policy, "--imsi", "001019999999999"]);
    assert_eq!(unknown.status.code(), Some(1));
    let err = String::from_utf8_lossy(&unknown.stderr);
    assert!(err.contains("IMSI 001019999999999 is not in"), "{err}");
    let no_port = enforcer(&[
        "policy",
        "explain",
        &policy,
        "--from",
        "10.66.0.1",
        "--to",
        "10.0.0.5",
        "--proto",
        "udp",
    ]);
    assert!(String::from_utf8_lossy(&no_port.stderr).contains("give --port"));
}
