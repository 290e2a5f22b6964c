//! The flow export's cost at fleet scale: a kernel session table of N sessions (two per SIM),
//! every one with new packets once a minute, swept and exported the way the daemon does it,
//! round by round on the daemon's schedule (`enforcer::scan_plan`: a sweep every 7.5 s, the
//! whole table once per active timeout): scan the table, meter, name and encode the records,
//! hand them to the exporter thread, which sends them to `nfcapd` on loopback.
//!
//! Measured: the CPU time of a whole minute of rounds (the process's user + system time, the
//! exporter thread and the scans' syscalls included), beside the sweeps the same table costs
//! with the flow export off; the meter's memory (RSS growth); the records per second the
//! exporter thread sends, and how many `nfcapd` stored.

use std::{
    fmt::Write as _,
    net::SocketAddr,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use enforcer::scan_plan::ScanPlan;
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
use enforcer_common::{
    scan::ScanArgs,
    session::{SESSION_DEVICE_FIRST, Session, SessionKey, Timeouts},
};
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
    /// Sessions the scan picked.
    picked: usize,
    /// Whether it read the whole table.
    full: bool,
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

/// One round as the daemon runs it: scan the table under `args` (the whole of it when
/// `full`), meter, name and encode the records in batches and hand each to the exporter
/// (waiting when its queue is full, where the daemon would defer, so that every record is
/// sent), until the exporter has sent them all.
fn round(
    enforcer: &Enforcer,
    meter: &mut Meter,
    args: &ScanArgs,
    full: bool,
    exporter: &Exporter,
) -> Result<Round, String> {
    use std::sync::atomic::Ordering::Relaxed;
    let now = args.now_ns;
    let stats = std::sync::Arc::clone(exporter.stats());
    let sent_before = stats.records_sent.load(Relaxed);
    let (cpu, wall) = (process_cpu_s(), Instant::now());
    let sweep = enforcer
        .sweep_sessions(args, true)
        .map_err(|e| e.to_string())?;
    let read_cpu_s = process_cpu_s() - cpu;
    let due = if full {
        meter.round(now, &sweep.live, &[])
    } else {
        meter.round_partial(now, &sweep.live, &[])
    };
    let picked = sweep.live.len();
    drop(sweep);
    let meter_cpu_s = process_cpu_s() - cpu - read_cpu_s;
    let mut total = 0u64;
    for chunk in due.chunks(BATCH / 2) {
        let mut batch = Vec::with_capacity(chunk.len() * 2);
        for d in chunk {
            let names = std::sync::Arc::new(FlowNames {
                imsi: format!("00101{:010}", d.sim),
                msisdn: String::new(),
                segment: "meters".to_owned(),
                rule: format!("segment meters @ policy.toml:{}", 10 + d.rule),
            });
            records(d, &names, now, 1_764_000_000_000, &mut batch);
        }
        total += batch.len() as u64;
        while let Err(back) = exporter.offer(batch) {
            batch = back;
            // The daemon would leave them to its next round; waiting here costs this process
            // only a wake-up every 5 ms.
            std::thread::sleep(Duration::from_millis(5));
        }
        meter.commit(chunk, now);
    }
    while stats.records_sent.load(Relaxed) + stats.messages_failed.load(Relaxed) * 10
        < sent_before + total
        && wall.elapsed() < Duration::from_secs(300)
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(Round {
        read_cpu_s,
        meter_cpu_s,
        cpu_s: process_cpu_s() - cpu,
        wall_s: wall.elapsed().as_secs_f64(),
        due: due.len(),
        picked,
        full,
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
    // The daemon's default `--ipfix-max-rate`.
    run_at(md, work, sessions, quick, 250_000)
}

fn run_at(
    md: &mut String,
    work: &std::path::Path,
    sessions: u32,
    quick: bool,
    max_rate: u64,
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
    // The daemon's defaults: active timeout 60 s, idle 15 s, a sweep every 7.5 s (half the idle
    // timeout), the session timeouts.
    let mut meter = Meter::new(60, 15, None);
    let mut plan = ScanPlan::default();
    let readers = Some(60 * S);
    let timeouts = Timeouts::default();
    let step = 15 * S / 2;
    // The daemon's first sweep, at t0 + 1 s: the whole table, every session new to the meter
    // and open since t0 - 61 s, so all of it is exported (active timeout).
    let (args, full) = plan.next(t0 + S, &timeouts, readers);
    let first = round(&enforcer, &mut meter, &args, full, &exporter)?;
    plan.done(&args);
    // The minute measured: the next eight sweeps (t0 + 8.5 s to t0 + 61 s). Every session
    // sends again at t0 + 30 s (the fleet reports once a minute), so its record ends 15 s
    // later by the idle timeout; the whole table is read again at t0 + 61 s.
    let mut minute = Vec::new();
    let mut refilled = false;
    for k in 1..=8u64 {
        let now = t0 + S + k * step;
        if !refilled && now > t0 + 30 * S {
            fill(t0 + 30 * S, 20)?;
            refilled = true;
        }
        let (args, full) = plan.next(now, &timeouts, readers);
        minute.push((k, round(&enforcer, &mut meter, &args, full, &exporter)?));
        plan.done(&args);
    }
    // A figure is only worth reporting for the work: every session exported in the first
    // sweep and again in the minute (both directions each time).
    let due_in_minute: usize = minute.iter().map(|(_, r)| r.due).sum();
    let records_in_minute: u64 = minute.iter().map(|(_, r)| r.records).sum();
    if (first.due, due_in_minute, records_in_minute)
        != (
            sessions as usize,
            sessions as usize,
            2 * u64::from(sessions),
        )
    {
        return Err(format!(
            "the export did not do the work measured: {} sessions due in the first sweep, \
             {due_in_minute} and {records_in_minute} records in the minute, of {sessions} \
             sessions",
            first.due
        ));
    }
    // The same table swept with the flow export off (only expired sessions picked, a sweep
    // every 10 s): what the export's minute is compared with.
    let off_plan = ScanPlan::default();
    let mut off = Vec::new();
    for k in 0..3u64 {
        let (args, _) = off_plan.next(t0 + 62 * S + k * 10 * S, &timeouts, None);
        let cpu = process_cpu_s();
        let sweep = enforcer
            .sweep_sessions(&args, false)
            .map_err(|e| e.to_string())?;
        off.push(process_cpu_s() - cpu);
        if sweep.live_count != sessions as usize || !sweep.expired.is_empty() {
            return Err(format!(
                "the sweep without export saw {} sessions and removed {}",
                sweep.live_count,
                sweep.expired.len()
            ));
        }
    }
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
    let busiest = minute
        .iter()
        .map(|(_, r)| r)
        .max_by_key(|r| r.records)
        .ok_or("no round")?;
    let rate = busiest.records as f64 / busiest.wall_s;
    let minute_cpu_s: f64 = minute.iter().map(|(_, r)| r.cpu_s).sum();
    let minute_records: u64 = minute.iter().map(|(_, r)| r.records).sum();
    let off_sweep_s = off.iter().sum::<f64>() / off.len() as f64;
    // Without export the daemon sweeps every 10 s: six sweeps a minute.
    let off_minute_s = 6.0 * off_sweep_s;
    let total_percent = minute_cpu_s / 60.0 * 100.0;
    let export_percent = (minute_cpu_s - off_minute_s) / 60.0 * 100.0;
    let in_kernel = enforcer.scans_in_kernel().is_ok();
    let _ = writeln!(
        md,
        "\n## Flow export (IPFIX)\n\n{sessions} sessions ({} SIMs × 2) in the kernel table; every \
         one sends once a minute. The daemon's schedule (`enforcer::scan_plan`): a sweep every \
         7.5 s (half the idle timeout of 15 s) picks the sessions that changed since the last one \
         (the meter ends idle records from what it read before), and the whole table is read once per active timeout (60 s). A \
         round is that scan ({}), the meter, naming (IMSI, segment, rule) and encoding the \
         records, and sending them from the exporter thread into `nfcapd` on loopback, paced \
         at {max_rate} records/s. The first sweep (whole table, every session new: {} records) \
         took {:.2} CPU s. Then the minute measured, eight sweeps; every session sends again \
         at +30 s, so its records end by the idle timeout at +45 s:\n",
        sessions / 2,
        if in_kernel {
            "the BPF iterator copies out only the sessions picked"
        } else {
            "this machine refuses BPF tracing programs (EPERM), so the scan is the fallback: \
             the whole table read in batches, then filtered in userspace"
        },
        first.records,
        first.cpu_s,
    );
    let _ = writeln!(
        md,
        "| sweep | scan | sessions picked | records due | records | CPU s: scan | meter | all (naming, encoding, sending included) | wall s |"
    );
    let _ = writeln!(md, "|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for (k, r) in &minute {
        let _ = writeln!(
            md,
            "| +{:.1} s | {} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} |",
            1.0 + *k as f64 * 7.5,
            if r.full { "whole table" } else { "changed" },
            r.picked,
            r.due,
            r.records,
            r.read_cpu_s,
            r.meter_cpu_s,
            r.cpu_s,
            r.wall_s
        );
    }
    let _ = writeln!(
        md,
        "\nThe minute: {minute_cpu_s:.2} CPU s for {minute_records} records, {total_percent:.1}% \
         of a core in all. The same table swept with the flow export off (only expired sessions \
         picked, every 10 s) costs {off_sweep_s:.2} CPU s a sweep, {off_minute_s:.2} s a minute. \
         What the flow export adds: {:.2} CPU s a minute, **{export_percent:.1}% of a core** \
         (target ≤ 10%: {}). The meter's state: {meter_mib:.0} MiB for {sessions} sessions \
         ({:.0} bytes each). The busiest round moved {rate:.0} records/s from the table to the \
         socket; the exporter sent {sent} records in all ({failed} messages failed) and nfcapd \
         stored {}.",
        minute_cpu_s - off_minute_s,
        if export_percent <= 10.0 {
            "met"
        } else {
            "NOT met"
        },
        meter_mib * 1024.0 * 1024.0 / f64::from(sessions.max(1)),
        stored.map_or_else(|| "(not run)".to_owned(), |n| format!("{n} records")),
    );
    if quick {
        let _ = writeln!(md, "\n(quick run: {sessions} sessions)");
    }
    Ok(json!({
            "sessions": sessions,
            "scans_in_kernel": in_kernel,
            "first_round": {"cpu_s": first.cpu_s, "wall_s": first.wall_s, "records": first.records},
            "minute": minute.iter().map(|(k, r)| json!({
                "sweep": k, "full": r.full, "picked": r.picked, "due": r.due, "records": r.records,
                "scan_cpu_s": r.read_cpu_s, "meter_cpu_s": r.meter_cpu_s, "cpu_s": r.cpu_s,
                "wall_s": r.wall_s,
            })).collect::<Vec<_>>(),
            "minute_cpu_s": minute_cpu_s,
            "sweep_without_export_cpu_s": off_sweep_s,
            "total_percent_of_a_core": total_percent,
            "export_percent_of_a_core": export_percent,
            "max_rate": max_rate,
            "meter_mib": meter_mib,
            "records_sent": sent,
            "records_per_s": rate,
            "messages_failed": failed,
            "nfcapd_stored": stored,
    }))
}
