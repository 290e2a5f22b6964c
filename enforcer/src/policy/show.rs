//! A validated rule written back as policy text: `{ to = [...], proto = "tcp", ports = [22] }`.
//!
//! Used by `policy diff` (a rule's identity is its owner plus this match) and `policy explain`
//! (the rule that allows a packet, or the one to add). Destinations are written with their
//! prefixes (`segment:NAME`, `imsi:NNN`) so the text means the same in any policy file.

use enforcer_common::maps::{IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP};

use super::{Dest, Rule, ValidatedPolicy};

/// A protocol number as the policy file writes it (`tcp`, `udp`, `icmp`, `icmpv6`, else the
/// number).
#[must_use]
pub fn proto_name(proto: u8) -> String {
    match proto {
        IPPROTO_TCP => "tcp".to_owned(),
        IPPROTO_UDP => "udp".to_owned(),
        IPPROTO_ICMP => "icmp".to_owned(),
        IPPROTO_ICMPV6 => "icmpv6".to_owned(),
        other => other.to_string(),
    }
}

/// A destination as policy text: a CIDR (an address for a host prefix), `segment:NAME` or
/// `imsi:NNN`.
#[must_use]
pub fn dest(policy: &ValidatedPolicy, dest: &Dest) -> String {
    match *dest {
        Dest::Net(net) if net.prefix() == max_prefix(net) => net.ip().to_string(),
        Dest::Net(net) => net.to_string(),
        Dest::Segment(id) => policy.segments.get(usize::from(id)).map_or_else(
            || format!("segment#{id}"),
            |s| format!("segment:{}", s.name),
        ),
        Dest::Sim(index) => usize::try_from(index)
            .ok()
            .and_then(|i| policy.sims.get(i))
            .map_or_else(|| format!("sim#{index}"), |s| format!("imsi:{}", s.imsi)),
    }
}

fn max_prefix(net: ipnetwork::IpNetwork) -> u8 {
    if net.is_ipv4() { 32 } else { 128 }
}

/// What a rule matches, as an inline TOML table without its description; destinations,
/// protocols and ports sorted, so two rules that match the same packets the same way read the
/// same whatever order they were written in.
#[must_use]
pub fn rule_match(policy: &ValidatedPolicy, rule: &Rule) -> String {
    let mut to: Vec<String> = rule.to.iter().map(|d| dest(policy, d)).collect();
    to.sort();
    to.dedup();
    let mut protos = rule.protos.clone();
    protos.sort_unstable();
    protos.dedup();
    let mut ports = rule.ports.clone();
    ports.sort_unstable();
    ports.dedup();
    let to: Vec<String> = to.iter().map(|d| format!("\"{d}\"")).collect();
    match_text(&to, &protos, &ports)
}

/// What an inbound rule matches, as [`rule_match`] writes a rule, with its senders as `from`.
#[must_use]
pub fn inbound_match(policy: &ValidatedPolicy, rule: &Rule) -> String {
    let text = rule_match(policy, rule);
    match text.strip_prefix("{ to = ") {
        Some(rest) => format!("{{ from = {rest}"),
        None => text,
    }
}

/// An inline rule table from its parts: `to` already quoted, `protos` numbers, `ports`
/// inclusive ranges.
#[must_use]
pub fn match_text(to: &[String], protos: &[u8], ports: &[(u16, u16)]) -> String {
    let mut text = format!("{{ to = [{}]", to.join(", "));
    match protos {
        [] => {}
        [one] => text.push_str(&format!(", proto = \"{}\"", proto_name(*one))),
        many => {
            let names: Vec<String> = many
                .iter()
                .map(|p| format!("\"{}\"", proto_name(*p)))
                .collect();
            text.push_str(&format!(", proto = [{}]", names.join(", ")));
        }
    }
    if !ports.is_empty() {
        let ports: Vec<String> = ports
            .iter()
            .map(|&(lo, hi)| {
                if lo == hi {
                    lo.to_string()
                } else {
                    format!("\"{lo}-{hi}\"")
                }
            })
            .collect();
        text.push_str(&format!(", ports = [{}]", ports.join(", ")));
    }
    text.push_str(" }");
    text
}
