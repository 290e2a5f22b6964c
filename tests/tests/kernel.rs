//! BPF_PROG_TEST_RUN fixtures: crafted frames for every header shape, truncated and malformed
//! ones, against the real program loaded with a compiled policy. Each fixture states its
//! expected verdict; the harness also checks that the kernel counted it (verdict slot, SIM and
//! rule counters) and that the reference model agrees.

use enforcer_common::{DropReason, PassReason, Verdict};
use integration_tests::{
    frames::{Ext, Frame, L4, arp},
    harness::{Harness, TEST_IFINDEX},
};

const POLICY: &str = r#"
pools = ["10.64.0.0/16", "10.65.0.0/16", "fd00:64::/48"]

[[segments]]
name = "chargers"
rules = [
  { to = ["198.51.100.10"], proto = "tcp", ports = [443] },
  { to = ["198.51.100.0/24"], proto = "udp", ports = ["5000-5010"] },
  { to = ["0.0.0.0/0"], proto = "udp", ports = [53] },
  { to = ["2001:db8::/32"], proto = "tcp", ports = ["8080"] },
  { to = ["192.0.2.0/24"], proto = "icmp" },
  { to = ["2001:db8::/32"], proto = "icmpv6" },
]

[[segments]]
name = "meters"
rules = [
  { to = ["203.0.113.5"], proto = "any" },
  { to = ["chargers"], proto = "tcp", ports = [22] },
]

[[sims]]
imsi = "001010000000001"
ipv4 = "10.64.0.1"
ipv6 = "fd00:64:0:1::/64"
segment = "chargers"
rules = [ { to = ["203.0.113.7"], proto = "tcp", ports = ["1000-2000"] } ]

[[sims]]
imsi = "001010000000002"
ipv4 = "10.64.0.2"
ipv6 = "fd00:64:0:3::/64"
segment = "chargers"
state = "quarantined"

[[sims]]
imsi = "001010000000003"
ipv4 = "10.65.0.3"
segment = "meters"
"#;

const fn rule(id: u32) -> Verdict {
    Verdict::Pass(PassReason::Rule, id)
}
const fn drop(reason: DropReason) -> Verdict {
    Verdict::Drop(reason)
}

fn fixtures() -> Vec<(&'static str, Vec<u8>, Verdict)> {
    use DropReason::*;
    let tcp = |src, dst, port| Frame::new(src, dst, L4::Tcp(port));
    let mut truncated_tcp = tcp("10.64.0.1", "198.51.100.10", 443).build();
    truncated_tcp.truncate(truncated_tcp.len() - 1);
    let mut bad_ihl = tcp("10.64.0.1", "198.51.100.10", 443).build();
    bad_ihl[14] = 0x44; // IHL 4 < 5.
    let mut bad_version = tcp("10.64.0.1", "198.51.100.10", 443).build();
    bad_version[14] = 0x65;
    let mut bad_v6_version = tcp("fd00:64:0:1::1", "2001:db8::1", 8080).build();
    bad_v6_version[14] = 0x40;
    let mut long_tot_len = tcp("10.64.0.1", "198.51.100.10", 443).build();
    long_tot_len[16..18].copy_from_slice(&2000u16.to_be_bytes());
    let mut later_fragment = Frame::new("10.64.0.1", "198.51.100.10", L4::Other(6, 24));
    later_fragment.ipv4_fragment = (100, false);
    let mut later_udp_fragment = Frame::new("10.64.0.1", "198.51.100.10", L4::Other(17, 24));
    later_udp_fragment.ipv4_fragment = (7, true);
    let mut first_fragment = tcp("10.64.0.1", "198.51.100.10", 443);
    first_fragment.ipv4_fragment = (0, true);
    let mut options = tcp("10.64.0.1", "198.51.100.10", 443);
    options.ipv4_options = 40;
    let mut options_wrong_port = tcp("10.64.0.1", "198.51.100.10", 444);
    options_wrong_port.ipv4_options = 12;
    let mut padded = Frame::new("10.64.0.1", "198.51.100.10", L4::Tcp(443)).build();
    padded.extend_from_slice(&[0; 18]); // Ethernet padding beyond tot_len is fine.

    vec![
        (
            "allowed tcp to payment host",
            tcp("10.64.0.1", "198.51.100.10", 443).build(),
            rule(0),
        ),
        (
            "same host, wrong port",
            tcp("10.64.0.1", "198.51.100.10", 80).build(),
            drop(NoRule),
        ),
        (
            "udp in a port range, inside a /24 rule",
            Frame::new("10.64.0.1", "198.51.100.99", L4::Udp(5005)).build(),
            rule(1),
        ),
        (
            "udp just past the range",
            Frame::new("10.64.0.1", "198.51.100.99", L4::Udp(5011)).build(),
            drop(NoRule),
        ),
        (
            "udp 53 anywhere via 0.0.0.0/0",
            Frame::new("10.64.0.1", "8.8.8.8", L4::Udp(53)).build(),
            rule(2),
        ),
        (
            "udp 53 to a host with a more specific rule",
            Frame::new("10.64.0.1", "198.51.100.10", L4::Udp(53)).build(),
            rule(2),
        ),
        (
            "icmp echo to an icmp rule",
            Frame::new("10.64.0.1", "192.0.2.9", L4::Icmp(8)).build(),
            rule(4),
        ),
        (
            "icmp elsewhere",
            Frame::new("10.64.0.1", "198.51.100.10", L4::Icmp(8)).build(),
            drop(NoRule),
        ),
        (
            "sim's own rule",
            tcp("10.64.0.1", "203.0.113.7", 1500).build(),
            rule(8),
        ),
        (
            "sim's own rule is not the segment's",
            tcp("10.64.0.2", "203.0.113.7", 1500).build(),
            drop(Quarantined),
        ),
        (
            "any-proto rule allows gre",
            Frame::new("10.65.0.3", "203.0.113.5", L4::Other(47, 20)).build(),
            rule(6),
        ),
        (
            "any-proto rule allows tcp",
            tcp("10.65.0.3", "203.0.113.5", 9999).build(),
            rule(6),
        ),
        (
            "quarantined sim",
            tcp("10.64.0.2", "198.51.100.10", 443).build(),
            drop(Quarantined),
        ),
        (
            "spoofed: pool address without sim",
            tcp("10.64.9.9", "198.51.100.10", 443).build(),
            drop(Spoofed),
        ),
        (
            "non-pool source to a device, in no session: inbound",
            tcp("172.16.0.1", "10.64.0.1", 443).build(),
            drop(Inbound),
        ),
        (
            "non-pool source to a non-pool destination passes",
            tcp("172.16.0.1", "198.51.100.10", 443).build(),
            Verdict::Pass(PassReason::NonPool, 0),
        ),
        (
            "non-pool source to a pool address without a SIM: inbound",
            tcp("172.16.0.1", "10.64.9.9", 443).build(),
            drop(Inbound),
        ),
        (
            "lateral to another sim",
            tcp("10.64.0.1", "10.65.0.3", 443).build(),
            drop(Lateral),
        ),
        (
            "lateral to a pool address without sim",
            tcp("10.64.0.1", "10.64.7.7", 443).build(),
            drop(Lateral),
        ),
        (
            "lateral allowed by naming the segment",
            tcp("10.65.0.3", "10.64.0.1", 22).build(),
            rule(7),
        ),
        (
            "named segment, wrong port",
            tcp("10.65.0.3", "10.64.0.1", 23).build(),
            drop(Lateral),
        ),
        (
            "802.1Q tagged",
            tcp("10.64.0.1", "198.51.100.10", 443)
                .vlans(&[0x8100])
                .build(),
            rule(0),
        ),
        (
            "QinQ tagged",
            tcp("10.64.0.1", "198.51.100.10", 443)
                .vlans(&[0x88a8, 0x8100])
                .build(),
            rule(0),
        ),
        (
            "three tags are malformed",
            tcp("10.64.0.1", "198.51.100.10", 443)
                .vlans(&[0x88a8, 0x8100, 0x8100])
                .build(),
            drop(Malformed),
        ),
        (
            "tagged and denied",
            tcp("10.64.0.1", "198.51.100.10", 80)
                .vlans(&[0x8100])
                .build(),
            drop(NoRule),
        ),
        ("ipv4 options honoured", options.build(), rule(0)),
        (
            "ipv4 options, port checked after them",
            options_wrong_port.build(),
            drop(NoRule),
        ),
        ("ethernet padding", padded, rule(0)),
        ("truncated tcp header", truncated_tcp, drop(Malformed)),
        ("ihl below 5", bad_ihl, drop(Malformed)),
        (
            "version 6 in an ipv4 ethertype",
            bad_version,
            drop(Malformed),
        ),
        (
            "version 4 in an ipv6 ethertype",
            bad_v6_version,
            drop(Malformed),
        ),
        ("tot_len beyond the frame", long_tot_len, drop(Malformed)),
        (
            "ethernet header only",
            vec![0u8; 14][..12]
                .iter()
                .copied()
                .chain([0x08, 0x00])
                .collect(),
            drop(Malformed),
        ),
        // BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header (bpf_test_init), so
        // the shortest kernel fixture is a bare header; the reference tests cover runts.
        ("first fragment has ports", first_fragment.build(), rule(0)),
        (
            "later tcp fragment: no any-port rule",
            later_fragment.build(),
            drop(Fragment),
        ),
        (
            "later udp fragment: no any-port rule",
            later_udp_fragment.build(),
            drop(Fragment),
        ),
        ("arp passes", arp(), Verdict::Pass(PassReason::Neighbour, 0)),
        (
            "lldp is not ip",
            {
                let mut f = arp();
                f[12..14].copy_from_slice(&[0x88, 0xcc]);
                f
            },
            Verdict::Pass(PassReason::NotIp, 0),
        ),
        (
            "ipv6 allowed",
            tcp("fd00:64:0:1::1", "2001:db8::1", 8080).build(),
            rule(3),
        ),
        (
            "ipv6 any host in the sim's /64",
            tcp("fd00:64:0:1:ffff::9", "2001:db8::1", 8080).build(),
            rule(3),
        ),
        (
            "ipv6 denied port",
            tcp("fd00:64:0:1::1", "2001:db8::1", 8081).build(),
            drop(NoRule),
        ),
        (
            "ipv6 spoofed",
            tcp("fd00:64:0:2::1", "2001:db8::1", 8080).build(),
            drop(Spoofed),
        ),
        (
            "ipv6 non-pool to a device, in no session: inbound",
            tcp("2001:db8::5", "fd00:64:0:1::1", 8080).build(),
            drop(Inbound),
        ),
        (
            "ipv6 lateral",
            tcp("fd00:64:0:1::1", "fd00:64:0:2::1", 8080).build(),
            drop(Lateral),
        ),
        (
            "ipv6 hop-by-hop + dest opts",
            tcp("fd00:64:0:1::1", "2001:db8::1", 8080)
                .ext(&[Ext::HopByHop(0), Ext::DestOpts(1)])
                .build(),
            rule(3),
        ),
        (
            "ipv6 routing header",
            tcp("fd00:64:0:1::1", "2001:db8::1", 8080)
                .ext(&[Ext::Routing(2)])
                .build(),
            rule(3),
        ),
        (
            "ipv6 first fragment",
            tcp("fd00:64:0:1::1", "2001:db8::1", 8080)
                .ext(&[Ext::Fragment(0, true)])
                .build(),
            rule(3),
        ),
        (
            "ipv6 later fragment",
            Frame::new("fd00:64:0:1::1", "2001:db8::1", L4::Other(6, 16))
                .ext(&[Ext::Fragment(20, false)])
                .build(),
            drop(Fragment),
        ),
        (
            "ipv6 six extension headers",
            tcp("fd00:64:0:1::1", "2001:db8::1", 8080)
                .ext(&[
                    Ext::HopByHop(0),
                    Ext::DestOpts(0),
                    Ext::Routing(0),
                    Ext::DestOpts(0),
                    Ext::DestOpts(0),
                    Ext::DestOpts(0),
                ])
                .build(),
            rule(3),
        ),
        (
            "ipv6 seven extension headers",
            tcp("fd00:64:0:1::1", "2001:db8::1", 8080)
                .ext(&[
                    Ext::HopByHop(0),
                    Ext::DestOpts(0),
                    Ext::Routing(0),
                    Ext::DestOpts(0),
                    Ext::DestOpts(0),
                    Ext::DestOpts(0),
                    Ext::DestOpts(0),
                ])
                .build(),
            drop(Malformed),
        ),
        (
            "ipv6 extension header cut short",
            {
                let mut f = tcp("fd00:64:0:1::1", "2001:db8::1", 8080)
                    .ext(&[Ext::HopByHop(4)])
                    .build();
                f.truncate(14 + 40 + 20);
                f[18..20].copy_from_slice(&20u16.to_be_bytes());
                f
            },
            drop(Malformed),
        ),
        (
            "icmpv6 to an icmpv6 rule",
            Frame::new("fd00:64:0:1::1", "2001:db8::1", L4::Icmp(128)).build(),
            rule(5),
        ),
        (
            "icmpv6 echo elsewhere",
            Frame::new("fd00:64:0:1::1", "2001:db9::1", L4::Icmp(128)).build(),
            drop(NoRule),
        ),
        (
            "on-link neighbour solicitation passes",
            Frame::new("fe80::1", "ff02::1:ff00:1", L4::Icmp(135))
                .hop_limit(255)
                .build(),
            Verdict::Pass(PassReason::Neighbour, 0),
        ),
        (
            "router solicitation from the unspecified address passes",
            Frame::new("::", "ff02::2", L4::Icmp(133))
                .hop_limit(255)
                .build(),
            Verdict::Pass(PassReason::Neighbour, 0),
        ),
        (
            "neighbour solicitation from beyond a router, from a spoofed pool address",
            Frame::new("fd00:64:0:2::1", "ff02::1:ff00:1", L4::Icmp(135)).build(),
            drop(Spoofed),
        ),
        (
            "on-link neighbour solicitation from a global address to its group passes",
            Frame::new("fd00:64:0:1::1", "ff02::1:ff00:2", L4::Icmp(135))
                .hop_limit(255)
                .build(),
            Verdict::Pass(PassReason::Neighbour, 0),
        ),
        (
            "neighbour discovery from a SIM's global address to a global destination is judged",
            Frame::new("fd00:64:0:1::1", "2001:db9::1", L4::Icmp(136))
                .hop_limit(255)
                .build(),
            drop(NoRule),
        ),
        (
            "neighbour discovery from a quarantined SIM to a global destination is dropped",
            Frame::new("fd00:64:0:3::1", "2001:db8::1", L4::Icmp(135))
                .hop_limit(255)
                .build(),
            drop(Quarantined),
        ),
        (
            "neighbour advertisement from a quarantined SIM to a link-scope group stays on the \
             link: passes",
            Frame::new("fd00:64:0:3::1", "ff02::1", L4::Icmp(136))
                .hop_limit(255)
                .build(),
            Verdict::Pass(PassReason::Neighbour, 0),
        ),
        (
            "the unspecified source toward a device is not link-scoped: judged (inbound)",
            Frame::new("::", "fd00:64:0:1::1", L4::Icmp(135))
                .hop_limit(255)
                .build(),
            drop(Inbound),
        ),
        (
            "router solicitation that crossed a router is judged",
            Frame::new("fd00:64:0:1::1", "ff02::2", L4::Icmp(133)).build(),
            drop(NoRule),
        ),
    ]
}

