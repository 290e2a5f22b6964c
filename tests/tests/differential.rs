//! Differential test: random policies and random/edge-case frames through the real XDP program
//! (BPF_PROG_TEST_RUN) and the userspace reference model. Action, verdict reason (which counter
//! slot moved), SIM counters and rule counters must agree for every frame.
//!
//! Two more opinions that share nothing with the compiled tables: for every IP packet the
//! oracle (`enforcer::oracle`, README's semantics over the validated policy) must give the same
//! verdict and rule, and for every frame both the reference parser and `etherparse` read, the
//! addresses, protocol and destination port must agree.
//!
//! `DIFF_FRAMES` (default 200,000) sets the frame count, `DIFF_SEED` the seed (default: from
//! the clock; always printed). `cargo xtask bench` runs it with 1,000,000 frames.

use std::fmt::Write as _;

use enforcer::reference::{self, Parsed};
use integration_tests::{
    frames::{Ext, Frame, L4, arp},
    harness::{Harness, TEST_IFINDEX, hex},
    rng::Rng,
};

const FRAMES_PER_POLICY: u64 = 5_000;

/// Prints the seed and policy if the test panics while it is alive.
struct Context {
    seed: u64,
    policy: String,
    frame: Vec<u8>,
}

impl Drop for Context {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "differential failure: DIFF_SEED={} reproduces it\nlast frame: {}\npolicy:\n{}",
                self.seed,
                hex(&self.frame),
                self.policy
            );
        }
    }
}

