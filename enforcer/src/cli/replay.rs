//! `enforcer policy replay POLICY CAPTURE [--json] [--core-facing]`: every packet of a pcap or
//! pcapng file through the real XDP program, one line (or JSON object) per packet, then a
//! summary by verdict.

use std::{io::Write, net::IpAddr, path::Path};

use anyhow::{Context as _, bail};
use enforcer::{
    compile::Compiled,
    privileges,
    replay::{
        self, Headers, Judgement, Replayer, Summary,
        capture::{Capture, Captured},
    },
};
use enforcer_common::{PassReason, Verdict};
use serde_json::json;

/// Width of the address columns: an IPv4 address and port fit, longer IPv6 ones push the
/// line on rather than padding every line for the widest.
const COLUMN: usize = 21;

/// Run the replay and print it.
pub fn run(
    policy_path: &Path,
    sims: usize,
    compiled: &Compiled,
    capture_path: &Path,
    json: bool,
    core_facing: bool,
) -> anyhow::Result<()> {
    // `-` reads the capture from standard input (`tcpdump -w - | enforcer policy replay P -`).
    let input: Box<dyn std::io::Read> = if capture_path == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(
            std::fs::File::open(capture_path)
                .with_context(|| format!("opening capture {}", capture_path.display()))?,
        )
    };
    let mut capture =
        Capture::open(input).with_context(|| format!("reading {}", capture_path.display()))?;
    privileges::require_bpf("enforcer policy replay").map_err(anyhow::Error::msg)?;
    let mut replayer = Replayer::new(compiled, sims, core_facing)
        .context("loading the policy into an unattached XDP program")?;
    let mut out = std::io::stdout().lock();
    let mut summary = Summary::default();
    let mut header_written = json;
    while let Some(packet) = capture.next_packet() {
        let Captured { number, frame } =
            packet.with_context(|| format!("reading {}", capture_path.display()))?;
        let (headers, judged, why_not) = match &frame {
            Ok(frame) => match replayer
                .judge(frame)
                .with_context(|| format!("judging packet {number}"))?
            {
                Ok(judged) => (replay::headers(frame), Some(judged), None),
                Err(why) => (replay::headers(frame), None, Some(why)),
            },
            Err(why) => (Headers::default(), None, Some(why.clone())),
        };
        if !header_written {
            writeln!(
                out,
                "{:>6}  {:<COLUMN$}  {:<COLUMN$}  {:<6}  {:<17}  RULE",
                "NO", "SOURCE", "DESTINATION", "PROTO", "VERDICT"
            )?;
            header_written = true;
        }
        summary.add(judged.as_ref());
        let rule = judged.and_then(|j| match j.verdict {
            Verdict::Pass(PassReason::Rule, id) => replayer.rule(id).map(|info| (id, info)),
            _ => None,
        });
        if json {
            let object = json!({
                "number": number,
                "length": frame.as_ref().map_or(0, Vec::len),
                "headers": headers,
                "verdict": judged.map(|j| if j.verdict.xdp_action() == enforcer_common::verdict::XDP_PASS { "pass" } else { "drop" }),
                "reason": judged.map(|j| reason(j.verdict)),
                "rule": rule.map(|(id, info)| json!({
                    "id": id, "origin": info.origin, "owner": info.owner,
                    "description": info.description,
                })),
                "not_judged": why_not,
                "reference_differs": judged.and_then(|j| j.reference_differs).map(replay::verdict_name),
            });
            serde_json::to_writer(&mut out, &object)?;
            writeln!(out)?;
        } else {
            let verdict = match (&judged, &why_not) {
                (Some(j), _) => replay::verdict_name(j.verdict).replacen('_', " ", 1),
                (None, Some(why)) => format!("not judged: {why}"),
                (None, None) => "not judged".to_owned(),
            };
            let rule = rule.map_or_else(String::new, |(id, info)| {
                format!("#{id} {} ({})", info.origin, info.owner)
            });
            let line = format!(
                "{number:>6}  {:<COLUMN$}  {:<COLUMN$}  {:<6}  {verdict:<17}  {rule}",
                endpoint(headers.src, headers.src_port),
                endpoint(headers.dst, headers.dst_port),
                protocol(&headers),
            );
            writeln!(out, "{}", line.trim_end())?;
            if let Some(Judgement {
                reference_differs: Some(other),
                ..
            }) = judged
            {
                writeln!(
                    out,
                    "        warning: the reference model says {}; please report this frame",
                    replay::verdict_name(other)
                )?;
            }
        }
    }
    if json {
        serde_json::to_writer(&mut out, &json!({ "summary": summary }))?;
        writeln!(out)?;
    } else {
        let by_verdict: Vec<String> = summary
            .by_verdict
            .iter()
            .map(|(name, count)| format!("{name}={count}"))
            .collect();
        writeln!(
            out,
            "\n{}: {} packet{} against {}: {} passed, {} dropped, {} not judged ({})",
            capture_path.display(),
            summary.packets,
            if summary.packets == 1 { "" } else { "s" },
            policy_path.display(),
            summary.passed,
            summary.dropped,
            summary.not_judged,
            by_verdict.join(" ")
        )?;
    }
    if summary.disagreements > 0 {
        bail!(
            "the kernel and the reference model disagreed on {} packet(s); the kernel's verdicts \
             are shown; please report the capture",
            summary.disagreements
        );
    }
    Ok(())
}

fn reason(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Pass(reason, _) => reason.name(),
        Verdict::Drop(reason) => reason.name(),
    }
}

fn endpoint(addr: Option<IpAddr>, port: Option<u16>) -> String {
    match (addr, port) {
        (Some(IpAddr::V6(a)), Some(p)) => format!("[{a}]:{p}"),
        (Some(a), Some(p)) => format!("{a}:{p}"),
        (Some(a), None) => a.to_string(),
        (None, _) => "-".to_owned(),
    }
}

fn protocol(headers: &Headers) -> String {
    match (headers.protocol, headers.ethertype) {
        (Some(1), _) => "icmp".to_owned(),
        (Some(6), _) => "tcp".to_owned(),
        (Some(17), _) => "udp".to_owned(),
        (Some(58), _) => "icmpv6".to_owned(),
        (Some(p), _) => p.to_string(),
        (None, Some(0x0806)) => "arp".to_owned(),
        (None, Some(e)) => format!("0x{e:04x}"),
        (None, None) => "-".to_owned(),
    }
}
