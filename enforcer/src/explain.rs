//! `policy explain`: why a packet passes or drops, and what a SIM may reach.
//!
//! Takes a [`ValidatedPolicy`], its [`Compiled`] rule table (rule ids, owners, `file:line`) and
//! a [`Query`]; returns an [`Explanation`] that serialises to JSON. The verdict comes from
//! [`oracle::judge`], README's semantics over the policy, which the differential test holds
//! equal to the compiled tables and the kernel program, so the explanation agrees with the
//! datapath; `tests/tests/explain.rs` checks that again through BPF_PROG_TEST_RUN. Pure (no
//! I/O), so the daemon can answer the same query on the policy it has loaded.

use std::net::IpAddr;

use enforcer_common::{
    DropReason, PassReason, Verdict,
    decide::PacketMeta,
    maps::{IFACE_DROP_NON_POOL, IPPROTO_TCP, IPPROTO_UDP},
};
use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};

use crate::{
    compile::Compiled,
    oracle,
    policy::{Rule, Sim, ValidatedPolicy, show},
};

/// What to explain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Query {
    /// What this SIM may reach: its segment, state and rules in order.
    Sim {
        /// The SIM's IMSI.
        imsi: String,
    },
    /// The verdict on one packet and why.
    Packet(Packet),
}

/// A packet to judge, as the first fragment (or an unfragmented packet) of its flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Packet {
    /// Source address.
    pub from: IpAddr,
    /// Destination address (same family as `from`).
    pub to: IpAddr,
    /// IP protocol number.
    pub proto: u8,
    /// Destination port: required for TCP and UDP, refused for other protocols.
    pub port: Option<u16>,
    /// Judge it as arriving on a core-facing interface (`--drop-non-pool`).
    pub core_facing: bool,
}

/// Queries that cannot be answered.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    /// `--imsi` names no SIM of the policy.
    #[error(
        "IMSI {imsi} is not in {policy}; check the IMSI or the policy file (and its inventory)"
    )]
    UnknownImsi {
        /// The IMSI asked for.
        imsi: String,
        /// The policy file.
        policy: String,
    },
    /// Source and destination of different families.
    #[error(
        "--from {from} and --to {to} are of different address families; give two IPv4 or two \
             IPv6 addresses"
    )]
    MixedFamilies {
        /// Source.
        from: IpAddr,
        /// Destination.
        to: IpAddr,
    },
    /// TCP or UDP without a port.
    #[error("{proto} packets carry a destination port; give --port")]
    MissingPort {
        /// `tcp` or `udp`.
        proto: String,
    },
    /// A port with a protocol that has none.
    #[error("protocol {proto} has no ports; drop --port or use --proto tcp or udp")]
    PortWithoutPorts {
        /// The protocol's name.
        proto: String,
    },
}

/// The answer to a [`Query`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "query", rename_all = "snake_case")]
pub enum Explanation {
    /// What a SIM may reach.
    Sim(SimExplanation),
    /// Why a packet passes or drops.
    Packet(Box<PacketExplanation>),
}

/// A SIM as explanations show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimRef {
    /// IMSI.
    pub imsi: String,
    /// Segment name.
    pub segment: String,
    /// `active` or `quarantined`.
    pub state: String,
    /// IPv4 address, if any.
    pub ipv4: Option<String>,
    /// IPv6 /64, if any.
    pub ipv6: Option<String>,
}

/// A rule as explanations show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleRef {
    /// Rule id (the index `enforcer stats` and `policy replay` show as `#id`).
    pub id: u32,
    /// `segment NAME` or `imsi NNN`.
    pub owner: String,
    /// `file:line` of the rule.
    pub origin: String,
    /// Its description.
    pub description: String,
    /// What it matches, as policy text.
    pub rule: String,
}

/// What a SIM may reach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimExplanation {
    /// The SIM.
    pub sim: SimRef,
    /// The rules that apply to it, in the order they are written: its segment's, then its own.
    pub rules: Vec<RuleRef>,
    /// One sentence: what the state and rules mean for its traffic.
    pub summary: String,
}