#[test]
fn kernel_and_reference_agree_on_random_frames() {
    let frames: u64 = std::env::var("DIFF_FRAMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let seed: u64 = std::env::var("DIFF_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    println!("differential: DIFF_SEED={seed} DIFF_FRAMES={frames}");
    let mut rng = Rng::new(seed);
    let mut done = 0u64;
    let mut verdicts = std::collections::BTreeMap::new();
    let (mut oracle_checked, mut etherparse_checked) = (0u64, 0u64);
    // ICMP errors quoting a packet (the parser found a quote), and those that passed as a
    // session's reply.
    let (mut quoting, mut quoting_passed) = (0u64, 0u64);
    let mut policies = 0u64;
    while done < frames {
        let generated = RandomPolicy::generate(&mut rng);
        let mut context = Context {
            seed,
            policy: generated.text.clone(),
            frame: Vec::new(),
        };
        // A third of the policies are judged on a core interface, a third on a service one, so
        // that even the VM matrix's 20,000 frames (four policies) see every role.
        let flags = match policies % 3 {
            0 => enforcer_common::maps::IFACE_DROP_NON_POOL,
            1 => enforcer_common::maps::IFACE_SERVICE,
            _ => 0,
        };
        policies += 1;
        let mut harness = Harness::new(&generated.text, &[(TEST_IFINDEX, flags)]);
        let mut oracle_sessions = enforcer::oracle::Sessions::default();
        let batch = FRAMES_PER_POLICY.min(frames - done);
        for _ in 0..batch {
            let frame = generated.frame(&mut rng);
            context.frame.clone_from(&frame);
            let outcome = harness.check(&frame);
            if let Ok(Parsed::Ip(meta)) = reference::parse(&frame, TEST_IFINDEX) {
                let quoted = reference::quoted(&frame);
                let quoted = quoted.found.then(|| {
                    let (src, sport, dst, dport) = quoted.packet();
                    (src, sport, dst, dport, quoted.key.proto)
                });
                if quoted.is_some() {
                    quoting += 1;
                    if matches!(
                        outcome.verdict,
                        enforcer_common::Verdict::Pass(enforcer_common::PassReason::Reply, _)
                    ) {
                        quoting_passed += 1;
                    }
                }
                let oracle = oracle_sessions.judge(&harness.policy, &meta, quoted, flags);
                assert_eq!(
                    oracle,
                    outcome.verdict,
                    "the oracle disagrees with the compiled policy; frame {}",
                    hex(&frame)
                );
                oracle_checked += 1;
                if cross_check(&frame, &meta) {
                    etherparse_checked += 1;
                }
            }
            let name = match outcome.verdict {
                enforcer_common::Verdict::Pass(reason, _) => format!("pass_{}", reason.name()),
                enforcer_common::Verdict::Drop(reason) => format!("drop_{}", reason.name()),
            };
            *verdicts.entry(name).or_insert(0u64) += 1;
        }
        done += batch;
    }
    println!(
        "differential: {done} frames agreed ({oracle_checked} also with the oracle, \
         {etherparse_checked} parsed alike by etherparse; {quoting} ICMP errors quoting a \
         packet, {quoting_passed} of them passed as replies); verdicts: {verdicts:?}"
    );
    // A generator that never reaches a verdict would make this test weaker than it looks; the
    // VM matrix runs 20,000 frames, so the check holds from there.
    assert!(
        frames < 20_000 || (oracle_checked > frames / 4 && etherparse_checked > frames / 4),
        "too few frames reached the oracle ({oracle_checked}) or etherparse ({etherparse_checked})"
    );
    // An inbound pass needs a sender inside an inbound rule's CIDR, a SIM of that segment and
    // an interface without the core role: a few in a thousand frames, so it is required from
    // the host run's 200,000 frames (from 100,000), not from the VM matrix's 20,000.
    if frames >= 100_000 {
        assert!(
            verdicts.contains_key("pass_inbound"),
            "the generator never produced pass_inbound"
        );
        assert!(
            verdicts.contains_key("pass_audit"),
            "the generator never produced pass_audit"
        );
    }
    for needed in [
        "pass_rule",
        "pass_non_pool",
        "pass_neighbour",
        "pass_not_ip",
        "pass_reply",
        "drop_no_rule",
        "drop_lateral",
        "drop_spoofed",
        "drop_quarantined",
        "drop_malformed",
        "drop_fragment",
        "drop_non_pool",
        "drop_source_route",
        "drop_not_ip",
        "drop_inbound",
    ] {
        if frames >= 20_000 {
            assert!(
                verdicts.contains_key(needed),
                "the generator never produced {needed}"
            );
        }
    }
}

/// If `etherparse` parses the frame strictly, it must find what the reference parser found.
/// Returns whether it was compared.
fn cross_check(frame: &[u8], meta: &enforcer_common::decide::PacketMeta) -> bool {
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};
    let Ok(packet) = SlicedPacket::from_ethernet(frame) else {
        return false;
    };
    let (src, dst, proto) = match &packet.net {
        Some(NetSlice::Ipv4(ip)) => {
            let mut src = [0u8; 16];
            let mut dst = [0u8; 16];
            src[..4].copy_from_slice(&ip.header().source());
            dst[..4].copy_from_slice(&ip.header().destination());
            (src, dst, ip.payload().ip_number.0)
        }
        Some(NetSlice::Ipv6(ip)) => (
            ip.header().source(),
            ip.header().destination(),
            ip.payload().ip_number.0,
        ),
        _ => return false,
    };
    let context = || format!("etherparse reads frame {} differently", hex(frame));
    assert_eq!((src, dst), (meta.src, meta.dst), "addresses: {}", context());
    // etherparse stops at an extension header it has already seen once (it keeps one of each),
    // and then names that header as the payload: nothing to compare beyond the addresses.
    // A later fragment's payload is no header at all; the two name different things there.
    if meta.later_fragment || matches!(proto, 0 | 43 | 44 | 51 | 60) {
        return false;
    }
    assert_eq!(proto, meta.proto, "protocol: {}", context());
    let port = match &packet.transport {
        Some(TransportSlice::Tcp(tcp)) => Some(tcp.destination_port()),
        Some(TransportSlice::Udp(udp)) => Some(udp.destination_port()),
        _ => None,
    };
    if let Some(port) = port {
        assert!(meta.has_ports, "ports: {}", context());
        assert_eq!(port, meta.dport, "destination port: {}", context());
    }
    true
}

/// A generated policy and the addresses frames should aim at.
struct RandomPolicy {
    text: String,
    sims_v4: Vec<String>,
    sims_v6: Vec<String>,
    pools_v4: Vec<u8>,
    rule_v4: Vec<String>,
    rule_v6: Vec<String>,
    ports: Vec<u16>,
    /// Frames generated so far (the last 64), whose replies later frames may be.
    sent: std::cell::RefCell<Vec<Frame>>,
}

