//! Live operations on real namespaces and traffic: reloads under traffic, daemon restarts
//! (`kill -9`, SIGTERM, a new program swapped into the links), quarantine by command and
//! interfaces that are deleted and re-created. Each test fails when its feature breaks: a lost
//! datagram, a packet of a denied flow that arrives, a link that changes.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use integration_tests::{
    enforcer_bin,
    netns::{NetNs, unique_prefix},
    stream::Stream,
    topology::{Daemon, Topology},
};
use serde_json::Value;

const DEVICE: &str = "10.64.0.2";
const DEVICE_IMSI: &str = "001010000000002";
const SERVICE: &str = "192.0.2.53";

/// Policy A: the device may send udp/7001 and udp/7002.
const POLICY_A: &str = r#"
pools = ["10.64.0.0/16", "10.65.0.0/16", "10.66.0.0/16", "fd00:64::/48"]

[[segments]]
name = "s1"
rules = [
  { to = ["192.0.2.53"], proto = "udp", ports = [7001] },
  { to = ["192.0.2.53"], proto = "udp", ports = [7002] },
]

[[segments]]
name = "s2"
rules = [ { to = ["198.51.100.30"], proto = "udp", ports = [4059] } ]

[[sims]]
imsi = "001010000000001"
ipv4 = "10.64.0.1"
segment = "s2"

[[sims]]
imsi = "001010000000002"
ipv4 = "10.64.0.2"
segment = "s1"
"#;

/// Policy B: the same device may send udp/7001 only. Segments, SIMs and rules are reordered
/// and a SIM is added in front, so every positional id differs from A's.
const POLICY_B: &str = r#"
pools = ["10.64.0.0/16", "10.65.0.0/16", "10.66.0.0/16", "fd00:64::/48"]

[[segments]]
name = "s2"
rules = [ { to = ["198.51.100.30"], proto = "udp", ports = [4059] } ]

[[segments]]
name = "s1"
rules = [ { to = ["192.0.2.53"], proto = "udp", ports = [7001] } ]

[[sims]]
imsi = "001010000000003"
ipv4 = "10.64.0.3"
segment = "s2"

[[sims]]
imsi = "001010000000002"
ipv4 = "10.64.0.2"
segment = "s1"

[[sims]]
imsi = "001010000000001"
ipv4 = "10.64.0.1"
segment = "s2"
"#;

/// Policy files of one test, removed at the end.
struct Policies(PathBuf);

impl Policies {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("enforcer-live-{}", unique_prefix()));
        std::fs::create_dir_all(&dir).expect("policy dir");
        std::fs::write(dir.join("a.toml"), POLICY_A).expect("write A");
        std::fs::write(dir.join("b.toml"), POLICY_B).expect("write B");
        Self(dir)
    }

    fn a(&self) -> PathBuf {
        self.0.join("a.toml")
    }

    fn b(&self) -> PathBuf {
        self.0.join("b.toml")
    }
}

