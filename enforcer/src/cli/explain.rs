//! `enforcer policy explain [FILE] --imsi IMSI | --from ADDR --to ADDR [--proto P] [--port N]`:
//! why a packet passes or drops under a policy, or what a SIM may reach: offline with FILE,
//! else asked of the running daemon (its policy in force and its quarantines by command).

use std::{io::Write as _, net::IpAddr, path::PathBuf};

use anyhow::{Context as _, bail};
use enforcer::explain::{self, Explanation, Packet, Query, RuleRef};

use crate::InputArgs;

/// Arguments of `policy explain`.
#[derive(clap::Args)]
pub struct ExplainArgs {
    /// Policy file (TOML); without it, the running daemon answers for its policy in force.
    file: Option<PathBuf>,
    /// List what this SIM may reach: its segment, state and rules in order.
    #[arg(long, conflicts_with_all = ["from", "to", "proto", "port"], required_unless_present = "from")]
    imsi: Option<String>,
    /// Source address of the packet to judge.
    #[arg(long, requires = "to")]
    from: Option<IpAddr>,
    /// Destination address of the packet to judge.
    #[arg(long, requires = "from")]
    to: Option<IpAddr>,
    /// Protocol: tcp, udp, icmp, icmpv6 or a number (default tcp when --port is given).
    #[arg(long)]
    proto: Option<String>,
    /// Destination port (tcp and udp).
    #[arg(long)]
    port: Option<u16>,
    /// Judge the packet as arriving on a `core` interface (`run --iface core:IF`).
    #[arg(long)]
    core_facing: bool,
    /// Print the explanation as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    input: InputArgs,
    #[command(flatten)]
    socket: crate::SocketArg,
}

fn parse_proto(text: &str) -> anyhow::Result<u8> {
    Ok(match text.to_ascii_lowercase().as_str() {
        "tcp" => 6,
        "udp" => 17,
        "icmp" => 1,
        "icmpv6" => 58,
        other => other.parse().with_context(|| {
            format!("--proto {text}: give tcp, udp, icmp, icmpv6 or a protocol number 0-255")
        })?,
    })
}

fn query(args: &ExplainArgs) -> anyhow::Result<Query> {
    if let Some(imsi) = &args.imsi {
        return Ok(Query::Sim { imsi: imsi.clone() });
    }
    let (Some(from), Some(to)) = (args.from, args.to) else {
        bail!("give --imsi IMSI, or --from ADDR --to ADDR");
    };
    let proto = match (&args.proto, args.port) {
        (Some(p), _) => parse_proto(p)?,
        (None, Some(_)) => 6,
        (None, None) => {
            bail!("give --proto (tcp, udp, icmp, icmpv6 or a number), and --port for tcp or udp")
        }
    };
    Ok(Query::Packet(Packet {
        from,
        to,
        proto,
        port: args.port,
        core_facing: args.core_facing,
    }))
}

/// Validate and compile the policy, answer the query and print the answer.
pub fn run(args: &ExplainArgs) -> anyhow::Result<()> {
    let query = query(args)?;
    let explanation = match &args.file {
        Some(file) => {
            let (policy, compiled) = crate::load_policy(file, &args.input.options())?;
            explain::explain(&policy, &compiled, &query)?
        }
        None => match enforcer::control::unix::call(
            &args.socket.socket,
            &enforcer::control::Command::Explain { query },
        )? {
            enforcer::control::Reply::Explained(explanation) => *explanation,
            enforcer::control::Reply::Error { message, .. } => bail!("{message}"),
            other => bail!("the daemon answered with something else ({other:?})"),
        },
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &explanation)?;
        writeln!(out)?;
        return Ok(());
    }
    match explanation {
        Explanation::Packet(p) => {
            writeln!(out, "{}: {} ({})", p.packet, p.verdict, p.reason)?;
            if let Some(sim) = &p.sender {
                writeln!(
                    out,
                    "  from SIM {} (segment {}, {})",
                    sim.imsi, sim.segment, sim.state
                )?;
            }
            if let Some(sim) = &p.destination {
                writeln!(out, "  to SIM {} (segment {})", sim.imsi, sim.segment)?;
            }
            writeln!(out, "  why: {}", p.why)?;
            if let Some(rule) = &p.rule
                && !rule.description.is_empty()
            {
                writeln!(out, "  rule: {}", rule.description)?;
            }
            if let Some(fix) = &p.fix {
                writeln!(out, "  to change it: {fix}")?;
            }
        }
        Explanation::Sim(s) => {
            let addresses: Vec<&str> = [s.sim.ipv4.as_deref(), s.sim.ipv6.as_deref()]
                .into_iter()
                .flatten()
                .collect();
            writeln!(
                out,
                "SIM {}: segment {}, {}, {}",
                s.sim.imsi,
                s.sim.segment,
                s.sim.state,
                addresses.join(" ")
            )?;
            for rule in &s.rules {
                writeln!(out, "  {}", rule_line(rule))?;
            }
            writeln!(out, "{}", s.summary)?;
        }
    }
    Ok(())
}

fn rule_line(rule: &RuleRef) -> String {
    let description = if rule.description.is_empty() {
        String::new()
    } else {
        format!("  \"{}\"", rule.description)
    };
    format!(
        "#{:<4} {}  {}  ({}){description}",
        rule.id, rule.origin, rule.rule, rule.owner
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_parse_by_name_or_number() {
        assert_eq!(parse_proto("TCP").unwrap(), 6);
        assert_eq!(parse_proto("47").unwrap(), 47);
        assert!(parse_proto("gre").is_err());
    }
}
