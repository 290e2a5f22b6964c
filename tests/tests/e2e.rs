//! End to end: namespaces for devices, gateway and services joined by veth pairs, the
//! `enforcer run` daemon attached on the gateway with `examples/policy.toml`, real TCP, UDP and
//! ICMP traffic. Allowed flows get through, denied, lateral and spoofed ones do not, and the
//! per-SIM counters that `enforcer stats` reports match what was sent.

use std::path::Path;

use integration_tests::{
    Scratch, enforcer_bin,
    topology::{Daemon, Topology, scenario},
};
use serde_json::Value;

fn sim<'a>(stats: &'a Value, imsi: &str) -> &'a Value {
    stats["sims"]
        .as_array()
        .and_then(|sims| sims.iter().find(|s| s["imsi"] == imsi))
        .unwrap_or_else(|| panic!("IMSI {imsi} missing from stats: {stats}"))
}

fn segment_packets(stats: &Value, segment: &str, verdict: &str) -> u64 {
    stats["segments"]
        .as_array()
        .and_then(|rows| rows.iter().find(|row| row["segment"] == segment))
        .and_then(|row| row["packets"].as_array())
        .and_then(|pairs| pairs.iter().find(|pair| pair[0] == verdict))
        .and_then(|pair| pair[1].as_u64())
        .unwrap_or(0)
}