const V4_NETS: &[&str] = &[
    "0.0.0.0/0",
    "192.0.2.0/24",
    "192.0.2.128/25",
    "192.0.2.7/32",
    "198.51.100.0/24",
    "198.51.100.10/32",
    "203.0.113.0/24",
    "203.0.113.64/26",
    "100.64.0.0/10",
    "8.8.8.8/32",
];
// Not `::/0`: it contains 64:ff9b::/96 and ::ffff:0:0/96, where IPv4 pools can be reached,
// and validation refuses it; 2000::/3 is the wide IPv6 destination operators write instead.
const V6_NETS: &[&str] = &[
    "2000::/3",
    "2001:db8::/32",
    "2001:db8:1::/48",
    "2001:db8:1:2::/64",
    "2001:db8::53/128",
];
const PORT_ITEMS: &[&str] = &[
    "22",
    "53",
    "80",
    "443",
    "8080",
    "1000-2000",
    "1500-1600",
    "0-65535",
    "65535",
    "1",
];

impl RandomPolicy {
    fn generate(rng: &mut Rng) -> Self {
        let pool_count = rng.range(1, 3);
        let pools_v4: Vec<u8> = (0..pool_count)
            .map(|i| 64 + u8::try_from(i).unwrap_or(0))
            .collect();
        let mut text = String::new();
        let pools: Vec<String> = pools_v4
            .iter()
            .map(|p| format!("\"10.{p}.0.0/16\""))
            .chain(["\"fd00:64::/48\"".to_owned()])
            .collect();
        let _ = writeln!(text, "pools = [{}]", pools.join(", "));
        // Non-pool sources a core interface accepts, nested in and around the rules' CIDRs
        // (never 0.0.0.0/0: validation refuses it).
        let core_sources: Vec<String> = (0..rng.below(3))
            .map(|_| {
                if rng.chance(50) {
                    format!("\"{}\"", rng.pick(&V4_NETS[1..]))
                } else {
                    format!("\"{}\"", rng.pick(V6_NETS))
                }
            })
            .collect();
        let _ = writeln!(text, "core_sources = [{}]", core_sources.join(", "));

        let segments = rng.range(1, 4);
        let sim_count = rng.range(2, 12);
        let mut sims_v4 = Vec::new();
        let mut sims_v6 = Vec::new();
        let mut imsis = Vec::new();
        let mut sims_text = String::new();
        for i in 0..sim_count {
            let imsi = format!("00101{:010}", i + 1);
            let pool = rng.pick(&pools_v4);
            let v4 = format!("10.{pool}.{}.{}", rng.below(4), 1 + rng.below(250));
            let _ = writeln!(
                sims_text,
                "\n[[sims]]\nimsi = \"{imsi}\"\nsegment = \"s{}\"",
                rng.below(segments)
            );
            let has_v4 = !sims_v4.contains(&v4) && !rng.chance(10);
            if has_v4 {
                let _ = writeln!(sims_text, "ipv4 = \"{v4}\"");
                sims_v4.push(v4);
            }
            if !has_v4 || rng.chance(40) {
                let prefix = format!("fd00:64:0:{i:x}");
                let _ = writeln!(sims_text, "ipv6 = \"{prefix}::/64\"");
                sims_v6.push(prefix);
            }
            // The second SIM is always quarantined, so that even four policies (the VM
            // matrix's 20,000 frames) reach that verdict; others by chance.
            if i == 1 || rng.chance(10) {
                let _ = writeln!(sims_text, "state = \"quarantined\"");
            }
            imsis.push(imsi);
        }
        let mut rule_v4 = Vec::new();
        let mut rule_v6 = Vec::new();
        let mut ports = vec![
            0u16, 1, 21, 22, 23, 52, 53, 54, 443, 999, 1000, 1550, 2000, 2001, 8080, 65535,
        ];
        let mut rule = |rng: &mut Rng| {
            let mut to = Vec::new();
            // Validation refuses `icmp` towards IPv6 only and `icmpv6` towards IPv4 only.
            let (mut to_v4, mut to_v6) = (false, false);
            for _ in 0..rng.range(1, 3) {
                match rng.below(10) {
                    0..=4 => {
                        let net = *rng.pick(V4_NETS);
                        rule_v4.push(net.to_owned());
                        to.push(format!("\"{net}\""));
                        to_v4 = true;
                    }
                    5..=6 => {
                        let net = *rng.pick(V6_NETS);
                        rule_v6.push(net.to_owned());
                        to.push(format!("\"{net}\""));
                        to_v6 = true;
                    }
                    7..=8 => to.push(format!("\"s{}\"", rng.below(segments))),
                    _ => to.push(format!("\"imsi:{}\"", rng.pick(&imsis))),
                }
            }
            let (proto, with_ports) = match rng.below(8) {
                0 => ("\"any\"", false),
                1 | 2 => ("\"tcp\"", true),
                3 | 4 => ("\"udp\"", true),
                5 => ("[\"tcp\", \"udp\"]", true),
                6 => (
                    match (to_v4, to_v6) {
                        (true, false) => "\"icmp\"",
                        (false, true) => "\"icmpv6\"",
                        (true, true) if rng.chance(50) => "\"icmp\"",
                        (true, true) => "\"icmpv6\"",
                        // Segments and SIMs may be of either family.
                        (false, false) => "[\"icmp\", \"icmpv6\"]",
                    },
                    false,
                ),
                _ => ("47", false),
            };
            let mut line = format!("  {{ to = [{}], proto = {proto}", to.join(", "));
            if with_ports && rng.chance(80) {
                let items: Vec<String> = (0..rng.range(1, 3))
                    .map(|_| format!("\"{}\"", rng.pick(PORT_ITEMS)))
                    .collect();
                let _ = write!(line, ", ports = [{}]", items.join(", "));
            }
            line.push_str(" },");
            line
        };
        // Inbound rules: senders outside every pool (the CIDRs above are), their addresses
        // added to the frames' sources once the rule closure is done.
        let mut inbound_v4 = Vec::new();
        let mut inbound_v6 = Vec::new();
        for s in 0..segments {
            let _ = writeln!(text, "\n[[segments]]\nname = \"s{s}\"\nrules = [");
            for _ in 0..rng.below(7) {
                let _ = writeln!(text, "{}", rule(rng));
            }
            let _ = writeln!(text, "]");
            let _ = writeln!(text, "inbound = [");
            // The first segment always lets one sender in on any protocol, so that inbound
            // passes are common enough to count on.
            if s == 0 {
                let net = *rng.pick(&V4_NETS[1..]);
                inbound_v4.push(net.to_owned());
                let _ = writeln!(text, "  {{ from = [\"{net}\"], proto = \"any\" }},");
            }
            for _ in 0..rng.below(3) {
                let v4 = rng.chance(60);
                let net = if v4 {
                    let net = *rng.pick(&V4_NETS[1..]);
                    inbound_v4.push(net.to_owned());
                    net
                } else {
                    let net = *rng.pick(V6_NETS);
                    inbound_v6.push(net.to_owned());
                    net
                };
                let line = match rng.below(5) {
                    0 => format!("  {{ from = [\"{net}\"], proto = \"any\" }},"),
                    1 => format!(
                        "  {{ from = [\"{net}\"], proto = \"{}\" }},",
                        if v4 { "icmp" } else { "icmpv6" }
                    ),
                    2 => format!("  {{ from = [\"{net}\"], proto = \"udp\" }},"),
                    _ => format!(
                        "  {{ from = [\"{net}\"], proto = \"tcp\", ports = [\"{}\"] }},",
                        rng.pick(PORT_ITEMS)
                    ),
                };
                let _ = writeln!(text, "{line}");
            }
            let _ = writeln!(text, "]");
            // Some segments (never the first, whose inbound rule must stay visible) are in
            // audit mode: what their rules would deny passes as `audit`.
            if s > 0 && rng.chance(25) {
                let _ = writeln!(text, "mode = \"audit\"");
            }
        }
        // Give some SIMs rules of their own by appending to their tables.
        let mut with_rules = String::new();
        for block in sims_text
            .split("\n[[sims]]")
            .filter(|b| !b.trim().is_empty())
        {
            let _ = write!(with_rules, "\n[[sims]]{block}");
            if rng.chance(25) {
                let _ = writeln!(with_rules, "rules = [\n{}\n]", rule(rng));
            }
            // A few SIMs in audit mode of their own, whatever their segment's.
            if rng.chance(8) {
                let _ = writeln!(with_rules, "mode = \"audit\"");
            }
        }
        text.push_str(&with_rules);
        rule_v4.extend(inbound_v4);
        rule_v6.extend(inbound_v6);
        ports.sort_unstable();
        Self {
            text,
            sims_v4,
            sims_v6,
            pools_v4,
            rule_v4,
            rule_v6,
            ports,
            sent: std::cell::RefCell::new(Vec::new()),
        }
    }

