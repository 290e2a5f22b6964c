//! Clients of the running daemon's control socket: `status`, `stats`, `policy apply`, `sim …`.

use std::{
    io::{BufRead as _, Write as _},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use enforcer::{
    control::{Applied, Command, END_OF_ROWS, Reply, RowFormat, SimInfo, Status, unix},
    report::TABLE_HEADER,
};

/// Send `command`, turn an error reply into an error.
fn call(socket: &Path, command: &Command) -> anyhow::Result<Reply> {
    match unix::call(socket, command)? {
        Reply::Error { message, .. } => bail!("{message}"),
        reply => Ok(reply),
    }
}

fn unexpected(reply: &Reply) -> anyhow::Error {
    anyhow::anyhow!(
        "the daemon answered with something else ({reply:?}); use the client of the daemon's \
         version"
    )
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    // Encoded first, so a closed pipe (`| head`) is an io::Error that main treats as done.
    let mut text = serde_json::to_vec_pretty(value)?;
    text.push(b'\n');
    std::io::stdout().lock().write_all(&text)?;
    Ok(())
}

/// `enforcer status`.
/// `enforcer flows`: the daemon's live sessions, busiest first, as a table or JSON.
///
/// # Errors
/// No daemon, an unknown IMSI, or a broken exchange.
pub fn flows(socket: &Path, imsis: &[String], json: bool) -> anyhow::Result<()> {
    use std::fmt::Write as _;
    let reply = call(
        socket,
        &Command::Flows {
            imsis: imsis.to_vec(),
        },
    )?;
    let Reply::Flows(enforcer::control::Flows { flows }) = reply else {
        return Err(unexpected(&reply));
    };
    if json {
        return print_json(&flows);
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<16} {:<6} {:<8} {:<41} {:<41} {:<11} {:>7} {:>6} {:>10} {:>12} {:>10} {:>12}  RULE",
        "IMSI",
        "PROTO",
        "OPENED",
        "DEVICE",
        "PEER",
        "STATE",
        "AGE_S",
        "IDLE_S",
        "PKTS_OUT",
        "BYTES_OUT",
        "PKTS_IN",
        "BYTES_IN"
    );
    for f in &flows {
        let _ = writeln!(
            out,
            "{:<16} {:<6} {:<8} {:<41} {:<41} {:<11} {:>7} {:>6} {:>10} {:>12} {:>10} {:>12}  {}",
            f.imsi,
            f.proto,
            f.direction,
            f.device,
            f.peer,
            f.state,
            f.age_s,
            f.idle_s,
            f.packets_out,
            f.bytes_out,
            f.packets_in,
            f.bytes_in,
            f.rule
        );
    }
    let _ = writeln!(out, "{} sessions", flows.len());
    print!("{out}");
    Ok(())
}

pub fn status(socket: &Path, json: bool) -> anyhow::Result<()> {
    let reply = call(socket, &Command::Status)?;
    let Reply::Status(status) = reply else {
        return Err(unexpected(&reply));
    };
    if json {
        return print_json(&status);
    }
    print!("{}", status_table(&status));
    Ok(())
}

