//! Flow export against the collectors operators run: the daemon sends per-device IPFIX
//! records to nfdump's `nfcapd` and pmacct's `nfacctd` on the gateway's loopback while
//! `tshark` captures them; a graceful restart happens mid-flow. Each peer must show the flow
//! with exactly the packets sent (no double counting across the restart, nothing lost), the
//! SIM's IMSI and MSISDN, and decode without a malformed packet.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use integration_tests::{
    Scratch, enforcer_bin,
    stream::Stream,
    topology::{Daemon, Topology},
};

const DEVICE: &str = "10.64.0.2";
const IMSI: &str = "001010000000002";
const MSISDN: &str = "+491700000002";
const SERVICE: &str = "192.0.2.53";
/// IP length of each datagram: 20 (IPv4) + 8 (UDP) + 8 (a sequence number).
const DATAGRAM_IP_BYTES: u64 = 36;

const POLICY: &str = r#"
pools = ["10.64.0.0/16", "fd00:64::/48"]

[[segments]]
name = "meters"
rules = [ { to = ["192.0.2.53"], proto = "udp", ports = [7001] } ]

[[sims]]
imsi = "001010000000002"
msisdn = "+491700000002"
ipv4 = "10.64.0.2"
segment = "meters"
"#;

fn root() -> bool {
    integration_tests::root_or_skip()
}

/// A peer process in the gateway's namespace, stopped with SIGINT (SIGKILL after 10 s) and
/// reaped when dropped, so a failing test leaves none behind. Its stderr goes to a file, not a
/// pipe: pmacct's plugin processes would hold a pipe open after their parent exits.
struct Peer {
    child: Option<Child>,
    name: &'static str,
    log: PathBuf,
}

impl Peer {
    fn start(name: &'static str, gw: &str, log: PathBuf, args: &[&str]) -> Self {
        let file = std::fs::File::create(&log).expect("peer log");
        let child = Command::new("ip")
            .args(["netns", "exec", gw])
            .args(args)
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e} (installed by `cargo xtask setup`)"));
        Self {
            child: Some(child),
            name,
            log,
        }
    }

    /// SIGINT, wait (SIGKILL after 10 s); returns what it printed on stderr.
    fn stop(&mut self) -> String {
        if let Some(mut child) = self.child.take() {
            let pid = libc::pid_t::try_from(child.id()).expect("pid");
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(pid, libc::SIGINT) };
            let start = Instant::now();
            while child.try_wait().ok().flatten().is_none() {
                if start.elapsed() > Duration::from_secs(10) {
                    eprintln!("{} ignored SIGINT for 10 s; killing it", self.name);
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.stop();
        }
    }
}

