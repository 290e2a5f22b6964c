//! `--forward xdp`: packets that pass are routed by the kernel's FIB and redirected in XDP,
//! skipping the gateway's stack. Checked on the namespaces with nftables as the witness: a
//! counter on the gateway's `forward` hook sees every packet the stack forwards, so with XDP
//! forwarding a device's allowed flow must reach its service (both ways, TCP and UDP, IPv4
//! and IPv6) without that counter moving, while every verdict stays what it was (a denied
//! port, an unsolicited packet toward a device) and the daemon counts the redirects.

use std::{path::Path, process::Command, time::Duration};

use integration_tests::{
    Scratch, enforcer_bin,
    stream::{Stream, gets_through},
    topology::{Daemon, Kind, Probe, Side, Topology},
};

const DEVICE: &str = "10.64.0.2";
const DEVICE_V6: &str = "fd00:64:0:1::1";
const SERVICE: &str = "192.0.2.53";

const POLICY: &str = r#"
pools = ["10.64.0.0/16", "fd00:64::/48"]

[[segments]]
name = "meters"
rules = [
  { to = ["192.0.2.53"], proto = "udp", ports = [53, 7001] },
  { to = ["198.51.100.10"], proto = "tcp", ports = [443] },
  { to = ["2001:db8:100::20"], proto = "tcp", ports = [8080] },
]

[[sims]]
imsi = "001010000000002"
ipv4 = "10.64.0.2"
ipv6 = "fd00:64:0:1::/64"
segment = "meters"
"#;