#[test]
fn every_fixture_gets_its_verdict_and_is_counted() {
    let mut harness = Harness::new(POLICY, &[]);
    for (name, frame, expected) in fixtures() {
        let outcome = harness.reference.evaluate(&frame, TEST_IFINDEX);
        assert_eq!(
            outcome.verdict, expected,
            "reference model disagrees with fixture `{name}`"
        );
        let checked = harness.check(&frame);
        assert_eq!(checked.verdict, expected, "fixture `{name}`");
    }
}

#[test]
fn sim_counters_add_up_bytes_and_packets() {
    let mut harness = Harness::new(POLICY, &[]);
    let sim = harness.sim_of("001010000000001");
    let allowed = Frame::new("10.64.0.1", "198.51.100.10", L4::Tcp(443)).build();
    let denied = Frame::new("10.64.0.1", "198.51.100.10", L4::Tcp(80)).build();
    for _ in 0..3 {
        harness.check(&allowed);
    }
    harness.check(&denied);
    let c = harness.sim(sim);
    assert_eq!((c.pass_packets, c.drop_packets), (3, 1));
    assert_eq!(
        (c.pass_bytes, c.drop_bytes),
        (3 * allowed.len() as u64, denied.len() as u64)
    );
}

#[test]
fn interface_set_to_drop_non_pool_traffic_drops_it() {
    use enforcer_common::maps::IFACE_DROP_NON_POOL;
    let mut harness = Harness::new(POLICY, &[(TEST_IFINDEX, IFACE_DROP_NON_POOL)]);
    let frame = Frame::new("172.16.0.1", "10.64.0.1", L4::Tcp(443)).build();
    assert_eq!(
        harness.check(&frame).verdict,
        Verdict::Drop(DropReason::NonPool)
    );
    // Pool sources are judged as usual on that interface.
    let frame = Frame::new("10.64.0.1", "198.51.100.10", L4::Tcp(443)).build();
    assert_eq!(harness.check(&frame).verdict, rule(0));
}

/// `repeat` runs the program that many times (the benchmark relies on it): the counters move
/// by exactly that much.
#[test]
fn repeated_runs_are_each_counted() {
    let mut harness = Harness::new(POLICY, &[]);
    let frame = Frame::new("10.64.0.1", "198.51.100.10", L4::Tcp(443)).build();
    let sim = harness.sim_of("001010000000001");
    let before = harness.sim(sim).pass_packets;
    let (action, _) = harness
        .enforcer
        .test_run(&frame, 1000, TEST_IFINDEX)
        .expect("test run");
    assert_eq!(action, enforcer_common::verdict::XDP_PASS);
    assert_eq!(harness.sim(sim).pass_packets - before, 1000);
}

#[test]
fn verifier_instruction_count_is_reported() {
    let mut harness = Harness::new(POLICY, &[]);
    let count = harness
        .enforcer
        .verified_instructions()
        .expect("the kernel reports verified_insns (Linux 5.16+)");
    // `cargo xtask vm-test` reads this line per kernel. (No bound is asserted: a program over
    // the verifier's limit would not have loaded.)
    println!("verified instructions: {count}");
}

/// A second policy applied to a running program: verdicts follow it at once, the generation
/// flips, SIMs it no longer has are removed and the old generation's rules are cleared. The
/// second policy puts a new segment and a new SIM in front, so every segment, SIM and rule id
/// moves; every verdict is checked with its reason against the new policy.
#[test]
fn applying_a_new_policy_flips_the_generation_and_removes_stale_entries() {
    let mut harness = Harness::new(POLICY, &[]);
    let first = harness.enforcer.generation().expect("generation");
    let allowed = Frame::new("10.64.0.1", "198.51.100.10", L4::Tcp(443)).build();
    assert_eq!(harness.check(&allowed).verdict, rule(0));

    // The same SIM now has only a DNS rule, and the meter SIM is gone.
    let second = r#"
pools = ["10.64.0.0/16", "10.65.0.0/16"]
[[segments]]
name = "cameras"
rules = [ { to = ["203.0.113.9"], proto = "udp", ports = [554] } ]
[[segments]]
name = "chargers"
rules = [ { to = ["0.0.0.0/0"], proto = "udp", ports = [53] } ]
[[sims]]
imsi = "001010000000009"
ipv4 = "10.64.0.9"
segment = "cameras"
[[sims]]
imsi = "001010000000001"
ipv4 = "10.64.0.1"
segment = "chargers"
"#;
    let policy =
        enforcer::policy::from_str(std::path::Path::new("second.toml"), second).expect("valid");
    let compiled = enforcer::compile::compile_fresh(&policy).expect("compiles");
    let generation = harness
        .enforcer
        .apply(&compiled.image)
        .expect("apply the second policy")
        .generation;
    assert_ne!(
        generation, first,
        "apply fills the inactive generation and flips to it"
    );
    harness.reference = enforcer::reference::Reference::new(
        &compiled.image,
        generation,
        std::collections::HashMap::new(),
    );
    harness.policy = policy;
    harness.compiled = compiled;

    // `check` also asserts that the kernel counted each verdict in the right segment block.
    let dns = Frame::new("10.64.0.1", "8.8.8.8", L4::Udp(53)).build();
    let camera = Frame::new("10.64.0.9", "203.0.113.9", L4::Udp(554)).build();
    let camera_from_charger = Frame::new("10.64.0.1", "203.0.113.9", L4::Udp(554)).build();
    let meter = Frame::new("10.65.0.3", "203.0.113.5", L4::Tcp(1)).build();
    for (name, frame, expected) in [
        ("the old rule is gone", &allowed, drop(DropReason::NoRule)),
        ("the charger's new rule, now rule 1", &dns, rule(1)),
        ("the new SIM's rule, rule 0", &camera, rule(0)),
        (
            "the cameras' rule is not the chargers'",
            &camera_from_charger,
            drop(DropReason::NoRule),
        ),
        (
            "a removed SIM is spoofed now",
            &meter,
            drop(DropReason::Spoofed),
        ),
    ] {
        assert_eq!(
            harness.reference.evaluate(frame, TEST_IFINDEX).verdict,
            expected,
            "{name}"
        );
        assert_eq!(harness.check(frame).verdict, expected, "{name}");
    }

    use aya::maps::{HashMap, LpmTrie, MapData, lpm_trie::Key};
    use enforcer_common::maps::{
        PortRuleKey, RULE_KEY_LEN, RuleEntry, SIM_NONE, SimBinding, names,
    };
    let sims: HashMap<&MapData, [u8; 4], SimBinding> =
        HashMap::try_from(harness.enforcer.map(names::SIM_V4).expect("SIM_V4_V2"))
            .expect("hash map");
    let bindings: Vec<([u8; 4], SimBinding)> = sims.iter().filter_map(Result::ok).collect();
    assert_eq!(
        bindings.len(),
        2,
        "bindings only the old policy had are deleted after the flip: {bindings:?}"
    );
    assert!(
        bindings.iter().all(|(_, b)| b.of(generation) != SIM_NONE),
        "every binding left is bound in the active generation: {bindings:?}"
    );
    // The active generation holds exactly the new policy's rules (the other one keeps the old
    // policy's, as the base the next reload writes its differences against).
    let rules: LpmTrie<&MapData, [u8; RULE_KEY_LEN], RuleEntry> =
        LpmTrie::try_from(harness.enforcer.map(names::RULES).expect("RULES_V2")).expect("trie");
    let mut active = rules
        .keys()
        .filter_map(Result::ok)
        .filter(|key: &Key<[u8; RULE_KEY_LEN]>| key.data()[0] == generation)
        .count();
    let single: HashMap<&MapData, PortRuleKey, RuleEntry> =
        HashMap::try_from(harness.enforcer.map(names::PORT_RULES).expect("PORT_RULES"))
            .expect("hash map");
    active += single
        .keys()
        .filter_map(Result::ok)
        .filter(|key| key.generation == generation)
        .count();
    assert_eq!(
        active,
        harness.compiled.image.rules.len(),
        "the active generation holds the new policy's rule entries and no others"
    );
}

