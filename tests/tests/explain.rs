//! `policy explain` agrees with the datapath: for generated packets, the verdict, reason and
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
        let v6 = from.contains(':');
        let (l4, proto, port) = match rng.below(4) {
            0 => {
                let p = *rng.pick(&PORTS);
                (L4::Tcp(p), 6, Some(p))
            }
            1 => {
                let p = *rng.pick(&PORTS);
                (L4::Udp(p), 17, Some(p))
            }
            // ICMPv6 echo request (128), not neighbour discovery.
            2 if v6 => (L4::Icmp(128), 58, None),
            2 => (L4::Icmp(8), 1, None),
            _ => (L4::Other(47, 8), 47, None),
        };
        let frame = Frame::new(from, to, l4).build();
        let kernel = harness.check(&frame).verdict;
        let query = Query::Packet(Packet {
            from: from.parse().expect("test address"),
            to: to.parse().expect("test address"),
            proto,
            port,
            core_facing: false,
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
                explained.verdict,
                explained.reason,
                explained.rule.as_ref().map(|r| r.id)
            ),
            (verdict, reason, rule),
            "explain disagrees with the kernel on {} (frame {})",
            explained.packet,
            hex(&frame)
        );
        if let Some(r) = &explained.rule {
            assert_eq!(r.origin, harness.compiled.rules[r.id as usize].origin);
        }
        seen.insert(format!("{verdict}_{reason}"));
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
    assert!(out.contains("policy.toml:71"), "{out}");

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
