//! The demo behind `cargo xtask demo`: builds the gateway picture on network namespaces,
//! attaches `enforcer run` with a policy, sends allowed, denied, lateral, spoofed and non-pool
//! traffic, shows what got through and the per-SIM counters, and cleans up (also on Ctrl-C).
//!
//! Usage: enforcer-demo ENFORCER_BINARY POLICY

use std::{
    path::PathBuf,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use integration_tests::topology::{Daemon, Kind, Topology, scenario};

const PICTURE: &str = r"
  devA: EV chargers 10.64.0.1-2, PLC 10.66.0.2,       gw: enforcer (XDP) on      svc: payment 198.51.100.10
        spoofer 10.64.9.9, non-pool 172.16.0.1 --A--   A, B and S; forwarding --S-- OCPP 198.51.100.20, DNS 192.0.2.53
  devB: meters 10.65.0.1-2, industrial GW 10.66.0.1 -B-                              head-end .30, SCADA 203.0.113.5
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(enforcer), Some(policy)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: enforcer-demo ENFORCER_BINARY POLICY");
        return ExitCode::from(2);
    };
    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&interrupted);
    if let Err(e) = ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst)) {
        eprintln!("cannot install the Ctrl-C handler: {e}");
        return ExitCode::from(2);
    }
    let netprobe = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("netprobe")))
        .unwrap_or_else(|| PathBuf::from("netprobe"));

    println!("enforcer demo: a gateway between IoT devices and their services{PICTURE}");
    println!("Building namespaces and starting `enforcer run --policy {policy}` on the gateway...");
    let topology = Topology::build(&netprobe);
    let mut daemon = Daemon::start(
        PathBuf::from(enforcer).as_path(),
        PathBuf::from(policy).as_path(),
        &topology,
        "native",
    );

    println!(
        "\n{:<8} {:<38} {:<40} {:<9} WHY",
        "RESULT", "FLOW", "FROM -> TO", "EXPECTED"
    );
    let mut surprises = 0;
    for probe in scenario() {
        if interrupted.load(Ordering::SeqCst) {
            println!("\nInterrupted: cleaning up.");
            return ExitCode::from(130);
        }
        let through = topology.send(&probe);
        let what = match probe.kind {
            Kind::Tcp => format!("tcp/{}", probe.port),
            Kind::Udp(n) => format!("udp/{} x{n}", probe.port),
            Kind::Ping => "icmp echo".to_owned(),
        };
        let result = if through { "PASSED" } else { "DROPPED" };
        let expected = if probe.expect_through { "pass" } else { "drop" };
        if through != probe.expect_through {
            surprises += 1;
        }
        println!(
            "{result:<8} {:<39} {:<46} {expected:<9} {}{}",
            probe.label,
            format!("{} -> {} {what}", probe.src, probe.dst),
            probe.why,
            if through == probe.expect_through {
                ""
            } else {
                "   <-- UNEXPECTED"
            }
        );
    }
    println!("\nCounters from `enforcer stats` (per SIM, per segment by verdict, per rule):\n");
    print!("{}", daemon.stats(&[]));
    let (ok, _, _) = daemon.stop();
    println!(
        "\nStopped the enforcer ({}); namespaces and pins are removed.",
        if ok { "clean exit" } else { "error" }
    );
    drop(daemon);
    drop(topology);
    if surprises > 0 || !ok {
        println!("{surprises} flow(s) did not behave as the policy says.");
        return ExitCode::FAILURE;
    }
    println!("Every flow behaved as the policy says.");
    ExitCode::SUCCESS
}