fn enforce_example_policy(mode: &str) {
    let topology = Topology::build(Path::new(env!("CARGO_BIN_EXE_netprobe")));
    let policy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/policy.toml");
    let mut daemon = Daemon::start(&enforcer_bin(), &policy, &topology, mode);

    let wrong: Vec<String> = scenario()
        .iter()
        .filter_map(|probe| {
            let through = topology.send(probe);
            (through != probe.expect_through).then(|| {
                format!(
                    "{} ({} -> {} {:?}/{}): got through = {through}, expected {} ({})",
                    probe.label,
                    probe.src,
                    probe.dst,
                    probe.kind,
                    probe.port,
                    probe.expect_through,
                    probe.why
                )
            })
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "flows judged wrongly in {mode} mode:\n{}",
        wrong.join("\n")
    );

    let stats: Value =
        serde_json::from_str(&daemon.stats(&["--json"])).expect("stats --json is JSON");
    // Exactly what was sent from SIMs that sent only UDP (no retransmissions, no handshakes).
    let counts = |imsi| {
        let s = sim(&stats, imsi);
        (s["pass_packets"].as_u64(), s["drop_packets"].as_u64())
    };
    assert_eq!(
        counts("001010000000002"),
        (Some(3), Some(2)),
        "EV charger: 3 DNS allowed, 2 denied"
    );
    assert_eq!(
        counts("001010000000101"),
        (Some(2), Some(0)),
        "meter: 2 allowed"
    );
    assert_eq!(
        counts("001010000000102"),
        (Some(0), Some(2)),
        "quarantined meter: 2 dropped"
    );
    assert_eq!(segment_packets(&stats, "meters", "drop_quarantined"), 2);
    let rules: Vec<&str> = stats["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .filter_map(|r| r["rule"].as_str())
        .collect();
    assert!(
        rules
            .iter()
            .any(|r| r.starts_with("segment ev-chargers @ ") && r.ends_with(": DNS")),
        "rules are shown with their owner, file:line and description: {rules:?}"
    );
    assert_eq!(
        segment_packets(&stats, "-", "drop_spoofed"),
        1,
        "one spoofed datagram"
    );
    assert!(
        segment_packets(&stats, "ev-chargers", "drop_lateral") >= 2,
        "lateral udp and ping"
    );
    assert!(segment_packets(&stats, "industrial", "pass_rule") >= 1);
    assert!(segment_packets(&stats, "-", "pass_non_pool") >= 1);
    let tcp_sim = sim(&stats, "001010000000001");
    assert!(
        tcp_sim["pass_packets"].as_u64() >= Some(3),
        "handshakes passed: {tcp_sim}"
    );

    // One SIM only, as a table.
    let one = daemon.stats(&["--imsi", "001010000000102"]);
    assert!(
        one.contains("001010000000102") && !one.contains("001010000000101"),
        "{one}"
    );

    let (ok, _, stderr) = daemon.stop();
    assert!(ok, "enforcer run failed on SIGINT:\n{stderr}");
    assert!(
        daemon.pin_dir.join("links").exists() && daemon.pin_dir.join("SIMS").exists(),
        "stopping leaves the program, links and maps pinned"
    );
    assert!(
        !daemon.socket.exists(),
        "the control socket is removed on a clean exit"
    );
    // Still enforcing without the daemon: the quarantined meter stays cut off.
    let quarantined = scenario()
        .into_iter()
        .find(|p| p.why == "SIM quarantined")
        .expect("a quarantined probe in the scenario");
    assert!(
        !topology.send(&quarantined),
        "a stopped daemon's pinned program still drops {}",
        quarantined.label
    );
    let detached = daemon.detach().expect("enforcer detach");
    assert!(detached.contains("detached from"), "{detached}");
    assert!(!daemon.pin_dir.exists(), "detach removes every pin");
    // A probe is two datagrams with a 1 s wait for their echoes; on a loaded machine one
    // round can miss, so it may take a few rounds (a detach that failed fails every one).
    let through = (0..5).any(|_| topology.send(&quarantined));
    let links = topology.gw.exec(&["ip", "-d", "link", "show"]);
    assert!(
        through,
        "after detach nothing is enforced, so {} gets through; gateway links: {}",
        quarantined.label,
        String::from_utf8_lossy(&links.stdout)
    );
}

#[test]
fn example_policy_enforced_on_real_traffic_native_xdp() {
    enforce_example_policy("native");
}

#[test]
fn example_policy_enforced_on_real_traffic_skb_mode() {
    enforce_example_policy("skb");
}

/// Interface roles on real traffic: with the device-side interfaces `core` and the service
/// side `service`, a device-side host outside every pool is dropped and counted `non_pool`,
/// every other probe is judged as on plain interfaces, and once the policy lists its prefix
/// in `core_sources` it passes again.
#[test]
fn core_interfaces_drop_non_pool_sources_unless_listed() {
    const NON_POOL_HOST: &str = "172.16.0.1";
    let topology = Topology::build(Path::new(env!("CARGO_BIN_EXE_netprobe")));
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/policy.toml");
    let scratch = Scratch::new(&format!("{}-roles", topology.prefix));
    let text = std::fs::read_to_string(&example).expect("example policy");
    let plain = scratch.0.join("plain.toml");
    let listed = scratch.0.join("listed.toml");
    // The PGW/UPF's own link addresses, as an operator lists them: its neighbour
    // unreachability probes to the gateway's address come from there.
    let pgw = r#""10.255.1.0/24", "fd00:ff:1::/64", "10.255.2.0/24""#;
    std::fs::write(&plain, format!("core_sources = [{pgw}]\n{text}")).expect("write policy");
    let more = format!(r#"core_sources = [{pgw}, "172.16.0.0/24"]"#);
    std::fs::write(&listed, format!("{more}\n{text}")).expect("write policy");

    let daemon = Daemon::start_with_roles(&enforcer_bin(), &plain, &topology, "skb", &[]);
    let status = daemon.status();
    let roles: Vec<(String, bool)> = status["interfaces"]
        .as_array()
        .expect("interfaces in status")
        .iter()
        .map(|i| {
            (
                i["iface"].as_str().unwrap_or_default().to_owned(),
                i["core_facing"].as_bool().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        roles.iter().filter(|(_, core)| *core).count(),
        2,
        "A and B core, S not: {roles:?}"
    );
    let wrong: Vec<String> = scenario()
        .iter()
        .filter_map(|probe| {
            let expected = probe.expect_through && probe.src != NON_POOL_HOST;
            let through = topology.send(probe);
            (through != expected).then(|| format!("{}: through = {through}", probe.label))
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "judged wrongly with roles:\n{}",
        wrong.join("\n")
    );
    let stats: Value =
        serde_json::from_str(&daemon.stats(&["--json"])).expect("stats --json is JSON");
    assert!(
        segment_packets(&stats, "-", "drop_non_pool") >= 1,
        "the non-pool host's datagrams are counted non_pool"
    );

    let applied = daemon.cli(&["policy", "apply", &listed.to_string_lossy()]);
    assert!(!applied.is_empty());
    let host = scenario()
        .into_iter()
        .find(|p| p.src == NON_POOL_HOST)
        .expect("a non-pool probe in the scenario");
    assert!(
        topology.send(&host),
        "listed in core_sources, {} gets through the core interface",
        host.label
    );
    drop(daemon);
}

/// Sessions on real traffic: nothing on the services' side may open a connection to a device
/// or send it an unsolicited datagram (`inbound`), while the devices' own flows of the
/// scenario (whose TCP handshakes and UDP echoes come back as their sessions' replies) pass.
/// Without the enforcer the same probes get through, so the test cannot pass by accident.
#[test]
fn services_cannot_open_connections_to_devices() {
    let topology = Topology::build(Path::new(env!("CARGO_BIN_EXE_netprobe")));
    let policy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/policy.toml");
    let mut daemon = Daemon::start(&enforcer_bin(), &policy, &topology, "skb");
    let meter = "10.65.0.1";
    assert!(
        !topology.from_services(false, "198.51.100.10", meter, 4059),
        "a service opened a TCP connection to a device"
    );
    assert!(
        !topology.from_services(true, "192.0.2.53", meter, 4059),
        "an unsolicited datagram reached a device and was answered"
    );
    // The meters' inbound rule: the field-service host may open TCP 4059 to a meter, and
    // nothing more (not UDP; and no other host may).
    assert!(
        topology.from_services(false, "192.0.2.200", meter, 4059),
        "the field-service host's inbound rule did not let it in"
    );
    assert!(
        !topology.from_services(true, "192.0.2.200", meter, 4059),
        "the inbound rule for TCP let a UDP datagram in"
    );
    assert!(
        !topology.from_services(false, "198.51.100.30", meter, 4059),
        "the meters' inbound rule let another host in"
    );
    // The device's own UDP to a service, answered: its session lets the reply in.
    let meter_probe = scenario()
        .into_iter()
        .find(|p| p.src == meter && p.expect_through)
        .expect("an allowed probe from the meter");
    assert!(
        topology.send(&meter_probe),
        "{}: the reply of the device's own flow was dropped",
        meter_probe.label
    );
    // `enforcer flows` lists the meter's session with both directions counted and its rule.
    let flows = match daemon.try_cli(&["flows", "--json"]) {
        Ok(out) => out,
        Err(err) => {
            let (_, _, stderr) = daemon.stop();
            panic!("enforcer flows failed: {err}\ndaemon:\n{stderr}");
        }
    };
    let flows: Value = serde_json::from_str(&flows).expect("JSON");
    let meter_flow = flows
        .as_array()
        .expect("a list of flows")
        .iter()
        .find(|f| f["imsi"] == "001010000000101" && f["peer"] == "198.51.100.30:4059")
        .unwrap_or_else(|| panic!("the meter's session in {flows}"));
    assert_eq!(meter_flow["proto"], "udp");
    assert_eq!(meter_flow["state"], "open");
    assert!(
        meter_flow["device"]
            .as_str()
            .is_some_and(|d| d.starts_with("10.65.0.1:"))
    );
    assert!(
        meter_flow["packets_out"].as_u64() >= Some(1),
        "{meter_flow}"
    );
    assert!(meter_flow["packets_in"].as_u64() >= Some(1), "{meter_flow}");
    assert!(
        meter_flow["rule"]
            .as_str()
            .is_some_and(|r| r.contains(" @ ")),
        "the rule with its file:line: {meter_flow}"
    );
    assert_eq!(meter_flow["direction"], "outbound", "{meter_flow}");
    let service_flow = flows
        .as_array()
        .expect("a list of flows")
        .iter()
        .find(|f| f["imsi"] == "001010000000101" && f["direction"] == "inbound")
        .unwrap_or_else(|| panic!("the field-service host's session in {flows}"));
    assert_eq!(service_flow["proto"], "tcp");
    assert_eq!(service_flow["device"], "10.65.0.1:4059", "{service_flow}");
    assert!(
        service_flow["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with("192.0.2.200:")),
        "{service_flow}"
    );
    assert!(
        service_flow["packets_in"].as_u64() >= Some(2)
            && service_flow["packets_out"].as_u64() >= Some(1),
        "both ways counted: {service_flow}"
    );
    assert!(
        service_flow["rule"]
            .as_str()
            .is_some_and(|r| r.starts_with("segment meters inbound @ ")),
        "{service_flow}"
    );
    let only: Value =
        serde_json::from_str(&daemon.cli(&["flows", "--imsi", "001010000000101", "--json"]))
            .expect("JSON");
    assert!(
        only.as_array()
            .is_some_and(|f| !f.is_empty() && f.iter().all(|f| f["imsi"] == "001010000000101")),
        "{only}"
    );
    let table = daemon.cli(&["flows"]);
    assert!(
        table.contains("198.51.100.30:4059") && table.contains("sessions"),
        "{table}"
    );
    let stats: Value =
        serde_json::from_str(&daemon.stats(&["--json"])).expect("stats --json is JSON");
    assert!(
        segment_packets(&stats, "-", "drop_inbound") >= 2,
        "the inbound SYN and datagram are counted as inbound"
    );
    assert!(
        segment_packets(&stats, "-", "pass_reply") >= 1,
        "the service's answer is counted as a reply"
    );
    assert!(
        segment_packets(&stats, "-", "pass_inbound") >= 1,
        "the field-service host's packets are counted as inbound"
    );
    assert!(
        segment_packets(&stats, "meters", "pass_reply") >= 1,
        "the meter's answers to the host are counted as its replies"
    );
    let (ok, _, stderr) = daemon.stop();
    assert!(ok, "enforcer run failed on SIGINT:\n{stderr}");
    daemon.detach().expect("enforcer detach");
    let through = (0..5).any(|_| topology.from_services(false, "198.51.100.10", meter, 4059));
    assert!(
        through,
        "without the enforcer the service reaches the device"
    );
}
