//! The flow export's cost at fleet scale: a kernel session table of N sessions (two per SIM),
//! every one of them due each round (new packets, the active timeout passed), exported the way
//! the daemon does it: read the table, meter, name and encode the records, hand them to the
//! exporter thread, which sends them to `nfcapd` on loopback.
//!
//! Measured per round: CPU time of the daemon's side (thread CPU: user + system, the batch
//! reads' syscalls included) and its wall time; the meter's memory (RSS growth); the records
//! per second the exporter thread sends, and how many `nfcapd` stored.

use std::{
    fmt::Write as _,
    net::SocketAddr,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use enforcer::{
    capacity::Capacity,
    loader::Enforcer,
    telemetry::{
        FlowNames,
        exporter::{BATCH, ExportConfig, Exporter},
        meter::Meter,
        records,
    },
};
use enforcer_common::session::{SESSION_DEVICE_FIRST, Session, SessionKey, Timeouts};
use serde_json::{Value, json};

const S: u64 = 1_000_000_000;

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmRSS:")?
                    .trim()
                    .trim_end_matches(" kB")
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
        })
        .unwrap_or(f64::NAN)
        / 1024.0
}

/// Session `i` (SIM `i / 2`, a device in 10.0.0.0/8 talking to one of two services), with
/// `packets` each way and stamped `seen_ns`.
fn session(i: u32, created_ns: u64, seen_ns: u64, packets: u64) -> (SessionKey, Session) {
    let sim = i / 2;
    let mut key = SessionKey {
        port_a: 40_000 + (i % 2) as u16,
        port_b: 443,
        proto: 6,
        ..SessionKey::default()
    };
    key.addr_a[..4].copy_from_slice(&(0x0A00_0000 | sim).to_be_bytes());
    key.addr_b[..4].copy_from_slice(&[192, 0, 2, 1 + (i % 2) as u8]);
    let value = Session {
        sim,
        rule: i % 4,
        segment: 0,
        state: 2,
        flags: SESSION_DEVICE_FIRST,
        created_ns,
        seen_ns,
        packets: [packets, packets],
        bytes: [packets * 600, packets * 100],
        ..Session::default()
    };
    (key, value)
}

/// One round's measurements.
struct Round {
    /// Reading the table.
    read_cpu_s: f64,
    /// Metering what was read.
    meter_cpu_s: f64,
    /// The whole round, sending included.
    cpu_s: f64,
    wall_s: f64,
    records: u64,
    due: usize,
}