    /// An address inside `net` (a CIDR string), random in its host part.
    fn inside_v4(rng: &mut Rng, net: &str) -> String {
        let (addr, len) = net.split_once('/').unwrap_or((net, "32"));
        let base: std::net::Ipv4Addr = addr.parse().expect("generator CIDR");
        let len: u32 = len.parse().expect("generator prefix");
        let host_bits = 32 - len;
        let host = if host_bits == 0 {
            0
        } else {
            (rng.next_u64() as u32) & (u32::MAX >> len)
        };
        std::net::Ipv4Addr::from(u32::from(base) | host).to_string()
    }

    fn inside_v6(rng: &mut Rng, net: &str) -> String {
        let (addr, len) = net.split_once('/').unwrap_or((net, "128"));
        let base: std::net::Ipv6Addr = addr.parse().expect("generator CIDR");
        let len: u32 = len.parse().expect("generator prefix");
        let random = (u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64());
        let host = if len == 128 {
            0
        } else {
            random & (u128::MAX >> len)
        };
        std::net::Ipv6Addr::from(u128::from(base) | host).to_string()
    }

    fn addr_v4(&self, rng: &mut Rng) -> String {
        match rng.below(10) {
            0..=3 if !self.sims_v4.is_empty() => rng.pick(&self.sims_v4).clone(),
            4 => format!(
                "10.{}.{}.{}",
                rng.pick(&self.pools_v4),
                rng.below(256),
                rng.below(256)
            ),
            5..=7 if !self.rule_v4.is_empty() => {
                let net = rng.pick(&self.rule_v4).clone();
                Self::inside_v4(rng, &net)
            }
            _ => std::net::Ipv4Addr::from(rng.next_u64() as u32).to_string(),
        }
    }