/// A free UDP port on the host's loopback (the gateway namespace has its own, so this only
/// avoids clashes between test runs).
fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Wait until `path` exists and is not empty.
fn wait_for_file(path: &Path, what: &str) {
    let start = Instant::now();
    while std::fs::metadata(path).map_or(true, |m| m.len() == 0) {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "{what} did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A test's scratch directory, its policy file (`POLICY`) and the namespaces; `None` (the
/// test skipped) without root.
fn setup(name: &str) -> Option<(Scratch, String, Topology)> {
    if !root() {
        return None;
    }
    let scratch = Scratch::new(name);
    let policy = scratch.write("policy.toml", POLICY);
    let topology = Topology::build(Path::new(env!("CARGO_BIN_EXE_netprobe")));
    Some((scratch, policy, topology))
}

/// UDP datagrams from `src` (a device address in devA) to the service's `port`, one every
/// `every_ms`.
fn flow(topology: &Topology, src: &str, port: u16, every_ms: u64) -> Stream {
    Stream::start(
        &topology.dev_a.name,
        src,
        &topology.svc.name,
        format!("{SERVICE}:{port}").parse().expect("address"),
        Duration::from_millis(every_ms),
    )
}

/// The flows nfcapd stored in `dir`, one per line: `src;dst;dport;proto;packets;bytes`.
fn nfdump_rows(dir: &Path) -> String {
    run(
        "nfdump",
        &[
            "-R",
            dir.to_str().expect("path"),
            "-q",
            "-N",
            "-o",
            "fmt:%sa;%da;%dp;%pr;%pkt;%byt",
        ],
    )
}

/// nfcapd on the gateway's loopback, storing into a directory of `scratch`: the peer, the
/// directory and the port.
fn start_nfcapd(scratch: &Scratch, gw: &str) -> (Peer, PathBuf, u16) {
    let port = free_port();
    let dir = PathBuf::from(&scratch.write("nfcapd.log", "")).with_file_name("nfcapd");
    std::fs::create_dir_all(&dir).expect("nfcapd's directory");
    let peer = Peer::start(
        "nfcapd",
        gw,
        PathBuf::from(scratch.write("nfcapd.log", "")),
        &[
            "nfcapd",
            "-w",
            dir.to_str().expect("path"),
            "-b",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-t",
            "3600",
        ],
    );
    (peer, dir, port)
}

/// Sum of (packets, bytes) over the records of `rows` whose columns match `want` (column
/// index, value), `packets`/`bytes` being the columns of the counts.
fn sum(
    rows: &str,
    sep: char,
    want: &[(usize, &str)],
    packets: usize,
    bytes: usize,
) -> (u64, u64, usize) {
    let mut total = (0, 0, 0);
    for line in rows.lines() {
        let cols: Vec<&str> = line.split(sep).map(str::trim).collect();
        if want.iter().all(|&(i, v)| cols.get(i) == Some(&v)) {
            total.0 += cols[packets].parse::<u64>().unwrap_or(0);
            total.1 += cols[bytes].parse::<u64>().unwrap_or(0);
            total.2 += 1;
        }
    }
    total
}

/// The device's flow goes to nfcapd, nfacctd and tshark with the packets sent, exactly, across
/// a graceful restart of the daemon; nfacctd and tshark show the IMSI and MSISDN, tshark the
/// forwarding status, and no packet is malformed.
#[test]
fn flows_reach_nfcapd_nfacctd_and_tshark_exactly_across_a_restart() {
    let Some((scratch, policy, topology)) = setup("flows") else {
        return;
    };
    let gw = topology.gw.name.clone();
    let (mut nfcapd, dir, nfcapd_port) = start_nfcapd(&scratch, &gw);
    let nfacctd_port = free_port();

    // tshark before the daemon, so that it sees the templates the daemon sends at start.
    let pcap = PathBuf::from(scratch.write("ipfix.pcap", ""));
    let _ = std::fs::remove_file(&pcap);
    let filter = format!("udp port {nfcapd_port}");
    let mut tshark = Peer::start(
        "tshark",
        &gw,
        PathBuf::from(scratch.write("tshark.log", "")),
        &[
            "tshark",
            "-q",
            "-i",
            "lo",
            "-f",
            &filter,
            "-w",
            pcap.to_str().expect("path"),
        ],
    );
    wait_for_file(&pcap, "tshark");
    let primitives = scratch.write(
        "primitives.lst",
        "name=imsi field_type=455 len=vlen semantics=str\n\
         name=msisdn field_type=456 len=vlen semantics=str\n",
    );
    let csv = PathBuf::from(scratch.write("nfacctd.csv", ""));
    let _ = std::fs::remove_file(&csv);
    let config = scratch.write(
        "nfacctd.conf",
        &format!(
            "daemonize: false\n\
             nfacctd_ip: 127.0.0.1\n\
             nfacctd_port: {nfacctd_port}\n\
             aggregate_primitives: {primitives}\n\
             plugins: print[out]\n\
             aggregate[out]: src_host, dst_host, dst_port, proto, imsi, msisdn\n\
             print_output[out]: csv\n\
             print_output_separator[out]: ;\n\
             print_output_file[out]: {}\n\
             print_output_file_append[out]: true\n\
             print_refresh_time[out]: 1\n",
            csv.display()
        ),
    );
    let mut nfacctd = Peer::start(
        "nfacctd",
        &gw,
        PathBuf::from(scratch.write("nfacctd.log", "")),
        &["nfacctd", "-f", &config],
    );
    std::thread::sleep(Duration::from_millis(500));

    let collectors = [
        format!("127.0.0.1:{nfcapd_port}"),
        format!("127.0.0.1:{nfacctd_port}"),
    ];
    let mut daemon = Daemon::start_with_roles(
        &enforcer_bin(),
        Path::new(&policy),
        &topology,
        "native",
        &[
            "--ipfix-collector",
            &collectors[0],
            "--ipfix-collector",
            &collectors[1],
            "--ipfix-active-timeout",
            "2",
            "--ipfix-idle-timeout",
            "2",
            "--ipfix-domain-id",
            "42",
        ],
    );
    let stream = flow(&topology, DEVICE, 7001, 2);
    // Records go out under the active timeout while the flow runs, then the daemon restarts
    // (SIGINT: it flushes, saves what it exported, and the next one takes over).
    std::thread::sleep(Duration::from_secs(4));
    let (ok, _, stderr) = daemon.stop();
    assert!(ok, "the daemon stopped with an error: {stderr}");
    daemon.restart();
    std::thread::sleep(Duration::from_secs(3));
    let outcome = stream.finish();
    assert!(
        outcome.lost().is_empty(),
        "datagrams lost: {:?}",
        outcome.lost().len()
    );
    let sent = outcome.sent;
    assert!(sent > 1000, "only {sent} datagrams sent");
    // The flow goes idle; its rest is exported by the idle timeout, then the daemon stops.
    std::thread::sleep(Duration::from_secs(4));
    let flows: serde_json::Value =
        serde_json::from_str(&daemon.cli(&["flows", "--json"])).expect("flows --json");
    let kernel_packets = flows[0]["packets_out"].as_u64().expect("packets_out");
    assert_eq!(kernel_packets, sent, "the session counted every datagram");
    let (ok, _, stderr) = daemon.stop();
    assert!(ok, "the daemon stopped with an error: {stderr}");
    std::thread::sleep(Duration::from_millis(1500));
    let nfacctd_err = nfacctd.stop();
    let nfcapd_err = nfcapd.stop();
    tshark.stop();

    // nfdump: the flow's records add up to what was sent.
    let rows = nfdump_rows(&dir);
    let (packets, bytes, records) = sum(
        &rows,
        ';',
        &[(0, DEVICE), (1, SERVICE), (2, "7001"), (3, "17")],
        4,
        5,
    );
    assert_eq!(
        (packets, bytes),
        (sent, sent * DATAGRAM_IP_BYTES),
        "nfdump shows other counts than sent ({records} records):\n{rows}\nnfcapd: {nfcapd_err}"
    );
    assert!(
        records >= 3,
        "expected active-timeout records and a restart, got {records}:\n{rows}"
    );

    // pmacct: the flow under the SIM's IMSI and MSISDN, same counts.
    let csv_text = std::fs::read_to_string(&csv)
        .unwrap_or_else(|e| panic!("nfacctd wrote no {} ({e}): {nfacctd_err}", csv.display()));
    let header: Vec<&str> = csv_text
        .lines()
        .next()
        .unwrap_or_default()
        .split(';')
        .collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h.eq_ignore_ascii_case(name))
            .unwrap_or_else(|| panic!("no {name} column in nfacctd's CSV: {header:?}"))
    };
    let (packets, bytes, _) = sum(
        &csv_text,
        ';',
        &[
            (col("SRC_IP"), DEVICE),
            (col("imsi"), IMSI),
            (col("msisdn"), MSISDN),
        ],
        col("PACKETS"),
        col("BYTES"),
    );
    assert_eq!(
        (packets, bytes),
        (sent, sent * DATAGRAM_IP_BYTES),
        "nfacctd shows other counts under the IMSI:\n{csv_text}"
    );

    // tshark: decodes every message, shows IMSI, MSISDN, forwarding status 64 (forwarded).
    let decode = format!("udp.port=={nfcapd_port},cflow");
    let pcap_path = pcap.to_str().expect("path");
    let malformed = run(
        "tshark",
        &[
            "-r",
            pcap_path,
            "-d",
            &decode,
            "-Y",
            "_ws.malformed",
            "-T",
            "fields",
            "-e",
            "frame.number",
        ],
    );
    assert!(
        malformed.trim().is_empty(),
        "tshark finds malformed packets: {malformed}"
    );
    let fields = run(
        "tshark",
        &[
            "-r",
            pcap_path,
            "-d",
            &decode,
            "-Y",
            "cflow",
            "-T",
            "fields",
            "-E",
            "occurrence=a",
            "-E",
            "aggregator=,",
            "-e",
            "cflow.mib_mobile_imsi",
            "-e",
            "cflow.mib_mobile_msisdn",
            "-e",
            "cflow.forwarding_status",
            "-e",
            "cflow.packets",
            "-e",
            "cflow.od_id",
        ],
    );
    let mut tshark_packets = 0u64;
    let mut messages = 0;
    for line in fields.lines().filter(|l| !l.trim().is_empty()) {
        messages += 1;
        let cols: Vec<&str> = line.split('\t').collect();
        let imsis: Vec<&str> = cols[0].split(',').filter(|s| !s.is_empty()).collect();
        let msisdns: Vec<&str> = cols[1].split(',').filter(|s| !s.is_empty()).collect();
        assert!(imsis.iter().all(|i| *i == IMSI), "IMSIs in tshark: {line}");
        assert!(
            msisdns.iter().all(|m| *m == MSISDN),
            "MSISDNs in tshark: {line}"
        );
        assert!(
            // Wireshark splits IE 89: the status in the top two bits (1: forwarded).
            cols[2]
                .split(',')
                .filter(|s| !s.is_empty())
                .all(|s| s == "1"),
            "forwarding status in tshark: {line}"
        );
        assert_eq!(
            imsis.len(),
            cols[3].split(',').filter(|s| !s.is_empty()).count()
        );
        tshark_packets += cols[3]
            .split(',')
            .filter_map(|p| p.parse::<u64>().ok())
            .sum::<u64>();
        assert!(
            cols[4].split(',').all(|d| d == "42"),
            "observation domain: {line}"
        );
    }
    assert!(
        messages >= 2,
        "tshark saw {messages} IPFIX messages:\n{fields}"
    );
    assert_eq!(
        tshark_packets, sent,
        "packets in the records tshark decoded:\n{fields}"
    );
}