fn status_table(s: &Status) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let ago = now().saturating_sub(s.applied_at);
    let _ = writeln!(out, "enforcer {} (pid {})", s.version, s.pid);
    let _ = writeln!(out, "pin dir:   {}", s.pin_dir.display());
    let _ = writeln!(
        out,
        "policy:    {} (generation {}, applied {ago} s ago, {} applies since start)",
        s.policy.display(),
        s.generation,
        s.applies
    );
    let _ = writeln!(
        out,
        "program:   id {} ({} instructions verified)",
        s.program_id, s.verified_instructions
    );
    let _ = writeln!(
        out,
        "SIMs:      {} ({} active, {} quarantined, {} of them by command)",
        s.sims.total, s.sims.active, s.sims.quarantined, s.sims.quarantined_by_command
    );
    if !s.session_scan.is_empty() {
        let _ = writeln!(out, "sweeps:    {}", s.session_scan);
    }
    if let [(_, redirected), to_stack @ ..] = s
        .xdp_forward
        .iter()
        .map(|c| (c.outcome.as_str(), c.packets))
        .collect::<Vec<_>>()
        .as_slice()
    {
        let reasons: Vec<String> = to_stack
            .iter()
            .filter(|(_, packets)| *packets > 0)
            .map(|(outcome, packets)| format!("{outcome} {packets}"))
            .collect();
        let _ = writeln!(
            out,
            "forward:   in XDP: {redirected} packets redirected; to the stack: {}",
            if reasons.is_empty() {
                "none".to_owned()
            } else {
                reasons.join(", ")
            }
        );
    }
    if let Some(e) = &s.export {
        let _ = writeln!(
            out,
            "IPFIX:     to {} ({} sessions followed; {} records and {} messages sent, {} \
             messages failed, {} records deferred)",
            e.collectors.join(", "),
            e.sessions_tracked,
            e.records_sent,
            e.messages_sent,
            e.messages_failed,
            e.records_deferred
        );
    }
    let _ = writeln!(
        out,
        "\n{:<16} {:<7} {:<8} {:<7} {:>8} {:>8} {:>8} {:>10}  STATE",
        "INTERFACE", "MODE", "ROLE", "FORWARD", "IFINDEX", "LINK", "PROGRAM", "REATTACHED"
    );
    for i in &s.interfaces {
        let (ifindex, link, program, state) = match &i.link {
            Some(l) if l.ifindex != 0 && l.program_id == s.program_id => {
                (l.ifindex, l.link_id, l.program_id, "enforcing")
            }
            Some(l) if l.ifindex != 0 => (l.ifindex, l.link_id, l.program_id, "other program"),
            Some(l) => (0, l.link_id, l.program_id, "interface gone"),
            None => (0, 0, 0, "not attached"),
        };
        let _ = writeln!(
            out,
            "{:<16} {:<7} {:<8} {:<7} {:>8} {:>8} {:>8} {:>10}  {state}",
            i.iface,
            i.mode,
            if i.core_facing {
                "core"
            } else if i.service_facing {
                "service"
            } else {
                "-"
            },
            if i.forward.is_empty() {
                "stack"
            } else {
                &i.forward
            },
            ifindex,
            link,
            program,
            i.reattached
        );
    }
    let _ = writeln!(
        out,
        "\n{:<12} {:<28} {:>10} {:>10} {:>6}",
        "MAP", "ENTRIES", "USED", "CAPACITY", "FILL"
    );
    for m in &s.maps {
        let fill = if m.capacity == 0 {
            0.0
        } else {
            m.used as f64 * 100.0 / f64::from(m.capacity)
        };
        let _ = writeln!(
            out,
            "{:<12} {:<28} {:>10} {:>10} {:>5.1}%",
            m.map, m.what, m.used, m.capacity, fill
        );
    }
    out
}

/// `enforcer stats`.
pub fn stats(socket: &Path, imsis: &[String], json: bool) -> anyhow::Result<()> {
    // The whole fleet comes as rows after the reply (a million SIMs as one JSON value took
    // seconds to encode and decode); chosen SIMs come inside it.
    let stream = imsis.is_empty().then_some(if json {
        RowFormat::Json
    } else {
        RowFormat::Table
    });
    let (reply, mut rows) = unix::call_with_rows(
        socket,
        &Command::Stats {
            imsis: imsis.to_vec(),
            stream,
        },
    )?;
    let report = match reply {
        Reply::Stats(report) => report,
        Reply::Error { message, .. } => bail!("{message}"),
        other => return Err(unexpected(&other)),
    };
    if stream.is_none() {
        if json {
            return print_json(&report);
        }
        write!(std::io::stdout().lock(), "{}", report.to_table())?;
        return Ok(());
    }
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    if json {
        out.write_all(b"{\n  \"sims\": [")?;
    } else {
        out.write_all(TABLE_HEADER.as_bytes())?;
    }
    let mut line = Vec::with_capacity(256);
    let mut first = true;
    loop {
        line.clear();
        rows.read_until(b'\n', &mut line)
            .context("reading the SIM rows from the daemon")?;
        if line.is_empty() || !line.ends_with(b"\n") {
            bail!(
                "the daemon closed the connection before the last SIM row; the rows above are \
                 incomplete (see the daemon's log)"
            );
        }
        if line == END_OF_ROWS {
            break;
        }
        if json {
            out.write_all(if first { b"\n    " } else { b",\n    " })?;
            out.write_all(&line[..line.len() - 1])?;
        } else {
            out.write_all(&line)?;
        }
        first = false;
    }
    if json {
        out.write_all(b"\n  ],\n  \"segments\": ")?;
        let segments = serde_json::to_string_pretty(&report.segments)?.replace('\n', "\n  ");
        out.write_all(segments.as_bytes())?;
        out.write_all(b",\n  \"rules\": ")?;
        let rules = serde_json::to_string_pretty(&report.rules)?.replace('\n', "\n  ");
        out.write_all(rules.as_bytes())?;
        out.write_all(b"\n}\n")?;
    } else {
        out.write_all(report.tail_table().as_bytes())?;
    }
    out.flush()?;
    Ok(())
}