/// CPU time of this process (every thread: the round's and the exporter's), seconds.
fn process_cpu_s() -> f64 {
    let mut usage = libc::rusage {
        // SAFETY: rusage is plain old data; all zeroes is a valid value.
        ..unsafe { std::mem::zeroed() }
    };
    // SAFETY: `usage` is a valid rusage for the call to write.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &raw mut usage) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// One round as the daemon runs it: read the table, meter, name and encode the records in
/// batches and hand each to the exporter (waiting when its queue is full, where the daemon
/// would defer, so that every record is sent), until the exporter has sent them all.
fn round(
    enforcer: &Enforcer,
    meter: &mut Meter,
    now: u64,
    exporter: &Exporter,
) -> Result<Round, String> {
    use std::sync::atomic::Ordering::Relaxed;
    let stats = std::sync::Arc::clone(exporter.stats());
    let sent_before = stats.records_sent.load(Relaxed);
    let (cpu, wall) = (process_cpu_s(), Instant::now());
    let sweep = enforcer
        .expire_sessions(now, &Timeouts::default(), true)
        .map_err(|e| e.to_string())?;
    let read_cpu_s = process_cpu_s() - cpu;
    let due = meter.round(now, &sweep.live, &[]);
    drop(sweep);
    let meter_cpu_s = process_cpu_s() - cpu - read_cpu_s;
    let mut total = 0u64;
    for chunk in due.chunks(BATCH / 2) {
        let mut batch = Vec::with_capacity(chunk.len() * 2);
        for d in chunk {
            let names = FlowNames {
                imsi: format!("00101{:010}", d.sim),
                msisdn: String::new(),
                segment: "meters".to_owned(),
                rule: format!("segment meters @ policy.toml:{}", 10 + d.rule),
            };
            records(d, &names, now, 1_764_000_000_000, &mut batch);
        }
        total += batch.len() as u64;
        while let Err(back) = exporter.offer(batch) {
            batch = back;
            std::thread::sleep(Duration::from_micros(100));
        }
        meter.commit(chunk, now);
    }
    while stats.records_sent.load(Relaxed) + stats.messages_failed.load(Relaxed) * 10
        < sent_before + total
        && wall.elapsed() < Duration::from_secs(300)
    {
        std::thread::sleep(Duration::from_micros(200));
    }
    Ok(Round {
        read_cpu_s,
        meter_cpu_s,
        cpu_s: process_cpu_s() - cpu,
        wall_s: wall.elapsed().as_secs_f64(),
        due: due.len(),
        records: total,
    })
}

/// `nfcapd` on a free loopback port writing into `dir`; `None` if it is not installed.
fn nfcapd(dir: &std::path::Path) -> Option<(std::process::Child, u16)> {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .ok()?
        .port();
    std::fs::create_dir_all(dir).ok()?;
    let child = Command::new("nfcapd")
        .args(["-w"])
        .arg(dir)
        .args([
            "-b",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-t",
            "3600",
            "-B",
            "33554432",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    std::thread::sleep(Duration::from_millis(500));
    Some((child, port))
}

/// Run the section with `sessions` sessions; writes its markdown into `md`.
///
/// # Errors
/// Loading the program or writing the session table.
pub fn run(
    md: &mut String,
    work: &std::path::Path,
    sessions: u32,
    quick: bool,
) -> Result<Value, String> {
    // The daemon's defaults: `--ipfix-max-rate`, and a meter round every 7.5 s (half the
    // idle timeout of 15 s).
    run_at(md, work, sessions, quick, 250_000, 8.0)
}

fn run_at(
    md: &mut String,
    work: &std::path::Path,
    sessions: u32,
    quick: bool,
    max_rate: u64,
    rounds_per_minute: f64,
) -> Result<Value, String> {
    let capacity = Capacity {
        sessions,
        ..Capacity::default()
    };
    let enforcer = Enforcer::load(capacity, None).map_err(|e| e.to_string())?;
    let t0 = 100_000 * S;
    let fill = |seen: u64, packets: u64| -> Result<(), String> {
        let table: Vec<_> = (0..sessions)
            .map(|i| session(i, t0 - 61 * S, seen, packets))
            .collect();
        enforcer.insert_sessions(&table).map_err(|e| e.to_string())
    };
    fill(t0, 10)?;
    let dir = work.join("nfcapd-export");
    let (mut child, addr): (Option<std::process::Child>, SocketAddr) = match nfcapd(&dir) {
        Some((child, port)) => (Some(child), ([127, 0, 0, 1], port).into()),
        // No nfcapd: a port nobody reads (sends still cost what they cost).
        None => (None, ([127, 0, 0, 1], 9).into()),
    };
    let exporter = Exporter::start(&ExportConfig {
        collectors: vec![addr],
        domain: 1,
        mtu: 1500,
        template_refresh: Duration::from_secs(600),
        max_rate,
    })
    .map_err(|e| e.to_string())?;
    let rss_before = rss_mib();
    let mut meter = Meter::new(60, 15, None);
    // Round 1: every session new to the meter and past the active timeout; round 2, a minute
    // later with new packets everywhere: the steady state of a busy fleet.
    let first = round(&enforcer, &mut meter, t0, &exporter)?;
    fill(t0 + 60 * S, 20)?;
    let steady = round(&enforcer, &mut meter, t0 + 61 * S, &exporter)?;
    // The other rounds of that minute: the table read and metered, nothing due.
    let quiet = round(&enforcer, &mut meter, t0 + 68 * S, &exporter)?;
    let meter_mib = rss_mib() - rss_before;
    let stats = std::sync::Arc::clone(exporter.stats());
    exporter.finish(Duration::from_secs(5));
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    let (sent, failed) = (load(&stats.records_sent), load(&stats.messages_failed));
    let mut stored = None;
    if let Some(child) = child.as_mut() {
        std::thread::sleep(Duration::from_millis(500));
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            use std::io::Read as _;
            let _ = e.read_to_string(&mut err);
        }
        let _ = child.wait();
        stored = err.lines().find_map(|l| {
            l.split("Flows: ")
                .nth(1)?
                .split(',')
                .next()?
                .trim()
                .parse::<u64>()
                .ok()
        });
    }
    let _ = std::fs::remove_dir_all(&dir);
    let rate = steady.records as f64 / steady.wall_s;

    let minute_cpu_s = steady.cpu_s + (rounds_per_minute - 1.0) * quiet.cpu_s;
    let per_minute = minute_cpu_s / 60.0 * 100.0;
    let _ = writeln!(
        md,
        "\n## Flow export (IPFIX)\n\n{sessions} sessions ({} SIMs × 2) in the kernel table, every \
         one due each round (new packets in both directions, active timeout 60 s): the daemon's \
         side of a round is reading the table (batched), metering, naming (IMSI, segment, rule) \
         and encoding {} records; sending is the exporter thread into `nfcapd` on loopback.\n",
        sessions / 2,
        steady.records
    );
    let _ = writeln!(
        md,
        "| round | sessions due | records | CPU s: read | meter | all (naming, encoding, \
         sending included) | wall s |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|");
    for (name, r) in [
        ("first (all new)", &first),
        ("steady (a minute later, all due)", &steady),
        ("quiet (7 s later, none due)", &quiet),
    ] {
        let _ = writeln!(
            md,
            "| {name} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} |",
            r.due, r.records, r.read_cpu_s, r.meter_cpu_s, r.cpu_s, r.wall_s
        );
    }
    let _ = writeln!(
        md,
        "\nTarget: exporting every session every 60 s costs ≤ 10% of one core on average. With the \
         defaults a minute holds {rounds_per_minute:.0} meter rounds (one every 7.5 s: half the \
         idle timeout), one of them exporting everything: {minute_cpu_s:.1} CPU s a minute, \
         {per_minute:.2}% of a core ({}). Sending is paced at {max_rate} records/s. \
         The meter's state: {meter_mib:.0} MiB for {sessions} sessions ({:.0} bytes each). \
         A steady round moved {rate:.0} records/s from the table to the socket; over both \
         rounds the exporter sent {sent} records ({failed} messages failed) and nfcapd stored {}.",
        if per_minute <= 10.0 { "met" } else { "NOT met" },
        meter_mib * 1024.0 * 1024.0 / f64::from(sessions.max(1)),
        stored.map_or_else(|| "(not run)".to_owned(), |n| format!("{n} records")),
    );
    if quick {
        let _ = writeln!(md, "\n(quick run: {sessions} sessions)");
    }
    Ok(json!({
        "sessions": sessions,
        "records_per_round": steady.records,
        "first_round": {"cpu_s": first.cpu_s, "wall_s": first.wall_s},
        "steady_round": {"cpu_s": steady.cpu_s, "read_cpu_s": steady.read_cpu_s, "meter_cpu_s": steady.meter_cpu_s, "wall_s": steady.wall_s},
        "quiet_round": {"cpu_s": quiet.cpu_s, "read_cpu_s": quiet.read_cpu_s, "meter_cpu_s": quiet.meter_cpu_s, "wall_s": quiet.wall_s},
        "max_rate": max_rate,
        "cpu_percent_of_a_core_at_60s": per_minute,
        "meter_mib": meter_mib,
        "records_sent": sent,
        "records_per_s": rate,
        "messages_failed": failed,
        "nfcapd_stored": stored,
    }))
}
