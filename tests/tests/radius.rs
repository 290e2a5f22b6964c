//! RADIUS accounting with FreeRADIUS's `radclient` as the packet core: a Start makes the
//! device's traffic pass under its SIM, a Stop makes it spoofed again, a Start for another SIM
//! moves the address; retransmissions and stale requests change nothing, and neither do a bad
//! secret, an unknown client, a truncated packet or malformed attributes. Bindings survive a
//! daemon restart, and Accounting-On from the client clears them.

use std::{
    net::UdpSocket,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use enforcer::bindings::radius::packet::{self, build};
use integration_tests::{
    Scratch, enforcer_bin,
    stream::gets_through,
    throughput::in_netns,
    topology::{Daemon, Topology},
};

const DEVICE: &str = "10.64.0.2";
const METER: &str = "001010000000002";
const CHARGER: &str = "001010000000003";
const SECRET: &str = "testing123";
const SERVICE: &str = "192.0.2.53";

/// Two SIMs without a file address: only accounting gives them one. A meter may reach UDP
/// 7001, a charger UDP 7002.
const POLICY: &str = r#"
pools = ["10.64.0.0/16", "fd00:64::/48"]

[[segments]]
name = "meters"
rules = [ { to = ["192.0.2.53"], proto = "udp", ports = [7001] } ]

[[segments]]
name = "chargers"
rules = [ { to = ["192.0.2.53"], proto = "udp", ports = [7002] } ]

[[sims]]
imsi = "001010000000002"
msisdn = "+491700000002"
segment = "meters"

[[sims]]
imsi = "001010000000003"
segment = "chargers"
"#;

fn root() -> bool {
    integration_tests::root_or_skip()
}

/// Whether UDP from the device's address to the service's `port` gets through.
fn passes(topology: &Topology, port: u16) -> bool {
    gets_through(
        &topology.dev_a.name,
        DEVICE,
        &topology.svc.name,
        format!("{SERVICE}:{port}").parse().expect("address"),
    )
}

/// `radclient` in the gateway's namespace: send `attributes` (FreeRADIUS's text form, one per
/// line) as an Accounting-Request to `server` with `secret`; whether a valid response came.
fn radclient(gw: &str, server: &str, secret: &str, attributes: &str) -> bool {
    radclient_tries(gw, server, secret, attributes, 1)
}

/// [`radclient`] with `tries` attempts, 2 s apart, as a PGW retransmits.
fn radclient_tries(gw: &str, server: &str, secret: &str, attributes: &str, tries: u32) -> bool {
    let (tries, timeout) = (tries.to_string(), if tries > 1 { "2" } else { "1" });
    let mut child = Command::new("ip")
        .args(["netns", "exec", gw, "radclient"])
        .args([
            "-D",
            "/usr/share/freeradius",
            "-r",
            &tries,
            "-t",
            timeout,
            "-q",
        ])
        .args([server, "acct", secret])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("radclient (freeradius-utils, installed by `cargo xtask setup`)");
    std::io::Write::write_all(child.stdin.as_mut().expect("stdin"), attributes.as_bytes())
        .expect("write radclient's input");
    let out = child.wait_with_output().expect("radclient");
    out.status.success()
}

fn start(imsi: &str, session: &str, address: &str, timestamp: u64) -> String {
    format!(
        "Acct-Status-Type = Start\nAcct-Session-Id = \"{session}\"\n3GPP-IMSI = \"{imsi}\"\n\
         Framed-IP-Address = {address}\nFramed-IPv6-Prefix = fd00:64:0:1::/64\n\
         Calling-Station-Id = \"491700000002\"\nCalled-Station-Id = \"meters.example\"\n\
         3GPP-IMEISV = \"3520990017614823\"\n3GPP-RAT-Type = EUTRAN\n\
         Event-Timestamp = {timestamp}\n"
    )
}

fn stop(imsi: &str, session: &str, address: &str, timestamp: u64) -> String {
    format!(
        "Acct-Status-Type = Stop\nAcct-Session-Id = \"{session}\"\n3GPP-IMSI = \"{imsi}\"\n\
         Framed-IP-Address = {address}\nEvent-Timestamp = {timestamp}\n"
    )
}

/// The value of the metric line `series` (name and labels) in the exposition at `address`.
/// A series the daemon does not export fails the test: every outcome and reason is exported
/// from the start (0 until counted), so a `== 0` check cannot pass on a missing series.
fn metric(gw: &str, address: &str, series: &str) -> u64 {
    let (_, text) = integration_tests::http_get(gw, address, "/metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or_else(|| panic!("{series} is not in /metrics:\n{text}"))
}

/// A datagram sent from the gateway's namespace to the daemon, expecting no answer.
fn send_raw(gw: &str, server: &str, datagram: &[u8]) -> bool {
    let socket = in_netns(gw, || UdpSocket::bind("127.0.0.1:0")).expect("socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    socket.send_to(datagram, server).expect("send");
    let mut buffer = [0u8; 64];
    socket.recv_from(&mut buffer).is_ok()
}

/// A running gateway with RADIUS accounting on: the scratch directory, the namespaces, the
/// daemon, and the RADIUS and metrics addresses (in the gateway's namespace).
struct Gateway {
    _scratch: Scratch,
    topology: Topology,
    daemon: Daemon,
    server: String,
    metrics: String,
    port: u16,
    alerts: std::path::PathBuf,
    policy: String,
}

fn gateway(name: &str, policy_text: &str) -> Gateway {
    let scratch = Scratch::new(name);
    let policy = scratch.write("policy.toml", policy_text);
    let alerts = std::path::PathBuf::from(scratch.write("alerts.jsonl", ""));
    let clients = scratch.write(
        "clients.toml",
        &format!("[[clients]]\nname = \"pgw-1\"\naddress = \"127.0.0.1\"\nsecret = \"{SECRET}\"\n"),
    );
    let topology = Topology::build(Path::new(env!("CARGO_BIN_EXE_netprobe")));
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let listen = format!("0.0.0.0:{port}");
    let metrics = format!("127.0.0.1:{}", port.wrapping_add(1));
    let daemon = Daemon::start_with_roles(
        &enforcer_bin(),
        Path::new(&policy),
        &topology,
        "native",
        &[
            "--radius-clients",
            &clients,
            "--radius-listen",
            &listen,
            "--metrics-address",
            &metrics,
            "--alerts",
            alerts.to_str().expect("path"),
        ],
    );
    Gateway {
        _scratch: scratch,
        topology,
        daemon,
        server: format!("127.0.0.1:{port}"),
        metrics,
        port,
        alerts,
        policy,
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one story: bind, move, restart, clear"
)]
fn radius_accounting_binds_moves_and_unbinds_addresses() {
    if !root() {
        return;
    }
    let Gateway {
        _scratch: _kept,
        topology,
        mut daemon,
        server,
        metrics,
        port,
        ..
    } = gateway("radius", POLICY);
    let gw = topology.gw.name.clone();
    // An Accounting-Request from the packet core's address, with its secret.
    let send = |request: &str| radclient(&gw, &server, SECRET, request);
    let series = |outcome: &str| {
        metric(
            &gw,
            &metrics,
            &format!("enforcer_radius_requests_total{{outcome=\"{outcome}\"}}"),
        )
    };
    assert!(!passes(&topology, 7001), "no SIM has the address yet");

    // Start: the meter's traffic passes, `sim show` says where the binding came from.
    let t0 = now();
    let started = Instant::now();
    assert!(send(&start(METER, "s1", DEVICE, t0)), "Start answered");
    let answered_ms = started.elapsed().as_millis();
    assert!(passes(&topology, 7001), "after Start the meter passes");
    assert!(!passes(&topology, 7002), "and only by the meter's rules");
    let show = daemon.cli(&["sim", "show", METER]);
    assert!(
        show.contains("10.64.0.2") && show.contains("radius:pgw-1") && show.contains("s1"),
        "sim show names the RADIUS binding:\n{show}"
    );
    assert!(
        show.contains("fd00:64:0:1::/64"),
        "the IPv6 /64 too:\n{show}"
    );
    eprintln!("Start answered in {answered_ms} ms (radclient's process start included)");

    // A retransmission and an Interim-Update change nothing; a Stop of an older session is
    // stale and leaves the binding.
    assert!(send(&start(METER, "s1", DEVICE, t0)));
    assert!(radclient(
        &gw,
        &server,
        SECRET,
        &start(METER, "s1", DEVICE, t0).replace("= Start", "= Interim-Update")
    ));
    assert_eq!(
        series("unchanged"),
        2,
        "retransmission and interim: unchanged"
    );
    assert!(send(&stop(METER, "s0", DEVICE, t0)));
    assert_eq!(series("stale"), 1, "a Stop of another session is stale");
    assert!(passes(&topology, 7001), "the stale Stop left the binding");

    // Bad input changes nothing and gets no answer: a wrong secret, an unknown client (the
    // gateway's own service address as source), a truncated packet, a malformed attribute.
    let moved = start(CHARGER, "s2", DEVICE, t0 + 1);
    assert!(
        !radclient(&gw, &server, "wrong-secret", &moved),
        "bad secret unanswered"
    );
    assert!(
        !radclient(&gw, &format!("10.255.3.1:{port}"), SECRET, &moved),
        "unknown client unanswered"
    );
    let malformed = format!("{moved}Attr-8 = 0x0a0000\n");
    assert!(!send(&malformed), "malformed attribute unanswered");
    let valid = packet::request(
        9,
        &[
            build::status(1),
            build::session("s2"),
            build::imsi(CHARGER),
            build::ipv4(DEVICE.parse().expect("address")),
        ],
        SECRET.as_bytes(),
    );
    assert!(
        !send_raw(&gw, &server, &valid[..valid.len() - 3]),
        "truncated unanswered"
    );
    let dropped = |reason: &str| {
        metric(
            &gw,
            &metrics,
            &format!("enforcer_radius_dropped_total{{reason=\"{reason}\"}}"),
        )
    };
    assert!(dropped("authenticator") >= 1, "bad secret counted");
    assert!(dropped("unknown_client") >= 1, "unknown client counted");
    assert!(dropped("attribute") >= 1, "malformed attribute counted");
    assert!(dropped("length") >= 1, "truncated packet counted");
    assert!(passes(&topology, 7001), "bad requests changed nothing");
    assert!(!passes(&topology, 7002), "bad requests changed nothing");

    // The packet core gives the address to the charger: it moves, the meter has none.
    assert!(send(&moved), "the move is answered");
    if !passes(&topology, 7002) {
        let charger = daemon.cli(&["sim", "show", CHARGER]);
        let meter = daemon.stats(&[]);
        let (_, _, stderr) = daemon.stop();
        panic!("the charger's rules do not apply to the address:\n{charger}\n{meter}\n{stderr}");
    }
    assert!(!passes(&topology, 7001), "the meter's no longer");
    let meter = daemon.cli(&["sim", "show", METER]);
    assert!(
        !meter.contains("10.64.0.2"),
        "the meter lost the address:\n{meter}"
    );
    // The meter's late Stop of s1 is for a binding it no longer has: nothing changes.
    assert!(send(&stop(METER, "s1", DEVICE, t0 + 2)));
    assert!(
        passes(&topology, 7002),
        "the meter's late Stop left the charger's binding"
    );

    // Bindings are the daemon's state: they survive a restart.
    let (ok, _, stderr) = daemon.stop();
    assert!(ok, "daemon stopped cleanly: {stderr}");
    daemon.restart();
    assert!(
        passes(&topology, 7002),
        "the charger's binding survived the restart"
    );
    let charger = daemon.cli(&["sim", "show", CHARGER]);
    assert!(
        charger.contains("radius:pgw-1") && charger.contains("s2"),
        "{charger}"
    );

    // Accounting-On: the client restarted, every session it had is gone.
    assert!(send("Acct-Status-Type = Accounting-On\n"));
    assert!(
        !passes(&topology, 7002),
        "Accounting-On cleared the client's bindings"
    );
    let charger = daemon.cli(&["sim", "show", CHARGER]);
    assert!(!charger.contains("10.64.0.2"), "{charger}");

    // An IMSI the policy does not know is refused (answered, counted, nothing bound).
    assert!(send(&start("001019999999999", "s9", DEVICE, t0 + 3)));
    assert!(series("refused") >= 1, "unknown IMSI refused");
    assert!(!passes(&topology, 7001) && !passes(&topology, 7002));

    // A session stopped is over: its Start replayed later (a packet core's buffer after an
    // outage) is stale and binds nothing.
    assert!(send(&start(CHARGER, "s3", DEVICE, t0 + 10)));
    assert!(passes(&topology, 7002), "s3 bound");
    assert!(send(&stop(CHARGER, "s3", DEVICE, t0 + 11)));
    assert!(!passes(&topology, 7002), "s3 stopped");
    assert!(send(&start(CHARGER, "s3", DEVICE, t0 + 10)));
    assert!(
        !passes(&topology, 7002),
        "the replayed Start of a stopped session binds nothing"
    );
    let late_interim = start(CHARGER, "s3", DEVICE, t0 + 10)
        .replace("= Start", "= Interim-Update")
        .lines()
        .filter(|l| !l.starts_with("Event-Timestamp"))
        .map(|l| format!("{l}\n"))
        .collect::<String>();
    assert!(send(&late_interim));
    assert!(
        !passes(&topology, 7002),
        "an Interim-Update of a stopped session, even without a timestamp, binds nothing"
    );

    let (ok, _, stderr) = daemon.stop();
    assert!(ok, "daemon stopped cleanly: {stderr}");
}

/// Meters lock to the first device seen (`learn`), the charger to one IMEI.
const IMEI_POLICY: &str = r#"
pools = ["10.64.0.0/16", "fd00:64::/48"]

[[segments]]
name = "meters"
imei_lock = "learn"
rules = [ { to = ["192.0.2.53"], proto = "udp", ports = [7001] } ]

[[segments]]
name = "chargers"
rules = [ { to = ["192.0.2.53"], proto = "udp", ports = [7002] } ]

[[sims]]
imsi = "001010000000002"
segment = "meters"

[[sims]]
imsi = "001010000000003"
segment = "chargers"
imei_lock = "352099001761481"
"#;

/// A Start of `imsi` on the device `imeisv`.
fn start_on(imsi: &str, session: &str, imeisv: &str, timestamp: u64) -> String {
    format!(
        "Acct-Status-Type = Start\nAcct-Session-Id = \"{session}\"\n3GPP-IMSI = \"{imsi}\"\n\
         Framed-IP-Address = {DEVICE}\n3GPP-IMEISV = \"{imeisv}\"\nEvent-Timestamp = {timestamp}\n"
    )
}

/// The IMEI lock: a `learn` lock takes the first device; a data session on another device
/// drops the SIM's traffic as `imei_mismatch` (shown by `sim show`, alerted with the expected
/// and seen IMEI, kept across a restart) until the locked device comes back; an explicit IMEI
/// lets that device through; `imei_mismatch = "quarantine"` quarantines instead.
#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one story: learn, break, restart, heal, quarantine"
)]
fn imei_lock_drops_or_quarantines_a_sim_on_another_device() {
    if !root() {
        return;
    }
    let Gateway {
        _scratch: _kept,
        topology,
        mut daemon,
        server,
        metrics,
        alerts,
        policy,
        ..
    } = gateway("radius-imei", IMEI_POLICY);
    let gw = topology.gw.name.clone();
    // An Accounting-Request from the packet core's address, with its secret.
    let send = |request: &str| radclient(&gw, &server, SECRET, request);
    let (first, second) = ("3520990017614823", "8600010012345601");
    let t0 = now();

    assert!(send(&start_on(METER, "a1", first, t0)));
    assert!(
        passes(&topology, 7001),
        "the first device passes and is learned"
    );
    let show = daemon.cli(&["sim", "show", METER]);
    assert!(show.contains("learned 35209900176148"), "{show}");

    // The SIM moves to another device: its traffic is dropped as imei_mismatch.
    assert!(send(&start_on(METER, "a2", second, t0 + 1)));
    assert!(
        !passes(&topology, 7001),
        "the other device's traffic is dropped"
    );
    let show = daemon.cli(&["sim", "show", METER]);
    assert!(
        show.contains("state:      imei_mismatch") && show.contains("MISMATCH"),
        "{show}"
    );
    let stats = daemon.stats(&[]);
    assert!(
        stats.contains("drop_imei_mismatch="),
        "dropped under its reason:\n{stats}"
    );
    // A late Start of the first device's old session (buffered by the packet core) is stale:
    // it must not lift the block of the device in use.
    assert!(send(&start_on(METER, "a1", first, t0)));
    assert!(
        !passes(&topology, 7001),
        "a stale Start of the locked device lifts nothing"
    );
    let text = std::fs::read_to_string(&alerts).expect("alerts");
    let alert: serde_json::Value = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|a| a["alert"] == "imei_mismatch")
        .unwrap_or_else(|| panic!("an imei_mismatch alert:\n{text}"));
    assert_eq!(alert["imsi"], METER);
    assert_eq!(alert["imei_expected"], "35209900176148");
    assert_eq!(alert["imei_seen"], second);

    // The drop state is the daemon's state: it survives a restart.
    let (ok, _, stderr) = daemon.stop();
    assert!(ok, "daemon stopped cleanly: {stderr}");
    daemon.restart();
    assert!(!passes(&topology, 7001), "still dropped after a restart");

    // The locked device comes back: judged by the rules again.
    assert!(send(&start_on(METER, "a3", first, t0 + 2)));
    assert!(passes(&topology, 7001), "the learned device passes again");

    // A stale Start of another device (its packet core's clock behind) is judged one way:
    // it cannot lift a block, but it blocks.
    assert!(send(&start_on(METER, "a9", second, t0 + 1)));
    assert!(
        !passes(&topology, 7001),
        "a stale Start of another device still blocks"
    );
    assert!(send(&start_on(METER, "a4", first, t0 + 3)));
    assert!(
        passes(&topology, 7001),
        "the learned device's new session lifts it"
    );

    // An explicit IMEI: its device passes (IMEISV = its 14 digits and a software version).
    assert!(send(&start_on(CHARGER, "c1", first, t0 + 3)));
    assert!(passes(&topology, 7002), "the charger's own device passes");

    // A lock set by command judges the device in use at once: locked to another device, the
    // charger is cut; back to the policy's lock, it passes again.
    let show = daemon.cli(&["sim", "imei-lock", CHARGER, "tac:86000100"]);
    assert!(show.contains("state:      imei_mismatch"), "{show}");
    assert!(!passes(&topology, 7002), "cut by the lock set by command");
    assert!(
        daemon
            .try_cli(&["sim", "imei-lock", CHARGER, "tac:123"])
            .is_err_and(|e| e.contains("is no IMEI lock")),
        "a bad lock is refused"
    );
    let show = daemon.cli(&["sim", "imei-lock", CHARGER]);
    assert!(show.contains("state:      active"), "{show}");
    assert!(passes(&topology, 7002), "the policy's lock again");

    // `imei_mismatch = "quarantine"`: another device quarantines the SIM by command.
    std::fs::write(
        &policy,
        format!("imei_mismatch = \"quarantine\"\n{IMEI_POLICY}"),
    )
    .expect("policy");
    let _ = daemon.cli(&["policy", "apply", &policy]);
    assert!(send(&start_on(CHARGER, "c2", second, t0 + 4)));
    assert!(!passes(&topology, 7002), "quarantined");
    let show = daemon.cli(&["sim", "show", CHARGER]);
    assert!(
        show.contains("quarantined") && show.contains("imei-lock"),
        "{show}"
    );
    assert!(
        metric(
            &gw,
            &metrics,
            "enforcer_radius_requests_total{outcome=\"refused\"}"
        ) == 0,
        "nothing was refused"
    );
    let (ok, _, stderr) = daemon.stop();
    assert!(ok, "daemon stopped cleanly: {stderr}");
}