    fn addr_v6(&self, rng: &mut Rng) -> String {
        match rng.below(10) {
            0..=3 if !self.sims_v6.is_empty() => {
                let prefix = rng.pick(&self.sims_v6).clone();
                format!(
                    "{prefix}:{:x}:{:x}:{:x}:{:x}",
                    rng.below(65536),
                    rng.below(65536),
                    rng.below(65536),
                    rng.below(65536)
                )
            }
            4 => Self::inside_v6(rng, "fd00:64::/48"),
            5..=7 if !self.rule_v6.is_empty() => {
                let net = rng.pick(&self.rule_v6).clone();
                Self::inside_v6(rng, &net)
            }
            _ => Self::inside_v6(rng, "::/0"),
        }
    }

    fn frame(&self, rng: &mut Rng) -> Vec<u8> {
        if rng.chance(1) {
            return arp();
        }
        let v6 = rng.chance(35);
        let (src, dst) = if v6 {
            (self.addr_v6(rng), self.addr_v6(rng))
        } else {
            (self.addr_v4(rng), self.addr_v4(rng))
        };
        let port = if rng.chance(80) {
            *rng.pick(&self.ports)
        } else {
            rng.below(65536) as u16
        };
        let l4 = match rng.below(10) {
            0..=3 => L4::Tcp(port),
            4..=6 => L4::Udp(port),
            7 => L4::Icmp(*rng.pick(&[128u8, 129, 1, 133, 135, 136, 137, 138])),
            _ => L4::Other(*rng.pick(&[47u8, 50, 132, 58, 1]), rng.below(40) as usize),
        };
        let mut frame = Frame::new(&src, &dst, l4);
        // Sessions: a few source ports, so that flows meet again; TCP flags of every kind (a
        // bare ACK or RST must open nothing); and a quarter of the frames are the other
        // endpoint's answer to an earlier frame.
        frame.sport = *rng.pick(&[40000u16, 40001, 443, 53]);
        frame.tcp_flags = *rng.pick(&[0x02u8, 0x02, 0x02, 0x10, 0x12, 0x18, 0x04, 0x11]);
        if rng.chance(50) {
            frame.icmp4_type = 0;
        }
        {
            let mut sent = self.sent.borrow_mut();
            if !sent.is_empty() && rng.chance(25) {
                let earlier = sent[rng.below(sent.len() as u64) as usize].clone();
                frame = if rng.chance(20) {
                    // An ICMP error quoting an earlier frame or its answer, from its far end
                    // or from a router; some quotes too short, some types no error.
                    let quoted = if rng.chance(50) {
                        earlier
                    } else {
                        earlier.reply(0x12)
                    };
                    let v6 = quoted.src.is_ipv6();
                    let from = if rng.chance(50) {
                        quoted.dst.to_string()
                    } else if v6 {
                        "2001:db8::1".to_owned()
                    } else {
                        "203.0.113.1".to_owned()
                    };
                    let kind = if v6 {
                        *rng.pick(&[1u8, 2, 3, 4, 129])
                    } else {
                        *rng.pick(&[3u8, 11, 12, 0])
                    };
                    quoted.icmp_error(&from, kind, *rng.pick(&[8usize, 8, 28, 4]))
                } else {
                    earlier.reply(*rng.pick(&[0x12u8, 0x10, 0x18, 0x04, 0x11]))
                };
            } else {
                if sent.len() == 64 {
                    sent.remove(0);
                }
                sent.push(frame.clone());
            }
        }
        let v6 = frame.src.is_ipv6();
        if v6 && rng.chance(8) {
            // Neighbour discovery that stays on its link, or claims to.
            frame.hop_limit = 255;
            match rng.below(10) {
                0..=4 => {
                    frame.src = RandomPolicy::inside_v6(rng, "fe80::/64")
                        .parse()
                        .expect("link-local address");
                }
                5..=6 => frame.src = std::net::Ipv6Addr::UNSPECIFIED.into(),
                _ => {}
            }
            if rng.chance(50) {
                frame.dst = rng
                    .pick(&["ff02::1", "ff02::2", "ff02::1:ff00:1", "ff05::2"])
                    .parse::<std::net::IpAddr>()
                    .expect("multicast address");
            }
        }
        frame.payload = rng.below(64) as usize;
        frame.vlans = match rng.below(20) {
            0..=2 => vec![0x8100],
            3 => vec![0x88a8, 0x8100],
            4 => vec![0x88a8, 0x8100, 0x8100],
            _ => Vec::new(),
        };
        if !v6 {
            if rng.chance(15) {
                frame.ipv4_options = 4 * rng.range(1, 10) as usize;
            }
            if rng.chance(10) {
                frame.ipv4_fragment = (rng.below(3) as u16 * rng.below(200) as u16, rng.chance(50));
            }
            if rng.chance(4) {
                // A source route, a record route, or an option that overruns the header.
                let options: &[&[u8]] = &[
                    &[0x83, 7, 4, 10, 64, 0, 1],
                    &[0x01, 0x89, 7, 4, 10, 64, 0, 1],
                    &[0x07, 7, 4, 0, 0, 0, 0],
                    &[0x00, 0x83, 7, 4],
                    &[0x44, 12, 5, 0],
                    &[0x94, 4, 0, 0],
                ];
                let chosen = *rng.pick(options);
                frame.ipv4_options = chosen.len().div_ceil(4) * 4;
                frame.ipv4_option_bytes = chosen.to_vec();
            }
        } else if rng.chance(30) {
            let kinds = [
                Ext::HopByHop(0),
                Ext::DestOpts(1),
                Ext::Routing(0),
                Ext::Fragment(0, true),
                Ext::Fragment(9, false),
            ];
            frame.ipv6_ext = (0..rng.range(1, 8)).map(|_| *rng.pick(&kinds)).collect();
            if rng.chance(20) {
                frame.routing_segments_left = rng.below(3) as u8;
            }
        }
        let mut bytes = frame.build();
        if rng.chance(10) {
            // Ethernet padding or a trailer beyond the IP packet.
            let extra = rng.range(1, 40) as usize;
            bytes.extend((0..extra).map(|_| rng.below(256) as u8));
        }
        if rng.chance(6) {
            // An IP length field that disagrees with the frame, shorter or longer.
            let l3 = 14 + 4 * frame.vlans.len();
            let at = if v6 { l3 + 4 } else { l3 + 2 };
            if let Some(field) = bytes.get_mut(at..at + 2) {
                let value = u16::from_be_bytes([field[0], field[1]]);
                let delta = rng.range(1, 30) as u16;
                let new = if rng.chance(50) {
                    value.saturating_sub(delta)
                } else {
                    value.saturating_add(delta)
                };
                field.copy_from_slice(&new.to_be_bytes());
            }
        }
        if rng.chance(2) {
            // Non-IP ethertypes a core link might carry: MPLS, PPPoE session, a 0x9100 tag.
            let kind = *rng.pick(&[0x8847u16, 0x8864, 0x9100, 0x88cc]);
            bytes[12..14].copy_from_slice(&kind.to_be_bytes());
        }
        if rng.chance(8) {
            let len = rng.range(14, bytes.len() as u64) as usize;
            bytes.truncate(len);
        }
        if rng.chance(5) {
            let at = rng.below(bytes.len().min(80) as u64) as usize;
            bytes[at] ^= 1 << rng.below(8);
        }
        if rng.chance(1) {
            bytes[12..14].copy_from_slice(&(rng.below(65536) as u16).to_be_bytes());
        }
        bytes
    }
}