/// A collector that is not there (ICMP port unreachable on every message) costs enforcement
/// nothing: the flow loses no datagram, the failures are counted in `status`, and the daemon
/// still stops at once.
#[test]
fn a_dead_collector_never_holds_up_enforcement() {
    let Some((_scratch, policy, topology)) = setup("flows-dead") else {
        return;
    };
    let collector = format!("127.0.0.1:{}", free_port());
    let mut daemon = Daemon::start_with_roles(
        &enforcer_bin(),
        Path::new(&policy),
        &topology,
        "native",
        &[
            "--ipfix-collector",
            &collector,
            "--ipfix-active-timeout",
            "1",
            "--ipfix-idle-timeout",
            "1",
        ],
    );
    let stream = flow(&topology, DEVICE, 7001, 2);
    std::thread::sleep(Duration::from_secs(5));
    let outcome = stream.finish();
    assert!(outcome.sent > 1000, "only {} datagrams sent", outcome.sent);
    assert!(
        outcome.lost().is_empty(),
        "{} datagrams lost",
        outcome.lost().len()
    );
    let status = daemon.status();
    let export = &status["export"];
    assert_eq!(export["collectors"][0], collector.as_str());
    assert!(
        export["messages_failed"].as_u64().unwrap_or(0) > 0,
        "sends to a dead collector are counted as failed: {export}"
    );
    let text = daemon.cli(&["status"]);
    assert!(
        text.contains("IPFIX:") && text.contains("messages failed"),
        "{text}"
    );
    let start = Instant::now();
    let (ok, _, stderr) = daemon.stop();
    assert!(ok, "{stderr}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "stopping took {:?}",
        start.elapsed()
    );
}