impl Drop for Policies {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn root() -> bool {
    integration_tests::root_or_skip()
}

fn topology() -> Topology {
    Topology::build(Path::new(env!("CARGO_BIN_EXE_netprobe")))
}

fn flow(topology: &Topology, port: u16) -> Stream {
    let dst: SocketAddr = format!("{SERVICE}:{port}").parse().expect("address");
    Stream::start(
        &topology.dev_a.name,
        DEVICE,
        &topology.svc.name,
        dst,
        Duration::from_millis(1),
    )
}

/// `(iface, link id)` of every interface in `enforcer status --json`.
fn links(status: &Value) -> Vec<(String, u64)> {
    status["interfaces"]
        .as_array()
        .expect("interfaces")
        .iter()
        .map(|i| {
            (
                i["iface"].as_str().unwrap_or_default().to_owned(),
                i["link"]["link_id"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

fn sim_counter(daemon: &Daemon, imsi: &str, what: &str) -> u64 {
    let stats: Value = serde_json::from_str(&daemon.stats(&["--json", "--imsi", imsi]))
        .expect("stats --json is JSON");
    stats["sims"][0][what].as_u64().expect("counter")
}

/// A flow both policies allow runs through 100 reloads that alternate two policies with every
/// positional id changed: not one datagram is lost, and a flow only A allows is cut from the
/// first packet sent after each reload to B and flows again after each reload to A.
#[test]
fn reload_loop_loses_nothing_and_applies_each_policy_from_the_next_packet() {
    if !root() {
        return;
    }
    let topology = topology();
    let policies = Policies::new();
    let daemon = Daemon::start(&enforcer_bin(), &policies.a(), &topology, "native");
    let both = flow(&topology, 7001);
    let only_a = flow(&topology, 7002);
    std::thread::sleep(Duration::from_millis(100));
    // (policy applied, first seq sent after it was in force, last seq sent before the next)
    let mut windows = Vec::new();
    for round in 0..100 {
        let (policy, is_a) = if round % 2 == 0 {
            (policies.b(), false)
        } else {
            (policies.a(), true)
        };
        let before = only_a.sent();
        let out = daemon.cli(&["policy", "apply", &policy.display().to_string()]);
        assert!(out.contains("applied"), "{out}");
        let after = only_a.sent();
        std::thread::sleep(Duration::from_millis(25));
        if let Some(last) = windows.last_mut() {
            let (_, _, end): &mut (bool, u64, u64) = last;
            *end = before;
        }
        windows.push((is_a, after, only_a.sent()));
    }
    let both = both.finish();
    let only_a = only_a.finish();
    assert!(both.sent > 1000, "the flow ran ({} datagrams)", both.sent);
    assert!(
        both.lost().is_empty(),
        "{} of {} datagrams of a flow both policies allow were lost across 100 reloads: {:?}",
        both.lost().len(),
        both.sent,
        &both.lost()[..both.lost().len().min(20)]
    );
    let mut wrong = Vec::new();
    for (is_a, first, end) in windows {
        for seq in first..end {
            if only_a.received.contains(&seq) != is_a {
                wrong.push((is_a, seq));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} datagrams of the A-only flow were judged by the wrong policy (policy A in force, \
         seq): {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(20)]
    );
    let status = daemon.status();
    assert_eq!(status["applies"].as_u64(), Some(101), "{status}");
}

/// `kill -9` and SIGTERM leave the pinned program enforcing; the restarted daemon swaps a new
/// program into the same links (no detach), allowed traffic loses nothing, denied traffic
/// never passes, and the SIM's counters continue.
#[test]
fn restarts_keep_enforcing_without_loss_and_adopt_the_links() {
    if !root() {
        return;
    }
    let topology = topology();
    let policies = Policies::new();
    let mut daemon = Daemon::start(&enforcer_bin(), &policies.a(), &topology, "native");
    let allowed = flow(&topology, 7001);
    let denied = flow(&topology, 7003);
    std::thread::sleep(Duration::from_millis(300));
    let first = daemon.status();
    let first_links = links(&first);
    assert!(first_links.iter().all(|(_, id)| *id != 0), "{first}");
    let passed_before = sim_counter(&daemon, DEVICE_IMSI, "pass_packets");
    assert!(passed_before > 0, "the allowed flow is counted");

    daemon.kill();
    std::thread::sleep(Duration::from_millis(300));
    let received_while_dead = allowed.received().len();
    daemon.restart();
    let second = daemon.status();
    assert_eq!(
        links(&second),
        first_links,
        "kill -9 and restart kept the links"
    );
    assert_ne!(
        second["program_id"], first["program_id"],
        "the new daemon's program was swapped into the links"
    );
    assert!(
        sim_counter(&daemon, DEVICE_IMSI, "pass_packets") >= passed_before,
        "counters continue across a restart"
    );

    let (ok, _, stderr) = daemon.stop();
    assert!(ok, "SIGTERM: {stderr}");
    std::thread::sleep(Duration::from_millis(300));
    daemon.restart();
    let third = daemon.status();
    assert_eq!(
        links(&third),
        first_links,
        "SIGTERM and restart kept the links"
    );
    std::thread::sleep(Duration::from_millis(200));

    let allowed = allowed.finish();
    let denied = denied.finish();
    assert!(
        received_while_dead > 0,
        "the allowed flow went on while no daemon ran"
    );
    assert!(
        allowed.lost().is_empty(),
        "{} of {} allowed datagrams lost across kill -9, SIGTERM and restarts: {:?}",
        allowed.lost().len(),
        allowed.sent,
        &allowed.lost()[..allowed.lost().len().min(20)]
    );
    assert!(
        denied.received.is_empty(),
        "{} of {} denied datagrams got through while the daemon restarted",
        denied.received.len(),
        denied.sent
    );
    let passed = sim_counter(&daemon, DEVICE_IMSI, "pass_packets");
    let dropped = sim_counter(&daemon, DEVICE_IMSI, "drop_packets");
    assert!(
        passed >= allowed.sent && dropped >= denied.sent,
        "every datagram counted once across restarts: passed {passed} of {} sent, dropped \
         {dropped} of {} sent",
        allowed.sent,
        denied.sent
    );
}

/// `sim quarantine` cuts the SIM from the next packet, a policy reload and a `kill -9` restart
/// keep the quarantine (the store), and `sim release` lets it through again.
#[test]
fn quarantine_takes_effect_at_once_survives_a_reload_and_is_released() {
    if !root() {
        return;
    }
    let topology = topology();
    let policies = Policies::new();
    let mut daemon = Daemon::start(&enforcer_bin(), &policies.a(), &topology, "native");
    let flow = flow(&topology, 7001);
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let shown = daemon.cli(&["sim", "quarantine", DEVICE_IMSI]);
    let took = started.elapsed();
    let cut_from = flow.sent();
    assert!(shown.contains("quarantined (by command"), "{shown}");
    std::thread::sleep(Duration::from_millis(150));
    let applied = daemon.cli(&["policy", "apply", &policies.a().display().to_string()]);
    assert!(applied.contains("applied"), "{applied}");
    std::thread::sleep(Duration::from_millis(150));
    // The store keeps it across a crash and restart.
    daemon.kill();
    daemon.restart();
    let shown = daemon.cli(&["sim", "show", DEVICE_IMSI, "--json"]);
    let explained = daemon.cli(&[
        "policy", "explain", "--from", DEVICE, "--to", SERVICE, "--proto", "udp", "--port", "7001",
    ]);
    let cut_until = flow.sent();
    let released = daemon.cli(&["sim", "release", DEVICE_IMSI]);
    let back_from = flow.sent();
    std::thread::sleep(Duration::from_millis(200));
    let outcome = flow.finish();

    let shown: Value = serde_json::from_str(&shown).expect("sim show --json");
    assert_eq!(
        shown["state"], "quarantined",
        "after a reload and a kill -9 restart: {shown}"
    );
    assert!(
        shown["quarantine"]["source"]
            .as_str()
            .is_some_and(|s| s.starts_with("cli:")),
        "who quarantined it is kept: {shown}"
    );
    assert!(released.contains("state:      active"), "{released}");
    assert!(
        explained.contains("drop (quarantined)")
            && explained.contains(&format!("enforcer sim release {DEVICE_IMSI}")),
        "explain asked of the daemon knows the quarantine by command: {explained}"
    );
    let after = daemon.cli(&[
        "policy", "explain", "--from", DEVICE, "--to", SERVICE, "--proto", "udp", "--port", "7001",
    ]);
    assert!(after.contains("pass (rule)"), "after release: {after}");
    let leaked: Vec<u64> = (cut_from..cut_until)
        .filter(|s| outcome.received.contains(s))
        .collect();
    assert!(
        leaked.is_empty(),
        "datagrams sent after `sim quarantine` returned ({took:?}) got through: {leaked:?}"
    );
    let missing: Vec<u64> = (back_from..outcome.sent)
        .filter(|s| !outcome.received.contains(s))
        .collect();
    assert!(
        missing.is_empty(),
        "datagrams sent after `sim release` were dropped: {missing:?}"
    );
    let status = daemon.status();
    assert_eq!(status["sims"]["quarantined_by_command"], 0, "{status}");
}

/// An interface that is deleted and re-created gets the program again, and `status` says so.
#[test]
fn an_interface_deleted_and_recreated_is_attached_again() {
    if !root() {
        return;
    }
    let prefix = unique_prefix();
    let ns = NetNs::new(&format!("{prefix}-re"));
    let make = || {
        ns.exec_ok(&[
            "ip", "link", "add", "re0", "type", "veth", "peer", "name", "re1",
        ]);
        ns.exec_ok(&["ip", "link", "set", "re0", "up"]);
        ns.exec_ok(&["ip", "link", "set", "re1", "up"]);
    };
    make();
    let policies = Policies::new();
    let pin_dir = format!("/sys/fs/bpf/{prefix}-re");
    let socket = std::env::temp_dir().join(format!("{prefix}-re.sock"));
    let socket_arg = socket.display().to_string();
    let mut child = std::process::Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", ns.name))
        .arg(enforcer_bin())
        .args([
            "run",
            "--xdp-mode",
            "native",
            "--iface",
            "re0",
            "--pin-dir",
            &pin_dir,
        ])
        .args(["--socket", &socket_arg, "--store"])
        .arg(policies.0.join("re.db"))
        .arg("--policy")
        .arg(policies.a())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start enforcer");
    let status = || -> Option<Value> {
        let out = std::process::Command::new(enforcer_bin())
            .args(["status", "--json", "--socket", &socket_arg])
            .output()
            .ok()?;
        serde_json::from_slice(&out.stdout).ok()
    };
    let wait = |what: &dyn Fn(&Value) -> bool| -> Option<Value> {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Some(s) = status().filter(|s| what(s)) {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    };
    let first = wait(&|s| s["interfaces"][0]["link"]["ifindex"].as_u64() > Some(0));
    ns.exec_ok(&["ip", "link", "del", "re0"]);
    make();
    let index_now = ns.exec(&["cat", "/sys/class/net/re0/ifindex"]);
    let index_now: u64 = String::from_utf8_lossy(&index_now.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    let second = wait(&|s| s["interfaces"][0]["reattached"].as_u64() == Some(1));
    let xdp = ns.exec(&["ip", "-d", "link", "show", "re0"]);
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::process::Command::new(enforcer_bin())
        .args(["detach", "--pin-dir", &pin_dir])
        .output();
    let _ = std::fs::remove_file(&socket);

    let first = first.expect("the daemon attached to re0");
    let second = second.expect("the daemon attached to the re-created re0 within 10 s");
    assert_eq!(
        second["interfaces"][0]["link"]["ifindex"].as_u64(),
        Some(index_now),
        "attached to the new re0: {second} (first: {first})"
    );
    assert!(
        String::from_utf8_lossy(&xdp.stdout).contains("prog/xdp"),
        "re0 runs XDP again: {}",
        String::from_utf8_lossy(&xdp.stdout)
    );
}

/// `sim bind` gives a SIM a new address (as the packet core would on a new session) in place
/// of its policy file's: from the next packet the new address is judged as that SIM and the
/// old one as spoofed; the binding survives a `kill -9` restart; `sim unbind` restores the
/// file's address. Addresses held by another SIM or outside every pool are refused.
#[test]
fn bind_moves_a_sim_to_a_new_address_and_unbind_restores_it() {
    if !root() {
        return;
    }
    const NEW: &str = "10.64.9.9";
    let topology = topology();
    let policies = Policies::new();
    let mut daemon = Daemon::start(&enforcer_bin(), &policies.a(), &topology, "native");
    let dst: SocketAddr = format!("{SERVICE}:7001").parse().expect("address");
    let interval = Duration::from_millis(1);
    let from_new = Stream::start(&topology.dev_a.name, NEW, &topology.svc.name, dst, interval);
    let dst2: SocketAddr = format!("{SERVICE}:7002").parse().expect("address");
    let from_old = Stream::start(
        &topology.dev_a.name,
        DEVICE,
        &topology.svc.name,
        dst2,
        interval,
    );
    std::thread::sleep(Duration::from_millis(150));

    let held = daemon.try_cli(&["sim", "bind", DEVICE_IMSI, "10.64.0.1"]);
    let outside = daemon.try_cli(&["sim", "bind", DEVICE_IMSI, "172.16.0.1"]);
    let new_before = from_new.sent();
    let bound = daemon.cli(&["sim", "bind", DEVICE_IMSI, NEW]);
    let (new_from, old_cut_from) = (from_new.sent(), from_old.sent());
    std::thread::sleep(Duration::from_millis(100));
    // A reload while the run-time binding is in the maps (written there directly, not by an
    // apply): the binding stays, without a lost datagram.
    let policy_a = policies.a();
    let reloaded = daemon.cli(&["policy", "apply", policy_a.to_str().expect("UTF-8 path")]);
    std::thread::sleep(Duration::from_millis(100));
    daemon.kill();
    daemon.restart();
    let shown = daemon.cli(&["sim", "show", DEVICE_IMSI, "--json"]);
    std::thread::sleep(Duration::from_millis(100));
    let (new_until, old_cut_until) = (from_new.sent(), from_old.sent());
    let unbound = daemon.cli(&["sim", "unbind", DEVICE_IMSI]);
    let (new_cut_from, old_back_from) = (from_new.sent(), from_old.sent());
    std::thread::sleep(Duration::from_millis(150));
    let from_new = from_new.finish();
    let from_old = from_old.finish();

    let held = held.expect_err("an address of another SIM is refused");
    assert!(
        held.contains("belongs to IMSI 001010000000001 in the policy file"),
        "{held}"
    );
    let outside = outside.expect_err("an address outside every pool is refused");
    assert!(outside.contains("in no pool"), "{outside}");
    assert!(bound.contains(&format!("addresses:  {NEW}")), "{bound}");
    assert!(
        reloaded.contains("(0 added, 0 removed, 0 changed)"),
        "the reload found the maps as the run-time binding left them: {reloaded}"
    );
    let shown: Value = serde_json::from_str(&shown).expect("sim show --json");
    assert_eq!(
        shown["addresses"][0], NEW,
        "after a kill -9 restart: {shown}"
    );
    assert_eq!(shown["bindings"][0]["applied"], true, "{shown}");
    assert!(
        unbound.contains(&format!("addresses:  {DEVICE}")),
        "{unbound}"
    );

    let missing: Vec<u64> = (new_from..new_until)
        .filter(|s| !from_new.received.contains(s))
        .collect();
    assert!(
        missing.is_empty(),
        "datagrams from the bound address were dropped while bound: {missing:?}"
    );
    let unbound_passes: Vec<&u64> = from_new
        .received
        .iter()
        .filter(|s| **s < new_before || **s >= new_cut_from)
        .collect();
    assert!(
        unbound_passes.is_empty(),
        "datagrams from {NEW} passed while it was not bound: {unbound_passes:?}"
    );
    let leaked: Vec<u64> = (old_cut_from..old_cut_until)
        .filter(|s| from_old.received.contains(s))
        .collect();
    assert!(
        leaked.is_empty(),
        "the file's address passed while the SIM was bound elsewhere: {leaked:?}"
    );
    let missing: Vec<u64> = (old_back_from..from_old.sent)
        .filter(|s| !from_old.received.contains(s))
        .collect();
    assert!(
        missing.is_empty(),
        "the file's address was dropped after unbind: {missing:?}"
    );
}