/// Why a packet passes or drops.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PacketExplanation {
    /// The packet, e.g. `tcp 10.64.0.1 -> 198.51.100.10:443`.
    pub packet: String,
    /// `pass` or `drop`.
    pub verdict: String,
    /// The counted reason (`rule`, `non_pool`, `no_rule`, `lateral`, `spoofed`, ...), as in
    /// `enforcer stats` and `policy replay`.
    pub reason: String,
    /// The rule counted for a pass by rule.
    pub rule: Option<RuleRef>,
    /// The SIM that holds the source address, if any.
    pub sender: Option<SimRef>,
    /// The SIM that holds the destination address, if any.
    pub destination: Option<SimRef>,
    /// Why, in one sentence.
    pub why: String,
    /// What to change in the policy to get the other verdict, when there is something to do.
    pub fix: Option<String>,
}

/// Answer `query` about `policy` (compiled as `compiled`).
///
/// # Errors
/// An unknown IMSI, addresses of two families, or a port that does not fit the protocol.
pub fn explain(
    policy: &ValidatedPolicy,
    compiled: &Compiled,
    query: &Query,
) -> Result<Explanation, ExplainError> {
    match query {
        Query::Sim { imsi } => {
            let index = policy
                .sims
                .iter()
                .position(|s| &s.imsi == imsi)
                .ok_or_else(|| ExplainError::UnknownImsi {
                    imsi: imsi.clone(),
                    policy: policy.path.display().to_string(),
                })?;
            Ok(Explanation::Sim(sim_explanation(policy, compiled, index)))
        }
        Query::Packet(packet) => {
            packet_explanation(policy, compiled, packet).map(|p| Explanation::Packet(Box::new(p)))
        }
    }
}

fn sim_ref(policy: &ValidatedPolicy, sim: &Sim) -> SimRef {
    SimRef {
        imsi: sim.imsi.to_string(),
        segment: policy.segment_name(sim.segment).to_owned(),
        state: sim.state.name().to_owned(),
        ipv4: sim.ipv4().map(|a| a.to_string()),
        ipv6: sim.ipv6().map(|n| n.to_string()),
    }
}

/// The rules of SIM `index` with their ids, in id order: rule ids number the segments' rules
/// in file order, then the SIMs' own rules in SIM order (as `compile` and `oracle` do).
fn rules_of(policy: &ValidatedPolicy, index: usize) -> Vec<(u32, &Rule)> {
    let mut id = 0u32;
    let mut out = Vec::new();
    let own_segment = usize::from(policy.sims[index].segment);
    for (segment_id, segment) in policy.segments.iter().enumerate() {
        for rule in &segment.rules {
            if segment_id == own_segment {
                out.push((id, rule));
            }
            id += 1;
        }
    }
    for sim in &policy.sims[..index] {
        id += u32::try_from(sim.rules().len()).unwrap_or(u32::MAX);
    }
    for rule in policy.sims[index].rules() {
        out.push((id, rule));
        id += 1;
    }
    out
}

/// `position` is the rule's place in compile order (the oracle's numbering); its id is what the
/// compilation's ids give it (stable ids in the daemon, the position itself offline).
fn rule_ref(policy: &ValidatedPolicy, compiled: &Compiled, position: u32, rule: &Rule) -> RuleRef {
    let id = usize::try_from(position)
        .ok()
        .and_then(|p| compiled.ids.rules.get(p))
        .copied()
        .unwrap_or(position);
    let info = usize::try_from(id)
        .ok()
        .and_then(|i| compiled.rules.get(i))
        .and_then(Option::as_ref);
    RuleRef {
        id,
        owner: info.map_or_else(String::new, |i| i.owner.clone()),
        origin: rule.origin.clone(),
        description: rule.description.clone(),
        rule: show::rule_match(policy, rule),
    }
}