/// `GET /metrics` over HTTP/1.1 from inside namespace `ns`; returns (status line, body).
fn scrape(ns: &str, addr: &str) -> (String, String) {
    scrape_path(ns, addr, "/metrics")
}

/// `GET path` over HTTP/1.1 from inside namespace `ns`; returns (status line, body).
fn scrape_path(ns: &str, addr: &str, path: &str) -> (String, String) {
    integration_tests::http_get(ns, addr, path)
}

/// The sum of the samples of `metric` whose labels include every `(name, value)` of `want`.
fn total(text: &str, metric: &str, want: &[(&str, &str)]) -> Option<f64> {
    let mut sum = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ')?;
        let (name, labels) = series
            .split_once('{')
            .map_or((series, ""), |(n, l)| (n, l.trim_end_matches('}')));
        if name != metric {
            continue;
        }
        let has = |(k, v): &(&str, &str)| labels.split(',').any(|l| l == format!("{k}=\"{v}\""));
        if want.iter().all(has) {
            *sum.get_or_insert(0.0) += value.parse::<f64>().ok()?;
        }
    }
    sum
}

/// The Prometheus exposition passes `promtool check metrics` and counts what happened: the
/// device's allowed and denied datagrams under its segment, verdict and reason, SIMs by state,
/// the policy apply, control requests by command, the IPFIX sends that failed.
#[test]
fn metrics_pass_promtool_and_count_the_traffic() {
    let Some((_scratch, policy, topology)) = setup("metrics") else {
        return;
    };
    let address = format!("127.0.0.1:{}", free_port());
    let collector = format!("127.0.0.1:{}", free_port());
    let daemon = Daemon::start_with_roles(
        &enforcer_bin(),
        Path::new(&policy),
        &topology,
        "native",
        &[
            "--metrics-address",
            &address,
            "--ipfix-collector",
            &collector,
            "--ipfix-active-timeout",
            "1",
        ],
    );
    let flow = |port: u16| flow(&topology, DEVICE, port, 5);
    let (allowed, denied) = (flow(7001), flow(7002));
    std::thread::sleep(Duration::from_secs(3));
    let (allowed, denied) = (allowed.finish(), denied.finish());
    assert!(allowed.lost().is_empty() && denied.received.is_empty());
    let _ = daemon.status();

    let (status, text) = scrape(&topology.gw.name, &address);
    assert!(status.contains("200"), "{status}");
    let check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write as _;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(text.as_bytes())?;
            child.wait_with_output()
        })
        .expect("promtool (installed by `cargo xtask setup`)");
    assert!(
        check.status.success() && check.stdout.is_empty() && check.stderr.is_empty(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );

    let meters = |verdict| {
        total(
            &text,
            "enforcer_packets_total",
            &[("segment", "meters"), ("verdict", verdict)],
        )
    };
    assert_eq!(
        meters("pass"),
        Some(allowed.sent as f64),
        "passes in segment meters:\n{text}"
    );
    assert_eq!(
        meters("drop"),
        Some(denied.sent as f64),
        "drops in segment meters:\n{text}"
    );
    assert_eq!(
        total(&text, "enforcer_sims", &[("state", "active")]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        total(&text, "enforcer_sims", &[("state", "quarantined")]),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        total(&text, "enforcer_policy_applies_total", &[]),
        None,
        "the start's load is no reload:\n{text}"
    );
    let statuses = total(
        &text,
        "enforcer_control_requests_total",
        &[("command", "status")],
    )
    .unwrap_or(0.0);
    assert!(statuses >= 1.0, "{text}");
    assert!(
        total(&text, "enforcer_ipfix_messages_failed_total", &[]).unwrap_or(0.0) > 0.0,
        "{text}"
    );
    assert!(
        total(&text, "enforcer_map_capacity", &[("map", "SESSIONS")]).unwrap_or(0.0) > 0.0,
        "{text}"
    );

    // A reload shows as an apply with its duration; a scrape of another path is 404.
    let _ = daemon.cli(&["policy", "apply", &policy]);
    let (_, text) = scrape(&topology.gw.name, &address);
    assert_eq!(
        total(&text, "enforcer_policy_applies_total", &[("result", "ok")]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        total(&text, "enforcer_policy_apply_duration_seconds_count", &[]),
        Some(1.0),
        "{text}"
    );
    let requests = |command| {
        total(
            &text,
            "enforcer_control_requests_total",
            &[("command", command)],
        )
    };
    assert_eq!(requests("apply_policy"), Some(1.0), "{text}");
    assert_eq!(requests("status"), Some(statuses), "{text}");
    let (status, _) = scrape_path(&topology.gw.name, &address, "/other");
    assert!(status.contains("404"), "{status}");
    dashboard_queries_are_valid_and_name_served_metrics(&text);
}

/// The Grafana dashboard in examples/: every query is valid PromQL (`promtool check rules`
/// on a rule file made of them) and every metric it names is in the exposition `served`.
fn dashboard_queries_are_valid_and_name_served_metrics(served: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/grafana-dashboard.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("the dashboard"))
            .expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            exprs.push(target["expr"].as_str().expect("expr").to_owned());
        }
    }
    assert!(exprs.len() >= 9, "{exprs:?}");
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, expr) in exprs.iter().enumerate() {
        let expr = expr
            .replace("$__rate_interval", "5m")
            .replace("$instance", ".*");
        rules.push_str(&format!(
            "      - record: enforcer:dashboard_{i}\n        expr: '{}'\n",
            expr.replace('\'', "''")
        ));
        for name in expr
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("enforcer_"))
        {
            let family = name.trim_end_matches("_bucket");
            assert!(
                served.contains(&format!("# TYPE {family} ")),
                "the dashboard names {name}, which /metrics does not serve"
            );
        }
    }
    let scratch = Scratch::new("dashboard");
    let file = scratch.write("rules.yml", &rules);
    let out = Command::new("promtool")
        .args(["check", "rules", &file])
        .output()
        .expect("promtool");
    assert!(
        out.status.success(),
        "promtool check rules on the dashboard's queries: {}{}\n{rules}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Deny events name the sender (IMSI, MSISDN, segment), the packet and the reason, one JSON
/// object per line; a flood raises at most 10 events a second per SIM, and the suppressed
/// counts they carry add up, with the events, to exactly the packets denied. A spoofed source
/// reports without a SIM. `/metrics` counts what was written. The flow export carries the
/// drops too, summed per destination and reason: nfdump shows the denied flow and the spoofed
/// one with every packet (nfcapd 1.7 does not keep forwardingStatus; the unit tests decode it
/// with netflow_parser).
#[test]
fn deny_events_name_the_sim_and_account_for_every_denied_packet() {
    let Some((scratch, policy, topology)) = setup("deny-events") else {
        return;
    };
    let events_file = PathBuf::from(scratch.write("deny.jsonl", ""));
    let address = format!("127.0.0.1:{}", free_port());
    let (mut nfcapd, dir, nfcapd_port) = start_nfcapd(&scratch, &topology.gw.name);
    std::thread::sleep(Duration::from_millis(300));
    let collector = format!("127.0.0.1:{nfcapd_port}");
    let mut daemon = Daemon::start_with_roles(
        &enforcer_bin(),
        Path::new(&policy),
        &topology,
        "native",
        &[
            "--deny-events",
            events_file.to_str().expect("path"),
            "--metrics-address",
            &address,
            "--ipfix-collector",
            &collector,
            "--ipfix-active-timeout",
            "2",
        ],
    );
    let denied = flow(&topology, DEVICE, 7002, 2);
    std::thread::sleep(Duration::from_millis(2500));
    let denied = denied.finish();
    assert!(denied.received.is_empty(), "the denied flow got through");
    // A window later, one more denied datagram: its event carries the rest of the flood.
    std::thread::sleep(Duration::from_millis(1200));
    let last = flow(&topology, DEVICE, 7002, 1000);
    std::thread::sleep(Duration::from_millis(300));
    let last = last.finish();
    let spoofed = flow(&topology, "10.64.9.9", 7001, 1000);
    std::thread::sleep(Duration::from_millis(300));
    let spoofed = spoofed.finish();
    std::thread::sleep(Duration::from_millis(1000));

    let text = std::fs::read_to_string(&events_file).expect("deny events file");
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let of_device: Vec<&serde_json::Value> = records
        .iter()
        .filter(|r| r["src"] == DEVICE && r["dport"] == 7002)
        .collect();
    let accounted: u64 = of_device
        .iter()
        .map(|r| 1 + r["suppressed"].as_u64().expect("suppressed"))
        .sum();
    assert_eq!(
        accounted,
        denied.sent + last.sent,
        "events plus suppressed counts = packets denied:\n{text}"
    );
    let seconds = 2.5 + 1.0;
    assert!(
        (of_device.len() as f64) <= 10.0 * seconds + 10.0,
        "{} events for one SIM in {seconds} s:\n{text}",
        of_device.len()
    );
    let first = of_device[0];
    assert_eq!(first["imsi"], IMSI, "{first}");
    assert_eq!(first["msisdn"], MSISDN, "{first}");
    assert_eq!(first["segment"], "meters", "{first}");
    assert_eq!(first["dst"], SERVICE, "{first}");
    assert_eq!(first["proto"], "udp", "{first}");
    assert_eq!(first["reason"], "no_rule", "{first}");
    // The rule for the same destination on another port is the one nearby.
    let nearby = first["nearby_rule"].as_str().unwrap_or_default();
    assert!(
        nearby.contains("policy.toml:") && nearby.contains("192.0.2.53") && nearby.contains("7001"),
        "{first}"
    );
    assert_eq!(first["iface"], topology.gw_ifaces[0].as_str(), "{first}");
    assert!(
        first["time"]
            .as_str()
            .is_some_and(|t| t.starts_with("20") && t.ends_with('Z')),
        "{first}"
    );
    let spoof = records
        .iter()
        .find(|r| r["src"] == "10.64.9.9")
        .unwrap_or_else(|| panic!("no event for the spoofed source:\n{text}"));
    assert_eq!(spoof["reason"], "spoofed", "{spoof}");
    assert!(spoof.get("imsi").is_none(), "{spoof}");
    assert!(spoofed.received.is_empty());

    let (_, metrics) = scrape(&topology.gw.name, &address);
    assert_eq!(
        total(&metrics, "enforcer_deny_events_total", &[]),
        Some(records.len() as f64),
        "{metrics}"
    );

    // The drops in the flow export: stop the daemon (it sends what is pending), then nfcapd.
    let (ok, _, stderr) = daemon.stop();
    assert!(ok, "{stderr}");
    std::thread::sleep(Duration::from_millis(500));
    let nfcapd_err = nfcapd.stop();
    let rows = nfdump_rows(&dir);
    let (packets, bytes, _) = sum(
        &rows,
        ';',
        &[(0, DEVICE), (1, SERVICE), (2, "7002"), (3, "17")],
        4,
        5,
    );
    assert_eq!(
        (packets, bytes),
        (
            denied.sent + last.sent,
            (denied.sent + last.sent) * DATAGRAM_IP_BYTES
        ),
        "nfdump's drop records of the denied flow:\n{rows}\nnfcapd: {nfcapd_err}"
    );
    let (spoofed_packets, _, _) = sum(&rows, ';', &[(0, "10.64.9.9")], 4, 5);
    assert_eq!(spoofed_packets, spoofed.sent, "{rows}");
}

/// `tmux -L SERVER ARGS` (a server of the test's own, killed when the guard drops).
struct Tmux(String);

impl Tmux {
    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .args(["-L", &self.0])
            .args(args)
            .env("TERM", "xterm-256color")
            .output()
            .expect("tmux (installed by `cargo xtask setup`)")
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", "top"]).stdout).into_owned()
    }

    /// Wait until the screen shows `text`; returns the screen.
    fn wait_for(&self, text: &str) -> String {
        let start = Instant::now();
        loop {
            let screen = self.screen();
            if screen.contains(text) {
                return screen;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "the view never showed `{text}`:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

/// `enforcer top`: the snapshot (`--once`, text and JSON) shows the device among the busiest
/// SIMs with its rate and among the most denied with its drop reason; the terminal view,
/// driven in tmux, shows the same, sorts on `s`, filters on `/`, and quits on `q`.
#[test]
fn top_shows_the_busiest_and_most_denied_sims_live() {
    let Some((_scratch, policy, topology)) = setup("top") else {
        return;
    };
    let daemon = Daemon::start_with_roles(
        &enforcer_bin(),
        Path::new(&policy),
        &topology,
        "native",
        &[],
    );
    let flow = |port: u16| flow(&topology, DEVICE, port, 5);
    let (allowed, denied) = (flow(7001), flow(7002));
    std::thread::sleep(Duration::from_millis(500));
    let socket = daemon.socket.to_str().expect("path").to_owned();

    let json: serde_json::Value =
        serde_json::from_str(&daemon.cli(&["top", "--once", "--json", "--interval", "1"]))
            .expect("top --once --json is JSON");
    let busiest = &json["busiest"][0];
    assert_eq!(busiest["imsi"], IMSI, "{json}");
    assert_eq!(busiest["segment"], "meters", "{json}");
    let pps = busiest["pass_pps"].as_f64().unwrap_or(0.0);
    assert!(
        (100.0..=260.0).contains(&pps),
        "about 200 packets/s pass: {json}"
    );
    let denied_row = &json["most_denied"][0];
    assert_eq!(denied_row["imsi"], IMSI, "{json}");
    assert_eq!(denied_row["drop_reasons"][0][0], "no_rule", "{json}");
    let text = daemon.cli(&["top", "--once", "--interval", "1", "--sort", "drops"]);
    assert!(
        text.contains("sorted by drops") && text.contains(IMSI) && text.contains("no_rule"),
        "{text}"
    );

    let tmux = Tmux(format!("enforcer-top-{}", std::process::id()));
    let command = format!(
        "{} top --socket {socket}",
        enforcer_bin().to_str().expect("path")
    );
    let out = tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "top",
        "-x",
        "160",
        "-y",
        "48",
        &command,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let screen = tmux.wait_for(IMSI);
    assert!(
        screen.contains("Busiest SIMs (by packets)") && screen.contains("Most denied SIMs"),
        "{screen}"
    );
    tmux.wait_for("no_rule");
    tmux.run(&["send-keys", "-t", "top", "s"]);
    tmux.wait_for("Busiest SIMs (by bytes)");
    tmux.run(&["send-keys", "-t", "top", "/"]);
    tmux.wait_for("filter (IMSI prefix or segment)");
    tmux.run(&["send-keys", "-t", "top", "nosuchsegment", "Enter"]);
    let screen = tmux.wait_for("filter `nosuchsegment`");
    assert!(
        !screen.contains(IMSI),
        "the filter hides the device:\n{screen}"
    );
    tmux.run(&["send-keys", "-t", "top", "Escape"]);
    tmux.wait_for(IMSI);
    tmux.run(&["send-keys", "-t", "top", "q"]);
    let start = Instant::now();
    while tmux.run(&["has-session", "-t", "top"]).status.success() {
        assert!(start.elapsed() < Duration::from_secs(5), "q did not quit");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop((allowed.finish(), denied.finish()));
}

/// A webhook receiver in namespace `ns`: answers the first POST with 500 (to be retried), the
/// others with 204; keeps the bodies it accepted.
struct Webhook {
    port: u16,
    bodies: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    refused: std::sync::Arc<std::sync::atomic::AtomicU32>,
}

impl Webhook {
    fn start(ns: &str) -> Self {
        use std::io::{BufRead as _, BufReader, Read as _, Write as _};
        let listener = integration_tests::throughput::in_netns(ns, || {
            std::net::TcpListener::bind("127.0.0.1:0")
        })
        .expect("bind the webhook");
        let port = listener.local_addr().expect("address").port();
        let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let refused = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let (kept, count) = (bodies.clone(), refused.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream);
                let mut length = 0usize;
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                    if line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                    line.clear();
                }
                let mut body = vec![0; length];
                let _ = reader.read_exact(&mut body);
                let first = count.load(std::sync::atomic::Ordering::Relaxed) == 0;
                let status = if first {
                    count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    "500 Internal Server Error"
                } else {
                    kept.lock()
                        .expect("lock")
                        .push(String::from_utf8_lossy(&body).into_owned());
                    "204 No Content"
                };
                let _ = write!(
                    reader.get_mut(),
                    "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        Self {
            port,
            bodies,
            refused,
        }
    }
}

/// Alerts for every kind reach the alerts file and the webhook (which refuses the first post,
/// so it is retried): a SIM denied above its segment's `deny_rate`, a spoofed source, a new
/// destination after the learning period, and a burst far above the SIM's moving average.
#[test]
fn alerts_reach_the_file_and_the_webhook() {
    if !root() {
        return;
    }
    let scratch = Scratch::new("alerts");
    let policy = scratch.write(
        "policy.toml",
        &POLICY.replace(
            "rules = [ { to = [\"192.0.2.53\"], proto = \"udp\", ports = [7001] } ]",
            "rules = [ { to = [\"192.0.2.53\"], proto = \"udp\", ports = [7001, 7003] } ]\n\
                 alerts = { deny_rate = 20, learn_destinations = 2, burst = 5 }",
        ),
    );
    let alerts_file = PathBuf::from(scratch.write("alerts.jsonl", ""));
    let topology = Topology::build(Path::new(env!("CARGO_BIN_EXE_netprobe")));
    let webhook = Webhook::start(&topology.gw.name);
    let url = format!("http://127.0.0.1:{}/hook", webhook.port);
    let collector = format!("127.0.0.1:{}", free_port());
    let daemon = Daemon::start_with_roles(
        &enforcer_bin(),
        Path::new(&policy),
        &topology,
        "native",
        &[
            "--alerts",
            alerts_file.to_str().expect("path"),
            "--alert-webhook",
            &url,
            // One-second rounds (half the shorter export timeout).
            "--ipfix-collector",
            &collector,
            "--ipfix-active-timeout",
            "2",
            "--ipfix-idle-timeout",
            "2",
        ],
    );
    // A steady flow while the destinations are learned and the moving average settles.
    let steady = flow(&topology, DEVICE, 7001, 5);
    std::thread::sleep(Duration::from_millis(4500));
    // After learning: a burst on another allowed port (a new destination too), a denied
    // flood, a spoofed source.
    let burst = Stream::start(
        &topology.dev_a.name,
        DEVICE,
        &topology.svc.name,
        format!("{SERVICE}:7003").parse().expect("address"),
        Duration::from_micros(100),
    );
    let flood = flow(&topology, DEVICE, 7002, 2);
    let spoofed = flow(&topology, "10.64.9.9", 7004, 100);
    std::thread::sleep(Duration::from_millis(2500));
    for stream in [flood, spoofed, burst, steady] {
        let _ = stream.finish();
    }
    let start = Instant::now();
    let kinds = ["new_destination", "deny_rate", "spoofed_source", "burst"];
    let all_in = |text: &str| {
        kinds
            .iter()
            .all(|k| text.contains(&format!("\"alert\":\"{k}\"")))
    };
    while !(all_in(&std::fs::read_to_string(&alerts_file).unwrap_or_default())
        && all_in(&webhook.bodies.lock().expect("lock").join("\n")))
    {
        if start.elapsed() > Duration::from_secs(15) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let text = std::fs::read_to_string(&alerts_file).expect("alerts file");
    let posted = webhook.bodies.lock().expect("lock").join("\n");
    for kind in kinds {
        assert!(
            text.contains(&format!("\"alert\":\"{kind}\"")),
            "no {kind} alert in the file:\n{text}"
        );
        assert!(
            posted.contains(&format!("\"alert\":\"{kind}\"")),
            "no {kind} alert posted:\n{posted}"
        );
    }
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    let new = records
        .iter()
        .find(|r| r["alert"] == "new_destination")
        .expect("new destination");
    assert_eq!(
        (new["imsi"].as_str(), new["port"].as_u64()),
        (Some(IMSI), Some(7003)),
        "{new}"
    );
    assert!(
        !records
            .iter()
            .any(|r| r["alert"] == "new_destination" && r["port"] == 7001),
        "the learned destination alerted:\n{text}"
    );
    assert!(
        records
            .iter()
            .any(|r| r["alert"] == "spoofed_source" && r["src"] == "10.64.9.9"),
        "no spoofed-source alert for 10.64.9.9:\n{text}"
    );
    assert!(
        !records
            .iter()
            .any(|r| r["src"].as_str().is_some_and(|s| s.starts_with("fe80:"))),
        "link-local chatter alerted:\n{text}"
    );
    assert_eq!(
        webhook.refused.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "the first post was refused and retried"
    );
    drop(daemon);
}