/// Packets counted by every rule of nftables table `inet table` in namespace `ns`: with the
/// witness table on the gateway, the packets its stack forwarded.
fn nft_packets(ns: &str, table: &str) -> u64 {
    let out = Command::new("ip")
        .args([
            "netns", "exec", ns, "nft", "-j", "list", "table", "inet", table,
        ])
        .output()
        .expect("nft list");
    assert!(
        out.status.success(),
        "nft list: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("nft -j");
    json["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| item["rule"]["expr"].as_array())
        .flatten()
        .filter_map(|expr| expr["counter"]["packets"].as_u64())
        .sum()
}

/// Packets of XDP forwarding `outcome`, from `status --json`.
fn forwarded(daemon: &Daemon, outcome: &str) -> u64 {
    let status = daemon.status();
    status["xdp_forward"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["outcome"] == outcome)
        .and_then(|c| c["packets"].as_u64())
        .unwrap_or_else(|| panic!("status has no {outcome} count: {status}"))
}

/// Interface `iface`'s forwarding path (`stack`, `xdp`, `xdp-in`), from `status --json`.
fn forward_path(daemon: &Daemon, iface: &str) -> String {
    let status = daemon.status();
    status["interfaces"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|i| i["iface"] == iface)
        .and_then(|i| i["forward"].as_str())
        .unwrap_or_else(|| panic!("no {iface} in {status}"))
        .to_owned()
}

/// Packets the daemon redirected in XDP.
fn redirected(daemon: &Daemon) -> u64 {
    forwarded(daemon, "redirected")
}

fn probe(kind: Kind, src: &'static str, dst: &'static str, port: u16) -> Probe {
    Probe {
        label: "device",
        side: Side::DevA,
        kind,
        src,
        dst,
        port,
        expect_through: true,
        why: "",
    }
}

#[test]
fn xdp_forwarding_redirects_what_passes_and_changes_no_verdict() {
    if !integration_tests::root_or_skip() {
        return;
    }
    let scratch = Scratch::new("xdp-forward");
    let policy = scratch.write("policy.toml", POLICY);
    let topology = Topology::build(Path::new(env!("CARGO_BIN_EXE_netprobe")));
    // A veth takes redirected frames only with NAPI on at its far end: GRO (or an XDP
    // program) there turns it on. The hosts compute their own checksums (`tx off`), as
    // frames from a wire carry them: a namespace's own packets otherwise cross the veth with
    // the checksum left to offload (`CHECKSUM_PARTIAL`), a note that a redirected frame
    // does not carry, so the receiver would see a wrong TCP checksum.
    for (ns, dev) in [
        (&topology.dev_a, format!("{}a", topology.prefix)),
        (&topology.svc, format!("{}s", topology.prefix)),
    ] {
        ns.exec_ok(&["ethtool", "-K", &dev, "gro", "on", "tx", "off"]);
    }
    let table = format!("witness_{}", topology.prefix.replace('-', "_"));
    topology
        .gw
        .exec_ok(&["nft", "add", "table", "inet", &table]);
    topology.gw.exec_ok(&[
        "nft",
        &format!(
            "add chain inet {table} witness {{ type filter hook forward priority 0; policy accept; }}"
        ),
    ]);
    topology
        .gw
        .exec_ok(&["nft", "add", "rule", "inet", &table, "witness", "counter"]);

    // At the services, packets from the device by the TTL (hop limit) they arrive with: 63
    // after the gateway's one hop, from the hosts' 64.
    for (name, ttl) in [("arrived_ttl63", "63"), ("arrived_other", "!= 63")] {
        topology.svc.exec_ok(&["nft", "add", "table", "inet", name]);
        topology.svc.exec_ok(&[
            "nft",
            &format!("add chain inet {name} input {{ type filter hook input priority 0; }}"),
        ]);
        topology.svc.exec_ok(&[
            "nft",
            &format!("add rule inet {name} input ip saddr {DEVICE} ip ttl {ttl} counter"),
        ]);
        topology.svc.exec_ok(&[
            "nft",
            &format!("add rule inet {name} input ip6 saddr {DEVICE_V6} ip6 hoplimit {ttl} counter"),
        ]);
    }

    let daemon = Daemon::start_with_roles(
        &enforcer_bin(),
        Path::new(&policy),
        &topology,
        "native",
        &["--forward", "xdp"],
    );
    // devB's veth has neither GRO nor XDP at its far end: its driver cannot send redirected
    // frames (the kernel says so), so it forwards what arrives but is never redirected to.
    let name = |x: &str| format!("{}{x}", topology.prefix);
    assert_eq!(forward_path(&daemon, &name("A")), "xdp");
    assert_eq!(forward_path(&daemon, &name("S")), "xdp");
    assert_eq!(forward_path(&daemon, &name("B")), "xdp-in");
    // The first packets resolve the gateway's neighbours through the stack.
    assert!(
        topology.send(&probe(Kind::Udp(3), DEVICE, SERVICE, 53)),
        "the allowed UDP service is not reachable with --forward xdp"
    );
    assert!(
        topology.send(&probe(Kind::Tcp, DEVICE_V6, "2001:db8:100::20", 8080)),
        "the allowed IPv6 TCP service is not reachable with --forward xdp"
    );

    // The gateway knew no neighbour yet: the FIB said so, and the stack resolved it.
    assert!(
        forwarded(&daemon, "no_neighbour") > 0,
        "the first packets did not go to the stack: {}",
        daemon.status()["xdp_forward"]
    );
    let (stack_before, redirected_before) =
        (nft_packets(&topology.gw.name, &table), redirected(&daemon));
    // TCP both ways (handshake, data, close), UDP echoed both ways, IPv6 TCP.
    assert!(topology.send(&probe(Kind::Tcp, DEVICE, "198.51.100.10", 443)));
    assert!(topology.send(&probe(Kind::Udp(20), DEVICE, SERVICE, 53)));
    assert!(topology.send(&probe(Kind::Tcp, DEVICE_V6, "2001:db8:100::20", 8080)));
    let stream = Stream::start(
        &topology.dev_a.name,
        DEVICE,
        &topology.svc.name,
        format!("{SERVICE}:7001").parse().expect("address"),
        Duration::from_millis(2),
    );
    std::thread::sleep(Duration::from_secs(2));
    let outcome = stream.finish();
    assert!(outcome.sent > 300, "only {} datagrams sent", outcome.sent);
    assert!(
        outcome.lost().is_empty(),
        "{} of {} datagrams lost on the XDP path",
        outcome.lost().len(),
        outcome.sent
    );
    let stack = nft_packets(&topology.gw.name, &table) - stack_before;
    let xdp = redirected(&daemon) - redirected_before;
    // TCP handshakes and closes, 40 UDP echo packets and the stream: all redirected.
    assert!(
        xdp >= outcome.sent + 40,
        "only {xdp} packets redirected for {} sent",
        outcome.sent
    );
    assert_eq!(
        stack, 0,
        "the gateway's stack forwarded {stack} packets that XDP should have ({xdp} redirected)"
    );
    // Every packet lost one from its TTL or hop limit on the way, as the stack's would.
    let (ttl63, other) = (
        nft_packets(&topology.svc.name, "arrived_ttl63"),
        nft_packets(&topology.svc.name, "arrived_other"),
    );
    assert_eq!(other, 0, "{other} packets arrived with a TTL other than 63");
    assert!(
        ttl63 >= outcome.sent,
        "{ttl63} packets arrived with TTL 63, {} sent",
        outcome.sent
    );

    // Verdicts are unchanged: a port no rule allows, and a service opening a connection to
    // the device, are dropped before any forwarding.
    assert!(!topology.send(&probe(Kind::Tcp, DEVICE, "198.51.100.20", 9005)));
    assert!(!gets_through(
        &topology.svc.name,
        SERVICE,
        &topology.dev_a.name,
        format!("{DEVICE}:4059").parse().expect("address"),
    ));
    assert_eq!(
        nft_packets(&topology.gw.name, &table) - stack_before,
        0,
        "a denied packet reached the stack's forwarding"
    );

    // Status names the outcomes.
    let text = daemon.cli(&["status"]);
    assert!(text.contains("forward:   in XDP:"), "{text}");

    // GRO on at devB's end: the daemon's periodic check (every 5 s) finds that B now takes
    // redirected frames, with no restart.
    topology
        .dev_b
        .exec_ok(&["ethtool", "-K", &name("b"), "gro", "on"]);
    let start = std::time::Instant::now();
    loop {
        let b = forward_path(&daemon, &name("B"));
        if b == "xdp" {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(12),
            "B is still {b} 12 s after GRO was turned on at its far end"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}