fn sim_explanation(policy: &ValidatedPolicy, compiled: &Compiled, index: usize) -> SimExplanation {
    let sim = sim_ref(policy, &policy.sims[index]);
    let rules: Vec<RuleRef> = rules_of(policy, index)
        .into_iter()
        .map(|(id, rule)| rule_ref(policy, compiled, id, rule))
        .collect();
    let summary = if policy.sims[index].state == crate::policy::SimState::Quarantined {
        format!(
            "SIM {} is quarantined: everything it sends is dropped, whatever its rules",
            sim.imsi
        )
    } else if rules.is_empty() {
        format!(
            "no rule of segment {} or SIM {} allows anything: everything it sends is dropped",
            sim.segment, sim.imsi
        )
    } else {
        format!(
            "SIM {} may send what these {} rule{} allow; everything else is dropped",
            sim.imsi,
            rules.len(),
            if rules.len() == 1 { "" } else { "s" }
        )
    };
    SimExplanation {
        sim,
        rules,
        summary,
    }
}

fn in_16(addr: IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V4(a) => enforcer_common::decide::v4_in_16(a.octets()),
        IpAddr::V6(a) => a.octets(),
    }
}

fn holds(sim: &Sim, addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => sim.ipv4() == Some(a),
        IpAddr::V6(a) => sim.ipv6().is_some_and(|net| net.contains(a)),
    }
}

fn pool_of(policy: &ValidatedPolicy, addr: IpAddr) -> Option<IpNetwork> {
    policy
        .pools
        .iter()
        .copied()
        .find(|pool| match (pool, addr) {
            (IpNetwork::V4(p), IpAddr::V4(a)) => p.contains(a),
            (IpNetwork::V6(p), IpAddr::V6(a)) => p.contains(a),
            _ => false,
        })
}

/// `tcp/22`, `udp/53`, `icmp`, `proto 47`.
fn service(packet: &Packet) -> String {
    let name = show::proto_name(packet.proto);
    match packet.port {
        Some(port) => format!("{name}/{port}"),
        None if name.chars().all(|c| c.is_ascii_digit()) => format!("protocol {name}"),
        None => name,
    }
}

/// The rule to add, for destinations already quoted.
fn suggested(packet: &Packet, to: &[String]) -> String {
    let ports: Vec<(u16, u16)> = packet.port.map(|p| vec![(p, p)]).unwrap_or_default();
    show::match_text(to, &[packet.proto], &ports)
}

fn check(packet: &Packet) -> Result<(), ExplainError> {
    if packet.from.is_ipv4() != packet.to.is_ipv4() {
        return Err(ExplainError::MixedFamilies {
            from: packet.from,
            to: packet.to,
        });
    }
    let has_ports = packet.proto == IPPROTO_TCP || packet.proto == IPPROTO_UDP;
    match (has_ports, packet.port) {
        (true, None) => Err(ExplainError::MissingPort {
            proto: show::proto_name(packet.proto),
        }),
        (false, Some(_)) => Err(ExplainError::PortWithoutPorts {
            proto: show::proto_name(packet.proto),
        }),
        _ => Ok(()),
    }
}