/// `enforcer policy apply FILE`.
pub fn apply(socket: &Path, file: &Path, json: bool) -> anyhow::Result<()> {
    // The daemon resolves the path in its own working directory: send an absolute one.
    let path: PathBuf =
        std::fs::canonicalize(file).with_context(|| format!("cannot read {}", file.display()))?;
    let reply = call(socket, &Command::ApplyPolicy { path })?;
    let Reply::Applied(applied) = reply else {
        return Err(unexpected(&reply));
    };
    if json {
        return print_json(&applied);
    }
    println!("{}", applied_line(&applied));
    Ok(())
}

fn applied_line(a: &Applied) -> String {
    format!(
        "applied {}: generation {}, {} SIMs ({} added, {} removed, {} changed), {} rules, in \
         {:.1} ms",
        a.policy.display(),
        a.generation,
        a.sims,
        a.sims_added,
        a.sims_removed,
        a.sims_changed,
        a.rules,
        a.took_ms
    )
}

/// What `enforcer sim` does.
#[derive(Debug, Clone)]
pub enum SimAction {
    /// `sim show`.
    Show,
    /// `sim quarantine`.
    Quarantine,
    /// `sim release`.
    Release,
    /// `sim bind ADDRESS`.
    Bind(String),
    /// `sim unbind [ADDRESS]`.
    Unbind(Option<String>),
    /// `sim imei-reset`.
    ImeiReset,
    /// `sim imei-lock [LOCK]`.
    ImeiLock(Option<String>),
}

/// `enforcer sim show|quarantine|release|bind|unbind|imei-reset|imei-lock IMSI`.
pub fn sim(socket: &Path, action: &SimAction, imsi: &str, json: bool) -> anyhow::Result<()> {
    let imsi = imsi.to_owned();
    let command = match action {
        SimAction::Show => Command::SimShow { imsi },
        SimAction::Quarantine => Command::SimQuarantine {
            imsi,
            source: source(),
        },
        SimAction::Release => Command::SimRelease { imsi },
        SimAction::Bind(address) => Command::SimBind {
            imsi,
            address: address.clone(),
            source: source(),
        },
        SimAction::Unbind(address) => Command::SimUnbind {
            imsi,
            address: address.clone(),
        },
        SimAction::ImeiReset => Command::SimImeiReset { imsi },
        SimAction::ImeiLock(lock) => Command::SimImeiLock {
            imsi,
            lock: lock.clone(),
        },
    };
    let reply = call(socket, &command)?;
    let Reply::Sim(info) = reply else {
        return Err(unexpected(&reply));
    };
    if json {
        return print_json(&info);
    }
    print!("{}", sim_text(&info));
    Ok(())
}

fn sim_text(s: &SimInfo) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "IMSI:       {}", s.imsi);
    let _ = writeln!(out, "segment:    {}", s.segment);
    let _ = write!(out, "state:      {}", s.state);
    match &s.quarantine {
        Some(q) => {
            let _ = writeln!(
                out,
                " (by command: {}, {} s ago)",
                q.source,
                now().saturating_sub(q.at)
            );
        }
        None => {
            let _ = writeln!(out);
        }
    }
    let _ = writeln!(out, "addresses:  {}", s.addresses.join(", "));
    if let Some(imei) = &s.imei {
        let lock = match (imei.lock.as_str(), imei.learned.as_str()) {
            ("", _) => "no lock".to_owned(),
            ("learn", "") => "learn (nothing seen yet)".to_owned(),
            ("learn", learned) => format!("learned {learned}"),
            (lock, _) => lock.to_owned(),
        };
        let seen = if imei.seen.is_empty() {
            String::new()
        } else {
            format!(
                "; seen {}{}",
                imei.seen,
                if imei.mismatch { " (MISMATCH)" } else { "" }
            )
        };
        let _ = writeln!(out, "imei:       {lock}{seen}");
    }
    for b in &s.bindings {
        let how = if b.session.is_empty() {
            format!("by command: {}", b.source)
        } else {
            format!(
                "by RADIUS accounting: {}, Acct-Session-Id {}",
                b.source, b.session
            )
        };
        let _ = writeln!(
            out,
            "bound:      {} ({how}, {} s ago){}",
            b.address,
            now().saturating_sub(b.at),
            if b.applied {
                ""
            } else {
                "; not applied: the policy file gives it to another SIM or it is in no pool"
            }
        );
    }
    let _ = writeln!(
        out,
        "passed:     {} packets, {} bytes",
        s.pass_packets, s.pass_bytes
    );
    let _ = writeln!(
        out,
        "dropped:    {} packets, {} bytes",
        s.drop_packets, s.drop_bytes
    );
    out
}

/// Who is asking, for the record kept with an override: `cli:<user>`.
fn source() -> String {
    let user = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| {
            // SAFETY: getuid has no preconditions and cannot fail.
            format!("uid {}", unsafe { libc::getuid() })
        });
    format!("cli:{user}")
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