/// Maps pinned by one program instance are reused by the next: counters survive a restart.
#[test]
fn pinned_maps_are_reused_and_keep_their_counters() {
    use enforcer::loader::{Capacity, Enforcer};
    let pin_dir = std::path::PathBuf::from(format!(
        "/sys/fs/bpf/enforcer-pin-test-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&pin_dir).expect("create pin dir on bpffs");
    let policy = enforcer::policy::from_str(std::path::Path::new("t.toml"), POLICY).expect("valid");
    let compiled = enforcer::compile::compile_fresh(&policy).expect("compiles");
    let capacity = Capacity::for_test_run(&compiled.image, compiled.rules.len());
    let frame = Frame::new("10.64.0.1", "198.51.100.10", L4::Tcp(443)).build();
    let packets = |enforcer: &Enforcer| enforcer.sim_table().counters(0).pass_packets;
    let result = std::panic::catch_unwind(|| {
        let mut first = Enforcer::load(capacity, Some(&pin_dir)).expect("load with pins");
        first.apply(&compiled.image).expect("apply");
        for _ in 0..3 {
            first.test_run(&frame, 1, TEST_IFINDEX).expect("test run");
        }
        assert_eq!(packets(&first), 3);
        std::mem::drop(first); // The daemon stops; the pins keep the maps.

        let mut second =
            Enforcer::load(capacity, Some(&pin_dir)).expect("load again with the same pins");
        assert_eq!(packets(&second), 3, "counters survive a restart");
        // The restarted daemon brings an edited policy: the payment rule is now port 8443.
        let edited = POLICY.replace("ports = [443]", "ports = [8443]");
        let edited =
            enforcer::policy::from_str(std::path::Path::new("t.toml"), &edited).expect("valid");
        let edited = enforcer::compile::compile_fresh(&edited).expect("compiles");
        let report = second
            .apply(&edited.image)
            .expect("apply the edited policy onto the reused maps");
        assert_eq!(
            report.sims_added + report.sims_removed,
            0,
            "the adopted maps were read back: {report:?}"
        );
        let action = second
            .test_run(&frame, 1, TEST_IFINDEX)
            .expect("test run")
            .0;
        assert_eq!(action, enforcer_common::verdict::XDP_DROP, "the edit holds");
        let moved = Frame::new("10.64.0.1", "198.51.100.10", L4::Tcp(8443)).build();
        second.test_run(&moved, 1, TEST_IFINDEX).expect("test run");
        assert_eq!(packets(&second), 4, "the SIM's pass counter continues");
        let drops = second.sim_table().counters(0).drop_packets;
        assert_eq!(drops, 1, "the dropped packet is counted for the same SIM");
        second.unpin().expect("remove pins");
    });
    let _ = std::fs::remove_dir_all(&pin_dir);
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

/// Pins left by a run with smaller capacities are refused, naming the map, before anything is
/// loaded; the pins and their counters stay as they were.
#[test]
fn pinned_maps_that_do_not_fit_are_refused_and_kept() {
    use enforcer::loader::{Capacity, Enforcer};
    let pin_dir = std::path::PathBuf::from(format!(
        "/sys/fs/bpf/enforcer-pin-fit-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&pin_dir).expect("create pin dir on bpffs");
    let policy = enforcer::policy::from_str(std::path::Path::new("t.toml"), POLICY).expect("valid");
    let compiled = enforcer::compile::compile_fresh(&policy).expect("compiles");
    let small = Capacity::for_test_run(&compiled.image, compiled.rules.len());
    let frame = Frame::new("10.64.0.1", "198.51.100.10", L4::Tcp(443)).build();
    let result = std::panic::catch_unwind(|| {
        let mut first = Enforcer::load(small, Some(&pin_dir)).expect("load with pins");
        first.apply(&compiled.image).expect("apply");
        first.test_run(&frame, 1, TEST_IFINDEX).expect("test run");
        std::mem::drop(first);

        let larger = small.with_sims(small.sims * 4);
        let error = Enforcer::load(larger, Some(&pin_dir))
            .err()
            .expect("pins with fewer SIM entries are refused");
        let message = error.to_string();
        assert!(
            message.contains("SIM") && message.contains("entries, this start needs"),
            "{message}"
        );
        // Nothing was replaced: the same capacity loads again, counters intact.
        let again = Enforcer::load(small, Some(&pin_dir)).expect("the old capacity still fits");
        let passed = again.sim_table().counters(0).pass_packets;
        assert_eq!(passed, 1, "the pinned counters survived the refused start");
        again.unpin().expect("remove pins");
    });
    let _ = std::fs::remove_dir_all(&pin_dir);
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

/// A pin directory made by an older layout (here a `SIM_POLICY` pin, which this build replaced
/// with `SIMS`) is refused with what to do, before anything is loaded or changed.
#[test]
fn pins_of_an_older_layout_are_refused_with_what_to_do() {
    use enforcer::loader::{Capacity, Enforcer};
    let pin_dir = std::path::PathBuf::from(format!(
        "/sys/fs/bpf/enforcer-pin-old-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&pin_dir).expect("create pin dir on bpffs");
    let policy = enforcer::policy::from_str(std::path::Path::new("t.toml"), POLICY).expect("valid");
    let compiled = enforcer::compile::compile_fresh(&policy).expect("compiles");
    let capacity = Capacity::for_test_run(&compiled.image, compiled.rules.len());
    let result = std::panic::catch_unwind(|| {
        let first = Enforcer::load(capacity, Some(&pin_dir)).expect("load with pins");
        std::mem::drop(first);
        // Stand-in for the older build's map: any pinned map under the retired name.
        std::fs::rename(pin_dir.join("IFACES"), pin_dir.join("SIM_POLICY"))
            .expect("rename a pin on bpffs");
        let error = Enforcer::load(capacity, Some(&pin_dir))
            .err()
            .expect("an older layout's pins are refused");
        let message = error.to_string();
        assert!(
            message.contains("SIM_POLICY") && message.contains("enforcer detach --pin-dir"),
            "{message}"
        );
        assert!(
            !pin_dir.join("IFACES").exists() && pin_dir.join("SIM_POLICY").exists(),
            "nothing was re-created or removed"
        );
    });
    let _ = std::fs::remove_dir_all(&pin_dir);
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

/// A core interface takes non-pool sources only from `core_sources`; the marker nests with the
/// rules' destination CIDRs without changing which rule allows what.
#[test]
fn core_interface_takes_only_core_sources_from_outside_the_pools() {
    use enforcer_common::maps::IFACE_DROP_NON_POOL;
    let policy = format!("core_sources = [\"198.51.100.0/28\", \"2001:db8:ff::/48\"]\n{POLICY}");
    let mut core = Harness::new(&policy, &[(TEST_IFINDEX, IFACE_DROP_NON_POOL)]);
    let mut service = Harness::new(&policy, &[]);
    let cases = [
        (
            "core source, nested in a rule's /24",
            Frame::new("198.51.100.3", "203.0.113.50", L4::Tcp(443)).build(),
            Verdict::Pass(PassReason::NonPool, 0),
        ),
        (
            "core source, the rule's own /32 inside it",
            Frame::new("198.51.100.10", "203.0.113.50", L4::Tcp(443)).build(),
            Verdict::Pass(PassReason::NonPool, 0),
        ),
        (
            "the same /24 outside the core sources",
            Frame::new("198.51.100.20", "203.0.113.50", L4::Tcp(443)).build(),
            drop(DropReason::NonPool),
        ),
        (
            "IPv6 core source",
            Frame::new("2001:db8:ff::1", "2001:db8:100::1", L4::Udp(53)).build(),
            Verdict::Pass(PassReason::NonPool, 0),
        ),
        (
            "IPv6 outside the core sources",
            Frame::new("2001:db8:fe::1", "2001:db8:100::1", L4::Udp(53)).build(),
            drop(DropReason::NonPool),
        ),
        // Rules toward the nested CIDRs are unchanged.
        (
            "device to the /32 rule inside the core source",
            Frame::new("10.64.0.1", "198.51.100.10", L4::Tcp(443)).build(),
            rule(0),
        ),
        (
            "device to the /24 rule inside the core source",
            Frame::new("10.64.0.1", "198.51.100.5", L4::Udp(5005)).build(),
            rule(1),
        ),
    ];
    for (name, frame, expected) in cases {
        let outcome = core.reference.evaluate(&frame, TEST_IFINDEX);
        assert_eq!(outcome.verdict, expected, "reference, core: `{name}`");
        assert_eq!(
            core.check(&frame).verdict,
            expected,
            "kernel, core: `{name}`"
        );
        // A service interface drops no non-pool source.
        if let Verdict::Drop(DropReason::NonPool) = expected {
            assert_eq!(
                service.check(&frame).verdict,
                Verdict::Pass(PassReason::NonPool, 0),
                "kernel, service: `{name}`"
            );
        }
    }
}

/// The established-session stage (`enforcer-ebpf/src/established.rs`) reads the common frame
/// shape at fixed offsets and passes a live session's packets before the full parser runs. Every
/// variation of a live session's frames must get what the full pipeline gives it (the
/// reference model, whose parser is the full walk's twin): the common shape passes, other
/// shapes of the same flow pass through the pipeline, and every malformation the parser drops
/// is dropped even though the flow has a session.
#[test]
fn the_established_stage_judges_every_shape_as_the_pipeline_does() {
    use DropReason::Malformed;
    const ACK: u8 = 0x10;
    const PSH_ACK: u8 = 0x18;
    let reply = |id: u32| Verdict::Pass(PassReason::Reply, id);
    let mut harness = Harness::new(POLICY, &[]);
    let syn = Frame::new("10.64.0.1", "198.51.100.10", L4::Tcp(443));
    let udp = Frame::new("10.64.0.1", "198.51.100.5", L4::Udp(5005));
    assert_eq!(harness.check(&syn.build()).verdict, rule(0));
    // The stage found no session for the SYN and left its source's binding, under the epoch in
    // force, for identify (`SRC_SIM`): the device's address, bound in the active generation.
    let epoch = harness.enforcer.epoch().expect("epoch");
    let generation = usize::from(harness.enforcer.generation().expect("generation"));
    let device = [10, 64, 0, 1];
    assert!(
        src_sim_slots(&harness)
            .iter()
            .any(|&(addr, at, binding)| addr == device
                && at == epoch
                && binding[generation] != enforcer_common::maps::SIM_NONE),
        "no CPU's SRC_SIM holds the SYN's source: {:?}",
        src_sim_slots(&harness)
    );
    assert_eq!(harness.check(&syn.reply(0x12).build()).verdict, reply(0));
    // The service's SYN-ACK belongs to that session: the stage judged it, so it looked no
    // source up (a stage that missed live sessions would have left the service's address).
    assert!(
        src_sim_slots(&harness)
            .iter()
            .all(|&(addr, _, _)| addr != [198, 51, 100, 10]),
        "the stage missed the SYN-ACK's session: {:?}",
        src_sim_slots(&harness)
    );
    assert_eq!(harness.check(&udp.build()).verdict, rule(1));
    let ack = syn.clone().flags(ACK);
    // Byte offsets in an untagged IPv4 frame without options.
    const TOT_LEN: usize = 16;
    const TCP_DATA_OFFSET: usize = 46;
    let with = |frame: &Frame, edit: &dyn Fn(&mut Vec<u8>)| {
        let mut bytes = frame.build();
        edit(&mut bytes);
        bytes
    };
    let set_tot_len = |bytes: &mut Vec<u8>, len: u16| {
        bytes[TOT_LEN..TOT_LEN + 2].copy_from_slice(&len.to_be_bytes());
    };
    let mut tagged = ack.clone();
    tagged.vlans = vec![0x8100];
    let mut options = ack.clone();
    options.ipv4_options = 8;
    let mut first_fragment = ack.clone();
    first_fragment.ipv4_fragment = (0, true);
    let mut later_fragment = ack.clone();
    later_fragment.ipv4_fragment = (3, false);
    let mut with_data = ack.clone();
    with_data.payload = 100;
    let cases: Vec<(&str, Vec<u8>, Verdict)> = vec![
        ("the device's ACK", ack.build(), rule(0)),
        (
            "data from the service",
            syn.reply(PSH_ACK).build(),
            reply(0),
        ),
        ("with a payload", with_data.build(), rule(0)),
        ("the UDP reply", udp.reply(0).build(), reply(1)),
        (
            "Ethernet padding after the IP packet",
            with(&ack, &|b| b.extend_from_slice(&[0; 12])),
            rule(0),
        ),
        ("an 802.1Q tag", tagged.build(), rule(0)),
        ("IPv4 options", options.build(), rule(0)),
        ("a first fragment", first_fragment.build(), rule(0)),
        (
            "TCP options (data offset 8 words)",
            with(&with_data, &|b| b[TCP_DATA_OFFSET] = 8 << 4),
            rule(0),
        ),
        (
            "an IP length past the frame",
            with(&ack, &|b| set_tot_len(b, 41 + 20)),
            drop(Malformed),
        ),
        (
            "an IP length too short for TCP",
            with(&with_data, &|b| set_tot_len(b, 20 + 19)),
            drop(Malformed),
        ),
        (
            "a TCP data offset under five words",
            with(&ack, &|b| b[TCP_DATA_OFFSET] = 4 << 4),
            drop(Malformed),
        ),
        (
            "a TCP data offset past the packet",
            with(&ack, &|b| b[TCP_DATA_OFFSET] = 15 << 4),
            drop(Malformed),
        ),
        (
            "a frame cut inside the TCP header",
            with(&ack, &|b| b.truncate(14 + 20 + 12)),
            drop(Malformed),
        ),
        (
            "an IP length too short for UDP",
            with(&udp.reply(0), &|b| set_tot_len(b, 20 + 7)),
            drop(Malformed),
        ),
    ];
    for (name, frame, expected) in &cases {
        assert_eq!(harness.check(frame).verdict, *expected, "`{name}`");
    }
    // A later fragment carries no ports: judged like any portless packet (the model decides).
    harness.check(&later_fragment.build());
    // The counters and TCP state the stage wrote are the model's.
    let _ = harness.sessions_agree();
}

/// Every CPU's `SRC_SIM` slot (`enforcer-ebpf/src/maps.rs`, `SrcSim`): the IPv4 address the
/// established stage last looked up there, the epoch it read, and the binding it found (the
/// SIM index of generation 0 and 1).
fn src_sim_slots(harness: &Harness) -> Vec<([u8; 4], u32, [u32; 2])> {
    let map = harness
        .enforcer
        .map("SRC_SIM")
        .expect("the program has SRC_SIM");
    let slots: aya::maps::PerCpuArray<&aya::maps::MapData, [u32; 4]> =
        aya::maps::PerCpuArray::try_from(map).expect("SRC_SIM is a per-CPU array of 16 bytes");
    slots
        .get(&0, 0)
        .expect("reading SRC_SIM")
        .iter()
        .map(|slot| (slot[0].to_ne_bytes(), slot[1], [slot[2], slot[3]]))
        .collect()
}

/// Sessions through BPF_PROG_TEST_RUN, kernel and reference model agreeing on every packet
/// and counter (`Harness::check`): what opens a session, what its replies get, what nothing
/// outside may do, and re-checks after a reload and a quarantine.
#[test]
fn sessions_follow_what_devices_open() {
    use DropReason::*;
    const SYN: u8 = 0x02;
    const SYN_ACK: u8 = 0x12;
    const ACK: u8 = 0x10;
    const PSH_ACK: u8 = 0x18;
    const RST: u8 = 0x04;
    const FIN_ACK: u8 = 0x11;
    let reply = |id: u32| Verdict::Pass(PassReason::Reply, id);
    let mut harness = Harness::new(POLICY, &[]);
    let syn = Frame::new("10.64.0.1", "198.51.100.10", L4::Tcp(443));
    let other_port = syn.clone().sport(40001);
    let udp = Frame::new("10.64.0.1", "198.51.100.5", L4::Udp(5005));
    let ping = Frame::new("10.64.0.1", "192.0.2.1", L4::Icmp(8));
    let ping6 = Frame::new("fd00:64:0:1::1", "2001:db8::9", L4::Icmp(128));
    let steps: Vec<(&str, Frame, Verdict)> = vec![
        ("the device's SYN opens a session", syn.clone(), rule(0)),
        ("the SYN-ACK is its reply", syn.reply(SYN_ACK), reply(0)),
        ("the device's ACK", syn.clone().flags(ACK), rule(0)),
        ("data from the service", syn.reply(PSH_ACK), reply(0)),
        (
            "the service to another port of the device: no session",
            Frame::new("198.51.100.10", "10.64.0.1", L4::Tcp(40005))
                .sport(443)
                .flags(ACK),
            drop(Inbound),
        ),
        (
            "an unsolicited SYN to the device",
            other_port.reply(SYN),
            drop(Inbound),
        ),
        (
            "a bare ACK from the device passes by its rule but opens nothing",
            other_port.clone().flags(ACK),
            rule(0),
        ),
        (
            "so its 'reply' is inbound",
            other_port.reply(ACK),
            drop(Inbound),
        ),
        (
            "an RST from the device",
            other_port.clone().flags(RST),
            rule(0),
        ),
        (
            "RST from the service closes the session",
            syn.reply(RST),
            reply(0),
        ),
        ("a FIN on it", syn.clone().flags(FIN_ACK), rule(0)),
        (
            "a new SYN from the device on the same ports",
            syn.clone(),
            rule(0),
        ),
        ("UDP opens a session", udp.clone(), rule(1)),
        ("the UDP reply", udp.reply(0), reply(1)),
        (
            "UDP from the service's other port: another flow, no session",
            Frame::new("198.51.100.5", "10.64.0.1", L4::Udp(40000)).sport(5006),
            drop(Inbound),
        ),
        (
            "unsolicited UDP to the device",
            Frame::new("198.51.100.5", "10.64.0.1", L4::Udp(40009)).sport(5005),
            drop(Inbound),
        ),
        ("an echo request opens a session", ping.clone(), rule(4)),
        ("its echo reply", ping.reply(0), reply(4)),
        ("an ICMPv6 echo request", ping6.clone(), rule(5)),
        ("its reply", ping6.reply(0), reply(5)),
        (
            "an echo reply nobody asked for",
            Frame::new("192.0.2.7", "10.64.0.1", L4::Icmp(0)).icmp4(0),
            drop(Inbound),
        ),
    ];
    for (name, frame, expected) in &steps {
        let built = frame.build();
        let outcome = harness.check(&built);
        assert_eq!(outcome.verdict, *expected, "step `{name}`");
    }

    // The kernel's table holds what the model's holds: the same sessions, each with its
    // device side, SIM, rule, TCP state, and packets and bytes counted each way.
    let kernel = harness.sessions_agree();
    assert!(
        kernel.iter().any(|(_, s)| s.4[1] >= 2),
        "replies were counted: {kernel:?}"
    );

    // A reload without the UDP rule: the UDP session is judged again on its next packet (the
    // service's reply), found denied, removed; the TCP session, still allowed, goes on.
    let without_udp = POLICY.replace(
        "  { to = [\"198.51.100.0/24\"], proto = \"udp\", ports = [\"5000-5010\"] },\n",
        "",
    );
    assert_ne!(without_udp, POLICY);
    harness.reload(&without_udp);
    for (name, frame, expected) in [
        (
            "the UDP reply after the rule went: the session is cut",
            udp.reply(0),
            drop(NoRule),
        ),
        ("and stays cut", udp.reply(0), drop(Inbound)),
        (
            "the TCP session, still allowed (rule 0)",
            syn.reply(ACK),
            reply(0),
        ),
    ] {
        assert_eq!(harness.check(&frame.build()).verdict, expected, "{name}");
    }

    // Quarantine cuts every session of the SIM on its next packet, either way.
    let sim = harness.sim_of("001010000000001");
    harness
        .enforcer
        .set_sim_quarantine(sim, true)
        .expect("quarantine");
    harness.enforcer.bump_epoch().expect("epoch");
    harness.reference.set_quarantined(sim, true);
    for (name, frame, expected) in [
        (
            "the service's packet to the quarantined device",
            syn.reply(ACK),
            drop(Quarantined),
        ),
        ("its session is gone", syn.reply(ACK), drop(Inbound)),
        ("the device's own packet", ping.clone(), drop(Quarantined)),
    ] {
        assert_eq!(harness.check(&frame.build()).verdict, expected, "{name}");
    }
}

/// Inbound rules through BPF_PROG_TEST_RUN, kernel and model agreeing on every packet and
/// counter: a maintenance host opens SSH to a segment's device and nothing else; the device
/// answers as replies; the session is cut when a reload removes the rule, and by quarantine.
#[test]
fn inbound_rules_let_named_hosts_open_sessions_and_nothing_else() {
    use DropReason::*;
    const SYN: u8 = 0x02;
    const SYN_ACK: u8 = 0x12;
    const ACK: u8 = 0x10;
    const POLICY: &str = r#"
pools = ["10.64.0.0/16", "fd00:64::/48"]

[[segments]]
name = "chargers"
rules = [ { to = ["198.51.100.0/24"], proto = "tcp", ports = [443] } ]
inbound = [
  { from = ["192.0.2.10"], proto = "tcp", ports = [22], description = "maintenance SSH" },
  { from = ["2001:db8:ff::/48"], proto = "tcp", ports = [22] },
  { from = ["192.0.2.0/24"], proto = "icmp" },
]

[[segments]]
name = "meters"

[[sims]]
imsi = "001010000000001"
ipv4 = "10.64.0.1"
ipv6 = "fd00:64:0:1::/64"
segment = "chargers"

[[sims]]
imsi = "001010000000002"
ipv4 = "10.64.0.2"
segment = "chargers"
state = "quarantined"

[[sims]]
imsi = "001010000000003"
ipv4 = "10.64.0.3"
segment = "meters"
"#;
    let reply = |id: u32| Verdict::Pass(PassReason::Reply, id);
    let inbound = |id: u32| Verdict::Pass(PassReason::Inbound, id);
    let mut harness = Harness::new(POLICY, &[]);
    let ssh = Frame::new("192.0.2.10", "10.64.0.1", L4::Tcp(22)).sport(50000);
    let ssh6 = Frame::new("2001:db8:ff::1", "fd00:64:0:1::1", L4::Tcp(22)).sport(50001);
    let ping = Frame::new("192.0.2.50", "10.64.0.1", L4::Icmp(8));
    let steps: Vec<(&str, Frame, Verdict)> = vec![
        (
            "the maintenance host's SYN opens a session",
            ssh.clone(),
            inbound(1),
        ),
        (
            "the device's SYN-ACK is its reply",
            ssh.reply(SYN_ACK),
            reply(1),
        ),
        ("the host's ACK", ssh.clone().flags(ACK), inbound(1)),
        ("the device's data", ssh.reply(ACK), reply(1)),
        (
            "the host to another port of the device",
            Frame::new("192.0.2.10", "10.64.0.1", L4::Tcp(23)).sport(50000),
            drop(Inbound),
        ),
        (
            "another host of the same /24 to port 22",
            Frame::new("192.0.2.11", "10.64.0.1", L4::Tcp(22)).sport(50000),
            drop(Inbound),
        ),
        (
            "the host to a device of another segment",
            Frame::new("192.0.2.10", "10.64.0.3", L4::Tcp(22)).sport(50000),
            drop(Inbound),
        ),
        (
            "the host to a quarantined device of the segment",
            Frame::new("192.0.2.10", "10.64.0.2", L4::Tcp(22)).sport(50000),
            drop(Inbound),
        ),
        (
            "the device opening a connection to the host from port 22: no rule",
            Frame::new("10.64.0.1", "192.0.2.10", L4::Tcp(50002)).sport(22),
            drop(NoRule),
        ),
        ("an IPv6 maintenance host", ssh6.clone(), inbound(2)),
        ("its reply", ssh6.reply(SYN_ACK), reply(2)),
        ("an echo request from the /24", ping.clone(), inbound(3)),
        ("the device's echo reply", ping.reply(0).icmp4(0), reply(3)),
        (
            "the device's own echo request with the same identifier is no reply",
            Frame::new("10.64.0.1", "192.0.2.50", L4::Icmp(8)),
            drop(NoRule),
        ),
        (
            "a new SYN from the host on the same ports",
            ssh.clone().flags(SYN),
            inbound(1),
        ),
    ];
    for (name, frame, expected) in &steps {
        assert_eq!(
            harness.check(&frame.build()).verdict,
            *expected,
            "step `{name}`"
        );
    }
    let kernel = harness.sessions_agree();
    assert_eq!(kernel.len(), 3, "SSH, SSH over IPv6, ping: {kernel:?}");
    assert!(
        kernel
            .iter()
            .all(|(_, s)| s.3 & enforcer_common::session::SESSION_INBOUND != 0),
        "every session is inbound: {kernel:?}"
    );
    assert!(
        kernel
            .iter()
            .any(|(_, s)| s.2 == enforcer_common::session::SessionState::Established as u8),
        "the device's SYN-ACK established the SSH session: {kernel:?}"
    );

    // A reload without the IPv4 SSH rule: the device's next packet re-checks the session in
    // the host's direction, finds it denied and cuts it.
    let without = POLICY.replace(
        "  { from = [\"192.0.2.10\"], proto = \"tcp\", ports = [22], description = \"maintenance SSH\" },\n",
        "",
    );
    assert_ne!(without, POLICY);
    harness.reload(&without);
    // Rule ids are positional here: the IPv6 rule is now 1, the ICMP rule 2.
    for (name, frame, expected) in [
        (
            "the device's packet after the rule went",
            ssh.reply(ACK),
            drop(Inbound),
        ),
        ("the session is gone", ssh.clone().flags(ACK), drop(Inbound)),
        ("the IPv6 session, still allowed", ssh6.reply(ACK), reply(1)),
    ] {
        assert_eq!(harness.check(&frame.build()).verdict, expected, "{name}");
    }

    // Quarantine cuts the device's inbound sessions too.
    let sim = harness.sim_of("001010000000001");
    harness
        .enforcer
        .set_sim_quarantine(sim, true)
        .expect("quarantine");
    harness.enforcer.bump_epoch().expect("epoch");
    harness.reference.set_quarantined(sim, true);
    for (name, frame, expected) in [
        (
            "the host's packet to the quarantined device",
            ssh6.clone().flags(ACK),
            drop(Quarantined),
        ),
        (
            "its session is gone",
            ssh6.clone().flags(ACK),
            drop(Inbound),
        ),
        ("a new SYN", ssh6.clone(), drop(Inbound)),
    ] {
        assert_eq!(harness.check(&frame.build()).verdict, expected, "{name}");
    }
}

/// ICMP and ICMPv6 errors (RFC 792, RFC 4443) quoting a packet of a live session pass as its
/// replies, either way (path MTU discovery, unreachables); an error quoting no session, a
/// session of an older epoch, too short a quote, or a quote whose source is not the error's
/// destination is judged as the packet it is (toward a device: `inbound`).
#[test]
fn icmp_errors_quoting_a_session_are_its_replies() {
    use DropReason::*;
    use enforcer_common::maps::{IFACE_DROP_NON_POOL, IFACE_SERVICE};
    let reply = |id: u32| Verdict::Pass(PassReason::Reply, id);
    let mut harness = Harness::new(POLICY, &[]);
    let syn = Frame::new("10.64.0.1", "198.51.100.10", L4::Tcp(443));
    let udp = Frame::new("10.64.0.1", "198.51.100.5", L4::Udp(5005));
    let ping = Frame::new("10.64.0.1", "192.0.2.1", L4::Icmp(8));
    let tcp6 = Frame::new("fd00:64:0:1::1", "2001:db8::9", L4::Tcp(8080));
    let unopened = Frame::new("10.64.0.1", "198.51.100.10", L4::Tcp(443)).sport(40099);
    let steps: Vec<(&str, Frame, Verdict)> = vec![
        ("the device's SYN opens a session", syn.clone(), rule(0)),
        (
            "a router's fragmentation needed quoting it",
            syn.icmp_error("203.0.113.1", 3, 8),
            reply(0),
        ),
        (
            "time exceeded, quoting 28 bytes",
            syn.icmp_error("203.0.113.1", 11, 28),
            reply(0),
        ),
        (
            "an error quoting a flow the device never opened",
            unopened.icmp_error("203.0.113.1", 3, 8),
            drop(Inbound),
        ),
        (
            "a quote cut inside the transport header",
            syn.icmp_error("203.0.113.1", 3, 4),
            drop(Inbound),
        ),
        (
            "the session's quote sent to another device",
            Frame::new("203.0.113.1", "10.65.0.3", L4::Icmp(3))
                .icmp4(3)
                .quote_of(&syn),
            drop(Inbound),
        ),
        (
            "not an error type: a redirect quoting the session",
            syn.icmp_error("203.0.113.1", 5, 8),
            drop(Inbound),
        ),
        ("UDP opens a session", udp.clone(), rule(1)),
        ("its reply", udp.reply(0), reply(1)),
        (
            "the device's port unreachable about the reply goes out",
            udp.reply(0).icmp_error("10.64.0.1", 3, 8),
            reply(1),
        ),
        (
            "another device forging that error reaches nothing its rules forbid",
            udp.reply(0).icmp_error("10.65.0.3", 3, 8),
            drop(NoRule),
        ),
        (
            "a pool address without a SIM sending an error toward the device",
            syn.icmp_error("10.64.9.9", 3, 8),
            drop(Spoofed),
        ),
        ("an echo request", ping.clone(), rule(4)),
        (
            "time exceeded quoting the echo request",
            ping.icmp_error("192.0.2.254", 11, 8),
            reply(4),
        ),
        ("IPv6: a TCP SYN", tcp6.clone(), rule(3)),
        (
            "packet too big quoting it",
            tcp6.icmp_error("2001:db8::1", 2, 8),
            reply(3),
        ),
        (
            "an ICMPv6 destination unreachable quoting it",
            tcp6.icmp_error("2001:db8::1", 1, 8),
            reply(3),
        ),
    ];
    for (name, frame, expected) in &steps {
        assert_eq!(
            harness.check(&frame.build()).verdict,
            *expected,
            "step `{name}`"
        );
    }
    let sessions = |harness: &Harness| harness.enforcer.sessions().expect("SESSIONS").len();
    let before = sessions(&harness);
    assert_eq!(before, 4, "errors open no session");

    // Where an error may come from, as any packet of its session: toward the device not on a
    // core interface, from the device not on a service one.
    let on = |harness: &mut Harness, flags: u32| {
        harness
            .enforcer
            .set_iface(TEST_IFINDEX, flags)
            .expect("IFACES");
        harness.reference.set_iface(TEST_IFINDEX, flags);
    };
    on(&mut harness, IFACE_DROP_NON_POOL);
    assert_eq!(
        harness
            .check(&syn.icmp_error("203.0.113.1", 3, 8).build())
            .verdict,
        drop(NonPool),
        "an error toward the device on a core interface"
    );
    on(&mut harness, IFACE_SERVICE);
    assert_eq!(
        harness
            .check(&udp.reply(0).icmp_error("10.64.0.1", 3, 8).build())
            .verdict,
        drop(Spoofed),
        "the device's error on a service interface"
    );
    on(&mut harness, 0);

    // After another SIM's quarantine raised the epoch, the sessions wait for their next packet
    // to be judged again: an error before that is not theirs yet.
    let meter = harness.sim_of("001010000000003");
    harness
        .enforcer
        .set_sim_quarantine(meter, true)
        .expect("quarantine");
    harness.enforcer.bump_epoch().expect("epoch");
    harness.reference.set_quarantined(meter, true);
    for (name, frame, expected) in [
        (
            "an error quoting a session of the older epoch",
            syn.icmp_error("203.0.113.1", 3, 8),
            drop(Inbound),
        ),
        (
            "the session's own next packet re-checks it",
            syn.reply(0x12),
            reply(0),
        ),
        (
            "then the error is its reply again",
            syn.icmp_error("203.0.113.1", 3, 8),
            reply(0),
        ),
    ] {
        assert_eq!(harness.check(&frame.build()).verdict, expected, "{name}");
    }
    assert_eq!(sessions(&harness), before, "nothing was removed or added");
}

/// The daemon's sweep removes sessions idle past their state's timeout, and only those.
#[test]
fn idle_sessions_are_swept() {
    use enforcer_common::session::Timeouts;
    let mut harness = Harness::new(POLICY, &[]);
    let udp = Frame::new("10.64.0.1", "198.51.100.5", L4::Udp(5005));
    let syn = Frame::new("10.64.0.1", "198.51.100.10", L4::Tcp(443));
    for (frame, id) in [(&udp, 1), (&syn, 0)] {
        assert_eq!(harness.check(&frame.build()).verdict, rule(id));
    }
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to write.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &raw mut ts) };
    let now = u64::try_from(ts.tv_sec).expect("time") * 1_000_000_000
        + u64::try_from(ts.tv_nsec).expect("time");
    let timeouts = Timeouts {
        tcp_syn: 30,
        udp: 120,
        ..Timeouts::default()
    };
    let sweep = harness
        .enforcer
        .expire_sessions(now, &timeouts, false)
        .expect("sweep");
    assert_eq!(
        (sweep.live_count, sweep.expired.len()),
        (2, 0),
        "fresh sessions stay"
    );
    // A minute later the unanswered SYN (30 s) has expired, the UDP session (120 s) not.
    let later = now + 60 * 1_000_000_000;
    let sweep = harness
        .enforcer
        .expire_sessions(later, &timeouts, false)
        .expect("sweep");
    assert_eq!((sweep.live_count, sweep.expired.len()), (1, 1));
    // Its SYN-ACK now finds no session.
    let outcome = harness
        .enforcer
        .test_run(&syn.reply(0x12).build(), 1, TEST_IFINDEX);
    assert_eq!(
        outcome.expect("test run").0,
        enforcer_common::verdict::XDP_DROP,
        "the expired session's reply is inbound"
    );
    let sweep = harness
        .enforcer
        .expire_sessions(now + 200 * 1_000_000_000, &timeouts, false)
        .expect("sweep");
    assert_eq!((sweep.live_count, sweep.expired.len()), (0, 1));
}

/// The program stamps sessions with jiffies scaled by the loader's calibration: the times
/// read as `CLOCK_MONOTONIC_COARSE` (within a tick of the clock read around the packet), and
/// they move with it (a packet 60 ms later moves `seen_ns` by 60 ms, within two ticks). A
/// program left uncalibrated stamps 0, and a wrong tick moves the second stamp wrongly.
#[test]
fn sessions_are_stamped_with_the_monotonic_clock_from_jiffies() {
    use enforcer::telemetry::monotonic_coarse_ns;
    let mut harness = Harness::new(POLICY, &[]);
    let clock = harness.enforcer.clock();
    assert!(
        enforcer::clock::HZ_CHOICES.contains(&clock.hz),
        "HZ {} measured",
        clock.hz
    );
    let tick = clock.ns_per_jiffy;
    let udp = Frame::new("10.64.0.1", "198.51.100.5", L4::Udp(5005)).build();
    let stamp = |harness: &mut Harness| {
        let before = monotonic_coarse_ns();
        assert_eq!(harness.check(&udp).verdict, rule(1));
        let after = monotonic_coarse_ns();
        let sessions = harness.enforcer.sessions().expect("SESSIONS");
        assert_eq!(sessions.len(), 1);
        (before, sessions[0].1, after)
    };
    let (before1, first, after1) = stamp(&mut harness);
    assert!(
        first.created_ns + tick >= before1 && first.created_ns <= after1 + tick,
        "created {} not within a tick ({tick} ns) of [{before1}, {after1}]",
        first.created_ns
    );
    assert_eq!(first.seen_ns, first.created_ns);
    std::thread::sleep(std::time::Duration::from_millis(60));
    let (before2, second, after2) = stamp(&mut harness);
    assert_eq!(second.created_ns, first.created_ns, "the same session");
    assert!(
        second.seen_ns + tick >= before2 && second.seen_ns <= after2 + tick,
        "seen {} not within a tick of [{before2}, {after2}]",
        second.seen_ns
    );
    // The stamps moved as much as the clock between the two packets, within two ticks.
    let moved = second.seen_ns.saturating_sub(first.seen_ns);
    assert!(
        moved + 2 * tick >= before2 - after1 && moved <= after2 - before1 + 2 * tick,
        "seen moved {moved} ns between [{before1}, {after1}] and [{before2}, {after2}]"
    );
}

/// The session scan's BPF iterator picks exactly the sessions `enforcer_common::scan::wanted`
/// picks when the whole table is read and filtered in userspace, counts every entry, and
/// really filters (a scan that copied out everything would pass the comparison). 12,000
/// entries: more than one read of the iterator's output (32 KiB) holds.
#[test]
fn the_session_scan_in_the_kernel_matches_the_filtered_batch_read() {
    use enforcer_common::{
        scan::ScanArgs,
        session::{Session, SessionKey, Timeouts},
    };
    use integration_tests::rng::Rng;
    const S: u64 = 1_000_000_000;
    let seed = 0x5ca9_u64 ^ u64::from(std::process::id());
    let mut rng = Rng::new(seed);
    let harness = Harness::with_sessions(POLICY, &[], 20_000);
    // Where the kernel refuses tracing programs (a sandbox's policy: this project's
    // development machine answers EPERM) the scan falls back to the batch read and this test
    // compares that path with itself; `cargo xtask vm-test` requires the iterator on Debian's
    // kernels.
    match harness.enforcer.scans_in_kernel() {
        Ok(()) => {}
        Err(err) if std::env::var_os("ENFORCER_SCAN_ITER").is_some_and(|v| v == "required") => {
            panic!("the session scan's iterator did not load on this kernel: {err}")
        }
        Err(err) => eprintln!("the session scan runs as a batch read here: {err}"),
    }
    let now = 10_000 * S;
    let table: Vec<(SessionKey, Session)> = (0..12_000u32)
        .map(|i| {
            let mut key = SessionKey {
                port_a: (i % 60_000) as u16,
                port_b: 443,
                proto: *rng.pick(&[6u8, 17, 1]),
                ..SessionKey::default()
            };
            key.addr_a[..4].copy_from_slice(&(0x0A40_0000 | i).to_be_bytes());
            let seen_ns = now - rng.below(300 * S);
            let session = Session {
                sim: i,
                state: rng.below(5) as u8,
                created_ns: seen_ns - rng.below(100 * S),
                seen_ns,
                packets: [rng.below(100), rng.below(100)],
                ..Session::default()
            };
            (key, session)
        })
        .collect();
    harness
        .enforcer
        .insert_sessions(&table)
        .expect("filling SESSIONS");
    let mut filtered_some = false;
    for round in 0..8 {
        let args = ScanArgs {
            now_ns: now,
            since_ns: now - rng.below(120 * S),
            all: u64::from(round == 0),
            timeouts: Timeouts {
                tcp_syn: rng.range(1, 200),
                tcp_established: rng.range(1, 400),
                tcp_closed: rng.range(1, 50),
                udp: rng.range(1, 300),
                icmp: rng.range(1, 100),
            },
            visited: 0,
        };
        let (mut kernel, visited) = harness.enforcer.scan_sessions(&args).expect("scan");
        let (mut user, total) = harness
            .enforcer
            .scan_sessions_batched(&args)
            .expect("batched scan");
        kernel.sort_by_key(|(k, _)| *k);
        user.sort_by_key(|(k, _)| *k);
        // What the scan should pick, stated here apart from `enforcer_common::scan::wanted`.
        let t = &args.timeouts;
        let mut expected: Vec<_> = table
            .iter()
            .filter(|(k, s)| {
                let limit = match s.state {
                    1 => t.tcp_syn,
                    2 => t.tcp_established,
                    3.. => t.tcp_closed,
                    _ if k.proto == 17 => t.udp,
                    _ => t.icmp,
                };
                args.all != 0
                    || s.seen_ns > args.since_ns
                    || s.created_ns > args.since_ns
                    || now - s.seen_ns > limit * S
            })
            .copied()
            .collect();
        expected.sort_by_key(|(k, _)| *k);
        assert!(
            user == expected,
            "seed {seed:#x}, {args:?}: userspace picked {} sessions, the test expects {}",
            user.len(),
            expected.len()
        );
        assert_eq!(
            (visited, total),
            (table.len(), table.len()),
            "seed {seed:#x}, {args:?}: entries visited"
        );
        assert!(
            kernel == user,
            "seed {seed:#x}, {args:?}: the kernel picked {} sessions, userspace {}",
            kernel.len(),
            user.len()
        );
        if round == 0 {
            assert_eq!(
                kernel.len(),
                table.len(),
                "a scan of all copies out everything"
            );
        } else {
            filtered_some |= kernel.len() < table.len() && !kernel.is_empty();
        }
    }
    assert!(
        filtered_some,
        "seed {seed:#x}: no scan picked a strict, non-empty subset"
    );
}

/// A table filled by one device's sessions fails closed: the device's next new session is
/// dropped (`sessions_full`) and counted, nothing the policy forbids gets through, and the live
/// sessions, another device's among them, keep working.
#[test]
fn a_full_session_table_fails_closed_and_keeps_live_sessions() {
    let reply = |id: u32| Verdict::Pass(PassReason::Reply, id);
    let mut harness = Harness::with_sessions(POLICY, &[], 4);
    // A meter's session first (10.65.0.3, meters rule 0 of its segment: any to 203.0.113.5).
    let meter = Frame::new("10.65.0.3", "203.0.113.5", L4::Udp(9000));
    let meter_rule = match harness.check(&meter.build()).verdict {
        Verdict::Pass(PassReason::Rule, id) => id,
        other => panic!("the meter's flow is allowed, got {other:?}"),
    };
    // The charger fills the rest: DNS from three source ports.
    let dns = |port: u16| Frame::new("10.64.0.1", "8.8.8.8", L4::Udp(53)).sport(port);
    for port in [1000, 1001, 1002] {
        assert_eq!(
            harness.check(&dns(port).build()).verdict,
            rule(2),
            "session {port}"
        );
    }
    // Full: the fourth DNS flow is dropped, and counted as such (kernel and model agree).
    assert_eq!(
        harness.check(&dns(1003).build()).verdict,
        drop(DropReason::SessionsFull)
    );
    // Nothing forbidden passes, full or not.
    assert_eq!(
        harness
            .check(&Frame::new("10.64.0.1", "8.8.4.4", L4::Udp(99)).build())
            .verdict,
        drop(DropReason::NoRule)
    );
    assert_eq!(
        harness.check(&dns(1003).reply(0).build()).verdict,
        drop(DropReason::Inbound),
        "no session was made for the refused flow"
    );
    // The live sessions, the other device's too, keep working both ways.
    assert_eq!(
        harness.check(&meter.reply(0).build()).verdict,
        reply(meter_rule)
    );
    assert_eq!(harness.check(&meter.build()).verdict, rule(meter_rule));
    assert_eq!(harness.check(&dns(1000).reply(0).build()).verdict, reply(2));
}

/// Where a session's packets may come from, with interface roles: a device's address never
/// arrives from the services' side, a reply never arrives on a core interface, an echo request
/// is no reply, and a quarantined SIM at the far end of a session sends nothing. One test
/// interface plays both roles: its flags are switched between packets, in the kernel and the
/// model alike.
#[test]
fn sessions_hold_to_interface_roles_and_quarantine() {
    use DropReason::*;
    use enforcer_common::maps::{IFACE_DROP_NON_POOL, IFACE_SERVICE};
    let mut harness = Harness::new(POLICY, &[]);
    let on = |harness: &mut Harness, flags: u32| {
        harness
            .enforcer
            .set_iface(TEST_IFINDEX, flags)
            .expect("IFACES");
        harness.reference.set_iface(TEST_IFINDEX, flags);
    };
    let reply = |id: u32| Verdict::Pass(PassReason::Reply, id);
    let udp = Frame::new("10.64.0.1", "198.51.100.5", L4::Udp(5005));
    let ping = Frame::new("10.64.0.1", "192.0.2.1", L4::Icmp(8));
    on(&mut harness, IFACE_DROP_NON_POOL);
    assert_eq!(
        harness.check(&udp.build()).verdict,
        rule(1),
        "the device opens a session"
    );
    assert_eq!(
        harness.check(&ping.build()).verdict,
        rule(4),
        "and an echo session"
    );
    on(&mut harness, IFACE_SERVICE);
    assert_eq!(
        harness.check(&udp.reply(0).build()).verdict,
        reply(1),
        "its reply"
    );
    for (name, frame, expected) in [
        (
            "the device's address from the services' side, in its session: forged",
            udp.clone(),
            drop(Spoofed),
        ),
        (
            "the device's address from the services' side, new: forged, nothing opened",
            Frame::new("10.64.0.1", "198.51.100.6", L4::Udp(5005)),
            drop(Spoofed),
        ),
        (
            "the peer's echo request with the same identifier: no reply",
            ping.reply(0).icmp4(8),
            drop(Inbound),
        ),
    ] {
        assert_eq!(harness.check(&frame.build()).verdict, expected, "{name}");
    }
    on(&mut harness, IFACE_DROP_NON_POOL);
    assert_eq!(
        harness.check(&udp.reply(0).build()).verdict,
        drop(NonPool),
        "a 'reply' on the core side is a device forging the peer's address"
    );
    // A meter may open TCP/22 to the chargers' segment: to the active charger a session, to
    // the quarantined one (10.64.0.2) none, so its answers stay dropped.
    on(&mut harness, 0);
    let ssh = |to: &str| Frame::new("10.65.0.3", to, L4::Tcp(22));
    let meter_rule = match harness.check(&ssh("10.64.0.1").build()).verdict {
        Verdict::Pass(PassReason::Rule, id) => id,
        other => panic!("meter to charger: {other:?}"),
    };
    assert_eq!(
        harness.check(&ssh("10.64.0.1").reply(0x12).build()).verdict,
        reply(meter_rule)
    );
    assert_eq!(
        harness.check(&ssh("10.64.0.2").build()).verdict,
        rule(meter_rule),
        "the meter's packet passes by its rule"
    );
    assert_eq!(
        harness.check(&ssh("10.64.0.2").reply(0x12).build()).verdict,
        drop(Quarantined),
        "the quarantined SIM's answer is its own packet: dropped"
    );
    // Quarantining the charger that has a session cuts it at its next packet, either way.
    let charger = harness.sim_of("001010000000001");
    harness
        .enforcer
        .set_sim_quarantine(charger, true)
        .expect("quarantine");
    harness.enforcer.bump_epoch().expect("epoch");
    harness.reference.set_quarantined(charger, true);
    assert_eq!(
        harness.check(&ssh("10.64.0.1").build()).verdict,
        drop(Quarantined),
        "the meter's next packet to the quarantined charger"
    );
    assert_eq!(
        harness.check(&ssh("10.64.0.1").reply(0x10).build()).verdict,
        drop(Quarantined),
        "and the charger's"
    );
}

/// A denied packet raises a deny event naming its sender, addresses, ports and reason; an
/// allowed one raises none. A SIM's flood raises `DENY_EVENTS_PER_SECOND` events a second, and
/// its next event, a window later, carries the count of those suppressed.
#[test]
fn denied_packets_raise_rate_limited_deny_events() {
    use enforcer_common::maps::{DENY_EVENTS_PER_SECOND, DENY_NO_SIM};
    let mut harness = Harness::new(POLICY, &[]);
    let sim = harness.sim_of("001010000000001");
    let allowed = Frame::new("10.64.0.1", "198.51.100.10", L4::Tcp(443)).build();
    let denied = Frame::new("10.64.0.1", "198.51.100.10", L4::Tcp(80)).build();
    harness.check(&allowed);
    assert!(
        harness
            .enforcer
            .drain_deny_events()
            .expect("ring")
            .is_empty()
    );
    let flood = DENY_EVENTS_PER_SECOND + 15;
    for _ in 0..flood {
        harness.check(&denied);
    }
    let events = harness.enforcer.drain_deny_events().expect("ring");
    assert_eq!(events.len(), DENY_EVENTS_PER_SECOND as usize, "{events:?}");
    let e = events[0];
    assert_eq!((e.sim, e.suppressed, e.proto, e.v6), (sim, 0, 6, 0));
    assert_eq!(e.reason, enforcer_common::DropReason::NoRule as u8);
    assert_eq!(&e.src[..4], &[10, 64, 0, 1]);
    assert_eq!(&e.dst[..4], &[198, 51, 100, 10]);
    assert_eq!(e.dport, 80);
    assert_eq!(e.ifindex, TEST_IFINDEX);
    assert!(events.windows(2).all(|w| w[0].time_ns <= w[1].time_ns));
    std::thread::sleep(std::time::Duration::from_millis(1100));
    harness.check(&denied);
    let events = harness.enforcer.drain_deny_events().expect("ring");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].suppressed, 15, "the flood's suppressed packets");
    // A spoofed source (a pool address bound to no SIM) reports under the no-SIM budget.
    let spoofed = Frame::new("10.64.9.9", "198.51.100.10", L4::Tcp(443)).build();
    harness.check(&spoofed);
    let events = harness.enforcer.drain_deny_events().expect("ring");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].sim, DENY_NO_SIM);
    assert_eq!(events[0].reason, enforcer_common::DropReason::Spoofed as u8);
}

/// A flood of denials from more SIMs than the ring buffer holds events, with no reader: once
/// the ring is full, a SIM that has no deny-event budget yet gets none (a budget would cost an
/// LRU insert and an eviction per packet of such a flood), and once the program has found the
/// ring full it looks up no budget for the rest of that kernel tick (a lookup per packet in the
/// LRU of budgets is a cache miss at a million SIMs): a SIM that has a budget counts only the
/// first packet its CPU denies in each tick, not a thousand in a row. Every packet is counted
/// as dropped either way, and once the ring drains (and the tick has passed) both SIMs report
/// again.
#[test]
fn a_full_deny_ring_touches_no_budgets() {
    use std::fmt::Write as _;
    const SIMS: u32 = 14_000;
    let mut text = String::from(
        "pools = [\"10.64.0.0/16\"]\n[[segments]]\nname = \"meters\"\n\
         rules = [ { to = [\"198.51.100.10\"], proto = \"tcp\", ports = [443] } ]\n",
    );
    let addr = |i: u32| format!("10.64.{}.{}", (i + 1) / 256, (i + 1) % 256);
    for i in 0..SIMS {
        let _ = write!(
            text,
            "[[sims]]\nimsi = \"00101{:010}\"\nipv4 = \"{}\"\nsegment = \"meters\"\n",
            i + 1,
            addr(i)
        );
    }
    let mut harness = Harness::new(&text, &[]);
    let denied = |i: u32| {
        Frame::new(&addr(i), "198.51.100.10", L4::Tcp(80))
            .flags(0x02)
            .build()
    };
    let drop = enforcer_common::verdict::XDP_DROP;
    for i in 0..SIMS {
        assert_eq!(harness.run(&denied(i)), drop);
    }
    let (first, last) = (0, SIMS - 1);
    let sim = |h: &Harness, i: u32| h.sim_of(&format!("00101{:010}", i + 1));
    let (first_sim, last_sim) = (sim(&harness, first), sim(&harness, last));
    // A thousand denials of a SIM that has a budget, in one run of the program (well within a
    // few ticks): without the per-tick check each would be looked up and counted.
    const REPEAT: u32 = 1_000;
    let (action, _) = harness
        .enforcer
        .test_run(&denied(first), REPEAT, TEST_IFINDEX)
        .expect("BPF_PROG_TEST_RUN");
    assert_eq!(action, drop);
    assert_eq!(harness.run(&denied(last)), drop);
    let events = harness.enforcer.drain_deny_events().expect("ring");
    // The ring holds 1 MiB of 80-byte records (72-byte events, 8-byte headers).
    let capacity = enforcer_common::maps::DENY_EVENTS_BYTES as usize / 80;
    assert!(capacity < SIMS as usize);
    assert_eq!(events.len(), capacity, "the ring was full");
    assert_eq!(events[0].sim, first_sim);
    assert!(events.iter().all(|e| e.sim != last_sim));
    // Past the tick in which the program last found the ring full (10 ms at HZ=100).
    std::thread::sleep(std::time::Duration::from_millis(30));
    assert_eq!(harness.run(&denied(first)), drop);
    assert_eq!(harness.run(&denied(last)), drop);
    let events = harness.enforcer.drain_deny_events().expect("ring");
    assert_eq!(
        events.len(),
        2,
        "one event each once the ring drained: {events:?}"
    );
    let suppressed = |sim: u32| {
        events
            .iter()
            .find(|e| e.sim == sim)
            .map(|e| e.suppressed)
            .unwrap_or_else(|| panic!("no event of SIM {sim}: {events:?}"))
    };
    assert!(
        suppressed(first_sim) < 100,
        "a SIM with a budget counted {} of {REPEAT} packets denied while the ring was full",
        suppressed(first_sim)
    );
    assert_eq!(
        suppressed(last_sim),
        0,
        "a SIM with none got no budget while the ring was full"
    );
    for (sim, packets) in [(first_sim, 2 + u64::from(REPEAT)), (last_sim, 3)] {
        assert_eq!(
            harness.sim(sim).drop_packets,
            packets,
            "SIM {sim}: every drop counted"
        );
    }
}

/// Audit mode: an audit segment's SIM passes what its rules would deny (counted as `audit`,
/// reported as an `audit` deny event), opens a session so the reply comes back, and a packet
/// from outside toward it passes as audit too; a quarantined SIM still sends nothing. Once the
/// segment is switched to enforce, the audit session's next packet is judged again and dropped.
#[test]
fn audit_mode_passes_what_would_be_denied_until_enforced() {
    use enforcer_common::{
        DropReason, PassReason, Verdict, maps::DENY_EVENT_AUDIT, rules::AUDIT_RULE,
    };
    let audit = r#"
pools = ["10.64.0.0/16"]
[[segments]]
name = "trial"
mode = "audit"
rules = [ { to = ["198.51.100.10"], proto = "tcp", ports = [443] } ]
[[sims]]
imsi = "001010000000001"
ipv4 = "10.64.0.1"
segment = "trial"
[[sims]]
imsi = "001010000000002"
ipv4 = "10.64.0.2"
segment = "trial"
state = "quarantined"
"#;
    let mut harness = Harness::new(audit, &[]);
    let syn = Frame::new("10.64.0.1", "198.51.100.10", L4::Tcp(80)).flags(0x02);
    assert_eq!(
        harness.check(&syn.build()).verdict,
        Verdict::Pass(PassReason::Audit, AUDIT_RULE)
    );
    assert_eq!(
        harness.check(&syn.reply(0x12).build()).verdict,
        Verdict::Pass(PassReason::Reply, AUDIT_RULE),
        "the reply of an audit session comes back"
    );
    let allowed = Frame::new("10.64.0.1", "198.51.100.10", L4::Tcp(443)).flags(0x02);
    assert!(matches!(
        harness.check(&allowed.build()).verdict,
        Verdict::Pass(PassReason::Rule, _)
    ));
    let inbound = Frame::new("203.0.113.9", "10.64.0.1", L4::Tcp(22)).flags(0x02);
    assert_eq!(
        harness.check(&inbound.build()).verdict,
        Verdict::Pass(PassReason::Audit, AUDIT_RULE),
        "from outside toward an audit SIM"
    );
    let lateral = Frame::new("10.64.0.1", "10.64.0.2", L4::Tcp(22)).flags(0x02);
    assert_eq!(
        harness.check(&lateral.build()).verdict,
        Verdict::Drop(DropReason::Lateral),
        "never toward a quarantined SIM"
    );
    let quarantined = Frame::new("10.64.0.2", "198.51.100.10", L4::Tcp(80)).flags(0x02);
    assert_eq!(
        harness.check(&quarantined.build()).verdict,
        Verdict::Drop(DropReason::Quarantined)
    );
    let events = harness.enforcer.drain_deny_events().expect("ring");
    assert!(
        events
            .iter()
            .any(|e| e.reason == DENY_EVENT_AUDIT && e.dport == 80),
        "{events:?}"
    );
    // Enforced: the audit session's next packet is denied, its reply no longer comes back.
    harness.reload(&audit.replace("mode = \"audit\"\n", ""));
    assert_eq!(
        harness.check(&syn.reply(0x10).build()).verdict,
        Verdict::Drop(DropReason::NoRule)
    );
    assert_eq!(
        harness.check(&syn.clone().flags(0x10).build()).verdict,
        Verdict::Drop(DropReason::NoRule)
    );
}

/// The deny cache (`enforcer-ebpf/src/deny_cache.rs`): a `no_rule` drop of a frame whose
/// session is absent, sent by a SIM with neither flags nor rules of its own, is remembered
/// under the policy epoch, and the next frame of that kind (interface, segment, destination,
/// protocol, port) from such a SIM is dropped from the cache, reported and counted as the
/// pipeline would (`Harness::check` compares every frame with the model). A SIM with rules of
/// its own is never remembered; an entry decides only under its epoch (shown with an entry
/// planted for a frame the policy allows); a reload that allows the kind, or a quarantine,
/// takes effect on the next frame.
#[test]
fn a_denied_kind_is_dropped_again_from_the_deny_cache_under_its_epoch() {
    use enforcer_common::{
        decide::DenyKey,
        maps::{IPPROTO_TCP, IPPROTO_UDP},
    };
    let mut harness = Harness::new(POLICY, &[]);
    let meter = harness.sim_of("001010000000003");
    let segment_of = |harness: &Harness, addr: [u8; 4]| {
        harness
            .compiled
            .image
            .sims_v4
            .iter()
            .find(|(a, _)| *a == addr)
            .expect("a SIM of the policy")
            .1
            .segment
    };
    let meters = segment_of(&harness, [10, 65, 0, 3]);
    let chargers = segment_of(&harness, [10, 64, 0, 1]);
    let denied = |sport: u16| {
        Frame::new("10.65.0.3", "198.51.100.77", L4::Udp(9999))
            .sport(sport)
            .build()
    };
    let key = |harness: &Harness, segment: u16, dst: [u8; 4], proto: u8, dport: u16| {
        let epoch = harness.enforcer.epoch().expect("epoch");
        let generation = harness.enforcer.generation().expect("generation");
        DenyKey::new(epoch, generation, TEST_IFINDEX, dst, segment, proto, dport)
    };
    // A no_rule drop of the frame from `sport`, and its kind remembered.
    let denied_and_remembered = |harness: &mut Harness, sport: u16| {
        assert_eq!(
            harness.check(&denied(sport)).verdict,
            drop(DropReason::NoRule)
        );
        let kind = key(harness, meters, [198, 51, 100, 77], IPPROTO_UDP, 9999);
        assert!(
            deny_cache(harness).contains(&kind),
            "the pipeline's no_rule drop is remembered: {kind:?}"
        );
    };
    denied_and_remembered(&mut harness, 40000);
    let _ = harness.enforcer.drain_deny_events().expect("ring");
    // The next frames of the kind (new flows: other source ports) come from the cache.
    for sport in 40001..40004 {
        assert_eq!(
            harness.check(&denied(sport)).verdict,
            drop(DropReason::NoRule)
        );
    }
    let events = harness.enforcer.drain_deny_events().expect("ring");
    assert_eq!(events.len(), 3, "each cached drop is reported: {events:?}");
    let e = events[2];
    assert_eq!((e.sim, e.proto, e.dport, e.sport), (meter, 17, 9999, 40003));
    assert_eq!(e.reason, DropReason::NoRule as u8);
    assert_eq!(
        (&e.src[..4], &e.dst[..4]),
        (&[10, 65, 0, 3][..], &[198, 51, 100, 77][..])
    );
    assert_eq!(e.ifindex, TEST_IFINDEX);
    // A SIM with rules of its own: its denial depends on more than the key.
    let charger = Frame::new("10.64.0.1", "198.51.100.77", L4::Udp(9999)).build();
    assert_eq!(harness.check(&charger).verdict, drop(DropReason::NoRule));
    assert!(
        !deny_cache(&harness)
            .iter()
            .any(|k| k.filled == 1 && k.segment == chargers),
        "no entry for a SIM with rules of its own"
    );
    // An entry alone decides: planted for a frame the policy allows (the meters may reach
    // 203.0.113.5), it drops it, counted and reported as a no_rule drop of the SIM (so the
    // cache's own count and report ran), but only under the epoch it names.
    let allowed = Frame::new("10.65.0.3", "203.0.113.5", L4::Udp(53)).build();
    plant(
        &harness,
        key(&harness, meters, [203, 0, 113, 5], IPPROTO_UDP, 53),
    );
    let sim_entry = Some(enforcer_common::maps::SimEntry {
        sim: meter,
        segment: meters,
        flags: 0,
        tiers: 0,
    });
    let counted = |harness: &Harness| {
        (
            harness.sim(meter).drop_packets,
            harness.verdict_packets(sim_entry, drop(DropReason::NoRule)),
        )
    };
    let before = counted(&harness);
    assert_eq!(
        harness.run(&allowed),
        enforcer_common::verdict::XDP_DROP,
        "the cache is consulted"
    );
    let after = counted(&harness);
    assert_eq!(
        (after.0 - before.0, after.1 - before.1),
        (1, 1),
        "the cache counts its drop for the SIM and its segment"
    );
    let events = harness.enforcer.drain_deny_events().expect("ring");
    assert!(
        events
            .iter()
            .any(|e| e.sim == meter && e.dst[..4] == [203, 0, 113, 5] && e.dport == 53),
        "the cache reports its drop: {events:?}"
    );
    // A SIM with rules of its own is not judged by the cache, even with an entry of its kind:
    // the charger's own rule lets it reach 203.0.113.7 on TCP/1500.
    let own = Frame::new("10.64.0.1", "203.0.113.7", L4::Tcp(1500)).build();
    plant(
        &harness,
        key(&harness, chargers, [203, 0, 113, 7], IPPROTO_TCP, 1500),
    );
    assert!(matches!(
        harness.check(&own).verdict,
        Verdict::Pass(PassReason::Rule, _)
    ));
    harness.enforcer.bump_epoch().expect("epoch");
    assert!(matches!(
        harness.check(&allowed).verdict,
        Verdict::Pass(PassReason::Rule, _)
    ));
    // A reload that allows the kind: the next frame passes by the new rule.
    denied_and_remembered(&mut harness, 40010);
    harness.reload(&POLICY.replace(
        r#"{ to = ["203.0.113.5"], proto = "any" },"#,
        r#"{ to = ["203.0.113.5"], proto = "any" },
  { to = ["198.51.100.77"], proto = "udp", ports = [9999] },"#,
    ));
    assert!(matches!(
        harness.check(&denied(40011)).verdict,
        Verdict::Pass(PassReason::Rule, _)
    ));
    // A quarantine takes effect on the next frame even before the epoch is raised: the
    // sender's flags are read for every frame.
    harness.reload(POLICY);
    denied_and_remembered(&mut harness, 40020);
    harness
        .enforcer
        .set_sim_quarantine(meter, true)
        .expect("quarantine");
    harness.reference.set_quarantined(meter, true);
    assert_eq!(
        harness.check(&denied(40021)).verdict,
        drop(DropReason::Quarantined)
    );
}

/// Every CPU's `DENY_CACHE` entries.
fn deny_cache(harness: &Harness) -> Vec<enforcer_common::decide::DenyKey> {
    let map = harness.enforcer.map("DENY_CACHE").expect("DENY_CACHE");
    let cache: aya::maps::PerCpuArray<&aya::maps::MapData, [u32; 5]> =
        aya::maps::PerCpuArray::try_from(map).expect("a per-CPU array of 20-byte keys");
    let mut keys = Vec::new();
    for slot in 0..enforcer_common::decide::DenyKey::SLOTS {
        for words in cache.get(&slot, 0).expect("reading DENY_CACHE").iter() {
            keys.push(deny_key(words));
        }
    }
    keys
}

/// A `DenyKey` from its five native-endian words (`repr(C)`, no padding).
fn deny_key(words: &[u32; 5]) -> enforcer_common::decide::DenyKey {
    enforcer_common::decide::DenyKey {
        epoch: words[0],
        ifindex: words[1],
        dst: words[2].to_ne_bytes(),
        segment: words[3] as u16,
        dport: (words[3] >> 16) as u16,
        proto: words[4] as u8,
        filled: (words[4] >> 8) as u8,
        generation: (words[4] >> 16) as u8,
        pad: (words[4] >> 24) as u8,
    }
}

/// Write `key` into its slot on every CPU (through a second handle on the program's map).
fn plant(harness: &Harness, key: enforcer_common::decide::DenyKey) {
    let Some(aya::maps::Map::PerCpuArray(data)) = harness.enforcer.map("DENY_CACHE") else {
        panic!("DENY_CACHE is a per-CPU array");
    };
    let id = data.info().expect("map info").id();
    let owned = aya::maps::MapData::from_id(id).expect("DENY_CACHE by id");
    let mut cache: aya::maps::PerCpuArray<aya::maps::MapData, [u32; 5]> =
        aya::maps::PerCpuArray::try_from(aya::maps::Map::PerCpuArray(owned))
            .expect("a per-CPU array of 20-byte keys");
    let words = [
        key.epoch,
        key.ifindex,
        u32::from_ne_bytes(key.dst),
        u32::from(key.segment) | u32::from(key.dport) << 16,
        u32::from(key.proto) | u32::from(key.filled) << 8 | u32::from(key.generation) << 16,
    ];
    let cpus = aya::util::nr_cpus().expect("CPUs");
    let values = aya::maps::PerCpuValues::try_from(vec![words; cpus]).expect("values");
    cache
        .set(key.slot(), values, 0)
        .expect("writing DENY_CACHE");
}