/// Unknown IMSIs are admitted into the segment of their APN.
const ADMIT_POLICY: &str = r#"
unknown_imsi = "admit"
pools = ["10.64.0.0/16", "fd00:64::/48"]

[[segments]]
name = "meters"
apns = ["meters.example"]
rules = [ { to = ["192.0.2.53"], proto = "udp", ports = [7001] } ]

[[segments]]
name = "chargers"
rules = [ { to = ["192.0.2.53"], proto = "udp", ports = [7002] } ]

[[sims]]
imsi = "001010000000003"
segment = "chargers"
"#;

/// `unknown_imsi = "admit"`: a Start for an IMSI the policy does not list, on an APN a segment
/// names, is recorded and left unanswered; the daemon reloads the policy with the SIM added;
/// the packet core's retransmission binds the address, and the SIM's traffic is judged by its
/// APN's segment, across a restart too. An unknown IMSI on an APN no segment names is refused.
#[test]
fn unknown_imsis_are_admitted_into_their_apns_segment() {
    if !root() {
        return;
    }
    let Gateway {
        _scratch: _kept,
        topology,
        mut daemon,
        server,
        metrics,
        ..
    } = gateway("radius-admit", ADMIT_POLICY);
    let gw = topology.gw.name.clone();
    // An Accounting-Request from the packet core's address, with its secret.
    let send = |request: &str| radclient(&gw, &server, SECRET, request);
    let newcomer = "001019999999999";
    let t0 = now();
    let attributes = |apn: &str| {
        format!(
            "Acct-Status-Type = Start\nAcct-Session-Id = \"n1\"\n3GPP-IMSI = \"{newcomer}\"\n\
             Framed-IP-Address = {DEVICE}\nCalled-Station-Id = \"{apn}\"\nEvent-Timestamp = {t0}\n"
        )
    };
    // On an APN no segment names: refused, answered at once.
    assert!(send(&attributes("other.example")));
    assert_eq!(
        metric(
            &gw,
            &metrics,
            "enforcer_radius_requests_total{outcome=\"refused\"}"
        ),
        1,
        "refused, and counted so"
    );
    assert!(
        daemon.try_cli(&["sim", "show", newcomer]).is_err(),
        "refused: not added"
    );
    assert!(!passes(&topology, 7001));

    // On the meters' APN (as a PGW spells it, with its operator identifier): the first try
    // goes unanswered while the daemon adds the SIM, the retransmission is answered.
    let started = std::time::Instant::now();
    assert!(
        radclient_tries(
            &gw,
            &server,
            SECRET,
            &attributes("Meters.Example.mnc001.mcc001.gprs"),
            4
        ),
        "a retransmission is answered"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "the first try was deferred, not answered"
    );
    assert!(passes(&topology, 7001), "the admitted SIM's traffic passes");
    assert!(!passes(&topology, 7002), "by the meters' rules only");
    let show = daemon.cli(&["sim", "show", newcomer]);
    assert!(
        show.contains("segment:    meters") && show.contains("radius:pgw-1"),
        "{show}"
    );
    assert!(
        metric(
            &gw,
            &metrics,
            "enforcer_radius_requests_total{outcome=\"deferred\"}"
        ) >= 1,
        "the first try was counted as deferred"
    );

    // Kept across a restart.
    let (ok, _, stderr) = daemon.stop();
    assert!(ok, "daemon stopped cleanly: {stderr}");
    daemon.restart();
    assert!(
        passes(&topology, 7001),
        "still admitted and bound after a restart"
    );
    let (ok, _, stderr) = daemon.stop();
    assert!(ok, "daemon stopped cleanly: {stderr}");
}