fn packet_explanation(
    policy: &ValidatedPolicy,
    compiled: &Compiled,
    packet: &Packet,
) -> Result<PacketExplanation, ExplainError> {
    check(packet)?;
    let meta = PacketMeta {
        v6: packet.from.is_ipv6(),
        src: in_16(packet.from),
        dst: in_16(packet.to),
        proto: packet.proto,
        dport: packet.port.unwrap_or(0),
        sport: 0,
        l4_flags: 0,
        has_ports: packet.port.is_some(),
        later_fragment: false,
        ifindex: 0,
        reversed: false,
        session_absent: false,
    };
    let flags = if packet.core_facing {
        IFACE_DROP_NON_POOL
    } else {
        0
    };
    // The first packet of its flow: no session yet (a reply is judged by the session its device
    // opened, which `enforcer flows` will list).
    let verdict = oracle::Sessions::default().judge(policy, &meta, None, flags);
    let sender_index = policy.sims.iter().position(|s| holds(s, packet.from));
    let sender = sender_index.map(|i| sim_ref(policy, &policy.sims[i]));
    let destination = policy
        .sims
        .iter()
        .find(|s| holds(s, packet.to))
        .map(|s| sim_ref(policy, s));
    let what = service(packet);
    let to = packet.to;
    let from = packet.from;
    let mut rule = None;
    let (why, fix) = match verdict {
        Verdict::Pass(PassReason::Rule, id) => {
            let found = sender_index.and_then(|i| {
                rules_of(policy, i)
                    .into_iter()
                    .find(|(rule_id, _)| *rule_id == id)
            });
            let found = found.map(|(id, r)| rule_ref(policy, compiled, id, r));
            let why = match &found {
                Some(r) => format!(
                    "rule #{} of {} at {} allows {what} to {to}: {}",
                    r.id, r.owner, r.origin, r.rule
                ),
                None => format!("rule #{id} allows {what} to {to}"),
            };
            rule = found;
            (why, None)
        }
        Verdict::Pass(PassReason::Inbound, id) => {
            let found = usize::try_from(id)
                .ok()
                .and_then(|position| policy.rules().nth(position))
                .map(|(_, r)| RuleRef {
                    rule: show::inbound_match(policy, r),
                    ..rule_ref(policy, compiled, id, r)
                });
            let device = destination
                .as_ref()
                .map_or_else(|| to.to_string(), |d| format!("device {} ({to})", d.imsi));
            let why = match &found {
                Some(r) => format!(
                    "inbound rule #{} of {} at {} lets {from} open {what} to {device}: {}",
                    r.id, r.owner, r.origin, r.rule
                ),
                None => format!("inbound rule #{id} lets {from} open {what} to {device}"),
            };
            rule = found;
            (why, None)
        }
        Verdict::Pass(PassReason::NonPool, _) => (
            format!(
                "{from} is outside every pool: not a device's packet (a reply, management \
                 traffic), so it passes; {}",
                if policy.core_sources.iter().any(|net| net.contains(from)) {
                    "it is in `core_sources`, so a core interface takes it too"
                } else {
                    "on a core interface (--iface core:IF) it would be dropped"
                }
            ),
            None,
        ),
        Verdict::Pass(reason, _) => (format!("passes: {}", reason.name()), None),
        Verdict::Drop(DropReason::Spoofed) => (
            format!(
                "{from} lies in pool {} but no SIM has it: a spoofed source",
                pool_of(policy, from).map_or_else(String::new, |p| p.to_string())
            ),
            Some(format!(
                "if a device really has {from}, give it to its SIM ({} in its [[sims]] entry or \
                 inventory row)",
                if from.is_ipv4() {
                    format!("ipv4 = \"{from}\"")
                } else {
                    "ipv6 = its /64".to_owned()
                }
            )),
        ),
        Verdict::Drop(DropReason::Inbound) => (
            format!(
                "{from} is outside every pool and {to} is {}: nothing outside may open a \
                 connection to a device; only the replies of sessions the device opened, and what an \
                 inbound rule of its segment allows, pass",
                destination.as_ref().map_or_else(
                    || "a pool address".to_owned(),
                    |d| format!("device {}", d.imsi)
                )
            ),
            Some(format!(
                "let the device open the connection (its session's replies pass), or, if \
                 {from} must reach the device first (a maintenance host), add to its segment \
                 `inbound = [{{ from = [\"{from}\"], proto = \"{}\"{} }}]`",
                show::proto_name(meta.proto),
                if meta.has_ports {
                    format!(", ports = [{}]", meta.dport)
                } else {
                    String::new()
                }
            )),
        ),
        Verdict::Drop(DropReason::NonPool) => (
            format!("{from} is outside every pool and the interface has the core role"),
            Some(format!(
                "if {from} is a device address, add its pool to `pools` and give it to a SIM; if \
                 it is the packet core's own (a PGW/UPF management address), list its prefix in \
                 `core_sources`"
            )),
        ),
        Verdict::Drop(DropReason::Quarantined) => {
            let imsi = sender.as_ref().map_or("", |s| s.imsi.as_str());
            (
                format!("SIM {imsi} is quarantined: everything it sends is dropped"),
                Some(format!(
                    "set state = \"active\" in the [[sims]] entry (or inventory row) of IMSI \
                     {imsi} once the device is trusted again"
                )),
            )
        }
        Verdict::Drop(reason @ (DropReason::Lateral | DropReason::NoRule)) => {
            let (segment, imsi) = sender.as_ref().map_or((String::new(), String::new()), |s| {
                (s.segment.clone(), s.imsi.clone())
            });
            let none = format!("no rule of segment {segment} or SIM {imsi} allows {what} to {to}");
            match (reason, &destination) {
                (DropReason::Lateral, Some(dst)) => (
                    format!(
                        "{none}, which is SIM {} of segment {} (a pool address: lateral \
                         movement)",
                        dst.imsi, dst.segment
                    ),
                    Some(format!(
                        "add to segment {segment}: {} (every SIM of {}), or {} (that SIM only); \
                         or add either to SIM {imsi}'s own rules",
                        suggested(packet, &[format!("\"segment:{}\"", dst.segment)]),
                        dst.segment,
                        suggested(packet, &[format!("\"imsi:{}\"", dst.imsi)]),
                    )),
                ),
                (DropReason::Lateral, None) => (
                    format!("{none}: {to} lies in a pool (lateral movement) and no SIM has it"),
                    Some(
                        "rules reach pool addresses only by segment or IMSI; give the address \
                         to a SIM first, then name that SIM or its segment"
                            .to_owned(),
                    ),
                ),
                _ => (
                    none,
                    Some(format!(
                        "add to segment {segment}: {} (or to SIM {imsi}'s own rules for this SIM \
                         only)",
                        suggested(packet, &[format!("\"{to}\"")])
                    )),
                ),
            }
        }
        Verdict::Drop(reason) => (format!("dropped: {}", reason.name()), None),
    };
    let (verdict_name, reason) = match verdict {
        Verdict::Pass(reason, _) => ("pass", reason.name()),
        Verdict::Drop(reason) => ("drop", reason.name()),
    };
    let port = packet.port.map_or_else(String::new, |p| {
        if to.is_ipv6() {
            format!(" port {p}")
        } else {
            format!(":{p}")
        }
    });
    Ok(PacketExplanation {
        packet: format!("{} {from} -> {to}{port}", show::proto_name(packet.proto)),
        verdict: verdict_name.to_owned(),
        reason: reason.to_owned(),
        rule,
        sender,
        destination,
        why,
        fix,
    })
}

/// The rule of SIM `position` (its segment's, then its own) that allows traffic nearest to a
/// denied packet to `dst` (`proto`, `port`): first one toward the same destination network
/// for another protocol or port, else one for the same protocol and port toward another
/// destination; `None` when no rule is near. As `file:line: what it matches`, for deny
/// events. Destinations that are SIMs or segments are not compared.
#[must_use]
pub fn nearby_rule(
    policy: &ValidatedPolicy,
    position: usize,
    dst: IpAddr,
    proto: u8,
    port: Option<u16>,
) -> Option<String> {
    let sim = policy.sims.get(position)?;
    let segment = policy.segments.get(usize::from(sim.segment))?;
    let rules = || segment.rules.iter().chain(sim.rules());
    let to_dst = |rule: &Rule| {
        rule.to.iter().any(|d| match d {
            crate::policy::Dest::Net(net) => net.contains(dst),
            _ => false,
        })
    };
    let for_port = |rule: &Rule| {
        (rule.protos.is_empty() || rule.protos.contains(&proto))
            && (rule.ports.is_empty()
                || port.is_some_and(|p| rule.ports.iter().any(|&(lo, hi)| (lo..=hi).contains(&p))))
    };
    let found = rules()
        .find(|r| to_dst(r) && !for_port(r))
        .or_else(|| rules().find(|r| for_port(r) && !to_dst(r)))?;
    Some(format!(
        "{}: {}",
        found.origin,
        show::rule_match(policy, found)
    ))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::{compile, policy};

    fn example() -> (ValidatedPolicy, Compiled) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/policy.toml");
        let policy = policy::load(&path).expect("example policy is valid");
        let compiled = compile::compile_fresh(&policy).expect("example compiles");
        (policy, compiled)
    }

    fn packet(from: &str, to: &str, proto: u8, port: Option<u16>) -> Query {
        Query::Packet(Packet {
            from: from.parse().expect("test address"),
            to: to.parse().expect("test address"),
            proto,
            port,
            core_facing: false,
        })
    }

    fn explained(query: &Query) -> PacketExplanation {
        let (policy, compiled) = example();
        match explain(&policy, &compiled, query).expect("explainable") {
            Explanation::Packet(p) => *p,
            Explanation::Sim(_) => panic!("a packet query gave a SIM answer"),
        }
    }

    #[test]
    fn an_allowed_packet_names_its_rule_and_line() {
        let e = explained(&packet(
            "10.64.0.1",
            "198.51.100.10",
            IPPROTO_TCP,
            Some(443),
        ));
        assert_eq!((e.verdict.as_str(), e.reason.as_str()), ("pass", "rule"));
        let rule = e.rule.expect("a rule");
        assert_eq!(rule.owner, "segment ev-chargers");
        assert!(rule.origin.ends_with("policy.toml:16"), "{}", rule.origin);
        assert_eq!(
            rule.rule,
            r#"{ to = ["198.51.100.10"], proto = "tcp", ports = [443] }"#
        );
    }

    #[test]
    fn a_dropped_packet_says_which_rule_would_allow_it() {
        let e = explained(&packet("10.64.0.1", "10.0.0.5", IPPROTO_TCP, Some(22)));
        assert_eq!((e.verdict.as_str(), e.reason.as_str()), ("drop", "no_rule"));
        assert_eq!(
            e.why,
            "no rule of segment ev-chargers or SIM 001010000000001 allows tcp/22 to 10.0.0.5"
        );
        assert_eq!(
            e.fix.as_deref(),
            Some(
                r#"add to segment ev-chargers: { to = ["10.0.0.5"], proto = "tcp", ports = [22] } (or to SIM 001010000000001's own rules for this SIM only)"#
            )
        );
    }

    #[test]
    fn lateral_spoofed_and_quarantined_say_what_to_change() {
        let lateral = explained(&packet("10.64.0.1", "10.66.0.1", 1, None));
        assert_eq!(lateral.reason, "lateral");
        assert!(
            lateral
                .fix
                .as_deref()
                .is_some_and(|f| f.contains(r#"{ to = ["segment:industrial"], proto = "icmp" }"#)),
            "{lateral:?}"
        );
        let spoofed = explained(&packet(
            "10.64.9.9",
            "198.51.100.10",
            IPPROTO_TCP,
            Some(443),
        ));
        assert_eq!(spoofed.reason, "spoofed");
        assert!(spoofed.why.contains("10.64.0.0/16"), "{spoofed:?}");
        let quarantined = explained(&packet(
            "10.65.0.2",
            "198.51.100.30",
            IPPROTO_TCP,
            Some(4059),
        ));
        assert_eq!(quarantined.reason, "quarantined");
        assert!(
            quarantined
                .fix
                .is_some_and(|f| f.contains("state = \"active\""))
        );
    }

    #[test]
    fn a_sim_query_lists_segment_rules_then_its_own() {
        let (policy, compiled) = example();
        let query = Query::Sim {
            imsi: "001010000000201".to_owned(),
        };
        let Ok(Explanation::Sim(e)) = explain(&policy, &compiled, &query) else {
            panic!("no SIM explanation");
        };
        let owners: Vec<&str> = e.rules.iter().map(|r| r.owner.as_str()).collect();
        assert_eq!(
            owners,
            [
                "segment industrial",
                "segment industrial",
                "imsi 001010000000201"
            ]
        );
        // Ids agree with the compiled table (what `stats` and `replay` show).
        for r in &e.rules {
            assert_eq!(
                compiled.rules[r.id as usize]
                    .as_ref()
                    .map(|i| i.origin.as_str()),
                Some(r.origin.as_str())
            );
        }
    }

    #[test]
    fn bad_queries_say_what_to_fix() {
        let (policy, compiled) = example();
        let unknown = Query::Sim {
            imsi: "001019999999999".to_owned(),
        };
        let err = explain(&policy, &compiled, &unknown).expect_err("unknown IMSI");
        assert!(err.to_string().contains("not in"), "{err}");
        let mixed = packet("10.64.0.1", "2001:db8::1", 1, None);
        assert!(matches!(
            explain(&policy, &compiled, &mixed),
            Err(ExplainError::MixedFamilies { .. })
        ));
        let no_port = packet("10.64.0.1", "192.0.2.1", IPPROTO_TCP, None);
        assert!(matches!(
            explain(&policy, &compiled, &no_port),
            Err(ExplainError::MissingPort { .. })
        ));
    }
}
